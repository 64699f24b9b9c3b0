//! `weft batch training-set`: point-in-time features for every row of a
//! label file, as the platform knew each user at the row's `ts_ms`
//! (docs/semantics.md, "as of t, known at t").
//!
//! 1. The labels (Parquet: `tenant`, `user_id`, `ts_ms` and any other
//!    columns) are read; their users, each with its label times, are kept.
//! 2. The archive is scanned as the batch job scans it (the same files,
//!    boundary and columns, plus `_ingest_ms`), semi-joined with the
//!    labels' users, repartitioned by user and sorted by (user, partition,
//!    offset) within each partition: DataFusion's sort, spilling under the
//!    memory budget.
//! 3. Each partition's stream is read user by user; for each of the user's
//!    label times `t`, the records with event time ≤ t and arrival ≤ t are
//!    folded (duplicates dropped, the first in offset order winning) and
//!    evaluated at `t` (`UserBuckets`). Rows go to per-partition scratch
//!    Parquet files with their label row number; label rows of users
//!    without any event get the features of no events.
//! 4. The scratch rows are sorted by row number (DataFusion, spilling) and
//!    written next to the label rows, in input order, label columns
//!    unchanged, feature columns typed as `weft batch export` types them.
//!
//! Memory: the label file and its users' label times are held; the
//! archive side is bounded by the budget (`batch.memory_mb`).

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::logical_expr::{Expr, SortExpr, col, lit};
use datafusion::physical_plan::expressions::col as pcol;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use datafusion::prelude::ParquetReadOptions;
use futures::StreamExt;
use hashbrown::HashTable;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use weft_core::archive::INGEST_COLUMN;
use weft_core::eval::UserBuckets;
use weft_core::spec::Field;
use weft_core::{Event, FeatureSpec};

use crate::columns::{EventColumns, StrCol};
use crate::export::{Column, column_type};
use crate::fold::{UserRows, group_partition};
use crate::group::{Arena, Grouped, Ranking, Row, Strings, Users};
use crate::job::{BatchConfig, JobProgress, Scan, columns, open_scan};
use crate::{BatchError, Result};

mod exec;

pub use exec::{TASK_FINISHED, TASK_STARTED, TrainingExec};

/// The label row number column of the scratch files.
const ROW: &str = "_label_row";
const ROWS_PER_BATCH: usize = 64 * 1024;

/// What a training-set run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSummary {
    /// Label rows in and rows out.
    pub rows: u64,
    /// Distinct users among the labels, and those with events.
    pub users: u64,
    pub users_with_events: u64,
    /// Archive records of the labels' users read.
    pub records: u64,
    /// The feature columns added.
    pub features: Vec<String>,
    /// Partitions whose rows were grouped in memory (the others did not
    /// fit their share of the budget and were sorted externally), of all.
    pub grouped_in_memory: usize,
    pub partitions: usize,
    pub seconds: f64,
}

/// The labels' users, each numbered, with its label rows' (time, row
/// number) in time order.
///
/// Every scanned row looks its user up here, so a lookup touches one slot
/// of the table: the slot holds the key's hash and, for keys of up to
/// [`INLINE`] bytes (most), the key itself; longer keys are compared in
/// the arena.
pub(crate) struct LabelUsers {
    /// Per user: its key `tenant/user_id` (an archived id holds no '/', so
    /// a key found for a scanned row names exactly its user).
    keys: Arena,
    table: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
    times: Vec<Vec<(i64, u64)>>,
}

/// Key bytes a [`Slot`] holds.
const INLINE: usize = 24;

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    user: u32,
    len: u32,
    inline: [u8; INLINE],
}

impl LabelUsers {
    fn new() -> LabelUsers {
        LabelUsers {
            keys: Arena::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            times: Vec::new(),
        }
    }

    fn key(&self, user: u32) -> &str {
        self.keys.get(user)
    }

