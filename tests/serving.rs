//! The serving layer against a live broker, in-process (`weft_serving::start`
//! on port 0), read through a real tonic client:
//!
//! * `GetProfile` == reference for every user before any batch view, after
//!   one, and while and after it switches to a second (requests in flight
//!   across the switch are checked one by one);
//! * 10k randomly malformed requests get their documented status, never
//!   INTERNAL, and no key reads another tenant's data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Request};
use weft_core::Event;
use weft_core::eval::{Profile, compare_profiles};
use weft_core::generator::GenConfig;
use weft_core::reference;
use weft_proto::v1;
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_serving::config::{KeyConfig, TenantConfig};
use weft_serving::state::from_proto;
use weft_serving::{Running, WeftConfig};
use weft_speed::kafka::Produced;

use crate::generation_switch::{Fixture, consumed_everything, fixture, wait_for};

pub(crate) fn server_key(tenant: &str) -> String {
    format!("srv-{tenant}-0123456789abcdef")
}

pub(crate) fn widget_key(tenant: &str) -> String {
    format!("pub-{tenant}-0123456789abcdef")
}

/// Two keys per tenant: a server key (profiles and recommendations) and a
/// publishable widget key (recommendations and the event collector).
pub(crate) fn tenants(names: &[&str]) -> Vec<TenantConfig> {
    names
        .iter()
        .map(|t| TenantConfig {
            name: t.to_string(),
            allowed_origins: vec![format!("https://{t}.example")],
            keys: vec![
                KeyConfig {
                    name: format!("{t}-server"),
                    key: server_key(t).into(),
                    scopes: vec!["profile:read".into(), "recommendations:read".into()],
                    publishable: false,
                },
                KeyConfig {
                    name: format!("{t}-widget"),
                    key: widget_key(t).into(),
                    scopes: vec!["recommendations:read".into(), "events:write".into()],
                    publishable: true,
                },
            ],
        })
        .collect()
}

fn config(f: &Fixture, tenant_names: &[&str]) -> WeftConfig {
    let views = f.dir.path().join("views");
    std::fs::create_dir_all(&views).unwrap();
    let mut c = WeftConfig {
        features: (&f.spec_path).into(),
        ..Default::default()
    };
    c.kafka.bootstrap = f.broker.bootstrap().to_string();
    c.speed.data_dir = f.dir.path().join("serve-speed");
    c.speed.dedup_horizon_secs = 24 * 3_600;
    c.views.store = Some(views.to_str().unwrap().to_string());
    c.views.poll_secs = 1;
    c.views.work_dir = f.dir.path().join("serve-views");
    c.serve.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.serve.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.serve.drain_secs = 0;
    c.tenants = tenants(tenant_names);
    c
}

