//! `weft serve`: the speed layer, the view watcher, the pair switcher and
//! both front ends in one process.
//!
//! [`Server::open`] does the start-up steps: the feature spec, the speed
//! store, keys and recommendation features, and the pair at start (if the
//! speed store's ready generation N came from a batch view, view N is opened
//! and (vN, N) served; a generation without its view is never served).
//! [`Server::run`] then serves on listeners the caller bound, until the
//! caller's [`CancellationToken`] is cancelled:
//!
//! * the speed layer runs on its own thread, restarted with backoff after
//!   an error (a broker outage), while requests keep being answered from
//!   what is stored, with the growing lag in every reply's freshness;
//! * the watcher (a task) opens each newly published view and asks the
//!   speed layer for its generation;
//! * the switcher (a task), when that generation is ready, swaps the pair;
//! * the gRPC and HTTP front ends (tasks).
//!
//! Shutdown: health turns NOT_SERVING, `serve.drain_secs` pass, the
//! listeners close after the requests in flight, the speed layer stops at a
//! batch boundary. Every task is awaited; one that fails stops the server
//! and its error is returned.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_config::{PartitionSet, WeftConfig};
use weft_core::FeatureSpec;
use weft_speed::consumer::{Control, NewGeneration, SpeedConfig, SpeedMetrics, run_with_store};
use weft_speed::store::SpeedStore;
use weft_view::{BlockCache, ViewStore};

use crate::api::Api;
use crate::auth::Keys;
use crate::gate::{Gate, GrpcGateLayer};
use crate::http::{Health, router};
use crate::metrics::{RequestMetrics, registry};
use crate::recs::RecsFeatures;
use crate::reply::ProfileServer;
use crate::route::Shards;
use crate::state::{Pair, Serving};
use crate::views::{ViewOpener, switch_if_ready};

/// Why `weft serve` could not start, or stopped.
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
    /// A front end or background task failed while serving.
    #[error("{0}")]
    Task(String),
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

/// Binds a listener for the config key `key` (`serve.grpc_listen`, ...).
pub async fn bind(addr: std::net::SocketAddr, key: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(io(format!("{key}: binding {addr}")))
}

/// `weft serve` opened: stores, keys and the pair at start, ready to
/// [`Server::run`].
#[derive(Debug)]
pub struct Server {
    config: WeftConfig,
    store: Arc<SpeedStore>,
    serving: Arc<Serving>,
    api: Arc<Api>,
    gate: Arc<Gate>,
    requests: Arc<RequestMetrics>,
    health: Arc<Health>,
    opener: Option<ViewOpener>,
    /// The partitions this node consumes and opens (None: all).
    partitions: Option<PartitionSet>,
    /// `POST /v1/events`.
    collector: Arc<crate::collect::Collector>,
    /// `GET /ops`.
    ops: Arc<crate::ops::Ops>,
}

/// Serves on `grpc` and `http` until `shutdown` is cancelled, then drains
/// (mini-redis's `run(listener, shutdown)`): [`Server::open`], then
/// [`Server::run`].
pub async fn run(
    grpc: TcpListener,
    http: TcpListener,
    config: WeftConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    Server::open(config).await?.run(grpc, http, shutdown).await
}

impl Server {
    /// The start-up steps, in order; nothing is served yet.
    pub async fn open(config: WeftConfig) -> Result<Server, ServeError> {
        // A shard consumes only its partitions, opens only their part of
        // each batch view and forwards the other users' calls to their
        // owners.
        let shard = config
            .shard()
            .map_err(|e| ServeError::Config(e.to_string()))?;
        let shards = match &shard {
            Some(shard) => Shards::new(shard).map_err(ServeError::Config)?,
            None => Shards::unsharded(config.kafka.partitions),
        };
        Server::open_owning(config, shards, shard.map(|s| s.owned)).await
    }

