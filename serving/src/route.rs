//! Shards: which node answers a user, and calls forwarded to the owner.
//!
//! A user's events, speed state and batch view data live on one Kafka
//! partition (`weft_core::partition::partition_for_key` of
//! `tenant/user_id`). An unsharded node owns every partition. A shard
//! (`serve.partitions` or `serve.shard`) owns some and `serve.peers` own the
//! rest, each once ([`weft_config::WeftConfig::shard`] checks that).
//!
//! A call for a user of another shard's partition is forwarded to that
//! shard over gRPC ([`Forward`]): one hop, with the caller's key, the
//! deadline left as `grpc-timeout` and the hop header [`HOP`]; the owner's
//! answer, its freshness included, is returned as it came. A forwarded call
//! that reaches a node that does not own the user is FAILED_PRECONDITION
//! (the nodes' `serve.peers` disagree), never forwarded again. An owner that
//! cannot be reached is UNAVAILABLE naming the partition and the peer, and
//! no call waits past its deadline for one.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use weft_config::{PartitionSet, Shard};
use weft_core::partition::partition_for_user;
use weft_proto::v1;
use weft_proto::v1::profile_service_client::ProfileServiceClient;

use crate::api::Method;
use crate::error::ApiError;
use crate::gate::Deadline;
use crate::metrics::RequestMetrics;

/// The metadata key of a forwarded call; its value is the forwarding
/// node's partitions (for the error a misrouted call gets).
pub const HOP: &str = "weft-forwarded-by";

/// How long a forwarding node waits for a TCP connection to a peer; a call
/// still never waits past its own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Which partitions this node owns and who owns the others.
#[derive(Debug)]
pub struct Shards {
    topic: u32,
    owned: PartitionSet,
    /// `owned` as the text a hop header carries ("0-3").
    owned_text: Arc<str>,
    /// Per partition of the topic: None (this node) or the owning peer.
    owners: Vec<Option<usize>>,
    peers: Vec<Arc<Peer>>,
}

/// Another shard and a (lazily connected) client for it.
#[derive(Debug)]
pub struct Peer {
    /// Its `serve.peers` gRPC address (and the `peer` metrics label).
    pub grpc: Arc<str>,
    pub partitions: PartitionSet,
    client: ProfileServiceClient<Channel>,
    /// The last forwarded call's outcome, for `/shards`.
    last: Mutex<Option<Outcome>>,
}

/// How a forwarded call ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// Wall clock, ms.
    pub at_ms: i64,
    /// The gRPC code's name (`OK`, `UNAVAILABLE`, ...).
    pub code: &'static str,
    /// The error, if any.
    pub error: Option<String>,
}

impl Peer {
    /// The last forwarded call's outcome (None: none yet).
    pub fn last(&self) -> Option<Outcome> {
        self.last.lock().ok()?.clone()
    }
}

impl Shards {
    /// A node that owns every partition of a topic of `topic` partitions.
    pub fn unsharded(topic: u32) -> Shards {
        Shards::only(topic, PartitionSet::all(topic))
    }

    /// A node that owns `owned` of a topic of `topic` partitions and knows
    /// no peers (an embedded reader: it answers only its own users).
    pub fn only(topic: u32, owned: PartitionSet) -> Shards {
        Shards {
            topic,
            owned_text: owned.to_string().into(),
            owned,
            owners: vec![None; topic as usize],
            peers: Vec::new(),
        }
    }

    /// A shard: its partitions, and a client per peer (connected on first
    /// use, reconnected after a failure). The error names the key.
    pub fn new(shard: &Shard) -> Result<Shards, String> {
        let mut owners = vec![None; shard.partitions as usize];
        let mut peers = Vec::with_capacity(shard.peers.len());
        for (i, p) in shard.peers.iter().enumerate() {
            let endpoint = Endpoint::from_shared(p.grpc.clone())
                .map_err(|e| format!("serve.peers[{i}].grpc: {:?}: {e}", p.grpc))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            for partition in p.partitions.iter() {
                owners[partition as usize] = Some(i);
            }
            peers.push(Arc::new(Peer {
                grpc: p.grpc.as_str().into(),
                partitions: p.partitions.clone(),
                client: ProfileServiceClient::new(endpoint.connect_lazy()),
                last: Mutex::new(None),
            }));
        }
        Ok(Shards {
            topic: shard.partitions,
            owned_text: shard.owned.to_string().into(),
            owned: shard.owned.clone(),
            owners,
            peers,
        })
    }

    /// The topic's partition count.
    pub fn topic(&self) -> u32 {
        self.topic
    }

