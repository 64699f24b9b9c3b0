//! Crash safety of the speed layer: while `weft speed` replays 200k events
//! (`WEFT_CRASH_EVENTS` sets another number), kill -9 it 10 times at random
//! moments and restart it. At the end every user's profile in the speed
//! view equals the reference evaluator's.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    crash_events, kill_9_repeatedly, log_text, logged_again, stop_cleanly, wait_for_start,
    wait_while_running,
};
use rand::SeedableRng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weft_core::eval::compare_profiles;
use weft_core::generator::{GenConfig, Generator, Sequencer};
use weft_core::spec::DAY_MS;
use weft_core::{Event, FeatureSpec, reference};
use weft_speed::kafka::{EventProducer, base_config};
use weft_speed::store::SpeedStore;

const KILLS: usize = 10;

fn spec_path() -> String {
    crate::common::example_spec_path()
}

fn start_speed(bootstrap: &str, data_dir: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "speed",
            "--bootstrap",
            bootstrap,
            "--spec",
            &spec_path(),
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weft speed starts")
}

/// Whether the group offsets the speed layer commits (informational) have
/// reached the end of every partition; the error shows how far they are.
pub(crate) fn caught_up(consumer: &BaseConsumer, end: &[i64]) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..end.len() as i32 {
        tpl.add_partition("events", p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map_err(|e| format!("reading group offsets: {e}"))?;
    let at: Vec<Option<Offset>> = (0..end.len() as i32)
        .map(|p| committed.find_partition("events", p).map(|e| e.offset()))
        .collect();
    if at
        .iter()
        .zip(end)
        .all(|(a, e)| *a == Some(Offset::Offset(*e)))
    {
        Ok(())
    } else {
        Err(format!("group offsets {at:?}, end {end:?}"))
    }
}

#[test]
fn speed_layer_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _rt) = crate::common::broker_with_events(dir.path(), 8);

    // The whole stream is on the topic first: the speed layer replays it.
    let mut producer = EventProducer::new(broker.bootstrap(), "events").unwrap();
    let mut seq = Sequencer::new(8);
    let mut by_user: BTreeMap<(String, String), Vec<Event>> = BTreeMap::new();
    let mut ordered = Vec::new();
    for e in Generator::new(GenConfig::new(99, crash_events(), 4, 20_000)).unwrap() {
        producer.send_event(&e).unwrap();
        let s = seq.assign(e);
        ordered.push((s.partition, s.offset, s.event));
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    ordered.sort_by_key(|(p, o, _)| (*p, *o));
    let end_ts = ordered.iter().map(|(_, _, e)| e.ts_ms).max().unwrap();
    for (_, _, e) in ordered {
        by_user
            .entry((e.tenant.clone(), e.user_id.clone()))
            .or_default()
            .push(e);
    }

    let data = dir.path().join("speed");
    let log = dir.path().join("speed.log");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    kill_9_repeatedly(
        KILLS,
        &mut rng,
        || start_speed(broker.bootstrap(), &data, &log),
        logged_again(&log, "speed layer consuming"),
    );
    let spec =
        Arc::new(FeatureSpec::parse(&std::fs::read_to_string(spec_path()).unwrap()).unwrap());
    {
        let store = SpeedStore::open(&data, spec.clone(), false).unwrap();
        eprintln!(
            "after {KILLS} kills: {} of {} records consumed",
            store.offsets(0).unwrap().values().sum::<i64>(),
            seq.end_offsets().iter().sum::<i64>()
        );
    }
    // Last run: let it finish, then stop it cleanly.
    let starts_before = log_text(&log).matches("speed layer consuming").count();
    let mut child = start_speed(broker.bootstrap(), &data, &log);
    let watcher: BaseConsumer = base_config(broker.bootstrap())
        .set("group.id", "weft-speed")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // The earlier runs may already have consumed everything.
    wait_for_start(&log, "speed layer consuming", starts_before, deadline);
    wait_while_running(&mut child, &log, deadline, || {
        caught_up(&watcher, seq.end_offsets())
    });
    stop_cleanly(child, &log);

    let store = SpeedStore::open(&data, spec.clone(), false).unwrap();
    let offsets = store.offsets(0).unwrap();
    for (p, end) in seq.end_offsets().iter().enumerate() {
        assert_eq!(
            offsets.get(&(p as i32)),
            Some(end),
            "stored offset of partition {p}"
        );
    }
    for t in [end_ts, end_ts - 7 * DAY_MS] {
        for ((tenant, user), events) in &by_user {
            let served = store.profile(0, tenant, user, t).unwrap();
            let expected = reference::evaluate(&spec, events, t);
            if let Err(d) = compare_profiles(&spec, &served, &expected) {
                let log = log_text(&log);
                panic!("{tenant}/{user} at {t}: {d}\nspeed log:\n{log}");
            }
        }
    }
}