    /// [`Server::open`] for reading in process ([`Server::run_headless`],
    /// an embedded reader): `partitions` of the topic (None: every one)
    /// consumed and opened, whatever `serve.partitions` says, and no peers.
    pub async fn open_partitions(
        config: WeftConfig,
        partitions: Option<PartitionSet>,
    ) -> Result<Server, ServeError> {
        let topic = config.kafka.partitions;
        let shards = match &partitions {
            Some(p) => {
                let beyond = p.beyond(topic);
                if !beyond.is_empty() || p.is_empty() {
                    return Err(ServeError::Config(format!(
                        "partitions {p}: a topic of {topic} partitions (kafka.partitions) \
                         has partitions 0-{}",
                        topic.saturating_sub(1)
                    )));
                }
                Shards::only(topic, p.clone())
            }
            None => Shards::unsharded(topic),
        };
        Server::open_owning(config, shards, partitions).await
    }

    async fn open_owning(
        config: WeftConfig,
        shards: Shards,
        partitions: Option<PartitionSet>,
    ) -> Result<Server, ServeError> {
        let spec = Arc::new(load_spec(&config.features)?);
        let (store, speed_metrics) = open_speed_store(&config, spec)?;
        let serving = Arc::new(
            Serving::new(store.clone(), speed_metrics)
                .with_partitions(shards.topic(), shards.owned().iter()),
        );
        let opener = match &config.views.store {
            Some(s) => Some(ViewOpener::new(
                ViewStore::open(s, &config.s3)?,
                &config.views,
                BlockCache::new(config.views.block_cache_mb << 20),
                partitions.clone(),
            )),
            None => None,
        };
        pair_at_start(&config, &store, &serving, opener.as_ref()).await?;
        let requests = Arc::new(RequestMetrics::default());
        let api = Arc::new(Api {
            recs: RecsFeatures::resolve(&serving, &config.recommendations)
                .map_err(ServeError::Config)?,
            keys: Keys::new(&config.tenants)
                .map_err(|e| ServeError::Config(format!("tenants: {e}")))?,
            serving: serving.clone(),
            limits: config.serve.clone(),
            metrics: requests.clone(),
            shards,
        });
        if config.tenants.iter().all(|t| t.keys.is_empty()) {
            tracing::warn!("no API keys are configured: every request will be UNAUTHENTICATED");
        }
        let collector = Arc::new(
            crate::collect::Collector::new(
                &config.kafka.bootstrap,
                &config.kafka.topic,
                config.kafka.partitions,
                &config.serve,
            )
            .map_err(ServeError::Config)?,
        );
        // History for the operator page: local archives (an object store's
        // archive gives live counts only).
        let root = &config.archive.root;
        let local_archive = (!root.contains("://") || root.starts_with("file://"))
            .then(|| std::path::PathBuf::from(root.trim_start_matches("file://")));
        let ops = Arc::new(crate::ops::Ops::new(
            config.serve.ops_sample_secs,
            local_archive,
        ));
        Ok(Server {
            gate: Gate::new(config.serve.max_in_flight),
            collector,
            ops,
            config,
            store,
            serving,
            api,
            requests,
            health: Arc::new(Health::default()),
            opener,
            partitions,
        })
    }

    /// The serving state (the pair, lag, metrics), for status lines.
    pub fn serving(&self) -> &Arc<Serving> {
        &self.serving
    }

    /// Readiness as `/readyz` and gRPC health report it.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Request metrics (the p99 of recent requests).
    pub fn requests(&self) -> &Arc<RequestMetrics> {
        &self.requests
    }

    /// Serves until `shutdown` is cancelled or a task fails, then drains
    /// and stops everything; returns the first task's error, if any.
    pub async fn run(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        self.serve(Some((grpc, http)), shutdown).await
    }

    /// [`Server::run`] with no front ends: the speed layer, the view
    /// watcher and the switcher keep [`Server::serving`] current for reads
    /// in this process, until `shutdown`.
    pub async fn run_headless(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        self.serve(None, shutdown).await
    }

