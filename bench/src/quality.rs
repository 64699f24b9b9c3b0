//! `weft-bench quality`: how good the recommendations are, on generated
//! shoppers whose next items are held out.
//!
//! The generator's users have three favourite categories and pick items
//! Zipf-popular within them. For each user, the last `--held-out` item
//! events (and everything of theirs after the first of them) are held out;
//! the user's *targets* are the held-out items they had not touched
//! before. The rest is the training data: archived and folded by the real
//! batch job into a view (neighbours, popularity, profiles), and applied
//! to a real speed store for the cold-start path.
//!
//! Each user with a target is asked for recommendations as of just before
//! the first held-out event (`t_ms` = its time - 1), through the serving
//! layer's own `recommend`. Methods, each given the same candidates
//! filter (items the user touched before are dropped, as they can never be
//! a target, then the first 10 kept):
//!
//! * `weft`: the blend (batch view ⊕ speed profile, no context item);
//! * `popularity`: the view's tenant-wide popularity list;
//! * `random`: 10 items drawn uniformly from the tenant's catalogue;
//! * `cold-start`: the blend with no batch view, the training data only in
//!   the speed layer (trending items).
//!
//! Reported per method: hit rate@10 (users with a target among their 10)
//! and NDCG@10 (binary relevance, ideal DCG over min(targets, 10)), and
//! each as a ratio to popularity.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use weft_core::archive::ArchiveWriter;
use weft_core::generator::{GenConfig, Generator, Sequencer};
use weft_core::{Event, FeatureSpec};
use weft_serving::recs::{RecsFeatures, RecsRequest, recommend};
use weft_serving::state::{Pair, Serving};
use weft_speed::consumer::{BatchApplier, DEFAULT_DEDUP_HORIZON, Record, SpeedMetrics};
use weft_speed::store::SpeedStore;
use weft_view::{BlockCache, OpenedView, ViewStore};

/// Recommendations per answer that count.
const K: usize = 10;
/// Candidates asked for before the touched-items filter.
const ASKED: usize = 40;

#[derive(Debug, Args)]
pub(crate) struct QualityArgs {
    /// Events generated (before the hold-out).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Users across the tenants.
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    #[arg(long, default_value_t = 3)]
    tenants: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Item events held out at the end of each user's history.
    #[arg(long, default_value_t = 3)]
    held_out: usize,
    /// The feature spec (default: the example spec `weft up` runs).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Scratch space (archive, view store, speed store).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Writes the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One user's question: when, and the items that would be right.
struct Case {
    tenant: String,
    user: String,
    t_ms: i64,
    touched: HashSet<String>,
    targets: HashSet<String>,
}

#[derive(Debug, Default, Serialize)]
struct Score {
    method: &'static str,
    users: usize,
    hit_rate: f64,
    ndcg: f64,
    hit_rate_vs_popularity: f64,
    ndcg_vs_popularity: f64,
    seconds: f64,
}

/// Hit (0/1) and NDCG@K of one ranked list.
fn judge(ranked: &[String], case: &Case) -> (f64, f64) {
    let mut dcg = 0.0;
    let mut hit = 0.0;
    for (i, item) in ranked.iter().take(K).enumerate() {
        if case.targets.contains(item) {
            hit = 1.0;
            dcg += 1.0 / ((i + 2) as f64).log2();
        }
    }
    let ideal: f64 = (0..case.targets.len().min(K))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    (hit, dcg / ideal)
}

/// The first K items of `items` the user had not touched.
fn first_new(items: impl IntoIterator<Item = String>, case: &Case) -> Vec<String> {
    items
        .into_iter()
        .filter(|i| !case.touched.contains(i))
        .take(K)
        .collect()
}

/// Splits the generated events: training events, and a [`Case`] per user
/// with a target.
fn hold_out(events: Vec<Event>, held_out: usize) -> (Vec<Event>, Vec<Case>) {
    let mut by_user: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        by_user
            .entry((e.tenant.clone(), e.user_id.clone()))
            .or_default()
            .push(i);
    }
    let mut dropped = vec![false; events.len()];
    let mut cases = Vec::new();
    let mut users: Vec<_> = by_user.into_iter().collect();
    users.sort();
    for ((tenant, user), mut idx) in users {
        idx.sort_by_key(|&i| (events[i].ts_ms, i));
        let items: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| !events[i].item_id.is_empty() && events[i].kind.popularity_weight() > 0.0)
            .collect();
        if items.len() <= held_out {
            continue;
        }
        let cutoff = events[items[items.len() - held_out]].ts_ms;
        let mut touched = HashSet::new();
        let mut later = HashSet::new();
        for &i in &idx {
            let e = &events[i];
            if e.ts_ms < cutoff {
                if !e.item_id.is_empty() {
                    touched.insert(e.item_id.clone());
                }
            } else {
                dropped[i] = true;
                if !e.item_id.is_empty() && e.kind.popularity_weight() > 0.0 {
                    later.insert(e.item_id.clone());
                }
            }
        }
        let targets: HashSet<String> = later.difference(&touched).cloned().collect();
        if !targets.is_empty() {
            cases.push(Case {
                tenant,
                user,
                t_ms: cutoff - 1,
                touched,
                targets,
            });
        }
    }
    let training = events
        .into_iter()
        .zip(dropped)
        .filter_map(|(e, d)| (!d).then_some(e))
        .collect();
    (training, cases)
}

