//! Bucketed evaluation: how speed and serving answer a query. A user's state
//! is, per feature, a map from bucket index to [`Partial`]; the value at query
//! time `t` merges the buckets [`Window::buckets_at`] names and finishes the
//! result. `docs/semantics.md` states the rules; the reference evaluator
//! restates them over raw events.

use std::collections::BTreeMap;

use crate::agg::{FeatureValue, Partial};
use crate::codec::decode_partial_for;
use crate::event::Event;
use crate::keys::{PartialKey, decode_partial_key};
use crate::spec::{Aggregate, Feature, FeatureSpec};

/// Feature name to value; a feature without a value is absent.
pub type Profile = BTreeMap<String, FeatureValue>;

/// Feature values by position in the spec (`spec.features[i]`'s at `[i]`);
/// `None` for a feature without a value or not asked for.
pub type Values = Vec<Option<FeatureValue>>;

/// Merges the partials of the buckets a feature's window covers at `t` and
/// finishes them. `partials` may hold any buckets, in any order.
pub fn evaluate_feature<'a>(
    feature: &Feature,
    partials: impl IntoIterator<Item = (i64, &'a Partial)>,
    t_ms: i64,
) -> Option<FeatureValue> {
    let acc = merge_window(feature, partials, t_ms, |a, acc, p| a.merge(acc, p));
    feature.aggregate.finish(&acc)
}

/// [`evaluate_feature`] of partials the caller gives up: the same value,
/// with strings and sketches moved rather than copied on the way.
pub fn evaluate_feature_owned(
    feature: &Feature,
    partials: impl IntoIterator<Item = (i64, Partial)>,
    t_ms: i64,
) -> Option<FeatureValue> {
    let acc = merge_window(feature, partials, t_ms, Aggregate::merge_owned);
    feature.aggregate.finish_owned(acc)
}

/// The merge of the partials whose buckets `feature`'s window covers at
/// `t_ms`, starting from the aggregate's empty partial.
fn merge_window<P>(
    feature: &Feature,
    partials: impl IntoIterator<Item = (i64, P)>,
    t_ms: i64,
    merge: impl Fn(&Aggregate, &mut Partial, P),
) -> Partial {
    let (first, last) = feature.window.buckets_at(t_ms);
    let mut acc = feature.aggregate.empty();
    for (bucket, p) in partials {
        if (first..=last).contains(&bucket) {
            merge(&feature.aggregate, &mut acc, p);
        }
    }
    acc
}

/// One user's bucketed partials for every feature of a spec, in memory.
/// The speed layer keeps the same shape in RocksDB (see [`crate::keys`]).
#[derive(Debug, Clone)]
pub struct UserBuckets<'s> {
    spec: &'s FeatureSpec,
    /// Indexed like `spec.features`.
    buckets: Vec<BTreeMap<i64, Partial>>,
}

impl<'s> UserBuckets<'s> {
    pub fn new(spec: &'s FeatureSpec) -> UserBuckets<'s> {
        UserBuckets {
            spec,
            buckets: vec![BTreeMap::new(); spec.features.len()],
        }
    }

    /// Folds one (deduplicated, valid) event into every feature it matches.
    pub fn apply(&mut self, e: &Event) {
        for (feature, buckets) in self.spec.features.iter().zip(&mut self.buckets) {
            apply_to(feature, buckets, e);
        }
    }

    /// Merges another user state of the same spec into this one (the batch
    /// ⊕ speed merge).
    pub fn merge(&mut self, other: &UserBuckets<'_>) {
        for ((feature, mine), theirs) in self
            .spec
            .features
            .iter()
            .zip(&mut self.buckets)
            .zip(&other.buckets)
        {
            for (bucket, p) in theirs {
                let slot = mine
                    .entry(*bucket)
                    .or_insert_with(|| feature.aggregate.empty());
                feature.aggregate.merge(slot, p);
            }
        }
    }

    /// Every feature's value at query time `t`.
    pub fn evaluate(&self, t_ms: i64) -> Profile {
        self.spec
            .features
            .iter()
            .zip(self.values_at(t_ms))
            .filter_map(|(feature, v)| Some((feature.name.clone(), v?)))
            .collect()
    }

    /// [`UserBuckets::evaluate`] by position in the spec (`None`: no
    /// value), without naming them: for callers that evaluate many times.
    pub fn values_at(&self, t_ms: i64) -> impl Iterator<Item = Option<FeatureValue>> + '_ {
        self.spec
            .features
            .iter()
            .zip(&self.buckets)
            .map(move |(feature, buckets)| {
                let (first, last) = feature.window.buckets_at(t_ms);
                let in_window = buckets.range(first..=last).map(|(b, p)| (*b, p));
                evaluate_feature(feature, in_window, t_ms)
            })
    }
}

