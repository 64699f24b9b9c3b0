//! Weft's speed layer and its Kafka plumbing.
//!
//! * [`kafka`]: client settings, topic creation, and [`kafka::EventProducer`],
//!   which keys each record `tenant/user_id` and sends it to the partition
//!   Kafka's murmur2 partitioner picks (so every client agrees).
//! * [`broker`]: [`broker::LocalBroker`], a Tansu broker process on
//!   127.0.0.1 for tests and for `weft up` when no broker is configured.
//! * [`error`]: [`SpeedError`], grouped by what the caller can do.
//!
//! The consumer that folds events into RocksDB (generations, dead letters,
//! offsets in the same WriteBatch) comes with the speed-layer issue.

pub mod broker;
pub mod error;
pub mod kafka;

pub use error::SpeedError;