    async fn serve(
        self,
        listeners: Option<(TcpListener, TcpListener)>,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter.set_not_serving::<ProfileServer>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;

        // Stops the speed thread (a flag: it polls librdkafka, not a future).
        let speed_stop = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = std::sync::mpsc::channel::<NewGeneration>();
        let speed_thread = self.spawn_speed(control_rx, speed_stop.clone())?;
        // Stops the front ends, the watcher and the switcher after the drain.
        let tasks_stop = CancellationToken::new();
        let mut tasks: JoinSet<Result<&'static str, ServeError>> = JoinSet::new();
        match listeners {
            Some((grpc, http)) => {
                let grpc_addr = grpc.local_addr().map_err(io("gRPC address"))?;
                let http_addr = http.local_addr().map_err(io("HTTP address"))?;
                self.spawn_front_ends(&mut tasks, grpc, http, health_service, &tasks_stop)?;
                tracing::info!(grpc = %grpc_addr, http = %http_addr, "weft serve listening");
            }
            None => tracing::info!("serving in process"),
        }
        if let Some(opener) = self.opener.clone() {
            tasks.spawn(watch_views(
                opener,
                self.store.spec().hash().to_string(),
                Duration::from_secs(self.config.views.poll_secs),
                self.serving.clone(),
                control_tx,
                tasks_stop.clone(),
            ));
        }
        {
            let (ops, serving, requests, stop) = (
                self.ops.clone(),
                self.serving.clone(),
                self.requests.clone(),
                tasks_stop.clone(),
            );
            tasks.spawn(async move {
                ops.run(serving, requests, stop).await;
                Ok("ops sampler")
            });
        }
        tasks.spawn(switcher(
            self.serving.clone(),
            self.opener.clone(),
            self.health.clone(),
            reporter.clone(),
            tasks_stop.clone(),
        ));

        // Serve until asked to stop, or until a task ends early.
        let mut failure = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(ended) = tasks.join_next() => {
                failure = Some(match ended {
                    Ok(Ok(name)) => ServeError::Task(format!("the {name} stopped unexpectedly")),
                    Ok(Err(e)) => e,
                    Err(e) => ServeError::Task(format!("a serving task panicked: {e}")),
                });
                if let Some(e) = &failure {
                    tracing::error!(error = %e, "stopping weft serve");
                }
            }
        }

        // Drain: NOT_SERVING first, so load balancers move away, then close.
        self.health.draining.store(true, Ordering::Relaxed);
        reporter.set_not_serving::<ProfileServer>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        if failure.is_none() {
            tokio::time::sleep(Duration::from_secs(self.config.serve.drain_secs)).await;
        }
        tasks_stop.cancel();
        // Connections get GOAWAY and finish their requests; a client that
        // keeps its connection open past the grace period is cut off.
        let grace = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(grace, tasks.join_next()).await {
                Ok(Some(Ok(Ok(_)))) => {}
                Ok(Some(Ok(Err(e)))) => {
                    tracing::error!(error = %e, "a serving task failed while stopping");
                    failure.get_or_insert(e);
                }
                Ok(Some(Err(e))) => {
                    tracing::error!(error = %e, "a serving task panicked while stopping");
                    failure
                        .get_or_insert(ServeError::Task(format!("a serving task panicked: {e}")));
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("connections still open after the grace period; closing them");
                    tasks.shutdown().await;
                    break;
                }
            }
        }
        speed_stop.store(true, Ordering::Relaxed);
        // The loop stops at a batch boundary (state is committed); only
        // closing the Kafka client can hang on an unresponsive broker.
        let joined = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::task::spawn_blocking(move || speed_thread.join()),
        )
        .await;
        match joined {
            Err(_) => tracing::warn!(
                "the speed layer's Kafka client did not close within 15 s; exiting anyway (its state is committed)"
            ),
            Ok(Ok(Err(_))) => {
                failure.get_or_insert(ServeError::Task("the speed thread panicked".into()));
            }
            Ok(_) => {}
        }
        tracing::info!("weft serve stopped");
        failure.map_or(Ok(()), Err)
    }

    /// The speed layer on its own thread, restarted with backoff after an
    /// error while the stored data keeps being served.
    fn spawn_speed(
        &self,
        control_rx: std::sync::mpsc::Receiver<NewGeneration>,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, ServeError> {
        let mut speed = SpeedConfig::from_config(&self.config);
        speed.partitions = self.partitions.clone();
        let (store, metrics) = (self.store.clone(), self.serving.speed_metrics().clone());
        std::thread::Builder::new()
            .name("weft-speed".into())
            .spawn(move || {
                let control = Control::new(control_rx);
                let mut backoff = Duration::from_millis(500);
                while !stop.load(Ordering::Relaxed) {
                    match run_with_store(&speed, store.clone(), metrics.clone(), stop.clone(), Some(&control)) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?backoff, "speed layer stopped; serving what is stored");
                            let until = std::time::Instant::now() + backoff;
                            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(15));
                        }
                    }
                }
            })
            .map_err(io("starting the speed thread"))
    }

    /// gRPC (health, reflection, ProfileService behind the gate) and HTTP.
    fn spawn_front_ends(
        &self,
        tasks: &mut JoinSet<Result<&'static str, ServeError>>,
        grpc: TcpListener,
        http: TcpListener,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        stop: &CancellationToken,
    ) -> Result<(), ServeError> {
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
        let server = tonic::transport::Server::builder()
            .layer(GrpcGateLayer {
                gate: self.gate.clone(),
                metrics: self.requests.clone(),
            })
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(ProfileServer::new(self.api.clone()));
        let incoming = crate::conn::incoming(grpc);
        let stopped = stop.clone();
        tasks.spawn(async move {
            server
                .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
                .await
                .map_err(|e| ServeError::Task(format!("gRPC server: {e}")))?;
            Ok("gRPC server")
        });
        let registry = Arc::new(registry(
            self.serving.clone(),
            self.gate.clone(),
            &self.requests,
        ));
        let app = router(
            self.api.clone(),
            self.gate.clone(),
            registry,
            self.health.clone(),
            self.collector.clone(),
            self.ops.clone(),
        );
        let stopped = stop.clone();
        tasks.spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .map_err(|e| ServeError::Task(format!("HTTP server: {e}")))?;
            Ok("HTTP server")
        });
        Ok(())
    }
}

