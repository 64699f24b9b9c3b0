//! `weft-bench floor`: what the serving layer cannot beat.
//!
//! **The floor** (`weft-bench floor`) is a tonic server implementing
//! `weft.v1.ProfileService` that answers every `GetProfile` with one
//! response fetched once from the real `weft serve`: no key check, no
//! lookup, no merge, only HTTP/2, protobuf encoding and tonic's own
//! dispatch. Same message, same size, same transport: the gap between it
//! and `weft serve` is exactly what Weft adds. `weft serve` writes a
//! small reply in one system call where plain tonic takes two
//! (`weft_serving::conn`); `--one-write` gives the floor the same
//! connections, to separate that from the rest.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use prost::Message;
use tonic::{Request, Response, Status};
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_proto::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use weft_proto::v1::{
    BatchGetProfilesRequest, BatchGetProfilesResponse, GetProfileRequest, GetProfileResponse,
    GetRecommendationsRequest, GetRecommendationsResponse, Profile,
};

use crate::common::{authorized, bearer, connect, profile_request, status_error};

#[derive(Debug, Args)]
pub(crate) struct FloorArgs {
    /// Address to listen on (gRPC, plaintext HTTP/2).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// The `weft serve` gRPC address to fetch the fixed answers from.
    #[arg(long)]
    from: String,
    /// API key for --from.
    #[arg(long)]
    key: String,
    /// The user whose profile every `GetProfile` returns.
    #[arg(long, default_value = "u0000000")]
    user: String,
    /// Serve over `weft serve`'s gRPC connections (`ReplyStream`: a reply
    /// under 1 KiB leaves in one write) instead of tonic's plain TCP ones:
    /// the floor for Weft's transport rather than tonic's.
    #[arg(long)]
    one_write: bool,
}

/// The floor: fixed answers, fetched once.
#[derive(Debug, Clone)]
struct Floor {
    profile: Arc<GetProfileResponse>,
    /// `BatchGetProfiles` returns this profile once per requested id.
    batch_profile: Arc<Profile>,
    /// `None`: the key may not read recommendations; UNIMPLEMENTED.
    recommendations: Option<Arc<GetRecommendationsResponse>>,
}

#[tonic::async_trait]
impl ProfileService for Floor {
    async fn get_profile(
        &self,
        _: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        Ok(Response::new((*self.profile).clone()))
    }

    async fn batch_get_profiles(
        &self,
        req: Request<BatchGetProfilesRequest>,
    ) -> Result<Response<BatchGetProfilesResponse>, Status> {
        Ok(Response::new(BatchGetProfilesResponse {
            profiles: req
                .get_ref()
                .user_ids
                .iter()
                .map(|_| (*self.batch_profile).clone())
                .collect(),
            freshness: self.profile.freshness.clone(),
        }))
    }

    async fn get_recommendations(
        &self,
        _: Request<GetRecommendationsRequest>,
    ) -> Result<Response<GetRecommendationsResponse>, Status> {
        match &self.recommendations {
            Some(r) => Ok(Response::new((**r).clone())),
            None => Err(Status::unimplemented(
                "the floor could not fetch recommendations with its key",
            )),
        }
    }
}

async fn fetch_floor(a: &FloorArgs) -> Result<Floor> {
    let auth = bearer(&a.key)?;
    let mut client = ProfileServiceClient::new(connect(&a.from).await?);
    let profile = client
        .get_profile(authorized(profile_request(&a.user, &[]), &auth))
        .await
        .map_err(|s| status_error(&format!("GetProfile {} from {}", a.user, a.from), &s))?
        .into_inner();
    match &profile.profile {
        Some(p) if p.found => {}
        _ => eprintln!(
            "warning: {} has no events at {}; the floor answers with an empty profile",
            a.user, a.from
        ),
    }
    let batch_profile = profile.profile.clone().unwrap_or_default();
    let recommendations = match client
        .get_recommendations(authorized(
            GetRecommendationsRequest {
                user_id: a.user.clone(),
                n: 10,
                ..Default::default()
            },
            &auth,
        ))
        .await
    {
        Ok(r) => Some(Arc::new(r.into_inner())),
        Err(s) => {
            eprintln!(
                "note: GetRecommendations from {} failed ({:?}: {}); the floor answers it UNIMPLEMENTED",
                a.from,
                s.code(),
                s.message()
            );
            None
        }
    };
    Ok(Floor {
        profile: Arc::new(profile),
        batch_profile: Arc::new(batch_profile),
        recommendations,
    })
}

/// `weft-bench floor`: serves the fixed answers until SIGINT/SIGTERM.
pub(crate) fn floor(a: &FloorArgs) -> Result<()> {
    let rt = weft_core::runtime::multi_thread("weft-floor", 2)?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let floor = fetch_floor(a).await?;
        let size = floor.profile.encoded_len();
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "floor: gRPC {addr}, answering every GetProfile with {}'s profile ({size} bytes) from {}{}",
            a.user,
            a.from,
            if a.one_write { ", one write a reply" } else { "" }
        );
        let server = tonic::transport::Server::builder().add_service(ProfileServiceServer::new(floor));
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        if a.one_write {
            let incoming = weft_serving::conn::incoming(listener);
            server.serve_with_incoming_shutdown(incoming, stop).await
        } else {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(incoming, stop).await
        }
        .context("serving the floor")
    })
}
