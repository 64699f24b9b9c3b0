//! The speed layer's consume-and-apply loop.
//!
//! Two blocking threads (Kafka polling and RocksDB writes stay off any async
//! reactor): the poll loop (steps 1-3) and the applier (steps 4-5), which
//! commits batch N while the poll loop polls and decodes batch N+1. Batches
//! are applied one at a time in the order polled, so the store moves exactly
//! as with one thread; generation switches wait for the applier to drain.
//!
//! 1. assign every partition of the topic at the offset the store recorded
//!    (Kafka's committed offsets are informational only), through a
//!    [`Cursor`] that makes the position exact on any broker;
//! 2. poll up to `max_batch` records or `max_batch_wait`;
//! 3. decode and validate each record; invalid ones go to the dead-letter
//!    topic with their source partition, offset and reason as headers;
//! 4. drop redeliveries (same tenant, user and event id first delivered
//!    within `dedup_horizon` of Kafka time);
//! 5. fold the rest into partials, and commit partials, dedup ids and the new
//!    offsets in one RocksDB WriteBatch, after the dead letters are
//!    acknowledged by the broker.
//!
//! A crash anywhere leaves the store at a batch boundary; the restart seeks
//! to the stored offsets, so nothing is lost and nothing is counted twice.
//! Dead letters are at-least-once: a crash between their acknowledgement and
//! the commit re-sends them, with the same source coordinates.
//!
//! Steps 4-5 are [`BatchApplier`] (`consumer/apply.rs`), public so that
//! anything applying decoded records outside this loop (the apply-path
//! benchmark) runs the consumer's own code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weft_config::PartitionSet;
use weft_core::{Event, FeatureSpec};

mod apply;

pub use apply::{BatchApplier, Folded, Record};

use crate::SpeedError;
use crate::cursor::{Cursor, Verdict};
use crate::kafka::{DeliveryCounter, EndOffsets, base_config, ensure_topic, partition_count};
use crate::store::{Generation, SpeedStore};
use apply::ApplyThread;

/// Header names on dead-letter records.
pub const DLQ_PARTITION_HEADER: &str = "weft.source.partition";
pub const DLQ_OFFSET_HEADER: &str = "weft.source.offset";
pub const DLQ_REASON_HEADER: &str = "weft.reason";

/// What the speed layer needs to run.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    pub bootstrap: String,
    pub topic: String,
    pub dead_letter_topic: String,
    /// Group id for informational offset commits (lag dashboards).
    pub group_id: String,
    /// The RocksDB directory.
    pub data_dir: PathBuf,
    pub max_batch: usize,
    pub max_batch_wait: Duration,
    /// Redeliveries whose first copy arrived at most this long before (in
    /// Kafka record time) are dropped.
    pub dedup_horizon: Duration,
    /// fsync every batch (survives power loss, not only process crashes).
    pub sync_writes: bool,
    /// The partitions consumed (a serving shard's); None: every partition
    /// of the topic.
    pub partitions: Option<PartitionSet>,
}

/// [`SpeedConfig::dedup_horizon`]'s default.
pub const DEFAULT_DEDUP_HORIZON: Duration = Duration::from_secs(3_600);

impl SpeedConfig {
    pub fn new(bootstrap: &str, data_dir: PathBuf) -> SpeedConfig {
        SpeedConfig {
            bootstrap: bootstrap.to_string(),
            topic: "events".into(),
            dead_letter_topic: "events.dlq".into(),
            group_id: "weft-speed".into(),
            data_dir,
            max_batch: 20_000,
            max_batch_wait: Duration::from_millis(20),
            dedup_horizon: DEFAULT_DEDUP_HORIZON,
            sync_writes: false,
            partitions: None,
        }
    }
}

