//! Three `weft serve` shards (processes) over one live broker, each owning
//! a third of the topic's partitions, its peers in its config, with the
//! whole loop around them (`weft archive` and `weft batch run`):
//!
//! * served == reference for every user through every node (owner or
//!   forwarder), by GetProfile and by BatchGetProfiles mixing all shards'
//!   users, before any batch view and after one (format 4, each shard
//!   opening only its partitions' files); HTTP and recommendations forward
//!   too; a call forwarded twice is FAILED_PRECONDITION;
//! * kill -9 of one shard: its users' calls through the others are
//!   UNAVAILABLE naming the partition, before their deadline; every other
//!   user keeps answering, equal to the reference, with no failure;
//! * events produced while it is down, then the shard restarted: read right
//!   away, a reply whose lag is 0 as of after the burst was acknowledged
//!   has every event in it; then every user equals the reference again;
//! * the embedded reader (`weft-client`, in this process) holding shard 2's
//!   partitions equals the reference for every one of their users, before
//!   and after the view; the routing client, calling each user's owner,
//!   for every user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::Code;
use weft_client::{
    EmbeddedReader, PartitionSet, ReadError, RoutingClient, ShardAddress, WeftConfig,
};
use weft_core::eval::compare_profiles;
use weft_core::generator::GenConfig;
use weft_core::partition::partition_for_user;
use weft_core::reference;
use weft_proto::v1;
use weft_speed::kafka::Produced;

use crate::common::Reaped;
use crate::generation_switch::{Fixture, PARTITIONS, fixture};
use crate::serving::{
    ServeProcess, assert_every_user, http_get, served_features, server_key, start_serve,
    tenant_names, try_connect, whole_profile, with_key, write_serve_config,
};
use crate::whole_loop::{batch_run, metric, start_archiver, wait_archived, wait_served_partitions};

const SHARDS: u32 = 3;

/// A shard: its config, log, partitions and the running process (killed
/// when dropped, so a failing test leaves nothing running).
struct Node {
    config: PathBuf,
    log: PathBuf,
    owned: Vec<i32>,
    /// The fixed gRPC port its peers know it by.
    grpc_port: u16,
    serve: Option<ServeProcess>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.serve.is_some() {
            self.kill_9();
        }
    }
}

impl Node {
    fn start(&mut self) {
        self.serve = Some(start_serve(&self.config, &self.log));
    }

    fn grpc(&self) -> &str {
        &self.serve.as_ref().unwrap().grpc
    }

    fn http(&self) -> SocketAddr {
        let http = &self.serve.as_ref().unwrap().http;
        http.strip_prefix("http://").unwrap().parse().unwrap()
    }

    /// Waits until this shard serves `view` with its partitions consumed.
    fn wait_served(&mut self, produced: &Produced, view: u64) {
        let serve = self.serve.as_mut().unwrap();
        wait_served_partitions(serve, &self.log, produced, view, &self.owned);
    }

    fn kill_9(&mut self) {
        let mut serve = self.serve.take().unwrap();
        let _ = serve.child.kill();
        let _ = serve.child.wait();
    }
}

/// A port free now (the OS picks it; the shard binds it moments later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Shard `i` of [`SHARDS`]: `serve.shard = "i/3"` on a fixed gRPC port,
/// the other shards as peers.
fn shard_configs(f: &Fixture, views: &Path, tenants: &[&str]) -> Vec<Node> {
    let ports: Vec<u16> = (0..SHARDS).map(|_| free_port()).collect();
    (0..SHARDS)
        .map(|i| {
            let state = f.dir.path().join(format!("shard-{i}"));
            let config = write_serve_config(f, &state, Some(views.to_str().unwrap()), tenants);
            let mut shard = format!(
                "drain_secs = 0\nshard = \"{i}/{SHARDS}\"\n\
                 grpc_listen = \"127.0.0.1:{}\"\n",
                ports[i as usize]
            );
            for j in (0..SHARDS).filter(|j| *j != i) {
                shard += &format!(
                    "[[serve.peers]]\npartitions = \"{j}/{SHARDS}\"\n\
                     grpc = \"http://127.0.0.1:{}\"\n",
                    ports[j as usize]
                );
            }
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace("grpc_listen = \"127.0.0.1:0\"\n", "")
                .replace("drain_secs = 0\n", &shard);
            std::fs::write(&config, text).unwrap();
            let owned = weft_config::PartitionSet::shard(i, SHARDS, PARTITIONS)
                .unwrap()
                .iter()
                .collect();
            Node {
                log: state.join("serve.log"),
                config,
                owned,
                grpc_port: ports[i as usize],
                serve: None,
            }
        })
        .collect()
}

