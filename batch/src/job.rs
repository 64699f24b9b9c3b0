//! `weft batch run`: archive in, published view out.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arrow_array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::expressions::col as pcol;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use rust_rocksdb::SstFileWriter;
use weft_config::S3Section;
use weft_core::codec::encode_partial_into;
use weft_core::eval::apply_to;
use weft_core::keys::{begin_group, end_group, push_group_entry, user_prefix};
use weft_core::spec::{DAY_MS, Field};
use weft_core::{Event, FeatureSpec, Partial};
use weft_view::ViewStore;
use weft_view::format::{
    Counts, FileKind, Manifest, SPEC_FILE, VIEW_FORMAT, ViewFile, describe, sst_options,
};
use weft_view::recs::RecsConfig;

use crate::columns::EventColumns;
use crate::group::{self, Grouper, Visit};
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
}

impl JobProgress {
    pub fn stage(&self) -> &'static str {
        STAGES[self.stage.load(Ordering::Relaxed).min(STAGES.len() - 1)]
    }

    fn set(&self, stage: &str) {
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
    // Rows per batch: 8192, fewer under a small budget, so that one batch
    // (about 250 bytes a row) stays a small share of a sorter's part of the
    // pool and a sorter can always take the next one or spill.
    let batch_rows =
        (config.memory_limit / (config.partitions.max(1) * 32 * 256)).clamp(1024, 8192);
    let mut session = SessionConfig::new()
        .with_target_partitions(config.partitions.max(1))
        .with_batch_size(batch_rows);
    // Each sorter reserves memory up front for merging its spilled runs;
    // scale it to the budget so small budgets still spill instead of
    // failing (DataFusion's default is 10 MB per sorter).
    let partitions = config.partitions.max(1);
    session.options_mut().execution.sort_spill_reservation_bytes =
        (config.memory_limit / (4 * partitions)).clamp(256 << 10, 10 << 20);
    Ok(SessionContext::new_with_config_rt(
        session,
        runtime.build_arc()?,
    ))
}

/// The archive columns a run reads: everything but `attributes` unless the
/// spec reads one (projection pushdown).
fn columns(spec: &FeatureSpec) -> Vec<&'static str> {
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

