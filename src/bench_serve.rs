//! `weft bench floor`, `weft bench serve` and `weft bench freshness`: what
//! the serving layer costs, measured against what it cannot beat.
//!
//! * **The floor** (`weft bench floor`) is a tonic server implementing
//!   `weft.v1.ProfileService` that answers every `GetProfile` with one
//!   response fetched once from the real `weft serve`: no key check, no
//!   lookup, no merge, only HTTP/2, protobuf encoding and tonic's own
//!   dispatch. Same message, same size, same transport: the gap between it
//!   and `weft serve` is exactly what Weft adds. `weft serve` writes a
//!   small reply in one system call where plain tonic takes two
//!   (`weft_serving::conn`); `--one-write` gives the floor the same
//!   connections, to separate that from the rest.
//! * **Redis** is the peer: each user's `GetProfileResponse`, encoded once
//!   (`--load-redis`), stored under `profile:<user>` and read back with `GET`
//!   and decoded, so the client pays for decoding as it does over gRPC. It
//!   is what a team would run instead of Weft if it precomputed profiles
//!   into a key-value store.
//! * **weft serve** itself.
//!
//! `weft bench serve` measures every target given, one after the other, in
//! one run, with the same users (uniformly random among `u0000000 ..`), the
//! same number of workers and of connections, in two phases each:
//!
//! 1. *fixed rate*: an open loop at `--rate` requests/s in total. A pacer
//!    thread releases each request at its scheduled time; a request's
//!    latency is measured from that *scheduled* time, not from when a worker
//!    got around to sending it, so a target that stalls is charged for the
//!    requests it held back (no coordinated omission). The pacer's own delay
//!    (scheduled → sent, the load generator's overhead) is reported apart.
//! 2. *max throughput*: a closed loop, every worker sending back to back;
//!    latency from send to reply.
//!
//! `--phases` picks which of the two run (`fixed`, `max` or both, the
//! default), e.g. `--phases fixed` for a steady load while something else
//! happens to the server (`tests/bench/swaps_and_outage.sh`). With
//! `--timeline-secs W` the fixed-rate phase is also reported per window of
//! W seconds from the phase start (a request falls into the window of its
//! scheduled time): successes, errors, p99 and max latency, and for weft the
//! freshness its replies carried (the largest `speed_lag_ms` and
//! `speed_lag_messages`, the batch view versions seen). Workers keep their
//! own windows, merged at the end like the rest of their records; each row
//! also carries its phase's start as Unix milliseconds, so outside events
//! can be placed on the timeline.
//!
//! Latencies of successful replies go into HDR histograms in microseconds.
//! A failed request (any non-OK status, a Redis error, a missing Redis key,
//! a 5 s timeout) counts as an error, reported by kind, and the run goes on;
//! ratios over phases with errors are flagged as not comparable.
//!
//! `weft bench freshness` measures the speed layer end to end: produce one
//! event for a brand-new user to Kafka, then poll `GetProfile` every
//! millisecond until the profile is found. The time from starting to
//! produce to the first reply that has it is what a widget waits before a
//! click shows. The producer is flushed only after the sample (to confirm
//! delivery): rust-rdkafka's `flush` polls in 100 ms steps, which would
//! otherwise put a 100 ms floor under every sample. Samples are spaced by a
//! random pause, so they sample every phase of any periodic cycle in the
//! pipeline instead of locking onto one.
//!
//! Everything runs on one machine here (`tests/bench/serve_vs_floor.sh`):
//! load generator and servers share the cores, so absolute figures are
//! pessimistic and ratios measured in the same run are what to compare.
//! Because every microsecond the load generator spends is taken from the
//! servers, it is kept lean: gRPC targets are called with a unary client
//! written straight on h2 (`--grpc-client h2`, the default; `tonic` keeps
//! tonic's generated client), on a one-thread runtime by default, and each
//! phase reports the generator's own CPU time per request.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use weft_core::{Event, EventKind};
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_proto::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use weft_proto::v1::{
    BatchGetProfilesRequest, BatchGetProfilesResponse, Freshness, GetProfileRequest,
    GetProfileResponse, GetRecommendationsRequest, GetRecommendationsResponse, Profile,
};
use weft_speed::kafka::EventProducer;

/// A request not answered within this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Ids per `BatchGetProfiles` when loading Redis (the server's default
/// `serve.max_batch_ids`).
const LOAD_BATCH: u32 = 100;
/// `BatchGetProfiles` calls in flight when loading Redis.
const LOAD_IN_FLIGHT: usize = 8;
/// Longest latency a histogram holds, in microseconds (one hour).
const MAX_MICROS: u64 = 3_600_000_000;

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

