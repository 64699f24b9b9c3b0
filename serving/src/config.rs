//! `weft serve`'s configuration, layered: built-in defaults, then a TOML
//! file, then `WEFT_`-prefixed environment variables (`__` separates
//! sections: `WEFT_KAFKA__BOOTSTRAP=host:9092`), then command-line flags.
//! Every error names the key and the problem.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::auth::Scope;

/// The whole configuration of `weft serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The feature spec (TOML).
    pub features: PathBuf,
    pub kafka: KafkaConfig,
    pub speed: SpeedSection,
    pub views: ViewsConfig,
    pub serve: ServerConfig,
    pub recommendations: RecsConfig,
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap: String,
    pub topic: String,
    pub dead_letter_topic: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedSection {
    /// RocksDB directory of the speed view.
    pub data_dir: PathBuf,
    /// Redeliveries within this many seconds (Kafka record time) are dropped.
    pub dedup_horizon_secs: u64,
    /// fsync every applied batch.
    pub sync_writes: bool,
    /// Longest wait for a batch of records, in milliseconds (freshness vs
    /// throughput).
    pub max_batch_wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// The batch view store (directory, `file://`, `s3://`, `gs://`); unset:
    /// serve from the speed layer alone.
    pub store: Option<String>,
    /// How often to look for a newly published view, in seconds.
    pub poll_secs: u64,
    /// Where opened views are ingested into local RocksDB instances.
    pub work_dir: PathBuf,
    /// Check every view file's SHA-256 when opening it.
    pub verify: bool,
    /// Block cache (uncompressed blocks) shared by the open views, in MiB.
    pub block_cache_mb: usize,
    /// Read each newly opened view into the block cache before serving it
    /// (a view held in memory needs no warming).
    pub warm: bool,
    /// Hold a newly opened view in memory, and read it without RocksDB,
    /// when its keys and values come to at most this many MiB (0: never).
    /// Two views are held while a switch is in progress.
    pub memory_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address (port 0: any free port).
    pub grpc_listen: SocketAddr,
    /// HTTP/JSON listen address (also serves `/metrics` and health).
    pub http_listen: SocketAddr,
    /// Requests admitted at once (queued ones included); more are answered
    /// `RESOURCE_EXHAUSTED` at once.
    pub max_in_flight: usize,
    /// Most ids in one `BatchGetProfiles`.
    pub max_batch_ids: usize,
    /// Longest user or item id, in bytes.
    pub max_id_bytes: usize,
    /// Most items `GetRecommendations` may ask for.
    pub max_recommendations: u32,
    /// Most `exclude_item_ids` in one request.
    pub max_exclusions: usize,
    /// Deadline applied when the client sends none, in milliseconds.
    pub default_deadline_ms: u64,
    /// Seconds between health turning NOT_SERVING and the listeners closing.
    pub drain_secs: u64,
    /// Tokio worker threads (0: one per core).
    pub workers: usize,
}

