//! [`ConfigError`]: every configuration problem names the key, the problem
//! and, for a loaded value, where it came from (the file, the environment
//! variable or the flag).

use std::path::PathBuf;

use figment::error::Kind;

use crate::layers::{EnvLayer, Overrides};

/// A configuration problem. Its message starts with the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse, or a key that does not exist.
    #[error("{key}: {problem}{origin}")]
    Load {
        /// Dotted path, e.g. `serve.max_in_flight`.
        key: String,
        problem: String,
        /// ` (in FILE)`, ` (from environment variable WEFT__...)`, ...
        origin: String,
    },
    /// A value of the right type that is not allowed.
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("config: {path}: {problem}")]
    File { path: PathBuf, problem: String },
}

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Where the values came from, to name them in errors.
pub(crate) struct Origins<'a> {
    pub(crate) file: Option<&'a std::path::Path>,
    pub(crate) env: Option<&'a EnvLayer>,
    pub(crate) flags: Option<&'a Overrides>,
}

impl Origins<'_> {
    /// Translates figment's errors (all of them, joined) into one
    /// [`ConfigError`] naming the first key.
    pub(crate) fn explain(&self, error: figment::Error) -> ConfigError {
        let mut out: Vec<ConfigError> = error.into_iter().map(|e| self.one(e)).collect();
        if out.len() == 1 {
            return out.remove(0);
        }
        let first = out.remove(0);
        let rest: Vec<String> = out.iter().map(|e| e.to_string()).collect();
        match first {
            ConfigError::Load {
                key,
                problem,
                origin,
            } => ConfigError::Load {
                key,
                problem,
                origin: format!("{origin}; also {}", rest.join("; ")),
            },
            other => other,
        }
    }

    fn one(&self, e: figment::Error) -> ConfigError {
        let mut path = e.path.clone();
        let problem = match &e.kind {
            Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                if expected.is_empty() {
                    "unknown key".to_string()
                } else {
                    format!("unknown key (expected one of: {})", expected.join(", "))
                }
            }
            Kind::MissingField(field) => {
                if path.last().map(String::as_str) != Some(field.as_ref()) {
                    path.push(field.to_string());
                }
                "missing".to_string()
            }
            other => other.to_string(),
        };
        let key = if path.is_empty() {
            "config".to_string()
        } else {
            path.join(".")
        };
        // Name the layer that set the key: the top one that holds it.
        let origin = if let Some(flag) = self.flags.and_then(|f| f.flag_for(&key)) {
            format!(" (from {flag})")
        } else if let Some(var) = self.env.and_then(|v| v.variable_for(&key)) {
            format!(" (from environment variable {var})")
        } else if let Some(file) = self.file {
            format!(" (in {})", file.display())
        } else {
            String::new()
        };
        ConfigError::Load {
            key,
            problem,
            origin,
        }
    }
}
