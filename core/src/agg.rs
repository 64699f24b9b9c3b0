//! The aggregate algebra: every feature keeps a [`Partial`] per time bucket,
//! and partials form a monoid under [`Aggregate::merge`] with
//! [`Aggregate::empty`] as identity. Speed, serving and batch all fold and
//! merge through this one implementation; the reference evaluator does not
//! (it recomputes from raw events), which is what makes it an oracle.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use datasketches::hll::{HllSketch, HllType, HllUnion};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Event;
use crate::spec::{Aggregate, Field, FieldValue, HLL_LG_K};

/// Orders events for `last`, `last_n`: event time, then event id, so the
/// result never depends on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub ts_ms: i64,
    pub event_id: String,
}

impl Stamp {
    pub fn of(e: &Event) -> Stamp {
        Stamp {
            ts_ms: e.ts_ms,
            event_id: e.event_id.clone(),
        }
    }
}

/// A single field value, owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

impl From<FieldValue<'_>> for Scalar {
    fn from(v: FieldValue<'_>) -> Scalar {
        match v {
            FieldValue::Int(i) => Scalar::Int(i),
            FieldValue::Str(s) => Scalar::Str(s.to_string()),
        }
    }
}

/// A distinct-count sketch (Apache DataSketches HLL, lg_k = [`HLL_LG_K`]).
#[derive(Clone, PartialEq)]
pub struct Sketch(HllSketch);

impl Sketch {
    pub fn new() -> Sketch {
        Sketch(HllSketch::new(HLL_LG_K, HllType::Hll8).expect("HLL_LG_K is within [4, 21]"))
    }

    pub fn update(&mut self, value: &str) {
        self.0.update(value);
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            *self = other.clone();
            return;
        }
        self.union(other);
    }

    /// [`Sketch::merge`], moving `other` in where it would be copied.
    pub fn merge_owned(&mut self, other: Sketch) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            *self = other;
            return;
        }
        self.union(&other);
    }

    fn union(&mut self, other: &Sketch) {
        let mut union = HllUnion::new(HLL_LG_K).expect("HLL_LG_K is within [4, 21]");
        union.update(&self.0);
        union.update(&other.0);
        self.0 = union.to_sketch(HllType::Hll8);
    }

    /// The order-independent estimate, rounded: the same set of buckets
    /// gives the same answer whichever layer merged them.
    pub fn estimate(&self) -> i64 {
        self.0.composite_estimate().round() as i64
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

impl fmt::Debug for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sketch(~{})", self.estimate())
    }
}

impl Serialize for Sketch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.serialize())
    }
}

impl<'de> Deserialize<'de> for Sketch {
    /// Straight from the deserializer's bytes (borrowed from the value
    /// being read, with postcard), without copying them first.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sketch, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Sketch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("sketch bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sketch, E> {
                HllSketch::deserialize(v).map(Sketch).map_err(E::custom)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The mergeable state of one feature over one bucket (or a merged range of
/// buckets). Variant order is part of the storage format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    Count(i64),
    Sum(i64),
    Min(Option<i64>),
    Max(Option<i64>),
    Avg {
        sum: i64,
        count: i64,
    },
    Last(Option<(Stamp, Scalar)>),
    /// Newest first, at most `n` entries; with `distinct`, one per value.
    LastN(Vec<(Stamp, String)>),
    /// Exact counts per value; `k` applies only when finishing.
    TopK(BTreeMap<String, i64>),
    Distinct(Sketch),
    FirstSeen(Option<i64>),
    LastSeen(Option<i64>),
}

impl Partial {
    /// The variant's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Partial::Count(_) => "count",
            Partial::Sum(_) => "sum",
            Partial::Min(_) => "min",
            Partial::Max(_) => "max",
            Partial::Avg { .. } => "avg",
            Partial::Last(_) => "last",
            Partial::LastN(_) => "last_n",
            Partial::TopK(_) => "top_k",
            Partial::Distinct(_) => "distinct_count",
            Partial::FirstSeen(_) => "first_seen",
            Partial::LastSeen(_) => "last_seen",
        }
    }
}

/// A feature's value at query time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<String>),
    Ranked(Vec<(String, i64)>),
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

/// Keeps the newest `n` entries of a newest-first list; with `distinct`,
/// only each value's newest entry.
fn trim_last_n(entries: &mut Vec<(Stamp, String)>, n: u32, distinct: bool) {
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    if distinct {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        entries.retain(|(_, v)| seen.insert(v.clone()));
    }
    entries.truncate(n as usize);
}

