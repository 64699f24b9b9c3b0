//! [`Secret`]: a string that never shows itself.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An API key or another secret. `Debug`, `Display` and `Serialize` print
/// `***`, so a secret cannot reach a log line, `--print-config` or an error
/// message by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, or for `env:VAR` the value of that environment
    /// variable (so a committed file can name a secret kept elsewhere).
    pub fn resolve(&self) -> Result<Secret, String> {
        match self.0.strip_prefix("env:") {
            Some(var) => std::env::var(var)
                .map(Secret::from)
                .map_err(|_| format!("environment variable {var} is not set")),
            None => Ok(self.clone()),
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let s = Secret::new("sk_live_0123456789abcdef");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "sk_live_0123456789abcdef");
        let toml =
            toml::to_string(&std::collections::BTreeMap::from([("key", &s)])).expect("serializes");
        assert_eq!(toml.trim(), "key = \"***\"");
    }
}