/// A user's stored partials, grouped by feature: what a point lookup in the
/// speed view or a batch view collects before evaluating. Keys are
/// [`crate::keys::partial_key`]s (without any store prefix), values
/// [`crate::codec`] encodings.
#[derive(Debug, Clone)]
pub struct StoredPartials<'s> {
    spec: &'s FeatureSpec,
    /// Indexed like `spec.features`: (bucket, partial) in any order.
    partials: Vec<Vec<(i64, Partial)>>,
    /// Set by [`StoredPartials::at`]: the only query time these partials
    /// may be evaluated at.
    as_of: Option<i64>,
    /// Whether any entry of a spec feature was added, whether kept or
    /// skipped as outside its window.
    stored: bool,
}

impl<'s> StoredPartials<'s> {
    pub fn new(spec: &'s FeatureSpec) -> StoredPartials<'s> {
        StoredPartials {
            spec,
            partials: vec![Vec::new(); spec.features.len()],
            as_of: None,
            stored: false,
        }
    }

    /// Partials to be evaluated at `t_ms` only (`None`: at any time, as
    /// [`StoredPartials::new`]). Entries whose bucket the feature's window
    /// does not cover at `t_ms` are skipped as they are added, before they
    /// are decoded: a store keeps every bucket it was ever given (a batch
    /// view holds a 1h feature's minutes of the whole archive), and a
    /// request would otherwise decode them all to drop them in the merge.
    /// Evaluating at another time panics.
    pub fn at(spec: &'s FeatureSpec, t_ms: Option<i64>) -> StoredPartials<'s> {
        StoredPartials {
            as_of: t_ms,
            ..StoredPartials::new(spec)
        }
    }

    /// Whether `feature`'s window at the query time covers `bucket`
    /// (always, without one); notes that the user has stored entries.
    fn wanted(&mut self, feature: &Feature, bucket: i64) -> bool {
        self.stored = true;
        self.as_of.is_none_or(|t| {
            let (first, last) = feature.window.buckets_at(t);
            (first..=last).contains(&bucket)
        })
    }

    /// Panics if these partials were read for another query time.
    fn check_time(&self, t_ms: i64) {
        if let Some(t) = self.as_of {
            assert_eq!(
                t, t_ms,
                "partials read for query time {t} evaluated at {t_ms}"
            );
        }
    }

    /// Adds one stored entry. Features the spec does not name are skipped
    /// (stores check the spec hash, so there are none in practice).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let key = decode_partial_key(key).map_err(|e| format!("bad partial key: {e}"))?;
        self.push_key(&key, value)
    }

    /// [`StoredPartials::push`] for a key the caller has decoded already.
    pub fn push_key(&mut self, key: &PartialKey, value: &[u8]) -> Result<(), String> {
        self.push_feature(&key.feature, key.bucket, value)
            .map_err(|e| format!("{}/{} {e}", key.tenant, key.user_id))
    }

    /// Adds one stored partial of the named feature (skipped if the spec
    /// has no such feature).
    pub fn push_feature(&mut self, feature: &str, bucket: i64, value: &[u8]) -> Result<(), String> {
        match self.spec.feature_index(feature) {
            Some(i) => self.push_encoded(i, bucket, value),
            None => Ok(()),
        }
    }

    /// Adds every entry of a packed value ([`crate::keys::push_packed`]: a
    /// batch view's value for one user). Entries come feature by feature,
    /// so each name is looked up once; features the spec lacks are skipped.
    pub fn push_packed(&mut self, packed: &[u8]) -> Result<(), String> {
        let mut last: Option<(std::borrow::Cow<'_, str>, Option<usize>)> = None;
        for entry in crate::keys::unpack(packed) {
            let (feature, bucket, partial) = entry.map_err(|e| format!("bad packed value: {e}"))?;
            let index = match &last {
                Some((name, index)) if *name == feature => *index,
                _ => {
                    let index = self.spec.feature_index(&feature);
                    last = Some((feature, index));
                    index
                }
            };
            if let Some(index) = index {
                self.push_encoded(index, bucket, partial)?;
            }
        }
        Ok(())
    }

    /// Adds every entry of a grouped value ([`crate::keys::begin_group`]:
    /// a format-3 batch view's value for one user). With a query time, a
    /// group's entries stop being read at the first bucket older than the
    /// feature's window (they come newest first), so a user's old buckets
    /// cost nothing.
    pub fn push_grouped(&mut self, grouped: &[u8]) -> Result<(), String> {
        let spec = self.spec;
        let bad = |e: crate::keys::KeyError| format!("bad grouped value: {e}");
        for group in crate::keys::groups(grouped) {
            let (index, entries) = group.map_err(bad)?;
            let feature = spec.features.get(index).ok_or_else(|| {
                format!("bad grouped value: feature index {index} is not in the spec")
            })?;
            self.stored = true;
            let window = self.as_of.map(|t| feature.window.buckets_at(t));
            for entry in entries {
                let (bucket, value) = entry.map_err(bad)?;
                if let Some((first, last)) = window {
                    if bucket < first {
                        break;
                    }
                    if bucket > last {
                        continue;
                    }
                }
                let p = decode_partial_for(&feature.aggregate, value)
                    .map_err(|e| format!("{}: {e}", feature.name))?;
                self.partials[index].push((bucket, p));
            }
        }
        Ok(())
    }

    /// Adds an encoded partial of feature `index` (a position in the spec,
    /// e.g. from [`FeatureSpec::feature_index`]).
    pub fn push_encoded(&mut self, index: usize, bucket: i64, value: &[u8]) -> Result<(), String> {
        let spec = self.spec;
        let feature = spec
            .features
            .get(index)
            .ok_or_else(|| format!("feature index {index} is not in the spec"))?;
        if !self.wanted(feature, bucket) {
            return Ok(());
        }
        let p = decode_partial_for(&feature.aggregate, value)
            .map_err(|e| format!("{}: {e}", feature.name))?;
        self.partials[index].push((bucket, p));
        Ok(())
    }

    /// Adds a decoded partial of feature `index` (a position in the spec).
    pub fn push_decoded(&mut self, index: usize, bucket: i64, p: Partial) -> Result<(), String> {
        let spec = self.spec;
        let feature = spec
            .features
            .get(index)
            .ok_or_else(|| format!("feature index {index} is not in the spec"))?;
        if !feature.aggregate.accepts(&p) {
            return Err(format!(
                "{}: partial of kind {} where aggregate {} was expected",
                feature.name,
                p.kind(),
                feature.aggregate.name()
            ));
        }
        if self.wanted(feature, bucket) {
            self.partials[index].push((bucket, p));
        }
        Ok(())
    }

    /// Merges another store's partials of the same user (batch ⊕ speed),
    /// read for the same query time.
    pub fn extend(&mut self, other: StoredPartials<'_>) {
        assert_eq!(
            self.as_of, other.as_of,
            "partials read for different query times"
        );
        self.stored |= other.stored;
        for (mine, theirs) in self.partials.iter_mut().zip(other.partials) {
            mine.extend(theirs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.partials.iter().all(Vec::is_empty)
    }

    /// Whether the store held anything for the user, even if nothing of it
    /// is in a window at the query time (the user is known).
    pub fn found(&self) -> bool {
        self.stored
    }

    /// The number of (bucket, partial) entries held.
    pub fn len(&self) -> usize {
        self.partials.iter().map(Vec::len).sum()
    }

    /// Forgets every partial, keeping the feature index (for reading the
    /// next user).
    pub fn clear(&mut self) {
        self.partials.iter_mut().for_each(Vec::clear);
        self.stored = false;
    }

    /// Every feature's value at query time `t`.
    pub fn evaluate(&self, t_ms: i64) -> Profile {
        self.evaluate_some(t_ms, None)
    }

    /// The values at `t` of the features at `indices` (positions in the
    /// spec; None: all).
    pub fn evaluate_some(&self, t_ms: i64, indices: Option<&[usize]>) -> Profile {
        self.check_time(t_ms);
        let mut profile = Profile::new();
        let mut add = |i: usize| {
            let (feature, buckets) = (&self.spec.features[i], &self.partials[i]);
            if let Some(v) = evaluate_feature(feature, buckets.iter().map(|(b, p)| (*b, p)), t_ms) {
                profile.insert(feature.name.clone(), v);
            }
        };
        match indices {
            None => (0..self.partials.len()).for_each(&mut add),
            Some(indices) => indices.iter().copied().for_each(&mut add),
        }
        profile
    }

    /// [`StoredPartials::evaluate_some`], consuming the partials so that
    /// their strings and sketches move into the values instead of being
    /// copied (what a request does with the partials it read). A feature
    /// named twice in `indices` is evaluated once.
    pub fn into_profile(self, t_ms: i64, indices: Option<&[usize]>) -> Profile {
        let spec = self.spec;
        spec.features
            .iter()
            .zip(self.into_values(t_ms, indices))
            .filter_map(|(f, v)| Some((f.name.clone(), v?)))
            .collect()
    }

    /// [`StoredPartials::into_profile`] indexed like `spec.features`
    /// instead of keyed by name: what a request builds its reply from,
    /// without a map or a copy of each name. Features not in `indices`,
    /// and features without a value, are `None`.
    pub fn into_values(mut self, t_ms: i64, indices: Option<&[usize]>) -> Values {
        self.check_time(t_ms);
        let spec = self.spec;
        let mut values: Values = Vec::with_capacity(spec.features.len());
        values.resize_with(spec.features.len(), || None);
        let mut add = |i: usize| {
            let buckets = std::mem::take(&mut self.partials[i]);
            values[i] = evaluate_feature_owned(&spec.features[i], buckets, t_ms);
        };
        match indices {
            None => (0..spec.features.len()).for_each(&mut add),
            Some(indices) => {
                let mut done = vec![false; spec.features.len()];
                for &i in indices {
                    if !std::mem::replace(&mut done[i], true) {
                        add(i);
                    }
                }
            }
        }
        values
    }

    /// The spec the partials belong to.
    pub fn spec(&self) -> &'s FeatureSpec {
        self.spec
    }
}

/// Folds an event into one feature's bucket map if it passes the filter.
pub fn apply_to(feature: &Feature, buckets: &mut BTreeMap<i64, Partial>, e: &Event) {
    if !feature.filter.matches(e) {
        return;
    }
    let bucket = feature.window.bucket_of(e.ts_ms);
    let p = buckets
        .entry(bucket)
        .or_insert_with(|| feature.aggregate.empty());
    feature.aggregate.update(p, e);
}

/// How far an approximate value may be from the exact one: within 6 %
/// (about 3.7 standard errors at lg_k = 12) or 2, whichever is larger.
pub fn distinct_tolerance(exact: i64) -> i64 {
    ((exact as f64) * 0.06).ceil().max(2.0) as i64
}

/// Compares a served profile with the reference: exact for every feature
/// except approximate ones, which must be within [`distinct_tolerance`].
/// The error lists every differing feature.
pub fn compare_profiles(
    spec: &FeatureSpec,
    served: &Profile,
    reference: &Profile,
) -> Result<(), String> {
    let mut diffs = Vec::new();
    for feature in &spec.features {
        let (s, r) = (served.get(&feature.name), reference.get(&feature.name));
        let ok = match (s, r) {
            (Some(FeatureValue::Int(s)), Some(FeatureValue::Int(r)))
                if feature.aggregate.is_approximate() =>
            {
                (s - r).abs() <= distinct_tolerance(*r)
            }
            (s, r) => s == r,
        };
        if !ok {
            diffs.push(format!("{}: served {s:?}, reference {r:?}", feature.name));
        }
    }
    for name in served.keys() {
        if spec.feature(name).is_none() {
            diffs.push(format!("{name}: served but not in the spec"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}
