//! One feature: its [`Aggregate`], the [`Filter`] choosing its events and
//! the [`Window`] it covers at query time.

use serde::Serialize;

use super::aggregate::{Aggregate, Field, FieldValue};
use crate::event::{Event, EventKind};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::duration::{DAY_MS, HOUR_MS, MINUTE_MS};

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
}
