//! The archiver (`weft archive`): Kafka `events` to the Parquet master
//! dataset (layout and schema: `weft_core::archive`, `docs/archive.md`).
//!
//! Valid events are buffered per (tenant, UTC day) and written in *flushes*,
//! when `max_rows` events are buffered or the oldest has waited
//! `max_delay`. A flush:
//!
//! 1. writes one file per (tenant, day) as `part-f<flush>-<n>.parquet`, each
//!    under a hidden temporary name, fsynced and renamed into place (a file is
//!    whole or invisible);
//! 2. then replaces `<root>/_archiver/state.json` atomically (temp, fsync,
//!    rename) with the flush number and the next offset per partition.
//!
//! The state file is the commit point. On start, files of flushes after the
//! recorded one (a crash between 1 and 2) are deleted, and consumption
//! resumes at the recorded offsets through an exact [`Cursor`], so the
//! archive holds every valid event exactly once. Invalid records are not
//! archived (the speed layer sends them to the dead-letter topic); their
//! offsets are simply passed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use weft_core::Event;
use weft_core::archive::{ArchiveBatchBuilder, AtomicParquetFile, list_files, partition_dir};
use weft_core::spec::DAY_MS;

use crate::SpeedError;
use crate::cursor::{Cursor, Verdict};
use crate::kafka::{base_config, partition_count};

pub use weft_core::archive::{
    ARCHIVER_STATE_DIR as STATE_DIR, ARCHIVER_STATE_FILE as STATE_FILE, ArchiverState,
};

#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Group id for informational offset commits.
    pub group_id: String,
    pub root: PathBuf,
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
    pub fn new(bootstrap: &str, root: PathBuf) -> ArchiverConfig {
        ArchiverConfig {
            bootstrap: bootstrap.to_string(),
            topic: "events".into(),
            group_id: "archive".into(),
            root,
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpeedError + '_ {
    move |source| SpeedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the state file (absent: nothing archived yet).
pub fn read_state(root: &Path) -> Result<ArchiverState, SpeedError> {
    let path = root.join(STATE_DIR).join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| SpeedError::Store(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ArchiverState::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_state(root: &Path, state: &ArchiverState) -> Result<(), SpeedError> {
    let dir = root.join(STATE_DIR);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(".state.json.tmp");
    let path = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| SpeedError::Store(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))
}

/// The flush number in a file name `part-f<flush>-<n>.parquet`.
fn flush_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-f")?.split('-').next()?.parse().ok()
}

/// Deletes the files of flushes the state does not record (a crash between
/// writing them and the state), and stale temporaries.
fn remove_uncommitted(root: &Path, state: &ArchiverState) -> Result<usize, SpeedError> {
    if !root.exists() {
        return Ok(0);
    }
    let mut removed = remove_temporaries(root)?;
    let files = list_files(root).map_err(|e| SpeedError::Store(e.to_string()))?;
    for f in files {
        if flush_of(&f).is_some_and(|n| n > state.flush) {
            fs::remove_file(&f).map_err(io(&f))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes hidden `.<name>.tmp` files a killed writer left behind.
fn remove_temporaries(dir: &Path) -> Result<usize, SpeedError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            removed += remove_temporaries(&path)?;
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Buffered events of one flush.
#[derive(Default)]
struct Buffer {
    parts: Vec<((String, i64), ArchiveBatchBuilder)>,
    rows: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    fn push(&mut self, e: &Event, partition: i32, offset: i64) {
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
        self.parts[i].1.append(e, partition, offset);
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
    let mut state = read_state(&config.root)?;
    let removed = remove_uncommitted(&config.root, &state)?;
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
    let mut cursor = Cursor::new(&config.topic, partitions, &state.offsets);
    cursor.assign(&consumer)?;
    tracing::info!(root = %config.root.display(), flush = state.flush, resume = ?state.offsets, "archiver consuming");

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
            let files = flush(&config.root, state.flush, &mut buffer)?;
            state.offsets = pending_offsets.clone();
            write_state(&config.root, &state)?;
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
                        buffer.push(&e, m.partition(), m.offset());
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
fn flush(root: &Path, n: u64, buffer: &mut Buffer) -> Result<usize, SpeedError> {
    let parts = std::mem::take(&mut buffer.parts);
    let mut written = 0;
    for (i, ((tenant, day), mut builder)) in parts.into_iter().enumerate() {
        if builder.is_empty() {
            continue;
        }
        let dest = partition_dir(root, &tenant, day).join(format!("part-f{n:08}-{i:04}.parquet"));
        let mut file =
            AtomicParquetFile::create(dest).map_err(|e| SpeedError::Store(e.to_string()))?;
        file.write(&builder.finish())
            .map_err(|e| SpeedError::Store(e.to_string()))?;
        file.commit()
            .map_err(|e| SpeedError::Store(e.to_string()))?;
        written += 1;
    }
    buffer.rows = 0;
    buffer.oldest = None;
    Ok(written)
}