/// A request to build a speed generation for the view store's current batch
/// view: a newly published one, or an older one after a rollback (see
/// [`crate::store`], "Generations"). The loop numbers the generation: the
/// view's version, or the one after the newest generation if that is
/// higher (after a rollback), so generations only count up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGeneration {
    /// The view's version.
    pub view: u64,
    /// The view's `O_p` per partition.
    pub boundary: HashMap<i32, i64>,
}

impl NewGeneration {
    /// The generation this request starts when `newest` is the newest one
    /// built or being built.
    pub fn generation_after(&self, newest: Generation) -> Generation {
        let next = newest.saturating_add(1);
        Generation::try_from(self.view).map_or(next, |v| v.max(next))
    }
}

/// Where the loop takes [`NewGeneration`] requests from. Keep one across
/// restarts of [`run_with_store`]: a request taken when the loop stopped on
/// an error (before it could act on it) is held here and taken first next
/// time, so none is lost.
#[derive(Debug)]
pub struct Control {
    rx: std::sync::mpsc::Receiver<NewGeneration>,
    held: std::sync::Mutex<Option<NewGeneration>>,
}

impl Control {
    pub fn new(rx: std::sync::mpsc::Receiver<NewGeneration>) -> Control {
        Control {
            rx,
            held: std::sync::Mutex::new(None),
        }
    }

    fn next(&self) -> Option<NewGeneration> {
        let held = self.held.lock().ok().and_then(|mut h| h.take());
        held.or_else(|| self.rx.try_recv().ok())
    }

    fn hold(&self, request: NewGeneration) {
        if let Ok(mut h) = self.held.lock() {
            *h = Some(request);
        }
    }
}

/// Counters the loop keeps; read them any time ([`crate::metrics`] renders
/// them for Prometheus).
#[derive(Debug)]
pub struct SpeedMetrics {
    /// The generation readers use.
    pub ready_generation: AtomicU64,
    /// The generation being built (0: none; generations being built are
    /// always above 0).
    pub building_generation: AtomicU64,
    pub records: AtomicU64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    pub last_batch_micros: AtomicU64,
    /// Dedup ids held in memory (the apply thread's [`DedupIndex`]).
    pub dedup_ids: AtomicU64,
    /// Event time of the newest applied event.
    pub newest_event_ms: AtomicI64,
    /// Next offset to consume per partition, in the generation consumed.
    pub positions: std::sync::Mutex<HashMap<i32, i64>>,
    /// Where each consumed partition ends, as last found ([`EndOffsets`]).
    pub high_watermarks: std::sync::Mutex<HashMap<i32, i64>>,
    /// When (wall clock, ms) the last complete round of finding every
    /// consumed partition's end began (0: none yet): every record the
    /// broker acknowledged before it is below [`Self::high_watermarks`].
    pub ends_as_of_ms: AtomicI64,
    /// (column family, property, value), refreshed every few seconds.
    pub rocksdb: std::sync::Mutex<Vec<(String, String, u64)>>,
    /// Seconds per applied batch.
    pub apply_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Events applied per tenant since the start (all generations): the
    /// operator page's live event rates.
    pub tenant_applied: std::sync::Mutex<HashMap<String, u64>>,
}

impl Default for SpeedMetrics {
    fn default() -> SpeedMetrics {
        SpeedMetrics {
            ready_generation: AtomicU64::new(0),
            building_generation: AtomicU64::new(0),
            records: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            last_batch_micros: AtomicU64::new(0),
            dedup_ids: AtomicU64::new(0),
            newest_event_ms: AtomicI64::new(0),
            positions: Default::default(),
            high_watermarks: Default::default(),
            ends_as_of_ms: AtomicI64::new(0),
            rocksdb: Default::default(),
            tenant_applied: Default::default(),
            // 100 µs to ~3 s.
            apply_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 16),
            ),
        }
    }
}

/// A copy of what a metrics mutex holds (empty if a writer panicked).
fn snapshot<T: Clone + Default>(m: &std::sync::Mutex<T>) -> T {
    m.lock().map(|v| v.clone()).unwrap_or_default()
}

