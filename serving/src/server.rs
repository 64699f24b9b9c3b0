//! `weft serve`: the speed layer, the view watcher, the pair switcher and
//! both front ends in one process.
//!
//! Start-up: open the speed view; if its ready generation N came from a
//! batch view, open view N and serve the pair (vN, N) (a generation without
//! its view is never served). Then:
//!
//! * the speed layer runs on its own thread, restarted with backoff after
//!   an error (a broker outage), while requests keep being answered from
//!   what is stored, with the growing lag in every reply's freshness;
//! * the watcher opens each newly published view and asks the speed layer
//!   for its generation;
//! * the switcher, when that generation is ready, swaps the pair.
//!
//! Shutdown: health turns NOT_SERVING, `serve.drain_secs` pass, the
//! listeners close after the requests in flight, the speed layer stops at a
//! batch boundary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_core::FeatureSpec;
use weft_speed::consumer::{Control, NewGeneration, SpeedConfig, SpeedMetrics, run_with_store};
use weft_speed::store::SpeedStore;
use weft_view::{BlockCache, OpenedView, ViewStore, spawn_watcher, version_name};

use crate::api::Api;
use crate::auth::Keys;
use crate::config::ServeConfig;
use crate::gate::{Gate, GrpcGateLayer};
use crate::http::{Health, router};
use crate::metrics::{RequestMetrics, registry};
use crate::recs::RecsFeatures;
use crate::reply::ProfileServer;
use crate::state::{Pair, Serving};

/// Why `weft serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Speed(#[from] weft_speed::SpeedError),
    #[error("{0}")]
    View(#[from] weft_view::ViewError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Loads and checks the feature spec a config names.
pub fn load_spec(path: &Path) -> Result<FeatureSpec, ServeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServeError::Config(format!("features: reading {}: {e}", path.display())))?;
    FeatureSpec::parse(&text)
        .map_err(|e| ServeError::Config(format!("features: {}: {e}", path.display())))
}

/// Views opened and not yet dropped, by version.
type Opened = Arc<Mutex<BTreeMap<u64, Arc<OpenedView>>>>;

/// How views are opened (`[views]`).
#[derive(Debug, Clone)]
struct OpenOptions {
    verify: bool,
    warm: bool,
    /// Hold views of at most this many bytes in memory.
    memory_bytes: u64,
    /// The block cache every opened view shares (`views.block_cache_mb`).
    cache: BlockCache,
}

async fn open_view(
    store: &ViewStore,
    work_dir: &Path,
    version: u64,
    how: &OpenOptions,
) -> Result<Arc<OpenedView>, ServeError> {
    let dir = work_dir.join(version_name(version));
    let view =
        Arc::new(OpenedView::open(store, Some(version), &dir, how.verify, &how.cache).await?);
    if how.memory_bytes > 0 {
        let started = std::time::Instant::now();
        let holding = view.clone();
        let limit = how.memory_bytes;
        match tokio::task::spawn_blocking(move || holding.hold_in_memory(limit)).await {
            Ok(Ok(h)) if h.complete => {
                tracing::info!(
                    view = version,
                    entries = h.entries,
                    mib = h.bytes >> 20,
                    ms = started.elapsed().as_millis() as u64,
                    "holding the view in memory"
                );
                return Ok(view);
            }
            Ok(Ok(h)) => tracing::info!(
                view = version,
                limit_mib = limit >> 20,
                over_mib = h.bytes >> 20,
                "the view is larger than views.memory_mb; reading it from RocksDB"
            ),
            // A view that cannot be read whole is not served.
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, view = version, "reading the view into memory failed")
            }
        }
    }
    if how.warm {
        let started = std::time::Instant::now();
        let warming = view.clone();
        match tokio::task::spawn_blocking(move || warming.warm()).await {
            Ok(Ok(w)) => tracing::info!(
                view = version,
                entries = w.entries,
                mib = w.bytes >> 20,
                complete = w.complete,
                ms = started.elapsed().as_millis() as u64,
                "warmed the view's block cache"
            ),
            // A view that cannot be read whole is not served.
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, view = version, "warming the view failed"),
        }
    }
    Ok(view)
}