    fn hash(&self, tenant: &str, user: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(tenant.as_bytes());
        h.write_u8(b'/');
        h.write(user.as_bytes());
        h.finish()
    }

    /// Whether `slot` is the key of `tenant` and `user`.
    fn is(&self, slot: &Slot, hash: u64, tenant: &str, user: &str) -> bool {
        let len = tenant.len() + 1 + user.len();
        if slot.hash != hash || slot.len as usize != len {
            return false;
        }
        let key = if len <= INLINE {
            &slot.inline[..len]
        } else {
            self.key(slot.user).as_bytes()
        };
        let (t, rest) = key.split_at(tenant.len());
        t == tenant.as_bytes() && rest[0] == b'/' && &rest[1..] == user.as_bytes()
    }

    fn add(&mut self, tenant: &str, user: &str, ts_ms: i64, row: u64) -> Result<()> {
        let hash = self.hash(tenant, user);
        let id = match self.table.find(hash, |s| self.is(s, hash, tenant, user)) {
            Some(s) => s.user as usize,
            None => {
                let id = self
                    .keys
                    .push(&[tenant, "/", user])
                    .ok_or_else(|| BatchError::Argument("too many label users".into()))?;
                let key = self.keys.get(id).as_bytes();
                let mut inline = [0u8; INLINE];
                if key.len() <= INLINE {
                    inline[..key.len()].copy_from_slice(key);
                }
                let slot = Slot {
                    hash,
                    user: id,
                    len: key.len() as u32,
                    inline,
                };
                self.table.insert_unique(hash, slot, |s| s.hash);
                self.times.push(Vec::new());
                id as usize
            }
        };
        self.times[id].push((ts_ms, row));
        Ok(())
    }

    /// Puts each user's label times in order (done once, after the adds).
    fn sort(&mut self) {
        for times in &mut self.times {
            times.sort_unstable();
        }
    }

    fn find(&self, tenant: &str, user: &str) -> Option<u32> {
        let hash = self.hash(tenant, user);
        self.table
            .find(hash, |s| self.is(s, hash, tenant, user))
            .map(|s| s.user)
    }

    fn len(&self) -> usize {
        self.times.len()
    }
}

/// The users a training set groups: the labels' (the others' rows are not
/// taken), visited in label-user order.
struct Labelled {
    labels: Arc<LabelUsers>,
}

impl Users for Labelled {
    fn number(&mut self, tenant: &str, user: &str) -> Result<Option<(u32, u32)>> {
        Ok(self.labels.find(tenant, user).map(|u| (0, u)))
    }

    fn name(&self, _tenant: u32, user: u32) -> (&str, &str) {
        let key = self.labels.key(user);
        key.split_once('/').unwrap_or((key, ""))
    }

    /// What ranking and grouping take a label user: its rank and numbers,
    /// and the grouping's count and next slot (the labels themselves are
    /// held by the caller).
    fn bytes(&self) -> usize {
        self.labels.len() * (3 * size_of::<u32>() + 2 * size_of::<usize>())
    }

    fn rank(&self) -> Ranking {
        let n = self.labels.len() as u32;
        Ranking {
            first: vec![0],
            rank: (0..n).collect(),
            by_rank: (0..n).map(|u| (0, u)).collect(),
        }
    }
}

/// The labels: their batches (passed through) and, per user, each label
/// row's (time, row number).
struct Labels {
    batches: Vec<RecordBatch>,
    rows: u64,
    by_user: Arc<LabelUsers>,
}

fn bad(file: &Path, problem: impl ToString) -> BatchError {
    BatchError::BadFile {
        file: file.display().to_string(),
        problem: problem.to_string(),
    }
}