/// Adds one entry to a list [`trim_last_n`] left (newest first, at most
/// `n`, with `distinct` one per value), with the same result as pushing it
/// and trimming again, without re-sorting the list.
fn insert_last_n(
    entries: &mut Vec<(Stamp, String)>,
    ts_ms: i64,
    event_id: &str,
    v: &str,
    n: u32,
    distinct: bool,
) {
    // A stable sort newest first puts the new entry after every kept entry
    // at least as new.
    let at = entries.partition_point(|(s, _)| (s.ts_ms, s.event_id.as_str()) >= (ts_ms, event_id));
    if distinct && let Some(j) = entries.iter().position(|(_, x)| x == v) {
        if j < at {
            // The value's kept entry is at least as new.
            return;
        }
        entries.remove(j);
    }
    if at >= n as usize {
        return;
    }
    let stamp = Stamp {
        ts_ms,
        event_id: event_id.to_string(),
    };
    entries.insert(at, (stamp, v.to_string()));
    entries.truncate(n as usize);
}

impl Aggregate {
    /// The identity of [`Aggregate::merge`].
    pub fn empty(&self) -> Partial {
        match self {
            Aggregate::Count => Partial::Count(0),
            Aggregate::Sum(_) => Partial::Sum(0),
            Aggregate::Min(_) => Partial::Min(None),
            Aggregate::Max(_) => Partial::Max(None),
            Aggregate::Avg(_) => Partial::Avg { sum: 0, count: 0 },
            Aggregate::Last(_) => Partial::Last(None),
            Aggregate::LastN { .. } => Partial::LastN(Vec::new()),
            Aggregate::TopK { .. } => Partial::TopK(BTreeMap::new()),
            Aggregate::DistinctCount(_) => Partial::Distinct(Sketch::new()),
            Aggregate::FirstSeen => Partial::FirstSeen(None),
            Aggregate::LastSeen => Partial::LastSeen(None),
        }
    }

    /// Whether a partial has the shape this aggregate produces (that of
    /// [`Aggregate::empty`], without building one: every decoded partial
    /// is checked, and an empty sketch is an allocation).
    pub fn accepts(&self, p: &Partial) -> bool {
        matches!(
            (self, p),
            (Aggregate::Count, Partial::Count(_))
                | (Aggregate::Sum(_), Partial::Sum(_))
                | (Aggregate::Min(_), Partial::Min(_))
                | (Aggregate::Max(_), Partial::Max(_))
                | (Aggregate::Avg(_), Partial::Avg { .. })
                | (Aggregate::Last(_), Partial::Last(_))
                | (Aggregate::LastN { .. }, Partial::LastN(_))
                | (Aggregate::TopK { .. }, Partial::TopK(_))
                | (Aggregate::DistinctCount(_), Partial::Distinct(_))
                | (Aggregate::FirstSeen, Partial::FirstSeen(_))
                | (Aggregate::LastSeen, Partial::LastSeen(_))
        )
    }

