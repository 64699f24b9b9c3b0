//! The master dataset: a hive-partitioned Parquet archive of every valid
//! event, as the archiver writes it and `weft gen` reproduces it.
//!
//! Layout: `<root>/tenant=<tenant>/date=<YYYY-MM-DD>/<name>.parquet`, where
//! the date is the UTC day of the event time. `tenant` and `date` live only in
//! the path (hive style), so DataFusion, DuckDB (`hive_partitioning = true`)
//! and pyarrow (`partitioning="hive"`) all add them as columns and can prune
//! by them. The columns are [`archive_schema`]; `docs/archive.md` documents
//! them for data scientists.
//!
//! Files appear whole or not at all: each is written under a hidden
//! temporary name, fsynced, renamed into place, and the directory fsynced.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, MapBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, MapArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::event::{Event, EventKind};
use crate::generator::Sequenced;
use crate::spec::DAY_MS;
use crate::time::{date_of, parse_date};

/// Where the archiver keeps its durable record, relative to the archive
/// root (the batch layer reads it to find the archive's boundary).
pub const ARCHIVER_STATE_DIR: &str = "_archiver";
/// The record's file name inside [`ARCHIVER_STATE_DIR`].
pub const ARCHIVER_STATE_FILE: &str = "state.json";

/// The archiver's durable record (JSON): the commit point of its flushes.
/// Files named `part-f<flush>-*` with a flush number above `flush` are
/// uncommitted leftovers of a crash; every event at an offset below
/// `offsets[p]` of partition `p` is archived, except invalid records, which
/// are in the dead-letter topic instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiverState {
    /// The last completed flush (0: none).
    pub flush: u64,
    /// Next offset to archive, per partition.
    pub offsets: std::collections::HashMap<i32, i64>,
}

/// Rows per row group: large enough for good compression and scans, small
/// enough that a reader can skip by statistics.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// A problem reading or writing the archive, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
}

impl ArchiveError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn format(path: &Path, problem: impl ToString) -> ArchiveError {
        ArchiveError::Format {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
    }
}

fn attributes_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone()
}

/// The arrival-time column: the Kafka record's timestamp. Files written
/// before it existed lack it; readers take the event time then
/// ([`INGEST_COLUMN`] is nullable in [`archive_schema`] so that a scan over
/// old and new files fills it with nulls for the old ones).
pub const INGEST_COLUMN: &str = "_ingest_ms";

/// The columns of every archive file (the hive columns `tenant` and `date`
/// come from the path).
pub fn archive_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price_minor", DataType::Int64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("attributes", attributes_type(), false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new(INGEST_COLUMN, DataType::Int64, true),
    ]))
}

/// Builds record batches of [`archive_schema`].
#[derive(Debug)]
pub struct ArchiveBatchBuilder {
    event_id: StringBuilder,
    user_id: StringBuilder,
    ts_ms: Int64Builder,
    kind: StringBuilder,
    item_id: StringBuilder,
    category: StringBuilder,
    price_minor: Int64Builder,
    quantity: Int32Builder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    partition: Int32Builder,
    offset: Int64Builder,
    ingest: Int64Builder,
    rows: usize,
}

impl Default for ArchiveBatchBuilder {
    fn default() -> Self {
        ArchiveBatchBuilder {
            event_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            ts_ms: Int64Builder::new(),
            kind: StringBuilder::new(),
            item_id: StringBuilder::new(),
            category: StringBuilder::new(),
            price_minor: Int64Builder::new(),
            quantity: Int32Builder::new(),
            attributes: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            ingest: Int64Builder::new(),
            rows: 0,
        }
    }
}