/// Runs the whole job and publishes the view. On any error nothing is
/// published.
pub async fn run(config: &BatchConfig, progress: Arc<JobProgress>) -> Result<JobSummary> {
    let started = Instant::now();
    let views = ViewStore::open(&config.views, &config.s3)?;
    progress.set("checking archive");
    let archive = source::open_archive(&config.archive, &config.s3)?;
    let files = source::list_files(&archive).await?;
    if files.is_empty() {
        return Err(BatchError::EmptyArchive(archive.display.clone()));
    }
    progress
        .total_rows
        .store(files.iter().map(|f| f.rows).sum(), Ordering::Relaxed);
    // End of the newest day in the archive: the anchor of popularity decay.
    let anchor_ms = files
        .iter()
        .filter_map(|f| weft_core::time::parse_date(&f.date))
        .max()
        .unwrap_or(0)
        + DAY_MS;
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

    progress.set("scanning and grouping");
    let df = table
        .filter(boundary_filter(&boundary))?
        .select_columns(&columns(&config.spec))?;
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
    let staging = views.staging()?;
    let task_ctx = ctx.task_ctx();
    // Each partition is folded on a blocking thread (CPU-bound work off the
    // async workers, which keep driving DataFusion's scan and sort tasks).
    // Every partition's grouping reservation registers before any grows,
    // so each gets its fair share of the pool from the start.
    let reservations: Vec<_> = (0..partitions)
        .map(|i| {
            MemoryConsumer::new(format!("weft grouping[{i}]"))
                .with_can_spill(true)
                .register(task_ctx.memory_pool())
        })
        .collect();
    let workers: Vec<_> = reservations
        .into_iter()
        .enumerate()
        .map(|(i, reservation)| {
            let (input, task_ctx) = (repartitioned.clone(), task_ctx.clone());
            let handle = tokio::runtime::Handle::current();
            let path = staging.dir.join(format!("partials-{i}.sst"));
            let (spec, progress) = (config.spec.clone(), progress.clone());
            let recs = RecsBuilder::new(config.recs.clone(), anchor_ms);
            tokio::task::spawn_blocking(move || {
                handle.block_on(fold_partition(
                    input,
                    i,
                    task_ctx,
                    &spec,
                    &path,
                    recs,
                    &progress,
                    reservation,
                ))
            })
        })
        .collect();
    let mut outputs = Vec::new();
    for w in workers {
        outputs.push(
            w.await
                .unwrap_or_else(|e| Err(BatchError::Argument(format!("a fold task failed: {e}")))),
        );
    }

    let mut counts = Counts {
        archive_files: files.len() as u64,
        ..Counts::default()
    };
    let mut builders = Vec::new();
    let mut view_files: Vec<ViewFile> = Vec::new();
    let mut max_event_ms: Option<i64> = None;
    let (mut spills, mut spilled_bytes, mut grouped_in_memory) = (0, 0, 0);
    for output in outputs {
        let output = output?;
        spills += output.spills;
        spilled_bytes += output.spilled_bytes;
        grouped_in_memory += usize::from(output.in_memory);
        counts.rows += output.counts.rows;
        counts.duplicates += output.counts.duplicates;
        counts.events += output.counts.events;
        counts.users += output.counts.users;
        counts.partials += output.counts.partials;
        builders.push(output.recs);
        view_files.extend(output.file);
        max_event_ms = max_event_ms.max(output.max_ts);
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
        created_ms: now_ms(),
        spec_hash: config.spec.hash().to_string(),
        boundary,
        archive: archive.display.clone(),
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Folds one partition of the (unsorted) scan into its SST file.
///
/// The rows are grouped by user in memory ([`Grouper`]) while they fit the
/// partition's share of the memory budget. When a batch does not fit, the
/// rows taken so far and the rest of the input go through DataFusion's
/// external sort (which spills sorted runs to disk) instead, and the fold
/// reads its sorted output: the same rows in the same order either way
/// (an archive holds each (partition, offset) once).
#[allow(clippy::too_many_arguments)]
async fn fold_partition(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    task_ctx: Arc<datafusion::execution::TaskContext>,
    spec: &FeatureSpec,
    path: &std::path::Path,
    recs: RecsBuilder,
    progress: &JobProgress,
    reservation: MemoryReservation,
) -> Result<FoldOutput> {
    let mut stream = input.execute(partition, task_ctx.clone())?;
    let mut grouper = Grouper::new();
    // Set when the rows stop fitting: the batch not taken (if any) and why.
    let mut overflow = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let need = grouper.bytes_for(batch.num_rows());
        let refused = if grouper.rows() + batch.num_rows() > group::MAX_ROWS {
            Some("more rows than a grouped partition can number".to_string())
        } else {
            reservation.try_grow(need).err().map(|e| e.to_string())
        };
        if let Some(refused) = refused {
            overflow = Some((Some(batch), refused));
            break;
        }
        grouper.push(&batch)?;
        // Settle the reservation on what is actually held (arenas and
        // tables may have doubled).
        if let Err(e) = reservation.try_resize(grouper.bytes()) {
            overflow = Some((None, e.to_string()));
            break;
        }
    }

    let opts = sst_options(None);
    let mut writer = SstFileWriter::create(&opts);
    writer
        .open(path)
        .map_err(BatchError::rocks(format!("creating {}", path.display())))?;
    let mut fold = Folder::new(spec, &mut writer, recs);
    let (mut spills, mut spilled_bytes) = (0, 0);
    let in_memory = overflow.is_none();
    progress.set("folding");
    if let Some((overflow, refused)) = overflow {
        tracing::info!(
            partition,
            rows = grouper.rows(),
            held_mib = reservation.size() >> 20,
            %refused,
            "a fold partition does not fit its share of the memory budget: external sort"
        );
        // External sort of everything: the rows held so far (their memory
        // handed over to the sort as it takes them), then the rest.
        let batch_rows = task_ctx.session_config().batch_size();
        // The reservation follows what the grouper still holds as the
        // sort takes the rows over (chunk by chunk), and is freed with it.
        let mut held = Some(grouper.into_batches(batch_rows));
        let replay = futures::stream::iter(std::iter::from_fn(move || {
            let batches = held.as_mut()?;
            match batches.next() {
                Some(batch) => {
                    reservation.resize(batches.bytes());
                    Some(batch.map_err(|e| DataFusionError::External(Box::new(e))))
                }
                None => {
                    held = None;
                    reservation.free();
                    None
                }
            }
        }))
        .chain(futures::stream::iter(overflow.map(Ok)).chain(stream).map(
            |batch: datafusion::error::Result<RecordBatch>| {
                batch.and_then(|b| {
                    group::to_sort_batch(&b).map_err(|e| DataFusionError::External(Box::new(e)))
                })
            },
        ));
        let schema = group::sort_schema();
        let ordering = ["tenant", "user_id", "_partition", "_offset"]
            .iter()
            .map(|c| Ok(PhysicalSortExpr::new_default(pcol(c, &schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let ordering = LexOrdering::new(ordering)
            .ok_or_else(|| BatchError::Argument("empty sort order".into()))?;
        let source = OnceStream::new(Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            replay,
        )));
        let sorted = Arc::new(SortExec::new(
            ordering,
            Arc::new(StreamingTableExec::try_new(
                schema,
                vec![Arc::new(source)],
                None,
                [],
                false,
                None,
            )?),
        ));
        let mut sorted_stream = sorted.execute(0, task_ctx)?;
        while let Some(batch) = sorted_stream.next().await {
            let batch = batch?;
            fold.push_sorted(&batch)?;
            progress
                .rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
        if let Some(m) = sorted.metrics() {
            spills = m.spill_count().unwrap_or(0);
            spilled_bytes = m.spilled_bytes().unwrap_or(0);
        }
    } else {
        let grouped = grouper.finish();
        let mut rows = 0u64;
        grouped.for_each(|visit| match visit {
            Visit::User(tenant, user) => {
                fold.finish_user()?;
                fold.start_user(tenant, user);
                progress.rows.fetch_add(rows, Ordering::Relaxed);
                rows = 0;
                Ok(())
            }
            Visit::Row(event) => {
                rows += 1;
                fold.push_event(event)
            }
        })?;
        progress.rows.fetch_add(rows, Ordering::Relaxed);
        drop(grouped);
        reservation.free();
    }
    fold.finish_user()?;
    let Folder {
        counts,
        recs,
        max_ts,
        ..
    } = fold;
    let file = if counts.partials > 0 {
        writer
            .finish()
            .map_err(BatchError::rocks(format!("finishing {}", path.display())))?;
        Some(describe(path, FileKind::Partials, counts.partials)?)
    } else {
        drop(writer);
        let _ = std::fs::remove_file(path);
        None
    };
    Ok(FoldOutput {
        counts,
        recs,
        file,
        max_ts,
        spills,
        spilled_bytes,
        in_memory,
    })
}

/// A one-shot [`PartitionStream`]: hands its stream to the first caller.
struct OnceStream {
    schema: arrow_schema::SchemaRef,
    stream: std::sync::Mutex<Option<SendableRecordBatchStream>>,
}

impl OnceStream {
    fn new(stream: SendableRecordBatchStream) -> OnceStream {
        OnceStream {
            schema: stream.schema(),
            stream: std::sync::Mutex::new(Some(stream)),
        }
    }
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnceStream")
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &arrow_schema::SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<datafusion::execution::TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(stream) => stream,
            None => {
                let schema = self.schema.clone();
                Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::once(async {
                        Err(DataFusionError::Internal(
                            "a fold partition's input was read twice".into(),
                        ))
                    }),
                ))
            }
        }
    }
}

