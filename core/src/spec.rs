//! The feature spec: one TOML file that defines every feature.
//!
//! ```toml
//! [[feature]]
//! name = "spend_90d"
//! aggregate = "sum"          # count sum min max avg last last_n top_k
//!                            # distinct_count first_seen last_seen
//! field = "revenue"          # what the aggregate reads (see `Field`)
//! kinds = ["purchase"]       # which events; omitted = all kinds
//! where = [{ field = "attr.device", op = "eq", value = "mobile" }]
//! window = "90d"             # 1h 24h 7d 30d 90d ... or "lifetime"
//! bucket = "1d"              # optional; see docs/semantics.md
//! ```
//!
//! Parsing is strict: unknown keys, wrong types, impossible windows and
//! duplicate names are errors that name the feature, the key and the problem.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::event::{Event, EventKind};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// Largest `k` / `n` a ranked or list feature may ask for.
pub const MAX_LIST_LEN: u32 = 1_000;
/// Most buckets one window may span; bounds the work of one evaluation.
pub const MAX_BUCKETS_PER_WINDOW: i64 = 10_000;
/// Bucket sizes the default rule picks from (docs/semantics.md).
pub const STANDARD_BUCKETS_MS: [i64; 6] = [
    MINUTE_MS,
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    HOUR_MS,
    6 * HOUR_MS,
    DAY_MS,
];
/// The default rule aims for at least this many buckets per window, so the
/// trailing edge moves in steps of at most 1/24 of the window.
pub const TARGET_BUCKETS_PER_WINDOW: i64 = 24;

/// Precision of distinct-count sketches: 2^12 registers, relative standard
/// error about 1.6 %.
pub const HLL_LG_K: u8 = 12;

/// A spec problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The feature's name (or `#index` when it has none); `None` for
    /// file-level problems.
    pub feature: Option<String>,
    /// The offending key, dotted (`where[1].op`).
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(feature) = &self.feature {
            write!(f, "feature '{feature}': ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.problem)
    }
}

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

/// A literal in a condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Literal {
    Int(i64),
    Str(String),
}

impl Literal {
    fn matches(&self, v: FieldValue<'_>) -> bool {
        match (self, v) {
            (Literal::Int(a), FieldValue::Int(b)) => *a == b,
            (Literal::Str(a), FieldValue::Str(b)) => a == b,
            _ => false,
        }
    }
}

/// One `where` condition. A condition on a missing field is false, except
/// `missing` (and `exists`, which is false by definition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Condition {
    Eq(Field, Literal),
    Ne(Field, Literal),
    In(Field, Vec<Literal>),
    NotIn(Field, Vec<Literal>),
    Gt(Field, i64),
    Gte(Field, i64),
    Lt(Field, i64),
    Lte(Field, i64),
    Exists(Field),
    Missing(Field),
}

impl Condition {
    pub fn field(&self) -> &Field {
        match self {
            Condition::Eq(f, _)
            | Condition::Ne(f, _)
            | Condition::In(f, _)
            | Condition::NotIn(f, _)
            | Condition::Gt(f, _)
            | Condition::Gte(f, _)
            | Condition::Lt(f, _)
            | Condition::Lte(f, _)
            | Condition::Exists(f)
            | Condition::Missing(f) => f,
        }
    }

    pub fn matches(&self, e: &Event) -> bool {
        let Some(v) = self.field().get(e) else {
            return matches!(self, Condition::Missing(_));
        };
        let int = || match v {
            FieldValue::Int(i) => i,
            FieldValue::Str(_) => unreachable!("validated: numeric ops take numeric fields"),
        };
        match self {
            Condition::Eq(_, lit) => lit.matches(v),
            Condition::Ne(_, lit) => !lit.matches(v),
            Condition::In(_, lits) => lits.iter().any(|l| l.matches(v)),
            Condition::NotIn(_, lits) => !lits.iter().any(|l| l.matches(v)),
            Condition::Gt(_, x) => int() > *x,
            Condition::Gte(_, x) => int() >= *x,
            Condition::Lt(_, x) => int() < *x,
            Condition::Lte(_, x) => int() <= *x,
            Condition::Exists(_) => true,
            Condition::Missing(_) => false,
        }
    }
}

/// Which events a feature sees: any of `kinds` (all when empty) and every
/// condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Filter {
    pub kinds: Vec<EventKind>,
    pub conditions: Vec<Condition>,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.conditions.iter().all(|c| c.matches(e))
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