impl ArchiveBatchBuilder {
    /// One row: `e`, consumed from `partition` at `offset`, arrived at
    /// `ingest_ms`.
    pub fn append(&mut self, e: &Event, partition: i32, offset: i64, ingest_ms: i64) {
        self.event_id.append_value(&e.event_id);
        self.user_id.append_value(&e.user_id);
        self.ts_ms.append_value(e.ts_ms);
        self.kind.append_value(e.kind.as_str());
        self.item_id.append_value(&e.item_id);
        self.category.append_value(&e.category);
        self.price_minor.append_value(e.price_minor);
        self.quantity.append_value(e.quantity);
        for (k, v) in &e.attributes {
            self.attributes.keys().append_value(k);
            self.attributes.values().append_value(v);
        }
        self.attributes
            .append(true)
            .expect("keys and values are appended in pairs");
        self.partition.append_value(partition);
        self.offset.append_value(offset);
        self.ingest.append_value(ingest_ms);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the rows appended so far as a batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.ts_ms.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.item_id.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.price_minor.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.ingest.finish()),
        ];
        RecordBatch::try_new(archive_schema(), columns).expect("columns match archive_schema")
    }
}

/// The Parquet writer settings of the archive: zstd, dictionary encoding for
/// the low-cardinality columns, column-chunk statistics (min/max per row
/// group, which is what readers prune by).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("zstd level 1 is valid"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // Event ids are unique and user ids nearly so within a file: a
        // dictionary would be built, overflow and be thrown away (this alone
        // made writing about 8 % faster).
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("user_id"), false)
        .build()
}

/// The directory of one (tenant, day) partition.
pub fn partition_dir(root: &Path, tenant: &str, day: i64) -> PathBuf {
    root.join(partition_rel(tenant, day))
}

/// The (tenant, day) partition's path under the archive root,
/// `tenant=<t>/date=<YYYY-MM-DD>` (an object store's key prefix).
pub fn partition_rel(tenant: &str, day: i64) -> String {
    format!("tenant={tenant}/date={}", date_of(day * DAY_MS))
}

/// Writes one archive file atomically: temp name, fsync, rename, fsync dir.
#[derive(Debug)]
pub struct AtomicParquetFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<File>,
}

impl AtomicParquetFile {
    pub fn create(dest: PathBuf) -> Result<AtomicParquetFile, ArchiveError> {
        let dir = dest
            .parent()
            .ok_or_else(|| ArchiveError::format(&dest, "has no parent directory"))?;
        fs::create_dir_all(dir).map_err(ArchiveError::io(dir))?;
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ArchiveError::format(&dest, "has no file name"))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(ArchiveError::io(&tmp))?;
        let writer = ArrowWriter::try_new(file, archive_schema(), Some(writer_properties()))
            .map_err(|e| ArchiveError::format(&tmp, e))?;
        Ok(AtomicParquetFile { tmp, dest, writer })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArchiveError> {
        self.writer
            .write(batch)
            .map_err(|e| ArchiveError::format(&self.tmp, e))
    }

    /// Finishes the file and makes it visible under its final name.
    pub fn commit(self) -> Result<PathBuf, ArchiveError> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| ArchiveError::format(&self.tmp, e))?;
        file.sync_all().map_err(ArchiveError::io(&self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(ArchiveError::io(&self.dest))?;
        if let Some(dir) = self.dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(ArchiveError::io(dir))?;
        }
        Ok(self.dest)
    }
}

/// A step of writing the archive, so that building batches (routing rows to
/// their (tenant, day) file, filling Arrow builders) and encoding Parquet can
/// run on different threads.
#[derive(Debug)]
pub enum FileOp {
    Create { id: u64, dest: PathBuf },
    Write { id: u64, batch: RecordBatch },
    Commit { id: u64 },
}

struct OpenPartition {
    id: u64,
    builder: ArchiveBatchBuilder,
    rows_in_file: usize,
}

/// Routes sequenced events to one file per (tenant, day), rolling files at
/// `rows_per_file`, and emits the [`FileOp`]s that write them.
pub struct ArchiveRouter {
    root: PathBuf,
    prefix: String,
    rows_per_file: usize,
    batch_rows: usize,
    /// Few at a time (tenants x days still receiving late events), so a
    /// linear scan beats hashing a cloned key per event.
    open: Vec<((String, i64), OpenPartition)>,
    next_file: u64,
    ops: Vec<FileOp>,
    rows: u64,
}

