//! Segment definitions: named predicates over a profile's feature values,
//! for targeting ("big spenders", "mobile browsers with a full cart").
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
//! profile (`crate::segment`), so they do not change the spec hash and
//! never need a batch run.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::de::{Loose, Problem, Step, describe, dotted};
use super::error::SpecError;
use super::feature::Feature;

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

/// One `[[segment]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSegment {
    name: Option<String>,
    all: Option<Vec<RawPredicate>>,
    /// For readers of the file; any value.
    #[allow(dead_code)]
    description: Option<IgnoredAny>,
}

/// One predicate of `all`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredicate {
    feature: Option<String>,
    op: Option<String>,
    value: Option<Loose>,
}

const OPS: &str = "gt, gte, lt, lte, eq, ne, contains, exists, missing";

fn err(key: String, problem: impl Into<String>) -> SpecError {
    SpecError {
        feature: None,
        key: Some(key),
        problem: problem.into(),
    }
}

/// A deserialization error under the top-level `segment` key, at `rest`.
pub(super) fn segment_error(rest: &[Step], problem: &Problem) -> SpecError {
    let at = |i: &usize| format!("segment[{i}]");
    match (rest, problem) {
        ([], Problem::WrongType) => err(
            "segment".into(),
            "expected an array of tables ([[segment]])",
        ),
        ([Step::Index(i)], Problem::WrongType) => err(at(i), "is not a table"),
        ([Step::Index(i), Step::Key(k)], Problem::UnknownKey) => err(
            format!("{}.{k}", at(i)),
            "unknown key (expected name, all, description)",
        ),
        ([Step::Index(i), Step::Key(k)], Problem::WrongType) if k == "name" => {
            err(format!("{}.name", at(i)), "expected a non-empty string")
        }
        ([Step::Index(i), Step::Key(k)], Problem::WrongType) if k == "all" => {
            err(format!("{}.all", at(i)), ALL_EXPECTED)
        }
        ([Step::Index(i), Step::Key(_), Step::Index(j)], Problem::WrongType) => {
            err(format!("{}.all[{j}]", at(i)), "is not a table")
        }
        ([Step::Index(i), Step::Key(_), Step::Index(j), Step::Key(k)], problem) => {
            let key = format!("{}.all[{j}].{k}", at(i));
            match (problem, k.as_str()) {
                (Problem::UnknownKey, _) => err(key, "unknown key (expected feature, op, value)"),
                (Problem::WrongType, "feature") => err(key, "expected a feature name"),
                (Problem::WrongType, "op") => {
                    err(key, format!("unknown operator None (expected {OPS})"))
                }
                (problem, _) => err(key, describe(problem)),
            }
        }
        (path, problem) => err(format!("segment{}", dotted_tail(path)), describe(problem)),
    }
}

/// `[0].all` for a path below `segment`.
fn dotted_tail(path: &[Step]) -> String {
    match path.first() {
        Some(Step::Index(_)) | None => dotted(path),
        Some(Step::Key(_)) => format!(".{}", dotted(path)),
    }
}

const ALL_EXPECTED: &str =
    "expected a list of predicates like { feature = \"views_7d\", op = \"gte\", value = 3 }";

/// Checks the `[[segment]]` tables against the spec's features.
pub(super) fn build_segments(
    raw: Vec<RawSegment>,
    features: &[Feature],
) -> Result<Vec<Segment>, SpecError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, segment) in raw.into_iter().enumerate() {
        let at = format!("segment[{i}]");
        let segment = segment.build(&at, features)?;
        if !names.insert(segment.name.clone()) {
            return Err(err(format!("{at}.name"), "defined more than once"));
        }
        out.push(segment);
    }
    Ok(out)
}

impl RawSegment {
    fn build(self, at: &str, features: &[Feature]) -> Result<Segment, SpecError> {
        let name = match self.name {
            Some(s) if !s.is_empty() => s,
            _ => return Err(err(format!("{at}.name"), "expected a non-empty string")),
        };
        let Some(preds) = self.all else {
            return Err(err(format!("{at}.all"), ALL_EXPECTED));
        };
        if preds.is_empty() {
            return Err(err(format!("{at}.all"), "is empty"));
        }
        let all = preds
            .into_iter()
            .enumerate()
            .map(|(j, p)| p.build(&format!("{at}.all[{j}]"), features))
            .collect::<Result<_, _>>()?;
        Ok(Segment { name, all })
    }
}

impl RawPredicate {
    fn build(self, at: &str, features: &[Feature]) -> Result<Predicate, SpecError> {
        let Some(feature) = self.feature else {
            return Err(err(format!("{at}.feature"), "expected a feature name"));
        };
        if !features.iter().any(|f| f.name == feature) {
            return Err(err(
                format!("{at}.feature"),
                format!("the spec has no feature '{feature}'"),
            ));
        }
        let op = match self.op.as_deref() {
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
                    format!("unknown operator {other:?} (expected {OPS})"),
                ));
            }
        };
        let value = match self.value {
            None => Operand::None,
            Some(Loose::Int(i)) => Operand::Number(i as f64),
            Some(Loose::Float(f)) => Operand::Number(f),
            Some(Loose::Str(s)) => Operand::Str(s),
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
        Ok(Predicate { feature, op, value })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use crate::FeatureSpec;
    use crate::spec::SpecError;

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

    /// Two features (`spend`, `cats`) and `segments`: the fixture of the
    /// segment tests here and in `crate::segment`.
    pub(crate) fn spec(segments: &str) -> Result<FeatureSpec, SpecError> {
        FeatureSpec::parse(&format!("{FEATURES}\n{segments}"))
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

    #[test]
    fn unknown_segment_keys_are_named() {
        assert_eq!(
            spec("[[segment]]\nname = \"x\"\ncolour = 1\nall = [{ feature = \"spend\", op = \"exists\" }]")
                .unwrap_err()
                .to_string(),
            "key 'segment[0].colour': unknown key (expected name, all, description)"
        );
        assert_eq!(
            spec("[[segment]]\nname = \"x\"\nall = [{ feature = \"spend\", op = \"exists\", weight = 2 }]")
                .unwrap_err()
                .to_string(),
            "key 'segment[0].all[0].weight': unknown key (expected feature, op, value)"
        );
    }
}
