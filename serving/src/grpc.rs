//! The gRPC front end: `weft.v1.ProfileService` over [`Api`].
//!
//! The key comes from the `authorization` metadata, the deadline from
//! `grpc-timeout`. Lookups are in-memory probes or RocksDB point reads
//! (microseconds), so they run on the request's task rather than a
//! blocking pool.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use weft_proto::v1;
use weft_proto::v1::profile_service_server::ProfileService;

use crate::api::{Api, Call, Method, Routed};
use crate::gate::Arrival;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct Grpc(pub Arc<Api>);

pub(crate) fn call<'a, T>(method: Method, req: &'a Request<T>) -> Call<'a> {
    Call {
        method,
        authorization: req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        timeout: req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok()),
        hop: req
            .metadata()
            .get(crate::route::HOP)
            .and_then(|v| v.to_str().ok()),
        origin: None,
        arrival: req
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0),
    }
}

#[tonic::async_trait]
impl ProfileService for Grpc {
    /// `weft serve` answers GetProfile through its own encoder instead
    /// (the same bytes, without building this message); this keeps the
    /// generated service whole for anything that mounts it directly.
    async fn get_profile(
        &self,
        req: Request<v1::GetProfileRequest>,
    ) -> Result<Response<v1::GetProfileResponse>, Status> {
        let c = call(Method::GetProfile, &req);
        let api = &self.0;
        let reply = match api.run_routed("grpc", &c, &req.get_ref().user_id, |p, _| {
            api.get_profile(p, req.get_ref())
        })? {
            Routed::Here(r) => r,
            Routed::There(f) => {
                let answer = f.get_profile(req.get_ref().clone());
                api.finish("grpc", c.method, c.arrival, answer).await?
            }
        };
        Ok(Response::new(reply))
    }

    async fn batch_get_profiles(
        &self,
        req: Request<v1::BatchGetProfilesRequest>,
    ) -> Result<Response<v1::BatchGetProfilesResponse>, Status> {
        let c = call(Method::BatchGetProfiles, &req);
        self.0
            .batch_get_profiles_routed("grpc", &c, req.get_ref().clone())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_recommendations(
        &self,
        req: Request<v1::GetRecommendationsRequest>,
    ) -> Result<Response<v1::GetRecommendationsResponse>, Status> {
        let c = call(Method::GetRecommendations, &req);
        let api = &self.0;
        let reply = match api.run_routed("grpc", &c, &req.get_ref().user_id, |p, _| {
            api.get_recommendations(p, req.get_ref())
        })? {
            Routed::Here(r) => r,
            Routed::There(f) => {
                let answer = f.get_recommendations(req.get_ref().clone());
                api.finish("grpc", c.method, c.arrival, answer).await?
            }
        };
        Ok(Response::new(reply))
    }
}
