//! `weft batch`: run the batch job, and the data scientist's tools over
//! published views (inspect, export, list, rollback).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use weft_batch::{BatchConfig, JobProgress};
use weft_view::{BlockCache, OpenedView, ViewStore, version_name};

#[derive(Debug, Subcommand)]
pub(crate) enum BatchCommand {
    /// Recompute every user's features from the archive and publish a view.
    Run(RunArgs),
    /// Print one user's features as of a time, computed from a view.
    Inspect(InspectArgs),
    /// Write one row per user, one column per feature, to a Parquet file.
    Export(ExportArgs),
    /// List the views in a store and which one is current.
    List {
        /// The view store (local directory or s3:// / gs:// URL).
        #[arg(long)]
        views: String,
    },
    /// Make an older view current again.
    Rollback {
        #[arg(long)]
        views: String,
        /// The version to publish, e.g. 3 or v000003.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The archive root: a local directory or an s3:// / gs:// URL.
    #[arg(long)]
    archive: String,
    /// The feature spec (TOML).
    #[arg(long)]
    features: PathBuf,
    /// The view store: a local directory or an s3:// / gs:// URL.
    #[arg(long)]
    views: String,
    /// DataFusion's memory budget in MiB: rows are grouped by user in memory
    /// within it; a partition that does not fit is sorted externally,
    /// spilling to disk.
    #[arg(long, default_value_t = 2048)]
    memory_mb: usize,
    /// Directory for spill files (default: the system temp directory).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Parallel fold partitions (default: the number of cores).
    #[arg(long)]
    partitions: Option<usize>,
    /// Views to keep after publishing (for rollback).
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Co-occurrence window for item neighbours, in minutes.
    #[arg(long, default_value_t = 60)]
    cooc_window_min: i64,
    /// Neighbours kept per item.
    #[arg(long, default_value_t = 20)]
    neighbours: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ViewArgs {
    /// The view store.
    #[arg(long)]
    views: String,
    /// The view version (default: the current one).
    #[arg(long)]
    version: Option<String>,
    /// Check every file's SHA-256 against the manifest.
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    view: ViewArgs,
    /// The user, as tenant/user_id.
    #[arg(long)]
    user: String,
    /// Query time: epoch milliseconds, YYYY-MM-DD (end of that day) or
    /// `now` (default: the newest event time in the view).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    view: ViewArgs,
    /// The Parquet file to write.
    #[arg(long)]
    out: PathBuf,
    /// Query time, as for inspect.
    #[arg(long)]
    at: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn parse_version(s: &str) -> Result<u64> {
    s.trim_start_matches('v')
        .parse()
        .with_context(|| format!("'{s}' is not a view version (e.g. 3 or v000003)"))
}

/// Parses a query time; `None` means the view's newest event.
fn parse_at(at: Option<&str>, view: &OpenedView) -> Result<i64> {
    match at {
        None => Ok(view.manifest().max_event_ms.unwrap_or(0)),
        Some("now") => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64),
        Some(s) => {
            if let Ok(ms) = s.parse::<i64>() {
                return Ok(ms);
            }
            match weft_core::time::parse_date(s) {
                Some(day_start) => Ok(day_start + weft_core::spec::DAY_MS - 1),
                None => bail!("--at '{s}': expected epoch milliseconds, YYYY-MM-DD or now"),
            }
        }
    }
}

/// The block cache of a view a command opens: one user or one scan, so
/// small.
const VIEW_BLOCK_CACHE_BYTES: usize = 64 << 20;

async fn open_view(args: &ViewArgs, work: &tempfile::TempDir) -> Result<OpenedView> {
    let store = ViewStore::open(&args.views)?;
    let version = args.version.as_deref().map(parse_version).transpose()?;
    let cache = BlockCache::new(VIEW_BLOCK_CACHE_BYTES);
    Ok(OpenedView::open(&store, version, work.path(), args.verify, &cache).await?)
}

pub(crate) fn run(cmd: &BatchCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        BatchCommand::Run(args) => rt.block_on(run_job(args)),
        BatchCommand::Inspect(args) => rt.block_on(async {
            let work = tempfile::tempdir()?;
            let view = open_view(&args.view, &work).await?;
            let (tenant, user) = args
                .user
                .split_once('/')
                .with_context(|| format!("--user '{}': expected tenant/user_id", args.user))?;
            let at = parse_at(args.at.as_deref(), &view)?;
            let profile = view.profile(tenant, user, at)?;
            let m = view.manifest();
            let out = serde_json::json!({
                "view": version_name(m.version),
                "spec_hash": m.spec_hash,
                "boundary": m.boundary.offsets,
                "tenant": tenant,
                "user_id": user,
                "at_ms": at,
                "found": !profile.is_empty(),
                "features": profile,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }),
        BatchCommand::Export(args) => rt.block_on(async {
            let work = tempfile::tempdir()?;
            let view = open_view(&args.view, &work).await?;
            let at = parse_at(args.at.as_deref(), &view)?;
            let summary = weft_batch::export::export(&view, &args.out, at)?;
            println!(
                "{}: {} users, {} columns, as of {at} ms, from {}",
                args.out.display(),
                summary.users,
                summary.columns,
                version_name(view.manifest().version)
            );
            Ok(())
        }),
        BatchCommand::List { views } => rt.block_on(async {
            let store = ViewStore::open(views)?;
            let current = store.current().await?;
            for v in store.versions().await? {
                let m = store.manifest(v).await?;
                println!(
                    "{}{} created {} ms, spec {}, {} users, {} events, boundary {:?}",
                    if Some(v) == current { "* " } else { "  " },
                    version_name(v),
                    m.created_ms,
                    m.spec_hash,
                    m.counts.users,
                    m.counts.events,
                    m.boundary.offsets
                );
            }
            Ok(())
        }),
        BatchCommand::Rollback { views, to } => rt.block_on(async {
            let store = ViewStore::open(views)?;
            let v = parse_version(to)?;
            store.set_current(v).await?;
            println!("{} is now current in {}", version_name(v), store.display());
            Ok(())
        }),
    }
}

async fn run_job(args: &RunArgs) -> Result<()> {
    let (spec, text) = crate::load_spec(&args.features)?;
    let mut config = BatchConfig::new(&args.archive, &args.views, Arc::new(spec), text);
    config.memory_limit = args.memory_mb << 20;
    config.spill_dir = args.spill_dir.clone();
    if let Some(p) = args.partitions {
        config.partitions = p.max(1);
    }
    config.keep = args.keep;
    config.recs.window_ms = args.cooc_window_min * weft_core::spec::MINUTE_MS;
    config.recs.neighbours = args.neighbours;
    let progress = Arc::new(JobProgress::default());
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:<22} {bar:30} {pos}/{len} rows ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                bar.set_length(progress.total_rows.load(Ordering::Relaxed));
                bar.set_position(progress.rows.load(Ordering::Relaxed));
                bar.set_message(progress.stage());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = weft_batch::run(&config, progress.clone()).await;
    ticker.abort();
    bar.finish_and_clear();
    let summary = result?;
    let m = &summary.manifest;
    println!(
        "published {} to {} in {:.1} s: {} users, {} events ({} duplicates dropped), {} partials, {} items; boundary {:?}",
        version_name(summary.version),
        args.views,
        summary.seconds,
        m.counts.users,
        m.counts.events,
        m.counts.duplicates,
        m.counts.partials,
        m.counts.items,
        m.boundary.offsets
    );
    println!(
        "  rows grouped in memory in {} of {} partitions; sort spills {} ({} bytes)",
        summary.grouped_in_memory, summary.partitions, summary.spills, summary.spilled_bytes
    );
    Ok(())
}
