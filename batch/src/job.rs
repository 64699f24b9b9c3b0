//! `weft batch run`: archive in, published view out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::expressions::col as pcol;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use rust_rocksdb::SstFileWriter;
use weft_config::S3Section;
use weft_core::FeatureSpec;
use weft_core::spec::{DAY_MS, Field};
use weft_view::ViewStore;
use weft_view::format::{
    Counts, FileKind, Manifest, SPEC_FILE, VIEW_FORMAT, ViewFile, describe, sst_options,
};
use weft_view::recs::RecsConfig;

use crate::operator::{self, FoldExec, FoldTask, LocalSink};
use crate::recs::{self, RecsBuilder};
use crate::source::{self, boundary_filter, compute_boundary};
use crate::{BatchError, Result};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Archive root: local directory or `s3://` / `gs://` / `file://` URL.
    pub archive: String,
    /// View store: local directory or URL.
    pub views: String,
    pub spec: Arc<FeatureSpec>,
    /// The spec's text, stored with the view.
    pub spec_text: String,
    /// DataFusion's memory pool: rows are grouped in memory within it; a
    /// partition that does not fit is sorted externally, spilling to disk.
    pub memory_limit: usize,
    /// Where spill files go (default: the system temp directory).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Fold partitions (parallelism); each writes one SST file.
    pub partitions: usize,
    /// Views to keep in the store after publishing.
    pub keep: usize,
    pub recs: RecsConfig,
    /// How `s3://` archives and view stores are reached.
    pub s3: S3Section,
    /// Run on this Ballista scheduler (`df://host:port`) instead of in
    /// this process.
    pub cluster: Option<String>,
    /// Cluster runs: how long to wait for the scheduler's answer to
    /// connecting.
    pub connect_timeout: std::time::Duration,
}

impl BatchConfig {
    pub fn new(
        archive: &str,
        views: &str,
        spec: Arc<FeatureSpec>,
        spec_text: String,
    ) -> BatchConfig {
        BatchConfig {
            archive: archive.into(),
            views: views.into(),
            spec,
            spec_text,
            memory_limit: 2 << 30,
            spill_dir: None,
            partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            keep: 3,
            recs: RecsConfig::default(),
            s3: S3Section::default(),
            cluster: None,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Stages of a run, in order.
pub const STAGES: [&str; 7] = [
    "checking archive",
    "computing boundary",
    "scanning and grouping",
    "folding",
    "recommendations",
    "publishing",
    "done",
];

/// Live progress of a run, for a progress display.
#[derive(Debug, Default)]
pub struct JobProgress {
    stage: AtomicUsize,
    /// Rows in the archive's files (known after checking).
    pub total_rows: AtomicU64,
    /// Rows folded so far.
    pub rows: AtomicU64,
    /// On a cluster: the fold tasks of the job, and those done so far (the
    /// client folds no rows itself).
    pub tasks: AtomicUsize,
    pub tasks_done: AtomicUsize,
}

impl JobProgress {
    pub fn stage(&self) -> &'static str {
        STAGES[self.stage.load(Ordering::Relaxed).min(STAGES.len() - 1)]
    }

    pub(crate) fn set(&self, stage: &str) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage)
            && self.stage.swap(i, Ordering::Relaxed) != i
        {
            tracing::debug!(stage, "batch job stage");
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub version: u64,
    pub manifest: Manifest,
    pub seconds: f64,
    /// Sort runs spilled to disk because the memory budget was reached.
    pub spills: usize,
    pub spilled_bytes: usize,
    /// Fold partitions whose rows were grouped in memory (the others did
    /// not fit their share of the budget and went through an external sort).
    pub grouped_in_memory: usize,
    pub partitions: usize,
}

/// The smallest memory budget a run accepts: below it, the scan's and the
/// repartition's in-flight batches can leave a sorter no room for even one
/// batch, and DataFusion fails instead of spilling.
pub const MIN_MEMORY: usize = 32 << 20;

fn session(config: &BatchConfig) -> Result<SessionContext> {
    if config.memory_limit < MIN_MEMORY {
        return Err(BatchError::Argument(format!(
            "memory budget {} MiB is below the minimum of {} MiB",
            config.memory_limit >> 20,
            MIN_MEMORY >> 20
        )));
    }
    let mut runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)));
    if let Some(dir) = &config.spill_dir {
        runtime = runtime.with_temp_file_path(dir.clone());
    }
    let partitions = config.partitions.max(1);
    let session = fit_to_pool(
        SessionConfig::new().with_target_partitions(partitions),
        config.memory_limit,
        partitions,
    );
    Ok(SessionContext::new_with_config_rt(
        session,
        runtime.build_arc()?,
    ))
}

