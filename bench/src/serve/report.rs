//! The results: rows, ratios between targets, timelines, the JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use super::client::{REQUEST_TIMEOUT, Target};
use super::phase::{Phase, PhaseRun, WindowRow};
use crate::common::user_id;

/// One row of the results table.
#[derive(Debug, Serialize)]
pub(super) struct Row {
    /// 1-based (`--rounds`).
    pub(super) round: u32,
    pub(super) target: &'static str,
    pub(super) phase: &'static str,
    /// Successful replies per second.
    pub(super) qps: f64,
    pub(super) p50_us: u64,
    pub(super) p99_us: u64,
    pub(super) p999_us: u64,
    pub(super) max_us: u64,
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) error_kinds: BTreeMap<String, u64>,
    /// Fixed rate only: the pacer's delay, scheduled → sent.
    pub(super) send_lag_p50_us: Option<u64>,
    pub(super) send_lag_p99_us: Option<u64>,
    /// The load generator's CPU time over the phase: per request
    /// (successful or not), and in cores (CPU time / elapsed).
    pub(super) client_cpu_us_per_request: Option<f64>,
    pub(super) client_cores: Option<f64>,
    /// The same for the server, where its PID was given.
    pub(super) server_cpu_us_per_request: Option<f64>,
    pub(super) server_cores: Option<f64>,
    pub(super) elapsed_secs: f64,
    /// The phase's start, Unix milliseconds.
    pub(super) started_unix_ms: i64,
    /// `--timeline-secs`, fixed rate only: one row per window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) timeline: Vec<WindowRow>,
}

impl Row {
    pub(super) fn new(
        round: u32,
        target: &'static str,
        phase: Phase,
        run: &PhaseRun,
    ) -> Result<Row> {
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
pub(super) struct Ratio {
    /// 1-based round; 0 for the median over the rounds.
    pub(super) round: u32,
    pub(super) what: String,
    pub(super) value: f64,
    /// Either side had errors: the figures do not compare like with like.
    pub(super) errors: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct ServeReport {
    pub(super) users: u32,
    pub(super) first_user: u32,
    /// Asked for in each request; empty: all.
    pub(super) features: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) connections: usize,
    pub(super) rate: f64,
    pub(super) duration_secs: u64,
    pub(super) warmup_secs: u64,
    pub(super) rounds: u32,
    pub(super) timeline_secs: Option<u64>,
    pub(super) client_threads: usize,
    pub(super) cores: usize,
    pub(super) rows: Vec<Row>,
    pub(super) ratios: Vec<Ratio>,
}

/// Checks a target answers before measuring it.
pub(super) async fn probe(target: &Target) -> Result<()> {
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
pub(super) fn ratios(rows: &[Row], rounds: u32) -> Vec<Ratio> {
    let mut out = Vec::new();
    for round in 1..=rounds {
        let find = |target: &str, phase: Phase| {
            rows.iter()
                .find(|r| r.round == round && r.target == target && r.phase == phase.name())
        };
        // The hop: the same users through a shard that forwards them.
        if let (Some(w), Some(f)) = (
            find("weft", Phase::Fixed(0.0)),
            find("forwarder", Phase::Fixed(0.0)),
        ) {
            out.push(Ratio {
                round,
                what: "forwarder p99 / owner (weft) p99 at the fixed rate".into(),
                value: f.p99_us as f64 / (w.p99_us as f64).max(1.0),
                errors: w.errors + f.errors > 0,
            });
        }
        if let (Some(w), Some(f)) = (find("weft", Phase::Max), find("forwarder", Phase::Max)) {
            out.push(Ratio {
                round,
                what: "forwarder max QPS / owner (weft) max QPS".into(),
                value: f.qps / w.qps.max(1e-9),
                errors: w.errors + f.errors > 0,
            });
        }
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
pub(super) fn print_timelines(rows: &[Row]) {
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
