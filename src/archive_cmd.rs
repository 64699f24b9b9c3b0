//! `weft archive`: runs the archiver until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::Args;
use weft_config::Overrides;
use weft_speed::archiver::{ArchiverConfig, ArchiverMetrics, run};

#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    /// Kafka bootstrap address (kafka.bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// The archive root, hive-partitioned Parquet: a directory or a
    /// file:// / s3://bucket/prefix URL (archive.root).
    #[arg(long)]
    root: Option<String>,
    /// The events topic (kafka.topic).
    #[arg(long)]
    topic: Option<String>,
    /// Flush when this many events are buffered (archive.max_rows).
    #[arg(long)]
    max_rows: Option<u64>,
    /// Flush when the oldest buffered event has waited this long
    /// (archive.max_delay_ms).
    #[arg(long)]
    max_delay_ms: Option<u64>,
    /// Archive partition P again from OFFSET, e.g. `--replay-from 3=120000`
    /// (repeatable): restores lost archive files while the topic still holds
    /// the records. The batch job drops the copies (same event id).
    #[arg(long, value_name = "P=OFFSET", value_parser = parse_replay_from)]
    replay_from: Vec<(i32, i64)>,
}

impl ArchiveArgs {
    fn overrides(&self) -> Overrides {
        Overrides::new()
            .set("kafka.bootstrap", "--bootstrap", self.bootstrap.clone())
            .set("archive.root", "--root", self.root.clone())
            .set("kafka.topic", "--topic", self.topic.clone())
            .set("archive.max_rows", "--max-rows", self.max_rows)
            .set("archive.max_delay_ms", "--max-delay-ms", self.max_delay_ms)
    }
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

pub(crate) fn run_archive(file: Option<&Path>, args: &ArchiveArgs) -> Result<()> {
    let mut config = ArchiverConfig::from_config(&crate::load_config(file, args.overrides())?);
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
