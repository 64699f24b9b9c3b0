//! The spec file as written: serde structs that take the keys the spec
//! knows and refuse any other (`deny_unknown_fields`), then the checks that
//! turn a `[[feature]]` table into a [`Feature`]. Every problem is a
//! [`SpecError`] naming the feature and the key.

use serde::Deserialize;
use toml::Value;

use super::aggregate::{Aggregate, Field, MAX_LIST_LEN};
use super::de::{DeError, Loose, Problem, Step, describe, dotted, value_at};
use super::duration::{MAX_BUCKETS_PER_WINDOW, default_bucket, format_duration, parse_duration};
use super::error::SpecError;
use super::feature::{Condition, Feature, Filter, Literal, Window};
use super::segment::{RawSegment, segment_error};
use crate::event::EventKind;

/// The whole file: `[[feature]]` and `[[segment]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub(super) feature: Option<Vec<RawFeature>>,
    pub(super) segment: Option<Vec<RawSegment>>,
}

/// One `[[feature]]` table. Every key is optional here: a missing one is
/// reported by [`RawFeature::build`], in the order the checks run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeature {
    name: Option<String>,
    aggregate: Option<String>,
    field: Option<String>,
    kinds: Option<Vec<String>>,
    #[serde(rename = "where")]
    conditions: Option<Vec<RawCondition>>,
    window: Option<String>,
    bucket: Option<String>,
    k: Option<i64>,
    n: Option<i64>,
    distinct: Option<bool>,
}

/// One `where` condition, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    field: Option<String>,
    op: Option<String>,
    /// Its type is the operator's to check (and some operators ignore it).
    value: Option<Loose>,
    values: Option<Loose>,
}

const FEATURE_KEYS: &str = "name, aggregate, field, kinds, where, window, bucket, k, n, distinct";

/// A deserialization error of the document `root` as a [`SpecError`].
pub(super) fn spec_error(e: DeError, root: &Value) -> SpecError {
    let found = value_at(root, &e.path);
    let file = |key: &str, problem: String| SpecError {
        feature: None,
        key: Some(key.to_string()),
        problem,
    };
    match (e.path.as_slice(), &e.problem) {
        ([Step::Key(k)], Problem::UnknownKey) => file(
            k,
            "unknown top-level key (expected [[feature]] and [[segment]] tables)".into(),
        ),
        ([Step::Key(k)], Problem::WrongType) if k == "feature" => file(
            "feature",
            "expected an array of tables ([[feature]])".into(),
        ),
        ([Step::Key(k), Step::Index(i)], Problem::WrongType) if k == "feature" => {
            file("feature", format!("entry #{} is not a table", i + 1))
        }
        ([Step::Key(k), Step::Index(i), rest @ ..], problem) if k == "feature" => {
            let name = value_at(root, &e.path[..2]).and_then(|t| t.get("name"));
            let at = At {
                feature: match name {
                    Some(Value::String(s)) => s.clone(),
                    _ => format!("#{}", i + 1),
                },
            };
            feature_error(&at, rest, problem, found)
        }
        ([Step::Key(k), rest @ ..], problem) if k == "segment" => segment_error(rest, problem),
        (path, problem) => SpecError {
            feature: None,
            key: Some(dotted(path)),
            problem: describe(problem),
        },
    }
}

/// A deserialization error inside a `[[feature]]` table, at `rest`.
fn feature_error(at: &At, rest: &[Step], problem: &Problem, found: Option<&Value>) -> SpecError {
    let got = found.map_or("nothing", Value::type_str);
    match (rest, problem) {
        ([Step::Key(k)], Problem::UnknownKey) => {
            at.err(k, format!("unknown key (expected {FEATURE_KEYS})"))
        }
        ([Step::Key(k)], Problem::WrongType) => {
            let expected = match k.as_str() {
                "k" | "n" => "an integer",
                "distinct" => "true or false",
                "kinds" => "a list of kinds",
                "where" => "a list of conditions",
                _ => "a string",
            };
            at.err(k, format!("expected {expected}, got {got}"))
        }
        ([Step::Key(k), Step::Index(_)], Problem::WrongType) if k == "kinds" => {
            at.err("kinds", not_a_kind(found))
        }
        ([Step::Key(k), Step::Index(i)], Problem::WrongType) if k == "where" => at.err(
            &format!("where[{i}]"),
            "expected a table like { field = \"category\", op = \"eq\", value = \"shoes\" }",
        ),
        ([Step::Key(w), Step::Index(i), Step::Key(k)], Problem::UnknownKey) if w == "where" => at
            .err(
                &format!("where[{i}].{k}"),
                "unknown key (expected field, op, value, values)",
            ),
        // `field` and `op`: `value` and `values` take any type.
        ([Step::Key(w), Step::Index(i), Step::Key(k)], Problem::WrongType) if w == "where" => {
            at.err(&format!("where[{i}].{k}"), "required string")
        }
        (path, problem) => at.err(&dotted(path), describe(problem)),
    }
}