#[derive(Debug, Args)]
pub(crate) struct ServeBenchArgs {
    /// `weft serve`'s gRPC address.
    #[arg(long)]
    weft: String,
    /// API key (its tenant holds the users).
    #[arg(long)]
    key: String,
    /// Users u0000000 .. u{N-1}, picked uniformly at random per request.
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    /// Start the users at this rank instead (u{first} .. u{first+N-1}). A
    /// range past the tenant's users measures requests for unknown users:
    /// the request path with no profile to build.
    #[arg(long, default_value_t = 0, conflicts_with = "redis")]
    first_user: u32,
    /// Features to ask for in every `GetProfile`, comma-separated (default:
    /// all of them).
    #[arg(long, value_delimiter = ',', conflicts_with = "redis")]
    features: Vec<String>,
    /// `weft bench floor`'s gRPC address.
    #[arg(long)]
    floor: Option<String>,
    /// Redis `host:port` holding `profile:<user>` (see --load-redis).
    #[arg(long)]
    redis: Option<String>,
    /// Workers (requests in flight at most).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections (gRPC) or Redis connections, shared by workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests/s in total in the fixed-rate phase.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// The measured phases to run, in this order whatever the order given.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fixed,max")]
    phases: Vec<PhaseArg>,
    /// Also report the fixed-rate phase per window of this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeline_secs: Option<u64>,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Run every target's phases this many times, alternating targets
    /// (floor, Redis, weft, floor, ...), and report each round's ratios and
    /// their median: on a shared machine, a slow minute then hits one
    /// round of every target rather than one target.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Closed-loop warm-up before each target's phases (not recorded).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Before measuring, copy every user's GetProfileResponse from weft to
    /// Redis (skipped when Redis already holds --users keys).
    #[arg(long, requires = "redis")]
    load_redis: bool,
    /// Tokio worker threads of the load generator. One (a current-thread
    /// runtime, plus the fixed-rate pacer thread) costs the least CPU per
    /// request on a small machine the servers share, and so disturbs them
    /// least.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The load generator's gRPC client (the same for every gRPC target).
    #[arg(long, value_enum, default_value = "h2")]
    grpc_client: GrpcClient,
    /// PID of the `weft serve` process, when it runs on this machine: each
    /// phase then also reports its CPU time per request (`/proc/PID/stat`),
    /// the cost that decides how much of the shared cores a server leaves.
    #[arg(long)]
    weft_pid: Option<u32>,
    /// PID of the floor process (see --weft-pid).
    #[arg(long, requires = "floor")]
    floor_pid: Option<u32>,
    /// PID of the Redis server (see --weft-pid).
    #[arg(long, requires = "redis")]
    redis_pid: Option<u32>,
    /// Seed of the user choice (same seed, same user sequence per target).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct FreshnessArgs {
    /// `weft serve`'s gRPC address.
    #[arg(long)]
    weft: String,
    /// API key of --tenant.
    #[arg(long)]
    key: String,
    /// Kafka bootstrap address of the broker `weft serve` consumes.
    #[arg(long)]
    bootstrap: String,
    #[arg(long, default_value = "events")]
    topic: String,
    /// The tenant of --key (the events' tenant).
    #[arg(long)]
    tenant: String,
    #[arg(long, default_value_t = 300)]
    samples: u32,
    /// Pause between samples.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Plus a uniformly random 0..=this, so that samples do not lock onto
    /// a periodic cycle in the pipeline (e.g. a consumer's fetch wait) and
    /// always see the same phase of it.
    #[arg(long, default_value_t = 500)]
    jitter_ms: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

// ------------------------------------------------------------------ shared

pub(crate) fn user_id(rank: u32) -> String {
    format!("u{rank:07}")
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).context("creating a histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn unix_ms() -> Result<i64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis() as i64)
}

/// `authorization: Bearer <key>`, parsed once.
fn bearer(key: &str) -> Result<MetadataValue<Ascii>> {
    format!("Bearer {key}")
        .parse()
        .context("the API key is not valid ASCII metadata")
}

/// A gRPC address (`host:port` or `http://host:port`) as a URI.
fn grpc_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// One HTTP/2 connection (TCP_NODELAY) to a gRPC address (see [`grpc_uri`]).
async fn connect(addr: &str) -> Result<Channel> {
    let uri = grpc_uri(addr);
    Endpoint::from_shared(uri.clone())
        .with_context(|| format!("{uri:?} is not a gRPC address"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {uri}"))
}

/// A request carrying the key.
fn authorized<T>(message: T, auth: &MetadataValue<Ascii>) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert("authorization", auth.clone());
    req
}

fn profile_request(user: &str, features: &[String]) -> GetProfileRequest {
    GetProfileRequest {
        user_id: user.to_string(),
        features: features.to_vec(),
    }
}

fn status_error(what: &str, s: &Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

fn write_json(path: &PathBuf, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

// ------------------------------------------------------------------- floor

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

/// `weft bench floor`: serves the fixed answers until SIGINT/SIGTERM.
pub(crate) fn floor(a: &FloorArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-floor")
        .enable_all()
        .build()?;
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

// ------------------------------------------------------------------- serve

/// The gRPC client the load generator measures with (`--grpc-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GrpcClient {
    /// Unary calls written straight on an h2 connection: no tower buffer
    /// task and no hyper dispatch task between a worker and the socket.
    /// The load generator shares the cores with the servers it measures,
    /// so every microsecond it spends is taken from them.
    H2,
    /// tonic's generated client over a tonic `Channel`.
    Tonic,
}

/// Unary `GetProfile` on one h2 connection, framed by hand (cheap to
/// clone; clones share the connection). The reply is read whole and decoded
/// like tonic's client would, so the work per reply is the same.
#[derive(Clone)]
struct H2Grpc {
    send: h2::client::SendRequest<bytes::Bytes>,
    uri: http::Uri,
    auth: http::HeaderValue,
    /// Asked for in every request (empty: all).
    features: Arc<[String]>,
}

impl H2Grpc {
    /// Window sizes of hyper's HTTP/2 client (tonic's), so that flow
    /// control behaves as it does for a tonic client.
    const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
    const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

    async fn connect(
        addr: &str,
        auth: &MetadataValue<Ascii>,
        features: Arc<[String]>,
    ) -> Result<H2Grpc> {
        let base: http::Uri = grpc_uri(addr)
            .parse()
            .with_context(|| format!("{addr:?} is not a gRPC address"))?;
        let host = match (base.scheme_str(), base.authority()) {
            (Some("http"), Some(authority)) => authority.as_str().to_string(),
            _ => bail!("{addr:?}: the h2 client speaks plaintext HTTP/2 to host:port"),
        };
        let uri: http::Uri = format!("http://{host}/weft.v1.ProfileService/GetProfile")
            .parse()
            .with_context(|| format!("{addr:?} is not a gRPC address"))?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&host),
        )
        .await
        .with_context(|| format!("connecting to {host}: timed out"))?
        .with_context(|| format!("connecting to {host}"))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(Self::STREAM_WINDOW)
            .initial_connection_window_size(Self::CONNECTION_WINDOW)
            .handshake(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {host}"))?;
        tokio::spawn(async move {
            // Ends when every handle is dropped or the server goes away;
            // requests then fail and are counted.
            let _ = connection.await;
        });
        Ok(H2Grpc {
            send,
            uri,
            auth: http::HeaderValue::from_bytes(auth.as_encoded_bytes())
                .context("the API key is not a valid header value")?,
            features,
        })
    }

    /// One call: the reply, or `Err` naming the failure kind as the tonic
    /// client does (the gRPC code's name).
    async fn get_profile(&self, user: &str) -> Result<GetProfileResponse, String> {
        // One uncompressed gRPC frame: flag, big-endian length, message.
        let message = profile_request(user, &self.features);
        let len = message.encoded_len();
        let mut frame = bytes::BytesMut::with_capacity(5 + len);
        frame.extend_from_slice(&[0]);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        message
            .encode(&mut frame)
            .map_err(|e| format!("encoding: {e}"))?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::AUTHORIZATION, self.auth.clone())
            .body(())
            .map_err(|e| format!("building the request: {e}"))?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| format!("h2: {e}"))?;
        let (reply, mut stream) = send
            .send_request(request, false)
            .map_err(|e| format!("h2: {e}"))?;
        stream
            .send_data(frame.freeze(), true)
            .map_err(|e| format!("h2: {e}"))?;
        let (head, mut body) = reply.await.map_err(|e| format!("h2: {e}"))?.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(format!("HTTP {}", head.status.as_u16()));
        }
        // Trailers-only: an error with no body.
        if let Some(code) = head.headers.get("grpc-status") {
            return Err(grpc_code_name(code.as_bytes()));
        }
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("h2: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|e| format!("h2: {e}"))?;
        match trailers.as_ref().and_then(|t| t.get("grpc-status")) {
            Some(code) if code.as_bytes() == b"0" => {}
            Some(code) => return Err(grpc_code_name(code.as_bytes())),
            None => return Err("no grpc-status".into()),
        }
        let framed = match data.first() {
            Some(0) if data.len() >= 5 => {
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                data.get(5..5 + len)
            }
            _ => None,
        };
        let framed = framed.ok_or_else(|| "a malformed gRPC frame".to_string())?;
        GetProfileResponse::decode(framed).map_err(|_| "an undecodable reply".to_string())
    }
}

/// tonic's name of a `grpc-status` value (`NotFound`, ...).
fn grpc_code_name(value: &[u8]) -> String {
    format!("{:?}", tonic::Code::from_bytes(value))
}

/// One worker's handle on a target (cheap to clone; clones share the
/// connection).
#[derive(Clone)]
enum Conn {
    Grpc {
        client: ProfileServiceClient<Channel>,
        auth: MetadataValue<Ascii>,
        features: Arc<[String]>,
    },
    H2(H2Grpc),
    Redis(MultiplexedConnection),
}

impl Conn {
    /// One `GetProfile` (or `GET` + decode): the reply's freshness (gRPC;
    /// `None` from Redis), or `Err` naming the failure kind.
    async fn get(&mut self, user: &str) -> Result<Option<Freshness>, String> {
        match self {
            Conn::Grpc {
                client,
                auth,
                features,
            } => match client
                .get_profile(authorized(profile_request(user, features), auth))
                .await
            {
                // The reply is decoded by now.
                Ok(reply) => Ok(reply.into_inner().freshness),
                Err(s) => Err(format!("{:?}", s.code())),
            },
            Conn::H2(client) => client.get_profile(user).await.map(|r| r.freshness),
            Conn::Redis(conn) => {
                let bytes: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("profile:{user}"))
                    .query_async(conn)
                    .await
                    .map_err(|e| format!("redis {:?}", e.kind()))?;
                let bytes = bytes.ok_or_else(|| "redis: missing key".to_string())?;
                GetProfileResponse::decode(bytes.as_slice())
                    .map_err(|_| "redis: undecodable value".to_string())?;
                // A copy made at load time: its freshness is not live.
                Ok(None)
            }
        }
    }
}

