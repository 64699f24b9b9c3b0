//! Weft's one configuration tree, read by every command.
//!
//! * [`WeftConfig`] is `weft.toml`: `features` and the sections
//!   `[kafka] [speed] [archive] [batch] [cluster] [views] [s3] [serve]
//!   [recommendations] [[tenants]]` ([`sections`]); `deploy/weft.example.toml` documents every
//!   key with its default and a test loads it.
//! * [`WeftConfig::load`] layers it: compiled-in defaults, then a TOML file
//!   (`--config`), then `WEFT__SECTION__KEY` environment variables
//!   ([`EnvLayer`]), then command-line flags ([`Overrides`]). Unknown keys
//!   are rejected in every layer, naming the key and where it came from
//!   (the file, the variable or the flag); variables outside the `WEFT__`
//!   prefix are not configuration and never stop a command.
//! * [`WeftConfig::validate`] checks what types cannot (limits, scopes,
//!   unique names and keys) and names the key.
//! * [`Secret`] holds API keys: it prints `***` in `Debug`, `Display` and
//!   serialized output.
//!
//! Layers take their own section; the config is passed in, never global.

mod error;
mod layers;
mod secret;
pub mod sections;
mod validate;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use layers::{ENV_PREFIX, EnvLayer, Overrides};
pub use secret::Secret;
pub use sections::{
    ArchiveSection, BatchSection, ClusterSection, KafkaConfig, KeyConfig, RecsConfig, S3Section,
    Scope, ServerConfig, SpeedSection, TenantConfig, ViewsConfig, parse_scheduler,
};

/// The whole configuration (`weft.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeftConfig {
    /// The feature spec (TOML). Serving refuses batch views and speed state
    /// computed with another spec.
    pub features: PathBuf,
    pub kafka: KafkaConfig,
    pub speed: SpeedSection,
    pub archive: ArchiveSection,
    pub batch: BatchSection,
    pub cluster: ClusterSection,
    pub views: ViewsConfig,
    pub s3: S3Section,
    pub serve: ServerConfig,
    pub recommendations: RecsConfig,
    pub tenants: Vec<TenantConfig>,
}

impl Default for WeftConfig {
    fn default() -> WeftConfig {
        WeftConfig {
            features: PathBuf::from("deploy/features.example.toml"),
            kafka: KafkaConfig::default(),
            speed: SpeedSection::default(),
            archive: ArchiveSection::default(),
            batch: BatchSection::default(),
            cluster: ClusterSection::default(),
            views: ViewsConfig::default(),
            s3: S3Section::default(),
            serve: ServerConfig::default(),
            recommendations: RecsConfig::default(),
            tenants: Vec::new(),
        }
    }
}

impl WeftConfig {
    /// Defaults, then `file` (if any), then `env`, then `flags`; validated.
    pub fn load(
        file: Option<&Path>,
        env: &EnvLayer,
        flags: &Overrides,
    ) -> Result<WeftConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(WeftConfig::default()));
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
                path: file.to_path_buf(),
                problem: if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".into()
                } else {
                    e.to_string()
                },
            })?;
            // Parse errors name the line; figment would only name the file.
            if let Err(e) = text.parse::<toml::Table>() {
                return Err(ConfigError::File {
                    path: file.to_path_buf(),
                    problem: e.to_string().trim_end().to_string(),
                });
            }
            figment = figment.merge(Toml::string(&text));
        }
        let origins = error::Origins {
            file,
            env: Some(env),
            flags: Some(flags),
        };
        let config: WeftConfig = figment
            .merge(env.clone())
            .merge(flags.clone())
            .extract()
            .map_err(|e| origins.explain(e))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document over the defaults (tests, examples); validated.
    pub fn from_toml(text: &str) -> Result<WeftConfig, ConfigError> {
        let origins = error::Origins {
            file: None,
            env: None,
            flags: None,
        };
        let config: WeftConfig = Figment::from(Serialized::defaults(WeftConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| origins.explain(e))?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, secrets shown as `***`
    /// (`--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Parallel fold partitions for the batch job: `batch.partitions`, or
    /// one per core when it is 0.
    pub fn batch_partitions(&self) -> usize {
        match self.batch.partitions {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests;
