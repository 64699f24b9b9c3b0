//! The fold: one hash partition of the archive's rows (all of a user's
//! rows in one partition), grouped by user and folded with `weft_core`'s
//! aggregates into a sorted SST file of partials, plus the partition's
//! recommendation statistics. Run by the [`crate::operator::FoldExec`]
//! operator, in this process or on a Ballista executor.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::col as pcol;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::StreamExt;
use rust_rocksdb::{Options, SstFileWriter};
use weft_core::codec::encode_partial_into;
use weft_core::eval::apply_to;
use weft_core::keys::{begin_group, end_group, push_group_entry, user_prefix};
use weft_core::{Event, FeatureSpec, Partial};
use weft_view::format::{Counts, FileKind, ViewFile, describe, sst_options};

use crate::columns::EventColumns;
use crate::group::{self, AllUsers, Grouped, Grouper, Users, Visit};
use crate::job::JobProgress;
use crate::recs::RecsBuilder;
use crate::{BatchError, Result};

/// What consumes one partition's rows user by user: the fold, or a
/// training set's evaluation ([`group_partition`] drives it).
pub(crate) trait UserRows {
    /// Which users' rows are collected, and the order they are visited in.
    type Users: Users;
    fn users(&self) -> Self::Users;
    /// A batch sorted by (tenant, user, partition, offset), of the sort's
    /// schema (the external sort's output): the consumer finds the users.
    fn push_sorted(&mut self, batch: &RecordBatch) -> Result<()>;
    /// The in-memory path: the partition's rows grouped, the same users and
    /// rows in the same order.
    fn grouped(&mut self, grouped: Grouped<Self::Users>, progress: &JobProgress) -> Result<()>;
}

/// How a partition was grouped.
pub(crate) struct Grouping {
    pub(crate) in_memory: bool,
    pub(crate) spills: usize,
    pub(crate) spilled_bytes: usize,
}

/// Groups one partition of the (unsorted) scan by user and hands it to
/// `rows`.
///
/// The rows are grouped by user in memory ([`Grouper`]) while they fit the
/// partition's share of the memory budget. When a batch does not fit, the
/// rows taken so far and the rest of the input go through DataFusion's
/// external sort (which spills sorted runs to disk) instead, and `rows`
/// reads its sorted output: the same rows in the same order either way
/// (an archive holds each (partition, offset) once).
pub(crate) async fn group_partition(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    task_ctx: Arc<datafusion::execution::TaskContext>,
    progress: &JobProgress,
    reservation: MemoryReservation,
    rows: &mut impl UserRows,
) -> Result<Grouping> {
    let mut stream = input.execute(partition, task_ctx.clone())?;
    let mut grouper = Grouper::new(rows.users());
    // Set when the rows stop fitting: the batch not taken (if any) and why.
    let mut overflow = None;
    // Rows scanned into the grouper (those of users it does not keep
    // included).
    let mut scanned = 0u64;
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
        scanned += batch.num_rows() as u64;
        // Settle the reservation on what is actually held (arenas and
        // tables may have doubled).
        if let Err(e) = reservation.try_resize(grouper.bytes()) {
            overflow = Some((None, e.to_string()));
            break;
        }
    }

    let (mut spills, mut spilled_bytes) = (0, 0);
    let in_memory = overflow.is_none();
    progress.set("folding");
    // Progress counts rows as they are folded (in memory) or come out of
    // the sort; the rows of users the grouper did not keep are done now.
    progress
        .rows
        .fetch_add(scanned - grouper.rows() as u64, Ordering::Relaxed);
    if let Some((overflow, refused)) = overflow {
        tracing::info!(
            partition,
            rows = grouper.rows(),
            held_mib = reservation.size() >> 20,
            %refused,
            "a partition's rows do not fit its share of the memory budget: external sort"
        );
        // External sort of everything: the rows held so far (their memory
        // handed over to the sort as it takes them), then the rest.
        let batch_rows = task_ctx.session_config().batch_size();
        // The sort needs room of its own from the first batch on: its merge
        // reservation (`sort_spill_reservation_bytes`, not spillable, let
        // go and taken again around every spill) and a batch or two. The
        // grouping has just filled the pool (a Ballista task has a pool of
        // its own), so give that room back now and keep the held rows'
        // reservation under it until they are handed over (they outgrow it
        // by at most this room).
        let room = task_ctx
            .session_config()
            .options()
            .execution
            .sort_spill_reservation_bytes
            + 2 * batch_rows * group::SORT_ROW_BYTES;
        let want = reservation.size().saturating_sub(room);
        // And the held rows cannot be spilled: a spillable reservation is
        // only held to its fair share of the pool, so the grouping's and the
        // sorter's together could take more than the pool and leave none
        // for the sorter's merges. Not spillable, the rows still held shrink
        // the sorter's share instead.
        let reservation = unspillable(reservation, want, partition, &task_ctx);
        let cap = reservation.size();
        // The reservation follows what the grouper still holds as the
        // sort takes the rows over (chunk by chunk), and is freed with it.
        let mut held = Some(grouper.into_batches(batch_rows));
        let replay = futures::stream::iter(std::iter::from_fn(move || {
            let batches = held.as_mut()?;
            match batches.next() {
                Some(batch) => {
                    reservation.resize(batches.bytes().min(cap));
                    Some(batch.map_err(|e| DataFusionError::External(Box::new(e))))
                }
                None => {
                    held = None;
                    reservation.free();
                    None
                }
            }
        }))
        .chain(
            futures::stream::iter(overflow.map(Ok))
                .chain(stream)
                .flat_map(move |batch| futures::stream::iter(sort_batches(batch, batch_rows))),
        );
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
            rows.push_sorted(&batch)?;
            progress
                .rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
        if let Some(m) = sorted.metrics() {
            spills = m.spill_count().unwrap_or(0);
            spilled_bytes = m.spilled_bytes().unwrap_or(0);
        }
    } else {
        rows.grouped(grouper.finish(), progress)?;
        reservation.free();
    }
    Ok(Grouping {
        in_memory,
        spills,
        spilled_bytes,
    })
}

