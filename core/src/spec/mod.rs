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
//!
//! * `aggregate`: what a feature computes ([`Aggregate`]) over which event
//!   [`Field`]; the aggregate algebra (`crate::agg`) builds on it.
//! * `feature`: a [`Feature`] with its [`Filter`] and [`Window`].
//! * `duration`: `7d`-style durations and the default bucket rule.
//! * `segment`: the `[[segment]]` definitions ([`Segment`]); evaluating them
//!   on a profile is `crate::segment`'s.
//! * `raw` and `de`: the file as serde structs (unknown keys refused) and
//!   the deserializer that tells them which key a problem is at.

use std::collections::BTreeSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::event::EventKind;

mod aggregate;
mod de;
mod duration;
mod error;
mod feature;
mod raw;
pub(crate) mod segment;

pub use aggregate::{Aggregate, Field, FieldValue, HLL_LG_K, MAX_LIST_LEN};
pub use duration::{
    DAY_MS, HOUR_MS, MAX_BUCKETS_PER_WINDOW, MINUTE_MS, STANDARD_BUCKETS_MS,
    TARGET_BUCKETS_PER_WINDOW, WEEK_MS, default_bucket, format_duration, parse_duration,
};
pub use error::SpecError;
pub use feature::{Condition, Feature, Filter, Literal, Window};
pub use segment::{Op, Operand, Predicate, Segment};

/// A validated set of features, and the segments defined over them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub features: Vec<Feature>,
    /// Evaluated on served profiles; not part of [`FeatureSpec::hash`].
    pub segments: Vec<Segment>,
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
        let root = Value::Table(table);
        let raw =
            raw::RawSpec::deserialize(de::ValueDe(&root)).map_err(|e| raw::spec_error(e, &root))?;
        let features = raw
            .feature
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, f)| f.build(i))
            .collect::<Result<_, _>>()?;
        let mut spec = FeatureSpec::new(features)?;
        spec.segments = segment::build_segments(raw.segment.unwrap_or_default(), &spec.features)?;
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

    #[test]
    fn unknown_keys_are_refused_naming_feature_and_key() {
        let base = "[[feature]]\nname = \"v\"\naggregate = \"count\"\nwindow = \"7d\"\n";
        assert_eq!(
            err(&format!("{base}colour = 1\n")),
            "feature 'v': key 'colour': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"
        );
        assert_eq!(
            err(&format!(
                "{base}[[feature]]\naggregate = \"count\"\nwindow = \"7d\"\nWindow = \"7d\"\n"
            )),
            "feature '#2': key 'Window': unknown key (expected name, aggregate, field, kinds, where, window, bucket, k, n, distinct)"
        );
        assert_eq!(
            err(&format!(
                "{base}where = [{{ field = \"price\", op = \"gt\", value = 1, unit = \"eur\" }}]\n"
            )),
            "feature 'v': key 'where[0].unit': unknown key (expected field, op, value, values)"
        );
        assert_eq!(
            err(&format!("version = 2\n{base}")),
            "key 'version': unknown top-level key (expected [[feature]] and [[segment]] tables)"
        );
    }

    #[test]
    fn wrong_types_name_feature_and_key() {
        let feature = |body: &str| err(&format!("[[feature]]\nname = \"v\"\n{body}\n"));
        assert_eq!(
            feature("aggregate = \"count\"\nwindow = 7"),
            "feature 'v': key 'window': expected a string, got integer"
        );
        assert_eq!(
            feature("aggregate = \"top_k\"\nfield = \"category\"\nk = \"3\"\nwindow = \"7d\""),
            "feature 'v': key 'k': expected an integer, got string"
        );
        assert_eq!(
            feature("aggregate = \"count\"\nkinds = [\"view\", 2]\nwindow = \"7d\""),
            "feature 'v': key 'kinds': Integer(2) is not an event kind (expected view, click, add_to_cart, purchase, search)"
        );
        assert_eq!(
            feature("aggregate = \"count\"\nwhere = [\"price > 1\"]\nwindow = \"7d\""),
            "feature 'v': key 'where[0]': expected a table like { field = \"category\", op = \"eq\", value = \"shoes\" }"
        );
        assert_eq!(
            err("feature = [1]"),
            "key 'feature': entry #1 is not a table"
        );
    }
}