    /// Folds one event (already known to pass the feature's filter) into a
    /// partial. An event without the aggregate's field is skipped.
    pub fn update(&self, p: &mut Partial, e: &Event) {
        let int = |f: &Field| f.get_int(e);
        match (self, p) {
            (Aggregate::Count, Partial::Count(c)) => *c += 1,
            (Aggregate::Sum(f), Partial::Sum(s)) => {
                if let Some(v) = int(f) {
                    *s = s.saturating_add(v);
                }
            }
            (Aggregate::Min(f), Partial::Min(m)) => *m = min_opt(*m, int(f)),
            (Aggregate::Max(f), Partial::Max(m)) => *m = max_opt(*m, int(f)),
            (Aggregate::Avg(f), Partial::Avg { sum, count }) => {
                if let Some(v) = int(f) {
                    *sum = sum.saturating_add(v);
                    *count += 1;
                }
            }
            (Aggregate::Last(f), Partial::Last(last)) => {
                if let Some(v) = f.get(e) {
                    let newer = match last {
                        Some((stamp, _)) => {
                            (e.ts_ms, e.event_id.as_str()) > (stamp.ts_ms, stamp.event_id.as_str())
                        }
                        None => true,
                    };
                    if newer {
                        *last = Some((Stamp::of(e), v.into()));
                    }
                }
            }
            (Aggregate::LastN { field, n, distinct }, Partial::LastN(entries)) => {
                if let Some(v) = field.get_str(e) {
                    insert_last_n(entries, e.ts_ms, &e.event_id, v, *n, *distinct);
                }
            }
            (Aggregate::TopK { field, .. }, Partial::TopK(counts)) => {
                if let Some(v) = field.get_str(e) {
                    match counts.get_mut(v) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(v.to_string(), 1);
                        }
                    }
                }
            }
            (Aggregate::DistinctCount(f), Partial::Distinct(sketch)) => {
                if let Some(v) = f.get_str(e) {
                    sketch.update(v);
                }
            }
            (Aggregate::FirstSeen, Partial::FirstSeen(t)) => *t = min_opt(*t, Some(e.ts_ms)),
            (Aggregate::LastSeen, Partial::LastSeen(t)) => *t = max_opt(*t, Some(e.ts_ms)),
            (agg, p) => panic!(
                "partial of kind {} cannot hold aggregate {} (callers check with accepts)",
                p.kind(),
                agg.name()
            ),
        }
    }

    /// Merges `other` into `into`. Associative, with [`Aggregate::empty`] as
    /// identity; commutative too, since ties are broken by event id.
    pub fn merge(&self, into: &mut Partial, other: &Partial) {
        match (self, into, other) {
            (Aggregate::Count, Partial::Count(a), Partial::Count(b)) => *a += b,
            (Aggregate::Sum(_), Partial::Sum(a), Partial::Sum(b)) => *a = a.saturating_add(*b),
            (Aggregate::Min(_), Partial::Min(a), Partial::Min(b)) => *a = min_opt(*a, *b),
            (Aggregate::Max(_), Partial::Max(a), Partial::Max(b)) => *a = max_opt(*a, *b),
            (
                Aggregate::Avg(_),
                Partial::Avg { sum, count },
                Partial::Avg { sum: s2, count: c2 },
            ) => {
                *sum = sum.saturating_add(*s2);
                *count += c2;
            }
            (Aggregate::Last(_), Partial::Last(a), Partial::Last(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|a| b.0 > a.0)
                {
                    *a = Some(b.clone());
                }
            }
            (Aggregate::LastN { n, distinct, .. }, Partial::LastN(a), Partial::LastN(b)) => {
                if !b.is_empty() {
                    a.extend(b.iter().cloned());
                    trim_last_n(a, *n, *distinct);
                }
            }
            (Aggregate::TopK { .. }, Partial::TopK(a), Partial::TopK(b)) => {
                for (v, c) in b {
                    *a.entry(v.clone()).or_insert(0) += c;
                }
            }
            (Aggregate::DistinctCount(_), Partial::Distinct(a), Partial::Distinct(b)) => a.merge(b),
            (Aggregate::FirstSeen, Partial::FirstSeen(a), Partial::FirstSeen(b)) => {
                *a = min_opt(*a, *b)
            }
            (Aggregate::LastSeen, Partial::LastSeen(a), Partial::LastSeen(b)) => {
                *a = max_opt(*a, *b)
            }
            (agg, a, b) => panic!(
                "cannot merge partials of kinds {} and {} for aggregate {} (callers check with accepts)",
                a.kind(),
                b.kind(),
                agg.name()
            ),
        }
    }

    /// [`Aggregate::merge`] of a partial the caller gives up: the same
    /// result, with its strings and sketches moved instead of copied.
    pub fn merge_owned(&self, into: &mut Partial, other: Partial) {
        match (self, into, other) {
            (Aggregate::Last(_), Partial::Last(a), Partial::Last(Some(b))) => {
                if a.as_ref().is_none_or(|a| b.0 > a.0) {
                    *a = Some(b);
                }
            }
            (Aggregate::LastN { n, distinct, .. }, Partial::LastN(a), Partial::LastN(b)) => {
                if !b.is_empty() {
                    a.extend(b);
                    trim_last_n(a, *n, *distinct);
                }
            }
            (Aggregate::TopK { .. }, Partial::TopK(a), Partial::TopK(b)) => {
                for (v, c) in b {
                    *a.entry(v).or_insert(0) += c;
                }
            }
            (Aggregate::DistinctCount(_), Partial::Distinct(a), Partial::Distinct(b)) => {
                a.merge_owned(b)
            }
            (agg, into, other) => agg.merge(into, &other),
        }
    }

    /// [`Aggregate::finish`] of a partial the caller gives up: the same
    /// value, with its strings moved instead of copied.
    pub fn finish_owned(&self, p: Partial) -> Option<FeatureValue> {
        match (self, p) {
            (_, Partial::Last(last)) => last.map(|(_, v)| match v {
                Scalar::Int(i) => FeatureValue::Int(i),
                Scalar::Str(s) => FeatureValue::Str(s),
            }),
            (_, Partial::LastN(entries)) => Some(FeatureValue::List(
                entries.into_iter().map(|(_, v)| v).collect(),
            )),
            (Aggregate::TopK { k, .. }, Partial::TopK(counts)) => {
                Some(FeatureValue::Ranked(rank(counts.into_iter().collect(), *k)))
            }
            (agg, p) => agg.finish(&p),
        }
    }

    /// The feature value of a (merged) partial; `None` when the aggregate has
    /// no value over no events (min, max, avg, last, first/last seen).
    pub fn finish(&self, p: &Partial) -> Option<FeatureValue> {
        match (self, p) {
            (_, Partial::Count(c)) => Some(FeatureValue::Int(*c)),
            (_, Partial::Sum(s)) => Some(FeatureValue::Int(*s)),
            (_, Partial::Min(m) | Partial::Max(m)) => m.map(FeatureValue::Int),
            (_, Partial::Avg { sum, count }) => {
                (*count > 0).then(|| FeatureValue::Float(*sum as f64 / *count as f64))
            }
            (_, Partial::Last(last)) => last.as_ref().map(|(_, v)| match v {
                Scalar::Int(i) => FeatureValue::Int(*i),
                Scalar::Str(s) => FeatureValue::Str(s.clone()),
            }),
            (_, Partial::LastN(entries)) => Some(FeatureValue::List(
                entries.iter().map(|(_, v)| v.clone()).collect(),
            )),
            (Aggregate::TopK { k, .. }, Partial::TopK(counts)) => Some(FeatureValue::Ranked(
                top_k(counts.iter().map(|(v, c)| (v.as_str(), *c)), *k),
            )),
            (_, Partial::TopK(_)) => None,
            (_, Partial::Distinct(s)) => Some(FeatureValue::Int(s.estimate())),
            (_, Partial::FirstSeen(t) | Partial::LastSeen(t)) => t.map(FeatureValue::Int),
        }
    }
}

