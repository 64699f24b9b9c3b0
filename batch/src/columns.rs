//! Typed access to the columns of the archive as DataFusion hands them over
//! (strings may arrive as `Utf8`, `LargeUtf8` or `Utf8View`).

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, Int32Array, Int64Array, MapArray, RecordBatch};
use weft_core::{Event, EventKind};

use crate::{BatchError, Result};

/// A string column of any of Arrow's string layouts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StrCol<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> StrCol<'a> {
    pub(crate) fn new(array: &'a dyn Array, name: &str) -> Result<StrCol<'a>> {
        if let Some(a) = array.as_string_opt::<i32>() {
            Ok(StrCol::Utf8(a))
        } else if let Some(a) = array.as_string_opt::<i64>() {
            Ok(StrCol::Large(a))
        } else if let Some(a) = array.as_string_view_opt() {
            Ok(StrCol::View(a))
        } else {
            Err(wrong_type(name, array))
        }
    }

    #[inline]
    pub(crate) fn value(&self, row: usize) -> &'a str {
        match self {
            StrCol::Utf8(a) => a.value(row),
            StrCol::Large(a) => a.value(row),
            StrCol::View(a) => a.value(row),
        }
    }
}

fn wrong_type(name: &str, array: &dyn Array) -> BatchError {
    BatchError::BadFile {
        file: "archive".into(),
        problem: format!("column '{name}' has type {}", array.data_type()),
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| BatchError::BadFile {
            file: "archive".into(),
            problem: format!("column '{name}' is missing from the scan"),
        })
}

/// The columns of one scanned batch, ready to be read row by row into a
/// reused [`Event`].
#[derive(Debug)]
pub(crate) struct EventColumns<'a> {
    pub(crate) tenant: StrCol<'a>,
    pub(crate) user_id: StrCol<'a>,
    pub(crate) event_id: StrCol<'a>,
    pub(crate) ts_ms: &'a Int64Array,
    pub(crate) kind: StrCol<'a>,
    pub(crate) item_id: StrCol<'a>,
    pub(crate) category: StrCol<'a>,
    pub(crate) price_minor: &'a Int64Array,
    pub(crate) quantity: &'a Int32Array,
    pub(crate) partition: &'a Int32Array,
    pub(crate) offset: &'a Int64Array,
    /// Absent when the spec reads no attribute (projection pushdown).
    attributes: Option<(&'a MapArray, StrCol<'a>, StrCol<'a>)>,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Result<EventColumns<'a>> {
        let str_col = |name: &str| StrCol::new(column(batch, name)?, name);
        let i64_col = |name: &str| -> Result<&'a Int64Array> {
            let c = column(batch, name)?;
            c.as_primitive_opt::<Int64Type>()
                .ok_or_else(|| wrong_type(name, c))
        };
        let i32_col = |name: &str| -> Result<&'a Int32Array> {
            let c = column(batch, name)?;
            c.as_primitive_opt::<Int32Type>()
                .ok_or_else(|| wrong_type(name, c))
        };
        let attributes = match batch.column_by_name("attributes") {
            None => None,
            Some(c) => {
                let map = c.as_map_opt().ok_or_else(|| wrong_type("attributes", c))?;
                let keys = StrCol::new(map.keys().as_ref(), "attributes.key")?;
                let values = StrCol::new(map.values().as_ref(), "attributes.value")?;
                Some((map, keys, values))
            }
        };
        Ok(EventColumns {
            tenant: str_col("tenant")?,
            user_id: str_col("user_id")?,
            event_id: str_col("event_id")?,
            ts_ms: i64_col("ts_ms")?,
            kind: str_col("kind")?,
            item_id: str_col("item_id")?,
            category: str_col("category")?,
            price_minor: i64_col("price_minor")?,
            quantity: i32_col("quantity")?,
            partition: i32_col("_partition")?,
            offset: i64_col("_offset")?,
            attributes,
        })
    }

    /// Overwrites `e` with row `row`, reusing its string buffers. The
    /// tenant and user are left to the caller (they change rarely in sorted
    /// input). Fails on a kind no event can have.
    pub(crate) fn fill(&self, row: usize, e: &mut Event) -> Result<()> {
        fn set(s: &mut String, v: &str) {
            s.clear();
            s.push_str(v);
        }
        set(&mut e.event_id, self.event_id.value(row));
        e.ts_ms = self.ts_ms.value(row);
        e.kind = self.kind(row)?;
        set(&mut e.item_id, self.item_id.value(row));
        set(&mut e.category, self.category.value(row));
        e.price_minor = self.price_minor.value(row);
        e.quantity = self.quantity.value(row);
        e.attributes.clear();
        if let Some((map, keys, values)) = &self.attributes {
            let offsets = map.value_offsets();
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            e.attributes = (from..to)
                .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
                .collect::<BTreeMap<_, _>>();
        }
        Ok(())
    }

    /// The row's kind; fails on a kind no event can have.
    pub(crate) fn kind(&self, row: usize) -> Result<EventKind> {
        let kind = self.kind.value(row);
        EventKind::parse(kind).ok_or_else(|| BatchError::BadFile {
            file: "archive".into(),
            problem: format!(
                "event '{}' of {}/{} has unknown kind '{kind}'",
                self.event_id.value(row),
                self.tenant.value(row),
                self.user_id.value(row)
            ),
        })
    }

    /// Appends the row's attributes with [`push_attribute`], in key order
    /// (the last value of a repeated key wins, as in [`Self::fill`]).
    pub(crate) fn push_attributes(&self, row: usize, out: &mut String) {
        if let Some((map, keys, values)) = &self.attributes {
            let offsets = map.value_offsets();
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            let sorted = (from..to).is_sorted_by(|&a, &b| keys.value(a) < keys.value(b));
            if sorted {
                for i in from..to {
                    push_attribute(out, keys.value(i), values.value(i));
                }
            } else {
                let pairs: BTreeMap<&str, &str> = (from..to)
                    .map(|i| (keys.value(i), values.value(i)))
                    .collect();
                for (k, v) in pairs {
                    push_attribute(out, k, v);
                }
            }
        }
    }
}

/// Appends one attribute of a row as `len:key` `len:value` (decimal byte
/// lengths), pairs in key order.
pub(crate) fn push_attribute(out: &mut String, key: &str, value: &str) {
    use std::fmt::Write;
    for s in [key, value] {
        let _ = write!(out, "{}:", s.len());
        out.push_str(s);
    }
}
