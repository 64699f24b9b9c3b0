//! `weft batch`: run the batch job, and the data scientist's tools over
//! published views (inspect, export, list, rollback).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use weft_batch::{BatchConfig, JobProgress};
use weft_config::{Overrides, WeftConfig};
use weft_view::{BlockCache, OpenedView, ViewStore, version_name};

#[derive(Debug, Subcommand)]
pub(crate) enum BatchCommand {
    /// Recompute every user's features from the archive and publish a view
    /// (in this process, or on a Ballista cluster with --cluster).
    Run(RunArgs),
    /// Run a Ballista scheduler for `weft batch run --cluster` (until
    /// stopped): it cuts each job into stages and hands tasks to executors.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor (until stopped): it registers with the
    /// scheduler and runs the batch job's scan and fold tasks, writing the
    /// view's files into the view store.
    Executor(ExecutorArgs),
    /// Print one user's features as of a time, computed from a view.
    Inspect(InspectArgs),
    /// Write one row per user, one column per feature, to a Parquet file.
    Export(ExportArgs),
    /// Point-in-time features for every row of a label file: each user as
    /// the platform knew it at the row's ts_ms (events at or before it that
    /// had arrived by then), read from the archive.
    TrainingSet(TrainingArgs),
    /// List the views in a store and which one is current.
    List(StoreArgs),
    /// Make an older view current again. Every `weft serve` (and
    /// `weft speed --views`) following the store switches to it, paired with
    /// a speed generation rebuilt from the view's boundary, so the topic must
    /// still hold the offsets after that boundary: checked first.
    Rollback {
        #[command(flatten)]
        store: StoreArgs,
        /// The version to publish, e.g. 3 or v000003.
        #[arg(long)]
        to: String,
        /// Kafka bootstrap address for the retention check (kafka.bootstrap).
        #[arg(long)]
        bootstrap: Option<String>,
        /// Skip the retention check (a store no speed layer follows).
        #[arg(long)]
        skip_topic_check: bool,
    },
}

/// The view store: `--views`, else `views.store` from the configuration.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The view store: a local directory or an s3:// / gs:// URL
    /// (views.store).
    #[arg(long)]
    views: Option<String>,
}

impl StoreArgs {
    fn overrides(&self) -> Overrides {
        Overrides::new().set("views.store", "--views", self.views.clone())
    }
}

/// The configured view store, or an error saying how to give one.
fn view_store(c: &WeftConfig) -> Result<String> {
    c.views.store.clone().context(
        "views.store: not set (give --views, or set it in the --config file or WEFT__VIEWS__STORE)",
    )
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    scan: ScanArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Views to keep after publishing, for rollback (batch.keep).
    #[arg(long)]
    keep: Option<u64>,
    /// Co-occurrence window for item neighbours, in minutes
    /// (batch.cooc_window_min).
    #[arg(long)]
    cooc_window_min: Option<i64>,
    /// Neighbours kept per item (batch.neighbours).
    #[arg(long)]
    neighbours: Option<u64>,
    /// Run on the Ballista cluster of this scheduler, df://host:port
    /// (cluster.scheduler; unset: in this process). The executors reach the
    /// archive and the view store themselves, with their own [s3] settings.
    #[arg(long)]
    cluster: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    /// Address to listen on (cluster.bind).
    #[arg(long)]
    bind: Option<String>,
    /// Seconds without a heartbeat after which an executor is lost and its
    /// tasks run elsewhere (cluster.executor_timeout_secs).
    #[arg(long)]
    executor_timeout_secs: Option<u64>,
    /// Attempts of a task before its job fails (cluster.task_max_failures).
    #[arg(long)]
    task_max_failures: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct ExecutorArgs {
    /// The scheduler to register with, df://host:port (cluster.scheduler).
    #[arg(long)]
    scheduler: Option<String>,
    /// Host to bind and advertise to the scheduler, peers and clients
    /// (cluster.host).
    #[arg(long)]
    host: Option<String>,
    /// Arrow Flight port: shuffle reads and results (cluster.flight_port).
    #[arg(long)]
    flight_port: Option<u16>,
    /// gRPC port the scheduler reaches the executor on: cancelling tasks,
    /// removing job data, stopping (cluster.grpc_port).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// Shuffle files and spills (cluster.work_dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Tasks run at once; 0: one per core (cluster.vcores).
    #[arg(long)]
    vcores: Option<u64>,
    /// Memory pool in MiB shared by the running tasks (cluster.memory_mb).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Seconds between heartbeats to the scheduler (cluster.heartbeat_secs).
    #[arg(long)]
    heartbeat_secs: Option<u64>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        self.scan
            .overrides(self.store.overrides())
            .set("batch.keep", "--keep", self.keep)
            .set(
                "batch.cooc_window_min",
                "--cooc-window-min",
                self.cooc_window_min,
            )
            .set("batch.neighbours", "--neighbours", self.neighbours)
            .set("cluster.scheduler", "--cluster", self.cluster.clone())
    }
}

