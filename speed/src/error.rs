//! Errors of the speed crate, grouped by what the caller can do.

use std::path::PathBuf;

/// What went wrong, by remedy.
#[derive(Debug, thiserror::Error)]
pub enum SpeedError {
    /// The broker could not be reached or refused the request: retry later
    /// or check `bootstrap.servers`.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker answered, but not as required (missing topic, wrong
    /// partition count, failed deliveries): fix the setup.
    #[error("kafka: {0}")]
    Broker(String),
    /// A local broker process could not be started: install or configure it.
    #[error("local broker: {0}")]
    LocalBroker(String),
    /// RocksDB failed or holds something unexpected: check the data
    /// directory (disk, permissions, a store built with another spec).
    #[error("speed store: {0}")]
    Store(String),
    /// A stored value or key does not decode: the data directory is
    /// damaged (restore it, or start on a fresh one, which replays).
    #[error("speed store: corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpeedError {
    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> SpeedError {
        let context = context.into();
        move |source| SpeedError::Kafka { context, source }
    }
}
