//! `weft batch run --cluster df://host:port`: the job's plan submitted to a
//! Ballista scheduler.
//!
//! The client plans as a local run does (archive checked, boundary
//! computed, scan with the boundary and projection pushed down, hash
//! repartition by (tenant, user)), puts [`FoldExec`] on top and submits
//! the physical plan. The scheduler cuts it at the hash repartition: stage
//! one scans the archive and writes Ballista's shuffle, stage two runs one
//! fold task per partition on the executors, each staging its files in the
//! view store. The client then reads the task reports, adopts their files
//! and publishes; if any task failed the job fails and nothing is
//! published.

use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::PhysicalPlanNode;
use weft_view::{Staging, ViewStore};

use super::codec::WeftCodec;
use crate::job::BatchConfig;
use crate::operator::{self, FoldExec, FoldTask, TaskReport};
use crate::recs::RecsBuilder;
use crate::{BatchError, Result};

/// An id for a new cluster job: names its staging area and its Ballista
/// job name.
pub fn job_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{millis}-{:08x}", operator::nonce() as u32)
}

fn cluster_error(scheduler: &str, problem: impl std::fmt::Display) -> BatchError {
    BatchError::Cluster {
        scheduler: scheduler.to_string(),
        problem: problem.to_string(),
    }
}

/// Runs the fold stage of `input` on the cluster as job `job`. Returns the
/// job's staging (the tasks' files adopted by the caller), the reports in
/// partition order and each partition's recommendation statistics.
pub(crate) async fn run(
    scheduler: &str,
    job: &str,
    config: &BatchConfig,
    views: &ViewStore,
    input: Arc<dyn ExecutionPlan>,
    mut task: FoldTask,
    ctx: &SessionContext,
) -> Result<(Staging, Vec<TaskReport>, Vec<RecsBuilder>)> {
    let (host, port) = weft_config::parse_scheduler(scheduler).map_err(BatchError::Argument)?;
    // Fail fast, and by name, when nothing listens: Ballista's client
    // would retry for a long time.
    match tokio::time::timeout(
        config.connect_timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(cluster_error(scheduler, format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(cluster_error(
                scheduler,
                format!(
                    "no connection within {} s (cluster.connect_timeout_secs)",
                    config.connect_timeout.as_secs()
                ),
            ));
        }
    }
    let staging = views.job_staging(job)?;
    task.store = Some((config.views.clone(), job.to_string()));
    let partitions = config.partitions.max(1);
    let fold: Arc<dyn ExecutionPlan> = Arc::new(FoldExec::new(
        input,
        task,
        config.spec.clone(),
        None,
        config.s3.clone(),
    ));
    let codec = WeftCodec::new(config.s3.clone());
    // The run's settings (batch size, spill reservation) travel with the
    // job to the executors.
    let session = ctx
        .copied_config()
        .upgrade_for_ballista()
        .with_ballista_job_name(&format!("weft batch {job}"));
    tracing::info!(
        job,
        scheduler,
        partitions,
        "submitting the batch job: stage 1 scans the archive and shuffles by (tenant, user), stage 2 folds"
    );
    let stream = execute_physical_plan::<PhysicalPlanNode>(
        format!("http://{host}:{port}"),
        &BallistaConfig::default(),
        fold,
        &codec,
        job.to_string(),
        session,
    )
    .await
    .map_err(|e| cluster_error(scheduler, e))?;
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(|e| cluster_error(scheduler, e))?;
    let reports =
        operator::reports(&batches, partitions).map_err(|e| cluster_error(scheduler, e))?;
    let mut builders = Vec::with_capacity(reports.len());
    for r in &reports {
        tracing::info!(
            job,
            partition = ?r.partition,
            host = %r.host,
            users = r.counts.users,
            seconds = format!("{:.1}", r.seconds),
            "fold task done"
        );
        let name = r.recs_staged.as_deref().ok_or_else(|| {
            cluster_error(
                scheduler,
                format!(
                    "partition {:?}'s report has no recommendation statistics",
                    r.partition
                ),
            )
        })?;
        let bytes = views.read_staged(job, name).await?;
        builders.push(
            RecsBuilder::from_bytes(config.recs.clone(), &bytes).map_err(|e| {
                cluster_error(
                    scheduler,
                    format!("partition {:?}'s {name}: {e}", r.partition),
                )
            })?,
        );
    }
    Ok((staging, reports, builders))
}
