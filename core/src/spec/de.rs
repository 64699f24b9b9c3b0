//! A parsed TOML document as a serde deserializer whose errors say where
//! they are.
//!
//! `toml`'s own deserializer reports a wrong type or an unknown key without
//! the key it is about; the spec's messages name the feature and the key.
//! This one records the path (`feature`, 3, `where`, 0, `op`) as an error
//! travels up, and leaves the wording to the spec (`super::raw`).

use std::fmt;

use serde::Deserialize;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Value;

/// One step into a document: a table's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// What went wrong at the end of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// The path's last step is a key its table does not take.
    UnknownKey,
    /// The value at the path has a type the key does not take.
    WrongType,
    /// Anything else serde reports (the spec's types raise nothing else).
    Other(String),
}

/// A deserialization error and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DeError {
    pub(super) path: Vec<Step>,
    pub(super) problem: Problem,
}

impl DeError {
    fn new(problem: Problem) -> DeError {
        DeError {
            path: Vec::new(),
            problem,
        }
    }

    /// The error as seen from one level up.
    fn under(mut self, step: Step) -> DeError {
        self.path.insert(0, step);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", dotted(&self.path), describe(&self.problem))
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> DeError {
        DeError::new(Problem::Other(msg.to_string()))
    }

    fn invalid_type(_: de::Unexpected<'_>, _: &dyn de::Expected) -> DeError {
        DeError::new(Problem::WrongType)
    }

    fn unknown_field(field: &str, _: &'static [&'static str]) -> DeError {
        DeError::new(Problem::UnknownKey).under(Step::Key(field.to_string()))
    }
}

/// Deserializes from a borrowed TOML value.
///
/// A datetime reads as a unit value: no spec key takes a date, so a key
/// that expects a type refuses it as a wrong type, and a key that takes
/// anything (ignored or checked later) sees a value of no known type.
#[derive(Debug, Clone, Copy)]
pub(super) struct ValueDe<'a>(pub(super) &'a Value);

impl<'de> Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Datetime(_) => visitor.visit_unit(),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
            }),
            Value::Table(table) => visitor.visit_map(Entries {
                entries: table.iter(),
                value: None,
            }),
        }
    }

    /// A key that is present is `Some`; absent keys never get here.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple tuple_struct
        map struct enum identifier
    }
}

/// An array's elements; errors gain the element's index.
struct Items<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
}

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, v)) => seed
                .deserialize(ValueDe(v))
                .map(Some)
                .map_err(|e| e.under(Step::Index(i))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A table's entries, in key order; errors in a value gain its key.
struct Entries<'a> {
    entries: toml::map::Iter<'a, String, Value>,
    value: Option<(&'a String, &'a Value)>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::<DeError>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value without a key"))?;
        seed.deserialize(ValueDe(value))
            .map_err(|e| e.under(Step::Key(key.clone())))
    }
}

/// A value whose type the key's operator decides: a condition's `value`
/// and `values`, a segment predicate's `value`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Loose {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Loose>),
    /// A boolean, table or date: no operator takes one.
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        struct LooseVisitor;

        impl<'de> Visitor<'de> for LooseVisitor {
            type Value = Loose;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any TOML value")
            }

            fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
                Ok(Loose::Int(v))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
                Ok(i64::try_from(v).map_or(Loose::Other, Loose::Int))
            }

            fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
                Ok(Loose::Float(v))
            }

            fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Str(v.to_string()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose::Other)
            }

            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Loose::List(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }

        d.deserialize_any(LooseVisitor)
    }
}

/// `feature[3].where[0].op`.
pub(super) fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub(super) fn describe(problem: &Problem) -> String {
    match problem {
        Problem::UnknownKey => "unknown key".into(),
        Problem::WrongType => "wrong type".into(),
        Problem::Other(p) => p.clone(),
    }
}

/// The value a path leads to in `root`.
pub(super) fn value_at<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, step| match (step, v) {
        (Step::Key(k), Value::Table(t)) => t.get(k),
        (Step::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        list: Option<Vec<Inner>>,
        n: Option<i64>,
    }

    fn error(text: &str) -> DeError {
        let root = Value::Table(text.parse().unwrap());
        Outer::deserialize(ValueDe(&root)).unwrap_err()
    }

    #[test]
    fn errors_carry_their_path() {
        let key = |k: &str| Step::Key(k.into());
        assert_eq!(
            error("list = [{ a = \"x\" }, { a = 1 }]"),
            DeError {
                path: vec![key("list"), Step::Index(1), key("a")],
                problem: Problem::WrongType,
            }
        );
        assert_eq!(
            error("list = [{ b = 1 }]"),
            DeError {
                path: vec![key("list"), Step::Index(0), key("b")],
                problem: Problem::UnknownKey,
            }
        );
        assert_eq!(
            error("n = 1979-05-27"),
            DeError {
                path: vec![key("n")],
                problem: Problem::WrongType,
            }
        );
        let e = error("zz = 1");
        assert_eq!(e.path, vec![key("zz")]);
        assert_eq!(e.to_string(), "zz: unknown key");
    }
}