/// Opens the speed store under `speed.data_dir`, with its metrics.
fn open_speed_store(
    config: &WeftConfig,
    spec: Arc<FeatureSpec>,
) -> Result<(Arc<SpeedStore>, Arc<SpeedMetrics>), ServeError> {
    let dir = &config.speed.data_dir;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let store = Arc::new(SpeedStore::open(dir, spec, config.speed.sync_writes)?);
    let metrics = Arc::new(SpeedMetrics::default());
    metrics
        .ready_generation
        .store(u64::from(store.ready_generation()?), Ordering::Relaxed);
    Ok((store, metrics))
}

/// The pair at start: (none, 0) before any view; (vN, g) when the ready
/// generation g was built from view N. A view that cannot be opened leaves
/// no pair (UNAVAILABLE) until a newer generation is ready.
async fn pair_at_start(
    config: &WeftConfig,
    store: &SpeedStore,
    serving: &Serving,
    opener: Option<&ViewOpener>,
) -> Result<(), ServeError> {
    let g = store.ready_generation()?;
    if g == 0 {
        serving.switch(Pair::new(None, 0));
        return Ok(());
    }
    let version = store.view_of(g)?;
    let Some(opener) = opener else {
        return Err(ServeError::Config(format!(
            "views.store: {} holds speed generation {g}, built from batch view {version}; configure the view store it came from",
            config.speed.data_dir.display()
        )));
    };
    match opener.get(version).await {
        Ok(view) => serving.switch(Pair::new(Some(view), g)),
        Err(e) => tracing::error!(
            error = %e,
            generation = g,
            view = version,
            "the batch view of the ready speed generation cannot be opened; answering UNAVAILABLE until a newer generation is ready"
        ),
    }
    Ok(())
}

