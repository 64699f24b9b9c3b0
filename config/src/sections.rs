//! The sections of `weft.toml`, one struct each, with their defaults.
//!
//! A section belongs to the layer that reads it: `[kafka]` every Kafka
//! client, `[speed]` the speed layer (in `weft speed` and inside
//! `weft serve`), `[archive]` the archiver and the batch job's input,
//! `[batch]` the batch job, `[cluster]` the batch job on a Ballista
//! cluster, `[views]` the view store and how serving opens
//! views, `[s3]` how `s3://` archives and view stores are reached, `[serve]` the front ends, `[recommendations]` the blend,
//! `[[tenants]]` tenants and their keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The events topic: key `tenant/user_id`, value a `weft.v1.Event`.
    pub topic: String,
    /// Where the speed layer sends records it cannot decode or validate.
    pub dead_letter_topic: String,
    /// Partitions `weft up` gives the topics it creates (an existing topic
    /// keeps its own count: partitions are the unit of scale).
    pub partitions: u32,
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            bootstrap: "127.0.0.1:9092".into(),
            topic: "events".into(),
            dead_letter_topic: "events.dlq".into(),
            partitions: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedSection {
    /// RocksDB directory of the speed view: state and offsets live here, so
    /// keep it on a volume that survives restarts.
    pub data_dir: PathBuf,
    /// Redeliveries whose first copy arrived at most this many seconds
    /// before (Kafka record time) are dropped.
    pub dedup_horizon_secs: u64,
    /// fsync every applied batch (survives power loss, not only crashes).
    pub sync_writes: bool,
    /// Longest wait for a batch of records, in milliseconds: freshness
    /// against throughput when traffic is light.
    pub max_batch_wait_ms: u64,
    /// Most records in one applied batch (one RocksDB WriteBatch).
    pub max_batch: usize,
    /// Consumer group of the informational offset commits (lag dashboards;
    /// the positions that count are in RocksDB).
    pub group_id: String,
}

