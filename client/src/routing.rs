//! The routing client: each call to the shard that owns its user.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use weft_config::PartitionSet;
use weft_core::partition::partition_for_user;
use weft_proto::v1;
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_serving::route::merge_freshness;

/// A shard of the fleet: the partitions it owns (`serve.partitions`) and
/// its gRPC address (`http://host:port`).
#[derive(Debug, Clone)]
pub struct ShardAddress {
    pub partitions: PartitionSet,
    pub grpc: String,
}

/// Calls a sharded fleet for one tenant's key, each user at its owner.
#[derive(Debug, Clone)]
pub struct RoutingClient {
    tenant: String,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    topic: u32,
    /// Per partition: the index of its shard.
    owners: Vec<usize>,
    shards: Vec<ProfileServiceClient<Channel>>,
}

impl RoutingClient {
    /// A client of `shards`, which must own each of the topic's `topic`
    /// partitions once, for `tenant`'s API `key`. Connections are made on
    /// first use and remade after a failure.
    pub fn new(
        tenant: &str,
        key: &str,
        topic: u32,
        shards: &[ShardAddress],
    ) -> Result<RoutingClient, String> {
        if topic == 0 {
            return Err("a topic has at least one partition".into());
        }
        let mut owners = vec![usize::MAX; topic as usize];
        let mut clients = Vec::with_capacity(shards.len());
        for (i, s) in shards.iter().enumerate() {
            let beyond = s.partitions.beyond(topic);
            if !beyond.is_empty() {
                return Err(format!(
                    "shard {i} ({}): partitions {beyond} are not in a topic of {topic}",
                    s.grpc
                ));
            }
            for p in s.partitions.iter() {
                if owners[p as usize] != usize::MAX {
                    return Err(format!(
                        "partition {p} is owned by shard {} and shard {i} ({})",
                        owners[p as usize], s.grpc
                    ));
                }
                owners[p as usize] = i;
            }
            let endpoint = Endpoint::from_shared(s.grpc.clone())
                .map_err(|e| format!("shard {i}: {:?}: {e}", s.grpc))?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true);
            clients.push(ProfileServiceClient::new(endpoint.connect_lazy()));
        }
        if let Some(p) = owners.iter().position(|o| *o == usize::MAX) {
            return Err(format!("partition {p} of {topic} has no shard"));
        }
        let authorization = format!("Bearer {key}")
            .parse()
            .map_err(|_| "the key is not a valid header value".to_string())?;
        Ok(RoutingClient {
            tenant: tenant.to_string(),
            authorization,
            topic,
            owners,
            shards: clients,
        })
    }

    /// The partition of `user` and the index of the shard that owns it.
    pub fn owner(&self, user: &str) -> (i32, usize) {
        let p = partition_for_user(&self.tenant, user, self.topic);
        (p, self.owners[p as usize])
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", self.authorization.clone());
        r
    }

    /// GetProfile at the user's owner (`features` empty: all).
    pub async fn get_profile(
        &self,
        user: &str,
        features: &[String],
    ) -> Result<v1::GetProfileResponse, Status> {
        let (_, shard) = self.owner(user);
        let req = self.request(v1::GetProfileRequest {
            user_id: user.to_string(),
            features: features.to_vec(),
        });
        Ok(self.shards[shard]
            .clone()
            .get_profile(req)
            .await?
            .into_inner())
    }

    /// BatchGetProfiles split by owner, the shards asked in parallel, the
    /// profiles in request order; the freshness is merged as a forwarding
    /// shard merges it (`Freshness` in `weft.proto`).
    pub async fn batch_get_profiles(
        &self,
        users: &[String],
        features: &[String],
    ) -> Result<v1::BatchGetProfilesResponse, Status> {
        if users.is_empty() {
            // As a shard answers it.
            return Err(Status::invalid_argument("user_ids is empty"));
        }
        let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for (i, u) in users.iter().enumerate() {
            per_shard[self.owner(u).1].push(i);
        }
        let calls = per_shard
            .iter()
            .enumerate()
            .filter(|(_, positions)| !positions.is_empty())
            .map(|(shard, positions)| {
                let req = self.request(v1::BatchGetProfilesRequest {
                    user_ids: positions.iter().map(|&i| users[i].clone()).collect(),
                    features: features.to_vec(),
                });
                let mut client = self.shards[shard].clone();
                async move { client.batch_get_profiles(req).await }
            });
        let answers = futures::future::join_all(calls).await;
        let mut profiles = vec![v1::Profile::default(); users.len()];
        let mut freshness: Option<v1::Freshness> = None;
        let asked = per_shard.iter().filter(|p| !p.is_empty());
        for (positions, answer) in asked.zip(answers) {
            let answer = answer?.into_inner();
            if answer.profiles.len() != positions.len() {
                return Err(Status::internal(format!(
                    "a shard answered {} profiles for {} users",
                    answer.profiles.len(),
                    positions.len()
                )));
            }
            for (&i, p) in positions.iter().zip(answer.profiles) {
                profiles[i] = p;
            }
            let f = answer.freshness.unwrap_or_default();
            freshness = Some(match freshness {
                None => f,
                Some(mine) => merge_freshness(mine, &f),
            });
        }
        Ok(v1::BatchGetProfilesResponse {
            profiles,
            freshness,
        })
    }
}