/// Sizes a session's batches and its sorters' merge reservation to a
/// memory pool of `pool` bytes shared by `partitions` fold partitions.
///
/// Rows per batch: 8192, fewer under a small budget, so that one batch
/// stays a small share of a sorter's part of the pool and a sorter can
/// always take the next one or spill. Each sorter reserves memory up
/// front for merging its spilled runs: scaled to the budget so that
/// small budgets still spill instead of failing (DataFusion's default is
/// 10 MB a sorter).
pub(crate) fn fit_to_pool(session: SessionConfig, pool: usize, partitions: usize) -> SessionConfig {
    let partitions = partitions.max(1);
    let batch_rows = (pool / (partitions * 32 * crate::group::SORT_ROW_BYTES)).clamp(1024, 8192);
    let mut session = session.with_batch_size(batch_rows);
    session.options_mut().execution.sort_spill_reservation_bytes =
        (pool / (4 * partitions)).clamp(256 << 10, 10 << 20);
    session
}

/// The archive columns a run reads: everything but `attributes` unless the
/// spec reads one (projection pushdown).
pub(crate) fn columns(spec: &FeatureSpec) -> Vec<&'static str> {
    let reads_attr = spec.features.iter().any(|f| {
        let in_filter = f
            .filter
            .conditions
            .iter()
            .any(|c| matches!(c.field(), Field::Attr(_)));
        in_filter || matches!(f.aggregate.field(), Some(Field::Attr(_)))
    });
    let mut cols = vec![
        "tenant",
        "user_id",
        "_partition",
        "_offset",
        "event_id",
        "ts_ms",
        "kind",
        "item_id",
        "category",
        "price_minor",
        "quantity",
    ];
    if reads_attr {
        cols.push("attributes");
    }
    cols
}

/// The archive as a run reads it: a session, the archive table with
/// only the rows inside the boundary, its files and the boundary.
pub(crate) struct Scan {
    /// How the archive is named in messages and the manifest.
    pub(crate) display: String,
    pub(crate) ctx: SessionContext,
    pub(crate) table: datafusion::dataframe::DataFrame,
    pub(crate) files: Vec<source::ArchiveFile>,
    pub(crate) boundary: weft_view::format::Boundary,
}

/// Checks the archive, computes its boundary and opens the scan
/// (`progress`: "checking archive", "computing boundary").
pub(crate) async fn open_scan(config: &BatchConfig, progress: &JobProgress) -> Result<Scan> {
    progress.set("checking archive");
    let archive = source::open_archive(&config.archive, &config.s3)?;
    let files = source::list_files(&archive).await?;
    if files.is_empty() {
        return Err(BatchError::EmptyArchive(archive.display.clone()));
    }
    progress
        .total_rows
        .store(files.iter().map(|f| f.rows).sum(), Ordering::Relaxed);
    let state = source::archiver_state(&archive).await?;
    let ctx = session(config)?;
    source::register(&archive, &ctx);
    let schema = weft_core::archive::archive_schema();
    let options = ParquetReadOptions::default()
        .table_partition_cols(vec![
            ("tenant".to_string(), arrow_schema::DataType::Utf8),
            ("date".to_string(), arrow_schema::DataType::Utf8),
        ])
        .schema(&schema);
    let table = ctx.read_parquet(archive.url.as_str(), options).await?;
    progress.set("computing boundary");
    let boundary = compute_boundary(&table, state.as_ref()).await?;
    let table = table.filter(boundary_filter(&boundary))?;
    Ok(Scan {
        display: archive.display.clone(),
        ctx,
        table,
        files,
        boundary,
    })
}

/// Runs the whole job and publishes the view. On any error nothing is
/// published (and a cluster job's staged files are deleted).
pub async fn run(config: &BatchConfig, progress: Arc<JobProgress>) -> Result<JobSummary> {
    let views = ViewStore::open(&config.views, &config.s3)?;
    let job = config
        .cluster
        .as_ref()
        .map(|_| crate::cluster::client::job_id());
    let result = run_in(config, progress, &views, job.as_deref()).await;
    if let (Err(_), Some(job)) = (&result, &job)
        && let Err(e) = views.discard_job(job).await
    {
        tracing::warn!(error = %e, job, "the failed job's staged files were not removed");
    }
    result
}

