//! `weft up`: the whole platform on one machine, on embedded defaults.
//!
//! Under a data directory (`./weft-data` unless `--data-dir`): a local Tansu
//! broker (in memory) when no broker is given (`broker/` holds its log), the
//! `events` topic, `weft serve` with its speed layer (`speed/`, `serving/`),
//! the archiver (`archive/`), a batch run every `--batch-every-secs` into the
//! view store (`views/`), and demo traffic from the generator unless
//! `--demo-rate 0`, and a demo storefront on its own origin
//! (`--demo-listen`, `/demo`) with the recommendations widget. It prints the endpoints with ready-to-paste grpcurl and
//! curl lines, a short status every few seconds, and stops cleanly on
//! Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::Rng;
use weft_config::{KeyConfig, Overrides, TenantConfig, WeftConfig};
use weft_core::generator::{GenConfig, Generator};
use weft_core::spec::DAY_MS;
use weft_serving::demo::{DemoStore, DemoTenant};
use weft_speed::archiver::{ArchiverConfig, ArchiverMetrics};
use weft_speed::broker::LocalBroker;
use weft_speed::kafka::{EventProducer, ensure_topic};

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where everything lives.
    #[arg(long, default_value = "weft-data")]
    data_dir: PathBuf,
    /// Use this Kafka broker instead of starting a local Tansu.
    #[arg(long)]
    bootstrap: Option<String>,
    /// The Tansu binary (default: PATH, then ~/.cargo/bin).
    #[arg(long)]
    tansu: Option<PathBuf>,
    /// The feature spec (default: the built-in example spec, written to
    /// DATA_DIR/features.toml so you can read and copy it).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Seconds between batch runs (the first runs after one interval).
    #[arg(long, default_value_t = 180)]
    batch_every_secs: u64,
    /// Demo events per second from the generator (0: none).
    #[arg(long, default_value_t = 500)]
    demo_rate: u64,
    /// Users in the demo traffic.
    #[arg(long, default_value_t = 5_000)]
    demo_users: u32,
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_listen: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: String,
    /// Where the demo storefront listens (its own origin, allowed for the
    /// demo tenants, as a retailer's site would be).
    #[arg(long, default_value = "127.0.0.1:8081")]
    demo_listen: String,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5)]
    status_every_secs: u64,
}

/// Demo tenants: the generator's first three, each with a server key
/// (`admin`: profiles, recommendations, the ops page) and a publishable widget key
/// (recommendations and the collector), kept in `keys.json` so they survive
/// restarts. Pages of `store_origin` (the demo storefront) may use them.
fn demo_tenants(data_dir: &Path, store_origin: &str) -> Result<Vec<TenantConfig>> {
    let path = data_dir.join("keys.json");
    let names = GenConfig::new(0, 1, 3, 3)
        .tenants
        .iter()
        .map(|t| t.name.clone())
        .collect::<Vec<_>>();
    let keys: Vec<(String, String, String)> = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?
        }
        Err(_) => {
            let mut rng = rand::rng();
            let mut secret = |prefix: &str| {
                let hex: String = (0..24)
                    .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                    .collect();
                format!("{prefix}_{hex}")
            };
            let keys: Vec<_> = names
                .iter()
                .map(|t| (t.clone(), secret("sk"), secret("pk")))
                .collect();
            std::fs::write(&path, serde_json::to_vec_pretty(&keys)?)
                .with_context(|| format!("writing {}", path.display()))?;
            keys
        }
    };
    Ok(keys
        .into_iter()
        .map(|(tenant, server, widget)| TenantConfig {
            allowed_origins: vec!["http://localhost:3000".into(), store_origin.to_string()],
            keys: vec![
                KeyConfig {
                    name: format!("{tenant}-server"),
                    key: server.into(),
                    // admin: profiles, recommendations and the ops page.
                    scopes: vec!["admin".into()],
                    publishable: false,
                },
                KeyConfig {
                    name: format!("{tenant}-widget"),
                    key: widget.into(),
                    scopes: vec!["recommendations:read".into(), "events:write".into()],
                    publishable: true,
                },
            ],
            name: tenant,
        })
        .collect())
}

/// The example spec built into the binary: `weft up` needs no file from the
/// source tree.
const EMBEDDED_SPEC: &str = include_str!("../deploy/features.example.toml");