fn serving_over(store: Arc<SpeedStore>, view: Option<Arc<OpenedView>>) -> Serving {
    let serving = Serving::new(store, Arc::new(SpeedMetrics::default()));
    serving.switch(Pair::new(view, 0));
    serving
}

/// The blend's picks for each case on `serving`.
fn blend(serving: &Serving, cases: &[Case]) -> Result<Vec<Vec<String>>> {
    let features = RecsFeatures::resolve(serving, &weft_config::RecsConfig::default())
        .map_err(anyhow::Error::msg)?;
    let pair = serving.pair()?;
    cases
        .iter()
        .map(|c| {
            let recs = recommend(
                serving,
                &features,
                &pair,
                &RecsRequest {
                    tenant: &c.tenant,
                    user: &c.user,
                    n: ASKED,
                    context_item: None,
                    exclude: &[],
                    t_ms: c.t_ms,
                },
            )?;
            Ok(first_new(recs.into_iter().map(|r| r.item_id), c))
        })
        .collect()
}

fn score(method: &'static str, cases: &[Case], picks: &[Vec<String>], seconds: f64) -> Score {
    let (mut hits, mut ndcg) = (0.0, 0.0);
    for (c, p) in cases.iter().zip(picks) {
        let (h, n) = judge(p, c);
        hits += h;
        ndcg += n;
    }
    let n = cases.len().max(1) as f64;
    Score {
        method,
        users: cases.len(),
        hit_rate: hits / n,
        ndcg: ndcg / n,
        seconds,
        ..Score::default()
    }
}

