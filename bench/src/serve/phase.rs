//! One measured phase: the pacer, the workers' records (histograms,
//! errors, timeline windows) and their merge.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use weft_proto::v1::Freshness;

use super::client::{REQUEST_TIMEOUT, Target};
use crate::common::{cpu_since, histogram, micros, process_cpu, unix_ms, user_id};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// Closed loop, not recorded.
    Warmup,
    /// Open loop at this many requests/s in total.
    Fixed(f64),
    /// Closed loop.
    Max,
}

impl Phase {
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warm-up",
            Phase::Fixed(_) => "fixed rate",
            Phase::Max => "max throughput",
        }
    }
}

/// A measured phase, as `--phases` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum PhaseArg {
    Fixed,
    Max,
}

/// One window of the timeline: what one worker (merged: all of them)
/// recorded for the requests scheduled in it.
#[derive(Default)]
pub(super) struct Window {
    /// Microseconds, successful replies only, kept raw: at the rates one
    /// machine drives, 4 bytes a request cost less than a histogram per
    /// worker and window (the report builds one histogram per window).
    pub(super) latencies: Vec<u32>,
    pub(super) errors: u64,
    /// Live freshness only (see [`Target::live_freshness`]).
    pub(super) max_speed_lag_ms: Option<i64>,
    pub(super) max_speed_lag_messages: Option<i64>,
    pub(super) batch_view_versions: BTreeSet<u64>,
}

/// Per-window records of the fixed-rate phase (`--timeline-secs`).
pub(super) struct Timeline {
    pub(super) start: Instant,
    pub(super) window: Duration,
    /// Record the replies' freshness.
    pub(super) freshness: bool,
    pub(super) windows: Vec<Window>,
}

impl Timeline {
    pub(super) fn new(start: Instant, window: Duration, freshness: bool) -> Timeline {
        Timeline {
            start,
            window,
            freshness,
            windows: Vec::new(),
        }
    }

    /// The window of a request scheduled (or sent) at `at`.
    pub(super) fn at(&mut self, at: Instant) -> &mut Window {
        let i = at.saturating_duration_since(self.start).as_nanos() / self.window.as_nanos();
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        if i >= self.windows.len() {
            self.windows.resize_with(i + 1, Window::default);
        }
        &mut self.windows[i]
    }

    pub(super) fn ok(&mut self, from: Instant, micros: u64, freshness: Option<&Freshness>) {
        let freshness = freshness.filter(|_| self.freshness);
        let w = self.at(from);
        w.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        if let Some(f) = freshness {
            w.max_speed_lag_ms = w.max_speed_lag_ms.max(Some(f.speed_lag_ms));
            w.max_speed_lag_messages = w.max_speed_lag_messages.max(Some(f.speed_lag_messages));
            w.batch_view_versions.insert(f.batch_view_version);
        }
    }

    pub(super) fn merge(&mut self, other: Timeline) {
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
    pub(super) fn rows(&self) -> Result<Vec<WindowRow>> {
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
pub(super) struct Recorder {
    /// Microseconds: from the scheduled time (fixed rate) or the send
    /// (closed loop) to the reply, successful replies only (a target that
    /// fails fast must not look fast; its errors are counted apart).
    pub(super) latency: Histogram<u64>,
    /// Microseconds from the scheduled time to the send (fixed rate): the
    /// load generator's own delay.
    pub(super) send_lag: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) last_done: Option<Instant>,
    /// Fixed-rate phase with `--timeline-secs` only.
    pub(super) timeline: Option<Timeline>,
}

impl Recorder {
    pub(super) fn new(timeline: Option<Timeline>) -> Result<Recorder> {
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
    pub(super) fn error(&mut self, from: Instant, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
        if let Some(t) = &mut self.timeline {
            t.at(from).errors += 1;
        }
    }

    pub(super) fn finish(
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

    pub(super) fn merge(&mut self, other: Recorder) -> Result<()> {
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
pub(super) fn pace(
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

/// What a phase recorded, merged over its workers.
pub(super) struct PhaseRun {
    pub(super) rec: Recorder,
    /// The load generator's own CPU time over the phase.
    pub(super) cpu: Option<Duration>,
    /// The server's, where its PID is known.
    pub(super) server_cpu: Option<Duration>,
    /// Start to the last reply.
    pub(super) elapsed: Duration,
    /// The phase's start, Unix milliseconds.
    pub(super) started_unix_ms: i64,
}

/// Runs one phase against `target` with `workers` workers, each request
/// for a user of rank uniformly random among `users`; with `window`, keeps a
/// timeline of windows that long.
pub(super) async fn run_phase(
    target: &Target,
    workers: usize,
    users: Arc<[u32]>,
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
                    let user = user_id(users[rng.random_range(0..users.len())]);
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
                        let user = user_id(users[rng.random_range(0..users.len())]);
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

/// One window of a phase's timeline.
#[derive(Debug, Serialize)]
pub(super) struct WindowRow {
    /// Seconds from the phase start to the window's start.
    pub(super) from_secs: f64,
    pub(super) ok: u64,
    pub(super) errors: u64,
    /// `None` without successful replies.
    pub(super) p99_us: Option<u64>,
    pub(super) max_us: Option<u64>,
    /// Live freshness in the window's replies (weft only).
    pub(super) max_speed_lag_ms: Option<i64>,
    pub(super) max_speed_lag_messages: Option<i64>,
    pub(super) batch_view_versions: Vec<u64>,
}
