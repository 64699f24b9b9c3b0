//! The archiver (`weft archive`): Kafka `events` to the Parquet master
//! dataset (layout and schema: `weft_core::archive`, `docs/archive.md`).
//!
//! Valid events are buffered per (tenant, UTC day) and written in *flushes*,
//! when `max_rows` events are buffered or the oldest has waited
//! `max_delay`. A flush:
//!
//! 1. writes one file per (tenant, day) as `part-f<flush>-<n>.parquet`,
//!    whole or invisible: locally under a hidden temporary name, fsynced and
//!    renamed into place; on an object store (S3) as one PUT or a multipart
//!    upload completed after its last part ([`sink`]);
//! 2. then replaces `<root>/_archiver/state.json` atomically (temp, fsync,
//!    rename; or one PUT) with the flush number and the next offset per
//!    partition.
//!
//! The state file is the commit point. On start, files of flushes after the
//! recorded one (a crash between 1 and 2) are deleted, and consumption
//! resumes at the recorded offsets through an exact [`Cursor`], so the
//! archive holds every valid event exactly once. Invalid records are not
//! archived (the speed layer sends them to the dead-letter topic); their
//! offsets are simply passed.

mod sink;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use weft_config::S3Section;
use weft_core::Event;
use weft_core::archive::ArchiveBatchBuilder;
use weft_core::spec::DAY_MS;

use crate::SpeedError;
use crate::cursor::{Cursor, Verdict};
use crate::kafka::{base_config, partition_count};

use sink::Sink;
pub use sink::read_state;
pub use weft_core::archive::{
    ARCHIVER_STATE_DIR as STATE_DIR, ARCHIVER_STATE_FILE as STATE_FILE, ArchiverState,
};

#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Group id for informational offset commits.
    pub group_id: String,
    /// The archive: a directory, or a `file://` / `s3://bucket/prefix` URL.
    pub root: String,
    /// How an `s3://` root is reached.
    pub s3: S3Section,
    /// Flush when this many events are buffered.
    pub max_rows: usize,
    /// Flush when the oldest buffered event has waited this long: the
    /// bound on how late an event reaches the archive.
    pub max_delay: Duration,
    /// Partitions to archive again from an earlier offset (to restore lost
    /// files; the batch job drops the copies by event id). Offsets at or
    /// past the recorded ones change nothing.
    pub replay_from: BTreeMap<i32, i64>,
}

