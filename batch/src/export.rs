//! `weft batch export`: one Parquet row per user, one column per feature,
//! evaluated as of one time, for DuckDB, pandas or training sets.
//!
//! Column types: integers (`count`, `sum`, `min`, `max`, `distinct_count`,
//! `first_seen`, `last_seen`, `last` of a numeric field) are `Int64`; `avg` is
//! `Float64`; `last` of a string field is `Utf8`; `last_n` is `List<Utf8>`;
//! `top_k` is `List<Struct<value: Utf8, count: Int64>>`. A feature without a
//! value is null.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rust_rocksdb::{Direction, IteratorMode, ReadOptions};
use weft_core::FeatureValue;
use weft_core::eval::StoredPartials;
use weft_core::keys::{PARTIAL_TAG, decode_user_key};
use weft_core::spec::{Aggregate, Feature};
use weft_view::OpenedView;

use crate::{BatchError, Result};

const ROWS_PER_BATCH: usize = 64 * 1024;

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub users: u64,
    pub columns: usize,
}

fn ranked_fields() -> Fields {
    Fields::from(vec![
        ArrowField::new("value", DataType::Utf8, false),
        ArrowField::new("count", DataType::Int64, false),
    ])
}

/// The Arrow type a feature's values take.
pub fn column_type(feature: &Feature) -> DataType {
    let list = |item: DataType| DataType::List(Arc::new(ArrowField::new("item", item, true)));
    match &feature.aggregate {
        Aggregate::Avg(_) => DataType::Float64,
        Aggregate::Last(f) if !f.is_numeric() => DataType::Utf8,
        Aggregate::LastN { .. } => list(DataType::Utf8),
        Aggregate::TopK { .. } => list(DataType::Struct(ranked_fields())),
        _ => DataType::Int64,
    }
}

pub(crate) enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    List(ListBuilder<StringBuilder>),
    Ranked(ListBuilder<StructBuilder>),
}

impl Column {
    pub(crate) fn new(t: &DataType) -> Column {
        match t {
            DataType::Float64 => Column::Float(Float64Builder::new()),
            DataType::Utf8 => Column::Str(StringBuilder::new()),
            DataType::List(f) if matches!(f.data_type(), DataType::Utf8) => {
                Column::List(ListBuilder::new(StringBuilder::new()))
            }
            DataType::List(_) => Column::Ranked(ListBuilder::new(StructBuilder::from_fields(
                ranked_fields(),
                0,
            ))),
            _ => Column::Int(Int64Builder::new()),
        }
    }

    pub(crate) fn append(&mut self, v: Option<&FeatureValue>) {
        match (self, v) {
            (Column::Int(b), Some(FeatureValue::Int(i))) => b.append_value(*i),
            (Column::Int(b), _) => b.append_null(),
            (Column::Float(b), Some(FeatureValue::Float(f))) => b.append_value(*f),
            (Column::Float(b), _) => b.append_null(),
            (Column::Str(b), Some(FeatureValue::Str(s))) => b.append_value(s),
            (Column::Str(b), _) => b.append_null(),
            (Column::List(b), Some(FeatureValue::List(items))) => {
                for s in items {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            (Column::List(b), _) => b.append(false),
            (Column::Ranked(b), Some(FeatureValue::Ranked(items))) => {
                let values = b.values();
                for (s, n) in items {
                    if let Some(v) = values.field_builder::<StringBuilder>(0) {
                        v.append_value(s);
                    }
                    if let Some(c) = values.field_builder::<Int64Builder>(1) {
                        c.append_value(*n);
                    }
                    values.append(true);
                }
                b.append(true);
            }
            (Column::Ranked(b), _) => b.append(false),
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Str(b) => Arc::new(b.finish()),
            Column::List(b) => Arc::new(b.finish()),
            Column::Ranked(b) => Arc::new(b.finish()),
        }
    }
}

struct Sink {
    schema: SchemaRef,
    tenant: StringBuilder,
    user: StringBuilder,
    columns: Vec<Column>,
    writer: ArrowWriter<File>,
    users: u64,
}

impl Sink {
    fn push(
        &mut self,
        tenant: &str,
        user: &str,
        partials: &StoredPartials<'_>,
        view: &OpenedView,
        at_ms: i64,
    ) {
        let profile = partials.evaluate(at_ms);
        self.tenant.append_value(tenant);
        self.user.append_value(user);
        for (column, feature) in self.columns.iter_mut().zip(&view.spec().features) {
            column.append(profile.get(&feature.name));
        }
        self.users += 1;
    }

    fn flush(&mut self, path: &Path) -> Result<()> {
        if self.tenant.len() == 0 {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> =
            vec![Arc::new(self.tenant.finish()), Arc::new(self.user.finish())];
        arrays.extend(self.columns.iter_mut().map(Column::finish));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| BatchError::DataFusion(e.into()))?;
        self.writer.write(&batch).map_err(|e| BatchError::BadFile {
            file: path.display().to_string(),
            problem: e.to_string(),
        })
    }
}

/// Writes every user of the view, evaluated as of `at_ms`, to `out`
/// (atomically: a temporary file renamed into place).
pub fn export(view: &OpenedView, out: &Path, at_ms: i64) -> Result<ExportSummary> {
    let spec = view.spec();
    let mut fields = vec![
        ArrowField::new("tenant", DataType::Utf8, false),
        ArrowField::new("user_id", DataType::Utf8, false),
    ];
    fields.extend(
        spec.features
            .iter()
            .map(|f| ArrowField::new(&f.name, column_type(f), true)),
    );
    let schema = Arc::new(Schema::new(fields));
    let tmp = out.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(BatchError::io(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .build();
    let bad = |e: parquet::errors::ParquetError| BatchError::BadFile {
        file: tmp.display().to_string(),
        problem: e.to_string(),
    };
    let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(bad)?;
    let mut sink = Sink {
        schema: schema.clone(),
        tenant: StringBuilder::new(),
        user: StringBuilder::new(),
        columns: schema.fields()[2..]
            .iter()
            .map(|f| Column::new(f.data_type()))
            .collect(),
        writer,
        users: 0,
    };
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(vec![PARTIAL_TAG + 1]);
    // A scan across users: the view's prefix bloom filters must not apply.
    ro.set_total_order_seek(true);
    let mut partials = StoredPartials::new(spec);
    for item in view
        .db()
        .iterator_opt(IteratorMode::From(&[PARTIAL_TAG], Direction::Forward), ro)
    {
        let (k, v) = item.map_err(BatchError::rocks("reading the view"))?;
        let bad = |problem: String| BatchError::BadFile {
            file: "view".into(),
            problem,
        };
        let (tenant, user) = decode_user_key(&k).map_err(|e| bad(e.to_string()))?;
        partials.clear();
        view.push_value(&mut partials, &v)
            .map_err(|e| bad(format!("{tenant}/{user}: {e}")))?;
        sink.push(&tenant, &user, &partials, view, at_ms);
        if sink.tenant.len() >= ROWS_PER_BATCH {
            sink.flush(&tmp)?;
        }
    }
    sink.flush(&tmp)?;
    let Sink { writer, users, .. } = sink;
    writer.close().map_err(bad)?;
    std::fs::rename(&tmp, out).map_err(BatchError::io(out))?;
    Ok(ExportSummary {
        users,
        columns: schema.fields().len(),
    })
}