    /// The partitions this node owns.
    pub fn owned(&self) -> &PartitionSet {
        &self.owned
    }

    pub fn peers(&self) -> &[Arc<Peer>] {
        &self.peers
    }

    /// The partition of `tenant`'s `user` and, when another node owns it,
    /// that node (its index in [`Shards::peers`]). A node without peers
    /// answers every user itself and does not hash: (-1, None).
    pub fn owner(&self, tenant: &str, user: &str) -> (i32, Option<usize>) {
        if self.peers.is_empty() {
            return (-1, None);
        }
        let partition = partition_for_user(tenant, user, self.topic);
        (partition, self.owners[partition as usize])
    }

    /// A call of `user`'s partition `partition`, to be sent to peer `peer`:
    /// FAILED_PRECONDITION when the call was already forwarded (`hop`).
    pub(crate) fn forward(
        &self,
        peer: usize,
        partition: i32,
        hop: Option<&str>,
        authorization: Option<&str>,
        deadline: Deadline,
        metrics: &Arc<RequestMetrics>,
    ) -> Result<Forward, ApiError> {
        if let Some(by) = hop {
            return Err(ApiError::FailedPrecondition(format!(
                "partition {partition} is not this node's (it owns {}), and the call was already \
                 forwarded once, by the owner of partitions {}: the nodes' serve.peers disagree",
                self.owned,
                crate::state::truncate(by, 64)
            )));
        }
        Ok(Forward {
            peer: self.peers[peer].clone(),
            partition,
            authorization: authorization.map(str::to_string),
            deadline,
            hop: self.owned_text.clone(),
            metrics: metrics.clone(),
        })
    }
}

/// One call on its way to the owner of its user's partition.
#[derive(Debug)]
pub struct Forward {
    peer: Arc<Peer>,
    partition: i32,
    authorization: Option<String>,
    deadline: Deadline,
    hop: Arc<str>,
    metrics: Arc<RequestMetrics>,
}

impl Forward {
    pub async fn get_profile(
        self,
        req: v1::GetProfileRequest,
    ) -> Result<v1::GetProfileResponse, ApiError> {
        self.send(Method::GetProfile, req, |mut c, r| async move {
            c.get_profile(r).await
        })
        .await
    }

    pub async fn batch_get_profiles(
        self,
        req: v1::BatchGetProfilesRequest,
    ) -> Result<v1::BatchGetProfilesResponse, ApiError> {
        self.send(Method::BatchGetProfiles, req, |mut c, r| async move {
            c.batch_get_profiles(r).await
        })
        .await
    }

    pub async fn get_recommendations(
        self,
        req: v1::GetRecommendationsRequest,
    ) -> Result<v1::GetRecommendationsResponse, ApiError> {
        self.send(Method::GetRecommendations, req, |mut c, r| async move {
            c.get_recommendations(r).await
        })
        .await
    }

    async fn send<Req, Resp, Fut>(
        self,
        method: Method,
        req: Req,
        rpc: impl FnOnce(ProfileServiceClient<Channel>, Request<Req>) -> Fut,
    ) -> Result<Resp, ApiError>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.deadline.check()?;
        let left = self.deadline.at.saturating_duration_since(Instant::now());
        let mut request = Request::new(req);
        request.set_timeout(left);
        let md = request.metadata_mut();
        if let Some(a) = &self.authorization {
            // It came in as a valid metadata value.
            if let Ok(v) = a.parse() {
                md.insert("authorization", v);
            }
        }
        if let Ok(v) = self.hop.parse() {
            md.insert(HOP, v);
        }
        let sent = Instant::now();
        let out = match tokio::time::timeout(left, rpc(self.peer.client.clone(), request)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(self.owner_error(&status)),
            Err(_) => Err(ApiError::DeadlineExceeded(format!(
                "partition {}: its owner {} did not answer within the deadline",
                self.partition, self.peer.grpc
            ))),
        };
        let code = out.as_ref().map_or_else(ApiError::code, |_| Code::Ok);
        self.metrics
            .observe_forward(method.name(), &self.peer.grpc, code, sent);
        if let Ok(mut last) = self.peer.last.lock() {
            *last = Some(Outcome {
                at_ms: crate::state::now_ms(),
                code: crate::error::code_name(code),
                error: out.as_ref().err().map(ToString::to_string),
            });
        }
        out
    }

    /// The owner's error, or the transport's, as this node's answer: the
    /// owner's code and message, the partition and peer named; a peer
    /// that cannot be reached is UNAVAILABLE.
    fn owner_error(&self, status: &Status) -> ApiError {
        let (partition, peer) = (self.partition, &self.peer.grpc);
        let message = status.message();
        match status.code() {
            // tonic reports a refused or broken connection as UNAVAILABLE
            // or UNKNOWN ("transport error").
            Code::Unavailable | Code::Unknown | Code::Cancelled => ApiError::Unavailable(format!(
                "partition {partition}: its owner {peer} is unavailable: {message}"
            )),
            code => ApiError::from_code(
                code,
                format!("{message} (answered by partition {partition}'s owner {peer})"),
            ),
        }
    }
}

