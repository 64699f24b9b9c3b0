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
use std::sync::atomic::Ordering;
use std::time::Duration;

use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::PhysicalPlanNode;
use weft_view::{Staging, ViewStore};

use super::codec::WeftCodec;
use crate::job::{BatchConfig, JobProgress};
use crate::operator::{self, FoldExec, FoldTask, TaskReport};
use crate::recs::RecsBuilder;
use crate::{BatchError, Result};

/// An id for a new cluster job: names its staging area and its Ballista
/// job name.
pub fn job_id() -> String {
    format!(
        "{}-{:08x}",
        weft_core::time::now_ms(),
        operator::nonce() as u32
    )
}

pub(crate) fn cluster_error(scheduler: &str, problem: impl std::fmt::Display) -> BatchError {
    BatchError::Cluster {
        scheduler: scheduler.to_string(),
        problem: problem.to_string(),
    }
}

/// The scheduler's gRPC URL, once something listens at `scheduler`
/// (df://host:port): fails fast, and by name, when nothing does (Ballista's
/// client would retry for a long time).
pub(crate) async fn reach(scheduler: &str, config: &BatchConfig) -> Result<String> {
    let (host, port) = weft_config::parse_scheduler(scheduler).map_err(BatchError::Argument)?;
    match tokio::time::timeout(
        config.connect_timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(format!("http://{host}:{port}")),
        Ok(Err(e)) => Err(cluster_error(scheduler, format!("cannot connect: {e}"))),
        Err(_) => Err(cluster_error(
            scheduler,
            format!(
                "no connection within {} s (cluster.connect_timeout_secs)",
                config.connect_timeout.as_secs()
            ),
        )),
    }
}

/// Submits `plan` as job `job` to the scheduler at `url` ([`reach`]) with
/// Weft's codec and the run's settings (batch size, spill reservation,
/// which travel with the job to the executors); the stream of its output.
pub(crate) async fn submit(
    url: &str,
    job: &str,
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
    config: &BatchConfig,
) -> datafusion::error::Result<datafusion::execution::SendableRecordBatchStream> {
    let codec = WeftCodec::new(config.s3.clone());
    let session = ctx
        .copied_config()
        .upgrade_for_ballista()
        .with_ballista_job_name(&format!("weft batch {job}"));
    execute_physical_plan::<PhysicalPlanNode>(
        url.to_string(),
        &BallistaConfig::default(),
        plan,
        &codec,
        job.to_string(),
        session,
    )
    .await
}

/// Runs the fold stage of `input` on the cluster as job `job`. Returns the
/// job's staging (the tasks' files adopted by the caller), the reports in
/// partition order and each partition's recommendation statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    scheduler: &str,
    job: &str,
    config: &BatchConfig,
    views: &ViewStore,
    input: Arc<dyn ExecutionPlan>,
    mut task: FoldTask,
    ctx: &SessionContext,
    progress: &JobProgress,
) -> Result<(Staging, Vec<TaskReport>, Vec<RecsBuilder>)> {
    let url = reach(scheduler, config).await?;
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
    tracing::info!(
        job,
        scheduler,
        partitions,
        "submitting the batch job: stage 1 scans the archive and shuffles by (tenant, user), stage 2 folds"
    );
    let submitted = async {
        let stream = submit(&url, job, fold, ctx, config).await?;
        datafusion::physical_plan::common::collect(stream).await
    };
    progress.tasks.store(partitions, Ordering::Relaxed);
    let batches = tokio::select! {
        batches = submitted => batches.map_err(|e| cluster_error(scheduler, e))?,
        never = watch_tasks(views, job, partitions, progress, tasks_done) => match never {},
    };
    progress.tasks_done.store(partitions, Ordering::Relaxed);
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

/// Follows the last stage from the client while the job runs: a task's
/// files appear in the job's staging area when it is done, so every
/// second the staged names say how many of the `tasks` are
/// (`tasks_done`; logged when the count moves, and kept in `progress` for
/// the progress display).
pub(crate) async fn watch_tasks(
    views: &ViewStore,
    job: &str,
    tasks: usize,
    progress: &JobProgress,
    tasks_done: fn(&[String]) -> usize,
) -> std::convert::Infallible {
    let mut reported = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let names = match views.staged_names(job).await {
            Ok(names) => names,
            Err(e) => {
                tracing::debug!(job, error = %e, "listing the job's staged files");
                continue;
            }
        };
        let done = tasks_done(&names).min(tasks);
        progress.tasks_done.store(done, Ordering::Relaxed);
        if done != reported {
            reported = done;
            tracing::info!(job, done, tasks, "tasks done");
        }
    }
}

/// How many fold tasks the staged `names` show done: each task stages its
/// recommendation statistics last ([`operator::recs_staged_partition`]; a
/// partition retried counts once, each task without rows once).
fn tasks_done(names: &[String]) -> usize {
    count_partitions(
        names
            .iter()
            .filter_map(|n| operator::recs_staged_partition(n)),
    )
}

/// Partitions done among staged names' `partitions` (each once; each
/// [`operator::NO_PARTITION`] once: a task without rows).
pub(crate) fn count_partitions(partitions: impl Iterator<Item = usize>) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    let mut empty = 0;
    for partition in partitions {
        if partition == operator::NO_PARTITION {
            empty += 1;
        } else {
            seen.insert(partition);
        }
    }
    seen.len() + empty
}

#[cfg(test)]
mod tests {
    use super::tasks_done;
    use crate::operator::NO_PARTITION;

    #[test]
    fn staged_names_count_each_partition_once() {
        let empty = NO_PARTITION;
        let names: Vec<String> = [
            "partials-p3-0.00aa.sst".to_string(),
            "recs-0.00aa.bin".to_string(),
            "recs-0.00bb.bin".to_string(), // a retried attempt
            "recs-3.00cc.bin".to_string(),
            format!("recs-{empty}.00dd.bin"),
            "partials-p1-5.00ee.sst".to_string(), // still staging its statistics
        ]
        .into();
        assert_eq!(tasks_done(&names), 3);
        assert_eq!(tasks_done(&[]), 0);
    }
}