struct FoldOutput {
    counts: Counts,
    recs: RecsBuilder,
    file: Option<ViewFile>,
    max_ts: Option<i64>,
    spills: usize,
    spilled_bytes: usize,
    in_memory: bool,
}

/// The event ids of one user seen so far: the ids in one string, a hash
/// table of their spans. Clearing it between users keeps the string's
/// allocation and, after a user with many events, starts again from a small
/// table (clearing a large one would cost its whole size for every later
/// user).
#[derive(Default)]
struct SeenIds {
    ids: String,
    spans: hashbrown::HashTable<(usize, usize)>,
    hasher: foldhash::fast::RandomState,
}

impl SeenIds {
    /// Whether `id` is new (and now seen).
    fn insert(&mut self, id: &str) -> bool {
        let SeenIds { ids, spans, hasher } = self;
        let hash = hasher.hash_one(id);
        let get = |&(s, e): &(usize, usize)| &ids[s..e];
        match spans.entry(
            hash,
            |span| get(span) == id,
            |span| hasher.hash_one(get(span)),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                let start = ids.len();
                ids.push_str(id);
                v.insert((start, ids.len()));
                true
            }
        }
    }

    fn clear(&mut self) {
        self.ids.clear();
        if self.spans.capacity() > 1024 {
            self.spans = hashbrown::HashTable::new();
        } else {
            self.spans.clear();
        }
    }
}