impl Shards {
    /// What `GET /shards` shows: this node's partitions and, per peer, its
    /// partitions, address and the last forwarded call's outcome.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "topic_partitions": self.topic,
            "owned_partitions": self.owned.to_string(),
            "peers": self.peers.iter().map(|p| serde_json::json!({
                "grpc": &*p.grpc,
                "partitions": p.partitions.to_string(),
                "last_forward": p.last(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// One freshness for an answer several nodes gave (BatchGetProfiles over
/// shards): their partitions' union, the lag summed over them (they are
/// disjoint), every other field the worst.
pub fn merge_freshness(mut a: v1::Freshness, b: &v1::Freshness) -> v1::Freshness {
    if b.batch_view_version < a.batch_view_version {
        a.batch_view_version = b.batch_view_version;
        a.batch_view_created_ms = b.batch_view_created_ms;
        a.batch_offsets = b.batch_offsets.clone();
    }
    a.batch_view_age_ms = a.batch_view_age_ms.max(b.batch_view_age_ms);
    a.speed_generation = a.speed_generation.min(b.speed_generation);
    a.speed_lag_messages += b.speed_lag_messages;
    a.speed_lag_ms = a.speed_lag_ms.max(b.speed_lag_ms);
    a.as_of_ms = a.as_of_ms.min(b.as_of_ms);
    // 0 is "not read yet": it stays the worst.
    a.speed_lag_as_of_ms = a.speed_lag_as_of_ms.min(b.speed_lag_as_of_ms);
    a.topic_partitions = a.topic_partitions.max(b.topic_partitions);
    a.owned_partitions.extend_from_slice(&b.owned_partitions);
    a.owned_partitions.sort_unstable();
    a.owned_partitions.dedup();
    a
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn freshness(view: u64, lag: i64, lag_as_of: i64, owned: &[i32]) -> v1::Freshness {
        v1::Freshness {
            batch_view_version: view,
            batch_view_created_ms: view as i64 * 1000,
            batch_view_age_ms: 10 * view as i64,
            speed_generation: view,
            speed_lag_messages: lag,
            speed_lag_ms: lag * 2,
            as_of_ms: 5000 + view as i64,
            speed_lag_as_of_ms: lag_as_of,
            topic_partitions: 6,
            owned_partitions: owned.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn merged_freshness_is_the_worst_and_sums_the_lag() {
        let m = merge_freshness(
            freshness(3, 2, 900, &[2, 3]),
            &freshness(2, 5, 800, &[0, 1]),
        );
        assert_eq!(m.batch_view_version, 2);
        assert_eq!(m.batch_view_created_ms, 2000);
        assert_eq!(m.batch_view_age_ms, 30);
        assert_eq!(m.speed_generation, 2);
        assert_eq!(m.speed_lag_messages, 7);
        assert_eq!(m.speed_lag_ms, 10);
        assert_eq!(m.as_of_ms, 5002);
        assert_eq!(m.speed_lag_as_of_ms, 800);
        assert_eq!(m.owned_partitions, vec![0, 1, 2, 3]);
        // A node whose lag is not known yet makes the whole answer's unknown.
        let m = merge_freshness(m, &freshness(3, 0, 0, &[4, 5]));
        assert_eq!(m.speed_lag_as_of_ms, 0);
        assert_eq!(m.owned_partitions, vec![0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn owners_follow_the_producers_partitioner() {
        let shard = Shard {
            partitions: 4,
            owned: PartitionSet::parse("0-1").unwrap(),
            peers: vec![weft_config::Peer {
                partitions: PartitionSet::parse("2-3").unwrap(),
                grpc: "http://127.0.0.1:9".into(),
            }],
        };
        let shards = Shards::new(&shard).unwrap();
        for u in 0..200 {
            let user = format!("u{u}");
            let p = weft_core::partition::partition_for_key(format!("acme/{user}").as_bytes(), 4);
            let (partition, peer) = shards.owner("acme", &user);
            assert_eq!(partition, p);
            assert_eq!(peer, (p >= 2).then_some(0));
        }
        assert_eq!(Shards::unsharded(4).owner("acme", "u1"), (-1, None));
    }
}
