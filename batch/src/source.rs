//! The archive as the batch layer sees it: its location, its files (each
//! footer and schema checked before any work starts, so a bad file is named
//! and nothing is published), the archiver's commit record, and the merge
//! boundary (its type, [`Boundary`], is part of the view format in
//! `weft_view`; computing it with DataFusion is [`compute_boundary`]).

use std::collections::BTreeMap;

use arrow_schema::{DataType, Schema};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::ParquetMetaDataReader;
use weft_config::S3Section;
use weft_core::archive::{ARCHIVER_STATE_DIR, ARCHIVER_STATE_FILE, ArchiverState, archive_schema};
use weft_view::{Boundary, BoundarySource, Location, ViewError};

use crate::{BatchError, Result};

/// Resolves the archive's location; it must exist.
pub fn open_archive(location: &str, s3: &S3Section) -> Result<Location> {
    Location::parse(location, true, s3).map_err(|e| match e {
        ViewError::Missing(display) => BatchError::MissingArchive(display),
        e => e.into(),
    })
}

/// Makes the location's store known to DataFusion.
pub fn register(location: &Location, ctx: &SessionContext) {
    ctx.register_object_store(&location.url, location.store.clone());
}

/// One archive file, checked.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    pub path: ObjPath,
    pub size: u64,
    pub rows: u64,
    pub tenant: String,
    pub date: String,
}

