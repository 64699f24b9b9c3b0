//! `weft serve`: the serving layer (with its speed layer) until SIGINT or
//! SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Map, Value};
use weft_serving::ServeConfig;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The TOML config (see deploy/serve.example.toml); `WEFT_*` variables
    /// and the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap address (kafka.bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// The feature spec (features).
    #[arg(long)]
    features: Option<PathBuf>,
    /// The batch view store (views.store).
    #[arg(long)]
    views: Option<String>,
    /// RocksDB directory of the speed view (speed.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (serve.grpc_listen).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// HTTP listen address (serve.http_listen).
    #[arg(long)]
    http_listen: Option<String>,
    /// Print the effective configuration (keys redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServeArgs {
    /// The flags as a config layer: only those given.
    fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut set = |section: Option<&str>, key: &str, v: Option<Value>| {
            let Some(v) = v else { return };
            match section {
                None => {
                    root.insert(key.into(), v);
                }
                Some(s) => {
                    let entry = root
                        .entry(s.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = entry {
                        m.insert(key.into(), v);
                    }
                }
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        let p = |v: &Option<PathBuf>| v.as_ref().map(|p| Value::String(p.display().to_string()));
        set(None, "features", p(&self.features));
        set(Some("kafka"), "bootstrap", s(&self.bootstrap));
        set(Some("views"), "store", s(&self.views));
        set(Some("speed"), "data_dir", p(&self.data_dir));
        set(Some("serve"), "grpc_listen", s(&self.grpc_listen));
        set(Some("serve"), "http_listen", s(&self.http_listen));
        Value::Object(root)
    }
}

pub(crate) fn run_serve(args: &ServeArgs) -> Result<()> {
    let config = ServeConfig::load(args.config.as_deref(), args.overrides())?;
    if args.print_config {
        let mut shown = config.clone();
        for t in &mut shown.tenants {
            for k in &mut t.keys {
                k.key = "<redacted>".into();
            }
        }
        println!("{}", toml::to_string_pretty(&shown)?);
        return Ok(());
    }
    let signals = crate::speed_cmd::StopSignals::install()?;
    let workers = match config.serve.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("weft-serve")
        .enable_all()
        .build()?;
    let running = rt
        .block_on(weft_serving::start(config))
        .context("starting weft serve")?;
    println!("gRPC  {}", running.grpc_addr);
    println!("HTTP  http://{}", running.http_addr);
    let serving = running.serving.clone();
    signals.wait_forever_every(Duration::from_secs(5), || {
        let pair = serving.current_pair();
        tracing::info!(
            view = pair.as_ref().map_or(0, |p| p.view_version()),
            generation = pair.as_ref().map_or(0, |p| p.generation),
            lag_messages = serving.lag_messages(),
            "serving"
        );
    });
    rt.block_on(running.stop());
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}