/// Folds one partition's rows, sorted by (tenant, user, partition, offset),
/// user by user into the SST writer: one entry per user, its
/// [`user_prefix`] (users in sorted order, the byte order of the keys) to
/// every partial grouped by feature ([`begin_group`]: features in spec
/// order, buckets newest first).
struct Folder<'s, 'w, 'o> {
    spec: &'s FeatureSpec,
    writer: &'w mut SstFileWriter<'o>,
    recs: RecsBuilder,
    started: bool,
    event: Event,
    /// Event ids of the current user seen so far (first occurrence wins).
    seen: SeenIds,
    buckets: Vec<BTreeMap<i64, Partial>>,
    /// The current user's packed value (reused between users).
    packed: Vec<u8>,
    /// One encoded partial (reused).
    encoded: Vec<u8>,
    counts: Counts,
    max_ts: Option<i64>,
}

impl<'s, 'w, 'o> Folder<'s, 'w, 'o> {
    fn new(spec: &'s FeatureSpec, writer: &'w mut SstFileWriter<'o>, recs: RecsBuilder) -> Self {
        Folder {
            spec,
            writer,
            recs,
            started: false,
            event: group::empty_event(),
            seen: SeenIds::default(),
            buckets: vec![BTreeMap::new(); spec.features.len()],
            packed: Vec::new(),
            encoded: Vec::new(),
            counts: Counts::default(),
            max_ts: None,
        }
    }

    /// Folds a batch of rows sorted by (tenant, user, partition, offset).
    fn push_sorted(&mut self, batch: &RecordBatch) -> Result<()> {
        let cols = EventColumns::new(batch)?;
        for row in 0..batch.num_rows() {
            let (tenant, user) = (cols.tenant.value(row), cols.user_id.value(row));
            if !self.started || user != self.event.user_id || tenant != self.event.tenant {
                self.finish_user()?;
                self.start_user(tenant, user);
            }
            self.push_row(&cols, row)?;
        }
        Ok(())
    }

    /// Starts the next user (users come in key order).
    fn start_user(&mut self, tenant: &str, user: &str) {
        self.started = true;
        self.event.tenant.clear();
        self.event.tenant.push_str(tenant);
        self.event.user_id.clear();
        self.event.user_id.push_str(user);
        self.recs.start_user(tenant);
    }

    /// Folds the current user's next row (rows in (partition, offset)
    /// order; the first occurrence of an event id wins).
    fn push_row(&mut self, cols: &EventColumns<'_>, row: usize) -> Result<()> {
        self.counts.rows += 1;
        if !self.seen.insert(cols.event_id.value(row)) {
            self.counts.duplicates += 1;
            return Ok(());
        }
        cols.fill(row, &mut self.event)?;
        let event = std::mem::replace(&mut self.event, group::empty_event());
        self.fold(&event);
        self.event = event;
        Ok(())
    }

    /// Like [`Self::push_row`], for a row already read into an event of the
    /// current user.
    fn push_event(&mut self, event: &Event) -> Result<()> {
        self.counts.rows += 1;
        if !self.seen.insert(&event.event_id) {
            self.counts.duplicates += 1;
            return Ok(());
        }
        self.fold(event);
        Ok(())
    }

    fn fold(&mut self, event: &Event) {
        for &i in self.spec.features_for(event.kind) {
            apply_to(&self.spec.features[i], &mut self.buckets[i], event);
        }
        self.recs.observe(event);
        self.max_ts = self.max_ts.max(Some(event.ts_ms));
        self.counts.events += 1;
    }

    /// Writes the current user's partials and resets for the next user.
    fn finish_user(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        self.packed.clear();
        for (i, buckets) in self.buckets.iter_mut().enumerate() {
            if buckets.is_empty() {
                continue;
            }
            let group = begin_group(&mut self.packed, i);
            for (bucket, p) in std::mem::take(buckets).into_iter().rev() {
                encode_partial_into(&mut self.encoded, &p);
                push_group_entry(&mut self.packed, bucket, &self.encoded);
                self.counts.partials += 1;
            }
            end_group(&mut self.packed, group);
        }
        if !self.packed.is_empty() {
            let key = user_prefix(&self.event.tenant, &self.event.user_id);
            self.writer
                .put(&key, &self.packed)
                .map_err(|e| BatchError::BadFile {
                    file: "archive".into(),
                    problem: format!(
                        "writing {}/{} to the view: {e}",
                        self.event.tenant, self.event.user_id
                    ),
                })?;
        }
        self.recs.finish_user();
        self.seen.clear();
        self.counts.users += 1;
        self.started = false;
        Ok(())
    }
}
