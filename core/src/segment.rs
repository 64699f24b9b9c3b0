//! Segments: named predicates over a profile's feature values, for
//! targeting ("big spenders", "mobile browsers with a full cart").
//!
//! ```toml
//! [[segment]]
//! name = "big_spender"
//! all = [
//!   { feature = "spend_90d", op = "gte", value = 50000 },
//!   { feature = "top_categories_30d", op = "contains", value = "shoes" },
//! ]
//! ```
//!
//! A profile is in a segment when every predicate holds (`all`; an empty
//! list never matches). Operators: `gt gte lt lte` compare a number (count,
//! sum, avg, min, max, distinct count, first/last seen); `eq ne` compare a
//! number or a string; `contains` tests a `last_n` list or `top_k` ranking
//! (or equality for a string value); `exists` / `missing` test whether the
//! feature has a value. A predicate on a feature without a value is false,
//! except `missing`. Segments are evaluated at query time on the served
//! profile, so they do not change the spec hash and never need a batch run.

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::agg::FeatureValue;
use crate::eval::{Profile, Values};
use crate::spec::{Feature, FeatureSpec, SpecError};

/// A predicate's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Ne,
    Contains,
    Exists,
    Missing,
}

/// The literal a predicate compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    None,
    Number(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub feature: String,
    pub op: Op,
    pub value: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub all: Vec<Predicate>,
}

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

fn err(key: String, problem: impl Into<String>) -> SpecError {
    SpecError {
        feature: None,
        key: Some(key),
        problem: problem.into(),
    }
}

/// Parses the `[[segment]]` array against the spec's features.
pub fn parse_segments(value: &Value, features: &[Feature]) -> Result<Vec<Segment>, SpecError> {
    let Value::Array(items) = value else {
        return Err(err(
            "segment".into(),
            "expected an array of tables ([[segment]])",
        ));
    };
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("segment[{i}]");
        let Value::Table(t) = item else {
            return Err(err(at, "is not a table"));
        };
        out.push(parse_segment(&at, t, features)?);
        if !names.insert(out[i].name.clone()) {
            return Err(err(format!("{at}.name"), "defined more than once"));
        }
    }
    Ok(out)
}

fn parse_segment(at: &str, t: &Table, features: &[Feature]) -> Result<Segment, SpecError> {
    for key in t.keys() {
        if !matches!(key.as_str(), "name" | "all" | "description") {
            return Err(err(
                format!("{at}.{key}"),
                "unknown key (expected name, all, description)",
            ));
        }
    }
    let name = match t.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(err(format!("{at}.name"), "expected a non-empty string")),
    };
    let Some(Value::Array(preds)) = t.get("all") else {
        return Err(err(
            format!("{at}.all"),
            "expected a list of predicates like { feature = \"views_7d\", op = \"gte\", value = 3 }",
        ));
    };
    if preds.is_empty() {
        return Err(err(format!("{at}.all"), "is empty"));
    }
    let mut all = Vec::new();
    for (j, p) in preds.iter().enumerate() {
        let at = format!("{at}.all[{j}]");
        let Value::Table(p) = p else {
            return Err(err(at, "is not a table"));
        };
        for key in p.keys() {
            if !matches!(key.as_str(), "feature" | "op" | "value") {
                return Err(err(
                    format!("{at}.{key}"),
                    "unknown key (expected feature, op, value)",
                ));
            }
        }
        let feature = match p.get("feature") {
            Some(Value::String(f)) => f.clone(),
            _ => return Err(err(format!("{at}.feature"), "expected a feature name")),
        };
        if !features.iter().any(|f| f.name == feature) {
            return Err(err(
                format!("{at}.feature"),
                format!("the spec has no feature '{feature}'"),
            ));
        }
        let op = match p.get("op").and_then(Value::as_str) {
            Some("gt") => Op::Gt,
            Some("gte") => Op::Gte,
            Some("lt") => Op::Lt,
            Some("lte") => Op::Lte,
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("contains") => Op::Contains,
            Some("exists") => Op::Exists,
            Some("missing") => Op::Missing,
            other => {
                return Err(err(
                    format!("{at}.op"),
                    format!(
                        "unknown operator {other:?} (expected gt, gte, lt, lte, eq, ne, contains, exists, missing)"
                    ),
                ));
            }
        };
        let value = match p.get("value") {
            None => Operand::None,
            Some(Value::Integer(i)) => Operand::Number(*i as f64),
            Some(Value::Float(f)) => Operand::Number(*f),
            Some(Value::String(s)) => Operand::Str(s.clone()),
            Some(_) => return Err(err(format!("{at}.value"), "expected a number or a string")),
        };
        let fits = matches!(
            (op, &value),
            (Op::Exists | Op::Missing, Operand::None)
                | (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Operand::Number(_))
                | (Op::Eq | Op::Ne, Operand::Number(_) | Operand::Str(_))
                | (Op::Contains, Operand::Str(_))
        );
        if !fits {
            return Err(err(
                format!("{at}.value"),
                "does not fit the operator (gt/gte/lt/lte: a number; eq/ne: a number or string; contains: a string; exists/missing: no value)",
            ));
        }
        all.push(Predicate { feature, op, value });
    }
    Ok(Segment { name, all })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::FeatureSpec;

    const FEATURES: &str = r#"
[[feature]]
name = "spend"
aggregate = "sum"
field = "revenue"
window = "90d"

[[feature]]
name = "cats"
aggregate = "top_k"
field = "category"
k = 3
window = "30d"
"#;

    fn spec(segments: &str) -> Result<FeatureSpec, SpecError> {
        FeatureSpec::parse(&format!("{FEATURES}\n{segments}"))
    }

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

    #[test]
    fn bad_segments_name_the_key() {
        for (text, key) in [
            (
                "[[segment]]\nname = \"x\"\nall = [{ feature = \"nope\", op = \"gt\", value = 1 }]",
                "segment[0].all[0].feature",
            ),
            (
                "[[segment]]\nname = \"x\"\nall = [{ feature = \"spend\", op = \"between\", value = 1 }]",
                "segment[0].all[0].op",
            ),
            (
                "[[segment]]\nname = \"x\"\nall = [{ feature = \"spend\", op = \"gt\", value = \"a\" }]",
                "segment[0].all[0].value",
            ),
            ("[[segment]]\nname = \"x\"\nall = []", "segment[0].all"),
            (
                "[[segment]]\nall = [{ feature = \"spend\", op = \"exists\" }]",
                "segment[0].name",
            ),
            (
                "[[segment]]\nname = \"x\"\nall = [{ feature = \"spend\", op = \"exists\" }]\n[[segment]]\nname = \"x\"\nall = [{ feature = \"spend\", op = \"exists\" }]",
                "segment[1].name",
            ),
        ] {
            let e = spec(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
        }
    }
}