/// A target: its name and one handle per connection.
struct Target {
    name: &'static str,
    conns: Vec<Conn>,
    /// Its replies' freshness describes the server's live state (weft; the
    /// floor replays one stored reply), so the timeline reports it.
    live_freshness: bool,
    /// The server's process on this machine, if known (`--weft-pid`, ...).
    pid: Option<u32>,
}

/// A gRPC target at `addr` as `a` configures the client: its
/// connections, client, key and features.
async fn grpc_target(
    a: &ServeBenchArgs,
    auth: &MetadataValue<Ascii>,
    (name, addr, pid): (&'static str, &str, Option<u32>),
    live_freshness: bool,
) -> Result<Target> {
    let features: Arc<[String]> = a.features.as_slice().into();
    let mut conns = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        conns.push(match a.grpc_client {
            GrpcClient::H2 => Conn::H2(H2Grpc::connect(addr, auth, features.clone()).await?),
            GrpcClient::Tonic => Conn::Grpc {
                client: ProfileServiceClient::new(connect(addr).await?),
                auth: auth.clone(),
                features: features.clone(),
            },
        });
    }
    Ok(Target {
        name,
        conns,
        live_freshness,
        pid,
    })
}

async fn redis_conns(addr: &str, connections: usize) -> Result<Vec<MultiplexedConnection>> {
    let url = if addr.starts_with("redis://") {
        addr.to_string()
    } else {
        format!("redis://{addr}/")
    };
    let client = redis::Client::open(url.as_str()).with_context(|| format!("redis {url}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(REQUEST_TIMEOUT);
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    Ok(conns)
}

/// Copies every user's `GetProfileResponse` from weft into Redis.
async fn load_redis(
    weft: &mut ProfileServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    conns: &[MultiplexedConnection],
    users: u32,
) -> Result<()> {
    let mut probe = conns[0].clone();
    let size: u64 = redis::cmd("DBSIZE")
        .query_async(&mut probe)
        .await
        .context("redis DBSIZE")?;
    if size >= u64::from(users) {
        eprintln!("redis already holds {size} keys (>= {users} users): not reloading");
        return Ok(());
    }
    eprintln!(
        "loading {users} profiles from weft into redis ({LOAD_BATCH} ids per BatchGetProfiles, {LOAD_IN_FLIGHT} in flight, one pipeline per batch)"
    );
    let started = Instant::now();
    let batches = (0..users).step_by(LOAD_BATCH as usize).enumerate();
    let (loaded, bytes) = futures::stream::iter(batches)
        .map(|(i, first)| {
            let mut client = weft.clone();
            let mut conn = conns[i % conns.len()].clone();
            async move {
                let ids: Vec<String> = (first..users.min(first + LOAD_BATCH))
                    .map(user_id)
                    .collect();
                let reply = client
                    .batch_get_profiles(authorized(
                        BatchGetProfilesRequest {
                            user_ids: ids.clone(),
                            features: Vec::new(),
                        },
                        auth,
                    ))
                    .await
                    .map_err(|s| status_error(&format!("BatchGetProfiles from {}", ids[0]), &s))?
                    .into_inner();
                if reply.profiles.len() != ids.len() {
                    bail!(
                        "BatchGetProfiles returned {} profiles for {} ids",
                        reply.profiles.len(),
                        ids.len()
                    );
                }
                let mut pipe = redis::pipe();
                let mut bytes = 0;
                for (id, profile) in ids.iter().zip(reply.profiles) {
                    let value = GetProfileResponse {
                        profile: Some(profile),
                        freshness: reply.freshness.clone(),
                    }
                    .encode_to_vec();
                    bytes += value.len();
                    pipe.cmd("SET")
                        .arg(format!("profile:{id}"))
                        .arg(value)
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn)
                    .await
                    .context("redis SET pipeline")?;
                Ok::<_, anyhow::Error>((ids.len(), bytes))
            }
        })
        .buffer_unordered(LOAD_IN_FLIGHT)
        .try_fold((0usize, 0usize), |(n, b), (dn, db)| async move {
            Ok((n + dn, b + db))
        })
        .await?;
    let took = started.elapsed();
    println!(
        "redis load: {loaded} profiles ({:.1} MiB, {} bytes on average) in {:.2} s = {:.0} profiles/s",
        bytes as f64 / 1_048_576.0,
        bytes / loaded.max(1),
        took.as_secs_f64(),
        loaded as f64 / took.as_secs_f64().max(1e-9)
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Closed loop, not recorded.
    Warmup,
    /// Open loop at this many requests/s in total.
    Fixed(f64),
    /// Closed loop.
    Max,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warm-up",
            Phase::Fixed(_) => "fixed rate",
            Phase::Max => "max throughput",
        }
    }
}

/// A measured phase, as `--phases` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PhaseArg {
    Fixed,
    Max,
}

