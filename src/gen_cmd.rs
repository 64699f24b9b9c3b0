//! `weft gen`: writes generated events to a Parquet archive, JSONL and/or a
//! Kafka topic.
//!
//! All outputs see the same simulated topic: events in arrival order, each
//! with the partition and offset a fresh topic gives it. With
//! `--malformed-rate`, malformed records are mixed into that topic: Kafka
//! receives them (for dead-letter tests) and they take offsets, while the
//! archive and JSONL, like the real archiver, hold only valid events.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use weft_core::Event;
use weft_core::archive::{ArchiveFiles, ArchiveRouter, FileOp};
use weft_core::generator::{GenConfig, Generator, Malformed, Sequenced, Sequencer};
use weft_core::spec::DAY_MS;
use weft_speed::kafka::{EventProducer, ensure_topic};

#[derive(Debug, Args)]
pub(crate) struct GenArgs {
    /// Number of events (duplicates included, malformed records not).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Same seed, same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of tenants (of decreasing size).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=8))]
    tenants: u32,
    /// Users across all tenants.
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    /// Days the sessions are spread over.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// First day, YYYY-MM-DD (UTC).
    #[arg(long, default_value = "2026-09-01")]
    start: String,
    /// Partitions of the simulated `events` topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Share of events delivered twice.
    #[arg(long, default_value_t = 0.005)]
    duplicate_rate: f64,
    /// Share of events arriving late (up to --max-late-hours after their time).
    #[arg(long, default_value_t = 0.01)]
    late_rate: f64,
    #[arg(long, default_value_t = 48)]
    max_late_hours: u32,

    /// Write the hive-partitioned Parquet archive under this directory.
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Rows per Parquet file before it rolls.
    #[arg(long, default_value_t = 1_000_000)]
    rows_per_file: usize,
    /// Write JSON lines to this file (`-` for stdout).
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Produce to this Kafka bootstrap address.
    #[arg(long)]
    kafka: Option<String>,
    /// Topic to produce to, created with --partitions if missing (default:
    /// kafka.topic from the configuration, `events`).
    #[arg(long, requires = "kafka")]
    topic: Option<String>,
    /// Share of malformed records mixed into the Kafka output.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Events per message between the generator thread and the writer.
const CHUNK: u64 = 4096;
/// Threads encoding Parquet: with the generator thread, enough to keep two
/// cores busy.
const ENCODER_SHARDS: usize = 2;

/// What the generator thread hands the writer: archive file operations,
/// and the records JSONL and Kafka need.
#[derive(Default)]
struct Chunk {
    events: u64,
    ops: Vec<FileOp>,
    records: Vec<Record>,
}

/// One record of the simulated topic.
enum Record {
    Valid(Sequenced),
    Malformed {
        key: String,
        value: Vec<u8>,
        partition: i32,
    },
}

#[derive(Serialize)]
struct JsonlRecord<'a> {
    #[serde(flatten)]
    event: &'a Event,
    _partition: i32,
    _offset: i64,
    _ingest_ms: i64,
}

fn config(args: &GenArgs) -> Result<GenConfig> {
    let mut cfg = GenConfig::new(args.seed, args.events, args.tenants, args.users);
    cfg.days = args.days;
    cfg.start_ms = weft_core::time::parse_date(&args.start)
        .with_context(|| format!("--start {:?} is not a date like 2026-09-01", args.start))?;
    cfg.partitions = args.partitions;
    cfg.duplicate_rate = args.duplicate_rate;
    cfg.late_rate = args.late_rate;
    cfg.max_late_ms = i64::from(args.max_late_hours) * 3_600_000;
    cfg.validate().map_err(anyhow::Error::msg)?;
    if !(0.0..=0.5).contains(&args.malformed_rate) {
        bail!(
            "--malformed-rate {} is outside [0, 0.5]",
            args.malformed_rate
        );
    }
    Ok(cfg)
}

