//! The speed layer's metrics in the Prometheus text format.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weft_speed_records_total` | counter | |
//! | `weft_speed_applied_events_total` | counter | |
//! | `weft_speed_duplicates_total` | counter | |
//! | `weft_speed_dead_letters_total` | counter | |
//! | `weft_speed_batches_total` | counter | |
//! | `weft_speed_apply_seconds` | histogram (per batch: dedup, fold, commit) | |
//! | `weft_speed_position` | gauge: next offset to consume | `partition` |
//! | `weft_speed_high_watermark` | gauge: the broker's end of the partition | `partition` |
//! | `weft_speed_lag_messages` | gauge: high watermark − position | `partition` |
//! | `weft_speed_ready_generation`, `weft_speed_building_generation` | gauge (0: none building) | |
//! | `weft_speed_newest_event_ms` | gauge: newest applied event time | |
//! | `weft_speed_dedup_ids` | gauge: event ids held in memory for dedup | |
//! | `weft_speed_rocksdb` | gauge: RocksDB properties | `cf`, `property` |
//!
//! Events per second is `rate(weft_speed_records_total[1m])`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::consumer::SpeedMetrics;

/// Reads [`SpeedMetrics`] at scrape time.
#[derive(Debug)]
struct SpeedCollector(Arc<SpeedMetrics>);

/// Encodes one counter (a [`Collector`] helper other layers share).
pub fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Encodes one gauge (a [`Collector`] helper other layers share).
pub fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn per_partition(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(i32, i64)],
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (p, v) in values {
        let labels = [("partition", p.to_string())];
        ConstGauge::new(*v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SpeedCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "weft_speed_records",
            "Kafka records consumed (valid, invalid and duplicate)",
            load(&m.records),
        )?;
        counter(
            &mut e,
            "weft_speed_applied_events",
            "Events folded into the speed view",
            load(&m.applied),
        )?;
        counter(
            &mut e,
            "weft_speed_duplicates",
            "Redeliveries dropped within the dedup horizon",
            load(&m.duplicates),
        )?;
        counter(
            &mut e,
            "weft_speed_dead_letters",
            "Invalid records sent to the dead-letter topic",
            load(&m.dead_letters),
        )?;
        counter(
            &mut e,
            "weft_speed_batches",
            "Batches committed to RocksDB",
            load(&m.batches),
        )?;
        gauge(
            &mut e,
            "weft_speed_ready_generation",
            "The speed generation readers use",
            load(&m.ready_generation) as i64,
        )?;
        gauge(
            &mut e,
            "weft_speed_building_generation",
            "The speed generation being built (0: none)",
            load(&m.building_generation) as i64,
        )?;
        gauge(
            &mut e,
            "weft_speed_newest_event_ms",
            "Event time of the newest applied event",
            m.newest_event_ms.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "weft_speed_dedup_ids",
            "Event ids held in memory for dedup (29-57 bytes each)",
            load(&m.dedup_ids) as i64,
        )?;
        let positions = m.positions();
        let watermarks = m.high_watermarks();
        let mut partitions: Vec<i32> = positions.keys().chain(watermarks.keys()).copied().collect();
        partitions.sort_unstable();
        partitions.dedup();
        let at =
            |map: &std::collections::HashMap<i32, i64>, p: i32| map.get(&p).copied().unwrap_or(0);
        let rows =
            |f: &dyn Fn(i32) -> i64| partitions.iter().map(|p| (*p, f(*p))).collect::<Vec<_>>();
        per_partition(
            &mut e,
            "weft_speed_position",
            "Next offset to consume",
            &rows(&|p| at(&positions, p)),
        )?;
        per_partition(
            &mut e,
            "weft_speed_high_watermark",
            "The partition's high watermark as last fetched",
            &rows(&|p| at(&watermarks, p)),
        )?;
        per_partition(
            &mut e,
            "weft_speed_lag_messages",
            "Records behind the high watermark",
            &rows(&|p| (at(&watermarks, p) - at(&positions, p)).max(0)),
        )?;
        let stats = m.rocksdb_stats();
        if !stats.is_empty() {
            let mut family = e.encode_descriptor(
                "weft_speed_rocksdb",
                "RocksDB properties of the speed view",
                None,
                MetricType::Gauge,
            )?;
            for (cf, property, v) in &stats {
                let labels = [("cf", cf.clone()), ("property", property.clone())];
                ConstGauge::new(*v as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A registry holding the speed layer's metrics.
pub fn registry(metrics: Arc<SpeedMetrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "weft_speed_apply_seconds",
        "Time to dedup, fold and commit one batch",
        metrics.apply_seconds.clone(),
    );
    registry.register_collector(Box::new(SpeedCollector(metrics)));
    registry
}

/// The metrics as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