async fn run_in(
    config: &BatchConfig,
    progress: Arc<JobProgress>,
    views: &ViewStore,
    job: Option<&str>,
) -> Result<JobSummary> {
    let started = Instant::now();
    let Scan {
        display,
        ctx,
        table,
        files,
        boundary,
    } = open_scan(config, &progress).await?;
    // End of the newest day in the archive: the anchor of popularity decay.
    let anchor_ms = files
        .iter()
        .filter_map(|f| weft_core::time::parse_date(&f.date))
        .max()
        .unwrap_or(0)
        + DAY_MS;

    progress.set("scanning and grouping");
    let df = table.select_columns(&columns(&config.spec))?;
    let plan = df.create_physical_plan().await?;
    let plan_schema = plan.schema();
    let keys = vec![
        pcol("tenant", &plan_schema)?,
        pcol("user_id", &plan_schema)?,
    ];
    let partitions = config.partitions.max(1);
    let repartitioned = Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(keys, partitions),
    )?);
    let task = FoldTask {
        spec_text: config.spec_text.clone(),
        recs: config.recs.clone(),
        anchor_ms,
        store: None,
    };
    let (mut staging, reports, builders) = match &config.cluster {
        None => {
            let staging = views.staging()?;
            let sink = Arc::new(LocalSink {
                dir: staging.dir.clone(),
                recs: std::sync::Mutex::new((0..partitions).map(|_| None).collect()),
                progress: progress.clone(),
            });
            let fold = FoldExec::new(
                repartitioned,
                task,
                config.spec.clone(),
                Some(sink.clone()),
                config.s3.clone(),
            );
            let task_ctx = ctx.task_ctx();
            // Every partition's stream (and memory reservation) first, then
            // all driven at once.
            let streams = (0..partitions)
                .map(|i| fold.execute(i, task_ctx.clone()))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let batches = futures::future::try_join_all(
                streams
                    .into_iter()
                    .map(datafusion::physical_plan::common::collect),
            )
            .await?;
            let reports = operator::reports(&batches.concat(), partitions)?;
            let builders = sink
                .recs
                .lock()
                .map_err(|_| BatchError::Argument("a fold task panicked".into()))?
                .drain(..)
                .map(|b| b.unwrap_or_else(|| RecsBuilder::new(config.recs.clone(), anchor_ms)))
                .collect();
            (staging, reports, builders)
        }
        Some(scheduler) => {
            progress.set("folding");
            let job = job.unwrap_or_default();
            crate::cluster::client::run(
                scheduler,
                job,
                config,
                views,
                repartitioned,
                task,
                &ctx,
                &progress,
            )
            .await?
        }
    };

    let mut counts = Counts {
        archive_files: files.len() as u64,
        ..Counts::default()
    };
    let mut view_files: Vec<ViewFile> = Vec::new();
    let mut max_event_ms: Option<i64> = None;
    let (mut spills, mut spilled_bytes, mut grouped_in_memory) = (0, 0, 0);
    for report in reports {
        spills += report.spills;
        spilled_bytes += report.spilled_bytes;
        grouped_in_memory += usize::from(report.in_memory);
        counts.rows += report.counts.rows;
        counts.duplicates += report.counts.duplicates;
        counts.events += report.counts.events;
        counts.users += report.counts.users;
        counts.partials += report.counts.partials;
        for (file, staged) in report.files.iter().zip(&report.staged) {
            staging.adopt(staged, &file.name);
        }
        view_files.extend(report.files);
        max_event_ms = max_event_ms.max(report.max_ts);
    }

    progress.set("recommendations");
    let (entries, items) = recs::finish(builders, &config.recs);
    counts.items = items;
    counts.recs_entries = entries.len() as u64;
    if !entries.is_empty() {
        let path = staging.dir.join("recs.sst");
        let opts = sst_options(None);
        let mut writer = SstFileWriter::create(&opts);
        writer
            .open(&path)
            .map_err(BatchError::rocks(format!("creating {}", path.display())))?;
        for (k, v) in &entries {
            writer
                .put(k, v)
                .map_err(BatchError::rocks(format!("writing {}", path.display())))?;
        }
        writer
            .finish()
            .map_err(BatchError::rocks(format!("finishing {}", path.display())))?;
        view_files.push(describe(&path, FileKind::Recs, entries.len() as u64)?);
    }

    progress.set("publishing");
    let spec_path = staging.dir.join(SPEC_FILE);
    std::fs::write(&spec_path, &config.spec_text).map_err(BatchError::io(&spec_path))?;
    let manifest = Manifest {
        format: VIEW_FORMAT,
        version: 0,
        created_ms: weft_core::time::now_ms(),
        spec_hash: config.spec.hash().to_string(),
        boundary,
        archive: display,
        max_event_ms,
        counts,
        recs: config.recs.clone(),
        files: view_files,
    };
    let version = views
        .publish(staging, manifest.clone(), config.keep)
        .await?;
    progress.set("done");
    Ok(JobSummary {
        version,
        manifest: Manifest {
            version,
            ..manifest
        },
        seconds: started.elapsed().as_secs_f64(),
        spills,
        spilled_bytes,
        grouped_in_memory,
        partitions,
    })
}