/// One window of the timeline: what one worker (merged: all of them)
/// recorded for the requests scheduled in it.
#[derive(Default)]
struct Window {
    /// Microseconds, successful replies only, kept raw: at the rates one
    /// machine drives, 4 bytes a request cost less than a histogram per
    /// worker and window (the report builds one histogram per window).
    latencies: Vec<u32>,
    errors: u64,
    /// Live freshness only (see [`Target::live_freshness`]).
    max_speed_lag_ms: Option<i64>,
    max_speed_lag_messages: Option<i64>,
    batch_view_versions: BTreeSet<u64>,
}

/// Per-window records of the fixed-rate phase (`--timeline-secs`).
struct Timeline {
    start: Instant,
    window: Duration,
    /// Record the replies' freshness.
    freshness: bool,
    windows: Vec<Window>,
}

impl Timeline {
    fn new(start: Instant, window: Duration, freshness: bool) -> Timeline {
        Timeline {
            start,
            window,
            freshness,
            windows: Vec::new(),
        }
    }

    /// The window of a request scheduled (or sent) at `at`.
    fn at(&mut self, at: Instant) -> &mut Window {
        let i = at.saturating_duration_since(self.start).as_nanos() / self.window.as_nanos();
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        if i >= self.windows.len() {
            self.windows.resize_with(i + 1, Window::default);
        }
        &mut self.windows[i]
    }

    fn ok(&mut self, from: Instant, micros: u64, freshness: Option<&Freshness>) {
        let freshness = freshness.filter(|_| self.freshness);
        let w = self.at(from);
        w.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        if let Some(f) = freshness {
            w.max_speed_lag_ms = w.max_speed_lag_ms.max(Some(f.speed_lag_ms));
            w.max_speed_lag_messages = w.max_speed_lag_messages.max(Some(f.speed_lag_messages));
            w.batch_view_versions.insert(f.batch_view_version);
        }
    }

    fn merge(&mut self, other: Timeline) {
        if other.windows.len() > self.windows.len() {
            self.windows
                .resize_with(other.windows.len(), Window::default);
        }
        for (w, o) in self.windows.iter_mut().zip(other.windows) {
            w.latencies.extend(o.latencies);
            w.errors += o.errors;
            w.max_speed_lag_ms = w.max_speed_lag_ms.max(o.max_speed_lag_ms);
            w.max_speed_lag_messages = w.max_speed_lag_messages.max(o.max_speed_lag_messages);
            w.batch_view_versions.extend(o.batch_view_versions);
        }
    }

    /// The report's rows, one per window.
    fn rows(&self) -> Result<Vec<WindowRow>> {
        let mut h = histogram()?;
        let secs = self.window.as_secs_f64();
        let mut rows = Vec::with_capacity(self.windows.len());
        for (i, w) in self.windows.iter().enumerate() {
            h.reset();
            for &us in &w.latencies {
                h.saturating_record(u64::from(us));
            }
            let ok = !w.latencies.is_empty();
            rows.push(WindowRow {
                from_secs: i as f64 * secs,
                ok: w.latencies.len() as u64,
                errors: w.errors,
                p99_us: ok.then(|| h.value_at_quantile(0.99)),
                max_us: ok.then(|| h.max()),
                max_speed_lag_ms: w.max_speed_lag_ms,
                max_speed_lag_messages: w.max_speed_lag_messages,
                batch_view_versions: w.batch_view_versions.iter().copied().collect(),
            });
        }
        Ok(rows)
    }
}

/// What one worker (and, merged, one phase) recorded.
struct Recorder {
    /// Microseconds: from the scheduled time (fixed rate) or the send
    /// (closed loop) to the reply, successful replies only (a target that
    /// fails fast must not look fast; its errors are counted apart).
    latency: Histogram<u64>,
    /// Microseconds from the scheduled time to the send (fixed rate): the
    /// load generator's own delay.
    send_lag: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    last_done: Option<Instant>,
    /// Fixed-rate phase with `--timeline-secs` only.
    timeline: Option<Timeline>,
}

