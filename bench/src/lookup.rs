//! `weft-bench lookup`: what one `GetProfile` costs inside the server, stage
//! by stage, with no network and no other process on the cores.
//!
//! It opens a published batch view the way `weft serve` does (held in
//! memory unless `--no-memory`), next to an empty speed store, and answers
//! `--requests` GetProfile calls for uniformly random users on one thread,
//! timing each stage of the handler:
//!
//! 1. `view`: the user's packed value found and decoded into partials;
//! 2. `speed`: the speed generation's lookup and the merge with the batch
//!    partials (the store is empty: this is the miss every user of the
//!    view pays when no recent event of theirs is in the speed layer);
//! 3. `evaluate`: every asked feature's window merged and finished;
//! 4. `segments`: the spec's segments tested;
//! 5. `reply`: the reply built (the values and the freshness), as the
//!    gRPC front end builds it (`weft_serving::reply::ProfileReply`);
//! 6. `encode`: its protobuf encoding into a buffer;
//! 7. `drop`: freeing the reply and the buffer.
//!
//! Then, in a second pass over the same users, the whole handler without
//! the timers in between, to show what the timers themselves cost. With
//! `--per-feature`, each feature's evaluation is also timed alone (its
//! user's partials read again, untimed, before each).
//!
//! This is where the server's CPU per request goes once the transport is
//! taken away: `weft-bench serve --weft-pid` measures the same code with
//! HTTP/2, tonic and the kernel around it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_core::segment::segment_indices;
use weft_serving::reply::ProfileReply;
use weft_serving::state::{Pair, Served, Serving, now_ms};
use weft_speed::consumer::SpeedMetrics;
use weft_speed::store::SpeedStore;
use weft_view::{BlockCache, OpenedView, ViewStore};

#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// The view store (a directory or URL, as `views.store` of `weft serve`).
    #[arg(long)]
    views: String,
    /// The view version (default: the store's current one).
    #[arg(long)]
    version: Option<u64>,
    /// The tenant whose users are asked for.
    #[arg(long, default_value = "acme")]
    tenant: String,
    /// Users u{first} .. u{first+N-1} are asked for, uniformly at random.
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    #[arg(long, default_value_t = 0)]
    first_user: u32,
    /// Requests per pass.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Ask for these features only (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Read the view from RocksDB instead of holding it in memory.
    #[arg(long)]
    no_memory: bool,
    /// Also time each feature's evaluation alone.
    #[arg(long)]
    per_feature: bool,
    /// Scratch directory for the opened view and the speed store (default:
    /// a temporary one).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const STAGES: [&str; 7] = [
    "view", "speed", "evaluate", "segments", "reply", "encode", "drop",
];

fn nanos_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("creating a histogram")
}