impl SpeedMetrics {
    /// A copy of [`SpeedMetrics::high_watermarks`].
    pub fn high_watermarks(&self) -> HashMap<i32, i64> {
        snapshot(&self.high_watermarks)
    }

    /// A copy of [`SpeedMetrics::tenant_applied`].
    pub fn tenant_applied(&self) -> HashMap<String, u64> {
        snapshot(&self.tenant_applied)
    }

    /// A copy of [`SpeedMetrics::rocksdb`].
    pub fn rocksdb_stats(&self) -> Vec<(String, String, u64)> {
        snapshot(&self.rocksdb)
    }

    /// A copy of [`SpeedMetrics::positions`].
    pub fn positions(&self) -> HashMap<i32, i64> {
        snapshot(&self.positions)
    }

    fn set_positions(&self, positions: &HashMap<i32, i64>) {
        if let Ok(mut p) = self.positions.lock() {
            p.clone_from(positions);
        }
    }
}

/// Sends invalid records to the dead-letter topic.
struct DeadLetters {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
    partitions: u32,
    pending: u64,
}

impl DeadLetters {
    fn send(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        partition: i32,
        offset: i64,
        reason: &str,
    ) -> Result<(), SpeedError> {
        let (p, o) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: DLQ_PARTITION_HEADER,
                value: Some(p.as_str()),
            })
            .insert(Header {
                key: DLQ_OFFSET_HEADER,
                value: Some(o.as_str()),
            })
            .insert(Header {
                key: DLQ_REASON_HEADER,
                value: Some(reason),
            });
        let mut record = BaseRecord::to(&self.topic)
            .payload(value)
            .headers(headers)
            .partition(partition.rem_euclid(self.partitions as i32));
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(SpeedError::kafka("producing a dead letter")(e)),
            }
        }
        self.pending += 1;
        Ok(())
    }

    /// Waits until every dead letter sent so far is acknowledged.
    fn flush(&mut self) -> Result<(), SpeedError> {
        if self.pending == 0 {
            return Ok(());
        }
        // rdkafka's flush() sleeps in 100 ms steps; polling in 1 ms steps
        // keeps a batch with a dead letter from waiting that long.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(SpeedError::Broker(format!(
                    "{} dead letters not acknowledged within 30 s",
                    self.producer.in_flight_count()
                )));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        let failed = self.producer.context().failed();
        if failed > 0 {
            return Err(SpeedError::Broker(format!(
                "{failed} dead letters were not delivered"
            )));
        }
        self.pending = 0;
        Ok(())
    }
}

/// One polled record, decoded.
struct Polled {
    partition: i32,
    offset: i64,
    kafka_ts: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    event: Result<Event, weft_core::InvalidEvent>,
}

/// Whether a generation being built has reached the ready one's offsets.
fn caught_up(
    store: &SpeedStore,
    building: Generation,
    ready: Generation,
) -> Result<bool, SpeedError> {
    let (mine, theirs) = (store.offsets(building)?, store.offsets(ready)?);
    Ok(theirs
        .iter()
        .all(|(p, o)| mine.get(p).copied().unwrap_or(0) >= *o))
}

/// Runs the speed layer until `shutdown` is set. Blocks: call it on a
/// dedicated thread. It consumes into the generation being built if there
/// is one, else into the ready generation; `control` delivers requests for
/// new generations when batch views are published.
pub fn run(
    config: &SpeedConfig,
    spec: Arc<FeatureSpec>,
    metrics: Arc<SpeedMetrics>,
    shutdown: Arc<AtomicBool>,
    control: Option<std::sync::mpsc::Receiver<NewGeneration>>,
) -> Result<(), SpeedError> {
    let store = Arc::new(SpeedStore::open(
        &config.data_dir,
        spec,
        config.sync_writes,
    )?);
    let control = control.map(Control::new);
    run_with_store(config, store, metrics, shutdown, control.as_ref())
}

