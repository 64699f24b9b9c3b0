//! The event collector, `POST /v1/events`, on a running server with a real
//! broker: accepted events reach the profile exactly (the reference over
//! them) and the topic on their user's partition, each rejected one is
//! named with its reason and never produced,
//! the limits answer 413, 400 and 429 with `Retry-After`, the wrong keys
//! 401/403, and 2,000 mutated and 8,000 random bodies never a 5xx.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use weft_core::{Event, EventKind, reference};
use weft_proto::v1;
use weft_serving::Running;

use weft_core::partition::partition_for_user;

use crate::generation_switch::{Fixture, PARTITIONS};
use crate::serving::{connect, http_request, served_features, server_key, widget_key, with_key};

/// The collector's rate per key in this test (bursts of twice as many).
pub(crate) const PER_SEC: u64 = 50;

fn post(running: &Running, key: &str, origin: Option<&str>, body: &[u8]) -> (u16, String, Value) {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    let (status, head, body) =
        http_request(running.http_addr, "POST", "/v1/events", &headers, body);
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, head, v)
}

fn event_json(id: &str, user: &str, ts_ms: i64, kind: &str, item: &str) -> Value {
    json!({"event_id": id, "user_id": user, "ts_ms": ts_ms, "kind": kind,
           "item_id": item, "category": "c1", "price_minor": 1250, "quantity": 1,
           "attributes": {"device": "mobile"}})
}