impl Recorder {
    fn new(timeline: Option<Timeline>) -> Result<Recorder> {
        Ok(Recorder {
            latency: histogram()?,
            send_lag: histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
            last_done: None,
            timeline,
        })
    }

    /// A failed request scheduled (or sent) at `from`.
    fn error(&mut self, from: Instant, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
        if let Some(t) = &mut self.timeline {
            t.at(from).errors += 1;
        }
    }

    fn finish(
        &mut self,
        from: Instant,
        result: Result<Result<Option<Freshness>, String>, tokio::time::error::Elapsed>,
    ) {
        let done = Instant::now();
        match result {
            Ok(Ok(freshness)) => {
                self.ok += 1;
                let us = micros(done - from);
                self.latency.saturating_record(us);
                if let Some(t) = &mut self.timeline {
                    t.ok(from, us, freshness.as_ref());
                }
            }
            Ok(Err(kind)) => self.error(from, kind),
            Err(_) => self.error(from, format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs())),
        }
        self.last_done = Some(done);
    }

    fn merge(&mut self, other: Recorder) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging histograms")?;
        self.send_lag
            .add(&other.send_lag)
            .context("merging histograms")?;
        self.ok += other.ok;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.last_done = self.last_done.max(other.last_done);
        match (&mut self.timeline, other.timeline) {
            (Some(t), Some(o)) => t.merge(o),
            (t @ None, o) => *t = o,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

/// Releases request slots at their scheduled times, `rate` per second from
/// `start` for `duration`. A thread, not a tokio timer: tokio's timers
/// round up to whole milliseconds, which would add up to 1 ms to every
/// latency measured from the schedule.
fn pace(
    tx: tokio::sync::mpsc::UnboundedSender<Instant>,
    start: Instant,
    rate: f64,
    duration: Duration,
) {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let at = |i: u64| start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
    let mut i = 0;
    while i < total {
        let now = Instant::now();
        let next = at(i);
        if next > now {
            std::thread::sleep(next - now);
            continue;
        }
        while i < total && at(i) <= now {
            if tx.send(at(i)).is_err() {
                return;
            }
            i += 1;
        }
    }
}

/// CPU time a process (`None`: this one) has used so far, all threads,
/// user + system, from `/proc/PID/stat` in clock ticks (`USER_HZ`, 100 on
/// Linux); `None` where that file cannot be read.
pub(crate) fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used between two readings of [`process_cpu`].
fn cpu_since(pid: Option<u32>, before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu(pid)?.saturating_sub(before?))
}

/// What a phase recorded, merged over its workers.
struct PhaseRun {
    rec: Recorder,
    /// The load generator's own CPU time over the phase.
    cpu: Option<Duration>,
    /// The server's, where its PID is known.
    server_cpu: Option<Duration>,
    /// Start to the last reply.
    elapsed: Duration,
    /// The phase's start, Unix milliseconds.
    started_unix_ms: i64,
}

/// Runs one phase against `target` with `workers` workers, each request
/// for a user of rank uniformly random in `users`; with `window`, keeps a
/// timeline of windows that long.
async fn run_phase(
    target: &Target,
    workers: usize,
    users: std::ops::Range<u32>,
    duration: Duration,
    phase: Phase,
    seed: u64,
    window: Option<Duration>,
) -> Result<PhaseRun> {
    // Workers need a moment to start before the first scheduled request.
    const LEAD: Duration = Duration::from_millis(20);
    let started_unix_ms = unix_ms()? + LEAD.as_millis() as i64;
    let cpu_before = process_cpu(None);
    let server_cpu_before = target.pid.and_then(|p| process_cpu(Some(p)));
    let start = Instant::now() + LEAD;
    let end = start + duration;
    // Past this, queued fixed-rate requests are not sent any more.
    let give_up = end + duration + Duration::from_secs(5);
    let (queue, pacer) = match phase {
        Phase::Fixed(rate) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let pacer = std::thread::Builder::new()
                .name("weft-bench-pacer".into())
                .spawn(move || pace(tx, start, rate, duration))
                .context("starting the pacer")?;
            (Some(Arc::new(tokio::sync::Mutex::new(rx))), Some(pacer))
        }
        Phase::Warmup | Phase::Max => (None, None),
    };
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let mut conn = target.conns[w % target.conns.len()].clone();
        let queue = queue.clone();
        let timeline = window.map(|w| Timeline::new(start, w, target.live_freshness));
        let mut rec = Recorder::new(timeline)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(w as u64));
        let users = users.clone();
        handles.push(tokio::spawn(async move {
            match queue {
                Some(queue) => loop {
                    let scheduled = queue.lock().await.recv().await;
                    let Some(scheduled) = scheduled else { break };
                    let user = user_id(rng.random_range(users.clone()));
                    let sent = Instant::now();
                    if sent > give_up {
                        rec.error(
                            scheduled,
                            "not sent: the target fell too far behind the rate".into(),
                        );
                        continue;
                    }
                    rec.send_lag
                        .saturating_record(micros(sent.saturating_duration_since(scheduled)));
                    let result = tokio::time::timeout(REQUEST_TIMEOUT, conn.get(&user)).await;
                    rec.finish(scheduled, result);
                },
                None => {
                    tokio::time::sleep_until(start.into()).await;
                    while Instant::now() < end {
                        let user = user_id(rng.random_range(users.clone()));
                        let sent = Instant::now();
                        let result = tokio::time::timeout(REQUEST_TIMEOUT, conn.get(&user)).await;
                        rec.finish(sent, result);
                    }
                }
            }
            rec
        }));
    }
    let mut all = Recorder::new(None)?;
    for h in handles {
        all.merge(h.await.context("a worker panicked")?)?;
    }
    if let Some(p) = pacer {
        p.join()
            .map_err(|_| anyhow::anyhow!("the pacer panicked"))?;
    }
    let elapsed = all
        .last_done
        .map_or(duration, |d| d.saturating_duration_since(start))
        .max(Duration::from_millis(1));
    Ok(PhaseRun {
        rec: all,
        cpu: cpu_since(None, cpu_before),
        server_cpu: target
            .pid
            .and_then(|p| cpu_since(Some(p), server_cpu_before)),
        elapsed,
        started_unix_ms,
    })
}

