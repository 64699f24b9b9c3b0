//! The operator health page, `GET /ops` (an `admin` key; a browser may
//! give it as the password of HTTP Basic authentication): for the key's
//! tenant, the event rate actual vs expected, and the platform's dead-letter
//! rate, speed lag, batch view age and request p99, as server-rendered SVG
//! charts with no external assets.
//!
//! *Actual* is the events the speed layer applied per tenant
//! (`SpeedMetrics::tenant_applied`), sampled every `serve.ops_sample_secs`.
//! *Expected* for an hour H is the recency-weighted average of the same
//! hour of the week in the four weeks before (weights 1, 1/2, 1/4, 1/8,
//! over the weeks the history covers), from the archive's arrival times
//! (`weft_core::archive::hourly_arrivals`, reloaded every six hours; local
//! archives) and the hours this process counted itself. A sample expects
//! its hour's rate pro rata. A small tenant (under 60 expected events an
//! hour) is read on the day's cumulative chart, where a quiet hour is not an
//! outage.
//!
//! The status of a tenant compares the last [`STATUS_SAMPLES`] samples:
//! `below` when actual is under half of expected, `ok` otherwise,
//! `no-history` without an expectation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::demo::escape_html;
use crate::metrics::RequestMetrics;
use crate::state::{Serving, now_ms};

const HOUR_MS: i64 = 3_600_000;
const WEEK_MS: i64 = 7 * 24 * HOUR_MS;
/// Weeks of history an expectation averages.
const WEEKS: i64 = 4;
/// Samples kept (a day at the default minute).
const KEPT_SAMPLES: usize = 1_440;
/// Samples the status compares.
pub const STATUS_SAMPLES: usize = 10;
/// Expected events an hour under which a tenant is small.
const SMALL_PER_HOUR: f64 = 60.0;
/// How often the archive's history is read again.
const HISTORY_EVERY: Duration = Duration::from_secs(6 * 3600);

/// One sample of the platform.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_ms: i64,
    /// Events applied per tenant since the previous sample.
    events: HashMap<String, u64>,
    dead_letters: u64,
    lag_messages: i64,
    view_age_secs: Option<i64>,
    p99_micros: Option<u64>,
}

#[derive(Debug, Default)]
struct Data {
    samples: VecDeque<Sample>,
    last_applied: HashMap<String, u64>,
    last_dead: u64,
    /// Arrivals per tenant and hour, from the archive.
    archive: HashMap<String, BTreeMap<i64, u64>>,
    /// The first hour the archive's history covers.
    covered_from: Option<i64>,
    /// Arrivals per tenant and hour, counted by this process.
    live: HashMap<String, BTreeMap<i64, u64>>,
    /// The first whole hour this process counted.
    live_from: Option<i64>,
}

/// The operator page's state: samples and history.
#[derive(Debug)]
pub struct Ops {
    sample_ms: i64,
    archive_root: Option<PathBuf>,
    data: Mutex<Data>,
}

impl Ops {
    /// `archive_root`: the archive to read history from (local paths only;
    /// None: live counts only).
    pub fn new(sample_secs: u64, archive_root: Option<PathBuf>) -> Ops {
        Ops {
            sample_ms: (sample_secs.max(1) * 1000) as i64,
            archive_root,
            data: Mutex::new(Data::default()),
        }
    }

    /// Reads the archive's arrivals of the last `WEEKS` + 1 weeks.
    fn load_history(&self) {
        let Some(root) = &self.archive_root else {
            return;
        };
        let now = now_ms();
        match weft_core::archive::hourly_arrivals(root, now - (WEEKS + 1) * WEEK_MS, now) {
            Ok(hours) => {
                let first = hours
                    .values()
                    .filter_map(|h| h.keys().next())
                    .min()
                    .copied();
                if let Ok(mut d) = self.data.lock() {
                    d.archive = hours;
                    d.covered_from = first;
                }
            }
            Err(e) => tracing::warn!(error = %e, "ops: reading the archive's history"),
        }
    }

