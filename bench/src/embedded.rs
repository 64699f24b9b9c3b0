//! `weft-bench embedded`: GetProfile through the embedded reader
//! (`weft_client::EmbeddedReader`), in this process, as a bidder that links
//! `weft-client` calls it.
//!
//! The reader is opened the way a bidder opens it: the view store and the
//! broker of a running fleet (`--views`, `--bootstrap`), the partitions it
//! is given (`--partitions`, default all) and its own speed store under
//! `--work-dir`. Once it serves the store's current view with its speed
//! layer caught up (lag 0), `--requests` calls for uniformly random users
//! of those partitions run on one thread; each call is timed from the call
//! to the reply dropped (the user ids are made beforehand). Reported:
//! p50, p90, p99, p99.9 and max in µs, and the process CPU per call.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_client::{EmbeddedReader, PartitionSet, WeftConfig};
use weft_core::partition::partition_for_user;

#[derive(Debug, Args)]
pub(crate) struct EmbeddedArgs {
    /// The feature spec (as `features` of `weft serve`).
    #[arg(long)]
    spec: PathBuf,
    /// The view store (a directory or URL, as `views.store`).
    #[arg(long)]
    views: String,
    /// The broker (`kafka.bootstrap`).
    #[arg(long)]
    bootstrap: String,
    /// The events topic's partition count (`kafka.partitions`).
    #[arg(long, default_value_t = 8)]
    topic_partitions: u32,
    /// The partitions the reader holds (default: all).
    #[arg(long)]
    partitions: Option<String>,
    /// The users' tenant.
    #[arg(long, default_value = "acme")]
    tenant: String,
    /// Users u0000000 .. u{N-1} (those of --partitions are asked for).
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    #[arg(long, default_value_t = 2_000_000)]
    requests: u64,
    /// The reader's speed store and opened views go under here.
    #[arg(long)]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// `weft-bench embedded`.
pub(crate) fn embedded(a: &EmbeddedArgs) -> Result<()> {
    let held = a
        .partitions
        .as_deref()
        .map(PartitionSet::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--partitions: {e}"))?;
    let mut config = WeftConfig {
        features: a.spec.clone(),
        ..Default::default()
    };
    config.kafka.bootstrap = a.bootstrap.clone();
    config.kafka.partitions = a.topic_partitions;
    config.speed.data_dir = a.work_dir.join("speed");
    config.views.store = Some(a.views.clone());
    config.views.work_dir = a.work_dir.join("views");
    config.views.poll_secs = 1;
    let rt = weft_core::runtime::multi_thread("weft-embedded", 2)?;
    let started = Instant::now();
    let reader = rt
        .block_on(EmbeddedReader::open(config, held.clone()))
        .context("opening the embedded reader")?;
    // Serving the store's current view, speed layer caught up.
    let serving = reader.serving().clone();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let pair = serving.current_pair();
        let caught_up = pair.as_ref().is_some_and(|p| p.view_version() > 0)
            && serving.lag_messages() == 0
            && serving
                .speed_metrics()
                .ends_as_of_ms
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
        if caught_up {
            break;
        }
        if Instant::now() > deadline {
            bail!("the embedded reader did not serve a view with lag 0 within 30 min");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pair = serving.pair()?;
    eprintln!(
        "embedded reader: view v{} served with lag 0 after {:.1} s",
        pair.view_version(),
        started.elapsed().as_secs_f64()
    );
    let ranks: Vec<u32> = (0..a.users)
        .filter(|&r| {
            held.as_ref().is_none_or(|h| {
                let user = crate::common::user_id(r);
                h.contains(partition_for_user(&a.tenant, &user, a.topic_partitions))
            })
        })
        .collect();
    if ranks.is_empty() {
        bail!("no user of --users is on the reader's partitions");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let users: Vec<String> = (0..a.requests)
        .map(|_| crate::common::user_id(ranks[rng.random_range(0..ranks.len())]))
        .collect();
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
    // All calls, and apart those for users with and without a profile
    // (a user the generator gave no event costs less).
    let (mut h, mut with, mut without) = (histogram()?, histogram()?, histogram()?);
    let cpu0 = crate::common::process_cpu(None);
    let wall = Instant::now();
    for user in &users {
        let t0 = Instant::now();
        let read = reader.get_profile(&a.tenant, user)?;
        let found = read.found();
        drop(read);
        let ns = u64::try_from(t0.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        h.saturating_record(ns);
        if found { &mut with } else { &mut without }.saturating_record(ns);
    }
    let wall = wall.elapsed();
    let cpu1 = crate::common::process_cpu(None);
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "weft-bench embedded: {} requests over {} users ({} held: partitions {}), view v{}, one thread, {:.1} s",
        a.requests,
        a.users,
        ranks.len(),
        held.map_or_else(|| "all".to_string(), |h| h.to_string()),
        pair.view_version(),
        wall.as_secs_f64()
    );
    println!("| calls | count | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | mean µs |");
    println!("|---|---|---|---|---|---|---|---|");
    for (what, h) in [("all", &h), ("found", &with), ("not found", &without)] {
        println!(
            "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
            h.len(),
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0,
            h.mean() / 1000.0
        );
    }
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        println!(
            "process CPU (the reader's speed layer and switcher included): {:.2} µs a call",
            (c1 - c0).as_secs_f64() * 1e6 / a.requests as f64
        );
    }
    rt.block_on(reader.close())?;
    Ok(())
}
