//! The three calls, shared by the gRPC and HTTP front ends: validation,
//! scopes, deadlines, the merged read and the reply with its freshness.
//! Each front end only translates its transport to and from these.
//!
//! On a shard, a call for a user of another shard's partition is routed
//! there after the key and scope checks ([`Api::run_routed`],
//! [`Api::batch_get_profiles_routed`]; `route` has the rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_proto::v1;

use crate::auth::{Keys, Principal, Scope};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::gate::{Deadline, parse_grpc_timeout};
use crate::metrics::RequestMetrics;
use crate::recs::{RecsFeatures, RecsRequest, recommend};
use crate::route::{Forward, Shards, merge_freshness};
use crate::state::{Pair, Served, Serving, now_ms, to_proto, truncate};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Api {
    pub serving: Arc<Serving>,
    pub keys: Keys,
    pub limits: ServerConfig,
    pub recs: RecsFeatures,
    pub metrics: Arc<RequestMetrics>,
    /// The partitions this node owns and its peers.
    pub shards: Shards,
}

/// A call routed by its user: answered here, or to be sent to the owner.
#[derive(Debug)]
pub enum Routed<T> {
    Here(T),
    There(Forward),
}

/// Which call, for scopes, spans and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GetProfile,
    BatchGetProfiles,
    GetRecommendations,
    /// `POST /v1/events` (HTTP only).
    CollectEvents,
    /// `GET /ops`, the operator page (HTTP only).
    Ops,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::GetProfile => "GetProfile",
            Method::BatchGetProfiles => "BatchGetProfiles",
            Method::GetRecommendations => "GetRecommendations",
            Method::CollectEvents => "CollectEvents",
            Method::Ops => "Ops",
        }
    }

    fn scope(self) -> Scope {
        match self {
            Method::GetProfile | Method::BatchGetProfiles => Scope::ProfileRead,
            Method::GetRecommendations => Scope::RecommendationsRead,
            Method::CollectEvents => Scope::EventsWrite,
            Method::Ops => Scope::Admin,
        }
    }
}

/// The transport-independent facts of one request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: Method,
    pub authorization: Option<&'a str>,
    /// The client's `grpc-timeout` value, if any.
    pub timeout: Option<&'a str>,
    /// The [`crate::route::HOP`] header of a call another node forwarded.
    pub hop: Option<&'a str>,
    /// The browser's `Origin` (HTTP): it must be one the key's tenant
    /// allows (`tenants.allowed_origins`), and the key a publishable one.
    pub origin: Option<&'a str>,
    pub arrival: Instant,
}

