//! The cursor delivers every offset exactly once from a stored position,
//! even though Tansu answers a fetch inside a record batch from the next
//! batch (skipping records) or, inside the last batch, not at all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weft_speed::broker::LocalBroker;
use weft_speed::cursor::{Cursor, Verdict};
use weft_speed::kafka::{EventProducer, base_config, ensure_topic};

/// Reads partition 0 from `start` with a tiny rewind (so the escalation
/// path runs) and returns the accepted offsets.
fn read_from(bootstrap: &str, start: i64, end: i64) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = base_config(bootstrap)
        .set("group.id", "cursor")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut cursor = Cursor::new("batches", [0], &HashMap::from([(0, start)])).with_rewind(10);
    let mut tpl = TopicPartitionList::new();
    for (p, from) in cursor.assignment() {
        tpl.add_partition_offset("batches", p, Offset::Offset(from))?;
    }
    consumer.assign(&tpl)?;
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.last().copied() != Some(end - 1) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(m) => {
                let m = m?;
                if cursor.check(&consumer, m.partition(), m.offset())? == Verdict::Accept {
                    ensure!(
                        m.payload() == Some(format!("v{}", m.offset()).as_bytes()),
                        "payload of {}",
                        m.offset()
                    );
                    accepted.push(m.offset());
                }
            }
            None => cursor.probe_silent(&consumer)?,
        }
    }
    ensure!(cursor.lost == 0, "nothing accepted as lost");
    Ok(accepted)
}

#[test]
fn cursor_is_exact_on_a_broker_that_skips_inside_batches() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let broker = LocalBroker::start(None, logs.path())?;
    let rt = weft_core::runtime::current_thread()?;
    rt.block_on(ensure_topic(broker.bootstrap(), "batches", 1))?;
    // Ten record batches of 100: offsets 0-99, 100-199, ...
    let mut producer = EventProducer::new(broker.bootstrap(), "batches")?;
    for batch in 0..10 {
        for i in 0..100 {
            let o = batch * 100 + i;
            producer.send_raw(b"k", format!("v{o}").as_bytes(), 0)?;
        }
        producer.flush(Duration::from_secs(30))?;
    }
    for start in [0, 150, 199, 950] {
        let got = read_from(broker.bootstrap(), start, 1_000)?;
        let want: Vec<i64> = (start..1_000).collect();
        ensure!(
            got == want,
            "from {start}: got {} offsets starting {:?}",
            got.len(),
            got.first()
        );
    }
    Ok(())
}