/// A running `weft serve`.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub serving: Arc<Serving>,
    pub health: Arc<Health>,
    drain: Duration,
    stop_servers: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    reporter: tonic_health::server::HealthReporter,
    speed_shutdown: Arc<AtomicBool>,
    speed_thread: Option<std::thread::JoinHandle<()>>,
    watcher_stop: Arc<AtomicBool>,
    requests: Arc<RequestMetrics>,
}

/// Starts everything on the current tokio runtime; returns once both
/// listeners are bound (requests are UNAVAILABLE until a pair is ready,
/// see [`Running::wait_ready`]).
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    let spec = Arc::new(load_spec(&config.features)?);
    std::fs::create_dir_all(&config.speed.data_dir)
        .map_err(io(format!("creating {}", config.speed.data_dir.display())))?;
    let store = Arc::new(SpeedStore::open(
        &config.speed.data_dir,
        spec.clone(),
        config.speed.sync_writes,
    )?);
    let speed_metrics = Arc::new(SpeedMetrics::default());
    let ready = store.ready_generation()?;
    speed_metrics
        .ready_generation
        .store(u64::from(ready), Ordering::Relaxed);
    let serving = Arc::new(Serving::new(store.clone(), speed_metrics.clone()));
    let recs =
        RecsFeatures::resolve(&serving, &config.recommendations).map_err(ServeError::Config)?;
    let keys =
        Keys::new(&config.tenants).map_err(|e| ServeError::Config(format!("tenants: {e}")))?;
    if config.tenants.iter().all(|t| t.keys.is_empty()) {
        tracing::warn!("no API keys are configured: every request will be UNAUTHENTICATED");
    }

    let how = OpenOptions {
        verify: config.views.verify,
        warm: config.views.warm,
        memory_bytes: config.views.memory_mb << 20,
        cache: BlockCache::new(config.views.block_cache_mb << 20),
    };
    // The pair at start.
    let views = match &config.views.store {
        Some(s) => Some(ViewStore::open(s)?),
        None => None,
    };
    let work_dir = config.views.work_dir.clone();
    let opened: Opened = Arc::default();
    match (ready, &views) {
        (0, _) => serving.switch(Pair::new(None, 0)),
        (g, None) => {
            return Err(ServeError::Config(format!(
                "views.store: {} holds speed generation {g}, built from batch view {g}; configure the view store it came from",
                config.speed.data_dir.display()
            )));
        }
        (g, Some(views)) => match open_view(views, &work_dir, u64::from(g), &how).await {
            Ok(view) => {
                opened
                    .lock()
                    .map_err(|_| ServeError::Config("poisoned".into()))?
                    .insert(u64::from(g), view.clone());
                serving.switch(Pair::new(Some(view), g));
            }
            Err(e) => tracing::error!(
                error = %e,
                generation = g,
                "the batch view of the ready speed generation cannot be opened; answering UNAVAILABLE until a newer view's generation is ready"
            ),
        },
    }

    // The speed layer.
    let speed_shutdown = Arc::new(AtomicBool::new(false));
    let (control_tx, control_rx) = std::sync::mpsc::channel::<NewGeneration>();
    let speed_thread = {
        let mut speed = SpeedConfig::new(&config.kafka.bootstrap, config.speed.data_dir.clone());
        speed.topic = config.kafka.topic.clone();
        speed.dead_letter_topic = config.kafka.dead_letter_topic.clone();
        speed.dedup_horizon = Duration::from_secs(config.speed.dedup_horizon_secs);
        speed.sync_writes = config.speed.sync_writes;
        speed.max_batch_wait = Duration::from_millis(config.speed.max_batch_wait_ms.max(1));
        let (store, metrics, shutdown) =
            (store.clone(), speed_metrics.clone(), speed_shutdown.clone());
        std::thread::Builder::new()
            .name("weft-speed".into())
            .spawn(move || {
                let control = Control::new(control_rx);
                let mut backoff = Duration::from_millis(500);
                while !shutdown.load(Ordering::Relaxed) {
                    match run_with_store(&speed, store.clone(), metrics.clone(), shutdown.clone(), Some(&control)) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?backoff, "speed layer stopped; serving what is stored");
                            let until = std::time::Instant::now() + backoff;
                            while std::time::Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(15));
                        }
                    }
                }
            })
            .map_err(io("starting the speed thread"))?
    };

    // The view watcher: opens new views, asks for their generations.
    let watcher_stop = Arc::new(AtomicBool::new(false));
    if let Some(views) = &views {
        let (views2, opened, serving2, stop, how) = (
            views.clone(),
            opened.clone(),
            serving.clone(),
            watcher_stop.clone(),
            how.clone(),
        );
        let handle = tokio::runtime::Handle::current();
        let work_dir = work_dir.clone();
        spawn_watcher(
            views.clone(),
            spec.hash().to_string(),
            Duration::from_secs(config.views.poll_secs),
            move |m| {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let served = serving2.current_pair().map_or(0, |p| p.view_version());
                if m.version <= served {
                    if m.version < served {
                        tracing::warn!(
                            current = m.version,
                            served,
                            "the view store's current view is older than the served one (a rollback); keep serving until a newer view is published"
                        );
                    }
                    return true;
                }
                if opened.lock().map(|o| o.contains_key(&m.version)).unwrap_or(false) {
                    return true;
                }
                match handle.block_on(open_view(&views2, &work_dir, m.version, &how)) {
                    Ok(view) => {
                        if let Ok(mut o) = opened.lock() {
                            o.insert(m.version, view);
                        }
                        tracing::info!(view = m.version, "opened a new batch view; building its speed generation");
                        control_tx
                            .send(NewGeneration {
                                generation: m.version as u32,
                                boundary: m.boundary.offsets.clone().into_iter().collect(),
                            })
                            .is_ok()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, view = m.version, "cannot open a new batch view");
                        true
                    }
                }
            },
        )
        .map_err(io("starting the view watcher"))?;
    }

    // Front ends.
    let gate = Gate::new(config.serve.max_in_flight);
    let requests = Arc::new(RequestMetrics::default());
    let registry = Arc::new(registry(serving.clone(), gate.clone(), &requests));
    let health = Arc::new(Health::default());
    let api = Arc::new(Api {
        serving: serving.clone(),
        keys,
        limits: config.serve.clone(),
        recs,
        metrics: requests.clone(),
    });
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<ProfileServer>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;

    let grpc_listener = tokio::net::TcpListener::bind(config.serve.grpc_listen)
        .await
        .map_err(io(format!(
            "serve.grpc_listen: binding {}",
            config.serve.grpc_listen
        )))?;
    let http_listener = tokio::net::TcpListener::bind(config.serve.http_listen)
        .await
        .map_err(io(format!(
            "serve.http_listen: binding {}",
            config.serve.http_listen
        )))?;
    let grpc_addr = grpc_listener.local_addr().map_err(io("gRPC address"))?;
    let http_addr = http_listener.local_addr().map_err(io("HTTP address"))?;
    let (stop_servers, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let mut stopped = stopped.clone();
        let incoming = crate::conn::incoming(grpc_listener);
        let server = tonic::transport::Server::builder()
            .layer(GrpcGateLayer {
                gate: gate.clone(),
                metrics: requests.clone(),
            })
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(ProfileServer::new(api.clone()));
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    }
    {
        let mut stopped = stopped.clone();
        let app = router(api.clone(), gate.clone(), registry, health.clone());
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(http_listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }
    // The switcher: swaps the pair when the speed layer readies the
    // generation of an opened view; refreshes the lag; reports health.
    {
        let (serving, opened, health, reporter) = (
            serving.clone(),
            opened.clone(),
            health.clone(),
            reporter.clone(),
        );
        let mut stopped = stopped.clone();
        let views = views.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut reported = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                serving.refresh_lag();
                let ready = serving.speed_metrics().ready_generation.load(Ordering::Relaxed) as u32;
                let current = serving.current_pair();
                let served = current.as_ref().map(|p| p.generation);
                if ready > 0 && served.is_none_or(|g| ready > g) {
                    let known = opened.lock().ok().and_then(|o| o.get(&u64::from(ready)).cloned());
                    let view = match (known, &views) {
                        (Some(v), _) => Some(v),
                        (None, Some(store)) => match open_view(store, &work_dir, u64::from(ready), &how).await {
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::error!(error = %e, generation = ready, "cannot open the view of the ready generation");
                                None
                            }
                        },
                        (None, None) => None,
                    };
                    if let Some(view) = view {
                        serving.switch(Pair::new(Some(view), ready));
                        // Keep the previous view for requests in flight;
                        // forget older ones and their files.
                        let keep_from = served.map_or(u64::from(ready), u64::from);
                        let dropped: Vec<u64> = match opened.lock() {
                            Ok(mut o) => {
                                let old: Vec<u64> = o.range(..keep_from).map(|(v, _)| *v).collect();
                                old.iter().for_each(|v| { o.remove(v); });
                                old
                            }
                            Err(_) => Vec::new(),
                        };
                        let dirs: Vec<PathBuf> = dropped.iter().map(|v| work_dir.join(version_name(*v))).collect();
                        tokio::task::spawn_blocking(move || {
                            for d in dirs {
                                let _ = std::fs::remove_dir_all(d);
                            }
                        });
                    }
                }
                let ok = serving.current_pair().is_some();
                health.ready.store(ok, Ordering::Relaxed);
                if ok && !reported && !health.draining.load(Ordering::Relaxed) {
                    reporter.set_serving::<ProfileServer>().await;
                    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
                    reported = true;
                }
            }
        }));
    }
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "weft serve listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        serving,
        health,
        drain: Duration::from_secs(config.serve.drain_secs),
        stop_servers,
        tasks,
        reporter,
        speed_shutdown,
        speed_thread: Some(speed_thread),
        watcher_stop,
        requests,
    })
}