/// The view watcher: every `every`, reads the store's current view. When it
/// is not the view served (or last asked for), it is opened and the speed
/// layer asked for a generation built from its boundary: a newly published
/// view, or an older one after `weft batch rollback`.
async fn watch_views(
    opener: ViewOpener,
    spec_hash: String,
    every: Duration,
    serving: Arc<Serving>,
    control: std::sync::mpsc::Sender<NewGeneration>,
    stop: CancellationToken,
) -> Result<&'static str, ServeError> {
    // The view the speed layer builds or has built: the served one at start.
    let mut target = serving.current_pair().map_or(0, |p| p.view_version());
    loop {
        let found = async {
            match opener.store.current().await? {
                Some(v) if v != target => Ok(Some(opener.store.manifest(v).await?)),
                _ => Ok::<_, weft_view::ViewError>(None),
            }
        };
        match found.await {
            Ok(Some(m)) if m.spec_hash != spec_hash => {
                tracing::error!(
                    view = m.version,
                    view_spec = %m.spec_hash,
                    spec = %spec_hash,
                    "ignoring a batch view of another feature spec"
                );
                target = m.version;
            }
            Ok(Some(m)) => {
                match opener.get(m.version).await {
                    Ok(_) => {
                        let rollback = m.version < target;
                        tracing::info!(
                            view = m.version,
                            previous = target,
                            rollback,
                            "opened the store's current batch view; building its speed generation"
                        );
                        let request = NewGeneration {
                            view: m.version,
                            boundary: m.boundary.offsets.clone().into_iter().collect(),
                        };
                        if control.send(request).is_err() {
                            return Err(ServeError::Task(
                                "the speed layer stopped taking new generations".into(),
                            ));
                        }
                        target = m.version;
                    }
                    // Tried again at the next poll.
                    Err(e) => {
                        tracing::error!(error = %e, view = m.version, "cannot open the store's current batch view")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, store = %opener.store.display(), "view watcher"),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok("view watcher"),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Every 10 ms: swaps the pair when the speed layer readies the generation
/// of an opened view, refreshes the lag, reports health. Ready means a
/// pair is served and the lag is known (the partitions' ends read once),
/// or a pair is served and 5 s have passed without the ends (a broker
/// outage at start: what is stored is served, with `speed_lag_as_of_ms`
/// 0 saying the lag is unknown).
async fn switcher(
    serving: Arc<Serving>,
    opener: Option<ViewOpener>,
    health: Arc<Health>,
    reporter: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) -> Result<&'static str, ServeError> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut reported = false;
    let lag_unknown_until = tokio::time::Instant::now() + LAG_WAIT;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return Ok("switcher"),
        }
        serving.refresh_lag();
        switch_if_ready(&serving, opener.as_ref()).await;
        let ok = serving.current_pair().is_some()
            && (serving.lag_known() || tokio::time::Instant::now() >= lag_unknown_until);
        health.ready.store(ok, Ordering::Relaxed);
        if ok && !reported && !health.draining.load(Ordering::Relaxed) {
            reporter.set_serving::<ProfileServer>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            reported = true;
        }
    }
}

/// How long readiness waits for the speed lag to be known.
const LAG_WAIT: Duration = Duration::from_secs(5);

/// A `weft serve` running on a task of the current runtime, on the
/// addresses its config names (port 0: any free port): for tests and for
/// `weft up`, which embed the server.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub serving: Arc<Serving>,
    pub health: Arc<Health>,
    /// The operator page's samples (`GET /ops`).
    pub ops: Arc<crate::ops::Ops>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Opens the server, binds `serve.grpc_listen` and `serve.http_listen` and
/// runs it on a task; returns once both listeners are bound (requests are
/// UNAVAILABLE until a pair is ready, see [`Running::wait_ready`]).
pub async fn start(config: WeftConfig) -> Result<Running, ServeError> {
    let grpc = bind(config.serve.grpc_listen, "serve.grpc_listen").await?;
    let http = bind(config.serve.http_listen, "serve.http_listen").await?;
    let grpc_addr = grpc.local_addr().map_err(io("gRPC address"))?;
    let http_addr = http.local_addr().map_err(io("HTTP address"))?;
    let server = Server::open(config).await?;
    let (serving, health, ops) = (
        server.serving.clone(),
        server.health.clone(),
        server.ops.clone(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(grpc, http, shutdown.clone()));
    Ok(Running {
        grpc_addr,
        http_addr,
        serving,
        health,
        ops,
        shutdown,
        task,
    })
}

impl Running {
    /// p99 in µs of the requests answered OK in the operator page's
    /// newest sample (`serve.ops_sample_secs`).
    pub fn p99_micros(&self) -> Option<u64> {
        self.ops.last_p99_micros()
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
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Task(format!("weft serve panicked: {e}"))),
        }
    }
}