/// [`run`] on a store the caller opened and may read concurrently (the
/// serving layer reads the ready generation while this loop writes). The
/// caller keeps `control`, so it can run the loop again after an error.
pub fn run_with_store(
    config: &SpeedConfig,
    store: Arc<SpeedStore>,
    metrics: Arc<SpeedMetrics>,
    shutdown: Arc<AtomicBool>,
    control: Option<&Control>,
) -> Result<(), SpeedError> {
    let partitions = partition_count(&config.bootstrap, &config.topic, Duration::from_secs(30))?;
    let owned = owned_partitions(config, partitions)?;
    let rt = weft_core::runtime::current_thread().map_err(|e| SpeedError::Io {
        path: "tokio runtime".into(),
        source: e,
    })?;
    rt.block_on(ensure_topic(
        &config.bootstrap,
        &config.dead_letter_topic,
        partitions,
    ))?;
    let dead_letters = DeadLetters {
        producer: base_config(&config.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(DeliveryCounter::default())
            .map_err(SpeedError::kafka("creating the dead-letter producer"))?,
        topic: config.dead_letter_topic.clone(),
        partitions,
        pending: 0,
    };

    let mut consumer: BaseConsumer = base_config(&config.bootstrap)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "1")
        // Brokers that do not answer a waiting fetch as soon as data
        // arrives (Tansu 0.6) would otherwise hold every new event for the
        // default 500 ms: freshness is the point of this layer.
        .set("fetch.wait.max.ms", "10")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .map_err(SpeedError::kafka("creating the consumer"))?;
    // `poll_batch` waits parked while the consumer has nothing: librdkafka
    // wakes this thread the moment a fetch or an event lands.
    let poller = std::thread::current();
    consumer.set_nonempty_callback(move || poller.unpark());
    let mut ready = store.ready_generation()?;
    let mut building = store.building_generation()?;
    let mut g = building.unwrap_or(ready);
    metrics
        .ready_generation
        .store(u64::from(ready), Ordering::Relaxed);
    metrics
        .building_generation
        .store(u64::from(building.unwrap_or(0)), Ordering::Relaxed);
    let stored = store.offsets(g)?;
    metrics.set_positions(&stored);
    let mut cursor = Cursor::new(&config.topic, owned.iter().copied(), &stored);
    cursor.assign(&consumer)?;
    tracing::info!(
        topic = %config.topic,
        partitions,
        consumed = %owned.iter().copied().collect::<PartitionSet>(),
        ready,
        ?building,
        resume = ?stored,
        "speed layer consuming"
    );

    let mut commit_pending = false;
    let mut last_commit = Instant::now();
    let watermarks = spawn_watermark_poller(config, &owned, metrics.clone(), shutdown.clone())?;
    let mut applier = ApplyThread::spawn(
        store.clone(),
        metrics.clone(),
        dead_letters,
        owned.len(),
        config.dedup_horizon,
    )?;
    let outcome = (|| -> Result<(), SpeedError> {
        while !shutdown.load(Ordering::Relaxed) {
            while let Some(request) = control.and_then(Control::next) {
                let newest = building.unwrap_or(ready);
                if newest > 0 && store.view_of(newest)? == request.view {
                    tracing::info!(
                        view = request.view,
                        building = ?building,
                        ready,
                        "the view's generation is already built or being built; nothing to do"
                    );
                    continue;
                }
                let new = request.generation_after(newest);
                // The batches in flight belong to the generation consumed
                // so far: apply them before switching.
                if let Err(e) = applier.drain() {
                    if let Some(c) = control {
                        c.hold(request);
                    }
                    return Err(e);
                }
                store.start_generation(ready, new, request.view, &request.boundary, &owned)?;
                building = Some(new);
                g = new;
                metrics
                    .building_generation
                    .store(u64::from(g), Ordering::Relaxed);
                let stored = store.offsets(g)?;
                metrics.set_positions(&stored);
                tracing::info!(generation = g, view = request.view, from = ?stored, "building a generation");
                cursor = Cursor::new(&config.topic, owned.iter().copied(), &stored);
                cursor.assign(&consumer)?;
            }
            // Stored offsets only move forward: a "not yet" read while
            // batches are in flight stands; a "yes" is checked again once
            // they are applied (the applier keeps overlapping the replay).
            if let Some(b) = building
                && caught_up(&store, b, ready)?
            {
                applier.drain()?;
                if caught_up(&store, b, ready)? {
                    store.finish_generation(b)?;
                    tracing::info!(generation = b, previous = ready, "generation ready");
                    ready = b;
                    building = None;
                    metrics
                        .ready_generation
                        .store(u64::from(b), Ordering::Relaxed);
                    metrics.building_generation.store(0, Ordering::Relaxed);
                }
            }
            let polled = poll_batch(config, &consumer, &mut cursor)?;
            if polled.is_empty() {
                cursor.probe_silent(&consumer)?;
                // Idle: everything polled is applied once the applier is
                // drained; commit the informational group offsets (an async
                // commit; a synchronous one has no timeout in librdkafka
                // and, against a slow group coordinator, stalled this loop).
                if commit_pending {
                    applier.drain()?;
                    commit_pending = !commit_applied(&consumer, &config.topic, &metrics);
                }
                continue;
            }
            applier.submit(g, polled)?;
            commit_pending = true;
            // Informational only, so standard lag tools see the position:
            // what is applied, about once a second while busy.
            if last_commit.elapsed() >= Duration::from_secs(1) {
                last_commit = Instant::now();
                commit_applied(&consumer, &config.topic, &metrics);
            }
        }
        Ok(())
    })();
    // Apply what was polled before stopping (or report the applier's own
    // error, which is the cause when the loop failed on a closed channel).
    let finished = applier.finish();
    let _ = watermarks.join();
    if let (Err(_), Err(e)) = (&outcome, &finished) {
        tracing::error!(error = %e, "the apply thread failed too");
    }
    outcome.and(finished)?;
    tracing::info!("speed layer stopped");
    Ok(())
}