impl Running {
    /// p99 in µs of the requests answered OK since the last call.
    pub fn p99_micros(&self) -> Option<u64> {
        self.requests.take_recent_p99_micros()
    }

    /// Waits until a (view, generation) pair is served.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < until {
            if self.health.serving() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Drains and stops: NOT_SERVING, `drain_secs`, listeners closed after
    /// the requests in flight, then the speed layer at a batch boundary.
    pub async fn stop(mut self) {
        self.health.draining.store(true, Ordering::Relaxed);
        self.reporter.set_not_serving::<ProfileServer>().await;
        self.reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tokio::time::sleep(self.drain).await;
        let _ = self.stop_servers.send(true);
        // Connections get GOAWAY and finish their requests; a client that
        // keeps its connection open past the grace period is cut off.
        let grace = tokio::time::Instant::now() + Duration::from_secs(10);
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout_at(grace, &mut t).await.is_err() {
                tracing::warn!("connections still open after the grace period; closing them");
                t.abort();
            }
        }
        self.watcher_stop.store(true, Ordering::Relaxed);
        self.speed_shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.speed_thread.take() {
            // The loop stops at a batch boundary (state is committed); only
            // closing the Kafka client can hang on an unresponsive broker.
            let joined = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::task::spawn_blocking(move || t.join()),
            )
            .await;
            if joined.is_err() {
                tracing::warn!(
                    "the speed layer's Kafka client did not close within 15 s; exiting anyway (its state is committed)"
                );
            }
        }
        tracing::info!("weft serve stopped");
    }
}