fn read_labels(path: &Path, features: &[String]) -> Result<Labels> {
    let file = File::open(path).map_err(|e| bad(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(path, e))?;
    let schema = reader.schema();
    for (name, what) in [
        ("tenant", "a string"),
        ("user_id", "a string"),
        ("ts_ms", "an Int64 of epoch milliseconds"),
    ] {
        let field = schema.field_with_name(name).map_err(|_| {
            bad(
                path,
                format!("column '{name}' is missing (it must be {what})"),
            )
        })?;
        let ok = match name {
            "ts_ms" => field.data_type() == &DataType::Int64,
            _ => matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
        };
        if !ok {
            return Err(bad(
                path,
                format!(
                    "column '{name}' is {}; it must be {what}",
                    field.data_type()
                ),
            ));
        }
    }
    if let Some(clash) = features.iter().find(|f| schema.field_with_name(f).is_ok()) {
        return Err(bad(
            path,
            format!(
                "column '{clash}' is also a feature's name: rename it, or leave the feature out with --only"
            ),
        ));
    }
    let mut by_user = LabelUsers::new();
    let mut batches = Vec::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(path, format!("column '{name}' is missing")))
        };
        let (tenants, users) = (column("tenant")?, column("user_id")?);
        let tenant = StrCol::new(tenants.as_ref(), "tenant").map_err(|e| bad(path, e))?;
        let user = StrCol::new(users.as_ref(), "user_id").map_err(|e| bad(path, e))?;
        let ts = column("ts_ms")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad(path, "column 'ts_ms' is not Int64"))?;
        for i in 0..batch.num_rows() {
            if tenants.is_null(i) || users.is_null(i) || ts.is_null(i) {
                return Err(bad(
                    path,
                    format!(
                        "row {}: tenant, user_id and ts_ms must not be null",
                        row + i as u64
                    ),
                ));
            }
            by_user.add(tenant.value(i), user.value(i), ts.value(i), row + i as u64)?;
        }
        row += batch.num_rows() as u64;
        batches.push(batch);
    }
    by_user.sort();
    Ok(Labels {
        batches,
        rows: row,
        by_user: Arc::new(by_user),
    })
}