/// The partitions the loop consumes: the configured ones (each must be in
/// the topic's `partitions`), else every one.
fn owned_partitions(config: &SpeedConfig, partitions: u32) -> Result<Vec<i32>, SpeedError> {
    let Some(owned) = &config.partitions else {
        return Ok((0..partitions as i32).collect());
    };
    let beyond = owned.beyond(partitions);
    if !beyond.is_empty() {
        return Err(SpeedError::Broker(format!(
            "partitions {beyond} are not in topic {} of {partitions} partitions \
             (the shard's assignment is of kafka.partitions: set it to the topic's count)",
            config.topic
        )));
    }
    Ok(owned.iter().collect())
}

/// Polls up to `max_batch` records or `max_batch_wait`, decoding each.
fn poll_batch(
    config: &SpeedConfig,
    consumer: &BaseConsumer,
    cursor: &mut Cursor,
) -> Result<Vec<Polled>, SpeedError> {
    let mut polled: Vec<Polled> = Vec::new();
    let deadline = Instant::now() + config.max_batch_wait;
    while polled.len() < config.max_batch {
        if !polled.is_empty() && Instant::now() >= deadline {
            break;
        }
        // Not `poll(left)`: rdkafka waits whole milliseconds and polls
        // the sub-millisecond rest of a timeout in a loop without
        // waiting, which spun this thread for about 1 ms of every
        // 5 (40 % of a core while idle). Nor a poll and a short nap: a
        // thousand wake-ups a second while idle, each taking a core from
        // the requests `weft serve` answers. A non-blocking poll, then a
        // park that the consumer's nonempty callback ends (set in
        // `run_with_store`; the callback fires when the queue goes from
        // empty to not, and an unpark before the park is kept, so no
        // wake-up is lost).
        match consumer.poll(Duration::ZERO) {
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::park_timeout(left);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka poll error; retrying");
                break;
            }
            Some(Ok(m)) => {
                if cursor.check(consumer, m.partition(), m.offset())? == Verdict::Skip {
                    continue;
                }
                let payload = m.payload().unwrap_or_default().to_vec();
                let key = m.key().map(<[u8]>::to_vec);
                polled.push(Polled {
                    partition: m.partition(),
                    offset: m.offset(),
                    kafka_ts: m.timestamp().to_millis(),
                    event: Event::decode_record(key.as_deref(), &payload),
                    key,
                    payload,
                });
            }
        }
    }
    Ok(polled)
}

