//! `weft-bench ingest`: the ingest paths' throughput, recorded in
//! docs/benchmarks.md.
//!
//! It measures, in one run against one broker (a local
//! Tansu unless `--bootstrap` is given), on the same generated topic:
//! 1. the raw consume ceiling: an rdkafka consumer that only counts;
//! 2. the speed layer end to end: broker → decode → dedup → RocksDB,
//!    offsets included;
//! 3. the apply path alone: decoded events → RocksDB, no broker;
//! 4. the archiver: broker → Parquet files and state.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weft_core::FeatureSpec;
use weft_core::generator::{GenConfig, Generator, Sequencer};
use weft_speed::archiver::{ArchiverConfig, ArchiverMetrics, read_state};
use weft_speed::broker::LocalBroker;
use weft_speed::consumer::{
    BatchApplier, DEFAULT_DEDUP_HORIZON, Record, SpeedConfig, SpeedMetrics,
};
use weft_speed::kafka::{EventProducer, base_config, ensure_topic};
use weft_speed::store::SpeedStore;

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// The feature spec the speed layer folds.
    #[arg(long, default_value = "deploy/features.example.toml")]
    spec: PathBuf,
    /// Use this broker instead of starting a local Tansu.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Scratch directory (default: a temporary one).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Measure only the apply path (no broker): for profiling it.
    #[arg(long)]
    apply_only: bool,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > deadline {
            bail!("{what} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started.elapsed())
}

/// What [`apply_path`] measured.
struct ApplyRun {
    wall: Duration,
    cpu: Option<Duration>,
    end_offsets: Vec<i64>,
    /// Reading the dedup index back from the store afterwards (as a
    /// restart does): the time and the ids read.
    reload: Duration,
    ids: usize,
}

/// The consumer's per-batch work on decoded events (dedup lookups and fold,
/// then one WriteBatch per 20k events on the commit thread while the next
/// batch is folded), timed without the broker: the consumer's own
/// [`BatchApplier`].
fn apply_path(
    spec: &Arc<FeatureSpec>,
    events: Vec<weft_core::Event>,
    partitions: u32,
    dir: &std::path::Path,
) -> Result<ApplyRun> {
    let store = Arc::new(SpeedStore::open(dir, spec.clone(), false)?);
    let mut seq = Sequencer::new(partitions);
    let placed: Vec<_> = events.into_iter().map(|e| seq.assign(e)).collect();
    let started = Instant::now();
    let cpu_before = crate::common::process_cpu(None);
    let mut applier = BatchApplier::spawn(store.clone(), DEFAULT_DEDUP_HORIZON, |()| {})?;
    for chunk in placed.chunks(20_000) {
        let records = chunk.iter().map(|s| Record {
            partition: s.partition,
            offset: s.offset,
            kafka_ts_ms: s.event.ts_ms,
            event: Some(&s.event),
        });
        applier.apply(0, records, ())?;
    }
    let ids = applier.dedup_ids();
    applier.finish()?;
    let wall = started.elapsed();
    let cpu = crate::common::process_cpu(None)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let reload_started = Instant::now();
    let reloaded = BatchApplier::reload_dedup_ids(&store, 0)?;
    let reload = reload_started.elapsed();
    if reloaded != ids {
        bail!("the dedup index read back holds {reloaded} ids, the one folded {ids}");
    }
    Ok(ApplyRun {
        wall,
        cpu,
        end_offsets: seq.end_offsets().to_vec(),
        reload,
        ids: reloaded,
    })
}

/// "2.31 s, 2.31 µs an event" (all threads), or "unknown".
fn cpu_note(cpu: Option<Duration>, events: u64) -> String {
    match cpu {
        Some(cpu) => format!(
            "{:.2} s, {:.2} µs an event",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / events.max(1) as f64
        ),
        None => "unknown".into(),
    }
}

/// `weft-bench ingest`.
pub(crate) fn ingest(a: &IngestArgs) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("weft-bench")
        .tempdir_in(a.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let text = std::fs::read_to_string(&a.spec)
        .with_context(|| format!("reading {}", a.spec.display()))?;
    let spec = Arc::new(FeatureSpec::parse(&text)?);
    if a.apply_only {
        let events: Vec<weft_core::Event> = Generator::new(GenConfig::new(1, a.events, 4, a.users))
            .map_err(anyhow::Error::msg)?
            .collect();
        let n = events.len() as u64;
        let run = apply_path(&spec, events, a.partitions, &scratch.path().join("apply"))?;
        println!(
            "apply path alone: {n} events in {:.2} s = {:.0} events/s; CPU {}",
            run.wall.as_secs_f64(),
            rate(n, run.wall),
            cpu_note(run.cpu, n)
        );
        println!(
            "dedup index read back from the store (as at a restart): {} ids in {:.2} s",
            run.ids,
            run.reload.as_secs_f64()
        );
        return Ok(());
    }
    let local;
    let bootstrap = match &a.bootstrap {
        Some(b) => b.clone(),
        None => {
            local = LocalBroker::start(None, &scratch.path().join("logs"))?;
            local.bootstrap().to_string()
        }
    };
    let topic = format!("bench-{}", std::process::id());
    let rt = weft_core::runtime::current_thread()?;
    rt.block_on(ensure_topic(&bootstrap, &topic, a.partitions))?;

    // Produce the topic (timed, for reference).
    let events: Vec<weft_core::Event> = Generator::new(GenConfig::new(1, a.events, 4, a.users))
        .map_err(anyhow::Error::msg)?
        .collect();
    let n = events.len() as u64;
    let mut producer = EventProducer::new(&bootstrap, &topic)?;
    let started = Instant::now();
    for e in &events {
        producer.send_event(e)?;
    }
    producer.flush(Duration::from_secs(600))?;
    let produce = started.elapsed();

    // 1. Consume ceiling.
    let consumer: BaseConsumer = base_config(&bootstrap)
        .set("group.id", "bench-ceiling")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions as i32 {
        tpl.add_partition_offset(&topic, p, Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut counted = 0u64;
    while counted < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            counted += 1;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("ceiling consumer counted {counted} of {n}");
        }
    }
    let ceiling = started.elapsed();
    drop(consumer);

    // 2. Speed layer end to end.
    let mut config = SpeedConfig::new(&bootstrap, scratch.path().join("speed"));
    config.topic = topic.clone();
    config.dead_letter_topic = format!("{topic}.dlq");
    let metrics = Arc::new(SpeedMetrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let worker = {
        let (config, spec, metrics, shutdown) = (
            config.clone(),
            spec.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        std::thread::spawn(move || {
            weft_speed::consumer::run(&config, spec, metrics, shutdown, None)
        })
    };
    // Time from the first consumed record, so opening RocksDB and creating
    // the dead-letter topic are not counted.
    wait_until("speed layer start", Duration::from_secs(60), || {
        metrics.records.load(Ordering::Relaxed) > 0 || worker.is_finished()
    })?;
    let speed = wait_until("speed layer", Duration::from_secs(600), || {
        metrics.records.load(Ordering::Relaxed) >= n || worker.is_finished()
    })?;
    shutdown.store(true, Ordering::Relaxed);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("speed thread panicked"))??;
    let speed_applied = metrics.applied.load(Ordering::Relaxed);

    // 3. Apply path alone: the consumer's per-batch work on decoded events.
    let run = apply_path(&spec, events, a.partitions, &scratch.path().join("apply"))?;
    let end = &run.end_offsets;

    // 4. Archiver.
    let root = scratch.path().join("archive");
    let mut aconfig = ArchiverConfig::new(&bootstrap, root.to_string_lossy());
    aconfig.topic = topic.clone();
    aconfig.max_delay = Duration::from_secs(2);
    let ametrics = Arc::new(ArchiverMetrics::default());
    let ashutdown = Arc::new(AtomicBool::new(false));
    let aworker = {
        let (aconfig, ametrics, ashutdown) = (aconfig.clone(), ametrics.clone(), ashutdown.clone());
        std::thread::spawn(move || weft_speed::archiver::run(&aconfig, ametrics, ashutdown))
    };
    wait_until("archiver start", Duration::from_secs(60), || {
        ametrics.records.load(Ordering::Relaxed) > 0 || aworker.is_finished()
    })?;
    let archive = wait_until("archiver", Duration::from_secs(600), || {
        aworker.is_finished()
            || read_state(&root)
                .is_ok_and(|s| (0..end.len()).all(|p| s.offsets.get(&(p as i32)) == Some(&end[p])))
    })?;
    ashutdown.store(true, Ordering::Relaxed);
    aworker
        .join()
        .map_err(|_| anyhow::anyhow!("archiver thread panicked"))??;

    let c = rate(n, ceiling);
    println!(
        "weft-bench ingest: {n} events, {} partitions, {} users, broker {bootstrap}, {} cores",
        a.partitions,
        a.users,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("| path | time | events/s | vs ceiling |");
    println!("|---|---|---|---|");
    println!(
        "| produce (idempotent, for reference) | {:.2} s | {:.0} | |",
        produce.as_secs_f64(),
        rate(n, produce)
    );
    println!(
        "| consume ceiling (count only) | {:.2} s | {c:.0} | 1.00 |",
        ceiling.as_secs_f64()
    );
    println!(
        "| speed layer end to end ({speed_applied} applied) | {:.2} s | {:.0} | {:.2} |",
        speed.as_secs_f64(),
        rate(n, speed),
        rate(n, speed) / c
    );
    println!(
        "| apply path alone (decoded → RocksDB; CPU {}) | {:.2} s | {:.0} | |",
        cpu_note(run.cpu, n),
        run.wall.as_secs_f64(),
        rate(n, run.wall)
    );
    println!(
        "| dedup index read back ({} ids, as at a restart) | {:.2} s | | |",
        run.ids,
        run.reload.as_secs_f64()
    );
    println!(
        "| archiver (→ Parquet, state committed; includes the {} s flush delay) | {:.2} s | {:.0} | {:.2} |",
        aconfig.max_delay.as_secs(),
        archive.as_secs_f64(),
        rate(n, archive),
        rate(n, archive) / c
    );
    Ok(())
}
