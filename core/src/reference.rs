//! The reference evaluator: the oracle every correctness test compares
//! against. It is deliberately plain: drop repeated event ids, keep the
//! events the feature's filter passes whose time lies in the window's range
//! at `t`, and compute the aggregate directly from that list. It shares the
//! spec, the filter and the window arithmetic with the rest of Weft, but none
//! of the partial/merge machinery, so a bug there cannot hide here.

use std::collections::HashSet;

use crate::agg::{FeatureValue, count_values, top_k};
use crate::eval::Profile;
use crate::event::Event;
use crate::generator::Sequenced;
use crate::spec::{Aggregate, Feature, FeatureSpec};

/// Drops events whose `event_id` was already seen; the first occurrence in
/// the given (consumption) order wins.
pub fn dedup<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<&'a Event> {
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter(|e| seen.insert(e.event_id.as_str()))
        .collect()
}

/// Every feature's value for one user at query time `t`, from all of that
/// user's consumed events in consumption order.
pub fn evaluate(spec: &FeatureSpec, events: &[Event], t_ms: i64) -> Profile {
    let events = dedup(events);
    let mut profile = Profile::new();
    for feature in &spec.features {
        if let Some(v) = evaluate_feature(feature, &events, t_ms) {
            profile.insert(feature.name.clone(), v);
        }
    }
    profile
}

/// Point in time ("as of t, known at t", docs/semantics.md): every
/// feature's value for one user as the platform knew it at `t_ms`. Only
/// the events with event time ≤ `t_ms` *and* arrival (`ingest_ms`) ≤ `t_ms`
/// count; duplicates are dropped among those, the first in offset order
/// winning; the windows are those at `t_ms`. `events` is the user's
/// records in consumption (offset) order.
pub fn evaluate_known_at(spec: &FeatureSpec, events: &[Sequenced], t_ms: i64) -> Profile {
    let known: Vec<Event> = events
        .iter()
        .filter(|s| s.event.ts_ms <= t_ms && s.ingest_ms <= t_ms)
        .map(|s| s.event.clone())
        .collect();
    evaluate(spec, &known, t_ms)
}

/// One feature's value at `t` over already deduplicated events.
pub fn evaluate_feature(feature: &Feature, events: &[&Event], t_ms: i64) -> Option<FeatureValue> {
    let (from, until) = feature.window.time_range_at(t_ms);
    let selected: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| from <= e.ts_ms && e.ts_ms < until && feature.filter.matches(e))
        .collect();
    let ints = |f: &crate::spec::Field| -> Vec<i64> {
        selected.iter().filter_map(|e| f.get_int(e)).collect()
    };
    let strs = |f: &crate::spec::Field| -> Vec<&str> {
        selected.iter().filter_map(|e| f.get_str(e)).collect()
    };
    match &feature.aggregate {
        Aggregate::Count => Some(FeatureValue::Int(selected.len() as i64)),
        Aggregate::Sum(f) => Some(FeatureValue::Int(
            ints(f).into_iter().fold(0i64, i64::saturating_add),
        )),
        Aggregate::Min(f) => ints(f).into_iter().min().map(FeatureValue::Int),
        Aggregate::Max(f) => ints(f).into_iter().max().map(FeatureValue::Int),
        Aggregate::Avg(f) => {
            let values = ints(f);
            let sum = values.iter().copied().fold(0i64, i64::saturating_add);
            (!values.is_empty()).then(|| FeatureValue::Float(sum as f64 / values.len() as f64))
        }
        Aggregate::Last(f) => selected
            .iter()
            .filter(|e| f.get(e).is_some())
            .max_by(|a, b| (a.ts_ms, &a.event_id).cmp(&(b.ts_ms, &b.event_id)))
            .and_then(|e| match f.get(e)? {
                crate::spec::FieldValue::Int(i) => Some(FeatureValue::Int(i)),
                crate::spec::FieldValue::Str(s) => Some(FeatureValue::Str(s.to_string())),
            }),
        Aggregate::LastN { field, n, distinct } => {
            let mut newest_first: Vec<&Event> = selected
                .iter()
                .copied()
                .filter(|e| field.get_str(e).is_some())
                .collect();
            newest_first.sort_by(|a, b| (b.ts_ms, &b.event_id).cmp(&(a.ts_ms, &a.event_id)));
            let mut values: Vec<String> = Vec::new();
            for e in newest_first {
                if values.len() == *n as usize {
                    break;
                }
                let v = field.get_str(e).unwrap_or_default();
                if *distinct && values.iter().any(|seen| seen == v) {
                    continue;
                }
                values.push(v.to_string());
            }
            Some(FeatureValue::List(values))
        }
        Aggregate::TopK { field, k } => {
            Some(FeatureValue::Ranked(top_k(count_values(strs(field)), *k)))
        }
        Aggregate::DistinctCount(f) => {
            let distinct: HashSet<&str> = strs(f).into_iter().collect();
            Some(FeatureValue::Int(distinct.len() as i64))
        }
        Aggregate::FirstSeen => selected
            .iter()
            .map(|e| e.ts_ms)
            .min()
            .map(FeatureValue::Int),
        Aggregate::LastSeen => selected
            .iter()
            .map(|e| e.ts_ms)
            .max()
            .map(FeatureValue::Int),
    }
}