/// The `k` largest counts, ties broken by value (ascending).
pub fn top_k<'a>(counts: impl IntoIterator<Item = (&'a str, i64)>, k: u32) -> Vec<(String, i64)> {
    rank(counts.into_iter().collect(), k)
        .into_iter()
        .map(|(v, c)| (v.to_string(), c))
        .collect()
}

/// The `k` largest positive counts of `counts`, largest first, ties broken
/// by value (ascending): [`top_k`]'s order, for borrowed or owned values.
fn rank<S: AsRef<str>>(mut counts: Vec<(S, i64)>, k: u32) -> Vec<(S, i64)> {
    counts.retain(|(_, c)| *c > 0);
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_ref().cmp(b.0.as_ref())));
    counts.truncate(k as usize);
    counts
}

/// Counts values, for callers that build top-k lists from raw values.
pub fn count_values<'a>(values: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, i64> {
    let mut counts = HashMap::new();
    for v in values {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `accepts` takes exactly the shape of each aggregate's own empty
    /// partial, and no other aggregate's.
    #[test]
    fn accepts_exactly_the_empty_partials_shape() {
        let f = || Field::Price;
        let all = [
            Aggregate::Count,
            Aggregate::Sum(f()),
            Aggregate::Min(f()),
            Aggregate::Max(f()),
            Aggregate::Avg(f()),
            Aggregate::Last(f()),
            Aggregate::LastN {
                field: f(),
                n: 3,
                distinct: true,
            },
            Aggregate::TopK { field: f(), k: 3 },
            Aggregate::DistinctCount(f()),
            Aggregate::FirstSeen,
            Aggregate::LastSeen,
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(
                    a.accepts(&b.empty()),
                    i == j,
                    "{} and {}",
                    a.name(),
                    b.name()
                );
            }
        }
    }

    proptest! {
        /// Inserting one entry at a time equals pushing it and trimming
        /// the whole list again, ties and repeated values included.
        #[test]
        fn insert_last_n_equals_push_and_trim(
            entries in proptest::collection::vec((0i64..6, 0u8..4, 0u8..5), 0..40),
            n in 0u32..6,
            distinct in any::<bool>(),
        ) {
            let mut fast: Vec<(Stamp, String)> = Vec::new();
            let mut slow = fast.clone();
            for (ts, id, v) in entries {
                let (id, v) = (format!("e{id}"), format!("v{v}"));
                insert_last_n(&mut fast, ts, &id, &v, n, distinct);
                slow.push((Stamp { ts_ms: ts, event_id: id }, v));
                trim_last_n(&mut slow, n, distinct);
                prop_assert_eq!(&fast, &slow);
            }
        }
    }
}