pub(crate) fn tenant_names(produced: &Produced) -> Vec<String> {
    let mut names: Vec<String> = produced
        .valid
        .iter()
        .map(|(_, _, e)| e.tenant.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

pub(crate) fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// A GetProfile of every feature of `user`, sent with `key`.
pub(crate) fn whole_profile(user: &str, key: &str) -> Request<v1::GetProfileRequest> {
    with_key(
        v1::GetProfileRequest {
            user_id: user.to_string(),
            features: vec![],
        },
        key,
    )
}

pub(crate) fn served_features(p: &v1::Profile) -> Profile {
    p.features
        .iter()
        .map(|(k, v)| (k.clone(), from_proto(v).unwrap()))
        .collect()
}

pub(crate) async fn try_connect(
    addr: &str,
) -> Result<ProfileServiceClient<Channel>, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .connect()
        .await?;
    Ok(ProfileServiceClient::new(channel))
}

/// Connects to the gRPC `addr` (retrying until it listens), then asks for
/// `user`'s profile with `key` every 100 ms until `done` accepts a reply,
/// which it returns; fails at `deadline` with the server's `log`.
pub(crate) async fn poll_profile(
    addr: &str,
    key: &str,
    user: &str,
    deadline: std::time::Instant,
    log: &std::path::Path,
    mut done: impl FnMut(&v1::GetProfileResponse) -> bool,
) -> v1::GetProfileResponse {
    let mut client = loop {
        if let Ok(c) = try_connect(addr).await {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cannot connect to {addr}; log:\n{}",
            crate::common::log_text(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no satisfying profile of {user} in time; log:\n{}",
            crate::common::log_text(log)
        );
        let request = whole_profile(user, key);
        if let Ok(r) = client.get_profile(request).await {
            let r = r.into_inner();
            if done(&r) {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> ProfileServiceClient<Channel> {
    try_connect(&addr.to_string()).await.unwrap()
}

/// Waits until the served pair is `view` and everything produced is applied.
fn wait_served(running: &Running, produced: &Produced, view: u64) {
    wait_served_pair(running, produced, view, view);
}

/// Waits until the served pair is (`view`, `generation`) and everything
/// produced is applied.
fn wait_served_pair(running: &Running, produced: &Produced, view: u64, generation: u64) {
    let serving = running.serving.clone();
    wait_for(
        &format!("(view {view}, generation {generation}) served and the topic consumed"),
        Duration::from_secs(120),
        || {
            serving
                .current_pair()
                .is_some_and(|p| p.view_version() == view && u64::from(p.generation) == generation)
                && consumed_everything(serving.speed_metrics(), produced)
        },
    );
}

/// GetProfile (and BatchGetProfiles) == reference for every user, on view
/// `view` and speed generation `view`.
pub(crate) fn assert_every_user(f: &Fixture, addr: SocketAddr, produced: &Produced, view: u64) {
    assert_every_user_on(f, addr, produced, view, view);
}

/// GetProfile (and BatchGetProfiles) == reference for every user, on the
/// pair (`view`, `generation`).
pub(crate) fn assert_every_user_on(
    f: &Fixture,
    addr: SocketAddr,
    produced: &Produced,
    view: u64,
    generation: u64,
) {
    let by_user = produced.by_user();
    let spec = f.spec.clone();
    let mut in_segments = 0;
    let segments = &mut in_segments;
    f.rt.block_on(async {
        let mut client = connect(addr).await;
        for ((tenant, user), events) in &by_user {
            let r = client
                .get_profile(whole_profile(user, &server_key(tenant)))
                .await
                .unwrap()
                .into_inner();
            let fresh = r.freshness.unwrap();
            assert_eq!(fresh.batch_view_version, view);
            assert_eq!(fresh.speed_generation, generation);
            // The node that answered (the owner, on shards) owns the user.
            let partition = weft_core::partition::partition_for_user(
                tenant,
                user,
                crate::generation_switch::PARTITIONS,
            );
            assert_eq!(
                fresh.topic_partitions as u32,
                crate::generation_switch::PARTITIONS
            );
            assert!(
                fresh.owned_partitions.contains(&partition),
                "{tenant}/{user} of partition {partition} answered by the owner of {:?}",
                fresh.owned_partitions
            );
            let profile = r.profile.unwrap();
            assert!(profile.found, "{tenant}/{user} not found");
            let expected = reference::evaluate(&spec, events, fresh.as_of_ms);
            if let Err(d) = compare_profiles(&spec, &served_features(&profile), &expected) {
                panic!("view {view}: {tenant}/{user} at {}: {d}", fresh.as_of_ms);
            }
            assert_eq!(
                profile.segments,
                weft_core::segment::segments_of(&spec.segments, &expected),
                "{tenant}/{user}: segments"
            );
            *segments += profile.segments.len();
        }
        // The same through BatchGetProfiles, 100 ids a call, per tenant.
        let mut per_tenant: BTreeMap<&str, Vec<(&str, &Vec<Event>)>> = BTreeMap::new();
        for ((t, u), events) in &by_user {
            per_tenant.entry(t).or_default().push((u, events));
        }
        for (tenant, users) in per_tenant {
            for chunk in users.chunks(100) {
                let r = client
                    .batch_get_profiles(with_key(
                        v1::BatchGetProfilesRequest {
                            user_ids: chunk.iter().map(|(u, _)| u.to_string()).collect(),
                            features: vec![],
                        },
                        &server_key(tenant),
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                let t = r.freshness.unwrap().as_of_ms;
                assert_eq!(r.profiles.len(), chunk.len());
                for ((user, events), p) in chunk.iter().zip(&r.profiles) {
                    assert_eq!(&p.user_id, user);
                    let expected = reference::evaluate(&spec, events, t);
                    if let Err(d) = compare_profiles(&spec, &served_features(p), &expected) {
                        panic!("batch get, view {view}: {tenant}/{user}: {d}");
                    }
                }
            }
        }
    });
    assert!(by_user.len() > 1_000, "{} users checked", by_user.len());
    assert!(in_segments > 0, "some users are in segments");
}

#[test]
fn get_profile_equals_the_reference_before_after_and_across_view_switches() {
    let f = fixture();
    // The month up to yesterday: the 30-day features recommendations read
    // (recent views, top categories) hold something now.
    let mut generated = GenConfig::new(77, 120_000, 4, 4_000);
    generated.start_ms = weft_core::time::now_ms() - 31 * weft_core::spec::DAY_MS;
    let mut topic = f.topic(generated, 5);
    topic.produce(Vec::new(), 40_000, 0.005);
    let names = tenant_names(&topic.produced);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let running =
        f.rt.block_on(weft_serving::start(config(&f, &names)))
            .unwrap();
    let addr = running.grpc_addr;

    // 1. No batch view: generation 0 of the speed layer holds everything.
    wait_served(&running, &topic.produced, 0);
    assert_every_user(&f, addr, &topic.produced, 0);
    //    Recommendations before any view (cold start): the speed layer's
    //    trending items, for every user, equal the documented blend.
    let by_user = topic.produced.by_user();
    let trending = crate::recs::trending(&by_user);
    let firsts = crate::recs::assert_recommendations(
        &f.rt,
        &f.spec,
        crate::recs::Source::Trending(&trending),
        addr,
        running.http_addr,
        &by_user,
    );
    println!("cold-start recommendations equal the blend; first picks by reason: {firsts:?}");
    assert!(
        firsts.keys().all(|r| r == "RECOMMENDATION_REASON_TRENDING")
            && firsts.values().sum::<usize>() >= by_user.len(),
        "every cold-start answer leads with a trending item: {firsts:?}"
    );

    // 2. A view whose boundary is behind the speed layer (the archiver lags
    //    ~300 offsets per partition); then redeliveries and more events.
    let committed = topic.committed_behind(300);
    let (_, summary) = f.publish_view(&topic.produced, &committed);
    assert_eq!(summary.version, 1);
    let again: Vec<Event> = topic
        .produced
        .valid
        .iter()
        .step_by(211)
        .take(150)
        .map(|(_, _, e)| e.clone())
        .collect();
    topic.produce(again, 30_000, 0.005);
    wait_served(&running, &topic.produced, 1);
    assert_every_user(&f, addr, &topic.produced, 1);

    // 3. More events, then a second view, switched while requests run;
    //    every answer in flight equals the reference (old pair or new).
    topic.produce(Vec::new(), 30_000, 0.005);
    wait_served(&running, &topic.produced, 1);
    let by_user = Arc::new(topic.produced.by_user());
    let checker = Checker::spawn(&f, addr, by_user.clone());
    let committed = topic.committed_behind(150);
    let (_, summary) = f.publish_view(&topic.produced, &committed);
    assert_eq!(summary.version, 2);
    wait_served(&running, &topic.produced, 2);
    let (on_1, on_2) = checker.finish(&f);
    assert!(
        on_1 > 0 && on_2 > 0,
        "answers on view 1: {on_1}, on view 2: {on_2}"
    );
    assert_every_user(&f, addr, &topic.produced, 2);

    // Recommendations: every user's, plain, with a context item and with
    // exclusions, over gRPC (and a tenth over HTTP), equal the documented
    // blend of view 2's neighbours and popularity with the reference
    // profile at the answer's time.
    let work = tempfile::tempdir().unwrap();
    let view =
        f.rt.block_on(weft_view::OpenedView::open(
            &weft_view::ViewStore::open(
                f.dir.path().join("views").to_str().unwrap(),
                &Default::default(),
            )
            .unwrap(),
            Some(2),
            work.path(),
            false,
            &weft_view::BlockCache::default(),
        ))
        .unwrap();
    let firsts = crate::recs::assert_recommendations(
        &f.rt,
        &f.spec,
        crate::recs::Source::View(&view),
        addr,
        running.http_addr,
        &by_user,
    );
    println!("recommendations equal the blend; first picks by reason: {firsts:?}");
    for reason in [
        "RECOMMENDATION_REASON_SIMILAR_TO_CONTEXT",
        "RECOMMENDATION_REASON_SIMILAR_TO_RECENT",
        "RECOMMENDATION_REASON_POPULAR_IN_CATEGORY",
        "RECOMMENDATION_REASON_POPULAR",
    ] {
        assert!(
            firsts.get(reason).is_some_and(|n| *n > 0),
            "some answers lead with {reason}: {firsts:?}"
        );
    }
    drop(view);
    // 4. A rollback to view 1 (`weft batch rollback`, as an operator runs
    //    it) while requests run: the server builds generation 3 from view
    //    1's boundary and switches to (v1, 3); no request fails, and then
    //    every user equals the reference on view 1.
    topic.produce(Vec::new(), 10_000, 0.005);
    wait_served(&running, &topic.produced, 2);
    let rolled = Arc::new(topic.produced.by_user());
    let checker = Checker::spawn(&f, addr, rolled);
    let views = f.dir.path().join("views");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["batch", "rollback", "--to", "1", "--views"])
        .arg(&views)
        .args(["--bootstrap", f.broker.bootstrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_served_pair(&running, &topic.produced, 1, 3);
    let (on_1, on_2) = checker.finish(&f);
    assert!(
        on_1 > 0 && on_2 > 0,
        "answers on view 2: {on_2}, then on view 1: {on_1}"
    );
    assert_every_user_on(&f, addr, &topic.produced, 1, 3);

    f.rt.block_on(running.stop()).unwrap();
}

/// GetProfile for random users, on a task, until [`Checker::finish`]:
/// every answer must succeed and equal the reference at its own query time
/// (whichever pair served it). Answers are counted per view (2 and up in
/// the last).
struct Checker {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    seen: Arc<[AtomicU64; 3]>,
}

impl Checker {
    fn spawn(
        f: &Fixture,
        addr: SocketAddr,
        by_user: Arc<BTreeMap<(String, String), Vec<Event>>>,
    ) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let task = spawn_checker(f, addr, by_user, stop.clone(), seen.clone());
        Checker { task, stop, seen }
    }

    /// Lets it run 300 ms more, stops it and returns the answers it got on
    /// view 1 and on view 2.
    fn finish(self, f: &Fixture) -> (u64, u64) {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        f.rt.block_on(self.task).unwrap();
        (
            self.seen[1].load(Ordering::Relaxed),
            self.seen[2].load(Ordering::Relaxed),
        )
    }
}

/// Asks GetProfile for random users until `stop`; every answer must
/// succeed and equal the reference at its own query time (whichever pair
/// served it). Counts answers per view in `seen` (2 and up in the last).
fn spawn_checker(
    f: &Fixture,
    addr: SocketAddr,
    by_user: Arc<BTreeMap<(String, String), Vec<Event>>>,
    stop: Arc<AtomicBool>,
    seen: Arc<[AtomicU64; 3]>,
) -> tokio::task::JoinHandle<()> {
    let users: Vec<(String, String)> = by_user.keys().cloned().collect();
    let spec = f.spec.clone();
    f.rt.spawn(async move {
        let mut client = connect(addr).await;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        while !stop.load(Ordering::Relaxed) {
            let (tenant, user) = &users[rng.random_range(0..users.len())];
            let r = client
                .get_profile(whole_profile(user, &server_key(tenant)))
                .await
                .expect("no request fails across a switch")
                .into_inner();
            let fresh = r.freshness.unwrap();
            let expected = reference::evaluate(
                &spec,
                &by_user[&(tenant.clone(), user.clone())],
                fresh.as_of_ms,
            );
            if let Err(d) =
                compare_profiles(&spec, &served_features(&r.profile.unwrap()), &expected)
            {
                panic!(
                    "across the switch (view {}): {tenant}/{user}: {d}",
                    fresh.batch_view_version
                );
            }
            seen[fresh.batch_view_version.min(2) as usize].fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// One malformed request and the codes it may get.
fn malformed(rng: &mut impl Rng, tenant: &str, other_tenant: &str) -> Malformed {
    let key = server_key(tenant);
    let random_id = |rng: &mut dyn rand::RngCore, len: usize| -> String {
        (0..len)
            .map(|_| char::from(b'a' + (rng.next_u32() % 26) as u8))
            .collect()
    };
    match rng.random_range(0..14) {
        0 => (
            "no key",
            get(String::new(), "u1", vec![]),
            &[Code::Unauthenticated],
        ),
        1 => (
            "unknown key",
            get(format!("nope-{}", random_id(rng, 20)), "u1", vec![]),
            &[Code::Unauthenticated],
        ),
        2 => (
            "widget key reads a profile",
            get(widget_key(tenant), "u1", vec![]),
            &[Code::PermissionDenied],
        ),
        3 => ("empty id", get(key, "", vec![]), &[Code::InvalidArgument]),
        4 => {
            let n = rng.random_range(257..4_000);
            (
                "oversized id",
                get(key, &random_id(rng, n), vec![]),
                &[Code::InvalidArgument],
            )
        }
        5 => (
            "control character",
            get(key, "user\u{0}1", vec![]),
            &[Code::InvalidArgument],
        ),
        6 => {
            let f = random_id(rng, 12);
            (
                "unknown feature",
                get(key, "u1", vec![f]),
                &[Code::InvalidArgument],
            )
        }
        7 => ("no ids", batch(key, vec![]), &[Code::InvalidArgument]),
        8 => {
            let n = rng.random_range(101..400);
            (
                "too many ids",
                batch(key, (0..n).map(|i| format!("u{i}")).collect()),
                &[Code::InvalidArgument],
            )
        }
        9 => (
            "one empty id among many",
            batch(key, vec!["a".into(), String::new(), "b".into()]),
            &[Code::InvalidArgument],
        ),
        10 => {
            let n = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(101..=u32::MAX)
            };
            (
                "n out of range",
                recs(key, n, vec![]),
                &[Code::InvalidArgument],
            )
        }
        11 => (
            "too many exclusions",
            recs(key, 5, (0..1_001).map(|i| format!("i{i}")).collect()),
            &[Code::InvalidArgument],
        ),
        12 => (
            "another tenant's key, wrong scope",
            get(widget_key(other_tenant), "u1", vec![]),
            &[Code::PermissionDenied],
        ),
        _ => {
            let len = rng.random_range(1..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Garbage bodies: undecodable is INVALID_ARGUMENT; bytes that
            // happen to decode reach the handler without a key.
            (
                "garbage body",
                raw(bytes),
                &[Code::InvalidArgument, Code::Unauthenticated],
            )
        }
    }
}

/// A malformed call: what it is, how to send it, the codes it may get.
type Malformed = (&'static str, Sender, &'static [Code]);
type Sender = Box<dyn FnOnce(ProfileServiceClient<Channel>) -> Call>;

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + Send>>;

fn get(key: String, user: &str, features: Vec<String>) -> Sender {
    let user = user.to_string();
    Box::new(move |mut c| {
        Box::pin(async move {
            let mut r = Request::new(v1::GetProfileRequest {
                user_id: user,
                features,
            });
            if !key.is_empty() {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {key}").parse().unwrap());
            }
            c.get_profile(r).await.map(|_| ())
        })
    })
}

fn batch(key: String, ids: Vec<String>) -> Sender {
    Box::new(move |mut c| {
        Box::pin(async move {
            c.batch_get_profiles(with_key(
                v1::BatchGetProfilesRequest {
                    user_ids: ids,
                    features: vec![],
                },
                &key,
            ))
            .await
            .map(|_| ())
        })
    })
}

fn recs(key: String, n: u32, exclude: Vec<String>) -> Sender {
    Box::new(move |mut c| {
        Box::pin(async move {
            c.get_recommendations(with_key(
                v1::GetRecommendationsRequest {
                    user_id: "u1".into(),
                    n,
                    context_item_id: String::new(),
                    exclude_item_ids: exclude,
                },
                &key,
            ))
            .await
            .map(|_| ())
        })
    })
}

/// Sends `bytes` as the body of a GetProfile call.
fn raw(bytes: Vec<u8>) -> Sender {
    Box::new(move |_| {
        Box::pin(async move {
            let addr = RAW_ADDR.get().copied().unwrap();
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path = http::uri::PathAndQuery::from_static("/weft.v1.ProfileService/GetProfile");
            grpc.unary(Request::new(bytes), path, RawCodec)
                .await
                .map(|_: tonic::Response<Vec<u8>>| ())
        })
    })
}

static RAW_ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// Sends and receives message bodies as raw bytes.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Minimal HTTP/1.1 GET: (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_request(addr, "GET", path, headers, b"");
    (status, body)
}

/// Minimal HTTP/1.1 request: (status, head, body).
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before it read the whole body.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_string(), body.to_string())
}

#[test]
fn malformed_requests_get_their_status_and_tenants_stay_apart() {
    let f = fixture();
    let mut topic = f.topic(GenConfig::new(78, 20_000, 3, 1_500), 6);
    topic.produce(Vec::new(), 20_000, 0.0);
    let names = tenant_names(&topic.produced);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(names.len() >= 2);
    let mut c = config(&f, &names);
    c.serve.collector_events_per_sec = crate::collector::PER_SEC;
    let running = f.rt.block_on(weft_serving::start(c)).unwrap();
    wait_served(&running, &topic.produced, 0);
    let addr = running.grpc_addr;
    RAW_ADDR.set(addr).unwrap();
    crate::collector::assert_collector(&f, &running, names[0]);

    // 10k random malformed gRPC requests.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    f.rt.block_on(async {
        let client = connect(addr).await;
        for _ in 0..10_000 {
            let t = rng.random_range(0..names.len());
            let (kind, call, codes) = malformed(&mut rng, names[t], names[(t + 1) % names.len()]);
            let status = call(client.clone()).await.expect_err(kind);
            assert!(
                codes.contains(&status.code()),
                "{kind}: got {:?} {:?}, expected one of {codes:?}",
                status.code(),
                status.message()
            );
            assert!(!status.message().is_empty(), "{kind}: the status says why");
            *by_kind.entry(kind).or_default() += 1;
        }
    });
    assert!(by_kind.len() >= 13, "{by_kind:?}");

    // The same rules over HTTP.
    let http = running.http_addr;
    let auth = format!("Bearer {}", server_key(names[0]));
    let widget = format!("Bearer {}", widget_key(names[0]));
    let origin = format!("https://{}.example", names[0]);
    let other_origin = format!("https://{}.example", names[1]);
    for (path, headers, status) in [
        ("/v1/profiles/u1", vec![], 401),
        (
            "/v1/profiles/u1",
            vec![("Authorization", "Bearer wrong-key-0123456789")],
            401,
        ),
        (
            "/v1/profiles/u1",
            vec![("Authorization", widget.as_str())],
            403,
        ),
        (
            "/v1/profiles/u1?features=nope",
            vec![("Authorization", auth.as_str())],
            400,
        ),
        (
            "/v1/profiles/u1?bogus=1",
            vec![("Authorization", auth.as_str())],
            400,
        ),
        (
            "/v1/profiles/u1",
            vec![("Authorization", auth.as_str())],
            200,
        ),
        (
            "/v1/recommendations?user_id=u1&n=0",
            vec![("Authorization", widget.as_str())],
            400,
        ),
        (
            "/v1/recommendations?user_id=u1&n=ten",
            vec![("Authorization", widget.as_str())],
            400,
        ),
        (
            "/v1/recommendations?n=3",
            vec![("Authorization", widget.as_str())],
            400,
        ),
        (
            "/v1/recommendations?user_id=u1&n=3",
            vec![
                ("Authorization", widget.as_str()),
                ("Origin", origin.as_str()),
            ],
            200,
        ),
        (
            "/v1/recommendations?user_id=u1&n=3",
            vec![
                ("Authorization", widget.as_str()),
                ("Origin", other_origin.as_str()),
            ],
            403,
        ),
        // A server key from a browser page is refused, even from an
        // origin its tenant allows.
        (
            "/v1/recommendations?user_id=u1&n=3",
            vec![
                ("Authorization", auth.as_str()),
                ("Origin", origin.as_str()),
            ],
            403,
        ),
        (
            "/v1/profiles/u1",
            vec![
                ("Authorization", auth.as_str()),
                ("Origin", origin.as_str()),
            ],
            403,
        ),
        ("/v1/nothing", vec![], 404),
    ] {
        let (got, body) = http_get(http, path, &headers);
        assert_eq!(got, status, "{path} {headers:?}: {body}");
        if status != 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{body}"
            );
        }
    }

    // Cross-tenant reads: with tenant A's key, every user id of tenant B
    // reads A's user of that id (the reference over A's events, usually
    // none), never B's data.
    let by_user = topic.produced.by_user();
    let spec = f.spec.clone();
    f.rt.block_on(async {
        let mut client = connect(addr).await;
        for ((tenant, user), _) in by_user.iter().step_by(3) {
            let other = names.iter().find(|n| **n != tenant.as_str()).unwrap();
            let r = client
                .get_profile(whole_profile(user, &server_key(other)))
                .await
                .unwrap()
                .into_inner();
            let t = r.freshness.unwrap().as_of_ms;
            let own = by_user
                .get(&(other.to_string(), user.clone()))
                .cloned()
                .unwrap_or_default();
            let p = r.profile.unwrap();
            assert_eq!(p.found, !own.is_empty(), "{other} reading {user}");
            compare_profiles(
                &spec,
                &served_features(&p),
                &reference::evaluate(&spec, &own, t),
            )
            .unwrap_or_else(|d| panic!("{other} reading {tenant}'s {user}: {d}"));
        }
    });
    f.rt.block_on(running.stop()).unwrap();
}

/// Writes a `weft serve` config for `f`'s broker: speed and view state
/// under `state`, the view store `views` (if any), ports chosen by the OS,
/// and a server key (`server_key`) per tenant.
pub(crate) fn write_serve_config(
    f: &Fixture,
    state: &std::path::Path,
    views: Option<&str>,
    tenants: &[&str],
) -> std::path::PathBuf {
    let mut toml = format!(
        r#"features = "{spec}"
[kafka]
bootstrap = "{bootstrap}"
[speed]
data_dir = "{state}/speed"
[views]
work_dir = "{state}/views"
poll_secs = 1
"#,
        spec = f.spec_path,
        bootstrap = f.broker.bootstrap(),
        state = state.display(),
    );
    if let Some(views) = views {
        toml += &format!("store = \"{views}\"\n");
    }
    toml +=
        "[serve]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndrain_secs = 0\n";
    for t in tenants {
        toml += &format!(
            r#"[[tenants]]
name = "{t}"
allowed_origins = ["https://{t}.example"]
[[tenants.keys]]
name = "{t}-server"
key = "{key}"
scopes = ["profile:read", "recommendations:read"]
"#,
            key = server_key(t)
        );
    }
    std::fs::create_dir_all(state).unwrap();
    let path = state.join("serve.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A running `weft serve` process and the addresses it printed.
pub(crate) struct ServeProcess {
    pub(crate) child: std::process::Child,
    /// `host:port`.
    pub(crate) grpc: String,
    /// `http://host:port`.
    pub(crate) http: String,
}

/// Starts `weft serve --config config`, its log appended to `log`, and
/// reads the addresses it prints once listening.
pub(crate) fn start_serve(config: &std::path::Path, log: &std::path::Path) -> ServeProcess {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut addr = |prefix: &str| -> String {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("weft serve exited; log:\n{}", crate::common::log_text(log)))
            .unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?}; log:\n{}", crate::common::log_text(log)))
            .trim()
            .to_string()
    };
    let grpc = addr("gRPC");
    let http = addr("HTTP");
    ServeProcess { child, grpc, http }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `weft serve` as a user runs it, from a TOML config: a Python grpcio
/// client generated from the project's .proto, and curl.
#[test]
fn weft_serve_answers_python_grpcio_and_curl() {
    let f = fixture();
    let mut topic = f.topic(GenConfig::new(79, 5_000, 2, 300), 7);
    topic.produce(Vec::new(), 5_000, 0.0);
    let names = tenant_names(&topic.produced);
    let tenant = names[0].clone();
    let by_user = topic.produced.by_user();
    let (user, events) = by_user
        .iter()
        .filter(|((t, _), _)| *t == tenant)
        .max_by_key(|(_, e)| e.len())
        .map(|((_, u), e)| (u.clone(), e.clone()))
        .unwrap();
    let key = server_key(&tenant);
    let config = write_serve_config(&f, &f.dir.path().join("cli"), None, &[tenant.as_str()]);
    let log = f.dir.path().join("serve.log");
    let ServeProcess { child, grpc, http } = start_serve(&config, &log);

    // Wait until the user's served profile is complete.
    let spec = f.spec.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    f.rt.block_on(poll_profile(&grpc, &key, &user, deadline, &log, |r| {
        let fresh = r.freshness.as_ref().unwrap();
        compare_profiles(
            &spec,
            &served_features(r.profile.as_ref().unwrap()),
            &reference::evaluate(&spec, &events, fresh.as_of_ms),
        )
        .is_ok()
            && fresh.speed_lag_messages == 0
            && fresh.speed_lag_as_of_ms > 0
    }));

    // Python grpcio.
    let root = crate::common::repo_root();
    let out = crate::common::python(&[
        &format!("{root}/tests/python/profile_client.py"),
        "--addr",
        &grpc,
        "--key",
        &key,
        "--user",
        &user,
        "--proto-root",
        &format!("{root}/proto"),
    ]);
    let py: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(py["found"], true);
    let t = py["freshness"]["as_of_ms"].as_i64().unwrap();
    // JSON cannot tell an empty top-k list from an empty list: the spec can.
    let mut from_python: Profile = serde_json::from_value(py["features"].clone()).unwrap();
    for (name, v) in from_python.iter_mut() {
        let top_k = spec
            .feature(name)
            .is_some_and(|f| f.aggregate.name() == "top_k");
        if top_k && *v == weft_core::agg::FeatureValue::List(vec![]) {
            *v = weft_core::agg::FeatureValue::Ranked(vec![]);
        }
    }
    compare_profiles(&spec, &from_python, &reference::evaluate(&spec, &events, t))
        .unwrap_or_else(|d| panic!("python's profile: {d}"));
    assert_eq!(py["no_key"], "UNAUTHENTICATED");
    assert_eq!(py["empty_id"], "INVALID_ARGUMENT");
    assert_eq!(py["health"], "SERVING");
    let services: Vec<&str> = py["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(services.contains(&"weft.v1.ProfileService"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");

    // curl.
    let auth = format!("Authorization: Bearer {key}");
    let (code, body) = curl(&["-H", &auth, &format!("{http}/v1/profiles/{user}")]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["found"], true);
    assert_eq!(v["user_id"], user.as_str());
    assert!(v["freshness"]["as_of_ms"].as_i64().unwrap() > 0);
    let count = |name: &str| v["features"][name].as_i64();
    let expected =
        reference::evaluate(&spec, &events, v["freshness"]["as_of_ms"].as_i64().unwrap());
    if let Some(weft_core::agg::FeatureValue::Int(n)) = expected.get("views_7d") {
        assert_eq!(count("views_7d"), Some(*n));
    }
    let (code, body) = curl(&[&format!("{http}/v1/profiles/{user}")]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = curl(&[
        "-H",
        &auth,
        &format!("{http}/v1/recommendations?user_id={user}&n=5"),
    ]);
    assert_eq!(code, 200);
    let origin = format!("Origin: https://{tenant}.example");
    let (code, _) = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        &origin,
        "-H",
        "Access-Control-Request-Method: GET",
        &format!("{http}/v1/recommendations"),
    ]);
    assert_eq!(code, 204);
    let (code, metrics) = curl(&[&format!("{http}/metrics")]);
    assert_eq!(code, 200);
    for name in [
        "weft_serving_request_seconds_bucket",
        "weft_speed_records_total",
        "weft_serving_speed_lag_messages",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics.contains("code=\"UNAUTHENTICATED\""),
        "statuses are labelled"
    );
    let (code, _) = curl(&[&format!("{http}/readyz")]);
    assert_eq!(code, 200);

    // The project's load generator (`weft-bench`, built next to `weft`),
    // with each of its gRPC clients: every scheduled request answered OK,
    // and a wrong key named as gRPC names it.
    let weft_bench = crate::common::weft_bench();
    let bench = |client: &str, key: &str| {
        let json = f.dir.path().join(format!("bench-{client}.json"));
        let out = std::process::Command::new(&weft_bench)
            .args(["serve", "--weft", &grpc, "--key", key])
            .args(["--users", "300", "--phases", "fixed", "--rate", "200"])
            .args(["--duration-secs", "1", "--warmup-secs", "0"])
            .args(["--grpc-client", client, "--json"])
            .arg(&json)
            .args(["--weft-pid", &child.id().to_string()])
            .output()
            .unwrap();
        (out, json)
    };
    for client in ["h2", "tonic"] {
        let (out, json) = bench(client, &key);
        assert!(out.status.success(), "{client}: {out:?}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        let row = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["phase"] == "fixed rate")
            .unwrap();
        assert_eq!(row["ok"], 200, "{client}: {row}");
        assert_eq!(row["errors"], 0, "{client}: {row}");
        for cpu in ["client_cpu_us_per_request", "server_cpu_us_per_request"] {
            assert!(
                row[cpu].as_f64().is_some_and(|us| us >= 0.0),
                "{client}: {row}"
            );
        }
        let (out, _) = bench(client, "not-a-key");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Unauthenticated"), "{client}: {stderr}");
    }
    crate::common::stop_cleanly(child, &log);
}