/// A reply's bytes, as the gRPC front end writes them.
fn encode(reply: &ProfileReply) -> Vec<u8> {
    let mut buf = Vec::with_capacity(reply.encoded_len());
    reply.encode(&mut buf);
    buf
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// `weft-bench lookup`.
pub(crate) fn lookup(a: &LookupArgs) -> Result<()> {
    if a.first_user.checked_add(a.users).is_none() || a.users == 0 {
        bail!("--first-user + --users must be within 1 ..= {}", u32::MAX);
    }
    let scratch = tempfile::Builder::new()
        .prefix("weft-bench-lookup")
        .tempdir_in(a.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let store = ViewStore::open(&a.views, &weft_config::S3Section::default())?;
    let rt = weft_core::runtime::current_thread()?;
    let view = Arc::new(
        rt.block_on(OpenedView::open(
            &store,
            a.version,
            &scratch.path().join("view"),
            false,
            &BlockCache::default(),
        ))
        .with_context(|| format!("opening the view from {}", a.views))?,
    );
    let version = view.manifest().version;
    if !a.no_memory {
        let started = Instant::now();
        let held = view.hold_in_memory(u64::MAX)?;
        eprintln!(
            "view v{version}: {} entries, {} MiB held in memory in {:.1} s",
            held.entries,
            held.bytes >> 20,
            started.elapsed().as_secs_f64()
        );
    }
    let spec = view.spec().clone();
    let speed = Arc::new(SpeedStore::open(
        &scratch.path().join("speed"),
        spec.clone(),
        false,
    )?);
    let serving = Arc::new(Serving::new(
        speed.clone(),
        Arc::new(SpeedMetrics::default()),
    ));
    serving.switch(Pair::new(Some(view.clone()), 0));
    let pair = serving.pair()?;
    let asked = serving.select(&a.features)?;
    let tenant = a.tenant.as_str();

    let users: Vec<String> = {
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
        (0..a.requests)
            .map(|_| crate::common::user_id(a.first_user + rng.random_range(0..a.users)))
            .collect()
    };
    let cpu0 = crate::common::process_cpu(None);
    let mut stages = STAGES
        .iter()
        .map(|_| nanos_histogram())
        .collect::<Result<Vec<_>>>()?;
    let mut whole = nanos_histogram()?;
    let (mut found, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    for user in &users {
        let as_of = now_ms();
        let t0 = Instant::now();
        let mut parts = view.user_partials(tenant, user, Some(as_of))?;
        let t1 = Instant::now();
        speed.add_user_partials(&mut parts, pair.generation, tenant, user)?;
        let t2 = Instant::now();
        let was_found = parts.found();
        let values = parts.into_values(as_of, asked.as_deref());
        let t3 = Instant::now();
        let segments = segment_indices(&spec, &values);
        let t4 = Instant::now();
        let served = Served {
            found: was_found,
            values,
            segments,
        };
        let reply = ProfileReply::new(&serving, &pair, user, served, as_of);
        let t5 = Instant::now();
        let buf = encode(&reply);
        let t6 = Instant::now();
        found += u64::from(was_found);
        bytes += buf.len() as u64;
        drop(reply);
        drop(buf);
        let t7 = Instant::now();
        for (h, d) in stages.iter_mut().zip([
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            t5 - t4,
            t6 - t5,
            t7 - t6,
        ]) {
            h.saturating_record(nanos(d));
        }
        whole.saturating_record(nanos(t7 - t0));
    }
    let staged_wall = started.elapsed();
    let cpu1 = crate::common::process_cpu(None);

    // The same requests through Serving::profile, timers only around each.
    let mut plain = nanos_histogram()?;
    let plain_started = Instant::now();
    for user in &users {
        let t0 = Instant::now();
        let as_of = now_ms();
        let served = serving.profile(&pair, tenant, user, as_of, asked.as_deref())?;
        let reply = ProfileReply::new(&serving, &pair, user, served, as_of);
        let buf = encode(&reply);
        drop(reply);
        drop(buf);
        plain.saturating_record(nanos(t0.elapsed()));
    }
    let plain_wall = plain_started.elapsed();

    let n = a.requests.max(1);
    println!(
        "weft-bench lookup: view v{version} ({}), tenant {tenant}, {} requests for users u{:07} .. u{:07}, {} asked, {:.1} % found, {:.0} bytes a reply on average",
        if a.no_memory {
            "read from RocksDB"
        } else {
            "held in memory"
        },
        a.requests,
        a.first_user,
        a.first_user + a.users - 1,
        if a.features.is_empty() {
            "all features".to_string()
        } else {
            a.features.join(",")
        },
        100.0 * found as f64 / n as f64,
        bytes as f64 / n as f64,
    );
    println!();
    println!("| stage | mean | p50 | p99 | share |");
    println!("|---|---|---|---|---|");
    let total: f64 = stages.iter().map(Histogram::mean).sum();
    for (name, h) in STAGES.iter().zip(&stages) {
        println!(
            "| {name} | {:.0} ns | {} ns | {} ns | {:.0} % |",
            h.mean(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            100.0 * h.mean() / total.max(1.0)
        );
    }
    for (name, h) in [
        ("all stages, timed apart", &whole),
        ("whole handler, timed once", &plain),
    ] {
        println!(
            "| **{name}** | {:.0} ns | {} ns | {} ns | |",
            h.mean(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        );
    }
    println!();
    let cpu = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => format!(
            "{:.2} µs a request",
            c1.saturating_sub(c0).as_secs_f64() * 1e6 / n as f64
        ),
        _ => "n/a".into(),
    };
    println!(
        "wall: {:.2} µs a request timed apart, {:.2} µs timed once; process CPU during the first pass: {cpu}",
        staged_wall.as_secs_f64() * 1e6 / n as f64,
        plain_wall.as_secs_f64() * 1e6 / n as f64,
    );

    if a.per_feature {
        per_feature(&view, &spec, tenant, &users, asked.as_deref())?;
    }
    Ok(())
}

/// Each asked feature's evaluation, alone: mean ns over the users.
fn per_feature(
    view: &OpenedView,
    spec: &weft_core::FeatureSpec,
    tenant: &str,
    users: &[String],
    asked: Option<&[usize]>,
) -> Result<()> {
    let all: Vec<usize> = (0..spec.features.len()).collect();
    let indices = asked.unwrap_or(&all);
    let sample = &users[..users.len().min(200_000)];
    println!();
    println!(
        "Each feature evaluated alone ({} users, partials read again before each, untimed):",
        sample.len()
    );
    println!();
    println!("| feature | aggregate | mean | p99 |");
    println!("|---|---|---|---|");
    for &i in indices {
        let mut h = nanos_histogram()?;
        for user in sample {
            let t = now_ms();
            let parts = view.user_partials(tenant, user, Some(t))?;
            let t0 = Instant::now();
            let values = parts.into_values(t, Some(&[i]));
            drop(values);
            h.saturating_record(nanos(t0.elapsed()));
        }
        let f = &spec.features[i];
        println!(
            "| {} | {} | {:.0} ns | {} ns |",
            f.name,
            f.aggregate.name(),
            h.mean(),
            h.value_at_quantile(0.99)
        );
    }
    Ok(())
}
