//! `weft archive`: runs the archiver until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use weft_speed::archiver::{ArchiverConfig, ArchiverMetrics, run};

#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    /// Kafka bootstrap address.
    #[arg(long)]
    bootstrap: String,
    /// The archive root (hive-partitioned Parquet).
    #[arg(long)]
    root: PathBuf,
    #[arg(long, default_value = "events")]
    topic: String,
    /// Flush when this many events are buffered.
    #[arg(long, default_value_t = 500_000)]
    max_rows: usize,
    /// Flush when the oldest buffered event has waited this long.
    #[arg(long, default_value_t = 60_000)]
    max_delay_ms: u64,
    /// Archive partition P again from OFFSET, e.g. `--replay-from 3=120000`
    /// (repeatable): restores lost archive files while the topic still holds
    /// the records. The batch job drops the copies (same event id).
    #[arg(long, value_name = "P=OFFSET", value_parser = parse_replay_from)]
    replay_from: Vec<(i32, i64)>,
}

fn parse_replay_from(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PARTITION=OFFSET, e.g. 3=120000"))?;
    let p: i32 = p
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: partition: {e}"))?;
    let o: i64 = o
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: offset: {e}"))?;
    if p < 0 || o < 0 {
        return Err(format!("{s:?}: partition and offset must be at least 0"));
    }
    Ok((p, o))
}

pub(crate) fn run_archive(args: &ArchiveArgs) -> Result<()> {
    let mut config = ArchiverConfig::new(&args.bootstrap, args.root.clone());
    config.topic = args.topic.clone();
    config.max_rows = args.max_rows;
    config.max_delay = Duration::from_millis(args.max_delay_ms);
    config.replay_from = args.replay_from.iter().copied().collect();
    let metrics = Arc::new(ArchiverMetrics::default());
    let worker_metrics = metrics.clone();
    crate::speed_cmd::run_until_stopped(
        "weft-archive",
        move |shutdown| run(&config, worker_metrics, shutdown),
        || {
            tracing::info!(
                records = metrics.records.load(Ordering::Relaxed),
                archived = metrics.archived.load(Ordering::Relaxed),
                skipped_invalid = metrics.skipped_invalid.load(Ordering::Relaxed),
                flushes = metrics.flushes.load(Ordering::Relaxed),
                "archiver"
            );
        },
    )
}