/// Commits the applied positions as the group's offsets (async); whether
/// the commit was handed to the client.
fn commit_applied(consumer: &BaseConsumer, topic: &str, metrics: &SpeedMetrics) -> bool {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, next) in metrics.positions() {
        if tpl
            .add_partition_offset(topic, p, rdkafka::Offset::Offset(next))
            .is_err()
        {
            return false;
        }
    }
    tpl.count() == 0 || consumer.commit(&tpl, CommitMode::Async).is_ok()
}

/// Finds every consumed partition's end ([`EndOffsets`]: the high
/// watermark, corrected where the broker under-reports it) about once a
/// second for the lag metrics, on its own thread and clients (each is a
/// broker round trip the consume loop must not wait for). Stops with
/// `shutdown`.
fn spawn_watermark_poller(
    config: &SpeedConfig,
    partitions: &[i32],
    metrics: Arc<SpeedMetrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, SpeedError> {
    let mut ends = EndOffsets::new(&config.bootstrap, &config.topic)?;
    let partitions = partitions.to_vec();
    std::thread::Builder::new()
        .name("weft-speed-lag".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let began = weft_core::time::now_ms();
                let mut complete = true;
                for &p in &partitions {
                    match ends.end(p, Duration::from_secs(1)) {
                        Some(end) => {
                            if let Ok(mut marks) = metrics.high_watermarks.lock() {
                                marks.insert(p, end);
                            }
                        }
                        None => complete = false,
                    }
                }
                if complete {
                    // After the ends (Release): a reader that sees this
                    // time sees ends at least this new.
                    metrics.ends_as_of_ms.store(began, Ordering::Release);
                }
                for _ in 0..10 {
                    if shutdown.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map_err(|source| SpeedError::Io {
            path: "weft-speed-lag thread".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(view: u64) -> NewGeneration {
        NewGeneration {
            view,
            boundary: HashMap::from([(0, 41)]),
        }
    }

    /// Generations count up: a new view keeps its version as the number, a
    /// rollback (an older view) takes the next one.
    #[test]
    fn generations_are_numbered_upwards() {
        assert_eq!(request(1).generation_after(0), 1);
        assert_eq!(request(5).generation_after(2), 5);
        assert_eq!(request(1).generation_after(2), 3);
        assert_eq!(request(3).generation_after(3), 4);
        assert_eq!(request(u64::MAX).generation_after(7), 8);
    }

    /// A request taken by a loop that then failed comes back first.
    #[test]
    fn control_gives_back_a_held_request_first() {
        let (tx, rx) = std::sync::mpsc::channel();
        let control = Control::new(rx);
        assert_eq!(control.next(), None);
        tx.send(request(1)).unwrap();
        tx.send(request(2)).unwrap();
        let taken = control.next().unwrap();
        assert_eq!(taken, request(1));
        control.hold(taken);
        assert_eq!(control.next(), Some(request(1)));
        assert_eq!(control.next(), Some(request(2)));
        assert_eq!(control.next(), None);
    }
}
