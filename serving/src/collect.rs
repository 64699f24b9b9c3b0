//! The event collector, `POST /v1/events` on the HTTP port: a page (or a
//! server) sends behaviour in, with a key that has `events:write` (a
//! publishable key may); the key decides the tenant.
//!
//! The body is one event, an array of events, or `{"events": [...]}`, each
//! in the `weft.v1.Event` shape without `tenant`. Every event is judged
//! alone: a reason for each one rejected, with the same rules as the speed
//! layer's ([`Event::validate`]), so an accepted event is one every layer
//! accepts. The accepted ones are produced to the events topic with the
//! idempotent producer, keyed `tenant/user_id` (the user's partition),
//! and the answer (202) comes once the broker has them all:
//!
//! ```json
//! {"events": [{"event_id": "e1", "user_id": "fp-3f2a", "ts_ms": 1764806400000,
//!              "kind": "view", "item_id": "sku-1", "category": "shoes",
//!              "attributes": {"device": "mobile"}}]}
//! ```
//!
//! `item_id`, `category`, `price_minor`, `quantity` and `attributes` may be
//! left out (empty, 0, none); any other field, `tenant` included, is a
//! reason to reject the event. Limits per key (`serve.collector_*`): the
//! body size (413), events in a body (400) and events per second (429 with
//! `Retry-After`); a broker that does not take the events: 503 (the event
//! ids make a retry safe: duplicates are dropped everywhere).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use serde::Deserialize;
use serde_json::Value;
use weft_core::partition::partition_for_key;
use weft_core::{Event, EventKind};

use crate::error::ApiError;

/// One event as a page sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    event_id: String,
    user_id: String,
    ts_ms: i64,
    kind: String,
    #[serde(default)]
    item_id: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    price_minor: i64,
    #[serde(default)]
    quantity: i32,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// What a body holds: per event, in order, the event or why it is
/// rejected. The whole body is refused (`INVALID_ARGUMENT`) only when it
/// is not JSON of one of the three shapes, holds no event, or more than
/// `max_events`.
pub fn parse_events(
    body: &[u8],
    tenant: &str,
    max_events: usize,
) -> Result<Vec<Result<Event, String>>, ApiError> {
    let bad = |m: String| ApiError::InvalidArgument(m);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("events") => {
            if o.len() > 1 {
                let other = o.keys().find(|k| *k != "events").cloned();
                return Err(bad(format!(
                    "unknown field {other:?} next to \"events\" (the body is {{\"events\": [...]}}, an array of events or one event)"
                )));
            }
            match o.remove("events") {
                Some(Value::Array(items)) => items,
                _ => return Err(bad("\"events\" must be an array of events".into())),
            }
        }
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(bad(
                "the body must be an event, an array of events or {\"events\": [...]}".into(),
            ));
        }
    };
    if items.is_empty() {
        return Err(bad("no events in the body".into()));
    }
    if items.len() > max_events {
        return Err(bad(format!(
            "{} events in one body; at most {max_events}",
            items.len()
        )));
    }
    Ok(items.into_iter().map(|v| event(v, tenant)).collect())
}

/// One posted event, checked.
fn event(value: Value, tenant: &str) -> Result<Event, String> {
    if value.get("tenant").is_some() {
        return Err("tenant: not accepted in a body (the key decides the tenant)".into());
    }
    let posted: Posted = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let kind = EventKind::parse(&posted.kind).ok_or_else(|| {
        format!(
            "kind {:?} is not one of {}",
            crate::state::truncate(&posted.kind, 32),
            EventKind::ALL.map(|k| k.as_str()).join(", ")
        )
    })?;
    let event = Event {
        event_id: posted.event_id,
        tenant: tenant.to_string(),
        user_id: posted.user_id,
        ts_ms: posted.ts_ms,
        kind,
        item_id: posted.item_id,
        category: posted.category,
        price_minor: posted.price_minor,
        quantity: posted.quantity,
        attributes: posted.attributes,
    };
    event.validate().map_err(|e| e.to_string())?;
    Ok(event)
}

/// What the collector answers for a body it read: counts, and per
/// rejected event its index in the body and the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Collected {
    pub accepted: usize,
    pub rejected: usize,
    pub errors: Vec<Rejected>,
    /// Where the accepted events landed (`partition:offset`, the newest
    /// per partition): a read given it as `after` waits until the speed
    /// layer has applied them (read-your-writes). Absent if none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub read_after: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// Why a body was refused, and when to send it again (429s).
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub retry_after_secs: Option<u64>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused {
            error,
            retry_after_secs: None,
        }
    }
}