/// The spec to run with: `--features`, or the embedded example written to
/// the data directory. Checked before anything starts.
fn features_path(args: &UpArgs) -> Result<PathBuf> {
    let path = match &args.features {
        Some(p) => p.clone(),
        None => {
            let p = args.data_dir.join("features.toml");
            std::fs::write(&p, EMBEDDED_SPEC)
                .with_context(|| format!("writing the built-in spec to {}", p.display()))?;
            p
        }
    };
    crate::load_spec(&path)?;
    Ok(path)
}

/// The configuration `weft up` runs with: `--config` (tenants, keys,
/// limits) with every path under the data directory, the broker, the
/// listeners, and up's own pace (views looked for every 2 s, archive files
/// flushed at least every 10 s) set as flags.
fn config(
    file: Option<&Path>,
    args: &UpArgs,
    features: &Path,
    bootstrap: &str,
    store_origin: &str,
) -> Result<WeftConfig> {
    let d = &args.data_dir;
    let flags = Overrides::new()
        .set_path("features", "--features", Some(features))
        .set("kafka.bootstrap", "--bootstrap", Some(bootstrap))
        .set_path("speed.data_dir", "--data-dir", Some(&d.join("speed")))
        .set_path("archive.root", "--data-dir", Some(&d.join("archive")))
        .set("archive.max_delay_ms", "weft up", Some(10_000u64))
        .set_path("views.store", "--data-dir", Some(&d.join("views")))
        .set_path("views.work_dir", "--data-dir", Some(&d.join("serving")))
        .set("views.poll_secs", "weft up", Some(2u64))
        .set(
            "serve.ops_sample_secs",
            "--status-every-secs",
            Some(args.status_every_secs.max(1)),
        )
        .set(
            "serve.grpc_listen",
            "--grpc-listen",
            Some(args.grpc_listen.as_str()),
        )
        .set(
            "serve.http_listen",
            "--http-listen",
            Some(args.http_listen.as_str()),
        );
    let mut config = crate::load_config(file, flags)?;
    if config.tenants.is_empty() {
        config.tenants = demo_tenants(d, store_origin)?;
        config.validate()?;
    }
    Ok(config)
}

/// Produces generated events at `rate` per second until `stop`.
/// The demo traffic's generator: `users` users of three tenants, over the
/// last day (its catalogue is the demo storefront's).
fn demo_generator(users: u32) -> Result<Generator> {
    let now = weft_serving::state::now_ms();
    let mut cfg = GenConfig::new(now as u64, u64::MAX / 2, 3, users);
    cfg.start_ms = now - DAY_MS;
    cfg.days = 1;
    Generator::new(cfg).map_err(anyhow::Error::msg)
}

/// The storefront's stores: each tenant the generator knows with a
/// publishable key that may read recommendations and write events.
fn demo_store(config: &WeftConfig, generator: &Generator, api_base: String) -> DemoStore {
    let tenants = generator
        .config()
        .tenants
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let t = config.tenants.iter().find(|t| t.name == g.name)?;
            let key = t.keys.iter().find(|k| {
                k.publishable
                    && k.scopes.iter().any(|s| s == "recommendations:read")
                    && k.scopes.iter().any(|s| s == "events:write")
            })?;
            Some(DemoTenant {
                name: t.name.clone(),
                widget_key: key.secret().ok()?.expose().to_string(),
                catalogue: generator.catalogue(i),
            })
        })
        .collect();
    DemoStore { api_base, tenants }
}

fn demo_traffic(
    bootstrap: String,
    rate: u64,
    generator: Generator,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
    first_user: Arc<(String, std::sync::OnceLock<String>)>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut producer = EventProducer::new(&bootstrap, "events")?;
    Ok(std::thread::Builder::new()
        .name("weft-demo".into())
        .spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            for e in generator {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Pace: event n goes out at n / rate seconds.
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                // Demo events happen now, so every window has data.
                let mut e = e;
                e.ts_ms = weft_serving::state::now_ms();
                if let Err(err) = producer.send_event(&e) {
                    tracing::warn!(error = %err, "demo traffic: produce failed; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                sent += 1;
                produced.fetch_add(1, Ordering::Relaxed);
                if e.tenant == first_user.0 {
                    let _ = first_user.1.set(e.user_id);
                }
            }
            let _ = producer.flush(Duration::from_secs(5));
        })?)
}