/// The time range a feature covers at query time; see docs/semantics.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Window {
    /// Window length in ms; `None` for lifetime.
    pub len_ms: Option<i64>,
    /// Bucket size in ms; partials are kept per bucket.
    pub bucket_ms: i64,
}

impl Window {
    /// Bucket index of an event time: `floor(ts / bucket)`.
    pub fn bucket_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.bucket_ms)
    }

    /// The inclusive range of bucket indexes the window covers at query time
    /// `t`: the bucket holding `t` and the `N - 1` before it, where
    /// `N = len / bucket`; lifetime covers every bucket up to `t`'s.
    pub fn buckets_at(&self, t_ms: i64) -> (i64, i64) {
        let last = self.bucket_of(t_ms);
        match self.len_ms {
            Some(len) => (last - (len / self.bucket_ms) + 1, last),
            None => (i64::MIN, last),
        }
    }

    /// The half-open event-time range `[from, until)` the window covers at
    /// `t` (what the reference evaluator filters on).
    pub fn time_range_at(&self, t_ms: i64) -> (i64, i64) {
        let (first, last) = self.buckets_at(t_ms);
        let from = if first == i64::MIN {
            i64::MIN
        } else {
            first * self.bucket_ms
        };
        (from, (last + 1) * self.bucket_ms)
    }
}

/// One named feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub name: String,
    pub aggregate: Aggregate,
    pub filter: Filter,
    pub window: Window,
}

/// A validated set of features, and the segments defined over them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub features: Vec<Feature>,
    /// Evaluated on served profiles; not part of [`FeatureSpec::hash`].
    pub segments: Vec<crate::segment::Segment>,
    hash: String,
    /// Feature index by name (built once: read paths look names up for
    /// every stored entry; foldhash: a fixed map of the spec's own names,
    /// which no input can grow).
    by_name: std::collections::HashMap<String, usize, foldhash::fast::FixedState>,
    /// Per event kind (in [`EventKind::ALL`] order), the indexes of the
    /// features whose kind filter admits it: folds skip the others without
    /// looking at them.
    by_kind: [Vec<usize>; EventKind::ALL.len()],
}

impl FeatureSpec {
    /// Parses and validates a spec from TOML text.
    pub fn parse(text: &str) -> Result<FeatureSpec, SpecError> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| SpecError {
            feature: None,
            key: None,
            problem: format!("invalid TOML: {}", e.to_string().trim_end()),
        })?;
        let file_err = |key: &str, problem: String| SpecError {
            feature: None,
            key: Some(key.to_string()),
            problem,
        };
        let mut features = Vec::new();
        for (key, value) in &table {
            match key.as_str() {
                "feature" => {
                    let Value::Array(items) = value else {
                        return Err(file_err(
                            "feature",
                            "expected an array of tables ([[feature]])".into(),
                        ));
                    };
                    for (i, item) in items.iter().enumerate() {
                        let Value::Table(t) = item else {
                            return Err(file_err(
                                "feature",
                                format!("entry #{} is not a table", i + 1),
                            ));
                        };
                        features.push(parse_feature(i, t)?);
                    }
                }
                "segment" => {}
                other => {
                    return Err(file_err(
                        other,
                        "unknown top-level key (expected [[feature]] and [[segment]] tables)"
                            .into(),
                    ));
                }
            }
        }
        let mut spec = FeatureSpec::new(features)?;
        if let Some(segments) = table.get("segment") {
            spec.segments = crate::segment::parse_segments(segments, &spec.features)?;
        }
        Ok(spec)
    }

    /// Builds a spec from already-typed features (checks names are unique).
    pub fn new(features: Vec<Feature>) -> Result<FeatureSpec, SpecError> {
        if features.is_empty() {
            return Err(SpecError {
                feature: None,
                key: Some("feature".into()),
                problem: "the spec defines no features".into(),
            });
        }
        let mut seen = BTreeSet::new();
        for f in &features {
            if !seen.insert(f.name.as_str()) {
                return Err(SpecError {
                    feature: Some(f.name.clone()),
                    key: Some("name".into()),
                    problem: "defined more than once".into(),
                });
            }
        }
        let canonical = postcard::to_allocvec(&features).map_err(|e| SpecError {
            feature: None,
            key: None,
            problem: format!("cannot encode spec for hashing: {e}"),
        })?;
        let digest = Sha256::digest(&canonical);
        let hash = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let by_name = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let by_kind = EventKind::ALL.map(|kind| {
            features
                .iter()
                .enumerate()
                .filter(|(_, f)| f.filter.kinds.is_empty() || f.filter.kinds.contains(&kind))
                .map(|(i, _)| i)
                .collect()
        });
        Ok(FeatureSpec {
            features,
            segments: Vec::new(),
            hash,
            by_name,
            by_kind,
        })
    }

    /// A short, stable hash of the spec's meaning (not its formatting).
    /// Batch views record it so that views and speed state built from
    /// different specs are never mixed.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.feature_index(name).map(|i| &self.features[i])
    }

    /// The indexes (ascending) of the features an event of `kind` may
    /// match: the rest have a kind filter excluding it. The caller still
    /// checks each one's [`Filter::matches`] for its `where` conditions.
    pub fn features_for(&self, kind: EventKind) -> &[usize] {
        let at = EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("ALL lists every kind");
        &self.by_kind[at]
    }

    /// The position of the named feature in `features`.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// Parses `90d`, `24h`, `15m`, `2w` into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 15m, 24h, 7d or 2w"))?;
    let unit_ms = match unit {
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => WEEK_MS,
        _ => {
            return Err(format!(
                "'{s}' has unit '{unit}'; use m (minutes), h, d or w"
            ));
        }
    };
    if n <= 0 {
        return Err(format!("'{s}' must be positive"));
    }
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= 100 * 365 * DAY_MS)
        .ok_or_else(|| format!("'{s}' is longer than 100 years"))
}

