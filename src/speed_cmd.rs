//! `weft speed`: runs the speed layer until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use weft_config::Overrides;
use weft_speed::consumer::{NewGeneration, SpeedConfig, SpeedMetrics, run};

#[derive(Debug, Args)]
pub(crate) struct SpeedArgs {
    /// Kafka bootstrap address (kafka.bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// The feature spec (features).
    #[arg(long, alias = "features")]
    spec: Option<PathBuf>,
    /// RocksDB directory of the speed view (speed.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The events topic (kafka.topic).
    #[arg(long)]
    topic: Option<String>,
    /// The dead-letter topic (kafka.dead_letter_topic).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Redeliveries within this many seconds (Kafka record time) are
    /// dropped (speed.dedup_horizon_secs).
    #[arg(long)]
    dedup_horizon_secs: Option<u64>,
    /// fsync every applied batch (speed.sync_writes).
    #[arg(long)]
    sync_writes: bool,
    /// The batch view store to follow (views.store): each newly published
    /// view starts a speed generation built from the view's boundary.
    #[arg(long)]
    views: Option<String>,
    /// How often to look for a new view, in seconds (views.poll_secs).
    #[arg(long)]
    views_poll_secs: Option<u64>,
}

impl SpeedArgs {
    fn overrides(&self) -> Overrides {
        Overrides::new()
            .set("kafka.bootstrap", "--bootstrap", self.bootstrap.clone())
            .set_path("features", "--spec", self.spec.as_deref())
            .set_path("speed.data_dir", "--data-dir", self.data_dir.as_deref())
            .set("kafka.topic", "--topic", self.topic.clone())
            .set(
                "kafka.dead_letter_topic",
                "--dead-letter-topic",
                self.dead_letter_topic.clone(),
            )
            .set(
                "speed.dedup_horizon_secs",
                "--dedup-horizon-secs",
                self.dedup_horizon_secs,
            )
            .set(
                "speed.sync_writes",
                "--sync-writes",
                self.sync_writes.then_some(true),
            )
            .set("views.store", "--views", self.views.clone())
            .set("views.poll_secs", "--views-poll-secs", self.views_poll_secs)
    }
}

pub(crate) fn run_speed(file: Option<&Path>, args: &SpeedArgs) -> Result<()> {
    let c = crate::load_config(file, args.overrides())?;
    let spec = Arc::new(crate::load_spec(&c.features)?.0);
    let config = SpeedConfig::from_config(&c);

    let metrics = Arc::new(SpeedMetrics::default());
    let worker_metrics = metrics.clone();
    let control = match &c.views.store {
        None => None,
        Some(views) => {
            let (tx, rx) = std::sync::mpsc::channel();
            weft_view::spawn_watcher(
                weft_view::ViewStore::open(views, &c.s3)?,
                spec.hash().to_string(),
                Duration::from_secs(c.views.poll_secs),
                move |m| {
                    tx.send(NewGeneration {
                        view: m.version,
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

/// A token cancelled by the first SIGINT or SIGTERM (or by its holder).
/// The handlers are installed on the current runtime before it returns, so
/// call it before any work starts.
pub(crate) fn stop_on_signals() -> Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    // Ends with the token: at a signal, or when the holder cancels it.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    });
    Ok(token)
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
        let rt = weft_core::runtime::current_thread()?;
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