pub(crate) fn run(file: Option<&std::path::Path>, args: &GenArgs) -> Result<()> {
    if args.parquet.is_none() && args.jsonl.is_none() && args.kafka.is_none() {
        bail!("nothing to write: give --parquet DIR, --jsonl FILE and/or --kafka HOST:PORT");
    }
    let settings = crate::load_config(
        file,
        weft_config::Overrides::new().set("kafka.topic", "--topic", args.topic.clone()),
    )?;
    let topic = &settings.kafka.topic;
    let cfg = config(args)?;
    let max_late_days = cfg.max_late_ms.div_euclid(DAY_MS) + 1;
    let partitions = cfg.partitions;

    let mut jsonl: Option<Box<dyn Write>> = match &args.jsonl {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(BufWriter::new(std::io::stdout().lock()))),
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Some(Box::new(BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )))
        }
    };
    let mut kafka = match &args.kafka {
        None => None,
        Some(bootstrap) => {
            let rt = weft_core::runtime::current_thread()?;
            rt.block_on(ensure_topic(bootstrap, topic, args.partitions))
                .with_context(|| format!("preparing topic {topic} on {bootstrap}"))?;
            Some(EventProducer::new(bootstrap, topic)?)
        }
    };

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.events)
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} gen [{elapsed_precise}] {bar:30} {human_pos}/{human_len} events ({per_sec}, eta {eta})")
            .expect("valid template"),
    );

    let started = Instant::now();
    // Generation, sequencing, the malformed mix and building Arrow batches
    // run on one thread; Parquet encoding, JSONL and Kafka on this one.
    // Events cross threads only when JSONL or Kafka needs them.
    let malformed_rate = args.malformed_rate;
    let seed = args.seed;
    let ship_records = jsonl.is_some() || kafka.is_some();
    let mut router = args
        .parquet
        .as_ref()
        .map(|dir| ArchiveRouter::new(dir, "gen", args.rows_per_file));
    let generator = Generator::new(cfg).map_err(anyhow::Error::msg)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(16);
    let generator_thread =
        std::thread::Builder::new()
            .name("weft-gen".into())
            .spawn(move || -> (u64, u64) {
                let mut sequencer = Sequencer::new(partitions);
                let mut bad_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_6c66_6f72_6d65);
                let (mut valid, mut malformed) = (0u64, 0u64);
                let mut current_day = i64::MIN;
                let mut chunk = Chunk::default();
                let mut generator = generator;
                // The simulated arrival goes into the Parquet archive's
                // `_ingest_ms`; records sent to Kafka carry the producer's
                // clock (a broker would expire records stamped in the past).
                while let Some(event) = generator.next() {
                    let s = sequencer.assign_at(event, generator.last_arrival_ms());
                    valid += 1;
                    if let Some(r) = router.as_mut() {
                        // Arrival time never lags event time by more than the
                        // lateness bound, so days older than that are complete.
                        let day = s.event.ts_ms.div_euclid(DAY_MS);
                        if day > current_day {
                            current_day = day;
                            r.close_days_before(day - max_late_days);
                        }
                        r.push(&s);
                    }
                    if malformed_rate > 0.0 && bad_rng.random_bool(malformed_rate) {
                        let kind = Malformed::ALL[bad_rng.random_range(0..Malformed::ALL.len())];
                        let key = s.event.kafka_key();
                        let value = kind.corrupt(&s.event, &mut bad_rng);
                        let (partition, _) = sequencer.assign_key(key.as_bytes());
                        malformed += 1;
                        if ship_records {
                            chunk.records.push(Record::Valid(s));
                            chunk.records.push(Record::Malformed {
                                key,
                                value,
                                partition,
                            });
                        }
                    } else if ship_records {
                        chunk.records.push(Record::Valid(s));
                    }
                    chunk.events += 1;
                    if chunk.events >= CHUNK {
                        if let Some(r) = router.as_mut() {
                            chunk.ops = r.take_ops();
                        }
                        if tx.send(std::mem::take(&mut chunk)).is_err() {
                            return (valid, malformed);
                        }
                    }
                }
                if let Some(r) = router.as_mut() {
                    r.close_all();
                    chunk.ops = r.take_ops();
                }
                let _ = tx.send(chunk);
                (valid, malformed)
            })?;

    // Parquet encoding runs on ENCODER_SHARDS threads; a file's operations
    // always go to the same shard, so each file is written in order.
    let mut shard_txs = Vec::new();
    let mut shard_threads = Vec::new();
    for shard in 0..ENCODER_SHARDS {
        let (stx, srx) = std::sync::mpsc::sync_channel::<Vec<FileOp>>(16);
        shard_txs.push(stx);
        shard_threads.push(
            std::thread::Builder::new()
                .name(format!("weft-parquet-{shard}"))
                .spawn(move || -> Result<usize, weft_core::archive::ArchiveError> {
                    let mut files = ArchiveFiles::default();
                    for ops in srx {
                        for op in ops {
                            files.apply(op)?;
                        }
                    }
                    Ok(files.committed().len())
                })?,
        );
    }
    let mut n = 0u64;
    for chunk in rx {
        let mut by_shard: Vec<Vec<FileOp>> = (0..ENCODER_SHARDS).map(|_| Vec::new()).collect();
        for op in chunk.ops {
            let id = match &op {
                FileOp::Create { id, .. } | FileOp::Write { id, .. } | FileOp::Commit { id } => *id,
            };
            by_shard[(id % ENCODER_SHARDS as u64) as usize].push(op);
        }
        for (tx, ops) in shard_txs.iter().zip(by_shard) {
            if !ops.is_empty() && tx.send(ops).is_err() {
                break; // the shard failed; its error is reported below
            }
        }
        for record in chunk.records {
            match record {
                Record::Malformed {
                    key,
                    value,
                    partition,
                } => {
                    if let Some(p) = kafka.as_mut() {
                        p.send_raw(key.as_bytes(), &value, partition)?;
                    }
                }
                Record::Valid(s) => {
                    if let Some(out) = jsonl.as_mut() {
                        serde_json::to_writer(
                            &mut *out,
                            &JsonlRecord {
                                event: &s.event,
                                _partition: s.partition,
                                _offset: s.offset,
                                _ingest_ms: s.ingest_ms,
                            },
                        )?;
                        out.write_all(b"\n")?;
                    }
                    if let Some(p) = kafka.as_mut() {
                        p.send_event(&s.event)?;
                    }
                }
            }
        }
        n += chunk.events;
        progress.set_position(n);
    }
    drop(shard_txs);
    let mut files_written = 0;
    for t in shard_threads {
        files_written += t
            .join()
            .map_err(|_| anyhow::anyhow!("a Parquet encoder thread panicked"))??;
    }
    let (n, malformed) = generator_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    progress.finish_and_clear();

    let mut summary = format!("generated {n} events");
    if let Some(dir) = &args.parquet {
        summary += &format!("; {files_written} Parquet files under {}", dir.display());
    }
    if let Some(mut out) = jsonl {
        out.flush()?;
        summary += "; JSONL written";
    }
    if let Some(mut p) = kafka {
        let report = p.flush(Duration::from_secs(120))?;
        summary += &format!(
            "; {} records delivered to {} ({malformed} malformed)",
            report.delivered, topic
        );
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{summary}; {secs:.2} s, {:.0} events/s",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}