/// Formats milliseconds in the largest whole unit (`7d`, `90m`).
pub fn format_duration(ms: i64) -> String {
    for (unit, size) in [
        ("w", WEEK_MS),
        ("d", DAY_MS),
        ("h", HOUR_MS),
        ("m", MINUTE_MS),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The default bucket for a window: the largest standard size that divides
/// it into at least [`TARGET_BUCKETS_PER_WINDOW`] buckets; failing that, the
/// smallest standard size that divides it.
pub fn default_bucket(len_ms: Option<i64>) -> Option<i64> {
    let Some(len) = len_ms else {
        return Some(DAY_MS);
    };
    STANDARD_BUCKETS_MS
        .iter()
        .rev()
        .find(|&&b| len % b == 0 && len / b >= TARGET_BUCKETS_PER_WINDOW)
        .or_else(|| STANDARD_BUCKETS_MS.iter().find(|&&b| len % b == 0))
        .copied()
}

/// Reads typed keys from one `[[feature]]` table and rejects unknown ones.
struct Keys<'a> {
    feature: String,
    table: &'a Table,
    used: BTreeSet<&'static str>,
}

impl<'a> Keys<'a> {
    fn err(&self, key: &str, problem: impl Into<String>) -> SpecError {
        SpecError {
            feature: Some(self.feature.clone()),
            key: Some(key.to_string()),
            problem: problem.into(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.table.get(key)
    }

    fn opt_str(&mut self, key: &'static str) -> Result<Option<&'a str>, SpecError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.err(key, format!("expected a string, got {}", other.type_str())))
            }
        }
    }

    fn str(&mut self, key: &'static str) -> Result<&'a str, SpecError> {
        self.opt_str(key)?
            .ok_or_else(|| self.err(key, "required but missing"))
    }

    fn opt_u32(&mut self, key: &'static str, max: u32) -> Result<Option<u32>, SpecError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if (1..=i64::from(max)).contains(i) => Ok(Some(*i as u32)),
            Some(Value::Integer(i)) => Err(self.err(key, format!("{i} is outside 1..={max}"))),
            Some(other) => Err(self.err(
                key,
                format!("expected an integer, got {}", other.type_str()),
            )),
        }
    }

    fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, SpecError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(
                key,
                format!("expected true or false, got {}", other.type_str()),
            )),
        }
    }

    fn finish(&self) -> Result<(), SpecError> {
        for key in self.table.keys() {
            if !self.used.contains(key.as_str()) {
                return Err(self.err(
                    key,
                    "unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)",
                ));
            }
        }
        Ok(())
    }
}

fn parse_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' must be 1-64 characters of a-z, 0-9 and _, starting with a letter"
        ))
    }
}

