//! Crash safety of the archiver: while `weft archive` writes 200k events
//! (`WEFT_CRASH_EVENTS` sets another number; 1 % malformed records mixed
//! in), kill -9 it 10 times at random moments and restart it. After every
//! kill each visible file reads whole; at the end the archive's (partition,
//! offset) set equals the topic's valid records exactly, with no duplicate
//! and no leftover temporary.
//!
//! And the runbook's replay: files lost from a finished archive are
//! restored by `weft archive --replay-from P=OFFSET`, after which a batch
//! view equals the reference for every user.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    crash_events, kill_9_repeatedly, log_text, stop_cleanly, wait_for_start, wait_while_running,
};
use rand::SeedableRng;
use weft_core::archive::read_archive;
use weft_core::generator::{GenConfig, Generator, Sequencer};
use weft_speed::archiver::read_state;
use weft_speed::kafka::{EventProducer, Produced, produce_generated};

const KILLS: usize = 10;
const PARTITIONS: u32 = 8;

/// Starts `weft archive` (flushes of at most 20k rows or 300 ms) with
/// `extra` arguments, its log appended to `log`.
pub(crate) fn start_archiver(
    bootstrap: &str,
    root: impl AsRef<std::ffi::OsStr>,
    log: &Path,
    extra: &[&str],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "archive",
            "--bootstrap",
            bootstrap,
            "--max-rows",
            "20000",
            "--max-delay-ms",
            "300",
            "--root",
        ])
        .arg(root)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weft archive starts")
}

/// The archive under `root` holds every valid record of `produced` exactly
/// once, as produced, and nothing else.
pub(crate) fn assert_archive_is_the_topic(root: &Path, produced: &Produced) {
    let archived = read_archive(root).unwrap();
    let coords: HashSet<(i32, i64)> = archived.iter().map(|s| (s.partition, s.offset)).collect();
    assert_eq!(
        coords.len(),
        archived.len(),
        "no (partition, offset) is archived twice"
    );
    let expected: HashMap<(i32, i64), &weft_core::Event> = produced
        .valid
        .iter()
        .map(|(p, o, e)| ((*p, *o), e))
        .collect();
    assert_eq!(
        archived.len(),
        expected.len(),
        "every valid record archived once"
    );
    for s in &archived {
        assert_eq!(
            expected.get(&(s.partition, s.offset)),
            Some(&&s.event),
            "record {}:{}",
            s.partition,
            s.offset
        );
        assert!(!produced.malformed.contains(&(s.partition, s.offset)));
    }
}

fn hidden_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                hidden_temporaries(&p)
            } else {
                usize::from(name.ends_with(".tmp"))
            }
        })
        .sum()
}

#[test]
fn archiver_survives_kill_9_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _rt) = crate::common::broker_with_events(dir.path(), PARTITIONS);
    let mut producer = EventProducer::new(broker.bootstrap(), "events").unwrap();
    let mut seq = Sequencer::new(PARTITIONS);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut produced = Produced::default();
    let events = Generator::new(GenConfig::new(31, crash_events(), 4, 20_000)).unwrap();
    produce_generated(
        &mut producer,
        &mut seq,
        events,
        0.01,
        &mut rng,
        &mut produced,
    )
    .unwrap();
    let end = produced.end_offsets(PARTITIONS);

    let root = dir.path().join("archive");
    let log = dir.path().join("archive.log");
    // Whatever a kill left visible must read whole.
    let visible_files_read_whole = || {
        if root.exists() {
            read_archive(&root)
                .unwrap_or_else(|e| panic!("a visible file does not read after kill -9: {e}"));
        }
    };
    // A run has progressed once it completed a flush (or nothing is left).
    let mut last_flush = 0;
    let flushed = || {
        let state = read_state(&root).unwrap();
        let done = (0..PARTITIONS as i32)
            .all(|p| state.offsets.get(&p).copied().unwrap_or(0) == end[p as usize]);
        let progressed = state.flush > last_flush || done;
        last_flush = state.flush;
        progressed
    };
    kill_9_repeatedly(
        KILLS,
        &mut rng,
        || {
            visible_files_read_whole(); // after the previous kill
            start_archiver(broker.bootstrap(), &root, &log, &[])
        },
        flushed,
    );
    visible_files_read_whole(); // after the last kill
    let state = read_state(&root).unwrap();
    eprintln!(
        "after {KILLS} kills: {} of {} records archived",
        state.offsets.values().sum::<i64>(),
        end.iter().sum::<i64>()
    );
    let starts_before = log_text(&log).matches("archiver consuming").count();
    let mut child = start_archiver(broker.bootstrap(), &root, &log, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    // The earlier runs may already have archived everything.
    wait_for_start(&log, "archiver consuming", starts_before, deadline);
    wait_while_running(&mut child, &log, deadline, || {
        let state = read_state(&root).unwrap();
        if (0..PARTITIONS as i32)
            .all(|p| state.offsets.get(&p).copied().unwrap_or(0) == end[p as usize])
        {
            Ok(())
        } else {
            Err(format!("archiver state {:?} vs end {end:?}", state.offsets))
        }
    });
    stop_cleanly(child, &log);

    assert_archive_is_the_topic(&root, &produced);
    assert_eq!(
        hidden_temporaries(&root),
        0,
        "no temporary file left behind"
    );
    // The kills landed mid-archive: several starts resumed from offsets.
    let text = log_text(&log);
    let resumed = text
        .lines()
        .filter(|l| l.contains("archiver consuming") && !l.contains("resume={}"))
        .count();
    assert!(resumed >= 3, "only {resumed} runs resumed mid-archive");
}