/// The collector on `running` for tenant `tenant` (its widget key has
/// `events:write`, its server key not).
pub(crate) fn assert_collector(f: &Fixture, running: &Running, tenant: &str) {
    let origin = format!("https://{tenant}.example");
    let widget = widget_key(tenant);
    let now = weft_core::time::now_ms();
    let user = "collected-user-1";

    // 1. Three good events and one bad: 202, the bad one named; the topic
    //    grew by the three, all on the user's partition (Kafka's murmur2
    //    of tenant/user, as every producer sends them).
    let mut ends = weft_speed::kafka::EndOffsets::new(f.broker.bootstrap(), "events").unwrap();
    let mut read_ends = || -> Vec<i64> {
        (0..PARTITIONS as i32)
            .map(|p| ends.end(p, Duration::from_secs(10)).unwrap())
            .collect()
    };
    let before = read_ends();
    let body = json!({"events": [
        event_json("c-1", user, now - 60_000, "view", "i-1"),
        event_json("c-2", user, now - 30_000, "add_to_cart", "i-1"),
        event_json("c-3", user, now - 10_000, "purchase", "i-1"),
        {"event_id": "c-4", "user_id": user, "ts_ms": now, "kind": "teleport"},
    ]});
    let (status, head, v) = post(running, &widget, Some(&origin), body.to_string().as_bytes());
    assert_eq!(status, 202, "{head}\n{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    assert_eq!(v["errors"][0]["index"], 3, "{v}");
    assert!(
        v["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("teleport"),
        "{v}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("access-control-allow-origin: {origin}")),
        "{head}"
    );
    let grown: Vec<(i32, i64)> = read_ends()
        .iter()
        .zip(&before)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(p, (a, b))| (p as i32, a - b))
        .collect();
    assert_eq!(
        grown,
        vec![(partition_for_user(tenant, user, PARTITIONS), 3)],
        "partitions grown (partition, records)"
    );

    // The accepted events are the user's profile: the reference over
    // exactly those three (the rejected one never reached the topic).
    let accepted: Vec<Event> = ["c-1", "c-2", "c-3"]
        .iter()
        .zip([
            (now - 60_000, EventKind::View),
            (now - 30_000, EventKind::AddToCart),
            (now - 10_000, EventKind::Purchase),
        ])
        .map(|(id, (ts_ms, kind))| Event {
            event_id: id.to_string(),
            tenant: tenant.to_string(),
            user_id: user.to_string(),
            ts_ms,
            kind,
            item_id: "i-1".into(),
            category: "c1".into(),
            price_minor: 1250,
            quantity: 1,
            attributes: [("device".to_string(), "mobile".to_string())].into(),
        })
        .collect();
    let started = Instant::now();
    f.rt.block_on(async {
        let mut client = connect(running.grpc_addr).await;
        loop {
            let r = client
                .get_profile(with_key(
                    v1::GetProfileRequest {
                        user_id: user.into(),
                        features: vec![],
                    },
                    &server_key(tenant),
                ))
                .await
                .unwrap()
                .into_inner();
            let t = r.freshness.unwrap().as_of_ms;
            let expected = reference::evaluate(&f.spec, &accepted, t);
            let profile = r.profile.unwrap();
            match weft_core::eval::compare_profiles(&f.spec, &served_features(&profile), &expected)
            {
                Ok(()) => break,
                Err(d) if started.elapsed() > Duration::from_secs(20) => {
                    panic!("the collected events are not the profile after 20 s: {d}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    println!(
        "collector: 3 events in the profile {} ms after the answer",
        started.elapsed().as_millis()
    );

    // 2. Refusals, each with its status and a JSON reason.
    let big = vec![b' '; 70 << 10];
    let mut over = String::from("[");
    for i in 0..=(2 * PER_SEC) {
        if i > 0 {
            over.push(',');
        }
        over += &event_json(&format!("o-{i}"), user, now, "view", "i-2").to_string();
    }
    over.push(']');
    let one = event_json("c-5", user, now, "view", "i-3").to_string();
    for (what, key, origin, body, want) in [
        ("not JSON", widget.clone(), None, b"{not json".to_vec(), 400),
        ("no events", widget.clone(), None, b"[]".to_vec(), 400),
        ("a body over the size limit", widget.clone(), None, big, 413),
        (
            "more events than a burst",
            widget.clone(),
            None,
            over.into_bytes(),
            400,
        ),
        ("no key", String::new(), None, one.clone().into_bytes(), 401),
        (
            "a key without events:write",
            server_key(tenant),
            None,
            one.clone().into_bytes(),
            403,
        ),
        (
            "a server key from a page",
            server_key(tenant),
            Some(origin.as_str()),
            one.clone().into_bytes(),
            403,
        ),
        (
            "another tenant's origin",
            widget.clone(),
            Some("https://elsewhere.example"),
            one.clone().into_bytes(),
            403,
        ),
    ] {
        let (status, head, v) = post(running, &key, origin, &body);
        assert_eq!(status, want, "{what}: {head}\n{v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
    }

    // 3. The key's rate: bodies of a second's worth, sent at once, meet a
    //    429 with Retry-After before the fourth.
    let second: String = format!(
        "[{}]",
        (0..PER_SEC)
            .map(
                |i| event_json(&format!("r-{i}"), "collected-user-2", now, "view", "i-4")
                    .to_string()
            )
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut limited = None;
    for _ in 0..4 {
        let (status, head, v) = post(running, &widget, None, second.as_bytes());
        if status == 429 {
            limited = Some((head, v));
            break;
        }
        assert_eq!(status, 202, "{head}\n{v}");
    }
    let (head, v) = limited.expect("a 429 within four bodies of a second's worth");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED", "{v}");

    // 4. 2,000 mutated bodies: never a 5xx; a 202 accounts for every event.
    std::thread::sleep(Duration::from_secs(3)); // the bucket refills
    let good = json!([
        event_json("f-1", "fuzz-user", now, "view", "i-5"),
        event_json("f-2", "fuzz-user", now, "click", "i-6"),
    ])
    .to_string();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(27);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..2_000 {
        let mut body = good.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..5) {
            let i = rng.random_range(0..body.len());
            match rng.random_range(0..3) {
                0 => body[i] = rng.random(),
                1 => body.truncate(i.max(1)),
                _ => body.insert(i, body[i]),
            }
        }
        let (status, head, v) = post(running, &widget, None, &body);
        assert!(
            (200..500).contains(&status),
            "a mutated body got {status}: {head}\n{v}"
        );
        if status == 202 {
            let (a, r) = (
                v["accepted"].as_u64().unwrap(),
                v["rejected"].as_u64().unwrap(),
            );
            assert!(a + r >= 1, "{v}");
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    println!("collector: 2,000 mutated bodies answered {statuses:?}");

    // 5. 8,000 random bodies (random bytes, and random JSON with the
    //    event's field names among others): never a 5xx.
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..8_000 {
        let body = if n % 4 == 0 {
            (0..rng.random_range(0..200))
                .map(|_| rng.random::<u8>())
                .collect()
        } else {
            random_json(&mut rng, 0).to_string().into_bytes()
        };
        let (status, head, v) = post(running, &widget, None, &body);
        assert!(
            (200..500).contains(&status),
            "a random body got {status}: {head}\n{v}\n{}",
            String::from_utf8_lossy(&body)
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    println!("collector: 8,000 random bodies answered {statuses:?}");
}

/// A random JSON value, event-shaped now and then.
fn random_json(rng: &mut impl Rng, depth: u32) -> serde_json::Value {
    const KEYS: [&str; 12] = [
        "events",
        "event_id",
        "user_id",
        "ts_ms",
        "kind",
        "item_id",
        "category",
        "price_minor",
        "quantity",
        "attributes",
        "tenant",
        "x",
    ];
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => serde_json::Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>() >> rng.random_range(0..64)),
        3 => json!(rng.random::<f64>() * 1e15),
        4 => json!(
            ["view", "click", "", "\u{0}", "purchase", &"x".repeat(300)][rng.random_range(0..6)]
        ),
        5 => serde_json::Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => serde_json::Value::Object(
            (0..rng.random_range(0..8))
                .map(|_| {
                    let k = KEYS[rng.random_range(0..KEYS.len())].to_string();
                    (k, random_json(rng, depth + 1))
                })
                .collect(),
        ),
    }
}