/// The features asked for (`only`, or the spec's), as positions.
fn selected(spec: &FeatureSpec, only: &[String]) -> Result<Vec<usize>> {
    if only.is_empty() {
        return Ok((0..spec.features.len()).collect());
    }
    only.iter()
        .map(|name| {
            spec.feature_index(name).ok_or_else(|| {
                BatchError::Argument(format!(
                    "--only: the spec has no feature '{name}' (it has {})",
                    spec.features
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// Writes feature rows (a label row number and the selected features) to
/// a scratch Parquet file.
struct ScratchWriter {
    path: PathBuf,
    schema: SchemaRef,
    row: UInt64Builder,
    columns: Vec<Column>,
    writer: ArrowWriter<File>,
}

impl ScratchWriter {
    fn create(path: PathBuf, features: &Schema) -> Result<ScratchWriter> {
        let mut fields = vec![ArrowField::new(ROW, DataType::UInt64, false)];
        fields.extend(features.fields().iter().map(|f| f.as_ref().clone()));
        let schema = Arc::new(Schema::new(fields));
        let file = File::create(&path).map_err(BatchError::io(&path))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| bad(&path, e))?;
        Ok(ScratchWriter {
            columns: features
                .fields()
                .iter()
                .map(|f| Column::new(f.data_type()))
                .collect(),
            path,
            schema,
            row: UInt64Builder::new(),
            writer,
        })
    }

    fn push(
        &mut self,
        row: u64,
        values: impl Iterator<Item = Option<weft_core::FeatureValue>>,
    ) -> Result<()> {
        self.row.append_value(row);
        for (c, v) in self.columns.iter_mut().zip(values) {
            c.append(v.as_ref());
        }
        if self.row.len() >= ROWS_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.row.is_empty() {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.row.finish())];
        arrays.extend(self.columns.iter_mut().map(Column::finish));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| BatchError::DataFusion(e.into()))?;
        self.writer.write(&batch).map_err(|e| bad(&self.path, e))
    }

    fn close(mut self) -> Result<()> {
        self.flush()?;
        self.writer.close().map_err(|e| bad(&self.path, e))?;
        Ok(())
    }
}

/// The scan's columns for the features in `selected`: those they read; the
/// string columns they do not read as empty literals (never looked at,
/// nearly free to sort); the attributes only if read.
fn scan_columns(spec: &FeatureSpec, selected: &[usize], ingest: bool) -> Vec<Expr> {
    let fields: Vec<&Field> = selected
        .iter()
        .flat_map(|&i| {
            let f = &spec.features[i];
            f.aggregate
                .field()
                .into_iter()
                .chain(f.filter.conditions.iter().map(|c| c.field()))
        })
        .collect();
    let read = |name: &str, field: Field| {
        if fields.contains(&&field) {
            col(name)
        } else {
            lit("").alias(name)
        }
    };
    let mut out: Vec<Expr> = columns(spec)
        .into_iter()
        .filter(|c| !matches!(*c, "item_id" | "category" | "attributes"))
        .map(col)
        .collect();
    out.push(read("item_id", Field::ItemId));
    out.push(read("category", Field::Category));
    if fields.iter().any(|f| matches!(f, Field::Attr(_))) {
        out.push(col("attributes"));
    }
    if ingest {
        out.push(col(INGEST_COLUMN));
    }
    out
}

/// Reused between users by [`user_rows`].
struct Sweep {
    order: Vec<u32>,
    event: Event,
}

impl Sweep {
    fn new() -> Sweep {
        Sweep {
            order: Vec::new(),
            event: crate::group::empty_event(),
        }
    }
}

/// One user's records (`rows` in (partition, offset) order, their strings
/// in `strings`) evaluated at each of its label times (`labels`, in time
/// order) over `spec` (the features asked for, in output order).
///
/// A record is known at `t` when `max(ts_ms, arrival) <= t`, so the known
/// sets grow with `t`: of each event id the copy known first is applied,
/// once, in the order they became known, and each label time evaluated
/// when its turn comes. Copies of an event id are the same event, so which
/// copy is applied does not matter; a user whose copies differ (a producer
/// that reused an id) is evaluated label by label instead, the first copy
/// in offset order among those known winning, exactly as the reference
/// does.
fn user_rows(
    spec: &FeatureSpec,
    rows: &[Row],
    strings: &Strings,
    labels: &[(i64, u64)],
    out: &mut ScratchWriter,
    sweep: &mut Sweep,
) -> Result<()> {
    let known = |r: &Row| r.ts_ms.max(r.ingest_ms);
    let mut emit =
        |row: u64, buckets: &UserBuckets<'_>, t: i64| out.push(row, buckets.values_at(t));
    // Copies of an id side by side (offset order among them), the one known
    // first kept.
    let order = &mut sweep.order;
    order.clear();
    order.extend(0..rows.len() as u32);
    order.sort_unstable_by(|&a, &b| {
        strings
            .event_id(&rows[a as usize])
            .cmp(strings.event_id(&rows[b as usize]))
            .then(a.cmp(&b))
    });
    let mut conflicting = false;
    let mut kept = 0;
    for i in 0..order.len() {
        let r = &rows[order[i] as usize];
        if kept > 0 {
            let last = &rows[order[kept - 1] as usize];
            if strings.event_id(last) == strings.event_id(r) {
                conflicting |= last.contents() != r.contents();
                if known(r) < known(last) {
                    order[kept - 1] = order[i];
                }
                continue;
            }
        }
        order[kept] = order[i];
        kept += 1;
    }
    order.truncate(kept);
    let event = &mut sweep.event;
    if conflicting {
        for &(t, row) in labels {
            let mut buckets = UserBuckets::new(spec);
            let mut seen: foldhash::HashSet<&str> = Default::default();
            for r in rows {
                if known(r) <= t && seen.insert(strings.event_id(r)) {
                    strings.fill(r, event)?;
                    buckets.apply(event);
                }
            }
            emit(row, &buckets, t)?;
        }
        return Ok(());
    }
    order.sort_unstable_by_key(|&i| known(&rows[i as usize]));
    let mut buckets = UserBuckets::new(spec);
    let mut next = order.iter().map(|&i| &rows[i as usize]).peekable();
    for &(t, row) in labels {
        while let Some(r) = next.next_if(|r| known(r) <= t) {
            strings.fill(r, event)?;
            buckets.apply(event);
        }
        emit(row, &buckets, t)?;
    }
    Ok(())
}

/// One partition's users, as [`group_partition`] hands them over (grouped
/// in memory, or sorted), evaluated at their label times into the
/// partition's scratch file.
struct TrainingRows {
    spec: Arc<FeatureSpec>,
    labels: Arc<LabelUsers>,
    writer: ScratchWriter,
    sweep: Sweep,
    /// The current user's rows.
    rows: Vec<Row>,
    /// The sorted path: the current user (tenant, user id, its number if
    /// labelled), and its rows' strings.
    current: Option<(String, String, Option<u32>)>,
    strings: Strings,
    /// The labelled users with records, and the records read.
    with_events: Vec<u32>,
    read: u64,
}

impl TrainingRows {
    fn new(spec: Arc<FeatureSpec>, labels: Arc<LabelUsers>, writer: ScratchWriter) -> Self {
        TrainingRows {
            spec,
            labels,
            writer,
            sweep: Sweep::new(),
            rows: Vec::new(),
            current: None,
            strings: Strings::new(),
            with_events: Vec::new(),
            read: 0,
        }
    }

    /// After the partition's last row: the labelled users with records,
    /// the records read, and the writer (still open).
    fn finish(mut self) -> Result<(Vec<u32>, u64, ScratchWriter)> {
        self.finish_user()?;
        Ok((self.with_events, self.read, self.writer))
    }

    /// Evaluates user `user` on `self.rows`, their strings in `strings`
    /// (the grouped rows') or, if `None`, in `self.strings` (the sorted
    /// path's).
    fn user(&mut self, user: u32, strings: Option<&Strings>) -> Result<()> {
        user_rows(
            &self.spec,
            &self.rows,
            strings.unwrap_or(&self.strings),
            &self.labels.times[user as usize],
            &mut self.writer,
            &mut self.sweep,
        )?;
        self.with_events.push(user);
        self.read += self.rows.len() as u64;
        self.rows.clear();
        Ok(())
    }

    /// The sorted path's current user, evaluated.
    fn finish_user(&mut self) -> Result<()> {
        if let Some((_, _, Some(user))) = self.current.take() {
            self.user(user, None)?;
            self.strings.clear();
        }
        Ok(())
    }
}

impl UserRows for TrainingRows {
    type Users = Labelled;

    fn users(&self) -> Labelled {
        Labelled {
            labels: self.labels.clone(),
        }
    }

    fn push_sorted(&mut self, batch: &RecordBatch) -> Result<()> {
        let c = EventColumns::new(batch)?;
        let ingest = crate::group::ingest_column(batch);
        for row in 0..batch.num_rows() {
            let (tenant, user) = (c.tenant.value(row), c.user_id.value(row));
            let same = self
                .current
                .as_ref()
                .is_some_and(|(t, u, _)| t == tenant && u == user);
            if !same {
                self.finish_user()?;
                let number = self.labels.find(tenant, user);
                self.current = Some((tenant.to_string(), user.to_string(), number));
            }
            if let Some((_, _, Some(number))) = self.current {
                let r = self.strings.row(&c, ingest, row, (0, number))?;
                self.rows.push(r);
            }
        }
        Ok(())
    }

    fn grouped(&mut self, grouped: Grouped<Labelled>, progress: &JobProgress) -> Result<()> {
        for ((_, user), rows) in grouped.by_user() {
            self.rows.extend(rows.iter().map(|&i| *grouped.row(i)));
            self.user(user, Some(grouped.strings()))?;
            progress
                .rows
                .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What the grouping of every partition found.
struct Folded {
    users_with_events: u64,
    records: u64,
    grouped_in_memory: usize,
}

/// The partitions' feature rows, in this process: one task per partition
/// into its scratch file, the label users without records into one more.
async fn run_local(
    ctx: &datafusion::prelude::SessionContext,
    repartitioned: Arc<dyn ExecutionPlan>,
    spec: &Arc<FeatureSpec>,
    labels: &Labels,
    feature_schema: &Schema,
    scratch: &Path,
    progress: &Arc<JobProgress>,
) -> Result<Folded> {
    let partitions = repartitioned.output_partitioning().partition_count();
    let task_ctx = ctx.task_ctx();
    let by_user = labels.by_user.clone();
    // Registered before any partition's grouping grows: each gets its fair
    // share of the pool from the start.
    let reservations: Vec<MemoryReservation> = (0..partitions)
        .map(|i| crate::operator::grouping_reservation("weft training rows", i, &task_ctx))
        .collect();
    let mut tasks = Vec::with_capacity(partitions);
    for (i, reservation) in reservations.into_iter().enumerate() {
        let mut rows = TrainingRows::new(
            spec.clone(),
            by_user.clone(),
            ScratchWriter::create(scratch.join(format!("p{i}.parquet")), feature_schema)?,
        );
        let (plan, task_ctx, progress) =
            (repartitioned.clone(), task_ctx.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let grouping =
                group_partition(plan, i, task_ctx, &progress, reservation, &mut rows).await?;
            let (with_events, read, writer) = rows.finish()?;
            writer.close()?;
            if !grouping.in_memory {
                tracing::info!(
                    partition = i,
                    spills = grouping.spills,
                    "training rows sorted externally"
                );
            }
            Ok::<_, BatchError>((with_events, read, grouping.in_memory))
        }));
    }
    let mut with_events = vec![false; by_user.len()];
    let mut folded = Folded {
        users_with_events: 0,
        records: 0,
        grouped_in_memory: 0,
    };
    for t in tasks {
        let (users, read, in_memory) = t
            .await
            .map_err(|e| BatchError::Argument(format!("a training-set task failed: {e}")))??;
        for u in users {
            with_events[u as usize] = true;
        }
        folded.records += read;
        folded.grouped_in_memory += usize::from(in_memory);
    }
    folded.users_with_events = with_events.iter().filter(|w| **w).count() as u64;
    let mut empty = ScratchWriter::create(scratch.join("none.parquet"), feature_schema)?;
    no_event_rows(spec, &by_user, &with_events, &mut empty)?;
    empty.close()?;
    Ok(folded)
}

/// The rows of the label users without any record (`with_events` false):
/// the features of no events.
fn no_event_rows(
    spec: &FeatureSpec,
    users: &LabelUsers,
    with_events: &[bool],
    out: &mut ScratchWriter,
) -> Result<()> {
    let (mut sweep, no_strings) = (Sweep::new(), Strings::new());
    for (times, _) in users.times.iter().zip(with_events).filter(|(_, w)| !**w) {
        user_rows(spec, &[], &no_strings, times, out, &mut sweep)?;
    }
    Ok(())
}

/// Builds the training set of `labels` from `config.archive` into `out`
/// (atomically: a temporary file renamed into place). `only`: the features
/// to compute (empty: all of the spec's).
pub async fn training_set(
    config: &BatchConfig,
    labels: &Path,
    out: &Path,
    only: &[String],
    progress: Arc<JobProgress>,
) -> Result<TrainingSummary> {
    let selected = selected(&config.spec, only)?;
    let names = names(&config.spec, &selected);
    let labels = read_labels(labels, &names)?;
    build(config, labels, selected, out, progress).await
}

/// `weft batch export --point-in-time`: one row per user of the archive
/// (`tenant`, `user_id`, in key order) with every feature as the platform
/// knew the user at `at_ms`, read from the archive.
pub async fn export_point_in_time(
    config: &BatchConfig,
    at_ms: i64,
    out: &Path,
    progress: Arc<JobProgress>,
) -> Result<TrainingSummary> {
    let selected = selected(&config.spec, &[])?;
    let Scan { table, .. } = open_scan(config, &progress).await?;
    let users = table
        .select_columns(&["tenant", "user_id"])?
        .distinct()?
        .sort(vec![
            SortExpr::new(col("tenant"), true, false),
            SortExpr::new(col("user_id"), true, false),
        ])?
        .collect()
        .await?;
    let schema = Arc::new(Schema::new(vec![
        ArrowField::new("tenant", DataType::Utf8, false),
        ArrowField::new("user_id", DataType::Utf8, false),
    ]));
    let mut by_user = LabelUsers::new();
    let mut batches = Vec::with_capacity(users.len());
    let mut row = 0u64;
    for batch in users {
        let tenant = StrCol::new(batch.column(0).as_ref(), "tenant")?;
        let user = StrCol::new(batch.column(1).as_ref(), "user_id")?;
        for i in 0..batch.num_rows() {
            by_user.add(tenant.value(i), user.value(i), at_ms, row + i as u64)?;
        }
        row += batch.num_rows() as u64;
        let columns = batch
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| BatchError::DataFusion(e.into()))?;
        batches.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| BatchError::DataFusion(e.into()))?,
        );
    }
    let labels = Labels {
        batches,
        rows: row,
        by_user: Arc::new(by_user),
    };
    build(config, labels, selected, out, progress).await
}

fn names(spec: &FeatureSpec, selected: &[usize]) -> Vec<String> {
    selected
        .iter()
        .map(|&i| spec.features[i].name.clone())
        .collect()
}

/// The spec of the features `names` (in that order): only those are
/// folded.
fn subset(spec: &FeatureSpec, names: &[String]) -> Result<FeatureSpec> {
    FeatureSpec::new(
        names
            .iter()
            .map(|name| {
                spec.feature_index(name)
                    .map(|i| spec.features[i].clone())
                    .ok_or_else(|| {
                        BatchError::Argument(format!("the spec has no feature '{name}'"))
                    })
            })
            .collect::<Result<_>>()?,
    )
    .map_err(|e| BatchError::Argument(format!("features: {e}")))
}

/// The feature columns of `spec`, typed as `weft batch export` types them.
fn feature_schema(spec: &FeatureSpec) -> Schema {
    Schema::new(
        spec.features
            .iter()
            .map(|f| ArrowField::new(&f.name, column_type(f), true))
            .collect::<Vec<_>>(),
    )
}

/// The features of `selected` for every label row, next to the label rows.
async fn build(
    config: &BatchConfig,
    labels: Labels,
    selected: Vec<usize>,
    out: &Path,
    progress: Arc<JobProgress>,
) -> Result<TrainingSummary> {
    let started = std::time::Instant::now();
    let names = names(&config.spec, &selected);
    let spec = Arc::new(subset(&config.spec, &names)?);
    let feature_schema = feature_schema(&spec);

    let Scan { ctx, table, .. } = open_scan(config, &progress).await?;
    progress.set("scanning and grouping");
    let has_ingest = table
        .schema()
        .has_column_with_unqualified_name(INGEST_COLUMN);
    let all: Vec<usize> = (0..spec.features.len()).collect();
    let cols = scan_columns(&spec, &all, has_ingest);
    // Every record is grouped; the users without labels are skipped as
    // they come (a semi-join with the labels' users costs more than it
    // saves when most users have labels, and its repartitions shrink the
    // grouping's share of the memory pool).
    let df = table.select(cols)?;
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let partitions = config.partitions.max(1);
    let keys = vec![pcol("tenant", &schema)?, pcol("user_id", &schema)?];
    let repartitioned: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(keys, partitions),
    )?);

    progress.set("folding");
    let scratch = tempfile::Builder::new()
        .prefix("weft-training-")
        .tempdir_in(config.spill_dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|e| bad(Path::new("scratch directory"), e))?;
    let folded = match &config.cluster {
        None => {
            run_local(
                &ctx,
                repartitioned,
                &spec,
                &labels,
                &feature_schema,
                scratch.path(),
                &progress,
            )
            .await?
        }
        Some(scheduler) => {
            exec::run_on_cluster(
                scheduler,
                config,
                &ctx,
                repartitioned,
                &labels,
                &names,
                spec.clone(),
                scratch.path(),
                &progress,
            )
            .await?
        }
    };

    // The feature rows in label order, next to the label rows.
    progress.set("publishing");
    assemble(&ctx, scratch.path(), &labels, &feature_schema, out).await?;
    progress.set("done");
    Ok(TrainingSummary {
        rows: labels.rows,
        users: labels.by_user.len() as u64,
        users_with_events: folded.users_with_events,
        records: folded.records,
        features: names,
        grouped_in_memory: folded.grouped_in_memory,
        partitions,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `out` (atomically: a temporary file renamed into place): the
/// label rows in input order, label columns unchanged, and next to each
/// its feature row from the scratch files in `scratch` (sorted by label
/// row number with DataFusion, spilling).
async fn assemble(
    ctx: &datafusion::prelude::SessionContext,
    scratch: &Path,
    labels: &Labels,
    feature_schema: &Schema,
    out: &Path,
) -> Result<()> {
    let rows = ctx
        .read_parquet(
            format!("{}/", scratch.display()),
            ParquetReadOptions::default(),
        )
        .await?
        .sort(vec![SortExpr::new(col(ROW), true, false)])?;
    let mut stream = rows.execute_stream().await?;
    let label_schema = labels
        .batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| BatchError::Argument("the label file has no rows".into()))?;
    let mut fields: Vec<ArrowField> = label_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(feature_schema.fields().iter().map(|f| f.as_ref().clone()));
    let out_schema = Arc::new(Schema::new(fields));
    let tmp = out.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(BatchError::io(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, out_schema.clone(), Some(props)).map_err(|e| bad(&tmp, e))?;
    let all_labels = datafusion::arrow::compute::concat_batches(&label_schema, &labels.batches)
        .map_err(|e| BatchError::DataFusion(e.into()))?;
    let mut next = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let rows = batch
            .column_by_name(ROW)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| BatchError::Argument("scratch rows lost their numbers".into()))?;
        for i in 0..rows.len() {
            if rows.value(i) != next + i as u64 {
                return Err(BatchError::Argument(format!(
                    "label row {} has no features (internal error)",
                    next + i as u64
                )));
            }
        }
        let n = batch.num_rows();
        let mut arrays: Vec<ArrayRef> = all_labels.slice(next as usize, n).columns().to_vec();
        // DataFusion reads strings back as views: the declared types again.
        for (array, field) in batch.columns()[1..].iter().zip(feature_schema.fields()) {
            arrays.push(if array.data_type() == field.data_type() {
                array.clone()
            } else {
                datafusion::arrow::compute::cast(array, field.data_type())
                    .map_err(|e| BatchError::DataFusion(e.into()))?
            });
        }
        let joined = RecordBatch::try_new(out_schema.clone(), arrays)
            .map_err(|e| BatchError::DataFusion(e.into()))?;
        writer.write(&joined).map_err(|e| bad(&tmp, e))?;
        next += n as u64;
    }
    if next != labels.rows {
        return Err(BatchError::Argument(format!(
            "{} of {} label rows got features (internal error)",
            next, labels.rows
        )));
    }
    writer.close().map_err(|e| bad(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(BatchError::io(out))?;
    Ok(())
}
