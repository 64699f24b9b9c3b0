//! Kafka client plumbing shared by `weft gen`, the speed layer, the archiver
//! and the tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode as Code;
use weft_core::Event;
use weft_core::partition::partition_for_key;

use crate::SpeedError;

/// Settings every Weft client starts from.
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // Tansu and single-broker setups answer ApiVersions; keep the
        // handshake explicit so failures say so.
        .set("api.version.request", "true")
        .set("socket.keepalive.enable", "true")
        // After a broker outage, reconnect within a second of its return
        // (librdkafka's backoff otherwise grows to 10 s: measured 6-9 s of
        // extra lag after a 30 s outage, docs/benchmarks.md).
        .set("reconnect.backoff.max.ms", "1000");
    c
}

/// Creates `topic` with `partitions` partitions unless it exists with that
/// many; any other partition count is an error (Weft's partitioning and the
/// archive's `_partition` column depend on it).
pub async fn ensure_topic(bootstrap: &str, topic: &str, partitions: u32) -> Result<(), SpeedError> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap)
        .create()
        .map_err(SpeedError::kafka("creating admin client"))?;
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(SpeedError::kafka(format!("creating topic {topic}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(SpeedError::Broker(format!("creating topic {name}: {code}")));
            }
        }
    }
    let found = partition_count(bootstrap, topic, Duration::from_secs(10))?;
    if found != partitions {
        return Err(SpeedError::Broker(format!(
            "topic {topic} has {found} partitions, {partitions} expected"
        )));
    }
    Ok(())
}