    /// Takes a sample now.
    fn sample(&self, serving: &Serving, requests: &RequestMetrics) {
        let now = now_ms();
        let m = serving.speed_metrics();
        let applied = m.tenant_applied();
        let dead = m.dead_letters.load(std::sync::atomic::Ordering::Relaxed);
        let view_age_secs = serving.current_pair().and_then(|p| {
            p.view
                .as_ref()
                .map(|v| (now - v.manifest().created_ms) / 1000)
        });
        let p99_micros = requests.take_recent_p99_micros();
        let Ok(mut d) = self.data.lock() else {
            return;
        };
        let events: HashMap<String, u64> = applied
            .iter()
            .map(|(t, n)| {
                let before = d.last_applied.get(t).copied().unwrap_or(0);
                (t.clone(), n.saturating_sub(before))
            })
            .collect();
        let hour = now.div_euclid(HOUR_MS) * HOUR_MS;
        if d.live_from.is_none() {
            // The hour this process started in is not whole.
            d.live_from = Some(hour + HOUR_MS);
        }
        for (t, n) in &events {
            *d.live
                .entry(t.clone())
                .or_default()
                .entry(hour)
                .or_default() += n;
        }
        let sample = Sample {
            at_ms: now,
            events,
            dead_letters: dead.saturating_sub(d.last_dead),
            lag_messages: serving.lag_messages(),
            view_age_secs,
            p99_micros,
        };
        d.last_applied = applied;
        d.last_dead = dead;
        d.samples.push_back(sample);
        while d.samples.len() > KEPT_SAMPLES {
            d.samples.pop_front();
        }
        // Live hours older than the history needs.
        let oldest = now - (WEEKS + 1) * WEEK_MS;
        for hours in d.live.values_mut() {
            while hours.first_key_value().is_some_and(|(h, _)| *h < oldest) {
                hours.pop_first();
            }
        }
    }