#[derive(Debug, Args)]
pub(crate) struct TrainingArgs {
    #[command(flatten)]
    scan: ScanArgs,
    /// The labels: a Parquet file with `tenant`, `user_id` and `ts_ms`
    /// (Int64, epoch milliseconds), and any other columns (label, weight,
    /// ids), passed through unchanged.
    #[arg(long)]
    labels: PathBuf,
    /// The training set to write (Parquet): the label rows in their order,
    /// then one column per feature.
    #[arg(long)]
    out: PathBuf,
    /// Only these features, comma-separated (default: every feature of the
    /// spec).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run on the Ballista cluster of this scheduler, df://host:port
    /// (cluster.scheduler; unset: in this process). The label keys reach
    /// the executors through the view store's staging area (--views).
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

impl TrainingArgs {
    fn overrides(&self) -> Overrides {
        self.scan.overrides(self.store.overrides()).set(
            "cluster.scheduler",
            "--cluster",
            self.cluster.clone(),
        )
    }
}

/// What every job over the archive takes: `weft batch run` and
/// `weft batch training-set`.
#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// The archive root: a local directory or an s3:// / gs:// URL
    /// (archive.root).
    #[arg(long)]
    archive: Option<String>,
    /// The feature spec (features).
    #[arg(long)]
    features: Option<PathBuf>,
    /// DataFusion's memory budget in MiB (batch.memory_mb): rows are grouped
    /// by user in memory within it; a partition that does not fit is sorted
    /// externally, spilling to disk.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Directory for spill (and scratch) files (batch.spill_dir; default:
    /// the system temp directory).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Parallel partitions (batch.partitions; default: the number of
    /// cores).
    #[arg(long)]
    partitions: Option<u64>,
}

impl ScanArgs {
    fn overrides(&self, flags: Overrides) -> Overrides {
        flags
            .set("archive.root", "--archive", self.archive.clone())
            .set_path("features", "--features", self.features.as_deref())
            .set("batch.memory_mb", "--memory-mb", self.memory_mb)
            .set_path("batch.spill_dir", "--spill-dir", self.spill_dir.as_deref())
            .set(
                "batch.partitions",
                "--partitions",
                self.partitions.map(|p| p.max(1)),
            )
    }
}

#[derive(Debug, Args)]
pub(crate) struct ViewArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The view version (default: the current one).
    #[arg(long)]
    version: Option<String>,
    /// Check every file's SHA-256 against the manifest (also views.verify).
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
    /// Query time, as for inspect. Without --point-in-time, every user is
    /// evaluated as serving would at that time over everything the view
    /// holds (windows to the end of its bucket, late arrivals included).
    #[arg(long)]
    at: Option<String>,
    /// Cut exactly at --at instead, by event time and arrival ("as of t,
    /// known at t", as `weft batch training-set`): reads the archive
    /// (--archive, --features), not a view.
    #[arg(long, requires = "at")]
    point_in_time: bool,
    /// The archive root, for --point-in-time (archive.root).
    #[arg(long, requires = "point_in_time")]
    archive: Option<String>,
    /// The feature spec, for --point-in-time (features).
    #[arg(long, requires = "point_in_time")]
    features: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    weft_core::runtime::multi_thread("weft-batch", 0).context("starting the async runtime")
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
        Some(s) => parse_time(s),
    }
}