impl ArchiverConfig {
    pub fn new(bootstrap: &str, root: impl Into<String>) -> ArchiverConfig {
        ArchiverConfig {
            bootstrap: bootstrap.to_string(),
            topic: "events".into(),
            group_id: "archive".into(),
            root: root.into(),
            s3: S3Section::default(),
            max_rows: 500_000,
            max_delay: Duration::from_secs(60),
            replay_from: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct ArchiverMetrics {
    pub records: AtomicU64,
    pub archived: AtomicU64,
    pub skipped_invalid: AtomicU64,
    pub flushes: AtomicU64,
    pub files: AtomicU64,
}

/// The flush number in a file name `part-f<flush>-<n>.parquet`.
fn flush_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-f")?.split('-').next()?.parse().ok()
}

/// Buffered events of one flush.
#[derive(Default)]
struct Buffer {
    parts: Vec<((String, i64), ArchiveBatchBuilder)>,
    rows: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    fn push(&mut self, e: &Event, partition: i32, offset: i64, ingest_ms: i64) {
        let day = e.ts_ms.div_euclid(DAY_MS);
        let i = match self
            .parts
            .iter()
            .position(|((t, d), _)| *d == day && *t == e.tenant)
        {
            Some(i) => i,
            None => {
                self.parts
                    .push(((e.tenant.clone(), day), ArchiveBatchBuilder::default()));
                self.parts.len() - 1
            }
        };
        self.parts[i].1.append(e, partition, offset, ingest_ms);
        self.rows += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }
}

/// Moves the resume offsets of `replay_from`'s partitions back (in memory:
/// the next flush records them).
fn replay(
    state: &mut ArchiverState,
    replay_from: &BTreeMap<i32, i64>,
    partitions: u32,
) -> Result<(), SpeedError> {
    for (&p, &from) in replay_from {
        if p < 0 || p as u32 >= partitions || from < 0 {
            return Err(SpeedError::Broker(format!(
                "cannot replay partition {p} from offset {from}: the topic has partitions 0..{partitions} and offsets start at 0"
            )));
        }
        let next = state.offsets.get(&p).copied().unwrap_or(0);
        if from < next {
            tracing::warn!(
                partition = p,
                from,
                was = next,
                "archiving a partition again"
            );
            state.offsets.insert(p, from);
        } else {
            tracing::info!(
                partition = p,
                from,
                next,
                "nothing to replay: not archived that far yet"
            );
        }
    }
    Ok(())
}

/// Runs the archiver until `shutdown` is set (then flushes what it has).
/// Blocks: call it on a dedicated thread.
pub fn run(
    config: &ArchiverConfig,
    metrics: Arc<ArchiverMetrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<(), SpeedError> {
    let sink = Sink::open(&config.root, &config.s3)?;
    let mut state = sink.read_state()?;
    let removed = sink.remove_uncommitted(&state)?;
    if removed > 0 {
        tracing::warn!(
            removed,
            flush = state.flush,
            "removed files of an uncommitted flush"
        );
    }
    let partitions = partition_count(&config.bootstrap, &config.topic, Duration::from_secs(30))?;
    replay(&mut state, &config.replay_from, partitions)?;
    let consumer: BaseConsumer = base_config(&config.bootstrap)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(SpeedError::kafka("creating the archiver's consumer"))?;
    let mut cursor = Cursor::new(&config.topic, 0..partitions as i32, &state.offsets);
    cursor.assign(&consumer)?;
    tracing::info!(root = %config.root, flush = state.flush, resume = ?state.offsets, "archiver consuming");

    let mut buffer = Buffer::default();
    let mut pending_offsets = state.offsets.clone();
    loop {
        let stopping = shutdown.load(Ordering::Relaxed);
        let due = buffer.rows >= config.max_rows
            || buffer
                .oldest
                .is_some_and(|t| t.elapsed() >= config.max_delay);
        if (due || stopping) && pending_offsets != state.offsets {
            state.flush += 1;
            let files = flush(&sink, state.flush, &mut buffer)?;
            state.offsets = pending_offsets.clone();
            sink.write_state(&state)?;
            metrics.flushes.fetch_add(1, Ordering::Relaxed);
            metrics.files.fetch_add(files as u64, Ordering::Relaxed);
            if let Ok(positions) = consumer.position() {
                let _ = consumer.commit(&positions, CommitMode::Async);
            }
        }
        if stopping {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => cursor.probe_silent(&consumer)?,
            Some(Err(e)) => tracing::warn!(error = %e, "kafka poll error; retrying"),
            Some(Ok(m)) => {
                if cursor.check(&consumer, m.partition(), m.offset())? == Verdict::Skip {
                    continue;
                }
                metrics.records.fetch_add(1, Ordering::Relaxed);
                match Event::decode_record(m.key(), m.payload().unwrap_or_default()) {
                    Ok(e) => {
                        // The record's timestamp as the broker gives it
                        // (create or log-append time); none: the event time.
                        let ingest_ms = m.timestamp().to_millis().unwrap_or(e.ts_ms);
                        buffer.push(&e, m.partition(), m.offset(), ingest_ms);
                        metrics.archived.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        metrics.skipped_invalid.fetch_add(1, Ordering::Relaxed);
                        // Passed, but a flush must still record the offset.
                        buffer.oldest.get_or_insert_with(Instant::now);
                    }
                }
                pending_offsets.insert(m.partition(), m.offset() + 1);
            }
        }
    }
    tracing::info!(flush = state.flush, "archiver stopped");
    Ok(())
}

/// Writes the buffer's files for flush `n`; returns how many.
fn flush(sink: &Sink, n: u64, buffer: &mut Buffer) -> Result<usize, SpeedError> {
    let parts = std::mem::take(&mut buffer.parts);
    let mut written = 0;
    for (i, ((tenant, day), mut builder)) in parts.into_iter().enumerate() {
        if builder.is_empty() {
            continue;
        }
        let name = format!("part-f{n:08}-{i:04}.parquet");
        sink.write_file(&tenant, day, &name, &builder.finish())?;
        written += 1;
    }
    buffer.rows = 0;
    buffer.oldest = None;
    Ok(written)
}