fn parse_feature(index: usize, table: &Table) -> Result<Feature, SpecError> {
    let label = match table.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => format!("#{}", index + 1),
    };
    let mut keys = Keys {
        feature: label,
        table,
        used: BTreeSet::new(),
    };
    let name = keys.str("name")?.to_string();
    parse_name(&name).map_err(|p| keys.err("name", p))?;

    let field = match keys.opt_str("field")? {
        None => None,
        Some(s) => Some(Field::parse(s).ok_or_else(|| {
            keys.err(
                "field",
                format!("unknown field '{s}' (expected item_id, category, kind, price, quantity, revenue or attr.<name>)"),
            )
        })?),
    };
    let agg_name = keys.str("aggregate")?;
    let k = keys.opt_u32("k", MAX_LIST_LEN)?;
    let n = keys.opt_u32("n", MAX_LIST_LEN)?;
    let distinct = keys.opt_bool("distinct")?;

    let needs = |keys: &Keys<'_>, what: &str| -> Result<Field, SpecError> {
        field.clone().ok_or_else(|| {
            keys.err(
                "field",
                format!("aggregate '{agg_name}' needs a {what} field"),
            )
        })
    };
    let numeric = |keys: &Keys<'_>| -> Result<Field, SpecError> {
        let f = needs(keys, "numeric")?;
        if f.is_numeric() {
            Ok(f)
        } else {
            Err(keys.err(
                "field",
                format!("aggregate '{agg_name}' needs a numeric field (price, quantity, revenue), got '{f}'"),
            ))
        }
    };
    let string = |keys: &Keys<'_>| -> Result<Field, SpecError> {
        let f = needs(keys, "string")?;
        if f.is_numeric() {
            Err(keys.err(
                "field",
                format!("aggregate '{agg_name}' needs a string field (item_id, category, kind, attr.<name>), got '{f}'"),
            ))
        } else {
            Ok(f)
        }
    };
    let no_field = |keys: &Keys<'_>| -> Result<(), SpecError> {
        match &field {
            Some(f) => Err(keys.err(
                "field",
                format!("aggregate '{agg_name}' takes no field, got '{f}'"),
            )),
            None => Ok(()),
        }
    };
    let aggregate = match agg_name {
        "count" => {
            no_field(&keys)?;
            Aggregate::Count
        }
        "sum" => Aggregate::Sum(numeric(&keys)?),
        "min" => Aggregate::Min(numeric(&keys)?),
        "max" => Aggregate::Max(numeric(&keys)?),
        "avg" => Aggregate::Avg(numeric(&keys)?),
        "last" => Aggregate::Last(needs(&keys, "")?),
        "last_n" => Aggregate::LastN {
            field: string(&keys)?,
            n: n.ok_or_else(|| keys.err("n", "aggregate 'last_n' needs n"))?,
            distinct: distinct.unwrap_or(true),
        },
        "top_k" => Aggregate::TopK {
            field: string(&keys)?,
            k: k.ok_or_else(|| keys.err("k", "aggregate 'top_k' needs k"))?,
        },
        "distinct_count" => Aggregate::DistinctCount(string(&keys)?),
        "first_seen" => {
            no_field(&keys)?;
            Aggregate::FirstSeen
        }
        "last_seen" => {
            no_field(&keys)?;
            Aggregate::LastSeen
        }
        other => {
            return Err(keys.err(
                "aggregate",
                format!("unknown aggregate '{other}' (expected count, sum, min, max, avg, last, last_n, top_k, distinct_count, first_seen, last_seen)"),
            ));
        }
    };
    if k.is_some() && !matches!(aggregate, Aggregate::TopK { .. }) {
        return Err(keys.err("k", "only top_k takes k"));
    }
    if n.is_some() && !matches!(aggregate, Aggregate::LastN { .. }) {
        return Err(keys.err("n", "only last_n takes n"));
    }
    if distinct.is_some() && !matches!(aggregate, Aggregate::LastN { .. }) {
        return Err(keys.err("distinct", "only last_n takes distinct"));
    }

    let kinds = match keys.get("kinds") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut kinds = Vec::new();
            for item in items {
                let kind = item
                    .as_str()
                    .and_then(EventKind::parse)
                    .ok_or_else(|| {
                        keys.err(
                            "kinds",
                            format!("{item:?} is not an event kind (expected view, click, add_to_cart, purchase, search)"),
                        )
                    })?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            if kinds.is_empty() {
                return Err(keys.err("kinds", "empty list; omit the key to match every kind"));
            }
            kinds.sort();
            kinds
        }
        Some(other) => {
            return Err(keys.err(
                "kinds",
                format!("expected a list of kinds, got {}", other.type_str()),
            ));
        }
    };
    let conditions = match keys.get("where") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_condition(&keys, i, item))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(keys.err(
                "where",
                format!("expected a list of conditions, got {}", other.type_str()),
            ));
        }
    };

    let window_text = keys.str("window")?;
    let len_ms = if window_text == "lifetime" {
        None
    } else {
        Some(parse_duration(window_text).map_err(|p| keys.err("window", p))?)
    };
    let bucket_ms = match keys.opt_str("bucket")? {
        Some(b) => parse_duration(b).map_err(|p| keys.err("bucket", p))?,
        None => default_bucket(len_ms).ok_or_else(|| {
            keys.err(
                "bucket",
                format!("no standard bucket divides window '{window_text}'; set bucket explicitly"),
            )
        })?,
    };
    if let Some(len) = len_ms {
        if len % bucket_ms != 0 {
            return Err(keys.err(
                "bucket",
                format!(
                    "{} does not divide the window {window_text} evenly",
                    format_duration(bucket_ms)
                ),
            ));
        }
        if len / bucket_ms > MAX_BUCKETS_PER_WINDOW {
            return Err(keys.err(
                "bucket",
                format!(
                    "{} buckets per window; at most {MAX_BUCKETS_PER_WINDOW}",
                    len / bucket_ms
                ),
            ));
        }
    }
    keys.finish()?;
    Ok(Feature {
        name,
        aggregate,
        filter: Filter { kinds, conditions },
        window: Window { len_ms, bucket_ms },
    })
}

