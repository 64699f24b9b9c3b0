//! `weft speed`: runs the speed layer until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use weft_speed::consumer::{NewGeneration, SpeedConfig, SpeedMetrics, run};

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
    /// The batch view store to follow: each newly published view starts a
    /// speed generation built from the view's boundary.
    #[arg(long)]
    views: Option<String>,
    /// How often to look for a new view, in seconds.
    #[arg(long, default_value_t = 10)]
    views_poll_secs: u64,
}

pub(crate) fn run_speed(args: &SpeedArgs) -> Result<()> {
    let spec = Arc::new(crate::load_spec(&args.spec)?.0);
    let mut config = SpeedConfig::new(&args.bootstrap, args.data_dir.clone());
    config.topic = args.topic.clone();
    config.dead_letter_topic = args.dead_letter_topic.clone();
    config.dedup_horizon = Duration::from_secs(args.dedup_horizon_secs);
    config.sync_writes = args.sync_writes;

    let metrics = Arc::new(SpeedMetrics::default());
    let worker_metrics = metrics.clone();
    let control = match &args.views {
        None => None,
        Some(views) => {
            let (tx, rx) = std::sync::mpsc::channel();
            weft_view::spawn_watcher(
                weft_view::ViewStore::open(views)?,
                spec.hash().to_string(),
                Duration::from_secs(args.views_poll_secs.max(1)),
                move |m| {
                    tx.send(NewGeneration {
                        generation: m.version as u32,
                        boundary: m.boundary.offsets.clone().into_iter().collect(),
                    })
                    .is_ok()
                },
            )?;
            Some(rx)
        }
    };
    run_until_stopped(
        "weft-speed",
        move |shutdown| run(&config, spec, worker_metrics, shutdown, control),
        || {
            tracing::info!(
                records = metrics.records.load(Ordering::Relaxed),
                applied = metrics.applied.load(Ordering::Relaxed),
                duplicates = metrics.duplicates.load(Ordering::Relaxed),
                dead_letters = metrics.dead_letters.load(Ordering::Relaxed),
                ready_generation = metrics.ready_generation.load(Ordering::Relaxed),
                building_generation = metrics.building_generation.load(Ordering::Relaxed),
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

    /// Blocks until a stop signal, calling `report` every `every`.
    pub(crate) fn wait_forever_every(self, every: Duration, report: impl Fn()) {
        self.wait_until(every, || false, report);
    }

    /// Blocks until a stop signal or the worker's end, calling `report`
    /// every 5 s.
    pub(crate) fn wait<T>(self, worker: &std::thread::JoinHandle<T>, report: impl Fn()) {
        self.wait_until(Duration::from_secs(5), || worker.is_finished(), report);
    }

    fn wait_until(mut self, every: Duration, done: impl Fn() -> bool, report: impl Fn()) {
        self.rt.block_on(async {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = self.term.recv() => break,
                    _ = self.int.recv() => break,
                    _ = tick.tick() => {
                        if done() {
                            break;
                        }
                        report();
                    }
                }
            }
        });
    }
}