/// The number of partitions of `topic`, from broker metadata.
pub fn partition_count(bootstrap: &str, topic: &str, timeout: Duration) -> Result<u32, SpeedError> {
    let producer: BaseProducer = base_config(bootstrap)
        .create()
        .map_err(SpeedError::kafka("creating metadata client"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(SpeedError::kafka(format!("fetching metadata of {topic}")))?;
        if let Some(t) = md.topics().iter().find(|t| t.name() == topic)
            && t.error().is_none()
            && !t.partitions().is_empty()
        {
            return Ok(t.partitions().len() as u32);
        }
        if Instant::now() >= deadline {
            return Err(SpeedError::Broker(format!("topic {topic} does not exist")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a topic's partitions end (the offset the next record gets), for
/// lag: exact on Kafka and on Tansu 0.6.0.
///
/// The high watermark alone is not: Tansu answers it as the last record
/// batch's base offset + 1 (a partition holding 2,571 records produced in
/// one batch read as 1), so a lag computed from it said 0 while thousands
/// of acknowledged records were not applied. So the end is the high
/// watermark or, when it moved since last asked, one past the last record
/// read from `high - 1` on (the last batch from its start on Tansu, the
/// last record on Kafka): a fetch of that one batch a second per partition
/// whose watermark moved.
pub struct EndOffsets {
    topic: String,
    client: BaseConsumer,
    tail: BaseConsumer,
    /// Per partition: the high watermark last seen and the end found then.
    known: HashMap<i32, (i64, i64)>,
}

impl std::fmt::Debug for EndOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndOffsets")
            .field("topic", &self.topic)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl EndOffsets {
    pub fn new(bootstrap: &str, topic: &str) -> Result<EndOffsets, SpeedError> {
        Ok(EndOffsets {
            topic: topic.to_string(),
            client: base_config(bootstrap)
                .create()
                .map_err(SpeedError::kafka("creating the watermark client"))?,
            tail: base_config(bootstrap)
                .set("group.id", "weft-end-offsets")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .map_err(SpeedError::kafka("creating the end-offset reader"))?,
            known: HashMap::new(),
        })
    }

    /// Partition `p`'s end: at least its high watermark, and every record
    /// acknowledged before this call is below it. None: the broker did not
    /// answer within `timeout`.
    pub fn end(&mut self, p: i32, timeout: Duration) -> Option<i64> {
        let (_, high) = self.client.fetch_watermarks(&self.topic, p, timeout).ok()?;
        if let Some(&(seen, end)) = self.known.get(&p)
            && seen == high
        {
            return Some(end.max(high));
        }
        let end = self.read_end(p, high, timeout).unwrap_or(high);
        self.known.insert(p, (high, end));
        Some(end)
    }

    /// One past the last record from `high - 1` on (None: nothing came).
    fn read_end(&self, p: i32, high: i64, timeout: Duration) -> Option<i64> {
        if high <= 0 {
            return None;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, rdkafka::Offset::Offset(high - 1))
            .ok()?;
        self.tail.assign(&tpl).ok()?;
        let deadline = Instant::now() + timeout;
        let mut end = None;
        // The batch's records arrive together: read until a short silence
        // after the first.
        loop {
            if Instant::now() >= deadline {
                return end;
            }
            let wait = if end.is_some() {
                Duration::from_millis(20)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.tail.poll(wait) {
                Some(Ok(m)) if m.partition() == p => {
                    end = Some(end.unwrap_or(high).max(m.offset() + 1));
                }
                Some(_) => {}
                None if end.is_some() => return end,
                None => {}
            }
        }
    }
}

/// The oldest offset `topic` still holds, per partition (the low
/// watermark: retention deletes from the front). A rebuild from offset `o`
/// of partition `p` is possible while `o >= low[p]`.
pub fn low_watermarks(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<i32, i64>, SpeedError> {
    let partitions = partition_count(bootstrap, topic, timeout)?;
    let producer: BaseProducer = base_config(bootstrap)
        .create()
        .map_err(SpeedError::kafka("creating metadata client"))?;
    (0..partitions as i32)
        .map(|p| {
            let (low, _high) = producer
                .client()
                .fetch_watermarks(topic, p, timeout)
                .map_err(SpeedError::kafka(format!(
                    "fetching the offsets of {topic}/{p}"
                )))?;
            Ok((p, low))
        })
        .collect()
}

/// Counts deliveries and keeps the first failure.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryCounter {
    /// Records whose delivery failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What a producer achieved, after [`EventProducer::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: u64,
    pub failed: u64,
}

/// Produces events keyed `tenant/user_id` to the murmur2 partition of the
/// key. Idempotent, so retries never reorder or duplicate a partition.
pub struct EventProducer {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
    partitions: u32,
    sent: u64,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Connects and reads the topic's partition count (the topic must exist).
    pub fn new(bootstrap: &str, topic: &str) -> Result<EventProducer, SpeedError> {
        let partitions = partition_count(bootstrap, topic, Duration::from_secs(10))?;
        let producer = base_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "262144")
            .create_with_context(DeliveryCounter::default())
            .map_err(SpeedError::kafka("creating producer"))?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
            partitions,
            sent: 0,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Sends one event; returns its partition.
    pub fn send_event(&mut self, e: &Event) -> Result<i32, SpeedError> {
        let key = e.kafka_key();
        let value = e.encode();
        let partition = partition_for_key(key.as_bytes(), self.partitions);
        self.send_raw(key.as_bytes(), &value, partition)?;
        Ok(partition)
    }

    /// Sends a record as is (malformed records for dead-letter tests too).
    pub fn send_raw(&mut self, key: &[u8], value: &[u8], partition: i32) -> Result<(), SpeedError> {
        let mut record = BaseRecord::to(&self.topic)
            .key(key)
            .payload(value)
            .partition(partition);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(SpeedError::Kafka {
                        context: format!("producing to {}", self.topic),
                        source: e,
                    });
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits for every record to be acknowledged; fails if any was not.
    pub fn flush(&mut self, timeout: Duration) -> Result<DeliveryReport, SpeedError> {
        self.producer
            .flush(timeout)
            .map_err(SpeedError::kafka(format!("flushing to {}", self.topic)))?;
        let ctx = self.producer.context();
        let report = DeliveryReport {
            delivered: ctx.delivered.load(Ordering::Relaxed),
            failed: ctx.failed.load(Ordering::Relaxed),
        };
        if report.failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            return Err(SpeedError::Broker(format!(
                "{} of {} records were not delivered; first error: {first}",
                report.failed,
                report.failed + report.delivered
            )));
        }
        Ok(report)
    }
}

/// What [`produce_generated`] sent, for checking consumers against.
#[derive(Debug, Default, Clone)]
pub struct Produced {
    /// Valid events with their partition and offset, in production order.
    pub valid: Vec<(i32, i64, Event)>,
    /// Coordinates of the malformed records.
    pub malformed: std::collections::HashSet<(i32, i64)>,
}

impl Produced {
    /// The valid events of each (tenant, user) in consumption (offset)
    /// order: what the reference evaluator folds.
    pub fn by_user(&self) -> std::collections::BTreeMap<(String, String), Vec<Event>> {
        let mut ordered: Vec<&(i32, i64, Event)> = self.valid.iter().collect();
        ordered.sort_by_key(|(p, o, _)| (*p, *o));
        let mut out: std::collections::BTreeMap<(String, String), Vec<Event>> = Default::default();
        for (_, _, e) in ordered {
            out.entry((e.tenant.clone(), e.user_id.clone()))
                .or_default()
                .push(e.clone());
        }
        out
    }

    /// Records per partition (the next offset of each).
    pub fn end_offsets(&self, partitions: u32) -> Vec<i64> {
        let mut end = vec![0i64; partitions as usize];
        let coords = self
            .valid
            .iter()
            .map(|(p, o, _)| (*p, *o))
            .chain(self.malformed.iter().copied());
        for (p, o) in coords {
            end[p as usize] = end[p as usize].max(o + 1);
        }
        end
    }
}

/// Produces generated events in order, mixing in a malformed record after
/// an event with probability `malformed_rate`, and records where each went
/// (the topic must be fresh and `sequencer` must have seen everything
/// produced to it).
pub fn produce_generated(
    producer: &mut EventProducer,
    sequencer: &mut weft_core::generator::Sequencer,
    events: impl IntoIterator<Item = Event>,
    malformed_rate: f64,
    rng: &mut impl rand::Rng,
    out: &mut Produced,
) -> Result<(), SpeedError> {
    use weft_core::generator::Malformed;
    for e in events {
        let s = sequencer.assign(e);
        producer.send_event(&s.event)?;
        if malformed_rate > 0.0 && rng.random_bool(malformed_rate) {
            let kind = Malformed::ALL[rng.random_range(0..Malformed::ALL.len())];
            let key = s.event.kafka_key();
            let value = kind.corrupt(&s.event, rng);
            let (p, o) = sequencer.assign_key(key.as_bytes());
            producer.send_raw(key.as_bytes(), &value, p)?;
            out.malformed.insert((p, o));
        }
        out.valid.push((s.partition, s.offset, s.event));
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}