/// One row of the results table.
#[derive(Debug, Serialize)]
struct Row {
    /// 1-based (`--rounds`).
    round: u32,
    target: &'static str,
    phase: &'static str,
    /// Successful replies per second.
    qps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    ok: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    /// Fixed rate only: the pacer's delay, scheduled → sent.
    send_lag_p50_us: Option<u64>,
    send_lag_p99_us: Option<u64>,
    /// The load generator's CPU time over the phase: per request
    /// (successful or not), and in cores (CPU time / elapsed).
    client_cpu_us_per_request: Option<f64>,
    client_cores: Option<f64>,
    /// The same for the server, where its PID was given.
    server_cpu_us_per_request: Option<f64>,
    server_cores: Option<f64>,
    elapsed_secs: f64,
    /// The phase's start, Unix milliseconds.
    started_unix_ms: i64,
    /// `--timeline-secs`, fixed rate only: one row per window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timeline: Vec<WindowRow>,
}

/// One window of a phase's timeline.
#[derive(Debug, Serialize)]
struct WindowRow {
    /// Seconds from the phase start to the window's start.
    from_secs: f64,
    ok: u64,
    errors: u64,
    /// `None` without successful replies.
    p99_us: Option<u64>,
    max_us: Option<u64>,
    /// Live freshness in the window's replies (weft only).
    max_speed_lag_ms: Option<i64>,
    max_speed_lag_messages: Option<i64>,
    batch_view_versions: Vec<u64>,
}

impl Row {
    fn new(round: u32, target: &'static str, phase: Phase, run: &PhaseRun) -> Result<Row> {
        let (rec, elapsed) = (&run.rec, run.elapsed);
        let h = &rec.latency;
        let fixed = matches!(phase, Phase::Fixed(_));
        // Microseconds of CPU per request sent (successful or not).
        let sent = (rec.ok + rec.errors.values().sum::<u64>()).max(1) as f64;
        let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / sent;
        Ok(Row {
            round,
            target,
            phase: phase.name(),
            qps: rec.ok as f64 / elapsed.as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            ok: rec.ok,
            errors: rec.errors.values().sum(),
            error_kinds: rec.errors.clone(),
            send_lag_p50_us: fixed.then(|| rec.send_lag.value_at_quantile(0.5)),
            send_lag_p99_us: fixed.then(|| rec.send_lag.value_at_quantile(0.99)),
            client_cpu_us_per_request: run.cpu.map(&per_request),
            client_cores: run.cpu.map(|c| c.as_secs_f64() / elapsed.as_secs_f64()),
            server_cpu_us_per_request: run.server_cpu.map(per_request),
            server_cores: run
                .server_cpu
                .map(|c| c.as_secs_f64() / elapsed.as_secs_f64()),
            elapsed_secs: elapsed.as_secs_f64(),
            started_unix_ms: run.started_unix_ms,
            timeline: match &rec.timeline {
                Some(t) => t.rows()?,
                None => Vec::new(),
            },
        })
    }
}

/// A ratio between two targets (e.g. weft's p99 over the floor's).
#[derive(Debug, Serialize)]
struct Ratio {
    /// 1-based round; 0 for the median over the rounds.
    round: u32,
    what: String,
    value: f64,
    /// Either side had errors: the figures do not compare like with like.
    errors: bool,
}

#[derive(Debug, Serialize)]
struct ServeReport {
    users: u32,
    first_user: u32,
    /// Asked for in each request; empty: all.
    features: Vec<String>,
    concurrency: usize,
    connections: usize,
    rate: f64,
    duration_secs: u64,
    warmup_secs: u64,
    rounds: u32,
    timeline_secs: Option<u64>,
    client_threads: usize,
    cores: usize,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
}

/// Checks a target answers before measuring it.
async fn probe(target: &Target) -> Result<()> {
    let mut conn = target.conns[0].clone();
    let user = user_id(0);
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.get(&user)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kind)) if kind == "redis: missing key" => {
            bail!("redis has no profile:{user}: load it first (--load-redis)")
        }
        Ok(Err(kind)) => bail!("{}: GetProfile {user} failed: {kind}", target.name),
        Err(_) => bail!("{}: GetProfile {user} timed out", target.name),
    }
}

/// Each round's ratios of weft to its peers, then (with several rounds)
/// the median of each.
fn ratios(rows: &[Row], rounds: u32) -> Vec<Ratio> {
    let mut out = Vec::new();
    for round in 1..=rounds {
        let find = |target: &str, phase: Phase| {
            rows.iter()
                .find(|r| r.round == round && r.target == target && r.phase == phase.name())
        };
        for peer in ["floor", "redis"] {
            if let (Some(w), Some(p)) = (
                find("weft", Phase::Fixed(0.0)),
                find(peer, Phase::Fixed(0.0)),
            ) {
                out.push(Ratio {
                    round,
                    what: format!("weft p99 / {peer} p99 at the fixed rate"),
                    value: w.p99_us as f64 / (p.p99_us as f64).max(1.0),
                    errors: w.errors + p.errors > 0,
                });
            }
            if let (Some(w), Some(p)) = (find("weft", Phase::Max), find(peer, Phase::Max)) {
                out.push(Ratio {
                    round,
                    what: format!("weft max QPS / {peer} max QPS"),
                    value: w.qps / p.qps.max(1e-9),
                    errors: w.errors + p.errors > 0,
                });
            }
        }
    }
    if rounds > 1 {
        let mut whats: Vec<String> = Vec::new();
        for r in &out {
            if !whats.contains(&r.what) {
                whats.push(r.what.clone());
            }
        }
        let mut medians = Vec::new();
        for what in whats {
            let mut values: Vec<f64> = out
                .iter()
                .filter(|r| r.what == what)
                .map(|r| r.value)
                .collect();
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let median = if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            };
            medians.push(Ratio {
                round: 0,
                errors: out.iter().any(|r| r.what == what && r.errors),
                what,
                value: median,
            });
        }
        out.extend(medians);
    }
    out
}

