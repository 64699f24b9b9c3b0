//! The embedded reader: `weft serve`'s reading half in the caller's process.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weft_config::{PartitionSet, WeftConfig};
use weft_core::agg::FeatureValue;
use weft_core::eval::Profile;
use weft_core::partition::partition_for_user;
use weft_proto::v1;
use weft_serving::http::Health;
use weft_serving::state::{Served, Serving, now_ms};
use weft_serving::{ServeError, Server};

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The user's partition is not one this reader holds: ask the shard
    /// that owns it ([`crate::RoutingClient`]).
    #[error("{tenant}/{user} is on partition {partition}; this reader holds partitions {held}")]
    NotHere {
        tenant: String,
        user: String,
        partition: i32,
        held: String,
    },
    /// No (view, generation) pair is ready yet, or a store could not be
    /// read now: retry.
    #[error("{0}")]
    Unavailable(String),
    /// A store holds data that does not decode.
    #[error("{0}")]
    Internal(String),
}

/// A profile as read: the values the evaluation left, named by the spec
/// (nothing is copied until asked), and its freshness.
#[derive(Debug)]
pub struct ProfileRead {
    serving: Arc<Serving>,
    served: Served,
    pub freshness: v1::Freshness,
}

impl ProfileRead {
    /// False when neither the batch view nor the speed layer has any
    /// event of the user.
    pub fn found(&self) -> bool {
        self.served.found
    }

    /// The features with a value, in name order.
    pub fn features(&self) -> impl Iterator<Item = (&str, &FeatureValue)> {
        let spec = self.serving.spec();
        self.serving
            .by_name()
            .iter()
            .filter_map(|&i| Some((spec.features[i].name.as_str(), self.served.value(i)?)))
    }

    /// One feature's value (None: no value, or no such feature).
    pub fn value(&self, feature: &str) -> Option<&FeatureValue> {
        self.served.value(self.serving.feature_index(feature)?)
    }

    /// The names of the segments the profile is in.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let spec = self.serving.spec();
        self.served
            .segments
            .iter()
            .map(|&i| spec.segments[i].name.as_str())
    }

    /// The features as a map (copies).
    pub fn to_profile(&self) -> Profile {
        self.features()
            .map(|(name, v)| (name.to_string(), v.clone()))
            .collect()
    }
}

/// The batch view and the speed layer of some partitions, in process.
#[derive(Debug)]
pub struct EmbeddedReader {
    serving: Arc<Serving>,
    health: Arc<Health>,
    partitions: Option<PartitionSet>,
    topic: u32,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl EmbeddedReader {
    /// Opens the reader on the current tokio runtime: `config` as `weft
    /// serve` reads it (`features`, `kafka`, `speed.data_dir`, `views`;
    /// `serve` and `tenants` are not used), holding `partitions` of the
    /// topic (None: every one; a shard's view must be split by partition,
    /// format 4). Reads are UNAVAILABLE until a pair is ready
    /// ([`EmbeddedReader::wait_ready`]).
    pub async fn open(
        config: WeftConfig,
        partitions: Option<PartitionSet>,
    ) -> Result<EmbeddedReader, ServeError> {
        let topic = config.kafka.partitions;
        let server = Server::open_partitions(config, partitions.clone()).await?;
        let (serving, health) = (server.serving().clone(), server.health().clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run_headless(shutdown.clone()));
        Ok(EmbeddedReader {
            serving,
            health,
            partitions,
            topic,
            shutdown,
            task,
        })
    }

    /// True once a (batch view, speed generation) pair is served.
    pub fn ready(&self) -> bool {
        self.health.serving()
    }

    /// Waits until [`EmbeddedReader::ready`], at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while !self.ready() {
            if tokio::time::Instant::now() >= until || self.task.is_finished() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The serving state (the pair, lag, speed metrics).
    pub fn serving(&self) -> &Arc<Serving> {
        &self.serving
    }

    /// `tenant`'s `user` as `weft serve` would answer GetProfile now: every
    /// feature, the segments and the freshness. Point reads in memory or
    /// RocksDB: call it on any thread, no runtime needed.
    pub fn get_profile(&self, tenant: &str, user: &str) -> Result<ProfileRead, ReadError> {
        if let Some(held) = &self.partitions {
            let partition = partition_for_user(tenant, user, self.topic);
            if !held.contains(partition) {
                return Err(ReadError::NotHere {
                    tenant: tenant.to_string(),
                    user: user.to_string(),
                    partition,
                    held: held.to_string(),
                });
            }
        }
        let error = |e: weft_serving::ApiError| match e.code() {
            tonic::Code::Internal => ReadError::Internal(e.to_string()),
            _ => ReadError::Unavailable(e.to_string()),
        };
        let pair = self.serving.pair().map_err(error)?;
        let as_of = now_ms();
        let served = self
            .serving
            .profile(&pair, tenant, user, as_of, None)
            .map_err(error)?;
        Ok(ProfileRead {
            freshness: self.serving.freshness(&pair, as_of),
            serving: self.serving.clone(),
            served,
        })
    }

    /// Stops the speed layer (at a batch boundary) and the view watcher.
    pub async fn close(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Task(format!(
                "the embedded reader panicked: {e}"
            ))),
        }
    }
}