fn not_a_kind(item: Option<&Value>) -> String {
    let item = item.map_or_else(|| "nothing".to_string(), |v| format!("{v:?}"));
    format!("{item} is not an event kind (expected view, click, add_to_cart, purchase, search)")
}

/// Names the feature a problem is in.
struct At {
    /// The feature's name, or `#index` when it has none.
    feature: String,
}

impl At {
    fn err(&self, key: &str, problem: impl Into<String>) -> SpecError {
        SpecError {
            feature: Some(self.feature.clone()),
            key: Some(key.to_string()),
            problem: problem.into(),
        }
    }

    /// `k` or `n`: a length in `1..=max`.
    fn list_len(&self, key: &str, v: Option<i64>, max: u32) -> Result<Option<u32>, SpecError> {
        match v {
            None => Ok(None),
            Some(i) if (1..=i64::from(max)).contains(&i) => Ok(Some(i as u32)),
            Some(i) => Err(self.err(key, format!("{i} is outside 1..={max}"))),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
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

impl RawFeature {
    /// Checks the table, the `index`th `[[feature]]`, and builds the feature.
    pub(super) fn build(self, index: usize) -> Result<Feature, SpecError> {
        let at = At {
            feature: self
                .name
                .clone()
                .unwrap_or_else(|| format!("#{}", index + 1)),
        };
        let name = self
            .name
            .ok_or_else(|| at.err("name", "required but missing"))?;
        check_name(&name).map_err(|p| at.err("name", p))?;

        let field = match self.field.as_deref() {
            None => None,
            Some(s) => Some(Field::parse(s).ok_or_else(|| {
                at.err(
                    "field",
                    format!("unknown field '{s}' (expected item_id, category, kind, price, quantity, revenue or attr.<name>)"),
                )
            })?),
        };
        let agg_name = self
            .aggregate
            .as_deref()
            .ok_or_else(|| at.err("aggregate", "required but missing"))?;
        let k = at.list_len("k", self.k, MAX_LIST_LEN)?;
        let n = at.list_len("n", self.n, MAX_LIST_LEN)?;
        let distinct = self.distinct;
        let aggregate = aggregate(&at, agg_name, field, k, n, distinct)?;
        if k.is_some() && !matches!(aggregate, Aggregate::TopK { .. }) {
            return Err(at.err("k", "only top_k takes k"));
        }
        if n.is_some() && !matches!(aggregate, Aggregate::LastN { .. }) {
            return Err(at.err("n", "only last_n takes n"));
        }
        if distinct.is_some() && !matches!(aggregate, Aggregate::LastN { .. }) {
            return Err(at.err("distinct", "only last_n takes distinct"));
        }

        let kinds = match self.kinds {
            None => Vec::new(),
            Some(items) => {
                let mut kinds = Vec::new();
                for item in items {
                    let kind = EventKind::parse(&item).ok_or_else(|| {
                        at.err("kinds", not_a_kind(Some(&Value::String(item.clone()))))
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                if kinds.is_empty() {
                    return Err(at.err("kinds", "empty list; omit the key to match every kind"));
                }
                kinds.sort();
                kinds
            }
        };
        let conditions = self
            .conditions
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.build(&at, i))
            .collect::<Result<_, _>>()?;

        let window_text = self
            .window
            .as_deref()
            .ok_or_else(|| at.err("window", "required but missing"))?;
        let window = window(&at, window_text, self.bucket.as_deref())?;
        Ok(Feature {
            name,
            aggregate,
            filter: Filter { kinds, conditions },
            window,
        })
    }
}

/// The aggregate named `name`, reading `field`, with its `k`, `n`,
/// `distinct`.
fn aggregate(
    at: &At,
    name: &str,
    field: Option<Field>,
    k: Option<u32>,
    n: Option<u32>,
    distinct: Option<bool>,
) -> Result<Aggregate, SpecError> {
    let needs = |what: &str| -> Result<Field, SpecError> {
        field
            .clone()
            .ok_or_else(|| at.err("field", format!("aggregate '{name}' needs a {what} field")))
    };
    let numeric = || -> Result<Field, SpecError> {
        let f = needs("numeric")?;
        if f.is_numeric() {
            Ok(f)
        } else {
            Err(at.err(
                "field",
                format!(
                    "aggregate '{name}' needs a numeric field (price, quantity, revenue), got '{f}'"
                ),
            ))
        }
    };
    let string = || -> Result<Field, SpecError> {
        let f = needs("string")?;
        if f.is_numeric() {
            Err(at.err(
                "field",
                format!("aggregate '{name}' needs a string field (item_id, category, kind, attr.<name>), got '{f}'"),
            ))
        } else {
            Ok(f)
        }
    };
    let no_field = || -> Result<(), SpecError> {
        match &field {
            Some(f) => Err(at.err(
                "field",
                format!("aggregate '{name}' takes no field, got '{f}'"),
            )),
            None => Ok(()),
        }
    };
    Ok(match name {
        "count" => {
            no_field()?;
            Aggregate::Count
        }
        "sum" => Aggregate::Sum(numeric()?),
        "min" => Aggregate::Min(numeric()?),
        "max" => Aggregate::Max(numeric()?),
        "avg" => Aggregate::Avg(numeric()?),
        "last" => Aggregate::Last(needs("")?),
        "last_n" => Aggregate::LastN {
            field: string()?,
            n: n.ok_or_else(|| at.err("n", "aggregate 'last_n' needs n"))?,
            distinct: distinct.unwrap_or(true),
        },
        "top_k" => Aggregate::TopK {
            field: string()?,
            k: k.ok_or_else(|| at.err("k", "aggregate 'top_k' needs k"))?,
        },
        "distinct_count" => Aggregate::DistinctCount(string()?),
        "first_seen" => {
            no_field()?;
            Aggregate::FirstSeen
        }
        "last_seen" => {
            no_field()?;
            Aggregate::LastSeen
        }
        other => {
            return Err(at.err(
                "aggregate",
                format!("unknown aggregate '{other}' (expected count, sum, min, max, avg, last, last_n, top_k, distinct_count, first_seen, last_seen)"),
            ));
        }
    })
}

/// The window `text` ("lifetime" or a duration) with its bucket.
fn window(at: &At, text: &str, bucket: Option<&str>) -> Result<Window, SpecError> {
    let len_ms = if text == "lifetime" {
        None
    } else {
        Some(parse_duration(text).map_err(|p| at.err("window", p))?)
    };
    let bucket_ms = match bucket {
        Some(b) => parse_duration(b).map_err(|p| at.err("bucket", p))?,
        None => default_bucket(len_ms).ok_or_else(|| {
            at.err(
                "bucket",
                format!("no standard bucket divides window '{text}'; set bucket explicitly"),
            )
        })?,
    };
    if let Some(len) = len_ms {
        if len % bucket_ms != 0 {
            return Err(at.err(
                "bucket",
                format!(
                    "{} does not divide the window {text} evenly",
                    format_duration(bucket_ms)
                ),
            ));
        }
        if len / bucket_ms > MAX_BUCKETS_PER_WINDOW {
            return Err(at.err(
                "bucket",
                format!(
                    "{} buckets per window; at most {MAX_BUCKETS_PER_WINDOW}",
                    len / bucket_ms
                ),
            ));
        }
    }
    Ok(Window { len_ms, bucket_ms })
}

fn literal(v: &Loose) -> Option<Literal> {
    match v {
        Loose::Str(s) => Some(Literal::Str(s.clone())),
        Loose::Int(i) => Some(Literal::Int(*i)),
        _ => None,
    }
}

impl RawCondition {
    /// Checks the `i`th condition of the feature `at` names.
    fn build(self, at: &At, i: usize) -> Result<Condition, SpecError> {
        let key = |k: &str| format!("where[{i}].{k}");
        let field_text = self
            .field
            .as_deref()
            .ok_or_else(|| at.err(&key("field"), "required string"))?;
        let field = Field::parse(field_text)
            .ok_or_else(|| at.err(&key("field"), format!("unknown field '{field_text}'")))?;
        let op = self
            .op
            .as_deref()
            .ok_or_else(|| at.err(&key("op"), "required string"))?;
        let typed = |lit: Literal| -> Result<Literal, SpecError> {
            match (&lit, field.is_numeric()) {
                (Literal::Int(_), true) | (Literal::Str(_), false) => Ok(lit),
                _ => Err(at.err(
                    &key("value"),
                    format!("{lit:?} does not have the type of field '{field}'"),
                )),
            }
        };
        let value = || -> Result<Literal, SpecError> {
            let v = self
                .value
                .as_ref()
                .ok_or_else(|| at.err(&key("value"), format!("op '{op}' needs a value")))?;
            typed(
                literal(v)
                    .ok_or_else(|| at.err(&key("value"), "expected a string or an integer"))?,
            )
        };
        let values =
            || -> Result<Vec<Literal>, SpecError> {
                let Some(Loose::List(items)) = &self.values else {
                    return Err(at.err(&key("values"), format!("op '{op}' needs a list of values")));
                };
                if items.is_empty() {
                    return Err(at.err(&key("values"), "empty list"));
                }
                items
                    .iter()
                    .map(|v| {
                        typed(literal(v).ok_or_else(|| {
                            at.err(&key("values"), "expected strings or integers")
                        })?)
                    })
                    .collect()
            };
        let bound = || -> Result<i64, SpecError> {
            if !field.is_numeric() {
                return Err(at.err(
                    &key("op"),
                    format!("op '{op}' needs a numeric field, got '{field}'"),
                ));
            }
            match &self.value {
                Some(Loose::Int(i)) => Ok(*i),
                _ => Err(at.err(&key("value"), format!("op '{op}' needs an integer value"))),
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
                return Err(at.err(
                    &key("op"),
                    format!("unknown op '{other}' (expected eq, ne, in, not_in, gt, gte, lt, lte, exists, missing)"),
                ));
            }
        })
    }
}