/// Prints each row's timeline as a markdown table.
fn print_timelines(rows: &[Row]) {
    fn cell<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }
    for r in rows.iter().filter(|r| !r.timeline.is_empty()) {
        println!();
        println!(
            "{} {}, per window from the phase start (requests by scheduled time; the phase started at Unix ms {}):",
            r.target, r.phase, r.started_unix_ms
        );
        println!(
            "| from s | ok | errors | p99 µs | max µs | max speed_lag_ms | max speed_lag_messages | batch views |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for w in &r.timeline {
            let versions = w
                .batch_view_versions
                .iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                w.from_secs,
                w.ok,
                w.errors,
                cell(w.p99_us),
                cell(w.max_us),
                cell(w.max_speed_lag_ms),
                cell(w.max_speed_lag_messages),
                cell((!versions.is_empty()).then_some(versions))
            );
        }
    }
}

/// `weft bench serve`: floor, Redis and weft at the same load.
pub(crate) fn serve(a: &ServeBenchArgs) -> Result<()> {
    if a.users == 0 || a.concurrency == 0 || a.connections == 0 || a.threads == 0 {
        bail!("--users, --concurrency, --connections and --threads must be at least 1");
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be a positive number");
    }
    if a.first_user.checked_add(a.users).is_none() {
        bail!("--first-user + --users must fit in 32 bits");
    }
    // One thread: a current-thread runtime, whose tasks never wake another
    // worker thread to steal them.
    let mut rt = match a.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = rt.thread_name("weft-bench").enable_all().build()?;
    rt.block_on(serve_async(a))
}

async fn serve_async(a: &ServeBenchArgs) -> Result<()> {
    let auth = bearer(&a.key)?;
    let weft = grpc_target(a, &auth, ("weft", &a.weft, a.weft_pid), true).await?;
    let mut targets = Vec::new();
    if let Some(addr) = &a.floor {
        targets.push(grpc_target(a, &auth, ("floor", addr, a.floor_pid), false).await?);
    }
    if let Some(addr) = &a.redis {
        let conns = redis_conns(addr, a.connections).await?;
        if a.load_redis {
            let mut client = ProfileServiceClient::new(connect(&a.weft).await?);
            load_redis(&mut client, &auth, &conns, a.users).await?;
        }
        targets.push(Target {
            name: "redis",
            conns: conns.into_iter().map(Conn::Redis).collect(),
            live_freshness: false,
            pid: a.redis_pid,
        });
    }
    targets.push(weft);
    for t in &targets {
        probe(t).await?;
    }

    let users = a.first_user..a.first_user + a.users;
    let duration = Duration::from_secs(a.duration_secs);
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    let mut phases = vec![Phase::Warmup];
    if a.phases.contains(&PhaseArg::Fixed) {
        phases.push(Phase::Fixed(a.rate));
    }
    if a.phases.contains(&PhaseArg::Max) {
        phases.push(Phase::Max);
    }
    let mut rows = Vec::new();
    for round in 1..=a.rounds {
        for t in &targets {
            for &phase in &phases {
                let length = match phase {
                    Phase::Warmup if a.warmup_secs == 0 => continue,
                    Phase::Warmup => Duration::from_secs(a.warmup_secs),
                    _ => duration,
                };
                eprintln!(
                    "round {round}/{}: {}: {}{} for {} s, {} workers, {} connections",
                    a.rounds,
                    t.name,
                    phase.name(),
                    match phase {
                        Phase::Fixed(r) => format!(" ({r:.0}/s)"),
                        _ => String::new(),
                    },
                    length.as_secs(),
                    a.concurrency,
                    a.connections
                );
                let window = match phase {
                    Phase::Fixed(_) => a.timeline_secs.map(Duration::from_secs),
                    Phase::Warmup | Phase::Max => None,
                };
                let run = run_phase(
                    t,
                    a.concurrency,
                    users.clone(),
                    length,
                    phase,
                    a.seed,
                    window,
                )
                .await?;
                if phase != Phase::Warmup {
                    rows.push(Row::new(round, t.name, phase, &run)?);
                }
            }
        }
    }

    let asked = if a.features.is_empty() {
        "all features".to_string()
    } else {
        format!("features {}", a.features.join(","))
    };
    println!(
        "weft bench serve: {} users from u{:07}, {asked}, {} workers, {} connections per target, fixed rate {:.0}/s, {} s per phase ({} s warm-up), load generator on {} threads, {cores} cores shared with the servers",
        a.users,
        a.first_user,
        a.concurrency,
        a.connections,
        a.rate,
        a.duration_secs,
        a.warmup_secs,
        a.threads
    );
    let several = a.rounds > 1;
    let round_cell = |r: u32| {
        if several {
            format!("{r} | ")
        } else {
            String::new()
        }
    };
    println!(
        "| {}target | phase | QPS | p50 µs | p99 µs | p99.9 µs | max µs | errors |",
        if several { "round | " } else { "" }
    );
    println!(
        "|{}---|---|---|---|---|---|---|---|",
        if several { "---|" } else { "" }
    );
    for r in &rows {
        println!(
            "| {}{} | {} | {:.0} | {} | {} | {} | {} | {} |",
            round_cell(r.round),
            r.target,
            r.phase,
            r.qps,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.errors
        );
    }
    let round_label = |r: u32| {
        if several {
            format!("round {r}: ")
        } else {
            String::new()
        }
    };
    for r in &rows {
        let cpu = |who: &str, us: Option<f64>, cores: Option<f64>| match (us, cores) {
            (Some(us), Some(cores)) => format!("{who} {us:.1} µs a request, {cores:.2} of a core"),
            _ => format!("{who} not known"),
        };
        let mut line = cpu(
            "load generator",
            r.client_cpu_us_per_request,
            r.client_cores,
        );
        if r.server_cpu_us_per_request.is_some() {
            line += &format!(
                "; {}",
                cpu("server", r.server_cpu_us_per_request, r.server_cores)
            );
        }
        println!(
            "{}{} {}: CPU: {line}",
            round_label(r.round),
            r.target,
            r.phase
        );
        if let (Some(p50), Some(p99)) = (r.send_lag_p50_us, r.send_lag_p99_us) {
            println!(
                "{}{} {}: load generator delay (scheduled → sent) p50 {p50} µs, p99 {p99} µs",
                round_label(r.round),
                r.target,
                r.phase
            );
        }
        for (kind, n) in &r.error_kinds {
            println!(
                "{}{} {}: {n} errors: {kind}",
                round_label(r.round),
                r.target,
                r.phase
            );
        }
    }
    let ratios = ratios(&rows, a.rounds);
    for r in &ratios {
        let caveat = if r.errors {
            " (errors in these phases: not comparable)"
        } else {
            ""
        };
        let label = match r.round {
            0 => format!("median of {} rounds: ", a.rounds),
            n => round_label(n),
        };
        println!("{label}{}: {:.2}{caveat}", r.what, r.value);
    }
    print_timelines(&rows);
    if let Some(path) = &a.json {
        write_json(
            path,
            &ServeReport {
                users: a.users,
                first_user: a.first_user,
                features: a.features.clone(),
                concurrency: a.concurrency,
                connections: a.connections,
                rate: a.rate,
                duration_secs: a.duration_secs,
                warmup_secs: a.warmup_secs,
                rounds: a.rounds,
                timeline_secs: a.timeline_secs,
                client_threads: a.threads,
                cores,
                rows,
                ratios,
            },
        )?;
    }
    Ok(())
}