impl std::fmt::Debug for ArchiveRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveRouter")
            .field("root", &self.root)
            .field("open", &self.open.len())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ArchiveRouter {
    /// Files are named `<prefix>-<n>.parquet`.
    pub fn new(root: impl Into<PathBuf>, prefix: &str, rows_per_file: usize) -> ArchiveRouter {
        ArchiveRouter {
            root: root.into(),
            prefix: prefix.to_string(),
            rows_per_file: rows_per_file.max(1),
            batch_rows: 64 * 1024,
            open: Vec::new(),
            next_file: 0,
            ops: Vec::new(),
            rows: 0,
        }
    }

    pub fn push(&mut self, s: &Sequenced) {
        let day = s.event.ts_ms.div_euclid(DAY_MS);
        let found = self
            .open
            .iter()
            .position(|((t, d), _)| *d == day && *t == s.event.tenant);
        let index = match found {
            Some(i) => i,
            None => {
                self.next_file += 1;
                let id = self.next_file;
                let dest = partition_dir(&self.root, &s.event.tenant, day)
                    .join(format!("{}-{id:06}.parquet", self.prefix));
                self.ops.push(FileOp::Create { id, dest });
                let part = OpenPartition {
                    id,
                    builder: ArchiveBatchBuilder::default(),
                    rows_in_file: 0,
                };
                self.open.push(((s.event.tenant.clone(), day), part));
                self.open.len() - 1
            }
        };
        let part = &mut self.open[index].1;
        part.builder
            .append(&s.event, s.partition, s.offset, s.ingest_ms);
        part.rows_in_file += 1;
        self.rows += 1;
        if part.builder.len() >= self.batch_rows {
            let batch = part.builder.finish();
            self.ops.push(FileOp::Write { id: part.id, batch });
        }
        if part.rows_in_file >= self.rows_per_file {
            let (_, part) = self.open.swap_remove(index);
            self.close(part);
        }
    }

    fn close(&mut self, mut part: OpenPartition) {
        if !part.builder.is_empty() {
            let batch = part.builder.finish();
            self.ops.push(FileOp::Write { id: part.id, batch });
        }
        self.ops.push(FileOp::Commit { id: part.id });
    }

    /// Closes the files of days before `day` (their late events are over).
    pub fn close_days_before(&mut self, day: i64) {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|((_, d), _)| *d < day);
        self.open = keep;
        for (_, part) in old {
            self.close(part);
        }
    }

    /// Closes every open file.
    pub fn close_all(&mut self) {
        for (_, part) in std::mem::take(&mut self.open) {
            self.close(part);
        }
    }

    /// The operations emitted since the last call, in order.
    pub fn take_ops(&mut self) -> Vec<FileOp> {
        std::mem::take(&mut self.ops)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Carries out [`FileOp`]s: Parquet encoding and atomic publication.
#[derive(Debug, Default)]
pub struct ArchiveFiles {
    open: Vec<(u64, AtomicParquetFile)>,
    committed: Vec<PathBuf>,
}

impl ArchiveFiles {
    pub fn apply(&mut self, op: FileOp) -> Result<(), ArchiveError> {
        match op {
            FileOp::Create { id, dest } => self.open.push((id, AtomicParquetFile::create(dest)?)),
            FileOp::Write { id, batch } => {
                if let Some((_, f)) = self.open.iter_mut().find(|(i, _)| *i == id) {
                    f.write(&batch)?;
                }
            }
            FileOp::Commit { id } => {
                if let Some(i) = self.open.iter().position(|(x, _)| *x == id) {
                    let (_, f) = self.open.swap_remove(i);
                    self.committed.push(f.commit()?);
                }
            }
        }
        Ok(())
    }

    /// The files published so far, in order.
    pub fn committed(&self) -> &[PathBuf] {
        &self.committed
    }

    pub fn into_committed(self) -> Vec<PathBuf> {
        self.committed
    }
}

/// Router and files on one thread: the simple way to write an archive.
#[derive(Debug)]
pub struct ArchiveWriter {
    router: ArchiveRouter,
    files: ArchiveFiles,
}

impl ArchiveWriter {
    /// Files are named `<prefix>-<n>.parquet`.
    pub fn new(root: impl Into<PathBuf>, prefix: &str, rows_per_file: usize) -> ArchiveWriter {
        ArchiveWriter {
            router: ArchiveRouter::new(root, prefix, rows_per_file),
            files: ArchiveFiles::default(),
        }
    }

    fn flush_ops(&mut self) -> Result<(), ArchiveError> {
        for op in self.router.take_ops() {
            self.files.apply(op)?;
        }
        Ok(())
    }

    pub fn push(&mut self, s: &Sequenced) -> Result<(), ArchiveError> {
        self.router.push(s);
        self.flush_ops()
    }

    /// Closes the files of days before `day` (their late events are over).
    pub fn close_days_before(&mut self, day: i64) -> Result<(), ArchiveError> {
        self.router.close_days_before(day);
        self.flush_ops()
    }

    pub fn rows(&self) -> u64 {
        self.router.rows()
    }

    /// Closes every file; returns the files written, in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, ArchiveError> {
        self.router.close_all();
        self.flush_ops()?;
        Ok(self.files.into_committed())
    }
}