/// Epoch milliseconds, `YYYY-MM-DD` (the last millisecond of that day) or
/// `now`.
fn parse_time(s: &str) -> Result<i64> {
    if s == "now" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    match weft_core::time::parse_date(s) {
        Some(day_start) => Ok(day_start + weft_core::spec::DAY_MS - 1),
        None => bail!("--at '{s}': expected epoch milliseconds, YYYY-MM-DD or now"),
    }
}

/// The block cache of a view a command opens: one user or one scan, so
/// small.
const VIEW_BLOCK_CACHE_BYTES: usize = 64 << 20;

async fn open_view(
    file: Option<&Path>,
    args: &ViewArgs,
    work: &tempfile::TempDir,
) -> Result<OpenedView> {
    let c = crate::load_config(file, args.store.overrides())?;
    let store = ViewStore::open(&view_store(&c)?, &c.s3)?;
    let version = args.version.as_deref().map(parse_version).transpose()?;
    let cache = BlockCache::new(VIEW_BLOCK_CACHE_BYTES);
    let verify = args.verify || c.views.verify;
    OpenedView::open(&store, version, work.path(), verify, &cache)
        .await
        .with_context(|| format!("view store {}", store.display()))
}

pub(crate) fn run(file: Option<&Path>, cmd: &BatchCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        BatchCommand::Run(args) => rt.block_on(run_job(file, args)),
        BatchCommand::TrainingSet(args) => rt.block_on(training_set(file, args)),
        BatchCommand::Scheduler(args) => {
            let flags = Overrides::new()
                .set("cluster.bind", "--bind", args.bind.clone())
                .set(
                    "cluster.executor_timeout_secs",
                    "--executor-timeout-secs",
                    args.executor_timeout_secs,
                )
                .set(
                    "cluster.task_max_failures",
                    "--task-max-failures",
                    args.task_max_failures,
                );
            let c = crate::load_config(file, flags)?;
            rt.block_on(weft_batch::cluster::process::scheduler(&c.cluster, &c.s3))?;
            Ok(())
        }
        BatchCommand::Executor(args) => {
            let flags = Overrides::new()
                .set("cluster.scheduler", "--scheduler", args.scheduler.clone())
                .set("cluster.host", "--host", args.host.clone())
                .set("cluster.flight_port", "--flight-port", args.flight_port)
                .set("cluster.grpc_port", "--grpc-port", args.grpc_port)
                .set_path("cluster.work_dir", "--work-dir", args.work_dir.as_deref())
                .set("cluster.vcores", "--vcores", args.vcores)
                .set("cluster.memory_mb", "--memory-mb", args.memory_mb)
                .set(
                    "cluster.heartbeat_secs",
                    "--heartbeat-secs",
                    args.heartbeat_secs,
                );
            let c = crate::load_config(file, flags)?;
            rt.block_on(weft_batch::cluster::process::executor(&c.cluster, &c.s3))?;
            Ok(())
        }
        BatchCommand::Inspect(args) => rt.block_on(async {
            let work = tempfile::tempdir()?;
            let view = open_view(file, &args.view, &work).await?;
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
        BatchCommand::Export(args) if args.point_in_time => rt.block_on(async {
            let flags = Overrides::new()
                .set("archive.root", "--archive", args.archive.clone())
                .set_path("features", "--features", args.features.as_deref());
            let config = archive_config(&crate::load_config(file, flags)?, "")?;
            // clap requires --at with --point-in-time.
            let at = parse_time(args.at.as_deref().unwrap_or("now"))?;
            let s = with_progress_line(|p| {
                weft_batch::training::export_point_in_time(&config, at, &args.out, p)
            })
            .await?;
            println!(
                "{}: {} users, {} columns, as of {at} ms and known then (point in time), from the archive {}",
                args.out.display(),
                s.rows,
                s.features.len() + 2,
                config.archive
            );
            Ok(())
        }),
        BatchCommand::Export(args) => rt.block_on(async {
            let work = tempfile::tempdir()?;
            let view = open_view(file, &args.view, &work).await?;
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
        BatchCommand::List(store) => rt.block_on(async {
            let c = crate::load_config(file, store.overrides())?;
            let store = ViewStore::open(&view_store(&c)?, &c.s3)?;
            let in_store = || format!("view store {}", store.display());
            let current = store.current().await.with_context(in_store)?;
            let versions = store.versions().await.with_context(in_store)?;
            if versions.is_empty() {
                println!("no views in {}", store.display());
            }
            for v in versions {
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
        BatchCommand::Rollback {
            store,
            to,
            bootstrap,
            skip_topic_check,
        } => rt.block_on(async {
            let flags = store
                .overrides()
                .set("kafka.bootstrap", "--bootstrap", bootstrap.clone());
            let c = crate::load_config(file, flags)?;
            let store = ViewStore::open(&view_store(&c)?, &c.s3)?;
            let v = parse_version(to)?;
            let m = store.manifest(v).await?;
            if !skip_topic_check {
                check_replayable(&c, &m)?;
            }
            store.set_current(v).await?;
            println!("{} is now current in {}", version_name(v), store.display());
            Ok(())
        }),
    }
}

/// Refuses a rollback to a view whose speed generation cannot be rebuilt:
/// the speed layers replay each partition from the view's `O_p + 1`, so
/// the topic must still hold that offset.
fn check_replayable(c: &WeftConfig, m: &weft_view::Manifest) -> Result<()> {
    let (bootstrap, topic) = (&c.kafka.bootstrap, &c.kafka.topic);
    let low = weft_speed::kafka::low_watermarks(bootstrap, topic, Duration::from_secs(10))
        .with_context(|| {
            format!(
                "checking that {topic} on {bootstrap} still holds the offsets after {}'s boundary (give --bootstrap, or --skip-topic-check for a store no speed layer follows)",
                version_name(m.version)
            )
        })?;
    replay_gaps(&low, m.version, &m.boundary.offsets)
}

/// The partitions whose records after view `version`'s `boundary` (`O_p`;
/// absent: none) the topic no longer holds (`low`: the oldest offset left
/// per partition), as an error.
fn replay_gaps(
    low: &std::collections::BTreeMap<i32, i64>,
    version: u64,
    boundary: &std::collections::BTreeMap<i32, i64>,
) -> Result<()> {
    let lost: Vec<String> = low
        .iter()
        .filter_map(|(p, oldest)| {
            let needed = boundary.get(p).map_or(0, |o| o + 1);
            (needed < *oldest).then(|| {
                format!(
                    "partition {p} needs offset {needed}, the oldest still on the topic is {oldest}"
                )
            })
        })
        .collect();
    if !lost.is_empty() {
        bail!(
            "cannot roll back to {}: its speed generation is rebuilt from the topic, which no longer holds the offsets after the view's boundary ({}); publish a new view instead",
            version_name(version),
            lost.join("; ")
        );
    }
    Ok(())
}

/// The batch job's settings from the configuration tree: `[archive].root`,
/// `[views].store`, `[batch]`.
pub(crate) fn batch_config(c: &WeftConfig) -> Result<BatchConfig> {
    archive_config(c, &view_store(c)?)
}

/// [`batch_config`] with the view store given (a training set needs one on
/// a cluster only).
fn archive_config(c: &WeftConfig, views: &str) -> Result<BatchConfig> {
    let (spec, text) = crate::load_spec(&c.features)?;
    let mut config = BatchConfig::new(&c.archive.root, views, Arc::new(spec), text);
    config.memory_limit = c.batch.memory_mb << 20;
    config.spill_dir = c.batch.spill_dir.clone();
    config.partitions = c.batch_partitions();
    config.keep = c.batch.keep;
    config.recs.window_ms = c.batch.cooc_window_min * weft_core::spec::MINUTE_MS;
    config.recs.neighbours = c.batch.neighbours;
    config.s3 = c.s3.clone();
    config.cluster = c.cluster.scheduler.clone();
    config.connect_timeout = Duration::from_secs(c.cluster.connect_timeout_secs);
    Ok(config)
}

/// Runs a job with a progress line (on stderr), cleared when it ends.
async fn with_progress_line<T, F>(job: impl FnOnce(Arc<JobProgress>) -> F) -> F::Output
where
    F: std::future::Future<Output = T>,
{
    let progress = Arc::new(JobProgress::default());
    let (bar, ticker) = progress_line(&progress);
    let out = job(progress).await;
    ticker.abort();
    bar.finish_and_clear();
    out
}

/// A progress line for a job, refreshed until the returned task is aborted.
fn progress_line(progress: &Arc<JobProgress>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
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
                let tasks = progress.tasks.load(Ordering::Relaxed);
                if tasks > 0 {
                    // On a cluster the client folds no rows: the tasks.
                    let done = progress.tasks_done.load(Ordering::Relaxed);
                    bar.set_message(format!("{} ({done}/{tasks} tasks)", progress.stage()));
                } else {
                    bar.set_message(progress.stage());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    (bar, ticker)
}

async fn training_set(file: Option<&Path>, args: &TrainingArgs) -> Result<()> {
    let c = crate::load_config(file, args.overrides())?;
    // A view store only carries a cluster run's label keys.
    let config = archive_config(&c, c.views.store.as_deref().unwrap_or_default())?;
    let s = with_progress_line(|p| {
        weft_batch::training::training_set(&config, &args.labels, &args.out, &args.only, p)
    })
    .await?;
    if let Some(scheduler) = &config.cluster {
        println!(
            "ran on the cluster of {scheduler} ({} training tasks)",
            s.partitions
        );
    }
    println!(
        "wrote {} in {:.1} s: {} label rows, {} users ({} with events), {} archive records read, {} feature columns ({})",
        args.out.display(),
        s.seconds,
        s.rows,
        s.users,
        s.users_with_events,
        s.records,
        s.features.len(),
        s.features.join(", ")
    );
    println!(
        "  rows grouped in memory in {} of {} partitions",
        s.grouped_in_memory, s.partitions
    );
    Ok(())
}

async fn run_job(file: Option<&Path>, args: &RunArgs) -> Result<()> {
    let config = batch_config(&crate::load_config(file, args.overrides())?)?;
    let summary = with_progress_line(|p| weft_batch::run(&config, p)).await?;
    let m = &summary.manifest;
    if let Some(scheduler) = &config.cluster {
        println!(
            "ran on the cluster of {scheduler} ({} fold tasks)",
            summary.partitions
        );
    }
    println!(
        "published {} to {} in {:.1} s: {} users, {} events ({} duplicates dropped), {} partials, {} items; boundary {:?}",
        version_name(summary.version),
        config.views,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    /// A rollback is refused when retention deleted records the speed
    /// layers would replay, naming each partition, the offset needed and
    /// the oldest one left; partitions the view never saw need offset 0.
    #[test]
    fn a_rollback_needs_the_views_tail_on_the_topic() {
        let boundary = BTreeMap::from([(0, 99), (1, 10)]);
        let low = BTreeMap::from([(0, 100), (1, 0), (2, 0)]);
        replay_gaps(&low, 1, &boundary).unwrap();
        let low = BTreeMap::from([(0, 101), (1, 0), (2, 5)]);
        let e = replay_gaps(&low, 1, &boundary).unwrap_err().to_string();
        assert!(e.starts_with("cannot roll back to v000001:"), "{e}");
        assert!(
            e.contains("partition 0 needs offset 100, the oldest still on the topic is 101; partition 2 needs offset 0, the oldest still on the topic is 5"),
            "{e}"
        );
        assert!(!e.contains("partition 1 "), "{e}");
    }
}