fn parse_literal(v: &Value) -> Option<Literal> {
    match v {
        Value::String(s) => Some(Literal::Str(s.clone())),
        Value::Integer(i) => Some(Literal::Int(*i)),
        _ => None,
    }
}

fn parse_condition(keys: &Keys<'_>, i: usize, item: &Value) -> Result<Condition, SpecError> {
    let at = |k: &str| format!("where[{i}].{k}");
    let Value::Table(t) = item else {
        return Err(keys.err(
            &format!("where[{i}]"),
            "expected a table like { field = \"category\", op = \"eq\", value = \"shoes\" }",
        ));
    };
    for k in t.keys() {
        if !["field", "op", "value", "values"].contains(&k.as_str()) {
            return Err(keys.err(&at(k), "unknown key (expected field, op, value, values)"));
        }
    }
    let field_text = t
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| keys.err(&at("field"), "required string"))?;
    let field = Field::parse(field_text)
        .ok_or_else(|| keys.err(&at("field"), format!("unknown field '{field_text}'")))?;
    let op = t
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| keys.err(&at("op"), "required string"))?;
    let typed = |lit: Literal| -> Result<Literal, SpecError> {
        match (&lit, field.is_numeric()) {
            (Literal::Int(_), true) | (Literal::Str(_), false) => Ok(lit),
            _ => Err(keys.err(
                &at("value"),
                format!("{lit:?} does not have the type of field '{field}'"),
            )),
        }
    };
    let value = || -> Result<Literal, SpecError> {
        let v = t
            .get("value")
            .ok_or_else(|| keys.err(&at("value"), format!("op '{op}' needs a value")))?;
        typed(
            parse_literal(v)
                .ok_or_else(|| keys.err(&at("value"), "expected a string or an integer"))?,
        )
    };
    let values = || -> Result<Vec<Literal>, SpecError> {
        let Some(Value::Array(items)) = t.get("values") else {
            return Err(keys.err(&at("values"), format!("op '{op}' needs a list of values")));
        };
        if items.is_empty() {
            return Err(keys.err(&at("values"), "empty list"));
        }
        items
            .iter()
            .map(|v| {
                typed(
                    parse_literal(v)
                        .ok_or_else(|| keys.err(&at("values"), "expected strings or integers"))?,
                )
            })
            .collect()
    };
    let bound = || -> Result<i64, SpecError> {
        if !field.is_numeric() {
            return Err(keys.err(
                &at("op"),
                format!("op '{op}' needs a numeric field, got '{field}'"),
            ));
        }
        match t.get("value") {
            Some(Value::Integer(i)) => Ok(*i),
            _ => Err(keys.err(&at("value"), format!("op '{op}' needs an integer value"))),
        }
    };
    Ok(match op {
        "eq" => Condition::Eq(field.clone(), value()?),
        "ne" => Condition::Ne(field.clone(), value()?),
        "in" => Condition::In(field.clone(), values()?),
        "not_in" => Condition::NotIn(field.clone(), values()?),
        "gt" => Condition::Gt(field.clone(), bound()?),
        "gte" => Condition::Gte(field.clone(), bound()?),
        "lt" => Condition::Lt(field.clone(), bound()?),
        "lte" => Condition::Lte(field.clone(), bound()?),
        "exists" => Condition::Exists(field.clone()),
        "missing" => Condition::Missing(field.clone()),
        other => {
            return Err(keys.err(
                &at("op"),
                format!("unknown op '{other}' (expected eq, ne, in, not_in, gt, gte, lt, lte, exists, missing)"),
            ));
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        FeatureSpec::parse(text)
            .expect_err("spec should be rejected")
            .to_string()
    }

    #[test]
    fn features_for_a_kind_are_those_its_filter_admits() {
        let spec = FeatureSpec::parse(
            "[[feature]]\nname = \"any\"\naggregate = \"count\"\nwindow = \"7d\"\n\
             [[feature]]\nname = \"views\"\naggregate = \"count\"\nkinds = [\"view\"]\nwindow = \"7d\"\n\
             [[feature]]\nname = \"buys\"\naggregate = \"count\"\nkinds = [\"purchase\", \"view\"]\nwindow = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(spec.features_for(EventKind::View), &[0, 1, 2]);
        assert_eq!(spec.features_for(EventKind::Purchase), &[0, 2]);
        assert_eq!(spec.features_for(EventKind::Search), &[0]);
    }

    #[test]
    fn default_buckets_follow_the_rule() {
        let b =
            |w: &str| format_duration(default_bucket(Some(parse_duration(w).unwrap())).unwrap());
        assert_eq!(b("1h"), "1m");
        assert_eq!(b("24h"), "1h");
        assert_eq!(b("7d"), "6h");
        assert_eq!(b("30d"), "1d");
        assert_eq!(b("90d"), "1d");
        assert_eq!(b("2h"), "5m");
        assert_eq!(b("10m"), "1m");
        assert_eq!(default_bucket(None), Some(DAY_MS));
    }

    #[test]
    fn window_ranges_are_bucket_aligned() {
        let w = Window {
            len_ms: Some(DAY_MS),
            bucket_ms: HOUR_MS,
        };
        let t = 10 * DAY_MS + 90 * MINUTE_MS; // 01:30 on day 10
        assert_eq!(
            w.time_range_at(t),
            (9 * DAY_MS + 2 * HOUR_MS, 10 * DAY_MS + 2 * HOUR_MS)
        );
        let life = Window {
            len_ms: None,
            bucket_ms: DAY_MS,
        };
        assert_eq!(life.time_range_at(t), (i64::MIN, 11 * DAY_MS));
    }

    #[test]
    fn errors_name_feature_key_and_problem() {
        assert_eq!(
            err("[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7x\"\n"),
            "feature 'v': key 'window': '7x' has unit 'x'; use m (minutes), h, d or w"
        );
        assert_eq!(
            err(
                "[[feature]]\nname = \"v\"\naggregate = \"sum\"\nfield = \"category\"\nwindow = \"7d\"\n"
            ),
            "feature 'v': key 'field': aggregate 'sum' needs a numeric field (price, quantity, revenue), got 'category'"
        );
        assert!(
            err("[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\ncolour = 1\n")
                .starts_with("feature 'v': key 'colour': unknown key")
        );
        assert!(
            err("[[feature]]\naggregate = \"count\"\nwindow = \"7d\"\n")
                .starts_with("feature '#1': key 'name': required")
        );
        assert!(err("[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\nbucket = \"5h\"\n")
            .contains("does not divide"));
        assert!(err("[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\nwhere = [{ field = \"price\", op = \"eq\", value = \"x\" }]\n")
            .starts_with("feature 'v': key 'where[0].value'"));
        let dup = "[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\n";
        assert_eq!(
            err(&format!("{dup}{dup}")),
            "feature 'v': key 'name': defined more than once"
        );
        assert!(err("nonsense = [").starts_with("invalid TOML"));
        assert!(err("x = 1").starts_with("key 'x': unknown top-level key"));
    }

    #[test]
    fn hash_ignores_formatting_but_not_meaning() {
        let a = FeatureSpec::parse(
            "[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\n",
        )
        .unwrap();
        let b = FeatureSpec::parse(
            "[[feature]]\nwindow = \"168h\"  # same\naggregate = \"count\"\nname = \"v\"\n",
        )
        .unwrap();
        let c = FeatureSpec::parse(
            "[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"8d\"\nbucket = \"6h\"\n",
        )
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}
