//! The load generator's clients: gRPC (straight on h2, or tonic's) and
//! Redis, and copying profiles from weft into Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use redis::aio::MultiplexedConnection;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_proto::v1::{BatchGetProfilesRequest, Freshness, GetProfileResponse};

use super::ServeBenchArgs;
use crate::common::{authorized, connect, grpc_uri, profile_request, status_error, user_id};

/// A request not answered within this is an error.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Ids per `BatchGetProfiles` when loading Redis (the server's default
/// `serve.max_batch_ids`).
pub(super) const LOAD_BATCH: u32 = 100;
/// `BatchGetProfiles` calls in flight when loading Redis.
pub(super) const LOAD_IN_FLIGHT: usize = 8;
/// The gRPC client the load generator measures with (`--grpc-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum GrpcClient {
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
pub(super) struct H2Grpc {
    pub(super) send: h2::client::SendRequest<bytes::Bytes>,
    pub(super) uri: http::Uri,
    pub(super) auth: http::HeaderValue,
    /// Asked for in every request (empty: all).
    pub(super) features: Arc<[String]>,
}

impl H2Grpc {
    /// Window sizes of hyper's HTTP/2 client (tonic's), so that flow
    /// control behaves as it does for a tonic client.
    const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
    const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

    pub(super) async fn connect(
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
    pub(super) async fn get_profile(&self, user: &str) -> Result<GetProfileResponse, String> {
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
pub(super) fn grpc_code_name(value: &[u8]) -> String {
    format!("{:?}", tonic::Code::from_bytes(value))
}

/// One worker's handle on a target (cheap to clone; clones share the
/// connection).
#[derive(Clone)]
pub(super) enum Conn {
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
    pub(super) async fn get(&mut self, user: &str) -> Result<Option<Freshness>, String> {
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
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) conns: Vec<Conn>,
    /// Its replies' freshness describes the server's live state (weft; the
    /// floor replays one stored reply), so the timeline reports it.
    pub(super) live_freshness: bool,
    /// The server's process on this machine, if known (`--weft-pid`, ...).
    pub(super) pid: Option<u32>,
}

/// A gRPC target at `addr` as `a` configures the client: its
/// connections, client, key and features.
pub(super) async fn grpc_target(
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

pub(super) async fn redis_conns(
    addr: &str,
    connections: usize,
) -> Result<Vec<MultiplexedConnection>> {
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
pub(super) async fn load_redis(
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