#[test]
fn replay_from_restores_lost_archive_files() {
    let f = crate::generation_switch::fixture();
    let mut topic = f.topic(GenConfig::new(37, 30_000, 3, 2_000), 12);
    topic.produce(Vec::new(), usize::MAX, 0.01);
    let end = topic.produced.end_offsets(PARTITIONS);
    let root = f.dir.path().join("archive");
    let log = f.dir.path().join("archive.log");
    // Runs `weft archive` until it has flushed (a replay is recorded by the
    // next flush) and archived to the end of every partition.
    let archive_to_the_end = |extra: &[&str]| {
        let flushed_before = read_state(&root).unwrap().flush;
        let starts = log_text(&log).matches("archiver consuming").count();
        let mut child = start_archiver(f.broker.bootstrap(), &root, &log, extra);
        let deadline = Instant::now() + Duration::from_secs(120);
        wait_for_start(&log, "archiver consuming", starts, deadline);
        wait_while_running(&mut child, &log, deadline, || {
            let state = read_state(&root).unwrap();
            if state.flush > flushed_before
                && (0..PARTITIONS as i32)
                    .all(|p| state.offsets.get(&p).copied().unwrap_or(0) == end[p as usize])
            {
                Ok(())
            } else {
                Err(format!("archiver state {state:?} vs end {end:?}"))
            }
        });
        stop_cleanly(child, &log);
    };
    archive_to_the_end(&[]);

    // Lose the largest file (an operator's mistake, a lifecycle rule).
    let coords = |root: &Path| -> HashSet<(i32, i64)> {
        read_archive(root)
            .unwrap()
            .iter()
            .map(|s| (s.partition, s.offset))
            .collect()
    };
    let before = coords(&root);
    let largest = weft_core::archive::list_files(&root)
        .unwrap()
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&largest).unwrap();
    let lost: Vec<(i32, i64)> = before.difference(&coords(&root)).copied().collect();
    assert!(lost.len() > 100, "{} records lost", lost.len());

    // Replay each affected partition from its first lost offset.
    let mut from: HashMap<i32, i64> = HashMap::new();
    for (p, o) in &lost {
        let e = from.entry(*p).or_insert(*o);
        *e = (*e).min(*o);
    }
    let args: Vec<String> = from
        .iter()
        .flat_map(|(p, o)| ["--replay-from".to_string(), format!("{p}={o}")])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    archive_to_the_end(&args);
    assert!(log_text(&log).contains("archiving a partition again"));
    let valid: HashSet<(i32, i64)> = topic
        .produced
        .valid
        .iter()
        .map(|(p, o, _)| (*p, *o))
        .collect();
    let now = coords(&root);
    let missing = valid.difference(&now).count();
    let extra = now.difference(&valid).count();
    assert_eq!((missing, extra), (0, 0), "archived vs valid records");

    // The copies are dropped by event id: view == reference for every user.
    let (views, summary) = f.run_batch(&root);
    let copies = read_archive(&root).unwrap().len() - valid.len();
    assert!(copies > 0, "the replay archived records again");
    assert!(summary.manifest.counts.duplicates >= copies as u64);
    let empty =
        weft_speed::store::SpeedStore::open(&f.dir.path().join("speed"), f.spec.clone(), false)
            .unwrap();
    f.assert_view_plus_generation(&views, &empty, 0, &topic.produced, &[topic.latest_ts()]);
}
