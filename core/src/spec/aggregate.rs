//! What a feature computes and what it reads: [`Aggregate`] over a
//! [`Field`] of each event. The aggregate algebra over these
//! (`crate::agg`) and the parsed spec both build on this module.

use std::fmt;

use serde::Serialize;

use crate::event::Event;

/// Largest `k` / `n` a ranked or list feature may ask for.
pub const MAX_LIST_LEN: u32 = 1_000;

/// Precision of distinct-count sketches: 2^12 registers, relative standard
/// error about 1.6 %.
pub const HLL_LG_K: u8 = 12;

/// Which event field an aggregate or condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Field {
    ItemId,
    Category,
    Kind,
    /// `price_minor`, the unit price.
    Price,
    Quantity,
    /// `price_minor * quantity`.
    Revenue,
    /// `attr.<name>`: a free-form attribute.
    Attr(String),
}

/// A field's value on one event. Missing string fields (empty item id,
/// absent attribute) read as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldValue<'a> {
    Int(i64),
    Str(&'a str),
}

impl Field {
    pub fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "item_id" => Field::ItemId,
            "category" => Field::Category,
            "kind" => Field::Kind,
            "price" => Field::Price,
            "quantity" => Field::Quantity,
            "revenue" => Field::Revenue,
            _ => {
                let name = s.strip_prefix("attr.")?;
                if name.is_empty() {
                    return None;
                }
                Field::Attr(name.to_string())
            }
        })
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Field::Price | Field::Quantity | Field::Revenue)
    }

    /// Reads the field from an event.
    pub fn get<'a>(&self, e: &'a Event) -> Option<FieldValue<'a>> {
        let non_empty = |s: &'a str| (!s.is_empty()).then_some(FieldValue::Str(s));
        match self {
            Field::ItemId => non_empty(&e.item_id),
            Field::Category => non_empty(&e.category),
            Field::Kind => Some(FieldValue::Str(e.kind.as_str())),
            Field::Price => Some(FieldValue::Int(e.price_minor)),
            Field::Quantity => Some(FieldValue::Int(i64::from(e.quantity))),
            Field::Revenue => Some(FieldValue::Int(
                e.price_minor.saturating_mul(i64::from(e.quantity)),
            )),
            Field::Attr(name) => e.attributes.get(name).map(|v| FieldValue::Str(v)),
        }
    }

    /// Reads a numeric field (`None` for string fields).
    pub fn get_int(&self, e: &Event) -> Option<i64> {
        match self.get(e) {
            Some(FieldValue::Int(v)) => Some(v),
            _ => None,
        }
    }

    /// Reads a string field (`None` for numeric fields and missing values).
    pub fn get_str<'a>(&self, e: &'a Event) -> Option<&'a str> {
        match self.get(e) {
            Some(FieldValue::Str(v)) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::ItemId => f.write_str("item_id"),
            Field::Category => f.write_str("category"),
            Field::Kind => f.write_str("kind"),
            Field::Price => f.write_str("price"),
            Field::Quantity => f.write_str("quantity"),
            Field::Revenue => f.write_str("revenue"),
            Field::Attr(name) => write!(f, "attr.{name}"),
        }
    }
}

/// What a feature computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Aggregate {
    /// Number of matching events.
    Count,
    /// Sum of a numeric field (saturating at the i64 bounds).
    Sum(Field),
    Min(Field),
    Max(Field),
    /// Mean of a numeric field, as a float.
    Avg(Field),
    /// The field's value on the latest event (by event time, ties broken by
    /// event id).
    Last(Field),
    /// The field's values on the latest `n` events, newest first; with
    /// `distinct`, the latest `n` different values.
    LastN {
        field: Field,
        n: u32,
        distinct: bool,
    },
    /// The `k` most frequent values with their counts (ties: value order).
    TopK {
        field: Field,
        k: u32,
    },
    /// Approximate number of distinct values (HyperLogLog, lg_k =
    /// [`HLL_LG_K`]).
    DistinctCount(Field),
    /// Event time of the earliest matching event.
    FirstSeen,
    /// Event time of the latest matching event.
    LastSeen,
}

impl Aggregate {
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum(_) => "sum",
            Aggregate::Min(_) => "min",
            Aggregate::Max(_) => "max",
            Aggregate::Avg(_) => "avg",
            Aggregate::Last(_) => "last",
            Aggregate::LastN { .. } => "last_n",
            Aggregate::TopK { .. } => "top_k",
            Aggregate::DistinctCount(_) => "distinct_count",
            Aggregate::FirstSeen => "first_seen",
            Aggregate::LastSeen => "last_seen",
        }
    }

    /// The field the aggregate reads, if any.
    pub fn field(&self) -> Option<&Field> {
        match self {
            Aggregate::Count | Aggregate::FirstSeen | Aggregate::LastSeen => None,
            Aggregate::Sum(f)
            | Aggregate::Min(f)
            | Aggregate::Max(f)
            | Aggregate::Avg(f)
            | Aggregate::Last(f)
            | Aggregate::DistinctCount(f) => Some(f),
            Aggregate::LastN { field, .. } | Aggregate::TopK { field, .. } => Some(field),
        }
    }

    /// Whether values are approximate (compared within an error bound).
    pub fn is_approximate(&self) -> bool {
        matches!(self, Aggregate::DistinctCount(_))
    }
}