fn partition_of(tenant: &str, user: &str) -> i32 {
    partition_for_user(tenant, user, PARTITIONS)
}

#[test]
fn three_shards_answer_every_user_through_every_node() {
    let f = fixture();
    let mut topic = f.topic(GenConfig::new(83, 120_000, 4, 4_000), 11);
    topic.produce(Vec::new(), 40_000, 0.005);
    let names = tenant_names(&topic.produced);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let views = f.dir.path().join("views");
    std::fs::create_dir_all(&views).unwrap();
    let mut nodes = shard_configs(&f, &views, &names);
    for n in &mut nodes {
        n.start();
    }
    let archive = f.dir.path().join("archive");
    let archive_log = f.dir.path().join("archive.log");
    let mut archiver = Reaped(start_archiver(&f, &archive, &archive_log));

    // 1. No batch view: each shard's speed layer holds its users.
    for n in &mut nodes {
        n.wait_served(&topic.produced, 0);
    }
    for n in &nodes {
        assert_every_user(&f, n.grpc().parse().unwrap(), &topic.produced, 0);
    }
    let embedded = f.rt.block_on(open_embedded(&f, &views, &nodes[2].owned));
    assert_embedded(&f, &embedded, &topic.produced, 0, &nodes[2].owned);

    // 2. A batch view (split by partition) from what the archiver wrote,
    //    while more events arrive; every user again through every node.
    wait_archived(&mut archiver.0, &archive, &archive_log, &topic.produced);
    topic.produce(Vec::new(), 15_000, 0.005);
    assert_eq!(batch_run(&f, &archive, &views), 1);
    topic.produce(Vec::new(), 15_000, 0.005);
    for n in &mut nodes {
        n.wait_served(&topic.produced, 1);
    }
    for n in &nodes {
        assert_every_user(&f, n.grpc().parse().unwrap(), &topic.produced, 1);
    }
    assert_embedded(&f, &embedded, &topic.produced, 1, &nodes[2].owned);
    f.rt.block_on(embedded.close()).unwrap();
    assert_routed(&f, &nodes, &names, &topic.produced);
    // Each shard opened only its partitions' users: it holds one entry a
    // user of its partitions plus the item data whole (the recommendation
    // file's entries), and the shards' users add up to the view's.
    // Counted, not measured on disk: RocksDB compacts the ingested files
    // in the background, so a directory's size depends on when it is read.
    let manifest: weft_view::Manifest = serde_json::from_str(
        &std::fs::read_to_string(views.join("v000001").join(weft_view::format::MANIFEST_FILE))
            .unwrap(),
    )
    .unwrap();
    let items: u64 = manifest
        .files
        .iter()
        .filter(|f| f.partition.is_none())
        .map(|f| f.entries)
        .sum();
    let users: Vec<u64> = nodes
        .iter()
        .map(|n| held_entries(&n.log, 1).expect("a shard logs the view it holds") - items)
        .collect();
    assert_eq!(
        users.iter().sum::<u64>(),
        manifest.counts.users,
        "the shards' users {users:?} add up to the view's"
    );
    for (i, u) in users.iter().enumerate() {
        assert!(
            *u > 0 && *u * 2 < manifest.counts.users,
            "shard {i} holds {u} of the view's {} users",
            manifest.counts.users
        );
    }

    let by_user = topic.produced.by_user();
    let owned: Vec<Vec<i32>> = nodes.iter().map(|n| n.owned.clone()).collect();
    let owner_of = |tenant: &str, user: &str| {
        let p = partition_of(tenant, user);
        owned.iter().position(|o| o.contains(&p)).unwrap()
    };
    f.rt.block_on(async {
        // HTTP forwards too: the same profile through every node.
        let ((tenant, user), events) = by_user
            .iter()
            .find(|((t, u), _)| owner_of(t, u) == 2)
            .unwrap();
        let auth = format!("Bearer {}", server_key(tenant));
        for n in &nodes {
            let (code, body) = http_get(
                n.http(),
                &format!("/v1/profiles/{user}"),
                &[("Authorization", &auth)],
            );
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let owned = &v["freshness"]["owned_partitions"];
            assert_eq!(owned, &serde_json::json!(nodes[2].owned), "{body}");
            let t = v["freshness"]["as_of_ms"].as_i64().unwrap();
            let expected = reference::evaluate(&f.spec, events, t);
            if let Some(weft_core::agg::FeatureValue::Int(c)) = expected.get("views_7d") {
                assert_eq!(v["features"]["views_7d"].as_i64(), Some(*c), "{body}");
            }
        }
        // Recommendations are the owner's, wherever asked.
        let mut answers = Vec::new();
        for n in &nodes {
            let mut client = try_connect(n.grpc()).await.unwrap();
            let r = client
                .get_recommendations(with_key(
                    v1::GetRecommendationsRequest {
                        user_id: user.clone(),
                        n: 10,
                        ..Default::default()
                    },
                    &server_key(tenant),
                ))
                .await
                .unwrap()
                .into_inner();
            let ids: Vec<String> = r.items.into_iter().map(|i| i.item_id).collect();
            assert_eq!(r.freshness.unwrap().owned_partitions, nodes[2].owned);
            answers.push(ids);
        }
        assert!(!answers[0].is_empty());
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        // A call already forwarded once that reaches a non-owner (peers
        // configured differently on two nodes) is refused, not sent on.
        let mut client = try_connect(nodes[0].grpc()).await.unwrap();
        let mut request = whole_profile(user, &server_key(tenant));
        request
            .metadata_mut()
            .insert("weft-forwarded-by", "3-5".parse().unwrap());
        let e = client.get_profile(request).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("already forwarded"), "{e:?}");
    });

    // 3. kill -9 of shard 2.
    nodes[2].kill_9();
    f.rt.block_on(async {
        let mut down = 0;
        let mut up = 0;
        for n in &nodes[..2] {
            let mut client = try_connect(n.grpc()).await.unwrap();
            for ((tenant, user), events) in &by_user {
                let mut request = whole_profile(user, &server_key(tenant));
                request.set_timeout(Duration::from_secs(2));
                let sent = Instant::now();
                let answer = client.get_profile(request).await;
                if owner_of(tenant, user) == 2 {
                    // Refused at once, not at the deadline.
                    let e = answer.unwrap_err();
                    assert_eq!(e.code(), Code::Unavailable, "{tenant}/{user}: {e:?}");
                    let p = partition_of(tenant, user);
                    assert!(e.message().contains(&format!("partition {p}")), "{e:?}");
                    assert!(sent.elapsed() < Duration::from_secs(2));
                    down += 1;
                } else {
                    let r = answer
                        .unwrap_or_else(|e| panic!("{tenant}/{user} with shard 2 down: {e:?}"))
                        .into_inner();
                    let t = r.freshness.unwrap().as_of_ms;
                    let expected = reference::evaluate(&f.spec, events, t);
                    compare_profiles(&f.spec, &served_features(&r.profile.unwrap()), &expected)
                        .unwrap_or_else(|d| panic!("{tenant}/{user} with shard 2 down: {d}"));
                    up += 1;
                }
            }
        }
        assert!(down > 100 && up > 200, "down {down}, up {up}");
        // A batch with a user of the shard that is down fails as a whole,
        // naming it; one without answers.
        let tenant = names[0];
        let users: Vec<&String> = by_user
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, u)| u)
            .collect();
        let mut client = try_connect(nodes[0].grpc()).await.unwrap();
        let batch = |ids: Vec<String>| {
            with_key(
                v1::BatchGetProfilesRequest {
                    user_ids: ids,
                    features: vec![],
                },
                &server_key(tenant),
            )
        };
        let mixed: Vec<String> = users.iter().take(50).map(|u| u.to_string()).collect();
        assert!(mixed.iter().any(|u| owner_of(tenant, u) == 2));
        let e = client.batch_get_profiles(batch(mixed)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        let alive: Vec<String> = users
            .iter()
            .filter(|u| owner_of(tenant, u) != 2)
            .take(50)
            .map(|u| u.to_string())
            .collect();
        let r = client.batch_get_profiles(batch(alive)).await.unwrap();
        let fresh = r.into_inner().freshness.unwrap();
        assert_eq!(
            fresh.owned_partitions,
            [nodes[0].owned.clone(), nodes[1].owned.clone()].concat()
        );
    });
    // Health per shard, as node 0 last reached its peers.
    let (code, body) = http_get(nodes[0].http(), "/shards", &[]);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["ready"], true, "{body}");
    let peers = status["peers"].as_array().unwrap();
    let last = |grpc: &str| {
        peers
            .iter()
            .find(|p| p["grpc"] == format!("http://{grpc}").as_str())
            .map(|p| p["last_forward"]["code"].clone())
    };
    assert_eq!(last(nodes[1].grpc()), Some("OK".into()), "{body}");
    let down = format!("127.0.0.1:{}", nodes[2].grpc_port);
    assert_eq!(last(&down), Some("UNAVAILABLE".into()), "{body}");
    let (code, text) = http_get(nodes[0].http(), "/metrics", &[]);
    assert_eq!(code, 200);
    let forwarded = metric(&text, "weft_serving_forwarded_seconds_count");
    for code in ["OK", "UNAVAILABLE"] {
        assert!(
            forwarded
                .iter()
                .any(|(labels, n)| labels.contains(&format!("code=\"{code}\"")) && *n > 0.0),
            "{forwarded:?}"
        );
    }

    // 4. A burst while it is down, then the restart: read at once, a reply
    //    that says lag 0 as of after the burst was acknowledged is complete.
    topic.produce(Vec::new(), 30_000, 0.005);
    let acknowledged = weft_core::time::now_ms();
    nodes[2].start();
    let by_user = topic.produced.by_user();
    let theirs: Vec<_> = by_user
        .iter()
        .filter(|((t, u), _)| owner_of(t, u) == 2)
        .collect();
    f.rt.block_on(async {
        let mut client = try_connect(nodes[0].grpc()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut complete, mut behind) = (0, 0);
        for ((tenant, user), events) in &theirs {
            loop {
                assert!(Instant::now() < deadline, "shard 2 did not catch up");
                let Ok(r) = client
                    .get_profile(whole_profile(user, &server_key(tenant)))
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let r = r.into_inner();
                let fresh = r.freshness.unwrap();
                let expected = reference::evaluate(&f.spec, events, fresh.as_of_ms);
                let same =
                    compare_profiles(&f.spec, &served_features(&r.profile.unwrap()), &expected);
                if fresh.speed_lag_messages == 0 && fresh.speed_lag_as_of_ms >= acknowledged {
                    same.unwrap_or_else(|d| {
                        panic!(
                            "{tenant}/{user}: lag 0 as of {} but {d}",
                            fresh.speed_lag_as_of_ms
                        )
                    });
                    complete += 1;
                    break;
                }
                behind += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        eprintln!("after the restart: {complete} users read complete, {behind} replies behind");
        assert!(
            complete > 100,
            "{complete} users read complete, {behind} replies behind"
        );
    });
    for n in &mut nodes {
        n.wait_served(&topic.produced, 1);
    }
    for n in &nodes {
        assert_every_user(&f, n.grpc().parse().unwrap(), &topic.produced, 1);
    }
}

/// An embedded reader of `owned` over `f`'s broker and the view store.
async fn open_embedded(f: &Fixture, views: &Path, owned: &[i32]) -> EmbeddedReader {
    let mut c = WeftConfig {
        features: (&f.spec_path).into(),
        ..Default::default()
    };
    c.kafka.bootstrap = f.broker.bootstrap().to_string();
    c.speed.data_dir = f.dir.path().join("embedded/speed");
    c.views.store = Some(views.to_str().unwrap().to_string());
    c.views.work_dir = f.dir.path().join("embedded/views");
    c.views.poll_secs = 1;
    let owned = PartitionSet::parse(
        &owned
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    let reader = EmbeddedReader::open(c, Some(owned)).await.unwrap();
    assert!(reader.wait_ready(Duration::from_secs(60)).await);
    reader
}

/// Every user of `owned` read in process equals the reference, on view
/// `view`; every other user is refused as not held.
fn assert_embedded(
    f: &Fixture,
    reader: &EmbeddedReader,
    produced: &Produced,
    view: u64,
    owned: &[i32],
) {
    crate::generation_switch::wait_for(
        &format!("the embedded reader on view {view} with its partitions consumed"),
        Duration::from_secs(120),
        || {
            let serving = reader.serving();
            let positions = serving.speed_metrics().positions();
            serving
                .current_pair()
                .is_some_and(|p| p.view_version() == view)
                && produced
                    .end_offsets(PARTITIONS)
                    .iter()
                    .enumerate()
                    .filter(|(p, _)| owned.contains(&(*p as i32)))
                    .all(|(p, end)| positions.get(&(p as i32)).copied().unwrap_or(0) >= *end)
        },
    );
    let (mut held, mut refused) = (0, 0);
    for ((tenant, user), events) in produced.by_user() {
        let read = reader.get_profile(&tenant, &user);
        if !owned.contains(&partition_of(&tenant, &user)) {
            assert!(matches!(read, Err(ReadError::NotHere { .. })), "{read:?}");
            refused += 1;
            continue;
        }
        let read = read.unwrap();
        assert!(read.found(), "{tenant}/{user}");
        assert_eq!(read.freshness.batch_view_version, view);
        let expected = reference::evaluate(&f.spec, &events, read.freshness.as_of_ms);
        compare_profiles(&f.spec, &read.to_profile(), &expected)
            .unwrap_or_else(|d| panic!("embedded, view {view}: {tenant}/{user}: {d}"));
        let segments: Vec<&str> = read.segments().collect();
        assert_eq!(
            segments,
            weft_core::segment::segments_of(&f.spec.segments, &expected),
            "{tenant}/{user}"
        );
        held += 1;
    }
    assert!(
        held > 500 && refused > held,
        "held {held}, refused {refused}"
    );
}

/// Every user through the routing client (each call at its owner, no
/// forwarding), one by one and in batches, equals the reference.
fn assert_routed(f: &Fixture, nodes: &[Node], tenants: &[&str], produced: &Produced) {
    let shards: Vec<ShardAddress> = nodes
        .iter()
        .map(|n| ShardAddress {
            partitions: PartitionSet::parse(
                &n.owned
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .unwrap(),
            grpc: format!("http://{}", n.grpc()),
        })
        .collect();
    let by_user = produced.by_user();
    f.rt.block_on(async {
        for tenant in tenants {
            let client =
                RoutingClient::new(tenant, &server_key(tenant), PARTITIONS, &shards).unwrap();
            let users: Vec<(&String, &Vec<weft_core::Event>)> = by_user
                .iter()
                .filter(|((t, _), _)| t == tenant)
                .map(|((_, u), e)| (u, e))
                .collect();
            for (user, events) in &users {
                let r = client.get_profile(user, &[]).await.unwrap();
                let fresh = r.freshness.unwrap();
                let (partition, _) = client.owner(user);
                assert!(fresh.owned_partitions.contains(&partition));
                let expected = reference::evaluate(&f.spec, events, fresh.as_of_ms);
                compare_profiles(&f.spec, &served_features(&r.profile.unwrap()), &expected)
                    .unwrap_or_else(|d| panic!("routed: {tenant}/{user}: {d}"));
            }
            for chunk in users.chunks(100) {
                let ids: Vec<String> = chunk.iter().map(|(u, _)| u.to_string()).collect();
                let r = client.batch_get_profiles(&ids, &[]).await.unwrap();
                let t = r.freshness.unwrap().as_of_ms;
                for ((user, events), p) in chunk.iter().zip(&r.profiles) {
                    assert_eq!(&&p.user_id, user);
                    let expected = reference::evaluate(&f.spec, events, t);
                    compare_profiles(&f.spec, &served_features(p), &expected)
                        .unwrap_or_else(|d| panic!("routed batch: {tenant}/{user}: {d}"));
                }
            }
        }
    });
}

/// The entries of view `version` a `weft serve` logged it holds in memory
/// (the last time it opened that view), if it did.
fn held_entries(log: &Path, version: u64) -> Option<u64> {
    let view = format!("view={version} ");
    crate::common::log_text(log)
        .lines()
        .rev()
        .filter(|l| l.contains("holding the view in memory") && l.contains(&view))
        .filter_map(|l| {
            let (_, after) = l.split_once("entries=")?;
            after.split_whitespace().next()?.parse().ok()
        })
        .next()
}