// --------------------------------------------------------------- freshness

#[derive(Debug, Serialize)]
struct FreshnessReport {
    samples: u32,
    seen: u64,
    timeouts: u32,
    poll_errors: u64,
    /// Produce start → first GetProfile reply with the user found.
    visible_p50_us: u64,
    visible_p99_us: u64,
    visible_max_us: u64,
}

/// Polls `GetProfile` every millisecond until `user` is found; the time
/// of that reply, or `None` at `deadline`.
async fn wait_found(
    client: &mut ProfileServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    user: &str,
    deadline: Instant,
    poll_errors: &mut u64,
) -> Option<Instant> {
    loop {
        match client
            .get_profile(authorized(profile_request(user, &[]), auth))
            .await
        {
            Ok(r) if r.get_ref().profile.as_ref().is_some_and(|p| p.found) => {
                return Some(Instant::now());
            }
            Ok(_) => {}
            Err(_) => *poll_errors += 1,
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `weft bench freshness`: produce → visible in GetProfile.
pub(crate) fn freshness(a: &FreshnessArgs) -> Result<()> {
    const GIVE_UP: Duration = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let auth = bearer(&a.key)?;
    let mut client = ProfileServiceClient::new(rt.block_on(connect(&a.weft))?);
    // The key works (and a never-seen user is simply not found).
    rt.block_on(client.get_profile(authorized(profile_request("fresh-probe", &[]), &auth)))
        .map_err(|s| status_error(&format!("GetProfile from {}", a.weft), &s))?;
    let mut producer = EventProducer::new(&a.bootstrap, &a.topic)
        .with_context(|| format!("producing to {} on {}", a.topic, a.bootstrap))?;
    let run = unix_ms()?;
    let mut rng = ChaCha8Rng::seed_from_u64(run as u64);
    let mut visible = histogram()?;
    let (mut timeouts, mut poll_errors) = (0u32, 0u64);
    eprintln!(
        "freshness: {} samples, one view event each for a new user of {}, {} ms + 0..={} ms apart",
        a.samples, a.tenant, a.interval_ms, a.jitter_ms
    );
    let event_for = |user: &str| -> Result<Event> {
        Ok(Event {
            event_id: format!("{user}-0"),
            tenant: a.tenant.clone(),
            user_id: user.to_string(),
            ts_ms: unix_ms()?,
            kind: EventKind::View,
            item_id: "i000001".into(),
            category: String::new(),
            price_minor: 0,
            quantity: 1,
            attributes: BTreeMap::new(),
        })
    };
    // A new producer's first event waits for its connection, metadata and
    // producer id (about half a second against Tansu): not what a
    // long-lived producer pays, so one unmeasured event goes first.
    producer.send_event(&event_for(&format!("fresh-{run}-warmup"))?)?;
    producer
        .flush(GIVE_UP)
        .context("delivering the warm-up event")?;
    for i in 0..a.samples {
        let user = format!("fresh-{run}-{i}");
        let event = event_for(&user)?;
        let started = Instant::now();
        producer.send_event(&event)?;
        // librdkafka sends it within the producer's linger (5 ms) while we
        // poll; no flush on the measured path.
        match rt.block_on(wait_found(
            &mut client,
            &auth,
            &user,
            started + GIVE_UP,
            &mut poll_errors,
        )) {
            Some(seen) => visible.saturating_record(micros(seen - started)),
            None => timeouts += 1,
        }
        producer
            .flush(GIVE_UP)
            .with_context(|| format!("delivering sample {i}"))?;
        std::thread::sleep(Duration::from_millis(
            a.interval_ms + rng.random_range(0..=a.jitter_ms),
        ));
    }
    let report = FreshnessReport {
        samples: a.samples,
        seen: visible.len(),
        timeouts,
        poll_errors,
        visible_p50_us: visible.value_at_quantile(0.5),
        visible_p99_us: visible.value_at_quantile(0.99),
        visible_max_us: visible.max(),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "weft bench freshness: {} samples to {} ({}), tenant {}, {} ms + 0..={} ms apart, polling GetProfile every 1 ms",
        a.samples, a.topic, a.bootstrap, a.tenant, a.interval_ms, a.jitter_ms
    );
    println!("| produce start → | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    println!(
        "| visible in GetProfile | {:.1} | {:.1} | {:.1} |",
        ms(report.visible_p50_us),
        ms(report.visible_p99_us),
        ms(report.visible_max_us)
    );
    println!(
        "seen {} of {}, timeouts (> {} s) {timeouts}, poll errors {poll_errors}",
        report.seen,
        a.samples,
        GIVE_UP.as_secs()
    );
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(())
}