/// Every Parquet file of the archive, with footer and schema checked.
/// Files under directories other than `tenant=`/`date=` ones (such as
/// `_archiver/`) are not part of the dataset, as for DataFusion's listing.
pub async fn list_files(archive: &Location) -> Result<Vec<ArchiveFile>> {
    let prefix = archive.prefix().clone();
    let metas: Vec<_> = archive.store.list(Some(&prefix)).try_collect().await?;
    let mut candidates = Vec::new();
    for meta in metas {
        let Some(rel) = meta.location.prefix_match(&prefix) else {
            continue;
        };
        let parts: Vec<String> = rel.map(|p| p.as_ref().to_string()).collect();
        let Some(name) = parts.last() else { continue };
        if !name.ends_with(".parquet") || parts.iter().filter(|p| !p.contains('=')).count() != 1 {
            continue;
        }
        let hive = |key: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        let file = format!("{}", meta.location);
        let (Some(tenant), Some(date)) = (hive("tenant"), hive("date")) else {
            return Err(BatchError::BadFile {
                file,
                problem: "not under tenant=<name>/date=<YYYY-MM-DD> directories".into(),
            });
        };
        if weft_core::time::parse_date(&date).is_none() {
            return Err(BatchError::BadFile {
                file,
                problem: format!("date={date} is not a YYYY-MM-DD date"),
            });
        }
        candidates.push((meta, tenant, date));
    }
    let checked: Vec<ArchiveFile> = futures::stream::iter(candidates)
        .map(|(meta, tenant, date)| {
            let store = archive.store.clone();
            async move {
                let file = format!("/{}", meta.location);
                let (schema, rows) =
                    read_footer(store.as_ref(), &meta)
                        .await
                        .map_err(|problem| BatchError::BadFile {
                            file: file.clone(),
                            problem: format!("not a readable Parquet file: {problem}"),
                        })?;
                check_schema(&schema).map_err(|problem| BatchError::BadFile {
                    file: file.clone(),
                    problem,
                })?;
                Ok::<_, BatchError>(ArchiveFile {
                    rows,
                    path: meta.location,
                    size: meta.size,
                    tenant,
                    date,
                })
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut checked = checked;
    checked.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(checked)
}

/// Reads a file's footer: its Arrow schema and row count.
async fn read_footer(
    store: &dyn ObjectStore,
    meta: &object_store::ObjectMeta,
) -> Result<(Schema, u64), String> {
    if meta.size < 12 {
        return Err(format!("{} bytes is too small", meta.size));
    }
    let tail = store
        .get_range(&meta.location, meta.size - 8..meta.size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        return Err("no Parquet footer".into());
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 12 > meta.size {
        return Err(format!("footer length {len} exceeds the file"));
    }
    let footer = store
        .get_range(&meta.location, meta.size - 8 - len..meta.size - 8)
        .await
        .map_err(|e| e.to_string())?;
    let metadata = ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| e.to_string())?;
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| e.to_string())?;
    Ok((schema, file.num_rows().max(0) as u64))
}

fn compatible(found: &DataType, expected: &DataType) -> bool {
    let is_str =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match expected {
        DataType::Utf8 => is_str(found),
        DataType::Map(..) => matches!(found, DataType::Map(..)),
        other => found == other,
    }
}

/// Checks a file has every archive column with a usable type (the
/// nullable ones, `_ingest_ms`, may be missing: files from before it).
fn check_schema(found: &Schema) -> Result<(), String> {
    for field in archive_schema().fields() {
        match found.field_with_name(field.name()) {
            Err(_) if field.is_nullable() => {}
            Err(_) => return Err(format!("column '{}' is missing", field.name())),
            Ok(f) if !compatible(f.data_type(), field.data_type()) => {
                return Err(format!(
                    "column '{}' has type {}, expected {}",
                    field.name(),
                    f.data_type(),
                    field.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The archiver's commit record, if the archive was written by `weft archive`.
pub async fn archiver_state(archive: &Location) -> Result<Option<ArchiverState>> {
    let path = archive.child(&format!("{ARCHIVER_STATE_DIR}/{ARCHIVER_STATE_FILE}"));
    match archive.store.get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| BatchError::BadFile {
                    file: format!("/{path}"),
                    problem: format!("not an archiver state: {e}"),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Rows the view folds: `_offset <= O_p` of their partition.
pub fn boundary_filter(boundary: &Boundary) -> Expr {
    boundary
        .offsets
        .iter()
        .filter(|(_, o)| **o >= 0)
        .map(|(p, o)| {
            col("_partition")
                .eq(lit(*p))
                .and(col("_offset").lt_eq(lit(*o)))
        })
        .reduce(Expr::or)
        .unwrap_or(lit(false))
}

/// The boundary of `archive`: from the archiver's commit record if there is
/// one, else per partition the prefix from offset 0 without a hole.
pub async fn compute_boundary(
    archive: &DataFrame,
    state: Option<&ArchiverState>,
) -> Result<Boundary> {
    if let Some(state) = state {
        return Ok(Boundary {
            offsets: state
                .offsets
                .iter()
                .map(|(p, next)| (*p, next - 1))
                .collect(),
            source: BoundarySource::ArchiverState { flush: state.flush },
        });
    }
    let stats = archive
        .clone()
        .aggregate(
            vec![col("_partition")],
            vec![
                min(col("_offset")).alias("lo"),
                max(col("_offset")).alias("hi"),
                count(col("_offset")).alias("n"),
                sum(col("_offset")).alias("total"),
            ],
        )?
        .collect()
        .await?;
    let mut offsets = BTreeMap::new();
    for batch in &stats {
        let ints = |name: &str| -> Result<Vec<i64>> {
            let c = batch.column_by_name(name).ok_or_else(|| {
                BatchError::Argument(format!("boundary query lost column {name}"))
            })?;
            let c = int64_values(c, name)?;
            Ok(c.into_iter().map(|v| v.unwrap_or(-1)).collect())
        };
        let (parts, lo, hi, n, total) = (
            ints("_partition")?,
            ints("lo")?,
            ints("hi")?,
            ints("n")?,
            ints("total")?,
        );
        for i in 0..parts.len() {
            let p = parts[i] as i32;
            // A permutation of 0..=hi has exactly these count and sum.
            let whole = lo[i] == 0
                && n[i] == hi[i] + 1
                && i128::from(total[i]) == i128::from(hi[i]) * i128::from(hi[i] + 1) / 2;
            let o = if whole {
                hi[i]
            } else {
                contiguous_prefix(archive, p).await?
            };
            offsets.insert(p, o);
        }
    }
    Ok(Boundary {
        offsets,
        source: BoundarySource::Contiguity,
    })
}

/// An integer column of a DataFusion result as i64s (nulls as None).
fn int64_values(column: &dyn arrow_array::Array, name: &str) -> Result<Vec<Option<i64>>> {
    let cast = datafusion::arrow::compute::cast(column, &DataType::Int64)
        .map_err(|e| BatchError::DataFusion(e.into()))?;
    let ints = cast
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .ok_or_else(|| BatchError::Argument(format!("column {name} is not an integer")))?;
    Ok(ints.iter().collect())
}

/// The highest offset of partition `p` up to which every offset from 0 is
/// present (-1 if offset 0 is missing).
async fn contiguous_prefix(archive: &DataFrame, p: i32) -> Result<i64> {
    let batches = archive
        .clone()
        .filter(col("_partition").eq(lit(p)))?
        .select(vec![col("_offset")])?
        .sort(vec![col("_offset").sort(true, false)])?
        .collect()
        .await?;
    let mut expected = 0i64;
    for batch in &batches {
        let offsets = int64_values(batch.column(0), "_offset")?;
        for o in offsets.into_iter().flatten() {
            if o == expected {
                expected += 1;
            } else if o < expected {
                return Err(BatchError::BadFile {
                    file: "archive".into(),
                    problem: format!("partition {p} offset {o} is archived twice"),
                });
            } else {
                return Ok(expected - 1);
            }
        }
    }
    Ok(expected - 1)
}