/// Folds one partition of the (unsorted) scan into its SST files
/// ([`group_partition`] groups it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fold_partition(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    task_ctx: Arc<datafusion::execution::TaskContext>,
    spec: &FeatureSpec,
    files: &mut dyn FnMut(i32) -> Result<PathBuf>,
    recs: RecsBuilder,
    progress: &JobProgress,
    reservation: MemoryReservation,
) -> Result<FoldOutput> {
    let opts = sst_options(None);
    let mut fold = Folder::new(spec, &opts, files, recs);
    let Grouping {
        in_memory,
        spills,
        spilled_bytes,
    } = group_partition(input, partition, task_ctx, progress, reservation, &mut fold).await?;
    fold.finish_user()?;
    let Folder {
        counts,
        recs,
        max_ts,
        writers,
        ..
    } = fold;
    let mut files = Vec::with_capacity(writers.len());
    for (kafka_partition, mut out) in writers {
        out.writer.finish().map_err(BatchError::rocks(format!(
            "finishing {}",
            out.path.display()
        )))?;
        let mut file = describe(&out.path, FileKind::Partials, out.partials)?;
        file.partition = Some(kafka_partition);
        files.push(file);
    }
    Ok(FoldOutput {
        counts,
        recs,
        files,
        max_ts,
        spills,
        spilled_bytes,
        in_memory,
    })
}

