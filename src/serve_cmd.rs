//! `weft serve`: the serving layer (with its speed layer) until SIGINT or
//! SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;
use weft_config::Overrides;
use weft_serving::state::Serving;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
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
    /// Print the effective configuration (keys shown as ***) and exit.
    #[arg(long)]
    print_config: bool,
}

impl ServeArgs {
    /// The flags as the top config layer: only those given.
    fn overrides(&self) -> Overrides {
        Overrides::new()
            .set_path("features", "--features", self.features.as_deref())
            .set("kafka.bootstrap", "--bootstrap", self.bootstrap.clone())
            .set("views.store", "--views", self.views.clone())
            .set_path("speed.data_dir", "--data-dir", self.data_dir.as_deref())
            .set(
                "serve.grpc_listen",
                "--grpc-listen",
                self.grpc_listen.clone(),
            )
            .set(
                "serve.http_listen",
                "--http-listen",
                self.http_listen.clone(),
            )
    }
}

pub(crate) fn run_serve(file: Option<&Path>, args: &ServeArgs) -> Result<()> {
    let config = crate::load_config(file, args.overrides())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let rt = weft_core::runtime::multi_thread("weft-serve", config.serve.workers)?;
    let result = rt.block_on(async {
        // Handlers first: a stop request during start-up is a clean stop.
        let stop = crate::speed_cmd::stop_on_signals()?;
        let grpc = weft_serving::bind(config.serve.grpc_listen, "serve.grpc_listen").await?;
        let http = weft_serving::bind(config.serve.http_listen, "serve.http_listen").await?;
        let server = weft_serving::Server::open(config)
            .await
            .context("starting weft serve")?;
        println!("gRPC  {}", grpc.local_addr()?);
        println!("HTTP  http://{}", http.local_addr()?);
        let status = tokio::spawn(report_every(
            server.serving().clone(),
            Duration::from_secs(5),
            stop.clone(),
        ));
        let served = server.run(grpc, http, stop.clone()).await;
        stop.cancel();
        status.await?;
        Ok::<_, anyhow::Error>(served?)
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Logs the served pair and the lag every `every` until `stop`.
async fn report_every(serving: Arc<Serving>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pair = serving.current_pair();
        tracing::info!(
            view = pair.as_ref().map_or(0, |p| p.view_version()),
            generation = pair.as_ref().map_or(0, |p| p.generation),
            lag_messages = serving.lag_messages(),
            "serving"
        );
    }
}