/// Every `.parquet` file under the archive root, sorted; hidden temporary
/// files are skipped.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ArchiveError> {
        for entry in fs::read_dir(dir).map_err(ArchiveError::io(dir))? {
            let entry = entry.map_err(ArchiveError::io(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, &mut out)?;
    out.sort();
    Ok(out)
}

fn hive_value<'a>(path: &'a Path, key: &str) -> Option<&'a str> {
    path.ancestors()
        .filter_map(|p| p.file_name()?.to_str())
        .find_map(|name| name.strip_prefix(key)?.strip_prefix('='))
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a T, ArchiveError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArchiveError::format(path, format!("missing column '{name}'")))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| ArchiveError::format(path, format!("column '{name}' has the wrong type")))
}

/// Reads one archive file back into sequenced events (tests and tools; the
/// batch layer reads the archive with DataFusion).
pub fn read_file(path: &Path) -> Result<Vec<Sequenced>, ArchiveError> {
    let tenant = hive_value(path, "tenant")
        .ok_or_else(|| ArchiveError::format(path, "not under a tenant=<name> directory"))?
        .to_string();
    let date = hive_value(path, "date")
        .ok_or_else(|| ArchiveError::format(path, "not under a date=<YYYY-MM-DD> directory"))?;
    let day_start =
        parse_date(date).ok_or_else(|| ArchiveError::format(path, format!("bad date '{date}'")))?;
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| ArchiveError::format(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ArchiveError::format(path, e))?;
        let event_id = column::<StringArray>(&batch, "event_id", path)?;
        let user_id = column::<StringArray>(&batch, "user_id", path)?;
        let ts_ms = column::<Int64Array>(&batch, "ts_ms", path)?;
        let kind = column::<StringArray>(&batch, "kind", path)?;
        let item_id = column::<StringArray>(&batch, "item_id", path)?;
        let category = column::<StringArray>(&batch, "category", path)?;
        let price = column::<Int64Array>(&batch, "price_minor", path)?;
        let quantity = column::<Int32Array>(&batch, "quantity", path)?;
        let attributes = column::<MapArray>(&batch, "attributes", path)?;
        let partition = column::<Int32Array>(&batch, "_partition", path)?;
        let offset = column::<Int64Array>(&batch, "_offset", path)?;
        // Older files have no arrival time: the event time stands in.
        let ingest = match batch.column_by_name(INGEST_COLUMN) {
            None => None,
            Some(c) => Some(c.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                ArchiveError::format(path, format!("column '{INGEST_COLUMN}' has the wrong type"))
            })?),
        };
        let keys = attributes
            .keys()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| ArchiveError::format(path, "attribute keys are not strings"))?;
        let values = attributes
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| ArchiveError::format(path, "attribute values are not strings"))?;
        let offsets = attributes.value_offsets();
        for row in 0..batch.num_rows() {
            let kind_name = kind.value(row);
            let kind = EventKind::parse(kind_name).ok_or_else(|| {
                ArchiveError::format(path, format!("row {row}: unknown kind '{kind_name}'"))
            })?;
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            let event = Event {
                event_id: event_id.value(row).to_string(),
                tenant: tenant.clone(),
                user_id: user_id.value(row).to_string(),
                ts_ms: ts_ms.value(row),
                kind,
                item_id: item_id.value(row).to_string(),
                category: category.value(row).to_string(),
                price_minor: price.value(row),
                quantity: quantity.value(row),
                attributes: (from..to)
                    .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
                    .collect(),
            };
            if event.ts_ms.div_euclid(DAY_MS) * DAY_MS != day_start {
                return Err(ArchiveError::format(
                    path,
                    format!("row {row}: event time {} is not on {date}", event.ts_ms),
                ));
            }
            let ingest_ms = match ingest {
                Some(c) if c.is_valid(row) => c.value(row),
                _ => event.ts_ms,
            };
            out.push(Sequenced {
                partition: partition.value(row),
                offset: offset.value(row),
                event,
                ingest_ms,
            });
        }
    }
    Ok(out)
}

