//! [`SpecError`]: a spec problem and where it is.

use std::fmt;

/// A spec problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The feature's name (or `#index` when it has none); `None` for
    /// file-level problems.
    pub feature: Option<String>,
    /// The offending key, dotted (`where[1].op`).
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(feature) = &self.feature {
            write!(f, "feature '{feature}': ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.problem)
    }
}
