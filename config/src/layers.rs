//! The two layers above the file: `WEFT__` environment variables and
//! command-line flags, each a figment provider that can say where a value
//! came from.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The prefix of configuration variables. Two underscores: a variable that
/// merely starts with `WEFT_` (a script's `WEFT_PROTO`, or a key read
/// through `env:WEFT_ACME_KEY`) is not configuration and is left alone.
pub const ENV_PREFIX: &str = "WEFT__";

/// `WEFT__SECTION__KEY=value` variables: `WEFT__SERVE__MAX_IN_FLIGHT=4096`
/// sets `serve.max_in_flight`, `WEFT__FEATURES=/etc/weft/f.toml` sets
/// `features`. Values are read as TOML values (numbers, booleans, strings).
#[derive(Debug, Clone, Default)]
pub struct EnvLayer {
    /// (variable, key path in lower case, value)
    vars: Vec<(String, String, String)>,
}

impl EnvLayer {
    /// The process's `WEFT__*` variables (the one place that reads them).
    pub fn from_process() -> EnvLayer {
        EnvLayer::from_vars(std::env::vars())
    }

    /// The `WEFT__*` variables among `vars` (others are ignored).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> EnvLayer {
        let mut out: Vec<_> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                let key = rest
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                Some((name, key, value))
            })
            .collect();
        out.sort();
        EnvLayer { vars: out }
    }

    /// The variable that set `key` (dotted path), if one did.
    pub fn variable_for(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(name, _, _)| name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// Folds dotted `key = value` pairs into one nested dictionary.
fn nested(pairs: impl Iterator<Item = (String, Value)>) -> Dict {
    fn insert(dict: &mut Dict, path: &[&str], value: Value) {
        match path {
            [] => {}
            [last] => {
                dict.insert((*last).to_string(), value);
            }
            [first, rest @ ..] => {
                let entry = dict
                    .entry((*first).to_string())
                    .or_insert_with(|| Value::from(Dict::new()));
                if !matches!(entry, Value::Dict(..)) {
                    *entry = Value::from(Dict::new());
                }
                if let Value::Dict(_, inner) = entry {
                    insert(inner, rest, value);
                }
            }
        }
    }
    let mut dict = Dict::new();
    for (key, value) in pairs {
        let path: Vec<&str> = key.split('.').filter(|p| !p.is_empty()).collect();
        insert(&mut dict, &path, value);
    }
    dict
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, k: &[&str]| {
            let parts: Vec<String> = k.iter().map(|p| p.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", parts.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let dict = nested(self.vars.iter().map(|(_, key, value)| {
            let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            (key.clone(), parsed)
        }));
        Ok(Profile::Default.collect(dict))
    }
}

/// Command-line flags as the top layer: only the flags given are set.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// (dotted key, flag, value)
    values: Vec<(String, String, Value)>,
}

impl Overrides {
    pub fn new() -> Overrides {
        Overrides::default()
    }

    /// Sets `key` (dotted path) from `flag` when the flag was given.
    pub fn set<V: Into<Value>>(mut self, key: &str, flag: &str, value: Option<V>) -> Overrides {
        if let Some(v) = value {
            self.values.push((key.into(), flag.into(), v.into()));
        }
        self
    }

    /// Sets a path-valued `key` when the flag was given.
    pub fn set_path(self, key: &str, flag: &str, value: Option<&std::path::Path>) -> Overrides {
        self.set(key, flag, value.map(|p| p.display().to_string()))
    }

    /// The flag that set `key`, if one did.
    pub fn flag_for(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, flag, _)| flag.as_str())
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let dict = nested(self.values.iter().map(|(k, _, v)| (k.clone(), v.clone())));
        Ok(Profile::Default.collect(dict))
    }
}
