//! Weft's speed layer and its Kafka plumbing.
//!
//! * [`kafka`]: client settings, topic creation, and [`kafka::EventProducer`],
//!   which keys each record `tenant/user_id` and sends it to the partition
//!   Kafka's murmur2 partitioner picks (so every client agrees).
//! * [`broker`]: [`broker::LocalBroker`], a Tansu broker process on
//!   127.0.0.1 for tests and for `weft up` when no broker is configured.
//! * [`store`]: [`store::SpeedStore`], the RocksDB speed view: partials under
//!   an associative merge operator, offsets and dedup ids, one WriteBatch per
//!   applied batch.
//! * [`consumer`]: the consume-validate-dedup-apply loop, with the
//!   dead-letter topic; [`consumer::BatchApplier`] is its apply path
//!   (dedup, fold, commit), on its own for callers outside the loop.
//! * `committer`: writes folded batches on its own thread while the next
//!   one is folded (inside [`consumer::BatchApplier`]).
//! * [`cursor`]: exact per-partition positioning after a restart, robust to
//!   brokers that skip records when a fetch starts inside a batch.
//! * [`archiver`]: Kafka to the Parquet master dataset, files whole or
//!   invisible, resuming from its own state file with no gap or duplicate.
//! * [`metrics`]: the speed layer's Prometheus metrics.
//! * `config`: [`consumer::SpeedConfig::from_config`] and
//!   [`archiver::ArchiverConfig::from_config`] take `[kafka]`, `[speed]` and
//!   `[archive]` from the configuration tree (`weft-config`).
//! * [`error`]: [`SpeedError`], grouped by what the caller can do.

pub mod archiver;
pub mod broker;
mod committer;
mod config;
pub mod consumer;
pub mod cursor;
pub mod error;
mod idtable;
pub mod kafka;
pub mod metrics;
pub mod store;

pub use error::SpeedError;
