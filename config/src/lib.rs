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
mod partitions;
mod secret;
pub mod sections;
mod validate;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use error::ConfigError;
pub use layers::{ENV_PREFIX, EnvLayer, Overrides};
pub use partitions::PartitionSet;
pub use secret::Secret;
pub use sections::{
    ArchiveSection, BatchSection, ClusterSection, KafkaConfig, KeyConfig, PeerConfig, RecsConfig,
    S3Section, Scope, ServerConfig, SpeedSection, TenantConfig, ViewsConfig, parse_scheduler,
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

    /// This node's shard of the topic's `kafka.partitions`: the
    /// partitions it owns and who owns the others. None: unsharded (every
    /// partition, no peers). The error names the key.
    pub fn shard(&self) -> Result<Option<Shard>, ConfigError> {
        let s = &self.serve;
        let topic = self.kafka.partitions;
        let owned = match (&s.partitions, &s.shard) {
            (Some(_), Some(_)) => {
                return Err(error::invalid(
                    "serve.shard",
                    "set serve.partitions or serve.shard, not both",
                ));
            }
            (Some(text), None) => {
                PartitionSet::parse(text).map_err(|e| error::invalid("serve.partitions", e))?
            }
            (None, Some(text)) => PartitionSet::parse_shard(text, topic)
                .map_err(|e| error::invalid("serve.shard", e))?,
            (None, None) => {
                if !s.peers.is_empty() {
                    return Err(error::invalid(
                        "serve.peers",
                        "peers are for a shard: set serve.partitions or serve.shard",
                    ));
                }
                return Ok(None);
            }
        };
        let key = if s.partitions.is_some() {
            "serve.partitions"
        } else {
            "serve.shard"
        };
        in_topic(&owned, topic, key)?;
        if owned.is_empty() {
            return Err(error::invalid(key, "owns no partition"));
        }
        let mut covered = owned.clone();
        let mut peers = Vec::with_capacity(s.peers.len());
        for (i, peer) in s.peers.iter().enumerate() {
            let at = format!("serve.peers[{i}]");
            let partitions = if peer.partitions.contains('/') {
                PartitionSet::parse_shard(&peer.partitions, topic)
            } else {
                PartitionSet::parse(&peer.partitions)
            }
            .map_err(|e| error::invalid(format!("{at}.partitions"), e))?;
            in_topic(&partitions, topic, &format!("{at}.partitions"))?;
            let overlap = covered.intersection(&partitions);
            if !overlap.is_empty() {
                return Err(error::invalid(
                    format!("{at}.partitions"),
                    format!(
                        "partitions {overlap} are owned twice (by this node or an earlier peer)"
                    ),
                ));
            }
            let grpc = peer.grpc.trim();
            let valid = ["http://", "https://"].iter().any(|scheme| {
                grpc.strip_prefix(scheme)
                    .is_some_and(|rest| rest.contains(':'))
            });
            if !valid {
                return Err(error::invalid(
                    format!("{at}.grpc"),
                    format!("{grpc:?} is not an address like http://10.0.0.2:50051"),
                ));
            }
            covered = covered.union(&partitions);
            peers.push(Peer {
                partitions,
                grpc: grpc.trim_end_matches('/').to_string(),
            });
        }
        let missing = covered.missing(topic);
        if !missing.is_empty() {
            return Err(error::invalid(
                "serve.peers",
                format!(
                    "partitions {missing} of {topic} (kafka.partitions) are owned by no node: \
                     every partition needs an owner (this node owns {owned})"
                ),
            ));
        }
        Ok(Some(Shard {
            partitions: topic,
            owned,
            peers,
        }))
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

/// Fails naming `key` if `set` has partitions outside a topic of `topic`
/// partitions (`kafka.partitions`).
fn in_topic(set: &PartitionSet, topic: u32, key: &str) -> Result<(), ConfigError> {
    let beyond = set.beyond(topic);
    if beyond.is_empty() {
        return Ok(());
    }
    Err(error::invalid(
        key,
        format!("partitions {beyond} are not in a topic of {topic} (kafka.partitions)"),
    ))
}

/// A serving shard's assignment ([`WeftConfig::shard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The topic's partitions (`kafka.partitions`).
    pub partitions: u32,
    /// The partitions this node owns.
    pub owned: PartitionSet,
    /// The other shards, covering the rest once.
    pub peers: Vec<Peer>,
}

/// Another shard: its partitions and gRPC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub partitions: PartitionSet,
    pub grpc: String,
}

#[cfg(test)]
mod tests;