    /// The p99 of the newest sample (µs), for status lines.
    pub fn last_p99_micros(&self) -> Option<u64> {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.samples.back().and_then(|s| s.p99_micros))
    }

    /// Samples every `sample_secs` and reloads the history, until `stop`.
    pub async fn run(
        self: Arc<Ops>,
        serving: Arc<Serving>,
        requests: Arc<RequestMetrics>,
        stop: CancellationToken,
    ) {
        let mut loaded: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(self.sample_ms as u64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if loaded.is_none_or(|at| at.elapsed() >= HISTORY_EVERY) {
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.load_history()).await;
                loaded = Some(tokio::time::Instant::now());
            }
            self.sample(&serving, &requests);
        }
    }

    /// The page for `tenant`.
    pub fn render(&self, tenant: &str) -> String {
        let d = match self.data.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let now = now_ms();
        let view = View { d: &d, tenant };
        let mut body = String::new();

        // Minutes: the last samples, actual vs expected.
        let recent: Vec<&Sample> = d.samples.iter().rev().take(60).rev().collect();
        let per_sample = |s: &Sample| {
            view.expected(s.at_ms)
                .map(|e| e * self.sample_ms as f64 / HOUR_MS as f64)
        };
        let actual: Vec<Option<f64>> = recent
            .iter()
            .map(|s| Some(s.events.get(tenant).copied().unwrap_or(0) as f64))
            .collect();
        let expected: Vec<Option<f64>> = recent.iter().map(|s| per_sample(s)).collect();
        let tail = |v: &[Option<f64>]| -> Option<f64> {
            let last: Vec<f64> = v
                .iter()
                .rev()
                .take(STATUS_SAMPLES)
                .flatten()
                .copied()
                .collect();
            (last.len() == v.len().min(STATUS_SAMPLES) && !last.is_empty())
                .then(|| last.iter().sum())
        };
        let (a, e) = (tail(&actual), tail(&expected));
        let status = match (a, e) {
            (Some(a), Some(e)) if e >= 1.0 && a < 0.5 * e => "below",
            (Some(_), Some(_)) => "ok",
            _ => "no-history",
        };
        let expected_hour = view.expected(now);
        let small = expected_hour.is_some_and(|e| e < SMALL_PER_HOUR);
        let _ = write!(
            body,
            r#"<section class="tenant" data-tenant="{t}" data-small="{small}"><h2>Tenant {t}</h2>
<p class="status" data-status="{status}" data-actual="{a}" data-expected="{e}">Last {n} samples: <b>{a_text}</b> events applied, <b>{e_text}</b> expected — {status_text}{small_text}</p>
"#,
            t = escape_html(tenant),
            n = STATUS_SAMPLES,
            a = a.unwrap_or(-1.0),
            e = e.unwrap_or(-1.0),
            a_text = a.map_or("-".into(), |v| format!("{v:.0}")),
            e_text = e.map_or("no history".into(), |v| format!("{v:.1}")),
            status_text = match status {
                "below" => "ACTUAL BELOW EXPECTED",
                "ok" => "as expected",
                _ => "no history for this hour of the week yet",
            },
            small_text = if small {
                " (a small tenant: read the day's cumulative chart)"
            } else {
                ""
            },
        );
        body.push_str(&versus(
            "minutes",
            &format!(
                "Events per {} s sample (last {} samples)",
                self.sample_ms / 1000,
                recent.len()
            ),
            actual,
            expected,
            recent.first().map(|s| s.at_ms),
            recent.last().map(|s| s.at_ms),
        ));

        // Hours: the last 24, actual vs expected.
        let this_hour = now.div_euclid(HOUR_MS) * HOUR_MS;
        let hours: Vec<i64> = (0..24).rev().map(|i| this_hour - i * HOUR_MS).collect();
        let actual: Vec<Option<f64>> = hours
            .iter()
            .map(|h| view.actual(*h).map(|v| v as f64))
            .collect();
        let expected: Vec<Option<f64>> = hours.iter().map(|h| view.expected(*h)).collect();
        body.push_str(&versus(
            "hours",
            "Events per hour (last 24 h; the current hour so far)",
            actual,
            expected,
            hours.first().copied(),
            hours.last().copied(),
        ));

        // Today, cumulative by hour.
        let day = now.div_euclid(24 * HOUR_MS) * 24 * HOUR_MS;
        let today: Vec<i64> = (0..=((this_hour - day) / HOUR_MS))
            .map(|i| day + i * HOUR_MS)
            .collect();
        let mut sum = (0.0, 0.0);
        let (mut actual, mut expected) = (Vec::new(), Vec::new());
        for h in &today {
            sum.0 += view.actual(*h).unwrap_or(0) as f64;
            // The current hour expects its share so far.
            let share = ((now - h) as f64 / HOUR_MS as f64).min(1.0);
            sum.1 += view.expected(*h).unwrap_or(0.0) * share;
            actual.push(Some(sum.0));
            expected.push(expected_hour.map(|_| sum.1));
        }
        body.push_str(&versus(
            "day",
            "Today (UTC), cumulative events",
            actual,
            expected,
            today.first().copied(),
            today.last().copied(),
        ));
        body.push_str("</section>\n");

        // The platform.
        let (first, last) = (
            recent.first().map(|s| s.at_ms),
            recent.last().map(|s| s.at_ms),
        );
        body.push_str(r#"<section class="platform"><h2>Platform</h2>"#);
        let series =
            |f: &dyn Fn(&Sample) -> Option<f64>| recent.iter().map(|s| f(s)).collect::<Vec<_>>();
        body.push_str(&chart(
            "dead-letters",
            "Dead letters per sample",
            &[(
                "dead letters",
                "#a4262c",
                series(&|s| Some(s.dead_letters as f64)),
            )],
            first,
            last,
        ));
        body.push_str(&chart(
            "lag",
            "Speed lag (messages)",
            &[("lag", "#0b5cad", series(&|s| Some(s.lag_messages as f64)))],
            first,
            last,
        ));
        body.push_str(&chart(
            "view-age",
            "Batch view age (s)",
            &[(
                "view age",
                "#0b5cad",
                series(&|s| s.view_age_secs.map(|v| v as f64)),
            )],
            first,
            last,
        ));
        body.push_str(&chart(
            "p99",
            "p99 of answered requests (ms)",
            &[(
                "p99",
                "#0b5cad",
                series(&|s| s.p99_micros.map(|v| v as f64 / 1000.0)),
            )],
            first,
            last,
        ));
        body.push_str("</section>\n");
        page(tenant, &body)
    }
}

