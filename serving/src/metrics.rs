//! Serving metrics, added to the speed layer's registry so one `/metrics`
//! shows the whole process.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weft_serving_request_seconds` | histogram: arrival to answer | `protocol`, `method`, `code` |
//! | `weft_serving_forwarded_seconds` | histogram: a call forwarded to the owner of its users' partition, sent to answered | `method`, `peer`, `code` |
//! | `weft_serving_in_flight` | gauge: requests admitted, queued ones included | |
//! | `weft_serving_batch_view_version` | gauge (0: none) | |
//! | `weft_serving_batch_view_age_seconds` | gauge | |
//! | `weft_serving_speed_generation` | gauge: generation paired with the view | |
//! | `weft_serving_speed_lag_messages` | gauge: records not yet applied | |
//! | `weft_serving_speed_lag_seconds` | gauge: age of the newest applied event | |
//! | `weft_serving_rocksdb_cache_bytes` | gauge: block cache and table readers | `store`, `kind` |
//!
//! Plus every `weft_speed_*` metric (`weft_speed::metrics`).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;
use weft_speed::metrics::gauge;
use weft_speed::store::CACHE_PROPERTIES;

use crate::error::code_name;
use crate::state::{Serving, now_ms};

type Labels = [(&'static str, &'static str); 3];
/// `method`, `peer` (its `serve.peers` gRPC address) and `code`.
type ForwardLabels = [(&'static str, Arc<str>); 3];

fn new_histogram() -> Histogram {
    // 25 µs to ~0.8 s.
    Histogram::new(exponential_buckets(25e-6, 2.0, 16))
}

/// Request latency by protocol, method and status, and a recent-window
/// histogram of successful requests for status lines (`weft up`).
#[derive(Debug)]
pub struct RequestMetrics {
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    forwarded: Family<ForwardLabels, Histogram, fn() -> Histogram>,
    /// The OK series of the three calls over both protocols, taken from
    /// `latency` once: a request then skips the family's lock and label
    /// hash.
    ok: [[OnceLock<Histogram>; 3]; 2],
    recent: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        RequestMetrics {
            latency: Family::new_with_constructor(new_histogram),
            forwarded: Family::new_with_constructor(new_histogram),
            ok: Default::default(),
            recent: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).ok()),
        }
    }
}

impl RequestMetrics {
    pub fn observe(
        &self,
        protocol: &'static str,
        method: &'static str,
        code: Code,
        since: Instant,
    ) {
        let elapsed = since.elapsed();
        let labels = [
            ("protocol", protocol),
            ("method", method),
            ("code", code_name(code)),
        ];
        let ok = match (code, protocol, method) {
            (
                Code::Ok,
                "grpc" | "http",
                "GetProfile" | "BatchGetProfiles" | "GetRecommendations",
            ) => {
                let p = usize::from(protocol == "http");
                let m = match method {
                    "GetProfile" => 0,
                    "BatchGetProfiles" => 1,
                    _ => 2,
                };
                Some(&self.ok[p][m])
            }
            _ => None,
        };
        let seconds = elapsed.as_secs_f64();
        match ok {
            Some(h) => h
                .get_or_init(|| self.latency.get_or_create(&labels).clone())
                .observe(seconds),
            None => self.latency.get_or_create(&labels).observe(seconds),
        }
        if code == Code::Ok
            && let Ok(mut recent) = self.recent.lock()
            && let Some(h) = recent.as_mut()
        {
            h.saturating_record(elapsed.as_micros() as u64);
        }
    }

    /// A call this node forwarded to `peer`, sent at `since`.
    pub fn observe_forward(
        &self,
        method: &'static str,
        peer: &Arc<str>,
        code: Code,
        since: Instant,
    ) {
        let labels = [
            ("method", Arc::from(method)),
            ("peer", peer.clone()),
            ("code", Arc::from(code_name(code))),
        ];
        self.forwarded
            .get_or_create(&labels)
            .observe(since.elapsed().as_secs_f64());
    }

    /// The p99 in microseconds of the successful requests since the last
    /// call (None: there were none), resetting the window.
    pub fn take_recent_p99_micros(&self) -> Option<u64> {
        let mut recent = self.recent.lock().ok()?;
        let h = recent.as_mut()?;
        if h.is_empty() {
            return None;
        }
        let p99 = h.value_at_quantile(0.99);
        h.reset();
        Some(p99)
    }
}

/// Whatever counts the requests admitted and not yet answered (the
/// admission gate), read at scrape time.
pub trait InFlight: std::fmt::Debug + Send + Sync + 'static {
    fn in_flight(&self) -> usize;
}

/// Reads the serving state at scrape time.
#[derive(Debug)]
struct ServingCollector {
    serving: Arc<Serving>,
    gate: Arc<dyn InFlight>,
}

impl Collector for ServingCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = &self.serving;
        let now = now_ms();
        gauge(
            &mut e,
            "weft_serving_in_flight",
            "Requests admitted and not yet answered",
            self.gate.in_flight() as i64,
        )?;
        if let Some(pair) = s.current_pair() {
            let f = s.freshness(&pair, now);
            gauge(
                &mut e,
                "weft_serving_batch_view_version",
                "Batch view served (0: none yet)",
                f.batch_view_version as i64,
            )?;
            gauge(
                &mut e,
                "weft_serving_batch_view_age_seconds",
                "Age of the served batch view",
                f.batch_view_age_ms / 1000,
            )?;
            gauge(
                &mut e,
                "weft_serving_speed_generation",
                "Speed generation paired with the served view",
                f.speed_generation as i64,
            )?;
        }
        gauge(
            &mut e,
            "weft_serving_speed_lag_messages",
            "Records on the topic not yet applied by the speed layer",
            s.lag_messages(),
        )?;
        gauge(
            &mut e,
            "weft_serving_speed_lag_seconds",
            "Age of the newest applied event",
            s.lag_ms(now) / 1000,
        )?;
        let mut family = e.encode_descriptor(
            "weft_serving_rocksdb_cache_bytes",
            "RocksDB memory for reads: block cache and table readers",
            None,
            MetricType::Gauge,
        )?;
        for (kind, v) in s.speed().cache_usage() {
            ConstGauge::new(v as i64)
                .encode(family.encode_family(&[("store", "speed"), ("kind", kind)])?)?;
        }
        if let Some(view) = s.current_pair().and_then(|p| p.view.clone()) {
            for (kind, property) in CACHE_PROPERTIES {
                if let Ok(Some(v)) = view.db().property_int_value(property) {
                    ConstGauge::new(v as i64).encode(
                        family.encode_family(&[("store", "batch_view"), ("kind", kind)])?,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The process registry: speed metrics, request latencies and the serving
/// gauges (`gate` gives the in-flight count).
pub fn registry(
    serving: Arc<Serving>,
    gate: Arc<impl InFlight>,
    requests: &RequestMetrics,
) -> Registry {
    let mut registry = weft_speed::metrics::registry(serving.speed_metrics().clone());
    registry.register(
        "weft_serving_request_seconds",
        "Time from a request's arrival to its answer",
        requests.latency.clone(),
    );
    registry.register(
        "weft_serving_forwarded_seconds",
        "Calls forwarded to the owner of their users' partition, from sent to answered",
        requests.forwarded.clone(),
    );
    registry.register_collector(Box::new(ServingCollector { serving, gate }));
    registry
}