/// Runs the batch job every `every` until `stop`.
fn batch_schedule(
    config: &WeftConfig,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let batch = crate::batch_cmd::batch_config(config)?;
    let archive = PathBuf::from(&config.archive.root);
    std::fs::create_dir_all(&batch.views)?;
    Ok(std::thread::Builder::new()
        .name("weft-batch-schedule".into())
        .spawn(move || {
            let rt = match weft_core::runtime::multi_thread("weft-batch-schedule", 2)
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "batch schedule: no runtime");
                    return;
                }
            };
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                next = Instant::now() + every;
                let has_files = std::fs::read_dir(&archive)
                    .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("tenant="))))
                    .unwrap_or(false);
                if !has_files {
                    tracing::info!("batch schedule: the archive is still empty");
                    continue;
                }
                let progress = Arc::new(weft_batch::JobProgress::default());
                match rt.block_on(weft_batch::run(&batch, progress)) {
                    Ok(s) => tracing::info!(
                        view = s.version,
                        seconds = format!("{:.1}", s.seconds),
                        users = s.manifest.counts.users,
                        "batch view published"
                    ),
                    Err(e) => tracing::error!(error = %e, "batch run failed; serving keeps the previous view"),
                }
            }
        })?)
}

/// State directories that hold offsets of a topic.
const STATE_DIRS: [&str; 4] = ["speed", "serving", "archive", "views"];

/// The local broker keeps its topics in memory, so state from an earlier
/// run refers to offsets that no longer exist: it moves to
/// `<data>/previous/` (replacing an older one) and this run starts clean.
fn set_aside_previous_state(data_dir: &Path) -> Result<()> {
    let present: Vec<&str> = STATE_DIRS
        .iter()
        .copied()
        .filter(|d| data_dir.join(d).exists())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let previous = data_dir.join("previous");
    if previous.exists() {
        std::fs::remove_dir_all(&previous)
            .with_context(|| format!("removing {}", previous.display()))?;
    }
    std::fs::create_dir_all(&previous)?;
    for d in present {
        std::fs::rename(data_dir.join(d), previous.join(d))
            .with_context(|| format!("moving {} aside", data_dir.join(d).display()))?;
    }
    println!(
        "note     the local broker keeps topics in memory: the previous run's state is in {} and this run starts clean (give --bootstrap to keep state across runs)",
        previous.display()
    );
    Ok(())
}