/// A key's token bucket: `tokens` as of `at`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The collector: limits, the per-key rate buckets and the producer.
pub struct Collector {
    producer: FutureProducer,
    topic: String,
    /// The topic's partition count (`kafka.partitions`): each event goes
    /// to its user's partition, as every Weft producer sends it.
    partitions: u32,
    pub max_body: usize,
    max_events: usize,
    per_sec: f64,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("topic", &self.topic)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// How long the broker has to take a body's events.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

impl Collector {
    /// A collector producing to `topic` on `bootstrap` (the idempotent
    /// producer: acks from every in-sync replica, no duplicates on its
    /// retries, order kept per partition).
    pub fn new(
        bootstrap: &str,
        topic: &str,
        partitions: u32,
        limits: &weft_config::ServerConfig,
    ) -> Result<Collector, String> {
        let producer: FutureProducer = weft_speed::kafka::base_config(bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| format!("the collector's producer: {e}"))?;
        Ok(Collector {
            producer,
            topic: topic.to_string(),
            partitions,
            max_body: limits.collector_max_body_kb << 10,
            max_events: limits.collector_max_events,
            per_sec: limits.collector_events_per_sec as f64,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes `n` events from `key`'s budget, or says in how many seconds
    /// they would fit (a body larger than the burst never fits: the
    /// answer says so).
    fn admit(&self, key: &Arc<str>, n: usize) -> Result<(), Refused> {
        let burst = 2.0 * self.per_sec;
        let n = n as f64;
        if n > burst {
            return Err(ApiError::InvalidArgument(format!(
                "{n} events in one body is more than key {key:?} may send at once ({burst}; serve.collector_events_per_sec is {})",
                self.per_sec
            ))
            .into());
        }
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| ApiError::Internal("the collector's rate table".into()))?;

        let now = Instant::now();
        let b = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            let wait = ((n - b.tokens) / self.per_sec).ceil().max(1.0) as u64;
            Err(Refused {
                error: ApiError::ResourceExhausted(format!(
                    "key {key:?} sends more than {} events a second (serve.collector_events_per_sec)",
                    self.per_sec
                )),
                retry_after_secs: Some(wait),
            })
        }
    }

    /// Reads `body` for `principal`'s tenant, produces the accepted events
    /// and says what became of each.
    pub async fn collect(
        &self,
        principal: &crate::auth::Principal,
        body: &[u8],
    ) -> Result<Collected, Refused> {
        let judged = parse_events(body, &principal.tenant, self.max_events)?;
        self.admit(&principal.key_name, judged.len())?;
        let mut errors = Vec::new();
        let mut sends = Vec::new();
        for (index, event) in judged.into_iter().enumerate() {
            match event {
                Ok(e) => sends.push(e),
                Err(reason) => errors.push(Rejected { index, reason }),
            }
        }
        let deliveries = sends.iter().map(|e| {
            let (key, value) = (e.kafka_key(), e.encode());
            // Explicitly: librdkafka's own default partitioner is not
            // Kafka's murmur2, which the shards and the archive rely on.
            let partition = partition_for_key(key.as_bytes(), self.partitions);
            async move {
                self.producer
                    .send(
                        FutureRecord::to(&self.topic)
                            .key(&key)
                            .payload(&value)
                            .partition(partition),
                        DELIVERY_TIMEOUT,
                    )
                    .await
                    .map_err(|(e, _)| e.to_string())
            }
        });
        let mut landed = std::collections::BTreeMap::new();
        let mut failed: Vec<String> = Vec::new();
        for r in futures::future::join_all(deliveries).await {
            match r {
                Ok(d) => {
                    let at = landed.entry(d.partition).or_insert(d.offset);
                    *at = (*at).max(d.offset);
                }
                Err(e) => failed.push(e),
            }
        }
        if let Some(first) = failed.first() {
            return Err(ApiError::Unavailable(format!(
                "the event log did not take {} of {} events ({first}); send the body again (event ids make a retry safe)",
                failed.len(),
                sends.len()
            ))
            .into());
        }
        Ok(Collected {
            accepted: sends.len(),
            rejected: errors.len(),
            errors,
            read_after: crate::state::read_after_token(&landed),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ONE: &str = r#"{"event_id": "e1", "user_id": "u1", "ts_ms": 1764806400000,
        "kind": "view", "item_id": "i1", "category": "c1", "attributes": {"device": "mobile"}}"#;

    #[test]
    fn the_three_shapes_give_the_same_event_with_the_keys_tenant() {
        for body in [
            ONE.to_string(),
            format!("[{ONE}]"),
            format!("{{\"events\": [{ONE}]}}"),
        ] {
            let got = parse_events(body.as_bytes(), "acme", 10).unwrap();
            let e = got[0].as_ref().unwrap();
            assert_eq!(
                (
                    e.tenant.as_str(),
                    e.user_id.as_str(),
                    e.kind,
                    e.item_id.as_str()
                ),
                ("acme", "u1", EventKind::View, "i1")
            );
            assert_eq!(e.attributes["device"], "mobile");
        }
        // Optional fields left out.
        let got = parse_events(
            br#"{"event_id":"e2","user_id":"u1","ts_ms":1764806400000,"kind":"search"}"#,
            "acme",
            10,
        )
        .unwrap();
        assert_eq!(got[0].as_ref().unwrap().item_id, "");
    }

    #[test]
    fn each_bad_event_gets_its_reason_and_the_others_pass() {
        let body = format!(
            r#"[{ONE},
               {{"event_id":"e2","user_id":"u1","ts_ms":"soon","kind":"view"}},
               {{"event_id":"e3","user_id":"u1","ts_ms":1764806400000,"kind":"teleport"}},
               {{"event_id":"e4","user_id":"a/b","ts_ms":1764806400000,"kind":"view"}},
               {{"event_id":"e5","user_id":"u1","ts_ms":5,"kind":"view"}},
               {{"event_id":"e6","user_id":"u1","ts_ms":1764806400000,"kind":"view","tenant":"other"}},
               {{"event_id":"e7","user_id":"u1","ts_ms":1764806400000,"kind":"view","colour":"red"}},
               {{"event_id":"e8","user_id":"u1","ts_ms":1764806400000,"kind":"purchase","price_minor":-1}},
               {{"user_id":"u1","ts_ms":1764806400000,"kind":"view"}},
               7]"#
        );
        let got = parse_events(body.as_bytes(), "acme", 100).unwrap();
        assert!(got[0].is_ok());
        let reasons: Vec<String> = got[1..].iter().map(|r| r.clone().unwrap_err()).collect();
        for (reason, needle) in reasons.iter().zip([
            "invalid type: string \"soon\"",
            "kind \"teleport\" is not one of view, click",
            "user_id contains '/'",
            "ts_ms 5 is outside",
            "the key decides the tenant",
            "unknown field `colour`",
            "negative price_minor",
            "missing field `event_id`",
            "invalid type: integer `7`",
        ]) {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
    }

    #[test]
    fn bodies_that_are_not_events_are_refused_whole() {
        for (body, needle) in [
            (&b"not json"[..], "not JSON"),
            (b"[]", "no events"),
            (b"{\"events\": []}", "no events"),
            (b"{\"events\": 3}", "must be an array"),
            (b"{\"events\": [], \"x\": 1}", "unknown field"),
            (b"42", "must be an event"),
        ] {
            let e = parse_events(body, "acme", 10).unwrap_err();
            assert!(
                matches!(&e, ApiError::InvalidArgument(m) if m.contains(needle)),
                "{e:?}"
            );
        }
        let many = format!("[{}]", [ONE; 11].join(","));
        let e = parse_events(many.as_bytes(), "acme", 10).unwrap_err();
        assert!(e.to_string().contains("at most 10"), "{e}");
    }

    /// 10k bodies mutated from good ones (bytes flipped, cut, repeated):
    /// each is refused whole or judged event by event, never a panic, and
    /// every event accepted passes the speed layer's rules.
    #[test]
    fn random_bodies_are_refused_or_judged_never_a_panic() {
        let good = format!("{{\"events\": [{ONE}, {ONE}]}}");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut whole, mut judged) = (0, 0);
        for _ in 0..10_000 {
            let mut body = good.as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % body.len();
                match next() % 3 {
                    0 => body[i] = next() as u8,
                    1 => body.truncate(i.max(1)),
                    _ => {
                        let b = body[i];
                        body.insert(i, b);
                    }
                }
            }
            match parse_events(&body, "acme", 100) {
                Err(ApiError::InvalidArgument(_)) => whole += 1,
                Err(e) => panic!("{e:?}"),
                Ok(events) => {
                    judged += 1;
                    for e in events.into_iter().flatten() {
                        e.validate().unwrap();
                        assert_eq!(e.tenant, "acme");
                    }
                }
            }
        }
        assert!(whole > 0 && judged > 0, "{whole} refused, {judged} judged");
    }
}
