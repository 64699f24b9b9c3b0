//! `weft batch scheduler` and `weft batch executor`: Ballista's own
//! scheduler and executor processes, with Weft's codec (and so its fold
//! operator) registered, and object stores reached with this process's
//! `[s3]` settings.

use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use weft_config::{ClusterSection, S3Section};

use super::codec::WeftCodec;
use super::stores::WeftStores;
use crate::{BatchError, Result};

/// Executors ask the scheduler for work when they have a free slot. (In
/// Ballista 55's push mode the scheduler counts executors' free slots
/// itself and loses count when a lost executor rolls a running stage back:
/// the slots of the tasks then running elsewhere are never returned, and a
/// job on single-slot executors waits forever.)
const SCHEDULING: TaskSchedulingPolicy = TaskSchedulingPolicy::PullStaged;

fn ballista_error(what: &str, e: impl std::fmt::Display) -> BatchError {
    BatchError::Argument(format!("{what}: {e}"))
}

/// Runs a scheduler on `cluster.bind` until the process is stopped.
pub async fn scheduler(cluster: &ClusterSection, s3: &S3Section) -> Result<()> {
    let stores = Arc::new(WeftStores::new(s3.clone()));
    let timeout = cluster.executor_timeout_secs.max(1);
    let config = SchedulerConfig {
        scheduling_policy: SCHEDULING,
        bind_host: cluster.bind.ip().to_string(),
        bind_port: cluster.bind.port(),
        external_host: cluster.bind.ip().to_string(),
        executor_timeout_seconds: timeout,
        // Lost executors are looked for often enough that one is noticed
        // within about the timeout, not minutes later.
        expire_dead_executor_interval_seconds: (timeout / 3).clamp(1, 15),
        task_max_failures: cluster.task_max_failures,
        override_physical_codec: Some(Arc::new(WeftCodec::new(s3.clone()))),
        override_session_builder: Some(Arc::new(move |config| {
            let state = default_session_builder(config)?;
            let runtime = RuntimeEnvBuilder::new()
                .with_object_store_registry(stores.clone())
                .build_arc()?;
            Ok(SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(runtime)
                .build())
        })),
        ..SchedulerConfig::default()
    };
    let ballista = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ballista_error("starting the scheduler", e))?;
    tracing::info!(
        bind = %cluster.bind,
        executor_timeout_secs = timeout,
        task_max_failures = cluster.task_max_failures,
        "weft batch scheduler listening"
    );
    start_server(ballista, cluster.bind, Arc::new(config))
        .await
        .map_err(|e| ballista_error(&format!("scheduler on {}", cluster.bind), e))
}

/// Runs an executor registered with `cluster.scheduler` until the process
/// is stopped.
pub async fn executor(cluster: &ClusterSection, s3: &S3Section) -> Result<()> {
    let url = cluster.scheduler.as_deref().ok_or_else(|| {
        BatchError::Argument(
            "cluster.scheduler: not set (give --scheduler df://host:port, or set it in the --config file or WEFT__CLUSTER__SCHEDULER)".into(),
        )
    })?;
    let (host, port) = weft_config::parse_scheduler(url)
        .map_err(|e| BatchError::Argument(format!("cluster.scheduler: {e}")))?;
    std::fs::create_dir_all(&cluster.work_dir).map_err(BatchError::io(&cluster.work_dir))?;
    let work_dir = cluster
        .work_dir
        .canonicalize()
        .map_err(BatchError::io(&cluster.work_dir))?;
    let work = work_dir.to_string_lossy().to_string();
    let stores = Arc::new(WeftStores::new(s3.clone()));
    let temp = work_dir.clone();
    let config = ExecutorProcessConfig {
        task_scheduling_policy: SCHEDULING,
        bind_host: cluster.host.clone(),
        external_host: Some(cluster.host.clone()),
        port: cluster.flight_port,
        grpc_port: cluster.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        // Retry the scheduler for a while (started together).
        scheduler_connect_timeout_seconds: 30,
        vcores: cluster.vcores,
        work_dir: Some(work.clone()),
        executor_heartbeat_interval_seconds: cluster.heartbeat_secs.max(1),
        memory_pool_size: Some((cluster.memory_mb as u64) << 20),
        override_physical_codec: Some(Arc::new(WeftCodec::new(s3.clone()))),
        override_runtime_producer: Some(Arc::new(move |_config| {
            let runtime: RuntimeEnv = RuntimeEnvBuilder::new()
                .with_object_store_registry(stores.clone())
                .with_temp_file_path(temp.clone())
                .build()?;
            Ok(Arc::new(runtime))
        })),
        ..ExecutorProcessConfig::default()
    };
    let _ = crate::operator::EXECUTOR.set(format!("{}:{}", cluster.host, cluster.flight_port));
    tracing::info!(
        scheduler = url,
        host = %cluster.host,
        flight_port = cluster.flight_port,
        grpc_port = cluster.grpc_port,
        work_dir = %work,
        vcores = cluster.vcores,
        memory_mb = cluster.memory_mb,
        "weft batch executor starting"
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ballista_error(&format!("executor (scheduler {url})"), e))
}