impl Api {
    /// Authenticates, checks the scope and fixes the deadline.
    pub fn begin(&self, call: &Call<'_>) -> Result<(Principal, Deadline), ApiError> {
        let principal = self.keys.authenticate(call.authorization)?;
        principal.require(call.method.scope())?;
        if let Some(o) = call.origin {
            if !principal.publishable {
                // A page's script is public: a server key it carries is leaked.
                return Err(ApiError::PermissionDenied(format!(
                    "key {:?} is a server key, refused from a browser (origin {o:?}): pages use the tenant's publishable key",
                    &*principal.key_name
                )));
            }
            if !principal.allows_origin(o) {
                return Err(ApiError::PermissionDenied(format!(
                    "origin {o:?} is not allowed for tenant {:?}",
                    &*principal.tenant
                )));
            }
        }
        let budget = match call.timeout {
            None => Duration::from_millis(self.limits.default_deadline_ms),
            Some(v) => parse_grpc_timeout(v).ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "grpc-timeout {:?} is not a valid timeout",
                    truncate(v, 16)
                ))
            })?,
        };
        let deadline = Deadline::new(call.arrival, budget);
        deadline.check()?;
        Ok((principal, deadline))
    }

    fn check_id(&self, what: &str, id: &str) -> Result<(), ApiError> {
        if id.is_empty() {
            return Err(ApiError::InvalidArgument(format!("{what} is empty")));
        }
        if id.len() > self.limits.max_id_bytes {
            return Err(ApiError::InvalidArgument(format!(
                "{what} is {} bytes; the limit is {} (serve.max_id_bytes)",
                id.len(),
                self.limits.max_id_bytes
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(ApiError::InvalidArgument(format!(
                "{what} contains control characters"
            )));
        }
        Ok(())
    }

    /// Runs one call end to end and records its latency and status.
    pub fn run<T>(
        &self,
        protocol: &'static str,
        call: &Call<'_>,
        work: impl FnOnce(&Principal, &Deadline) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let out = self.attempt(protocol, call, work);
        self.record(protocol, call.method, call.arrival, &out);
        out
    }

    /// [`Api::run`] for a call about `user`: answered by `work` when this
    /// node owns the user's partition, else [`Routed::There`], recorded
    /// once the caller has the owner's answer ([`Api::finish`]).
    pub fn run_routed<T>(
        &self,
        protocol: &'static str,
        call: &Call<'_>,
        user: &str,
        work: impl FnOnce(&Principal, &Deadline) -> Result<T, ApiError>,
    ) -> Result<Routed<T>, ApiError> {
        let out = self.attempt(protocol, call, |principal, deadline| {
            self.check_id("user_id", user)?;
            match self.shards.owner(&principal.tenant, user) {
                (_, None) => work(principal, deadline).map(Routed::Here),
                (partition, Some(peer)) => self
                    .shards
                    .forward(
                        peer,
                        partition,
                        call.hop,
                        call.authorization,
                        *deadline,
                        &self.metrics,
                    )
                    .map(Routed::There),
            }
        });
        if !matches!(out, Ok(Routed::There(_))) {
            self.record(protocol, call.method, call.arrival, &out);
        }
        out
    }

    /// Awaits a forwarded call's answer and records the call; a call
    /// dropped before its answer (the client went away) is recorded as
    /// CANCELLED.
    pub async fn finish<T>(
        &self,
        protocol: &'static str,
        method: Method,
        arrival: Instant,
        answer: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        struct Pending<'a> {
            metrics: &'a RequestMetrics,
            protocol: &'static str,
            method: Method,
            arrival: Instant,
            done: bool,
        }
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                if !self.done {
                    self.metrics.observe(
                        self.protocol,
                        self.method.name(),
                        tonic::Code::Cancelled,
                        self.arrival,
                    );
                }
            }
        }
        let mut pending = Pending {
            metrics: &self.metrics,
            protocol,
            method,
            arrival,
            done: false,
        };
        let out = answer.await;
        pending.done = true;
        self.record(protocol, method, arrival, &out);
        out
    }

    /// The key, scope and deadline checks, then `work`, in a span.
    fn attempt<T>(
        &self,
        protocol: &'static str,
        call: &Call<'_>,
        work: impl FnOnce(&Principal, &Deadline) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.begin(call).and_then(|(principal, deadline)| {
            let _span = tracing::debug_span!(
                "request",
                protocol,
                method = call.method.name(),
                tenant = %principal.tenant,
                key = %principal.key_name,
            )
            .entered();
            let out = work(&principal, &deadline)?;
            deadline.check()?;
            Ok(out)
        })
    }

    /// Records a call's latency and status (and logs a server fault).
    fn record<T>(
        &self,
        protocol: &'static str,
        method: Method,
        arrival: Instant,
        out: &Result<T, ApiError>,
    ) {
        let code = out
            .as_ref()
            .map_or_else(ApiError::code, |_| tonic::Code::Ok);
        if code == tonic::Code::Internal
            && let Err(e) = out
        {
            tracing::error!(error = %e, method = method.name(), "request failed");
        }
        self.metrics.observe(protocol, method.name(), code, arrival);
    }

    pub fn get_profile(
        &self,
        principal: &Principal,
        req: &v1::GetProfileRequest,
    ) -> Result<v1::GetProfileResponse, ApiError> {
        let (pair, as_of, served) = self.serve_profile(principal, req)?;
        Ok(profile_response(
            &self.serving,
            &pair,
            &req.user_id,
            served,
            as_of,
        ))
    }

    /// GetProfile's work: the checks, the pair, the served profile (which
    /// the gRPC front end encodes without building the message).
    pub(crate) fn serve_profile(
        &self,
        principal: &Principal,
        req: &v1::GetProfileRequest,
    ) -> Result<(Arc<Pair>, i64, Served), ApiError> {
        self.check_id("user_id", &req.user_id)?;
        let features = self.serving.select(&req.features)?;
        let pair = self.serving.pair()?;
        let as_of = now_ms();
        let served = self.serving.profile(
            &pair,
            &principal.tenant,
            &req.user_id,
            as_of,
            features.as_deref(),
        )?;
        Ok((pair, as_of, served))
    }

    pub fn batch_get_profiles(
        &self,
        principal: &Principal,
        deadline: &Deadline,
        req: &v1::BatchGetProfilesRequest,
    ) -> Result<v1::BatchGetProfilesResponse, ApiError> {
        self.check_batch(req)?;
        let features = self.serving.select(&req.features)?;
        let (profiles, freshness) =
            self.profiles_here(principal, deadline, &req.user_ids, features.as_deref())?;
        Ok(v1::BatchGetProfilesResponse {
            profiles,
            freshness: Some(freshness),
        })
    }

    /// BatchGetProfiles on a shard: the request split by owner, this
    /// node's users read here while the others' owners are asked in
    /// parallel (one call each), the profiles put back in request order
    /// and the freshness merged ([`merge_freshness`]). Recorded once.
    pub async fn batch_get_profiles_routed(
        &self,
        protocol: &'static str,
        call: &Call<'_>,
        req: v1::BatchGetProfilesRequest,
    ) -> Result<v1::BatchGetProfilesResponse, ApiError> {
        let mut split = None;
        let out = self.attempt(protocol, call, |principal, deadline| {
            self.check_batch(&req)?;
            let features = self.serving.select(&req.features)?;
            // Per peer: the positions of its users in the request.
            let mut there: Vec<Vec<usize>> = vec![Vec::new(); self.shards.peers().len()];
            let mut here = Vec::with_capacity(req.user_ids.len());
            let mut partition_of = Vec::with_capacity(self.shards.peers().len());
            for (i, id) in req.user_ids.iter().enumerate() {
                match self.shards.owner(&principal.tenant, id) {
                    (_, None) => here.push(i),
                    (partition, Some(peer)) => {
                        if there[peer].is_empty() {
                            partition_of.push((peer, partition));
                        }
                        there[peer].push(i);
                    }
                }
            }
            // The other owners are asked first (each on its own task), so
            // that they answer while this node reads its own users.
            let mut forwards = Vec::with_capacity(partition_of.len());
            for (peer, partition) in partition_of {
                let f = self.shards.forward(
                    peer,
                    partition,
                    call.hop,
                    call.authorization,
                    *deadline,
                    &self.metrics,
                )?;
                let sub = v1::BatchGetProfilesRequest {
                    user_ids: there[peer]
                        .iter()
                        .map(|&i| req.user_ids[i].clone())
                        .collect(),
                    features: req.features.clone(),
                };
                forwards.push((
                    std::mem::take(&mut there[peer]),
                    tokio::spawn(f.batch_get_profiles(sub)),
                ));
            }
            let ids: Vec<String> = here.iter().map(|&i| req.user_ids[i].clone()).collect();
            let local = if ids.is_empty() {
                None
            } else {
                match self.profiles_here(principal, deadline, &ids, features.as_deref()) {
                    Ok(local) => Some(local),
                    Err(e) => {
                        for (_, call) in &forwards {
                            call.abort();
                        }
                        return Err(e);
                    }
                }
            };
            split = Some((here, local, forwards));
            Ok(())
        });
        let (here, local, forwards) = match (out, split) {
            (Ok(()), Some(split)) => split,
            (out, _) => {
                let out = out.map(|()| v1::BatchGetProfilesResponse::default());
                self.record(protocol, call.method, call.arrival, &out);
                return out;
            }
        };
        let answer = async {
            let mut profiles: Vec<Option<v1::Profile>> = vec![None; req.user_ids.len()];
            let mut freshness = None;
            if let Some((local, f)) = local {
                for (i, p) in here.into_iter().zip(local) {
                    profiles[i] = Some(p);
                }
                freshness = Some(f);
            }
            for (positions, call) in forwards {
                let answer = call.await.map_err(|e| {
                    ApiError::Internal(format!("a forwarded call's task failed: {e}"))
                })??;
                if answer.profiles.len() != positions.len() {
                    return Err(ApiError::Internal(format!(
                        "a peer answered {} profiles for {} user_ids",
                        answer.profiles.len(),
                        positions.len()
                    )));
                }
                for (i, p) in positions.into_iter().zip(answer.profiles) {
                    profiles[i] = Some(p);
                }
                let f = answer.freshness.unwrap_or_default();
                freshness = Some(match freshness {
                    None => f,
                    Some(mine) => merge_freshness(mine, &f),
                });
            }
            Ok(v1::BatchGetProfilesResponse {
                profiles: profiles
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
                freshness,
            })
        };
        self.finish(protocol, call.method, call.arrival, answer)
            .await
    }

    /// The checks of a BatchGetProfiles request.
    fn check_batch(&self, req: &v1::BatchGetProfilesRequest) -> Result<(), ApiError> {
        if req.user_ids.is_empty() {
            return Err(ApiError::InvalidArgument("user_ids is empty".into()));
        }
        if req.user_ids.len() > self.limits.max_batch_ids {
            return Err(ApiError::InvalidArgument(format!(
                "{} user_ids; at most {} per call (serve.max_batch_ids)",
                req.user_ids.len(),
                self.limits.max_batch_ids
            )));
        }
        for (i, id) in req.user_ids.iter().enumerate() {
            self.check_id(&format!("user_ids[{i}]"), id)?;
        }
        Ok(())
    }

    /// The profiles of `ids`, read here, and their freshness.
    fn profiles_here(
        &self,
        principal: &Principal,
        deadline: &Deadline,
        ids: &[String],
        features: Option<&[usize]>,
    ) -> Result<(Vec<v1::Profile>, v1::Freshness), ApiError> {
        let pair = self.serving.pair()?;
        let as_of = now_ms();
        let mut profiles = Vec::with_capacity(ids.len());
        for id in ids {
            deadline.check()?;
            let served = self
                .serving
                .profile(&pair, &principal.tenant, id, as_of, features)?;
            profiles.push(profile_message(&self.serving, id, served));
        }
        Ok((profiles, self.serving.freshness(&pair, as_of)))
    }

    pub fn get_recommendations(
        &self,
        principal: &Principal,
        req: &v1::GetRecommendationsRequest,
    ) -> Result<v1::GetRecommendationsResponse, ApiError> {
        self.check_id("user_id", &req.user_id)?;
        let max = self.limits.max_recommendations;
        if req.n == 0 || req.n > max {
            return Err(ApiError::InvalidArgument(format!(
                "n = {}; it must be between 1 and {max} (serve.max_recommendations)",
                req.n
            )));
        }
        if !req.context_item_id.is_empty() {
            self.check_id("context_item_id", &req.context_item_id)?;
        }
        if req.exclude_item_ids.len() > self.limits.max_exclusions {
            return Err(ApiError::InvalidArgument(format!(
                "{} exclude_item_ids; at most {} (serve.max_exclusions)",
                req.exclude_item_ids.len(),
                self.limits.max_exclusions
            )));
        }
        for (i, id) in req.exclude_item_ids.iter().enumerate() {
            self.check_id(&format!("exclude_item_ids[{i}]"), id)?;
        }
        let pair = self.serving.pair()?;
        let as_of = now_ms();
        let items = recommend(
            &self.serving,
            &self.recs,
            &pair,
            &RecsRequest {
                tenant: &principal.tenant,
                user: &req.user_id,
                n: req.n as usize,
                context_item: Some(req.context_item_id.as_str()).filter(|c| !c.is_empty()),
                exclude: &req.exclude_item_ids,
                t_ms: as_of,
            },
        )?;
        Ok(v1::GetRecommendationsResponse {
            items,
            freshness: Some(self.serving.freshness(&pair, as_of)),
        })
    }
}