impl Default for SpeedSection {
    fn default() -> SpeedSection {
        SpeedSection {
            data_dir: PathBuf::from("weft-data/speed"),
            dedup_horizon_secs: 3_600,
            sync_writes: false,
            max_batch_wait_ms: 5,
            max_batch: 20_000,
            group_id: "weft-speed".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSection {
    /// The Parquet master dataset: written by `weft archive`, read by
    /// `weft batch run`. A directory, `file://` or `s3://bucket/prefix` URL.
    pub root: String,
    /// Flush when this many events are buffered.
    pub max_rows: usize,
    /// Flush when the oldest buffered event has waited this many
    /// milliseconds: how late an event can reach the archive, and so how
    /// fresh a batch run's input is.
    pub max_delay_ms: u64,
    /// Consumer group of the archiver's informational offset commits.
    pub group_id: String,
}

impl Default for ArchiveSection {
    fn default() -> ArchiveSection {
        ArchiveSection {
            root: "weft-data/archive".into(),
            max_rows: 500_000,
            max_delay_ms: 60_000,
            group_id: "archive".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// DataFusion's memory budget in MiB: rows are grouped by user in
    /// memory within it; a partition that does not fit is sorted
    /// externally, spilling to disk.
    pub memory_mb: usize,
    /// Directory for spill files (unset: the system temp directory).
    pub spill_dir: Option<PathBuf>,
    /// Parallel fold partitions, each writing one SST file (0: one per core).
    pub partitions: usize,
    /// Views kept in the store after publishing, for rollback.
    pub keep: usize,
    /// Co-occurrence window for item neighbours, in minutes.
    pub cooc_window_min: i64,
    /// Neighbours kept per item.
    pub neighbours: usize,
}

impl Default for BatchSection {
    fn default() -> BatchSection {
        BatchSection {
            memory_mb: 2_048,
            spill_dir: None,
            partitions: 0,
            keep: 3,
            cooc_window_min: 60,
            neighbours: 20,
        }
    }
}

/// The batch job on an Apache DataFusion Ballista cluster: which scheduler
/// `weft batch run` submits to, and how `weft batch scheduler` and
/// `weft batch executor` processes run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The scheduler, `df://host:port`: `weft batch run` submits the job to
    /// it (unset: the job runs in-process) and executors register with it.
    pub scheduler: Option<String>,
    /// Scheduler: the address it listens on.
    pub bind: SocketAddr,
    /// Scheduler: an executor without a heartbeat for this many seconds is
    /// lost; its tasks (and the shuffle output it held) run again elsewhere.
    pub executor_timeout_secs: u64,
    /// Scheduler: attempts of a task before its job fails.
    pub task_max_failures: usize,
    /// Executor: the host it binds and advertises to the scheduler, its
    /// peers (shuffle reads) and clients (results).
    pub host: String,
    /// Executor: Arrow Flight port (shuffle and results).
    pub flight_port: u16,
    /// Executor: gRPC port the scheduler reaches it on (cancelling tasks,
    /// removing job data, stopping; executors ask for tasks themselves).
    pub grpc_port: u16,
    /// Executor: shuffle files and spills.
    pub work_dir: PathBuf,
    /// Executor: tasks run at once (0: one per core).
    pub vcores: usize,
    /// Executor: memory pool in MiB, shared by its running tasks; a fold
    /// that does not fit its share sorts externally, spilling to work_dir.
    pub memory_mb: usize,
    /// Executor: seconds between heartbeats to the scheduler.
    pub heartbeat_secs: u64,
    /// `weft batch run`: seconds to wait for a connection to the scheduler.
    pub connect_timeout_secs: u64,
}

/// The host and port of a scheduler URL, `df://host:port` (port 50050 when
/// absent), or what is wrong with it.
pub fn parse_scheduler(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("df://")
        .ok_or_else(|| format!("'{url}': expected df://host:port"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("'{url}': '{port}' is not a port"))?,
        ),
        None => (rest, 50050),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("'{url}': expected df://host:port"));
    }
    Ok((host.to_string(), port))
}

impl Default for ClusterSection {
    fn default() -> ClusterSection {
        ClusterSection {
            scheduler: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            executor_timeout_secs: 30,
            task_max_failures: 4,
            host: "127.0.0.1".into(),
            flight_port: 50071,
            grpc_port: 50072,
            work_dir: PathBuf::from("weft-data/executor"),
            vcores: 0,
            memory_mb: 2_048,
            heartbeat_secs: 5,
            connect_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// The batch view store (directory, `file://`, `s3://`, `gs://`); unset:
    /// serve from the speed layer alone.
    pub store: Option<String>,
    /// How often to look for a newly published (or rolled back) view, in
    /// seconds.
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

impl Default for ViewsConfig {
    fn default() -> ViewsConfig {
        ViewsConfig {
            store: None,
            poll_secs: 10,
            work_dir: PathBuf::from("weft-data/serving"),
            verify: false,
            block_cache_mb: 1_024,
            warm: true,
            memory_mb: 4_096,
        }
    }
}

/// How S3 locations (`s3://bucket/prefix`, for `archive.root` and
/// `views.store`) are reached. A key left unset falls back to the standard
/// AWS environment variable (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`), then to
/// AWS's own default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000` (unset: AWS).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Access key id; `env:VAR` reads it from the environment.
    pub access_key_id: Option<Secret>,
    /// Secret access key; `env:VAR` reads it from the environment.
    pub secret_access_key: Option<Secret>,
    /// Allow a plain-HTTP endpoint (a local S3 server).
    pub allow_http: bool,
    /// Longest wait for a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for one request's answer, in milliseconds.
    pub request_timeout_ms: u64,
    /// Retries of a failed request (with backoff)...
    pub max_retries: usize,
    /// ... within at most this many milliseconds in all: an unreachable
    /// endpoint fails an operation after about this long.
    pub retry_timeout_ms: u64,
}

impl Default for S3Section {
    fn default() -> S3Section {
        S3Section {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_retries: 3,
            retry_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The event collector (`POST /v1/events`): the largest body, in KiB
    /// (larger: 413), ...
    pub collector_max_body_kb: usize,
    /// ... the most events in one body ...
    pub collector_max_events: usize,
    /// ... and the events a key may send per second, with bursts of two
    /// seconds' worth (more: 429 with `Retry-After`).
    pub collector_events_per_sec: u64,
    /// Seconds between the operator page's samples (`GET /ops`): event
    /// rates per tenant, dead letters, lag, view age, p99.
    pub ops_sample_secs: u64,
    /// Deadline applied when the client sends none, in milliseconds.
    pub default_deadline_ms: u64,
    /// Seconds between health turning NOT_SERVING and the listeners closing.
    pub drain_secs: u64,
    /// Tokio worker threads (0: one per core).
    pub workers: usize,
    /// The Kafka partitions this node owns, as ranges (`0-3,8`): its speed
    /// layer consumes only those and it opens only their view files.
    /// Unset, with `shard` unset too: every partition (one unsharded node).
    pub partitions: Option<String>,
    /// Or the partitions as a shard, `index/shards` (index from 0): the
    /// index-th of `shards` contiguous ranges of `kafka.partitions`.
    pub shard: Option<String>,
    /// The other shards, which answer the users of the partitions this one
    /// does not own; together with this one they cover every partition of
    /// `kafka.partitions` once.
    pub peers: Vec<PeerConfig>,
}

/// Another serving shard (`[[serve.peers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The partitions it owns, as ranges (`4-7`), or as a shard (`1/2`).
    pub partitions: String,
    /// Its gRPC address, `http://host:port`.
    pub grpc: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_in_flight: 2_048,
            max_batch_ids: 100,
            max_id_bytes: 256,
            max_recommendations: 100,
            max_exclusions: 1_000,
            collector_max_body_kb: 64,
            collector_max_events: 500,
            collector_events_per_sec: 200,
            ops_sample_secs: 60,
            default_deadline_ms: 1_000,
            drain_secs: 2,
            workers: 0,
            partitions: None,
            shard: None,
            peers: Vec::new(),
        }
    }
}

/// Which features of the spec feed recommendations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Default for RecsConfig {
    fn default() -> RecsConfig {
        RecsConfig {
            recent_items_feature: Some("recently_viewed".into()),
            top_categories_feature: Some("top_categories_30d".into()),
            purchased_items_feature: Some("purchased_items_90d".into()),
            recent_items: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    /// The secret, or `env:VAR` to read it from the environment (so the
    /// file can be committed and the secret kept in a secret store).
    pub key: Secret,
    /// `profile:read`, `recommendations:read`, `admin`.
    pub scopes: Vec<String>,
    /// A widget key, embedded in web pages: may only read recommendations.
    #[serde(default)]
    pub publishable: bool,
}

impl KeyConfig {
    /// The secret, resolved from the environment for `env:VAR`.
    pub fn secret(&self) -> Result<Secret, String> {
        self.key.resolve()
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ProfileRead,
    RecommendationsRead,
    /// Sending events to the collector (`POST /v1/events`).
    EventsWrite,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "profile:read" => Some(Scope::ProfileRead),
            "recommendations:read" => Some(Scope::RecommendationsRead),
            "events:write" => Some(Scope::EventsWrite),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProfileRead => "profile:read",
            Scope::RecommendationsRead => "recommendations:read",
            Scope::EventsWrite => "events:write",
            Scope::Admin => "admin",
        }
    }
}