/// `weft-bench quality`.
pub(crate) fn quality(a: &QualityArgs) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("weft-bench-quality")
        .tempdir_in(a.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let spec_text = match &a.spec {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => include_str!("../../deploy/features.example.toml").to_string(),
    };
    let spec = Arc::new(FeatureSpec::parse(&spec_text)?);

    let generator = Generator::new(GenConfig::new(a.seed, a.events, a.tenants, a.users))
        .map_err(anyhow::Error::msg)?;
    let catalogue: HashMap<String, Vec<String>> = generator
        .config()
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let items = generator.catalogue(i).into_iter().map(|c| c.item_id);
            (t.name.clone(), items.collect())
        })
        .collect();
    let events: Vec<Event> = generator.collect();
    let generated = events.len();
    let (training, cases) = hold_out(events, a.held_out);
    if cases.is_empty() {
        bail!("no user has a held-out item they had not touched; generate more events");
    }
    eprintln!(
        "{generated} events generated, {} kept for training; {} users to recommend for",
        training.len(),
        cases.len()
    );

    // The batch view of the training data, by the batch job.
    let started = Instant::now();
    let mut seq = Sequencer::new(8);
    let placed: Vec<_> = training.into_iter().map(|e| seq.assign(e)).collect();
    let archive = scratch.path().join("archive");
    let mut writer = ArchiveWriter::new(&archive, "quality", 200_000);
    for s in &placed {
        writer.push(s)?;
    }
    writer.finish()?;
    let views = scratch.path().join("views");
    let config = weft_batch::BatchConfig::new(
        archive.to_str().context("a UTF-8 scratch path")?,
        views.to_str().context("a UTF-8 scratch path")?,
        spec.clone(),
        spec_text.clone(),
    );
    let rt = weft_core::runtime::multi_thread("weft-bench-quality", 2)?;
    let summary = rt.block_on(weft_batch::run(&config, Arc::new(Default::default())))?;
    let view = Arc::new(rt.block_on(OpenedView::open(
        &ViewStore::open(views.to_str().unwrap_or_default(), &Default::default())?,
        Some(summary.version),
        &scratch.path().join("opened"),
        false,
        &BlockCache::default(),
    ))?);
    eprintln!("view built in {:.1} s", started.elapsed().as_secs_f64());

    // The same data in a speed store only (no view): the cold start.
    let cold_store = Arc::new(SpeedStore::open(
        &scratch.path().join("speed-cold"),
        spec.clone(),
        false,
    )?);
    let mut applier = BatchApplier::spawn(cold_store.clone(), DEFAULT_DEDUP_HORIZON, |()| {})?;
    for chunk in placed.chunks(20_000) {
        applier.apply(
            0,
            chunk.iter().map(|s| Record {
                partition: s.partition,
                offset: s.offset,
                kafka_ts_ms: s.event.ts_ms,
                event: Some(&s.event),
            }),
            (),
        )?;
    }
    applier.finish()?;
    drop(placed);

    let empty = Arc::new(SpeedStore::open(
        &scratch.path().join("speed-empty"),
        spec.clone(),
        false,
    )?);
    let mut scores = Vec::new();
    let t = Instant::now();
    let picks = blend(&serving_over(empty, Some(view.clone())), &cases)?;
    scores.push(score("weft", &cases, &picks, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let mut popular: HashMap<&str, Vec<String>> = HashMap::new();
    let mut picks = Vec::with_capacity(cases.len());
    for c in &cases {
        if !popular.contains_key(c.tenant.as_str()) {
            let list = view.popular(&c.tenant, None)?;
            popular.insert(&c.tenant, list.into_iter().map(|(i, _)| i).collect());
        }
        picks.push(first_new(popular[c.tenant.as_str()].iter().cloned(), c));
    }
    scores.push(score(
        "popularity",
        &cases,
        &picks,
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ 0x5eed);
    let picks: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            let fresh: Vec<&String> = catalogue[&c.tenant]
                .iter()
                .filter(|i| !c.touched.contains(*i))
                .collect();
            fresh
                .choose_multiple(&mut rng, K)
                .map(|i| (*i).clone())
                .collect()
        })
        .collect();
    scores.push(score("random", &cases, &picks, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let picks = blend(&serving_over(cold_store, None), &cases)?;
    scores.push(score(
        "cold-start",
        &cases,
        &picks,
        t.elapsed().as_secs_f64(),
    ));

    let (pop_hit, pop_ndcg) = (scores[1].hit_rate, scores[1].ndcg);
    println!(
        "{:<11} {:>7} {:>9} {:>8} {:>12} {:>10}",
        "method", "users", "hit@10", "ndcg@10", "hit/popular", "ndcg/pop"
    );
    for s in &mut scores {
        s.hit_rate_vs_popularity = s.hit_rate / pop_hit.max(f64::MIN_POSITIVE);
        s.ndcg_vs_popularity = s.ndcg / pop_ndcg.max(f64::MIN_POSITIVE);
        println!(
            "{:<11} {:>7} {:>9.4} {:>8.4} {:>11.2}× {:>9.2}×",
            s.method, s.users, s.hit_rate, s.ndcg, s.hit_rate_vs_popularity, s.ndcg_vs_popularity
        );
    }
    if let Some(out) = &a.out {
        crate::common::write_json(
            out,
            &serde_json::json!({
                "events": generated,
                "users": a.users,
                "tenants": a.tenants,
                "held_out": a.held_out,
                "seed": a.seed,
                "scores": scores,
            }),
        )?;
    }
    Ok(())
}
