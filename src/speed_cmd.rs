//! `weft speed`: runs the speed layer until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use weft_core::FeatureSpec;
use weft_speed::consumer::{SpeedConfig, SpeedMetrics, run};

#[derive(Debug, Args)]
pub(crate) struct SpeedArgs {
    /// Kafka bootstrap address.
    #[arg(long)]
    bootstrap: String,
    /// The feature spec (TOML).
    #[arg(long)]
    spec: PathBuf,
    /// RocksDB directory of the speed view.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "events")]
    topic: String,
    #[arg(long, default_value = "events.dlq")]
    dead_letter_topic: String,
    /// Redeliveries within this many seconds (Kafka record time) are dropped.
    #[arg(long, default_value_t = 3600)]
    dedup_horizon_secs: u64,
    /// fsync every applied batch.
    #[arg(long)]
    sync_writes: bool,
}

pub(crate) fn run_speed(args: &SpeedArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let spec =
        Arc::new(FeatureSpec::parse(&text).with_context(|| args.spec.display().to_string())?);
    let mut config = SpeedConfig::new(&args.bootstrap, args.data_dir.clone());
    config.topic = args.topic.clone();
    config.dead_letter_topic = args.dead_letter_topic.clone();
    config.dedup_horizon = Duration::from_secs(args.dedup_horizon_secs);
    config.sync_writes = args.sync_writes;

    let metrics = Arc::new(SpeedMetrics::default());
    let worker_metrics = metrics.clone();
    run_until_stopped(
        "weft-speed",
        move |shutdown| run(&config, spec, 0, worker_metrics, shutdown),
        || {
            tracing::info!(
                records = metrics.records.load(Ordering::Relaxed),
                applied = metrics.applied.load(Ordering::Relaxed),
                duplicates = metrics.duplicates.load(Ordering::Relaxed),
                dead_letters = metrics.dead_letters.load(Ordering::Relaxed),
                "speed layer"
            );
        },
    )
}

/// Runs `work` on a named thread until SIGINT/SIGTERM (then sets its
/// shutdown flag and waits for it) or its own end, logging `report` every
/// 5 s. Signal handlers are in place before the work starts.
pub(crate) fn run_until_stopped(
    name: &str,
    work: impl FnOnce(Arc<AtomicBool>) -> Result<(), weft_speed::SpeedError> + Send + 'static,
    report: impl Fn(),
) -> Result<()> {
    let signals = StopSignals::install()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let worker = {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(shutdown))?
    };
    signals.wait(&worker, report);
    shutdown.store(true, Ordering::Relaxed);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))??;
    Ok(())
}

/// SIGINT/SIGTERM handlers, installed before any work starts so that a
/// stop request during start-up is a clean stop, not the default kill.
pub(crate) struct StopSignals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        Ok(StopSignals { rt, term, int })
    }

    /// Blocks until a stop signal or the worker's end, calling `report`
    /// every 5 s.
    pub(crate) fn wait<T>(mut self, worker: &std::thread::JoinHandle<T>, report: impl Fn()) {
        self.rt.block_on(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = self.term.recv() => break,
                    _ = self.int.recv() => break,
                    _ = tick.tick() => {
                        if worker.is_finished() {
                            break;
                        }
                        report();
                    }
                }
            }
        });
    }
}