/// GetProfile's reply: the served profile and how fresh `pair` was at
/// `as_of`.
pub fn profile_response(
    serving: &Serving,
    pair: &Pair,
    user_id: &str,
    served: Served,
    as_of: i64,
) -> v1::GetProfileResponse {
    v1::GetProfileResponse {
        profile: Some(profile_message(serving, user_id, served)),
        freshness: Some(serving.freshness(pair, as_of)),
    }
}

/// The wire form of a served profile.
fn profile_message(serving: &Serving, user_id: &str, mut served: Served) -> v1::Profile {
    let spec = serving.spec();
    v1::Profile {
        user_id: user_id.to_string(),
        found: served.found,
        features: serving
            .by_name()
            .iter()
            .filter_map(|&i| {
                Some((
                    spec.features[i].name.clone(),
                    to_proto(served.values[i].take()?),
                ))
            })
            .collect(),
        segments: served
            .segments
            .iter()
            .map(|&i| spec.segments[i].name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{KeyConfig, TenantConfig, WeftConfig};
    use crate::state::Pair;

    fn key(name: &str, scopes: &[&str], publishable: bool) -> KeyConfig {
        KeyConfig {
            name: name.into(),
            key: format!("{name}-0123456789abcdef").into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            publishable,
        }
    }

    /// An API over an empty speed view (no broker needed).
    fn api(dir: &std::path::Path) -> Api {
        let spec =
            weft_core::FeatureSpec::parse(include_str!("../../deploy/features.example.toml"))
                .unwrap();
        let store = weft_speed::store::SpeedStore::open(dir, Arc::new(spec), false).unwrap();
        let serving = Arc::new(Serving::new(
            Arc::new(store),
            Arc::new(weft_speed::consumer::SpeedMetrics::default()),
        ));
        serving.switch(Pair::new(None, 0));
        let config = WeftConfig::default();
        let tenants = vec![TenantConfig {
            name: "acme".into(),
            allowed_origins: vec![],
            keys: vec![
                key("server", &["profile:read"], false),
                key("widget", &["recommendations:read"], true),
                key("ops", &["admin"], false),
            ],
        }];
        Api {
            recs: RecsFeatures::resolve(&serving, &config.recommendations).unwrap(),
            serving,
            keys: Keys::new(&tenants).unwrap(),
            limits: config.serve,
            metrics: Arc::default(),
            shards: Shards::unsharded(4),
        }
    }

    fn call<'a>(method: Method, key: &'a str, timeout: Option<&'a str>, age: Duration) -> Call<'a> {
        Call {
            method,
            authorization: Some(key),
            timeout,
            hop: None,
            origin: None,
            arrival: Instant::now() - age,
        }
    }

    #[test]
    fn deadlines_are_refused_at_once_when_already_spent() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let key = "Bearer server-0123456789abcdef";
        // A request that waited 2 ms for a 1 ms budget: refused before work.
        let c = call(
            Method::GetProfile,
            key,
            Some("1m"),
            Duration::from_millis(2),
        );
        let started = Instant::now();
        assert!(matches!(api.begin(&c), Err(ApiError::DeadlineExceeded(_))));
        assert!(started.elapsed() < Duration::from_millis(50));
        let c = call(Method::GetProfile, key, Some("5S"), Duration::ZERO);
        assert!(api.begin(&c).is_ok());
        let c = call(Method::GetProfile, key, Some("soon"), Duration::ZERO);
        assert!(matches!(api.begin(&c), Err(ApiError::InvalidArgument(_))));
        // No grpc-timeout: serve.default_deadline_ms applies.
        let c = call(Method::GetProfile, key, None, Duration::from_secs(2));
        assert!(matches!(api.begin(&c), Err(ApiError::DeadlineExceeded(_))));
    }

    #[test]
    fn scopes_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let begin = |m, k| api.begin(&call(m, k, None, Duration::ZERO)).map(|(p, _)| p);
        let widget = "Bearer widget-0123456789abcdef";
        assert!(matches!(
            begin(Method::GetProfile, widget),
            Err(ApiError::PermissionDenied(_))
        ));
        assert!(begin(Method::GetRecommendations, widget).is_ok());
        let server = "server-0123456789abcdef"; // the bare key works too
        assert!(matches!(
            begin(Method::GetRecommendations, server),
            Err(ApiError::PermissionDenied(_))
        ));
        let ops = "Bearer ops-0123456789abcdef";
        assert_eq!(
            &*begin(Method::BatchGetProfiles, ops).unwrap().tenant,
            "acme"
        );
        assert!(matches!(
            begin(Method::GetProfile, "Bearer server-0123456789abcdeF"),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(matches!(
            begin(Method::GetProfile, ""),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn an_unknown_user_is_found_false_with_freshness() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path());
        let (p, _) = api
            .begin(&call(
                Method::GetProfile,
                "Bearer server-0123456789abcdef",
                None,
                Duration::ZERO,
            ))
            .unwrap();
        let r = api
            .get_profile(
                &p,
                &v1::GetProfileRequest {
                    user_id: "nobody".into(),
                    features: vec!["views_7d".into()],
                },
            )
            .unwrap();
        let profile = r.profile.unwrap();
        assert!(!profile.found);
        assert!(profile.features.keys().all(|k| k == "views_7d"));
        let f = r.freshness.unwrap();
        assert_eq!((f.batch_view_version, f.speed_generation), (0, 0));
        assert!(f.as_of_ms > 0);
        // No batch view yet: no recommendation data, an empty answer.
        let (w, _) = api
            .begin(&call(
                Method::GetRecommendations,
                "Bearer widget-0123456789abcdef",
                None,
                Duration::ZERO,
            ))
            .unwrap();
        let r = api
            .get_recommendations(
                &w,
                &v1::GetRecommendationsRequest {
                    user_id: "nobody".into(),
                    n: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(r.items.is_empty());
    }
}