pub(crate) fn run_up(file: Option<&Path>, args: &UpArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let signals = crate::speed_cmd::StopSignals::install()?;
    let features = features_path(args)?;

    // The broker: the configured one, or a local Tansu.
    let mut local = None;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            set_aside_previous_state(&args.data_dir)?;
            let dir = args.data_dir.join("broker");
            std::fs::create_dir_all(&dir)?;
            let broker = LocalBroker::start(args.tansu.as_deref(), &dir)
                .context("no --bootstrap given, so weft up starts a local Tansu broker")?;
            println!(
                "broker   local Tansu {} at {} (in memory; log {})",
                broker.binary().display(),
                broker.bootstrap(),
                broker.log_path().display()
            );
            let b = broker.bootstrap().to_string();
            local = Some(broker);
            b
        }
    };
    let store_listener = std::net::TcpListener::bind(&args.demo_listen)
        .with_context(|| format!("--demo-listen {}: cannot listen there", args.demo_listen))?;
    let store_origin = format!("http://{}", store_listener.local_addr()?);
    let config = config(file, args, &features, &bootstrap, &store_origin)?;
    let rt = weft_core::runtime::multi_thread("weft-up", 2)?;
    rt.block_on(ensure_topic(
        &bootstrap,
        &config.kafka.topic,
        config.kafka.partitions,
    ))
    .with_context(|| format!("creating topic {} on {bootstrap}", config.kafka.topic))?;

    let stop = Arc::new(AtomicBool::new(false));
    let archiver = {
        let c = ArchiverConfig::from_config(&config);
        let (metrics, stop) = (Arc::new(ArchiverMetrics::default()), stop.clone());
        std::thread::Builder::new()
            .name("weft-archive".into())
            .spawn(move || weft_speed::archiver::run(&c, metrics, stop))?
    };
    let batch = batch_schedule(
        &config,
        Duration::from_secs(args.batch_every_secs.max(1)),
        stop.clone(),
    )?;
    let produced = Arc::new(AtomicU64::new(0));
    let tenant = config.tenants.first().cloned();
    // The first demo user of the first tenant: the one the "try it" lines
    // query, so that they show a profile at once.
    let first_user = Arc::new((
        tenant.as_ref().map_or_else(String::new, |t| t.name.clone()),
        std::sync::OnceLock::new(),
    ));
    let generator = demo_generator(args.demo_users.max(10))?;
    // The API's address is known once it listens.
    let mut store = demo_store(&config, &generator, String::new());
    let demo = match args.demo_rate {
        0 => None,
        rate => Some(demo_traffic(
            bootstrap.clone(),
            rate,
            generator,
            stop.clone(),
            produced.clone(),
            first_user.clone(),
        )?),
    };
    let running = rt
        .block_on(weft_serving::start(config))
        .context("starting the serving layer")?;

    let (grpc, http) = (running.grpc_addr, running.http_addr);
    store.api_base = format!("http://{http}");
    let stores = store.tenants.first().map(|t| t.name.clone());
    let store_stop = tokio_util::sync::CancellationToken::new();
    let storefront = rt.spawn(weft_serving::demo::serve(
        store_listener,
        store,
        store_stop.clone(),
    ));
    println!("gRPC     {grpc}   (weft.v1.ProfileService, health, reflection)");
    println!("HTTP     http://{http}   (/v1/profiles, /v1/recommendations, /metrics, /readyz)");
    if let Some(first) = stores {
        println!(
            "demo     {store_origin}/demo/{first}   (a storefront with the recommendations widget)"
        );
    }
    println!(
        "ops      http://{http}/ops   (the server key as the password: event rates, lag, p99)"
    );
    println!("data     {}", args.data_dir.display());
    println!("features {}", features.display());
    if let Some(t) = &tenant
        && let Some(server) = t.keys.iter().find(|k| !k.publishable)
    {
        let key = server.secret().unwrap_or_default();
        let key = key.expose();
        let waited = Instant::now();
        while demo.is_some()
            && first_user.1.get().is_none()
            && waited.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let user = first_user.1.get().map_or("u0000001", String::as_str);
        println!("try it (tenant {}, key {:?}):", t.name, server.name);
        println!(
            "  grpcurl -plaintext -H 'authorization: Bearer {key}' -d '{{\"user_id\":\"{user}\"}}' {grpc} weft.v1.ProfileService/GetProfile"
        );
        println!("  curl -H 'Authorization: Bearer {key}' http://{http}/v1/profiles/{user}");
        println!(
            "  curl -H 'Authorization: Bearer {key}' 'http://{http}/v1/recommendations?user_id={user}&n=5'"
        );
    }
    println!("Ctrl-C stops everything cleanly.");

    let serving = running.serving.clone();
    let started = Instant::now();
    let last = std::sync::Mutex::new((Instant::now(), 0u64));
    signals.wait_forever_every(Duration::from_secs(args.status_every_secs.max(1)), || {
        let records = serving.speed_metrics().records.load(Ordering::Relaxed);
        let rate = last
            .lock()
            .map(|mut l| {
                let r = (records - l.1) as f64 / l.0.elapsed().as_secs_f64().max(1e-3);
                *l = (Instant::now(), records);
                r
            })
            .unwrap_or(0.0);
        let pair = serving.current_pair();
        println!(
            "[{:>5}s] {:>7.0} events/s  applied {}  lag {} msgs  view v{}  produced {}  p99 {}",
            started.elapsed().as_secs(),
            rate,
            serving.speed_metrics().applied.load(Ordering::Relaxed),
            serving.lag_messages(),
            pair.as_ref().map_or(0, |p| p.view_version()),
            produced.load(Ordering::Relaxed),
            running
                .p99_micros()
                .map_or_else(|| "-".to_string(), |us| format!("{us} µs")),
        );
    });
    println!("stopping...");
    stop.store(true, Ordering::Relaxed);
    if let Some(d) = demo {
        let _ = d.join();
    }
    store_stop.cancel();
    if let Ok(Err(e)) = rt.block_on(storefront) {
        tracing::error!(error = %e, "demo storefront");
    }
    let served = rt.block_on(running.stop());
    let _ = batch.join();
    match archiver.join() {
        Ok(Err(e)) => tracing::error!(error = %e, "archiver"),
        Err(_) => bail!("the archiver thread panicked"),
        Ok(Ok(())) => {}
    }
    drop(local);
    served.context("the serving layer")?;
    println!("stopped.");
    Ok(())
}