impl UserRows for Folder<'_, '_, '_> {
    type Users = AllUsers;

    fn users(&self) -> AllUsers {
        AllUsers::new()
    }

    fn push_sorted(&mut self, batch: &RecordBatch) -> Result<()> {
        Folder::push_sorted(self, batch)
    }

    fn grouped(&mut self, grouped: Grouped<AllUsers>, progress: &JobProgress) -> Result<()> {
        let mut n = 0u64;
        grouped.for_each(|visit| {
            match visit {
                Visit::User(tenant, user, kafka_partition) => {
                    progress.rows.fetch_add(n, Ordering::Relaxed);
                    n = 0;
                    self.finish_user()?;
                    self.start_user(tenant, user, kafka_partition);
                }
                Visit::Row(event) => {
                    n += 1;
                    self.push_event(event)?;
                }
            }
            Ok(())
        })?;
        progress.rows.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// A scanned batch as batches of the sort's schema of at most `rows` rows
/// each: the scan's (or the shuffle's) batches can be larger than the
/// sort's, which are sized to its share of the pool.
fn sort_batches(
    batch: datafusion::error::Result<RecordBatch>,
    rows: usize,
) -> Vec<datafusion::error::Result<RecordBatch>> {
    let batch = match batch {
        Ok(batch) => batch,
        Err(e) => return vec![Err(e)],
    };
    (0..batch.num_rows())
        .step_by(rows.max(1))
        .map(|start| {
            let len = rows.min(batch.num_rows() - start);
            group::to_sort_batch(&batch.slice(start, len))
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })
        .collect()
}

/// Moves a spillable reservation to a new one that cannot be spilled, of
/// `bytes` (or as much of it as the pool grants: the rows are held either
/// way, the reservation only accounts for them).
fn unspillable(
    spillable: MemoryReservation,
    bytes: usize,
    partition: usize,
    task_ctx: &datafusion::execution::TaskContext,
) -> MemoryReservation {
    drop(spillable);
    let held = MemoryConsumer::new(format!("weft grouped rows[{partition}]"))
        .register(task_ctx.memory_pool());
    let mut want = bytes;
    while want > 0 && held.try_grow(want).is_err() {
        want /= 2;
    }
    held
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

pub(crate) struct FoldOutput {
    pub counts: Counts,
    pub recs: RecsBuilder,
    /// One partials file per Kafka partition with users, in partition
    /// order (named as the path it was written to).
    pub files: Vec<ViewFile>,
    pub max_ts: Option<i64>,
    pub spills: usize,
    pub spilled_bytes: usize,
    pub in_memory: bool,
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

/// One Kafka partition's partials file being written.
struct PartitionFile<'o> {
    writer: SstFileWriter<'o>,
    path: PathBuf,
    partials: u64,
}

/// Folds one partition's rows, sorted by (tenant, user, partition, offset),
/// user by user into SST files, one per Kafka partition: one entry per
/// user, its [`user_prefix`] (users in sorted order, the byte order of the
/// keys) to every partial grouped by feature ([`begin_group`]: features in
/// spec order, buckets newest first), in the file of the user's partition
/// (the partition of its first row; the producers put all of a user's
/// events in one).
struct Folder<'s, 'o, 'f> {
    spec: &'s FeatureSpec,
    opts: &'o Options,
    /// Where a Kafka partition's file goes (asked once per partition).
    paths: &'f mut dyn FnMut(i32) -> Result<PathBuf>,
    writers: BTreeMap<i32, PartitionFile<'o>>,
    /// The current user's Kafka partition.
    partition: i32,
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

impl<'s, 'o, 'f> Folder<'s, 'o, 'f> {
    fn new(
        spec: &'s FeatureSpec,
        opts: &'o Options,
        paths: &'f mut dyn FnMut(i32) -> Result<PathBuf>,
        recs: RecsBuilder,
    ) -> Self {
        Folder {
            spec,
            opts,
            paths,
            writers: BTreeMap::new(),
            partition: 0,
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
                self.start_user(tenant, user, cols.partition.value(row));
            }
            self.push_row(&cols, row)?;
        }
        Ok(())
    }

    /// Starts the next user (users come in key order), whose events are in
    /// Kafka partition `partition`.
    fn start_user(&mut self, tenant: &str, user: &str, partition: i32) {
        self.started = true;
        self.partition = partition;
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
        let mut partials = 0;
        for (i, buckets) in self.buckets.iter_mut().enumerate() {
            if buckets.is_empty() {
                continue;
            }
            let group = begin_group(&mut self.packed, i);
            for (bucket, p) in std::mem::take(buckets).into_iter().rev() {
                encode_partial_into(&mut self.encoded, &p);
                push_group_entry(&mut self.packed, bucket, &self.encoded);
                partials += 1;
            }
            end_group(&mut self.packed, group);
        }
        self.counts.partials += partials;
        if !self.packed.is_empty() {
            let key = user_prefix(&self.event.tenant, &self.event.user_id);
            let out = match self.writers.entry(self.partition) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let path = (self.paths)(self.partition)?;
                    let mut writer = SstFileWriter::create(self.opts);
                    writer
                        .open(&path)
                        .map_err(BatchError::rocks(format!("creating {}", path.display())))?;
                    v.insert(PartitionFile {
                        writer,
                        path,
                        partials: 0,
                    })
                }
            };
            out.partials += partials;
            out.writer
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