/// One tenant's view of the history.
struct View<'a> {
    d: &'a Data,
    tenant: &'a str,
}

impl View<'_> {
    fn count(&self, hour: i64) -> Option<u64> {
        let live_from = self.d.live_from.unwrap_or(i64::MAX);
        if hour >= live_from {
            return Some(
                self.d
                    .live
                    .get(self.tenant)
                    .and_then(|h| h.get(&hour))
                    .copied()
                    .unwrap_or(0),
            );
        }
        let covered = self.d.covered_from.is_some_and(|c| hour >= c);
        covered.then(|| {
            self.d
                .archive
                .get(self.tenant)
                .and_then(|h| h.get(&hour))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Events that arrived in `hour` (None: not known).
    fn actual(&self, hour: i64) -> Option<u64> {
        let hour = hour.div_euclid(HOUR_MS) * HOUR_MS;
        // The current hour, and the one this process started in, count
        // live; the archive may still be writing them.
        let live = self
            .d
            .live
            .get(self.tenant)
            .and_then(|h| h.get(&hour))
            .copied();
        self.count(hour).or(live).map(|c| c.max(live.unwrap_or(0)))
    }

    /// The events expected in the hour holding `at_ms`.
    fn expected(&self, at_ms: i64) -> Option<f64> {
        let hour = at_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let (mut sum, mut weights) = (0.0, 0.0);
        for w in 1..=WEEKS {
            if let Some(c) = self.count(hour - w * WEEK_MS) {
                let weight = 0.5f64.powi((w - 1) as i32);
                sum += weight * c as f64;
                weights += weight;
            }
        }
        (weights > 0.0).then(|| sum / weights)
    }
}

/// A chart of a tenant's actual events against the expected ones.
fn versus(
    id: &str,
    title: &str,
    actual: Vec<Option<f64>>,
    expected: Vec<Option<f64>>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
) -> String {
    chart(
        id,
        title,
        &[
            ("actual", "#0b5cad", actual),
            ("expected", "#c2571a", expected),
        ],
        first_ms,
        last_ms,
    )
}

/// A time of day, to the second when `seconds`.
fn clock(ms: i64, seconds: bool) -> String {
    let s = ms.div_euclid(1000);
    let hm = format!(
        "{:02}:{:02}",
        s.div_euclid(3600) % 24,
        s.div_euclid(60) % 60
    );
    if seconds {
        format!("{hm}:{:02}", s % 60)
    } else {
        hm
    }
}

/// A line chart: one polyline per series (a gap where a value is None),
/// the top value on the axis, the first and last time below.
fn chart(
    id: &str,
    title: &str,
    series: &[(&str, &str, Vec<Option<f64>>)],
    first_ms: Option<i64>,
    last_ms: Option<i64>,
) -> String {
    const W: f64 = 640.0;
    const H: f64 = 150.0;
    const PAD: f64 = 36.0;
    let top = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1.0);
    let n = series.iter().map(|(_, _, v)| v.len()).max().unwrap_or(0);
    let x = |i: usize| {
        PAD + (W - 2.0 * PAD)
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let y = |v: f64| H - PAD + (PAD * 2.0 - H) * (v / top);
    let mut svg = format!(
        r##"<figure><figcaption>{title}</figcaption><svg class="chart" data-chart="{id}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{title}">
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#8a949e"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#8a949e"/>
<text x="4" y="{t}" font-size="11">{top:.0}</text><text x="4" y="{b}" font-size="11">0</text>
"##,
        title = escape_html(title),
        b = H - PAD,
        r = W - PAD,
        t = PAD + 4.0,
    );
    if let (Some(f), Some(l)) = (first_ms, last_ms) {
        let _ = writeln!(
            svg,
            r#"<text x="{PAD}" y="{ty}" font-size="11">{}</text><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{} UTC</text>"#,
            clock(f, l - f < HOUR_MS),
            clock(l, l - f < HOUR_MS),
            ty = H - PAD + 16.0,
            tx = W - PAD,
        );
    }
    for (k, (name, color, values)) in series.iter().enumerate() {
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => runs.last_mut().map(|r| r.push((x(i), y(*v)))).unwrap_or(()),
                None => runs.push(Vec::new()),
            }
        }
        let last = values.iter().rev().flatten().next();
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let points: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                svg,
                r#"<polyline class="series" data-series="{name}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let _ = writeln!(
            svg,
            r#"<text class="legend" data-series="{name}" data-last="{}" x="{lx}" y="14" font-size="11" fill="{color}">{name}{}</text>"#,
            last.map_or(-1.0, |v| *v),
            last.map_or(String::new(), |v| format!(": {v:.1}")),
            lx = PAD + 170.0 * k as f64,
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

fn page(tenant: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>Weft ops · {t}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem 1.5rem; color: #1d232a; }}
figure {{ margin: .5rem 0 1rem; }} figcaption {{ color: #5b6670; }}
.status[data-status="below"] {{ color: #a4262c; }}
svg {{ background: #f7f9fb; border: 1px solid #d8dde3; border-radius: 4px; max-width: 100%; height: auto; }}
</style></head>
<body><h1>Weft operations</h1>
{body}
<p><small>Actual: events the speed layer applied. Expected: the same hour of the week in the 4 weeks before, weighted 1, 1/2, 1/4, 1/8. Refreshes every 30 s.</small></p>
</body></html>
"#,
        t = escape_html(tenant)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_is_the_recency_weighted_same_hour_of_past_weeks() {
        let now = 100 * WEEK_MS + 5 * HOUR_MS;
        let mut d = Data {
            covered_from: Some(now - 3 * WEEK_MS - 2 * HOUR_MS),
            ..Data::default()
        };
        let hours = d.archive.entry("acme".into()).or_default();
        hours.insert(now - WEEK_MS, 100);
        hours.insert(now - 2 * WEEK_MS, 40);
        hours.insert(now - 3 * WEEK_MS, 10);
        hours.insert(now - 4 * WEEK_MS, 1_000_000); // before the history covers
        let v = View {
            d: &d,
            tenant: "acme",
        };
        // (1*100 + 0.5*40 + 0.25*10) / 1.75
        let e = v.expected(now + 123).unwrap();
        assert!((e - 122.5 / 1.75).abs() < 1e-9, "{e}");
        // A covered hour without events counts as zero.
        assert_eq!(v.expected(now + HOUR_MS), Some(0.0));
        // Before the history: nothing expected.
        assert_eq!(v.expected(now - 3 * WEEK_MS), None);
        let other = View {
            d: &d,
            tenant: "globex",
        };
        assert_eq!(other.expected(now), Some(0.0));
    }

    #[test]
    fn charts_mark_their_series_and_gaps() {
        let svg = chart(
            "x",
            "<t>",
            &[("actual", "#000", vec![Some(1.0), None, Some(3.0)])],
            Some(0),
            Some(60_000),
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"data-last="3""#), "{svg}");
        assert!(svg.contains("&lt;t&gt;"));
    }
}