/// Which features of the spec feed recommendations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecsConfig {
    /// A `last_n` feature over item ids: the user's recent items.
    pub recent_items_feature: Option<String>,
    /// A `top_k` feature over categories.
    pub top_categories_feature: Option<String>,
    /// A `last_n` feature over purchased item ids: excluded from picks.
    pub purchased_items_feature: Option<String>,
    /// Recent items whose neighbours are blended in.
    pub recent_items: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Browser origins allowed to call the HTTP API with this tenant's keys
    /// (CORS), e.g. `https://shop.example`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    /// The secret, or `env:VAR` to read it from the environment.
    pub key: String,
    /// `profile:read`, `recommendations:read`, `admin`.
    pub scopes: Vec<String>,
    /// A widget key, embedded in web pages: may only read recommendations.
    #[serde(default)]
    pub publishable: bool,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            features: PathBuf::from("deploy/features.example.toml"),
            kafka: KafkaConfig {
                bootstrap: "127.0.0.1:9092".into(),
                topic: "events".into(),
                dead_letter_topic: "events.dlq".into(),
            },
            speed: SpeedSection {
                data_dir: PathBuf::from("weft-data/speed"),
                dedup_horizon_secs: 3_600,
                sync_writes: false,
                max_batch_wait_ms: 5,
            },
            views: ViewsConfig {
                store: None,
                poll_secs: 10,
                work_dir: PathBuf::from("weft-data/serving"),
                verify: false,
                block_cache_mb: 1024,
                warm: true,
                memory_mb: 4096,
            },
            serve: ServerConfig {
                grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
                http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                max_in_flight: 2_048,
                max_batch_ids: 100,
                max_id_bytes: 256,
                max_recommendations: 100,
                max_exclusions: 1_000,
                default_deadline_ms: 1_000,
                drain_secs: 2,
                workers: 0,
            },
            recommendations: RecsConfig {
                recent_items_feature: Some("recently_viewed".into()),
                top_categories_feature: Some("top_categories_30d".into()),
                purchased_items_feature: Some("purchased_items_90d".into()),
                recent_items: 5,
            },
            tenants: Vec::new(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl ServeConfig {
    /// Defaults, then `file` (if any), then `WEFT_*` variables, then
    /// `overrides` (command-line flags, serialized; unset fields skipped).
    pub fn load(
        file: Option<&Path>,
        overrides: impl Serialize,
    ) -> Result<ServeConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "config",
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: ServeConfig = figment
            .merge(Env::prefixed("WEFT_").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document over the defaults (tests, examples).
    pub fn from_toml(text: &str) -> Result<ServeConfig, ConfigError> {
        let config: ServeConfig = Figment::from(Serialized::defaults(ServeConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot: limits, scopes, unique names and keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.serve;
        for (key, v) in [
            ("serve.max_in_flight", s.max_in_flight),
            ("serve.max_batch_ids", s.max_batch_ids),
            ("serve.max_id_bytes", s.max_id_bytes),
            ("serve.max_recommendations", s.max_recommendations as usize),
            ("serve.default_deadline_ms", s.default_deadline_ms as usize),
            ("views.poll_secs", self.views.poll_secs as usize),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.kafka.bootstrap.trim().is_empty() {
            return Err(invalid("kafka.bootstrap", "is empty"));
        }
        let mut tenants = HashSet::new();
        let mut names = HashSet::new();
        let mut secrets = HashSet::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{t}]");
            if tenant.name.is_empty() {
                return Err(invalid(format!("{at}.name"), "is empty"));
            }
            if !tenants.insert(tenant.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("tenant {:?} is configured twice", tenant.name),
                ));
            }
            for (o, origin) in tenant.allowed_origins.iter().enumerate() {
                if !(origin.starts_with("http://") || origin.starts_with("https://"))
                    || origin.ends_with('/')
                {
                    return Err(invalid(
                        format!("{at}.allowed_origins[{o}]"),
                        format!("{origin:?} is not an origin like https://shop.example"),
                    ));
                }
            }
            for (k, key) in tenant.keys.iter().enumerate() {
                let at = format!("{at}.keys[{k}]");
                if !names.insert(key.name.as_str()) {
                    return Err(invalid(
                        format!("{at}.name"),
                        format!("key name {:?} is used twice", key.name),
                    ));
                }
                let secret = key.secret().map_err(|p| invalid(format!("{at}.key"), p))?;
                if secret.len() < 16 {
                    return Err(invalid(
                        format!("{at}.key"),
                        "is shorter than 16 characters",
                    ));
                }
                if !secrets.insert(secret) {
                    return Err(invalid(
                        format!("{at}.key"),
                        "the same key is configured twice",
                    ));
                }
                if key.scopes.is_empty() {
                    return Err(invalid(format!("{at}.scopes"), "is empty"));
                }
                for (i, scope) in key.scopes.iter().enumerate() {
                    let parsed = Scope::parse(scope).ok_or_else(|| {
                        invalid(
                            format!("{at}.scopes[{i}]"),
                            format!(
                                "unknown scope {scope:?} (expected profile:read, recommendations:read or admin)"
                            ),
                        )
                    })?;
                    if key.publishable && parsed != Scope::RecommendationsRead {
                        return Err(invalid(
                            format!("{at}.scopes[{i}]"),
                            "a publishable (widget) key may only have recommendations:read",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl KeyConfig {
    /// The secret, resolved from the environment for `env:VAR`.
    pub fn secret(&self) -> Result<String, String> {
        match self.key.strip_prefix("env:") {
            Some(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            None => Ok(self.key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServeConfig::default().validate().unwrap();
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../deploy/serve.example.toml");
        // The example reads two keys from the environment.
        let e = ServeConfig::from_toml(text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tenants[0].keys[0].key: environment variable WEFT_ACME_BIDDER_KEY is not set"
        );
        let text = text.replace("env:WEFT_ACME_BIDDER_KEY", "bidder-key-0123456789");
        let text = text.replace("env:WEFT_ACME_ADMIN_KEY", "admin-key-0123456789");
        let c = ServeConfig::from_toml(&text).unwrap();
        assert_eq!(c.tenants[0].keys.len(), 3);
        assert_eq!(c.views.store.as_deref(), Some("weft-data/views"));
        // The example's spec path is relative to the repository root.
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap() + "/..";
        assert!(std::path::Path::new(&root).join(&c.features).exists());
        assert_eq!(c.features, PathBuf::from("deploy/features.example.toml"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = ServeConfig::from_toml("[serve]\nmax_batch_ids = \"many\"\n").unwrap_err();
        assert!(e.to_string().contains("max_batch_ids"), "{e}");
        let e = ServeConfig::from_toml("[serve]\nmax_batch_ids = 0\n").unwrap_err();
        assert_eq!(e.to_string(), "serve.max_batch_ids: must be at least 1");
        let e = ServeConfig::from_toml("[serve]\nmax_batchids = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_batchids"), "{e}");
        let e = ServeConfig::from_toml(
            "[[tenants]]\nname = \"a\"\n[[tenants.keys]]\nname = \"k\"\nkey = \"0123456789abcdef\"\nscopes = [\"profile:write\"]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tenants[0].keys[0].scopes[0]: unknown scope"),
            "{e}"
        );
        let e = ServeConfig::from_toml(
            "[[tenants]]\nname = \"a\"\n[[tenants.keys]]\nname = \"w\"\nkey = \"0123456789abcdef\"\nscopes = [\"profile:read\"]\npublishable = true\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("publishable"), "{e}");
    }
}
