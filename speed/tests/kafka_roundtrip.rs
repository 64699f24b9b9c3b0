//! 100k generated events go through a real Kafka-protocol broker (Tansu) and
//! come back through a consumer group: every event arrives, on its user's
//! partition, with each user's order kept and offsets dense.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weft_core::Event;
use weft_core::generator::{GenConfig, Generator, Sequencer};
use weft_speed::broker::LocalBroker;
use weft_speed::kafka::{EventProducer, base_config, ensure_topic};

const EVENTS: u64 = 100_000;
const PARTITIONS: u32 = 8;

#[test]
fn produce_and_consume_100k_events_in_order() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let broker = LocalBroker::start(None, logs.path())?;
    let topic = "events";
    let rt = weft_core::runtime::current_thread()?;
    rt.block_on(ensure_topic(broker.bootstrap(), topic, PARTITIONS))?;

    // Produce in arrival order; remember each user's sequence and the
    // partition/offset a fresh topic must give each record.
    let mut producer = EventProducer::new(broker.bootstrap(), topic)?;
    ensure!(producer.partitions() == PARTITIONS);
    let mut sequencer = Sequencer::new(PARTITIONS);
    let mut expected_by_user: HashMap<String, Vec<String>> = HashMap::new();
    let mut expected_at: HashMap<(i32, i64), String> = HashMap::new();
    for event in
        Generator::new(GenConfig::new(11, EVENTS, 4, 10_000)).map_err(anyhow::Error::msg)?
    {
        let partition = producer.send_event(&event)?;
        let s = sequencer.assign(event);
        ensure!(
            s.partition == partition,
            "producer and sequencer agree on partitions"
        );
        expected_by_user
            .entry(s.event.kafka_key())
            .or_default()
            .push(s.event.event_id.clone());
        expected_at.insert((s.partition, s.offset), s.event.event_id);
    }
    let report = producer.flush(Duration::from_secs(60))?;
    ensure!(
        report.delivered == EVENTS,
        "delivered {} of {EVENTS}",
        report.delivered
    );

    // Consume it all back in a consumer group.
    let consumer: BaseConsumer = base_config(broker.bootstrap())
        .set("group.id", "roundtrip")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut got_by_user: HashMap<String, Vec<String>> = HashMap::new();
    let mut next_offset = vec![0i64; PARTITIONS as usize];
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    while received < EVENTS {
        if Instant::now() > deadline {
            bail!("only {received} of {EVENTS} events came back within the deadline");
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.context("consuming")?;
        let (p, o) = (msg.partition(), msg.offset());
        ensure!(
            o == next_offset[p as usize],
            "partition {p}: offset {o}, expected {}",
            next_offset[p as usize]
        );
        next_offset[p as usize] += 1;
        let event = Event::decode_record(msg.key(), msg.payload().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("partition {p} offset {o}: {e}"))?;
        ensure!(
            expected_at.get(&(p, o)) == Some(&event.event_id),
            "partition {p} offset {o} holds {}, expected {:?}",
            event.event_id,
            expected_at.get(&(p, o))
        );
        got_by_user
            .entry(event.kafka_key())
            .or_default()
            .push(event.event_id);
        received += 1;
    }
    // Nothing beyond what was produced.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
        bail!(
            "unexpected extra record at {}:{}",
            extra.partition(),
            extra.offset()
        );
    }
    ensure!(
        got_by_user.len() == expected_by_user.len(),
        "every user came back"
    );
    for (user, expected) in &expected_by_user {
        ensure!(
            got_by_user.get(user) == Some(expected),
            "order of {user}'s events"
        );
    }
    ensure!(
        next_offset.as_slice() == sequencer.end_offsets(),
        "per-partition counts match"
    );

    // Group offsets commit and read back.
    consumer.commit_consumer_state(CommitMode::Sync)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for p in 0..PARTITIONS as i32 {
        let offset = committed.find_partition(topic, p).map(|e| e.offset());
        ensure!(
            offset == Some(Offset::Offset(next_offset[p as usize])),
            "partition {p}: committed {offset:?}, expected {}",
            next_offset[p as usize]
        );
    }
    Ok(())
}
