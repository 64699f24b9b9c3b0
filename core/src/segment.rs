//! Segments on a profile: which of the spec's segments
//! ([`crate::spec::Segment`], defined and checked with the spec) a served
//! profile is in. A predicate on a feature without a value is false,
//! except `missing`; a segment with no predicates never matches.

use crate::agg::FeatureValue;
use crate::eval::{Profile, Values};
use crate::spec::FeatureSpec;
pub use crate::spec::{Op, Operand, Predicate, Segment};

fn number(v: &FeatureValue) -> Option<f64> {
    match v {
        FeatureValue::Int(i) => Some(*i as f64),
        FeatureValue::Float(f) => Some(*f),
        _ => None,
    }
}

impl Predicate {
    pub fn holds(&self, profile: &Profile) -> bool {
        self.holds_for(profile.get(&self.feature))
    }

    /// Whether the predicate holds for its feature's value `v`.
    pub fn holds_for(&self, v: Option<&FeatureValue>) -> bool {
        let Some(v) = v else {
            return self.op == Op::Missing;
        };
        match (self.op, &self.value) {
            (Op::Exists, _) => true,
            (Op::Missing, _) => false,
            (Op::Contains, Operand::Str(s)) => match v {
                FeatureValue::List(l) => l.iter().any(|x| x == s),
                FeatureValue::Ranked(r) => r.iter().any(|(x, _)| x == s),
                FeatureValue::Str(x) => x == s,
                _ => false,
            },
            (Op::Eq, Operand::Str(s)) => matches!(v, FeatureValue::Str(x) if x == s),
            (Op::Ne, Operand::Str(s)) => matches!(v, FeatureValue::Str(x) if x != s),
            (op, Operand::Number(n)) => number(v).is_some_and(|x| match op {
                Op::Gt => x > *n,
                Op::Gte => x >= *n,
                Op::Lt => x < *n,
                Op::Lte => x <= *n,
                Op::Eq => x == *n,
                Op::Ne => x != *n,
                _ => false,
            }),
            _ => false,
        }
    }
}

impl Segment {
    pub fn matches(&self, profile: &Profile) -> bool {
        self.matches_by(|name| profile.get(name))
    }

    /// Whether the profile whose values `value` gives by feature name is
    /// in the segment.
    pub fn matches_by<'v>(&self, value: impl Fn(&str) -> Option<&'v FeatureValue>) -> bool {
        !self.all.is_empty() && self.all.iter().all(|p| p.holds_for(value(&p.feature)))
    }
}

/// The names of the segments `profile` is in, in spec order.
pub fn segments_of(segments: &[Segment], profile: &Profile) -> Vec<String> {
    segments
        .iter()
        .filter(|s| s.matches(profile))
        .map(|s| s.name.clone())
        .collect()
}

/// The positions in `spec.segments` of the segments a profile is in, given
/// as [`Values`] (indexed like `spec.features`), in spec order.
pub fn segment_indices(spec: &FeatureSpec, values: &Values) -> Vec<usize> {
    let value = |name: &str| {
        spec.feature_index(name)
            .and_then(|i| values.get(i)?.as_ref())
    };
    spec.segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.matches_by(value))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::spec::segment::tests::spec;

    #[test]
    fn segments_match_profiles() {
        let s = spec(
            r#"
[[segment]]
name = "rich"
all = [{ feature = "spend", op = "gte", value = 100 }]
[[segment]]
name = "shoes"
all = [{ feature = "cats", op = "contains", value = "shoes" }, { feature = "spend", op = "exists" }]
[[segment]]
name = "new"
all = [{ feature = "spend", op = "missing" }]
"#,
        )
        .unwrap();
        let hash_without = spec("").unwrap().hash().to_string();
        assert_eq!(s.hash(), hash_without, "segments do not change the hash");
        // The same profile as a map by name and as values by position.
        let check = |p: &Profile, want: &[&str]| {
            assert_eq!(segments_of(&s.segments, p), want);
            let values: Values = s.features.iter().map(|f| p.get(&f.name).cloned()).collect();
            let names: Vec<&str> = segment_indices(&s, &values)
                .into_iter()
                .map(|i| s.segments[i].name.as_str())
                .collect();
            assert_eq!(names, want);
        };
        let mut p = Profile::new();
        check(&p, &["new"]);
        p.insert("spend".into(), FeatureValue::Int(150));
        check(&p, &["rich"]);
        p.insert(
            "cats".into(),
            FeatureValue::Ranked(vec![("shoes".into(), 2)]),
        );
        check(&p, &["rich", "shoes"]);
        p.insert("spend".into(), FeatureValue::Int(50));
        check(&p, &["shoes"]);
    }
}