/// Events per tenant and hour of arrival (`_ingest_ms`, hour start in ms;
/// the event time in files written before arrival times were kept),
/// counting arrivals in `[since_ms, until_ms)`. Only the files of event
/// days from two days before `since_ms` (late arrivals) up to `until_ms`
/// are read, and of them only the two time columns. For the operator
/// page's expected event rates.
pub fn hourly_arrivals(
    root: &Path,
    since_ms: i64,
    until_ms: i64,
) -> Result<std::collections::HashMap<String, std::collections::BTreeMap<i64, u64>>, ArchiveError> {
    const HOUR_MS: i64 = 3_600_000;
    let mut out: std::collections::HashMap<String, std::collections::BTreeMap<i64, u64>> =
        Default::default();
    if !root.exists() {
        return Ok(out);
    }
    for path in list_files(root)? {
        let (Some(tenant), Some(day)) = (
            hive_value(&path, "tenant"),
            hive_value(&path, "date").and_then(parse_date),
        ) else {
            continue;
        };
        if day + DAY_MS <= since_ms - 2 * DAY_MS || day >= until_ms {
            continue;
        }
        let file = File::open(&path).map_err(ArchiveError::io(&path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| ArchiveError::format(&path, e))?;
        let names: Vec<&str> = ["ts_ms", INGEST_COLUMN]
            .into_iter()
            .filter(|n| builder.schema().column_with_name(n).is_some())
            .collect();
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            names.iter().copied(),
        );
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| ArchiveError::format(&path, e))?;
        let hours = out.entry(tenant.to_string()).or_default();
        for batch in reader {
            let batch = batch.map_err(|e| ArchiveError::format(&path, e))?;
            let ts = column::<Int64Array>(&batch, "ts_ms", &path)?;
            let ingest = batch
                .column_by_name(INGEST_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
            for row in 0..batch.num_rows() {
                let at = match ingest {
                    Some(c) if c.is_valid(row) => c.value(row),
                    _ => ts.value(row),
                };
                if (since_ms..until_ms).contains(&at) {
                    *hours.entry(at.div_euclid(HOUR_MS) * HOUR_MS).or_default() += 1;
                }
            }
        }
    }
    Ok(out)
}

/// Reads the whole archive, sorted by (partition, offset).
pub fn read_archive(root: &Path) -> Result<Vec<Sequenced>, ArchiveError> {
    let mut all = Vec::new();
    for path in list_files(root)? {
        all.extend(read_file(&path)?);
    }
    all.sort_by_key(|s| (s.partition, s.offset));
    Ok(all)
}
