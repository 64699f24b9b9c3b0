//! [`FoldExec`]: the batch job's own physical operator. Its input is the
//! archive's rows hash-partitioned by (tenant, user); each of its
//! partitions is one task that folds its rows into an SST file of partials
//! ([`crate::fold`]) and outputs one row, a [`TaskReport`] as JSON.
//!
//! The same operator runs in both modes:
//! * **in this process** (`weft batch run`): the files go into the view's
//!   staging directory, the recommendation statistics are handed over in
//!   memory;
//! * **on a Ballista cluster** (`weft batch run --cluster`): the operator
//!   travels to the executors through [`crate::cluster::WeftCodec`], and
//!   each task writes its files (partials, and its recommendation
//!   statistics) straight into the view store's staging area of the job
//!   ([`ViewStore::stage_file`]) under names unique to the attempt. The
//!   client adopts the files of the reports it receives and publishes the
//!   view only once every task succeeded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use serde::{Deserialize, Serialize};
use weft_config::S3Section;
use weft_core::FeatureSpec;
use weft_view::ViewStore;
use weft_view::format::{Counts, ViewFile};
use weft_view::recs::RecsConfig;

use crate::cluster::codec::{from_payload, to_payload};
use crate::fold::{FoldOutput, fold_partition};
use crate::job::JobProgress;
use crate::recs::RecsBuilder;
use crate::{BatchError, Result};

/// What every task of a job needs, as it travels to executors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FoldTask {
    /// The feature spec's text (parsed again where the task runs).
    pub spec_text: String,
    pub recs: RecsConfig,
    /// The anchor of popularity decay (end of the archive's newest day).
    pub anchor_ms: i64,
    /// Cluster jobs: the view store (location as the user gave it; each
    /// executor reaches it with its own `[s3]` settings) and the job's id,
    /// which names its staging area.
    pub store: Option<(String, String)>,
}

/// What one task did: one output row of [`FoldExec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskReport {
    /// The hash partition folded (None: a cluster task whose partition
    /// received no rows, which Ballista gives no shuffle location).
    pub partition: Option<usize>,
    pub counts: Counts,
    /// The partials files as the view lists them, one per Kafka partition
    /// with users.
    pub files: Vec<ViewFile>,
    /// Cluster: the names the files were staged under, in the same order.
    pub staged: Vec<String>,
    /// Cluster: the name the recommendation statistics were staged under.
    pub recs_staged: Option<String>,
    pub max_ts: Option<i64>,
    pub spills: usize,
    pub spilled_bytes: usize,
    pub in_memory: bool,
    /// The executor's host name (cluster) or "local".
    pub host: String,
    pub seconds: f64,
}

impl TaskReport {
    /// The report of a fold's output (nothing staged).
    fn new(partition: Option<usize>, out: &FoldOutput, host: String, started: Instant) -> Self {
        TaskReport {
            partition,
            counts: out.counts.clone(),
            files: out.files.clone(),
            staged: Vec::new(),
            recs_staged: None,
            max_ts: out.max_ts,
            spills: out.spills,
            spilled_bytes: out.spilled_bytes,
            in_memory: out.in_memory,
            host,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Where an in-process run's tasks put their output.
#[derive(Debug)]
pub(crate) struct LocalSink {
    /// The view's staging directory.
    pub dir: PathBuf,
    /// Each partition's recommendation statistics.
    pub recs: Mutex<Vec<Option<RecsBuilder>>>,
    pub progress: Arc<JobProgress>,
}

#[derive(Debug)]
pub struct FoldExec {
    input: Arc<dyn ExecutionPlan>,
    task: Arc<FoldTask>,
    spec: Arc<FeatureSpec>,
    /// In-process runs only (never encoded).
    local: Option<Arc<LocalSink>>,
    /// Cluster tasks: how this process reaches `s3://` stores.
    s3: S3Section,
    properties: Arc<PlanProperties>,
}

fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "report",
        DataType::Utf8,
        false,
    )]))
}

impl FoldExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        task: FoldTask,
        spec: Arc<FeatureSpec>,
        local: Option<Arc<LocalSink>>,
        s3: S3Section,
    ) -> FoldExec {
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(report_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        FoldExec {
            input,
            task: Arc::new(task),
            spec,
            local,
            s3,
            properties: Arc::new(properties),
        }
    }

    /// The operator's payload for [`crate::cluster::WeftCodec`].
    pub(crate) fn encode(&self) -> DfResult<Vec<u8>> {
        if self.local.is_some() {
            return Err(DataFusionError::Plan(
                "an in-process fold cannot be sent to a cluster".into(),
            ));
        }
        to_payload(self.task.as_ref(), "fold")
    }

    /// Rebuilds the operator from [`FoldExec::encode`]'s payload, in a
    /// process that reaches object stores as `s3` says.
    pub(crate) fn decode(
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        s3: &S3Section,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (task, spec) = from_payload(payload, "fold", |t: &FoldTask| &t.spec_text)?;
        let [input] = inputs else {
            return Err(DataFusionError::Plan(format!(
                "Weft's fold takes one input, the plan gives {}",
                inputs.len()
            )));
        };
        Ok(Arc::new(FoldExec::new(
            input.clone(),
            task,
            Arc::new(spec),
            None,
            s3.clone(),
        )))
    }
}

impl DisplayAs for FoldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.task.store {
            Some((store, job)) => write!(f, "WeftFoldExec: store={store}, job={job}"),
            None => write!(f, "WeftFoldExec: local"),
        }
    }
}

impl ExecutionPlan for FoldExec {
    fn name(&self) -> &str {
        "WeftFoldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Plan(
                "Weft's fold takes exactly one input".into(),
            ));
        }
        Ok(Arc::new(FoldExec::new(
            children.swap_remove(0),
            self.task.as_ref().clone(),
            self.spec.clone(),
            self.local.clone(),
            self.s3.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let reservation = grouping_reservation("weft grouping", partition, &ctx);
        let (input, task, spec, local, s3) = (
            self.input.clone(),
            self.task.clone(),
            self.spec.clone(),
            self.local.clone(),
            self.s3.clone(),
        );
        let global = if local.is_some() {
            Some(partition)
        } else {
            shuffle_partition(&[&self.input], partition)?
        };
        let schema = report_schema();
        let out_schema = schema.clone();
        let run = async move {
            let report = on_blocking_thread(move || async move {
                run_task(
                    input,
                    partition,
                    global,
                    ctx,
                    &task,
                    &spec,
                    local.as_deref(),
                    &s3,
                    reservation,
                )
                .await
            })
            .await?;
            let json = serde_json::to_string(&report)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            RecordBatch::try_new(out_schema, vec![Arc::new(StringArray::from(vec![json]))])
                .map_err(DataFusionError::from)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(run),
        )))
    }
}

/// The spillable reservation a partition's grouping grows in, named
/// `what[partition]`. Register it when the task starts, before any
/// partition's grouping grows, so each gets its fair share of the pool
/// from the start.
pub(crate) fn grouping_reservation(
    what: &str,
    partition: usize,
    ctx: &TaskContext,
) -> datafusion::execution::memory_pool::MemoryReservation {
    MemoryConsumer::new(format!("{what}[{partition}]"))
        .with_can_spill(true)
        .register(ctx.memory_pool())
}

/// Runs a task's work (CPU-bound: grouping, folding) on a blocking
/// thread, off the async workers that keep driving the scan and the
/// shuffle. A DataFusion error comes back as it came: Ballista tells a
/// lost shuffle input (rerun the stage that wrote it) from a failed task by
/// the error's type.
pub(crate) async fn on_blocking_thread<T, F, W>(work: W) -> DfResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>>,
    W: FnOnce() -> F + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work()))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| match e {
            BatchError::DataFusion(e) => e,
            e => DataFusionError::External(Box::new(e)),
        })
}

/// The task context a fold on an executor runs in: the client sized the
/// session's batches and sort reservations to its own memory budget; an
/// executor gives each task a pool of its own (its memory over its task
/// slots), to which they are sized again.
pub(crate) fn fit_to_task_pool(ctx: &Arc<TaskContext>) -> Arc<TaskContext> {
    use datafusion::execution::memory_pool::MemoryLimit;
    let MemoryLimit::Finite(pool) = ctx.memory_pool().memory_limit() else {
        return ctx.clone();
    };
    let session = crate::job::fit_to_pool(ctx.session_config().clone(), pool, 1);
    Arc::new(TaskContext::new(
        ctx.task_id(),
        ctx.session_id(),
        session,
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        ctx.runtime_env(),
    ))
}

/// Which hash partition a cluster task's local `partition` of `inputs`
/// reads. Ballista runs a task on a plan sliced to its own partitions
/// (executed as 0, 1, ...); the shuffle locations it reads name the
/// partition of the map stage's output, the hash partition (the same in
/// every input of an operator that reads several co-partitioned
/// shuffles). None: the partition is empty in every input (no location to
/// read).
pub(crate) fn shuffle_partition(
    inputs: &[&Arc<dyn ExecutionPlan>],
    partition: usize,
) -> DfResult<Option<usize>> {
    use ballista_core::execution_plans::ShuffleReaderExec;
    let mut ids = std::collections::BTreeSet::new();
    for input in inputs {
        let Some(reader) = input.downcast_ref::<ShuffleReaderExec>() else {
            return Err(DataFusionError::Plan(format!(
                "a Weft task on a cluster reads a shuffle, not {}",
                input.name()
            )));
        };
        let locations = reader.partition.get(partition).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "a Weft task: the shuffle read has no partition {partition}"
            ))
        })?;
        ids.extend(locations.iter().map(|l| l.partition_id.partition_id));
    }
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.first().copied()),
        _ => Err(DataFusionError::Plan(format!(
            "a Weft task reads shuffle partitions {ids:?}; it takes exactly one"
        ))),
    }
}

/// A number no other call, in this process or another, is likely to
/// return: names cluster jobs and the files of task attempts.
pub(crate) fn nonce() -> u64 {
    use std::hash::BuildHasher;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed),
    ))
}

/// The view's name of fold partition `fold`'s file of Kafka partition `k`.
fn partials_name(k: i32, fold: usize) -> String {
    format!("partials-p{k}-{fold}.sst")
}

/// The partition an attempt of a task whose partition got no rows is
/// named after.
pub(crate) const NO_PARTITION: usize = usize::MAX;

/// A name no other attempt of any task uses: `<partition>.<nonce>`.
pub(crate) fn attempt_id(partition: usize) -> String {
    format!("{partition}.{:016x}", nonce())
}

/// The name attempt `attempt` stages its recommendation statistics under
/// (the last file a task stages).
fn recs_staged_name(attempt: &str) -> String {
    format!("recs-{attempt}.bin")
}

/// The partition a staged name of [`recs_staged_name`] was made for
/// ([`NO_PARTITION`] for a task without rows); None: another name.
pub(crate) fn recs_staged_partition(name: &str) -> Option<usize> {
    staged_partition(name, "recs-", ".bin")
}

/// The partition of a staged name `<prefix><attempt id><suffix>`
/// ([`attempt_id`]); None: another name.
pub(crate) fn staged_partition(name: &str, prefix: &str, suffix: &str) -> Option<usize> {
    let attempt = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    attempt.split_once('.')?.0.parse().ok()
}

/// Who ran a cluster task, for the client's log: the executor's
/// advertised address (set by `weft batch executor`), else the process.
pub(crate) static EXECUTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub(crate) fn host_name() -> String {
    EXECUTOR
        .get()
        .cloned()
        .unwrap_or_else(|| format!("pid {}", std::process::id()))
}

/// One task: folds partition `partition` and puts its output where the run
/// takes it from.
#[allow(clippy::too_many_arguments)]
async fn run_task(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    global: Option<usize>,
    ctx: Arc<TaskContext>,
    task: &FoldTask,
    spec: &FeatureSpec,
    local: Option<&LocalSink>,
    s3: &S3Section,
    reservation: datafusion::execution::memory_pool::MemoryReservation,
) -> Result<TaskReport> {
    let started = Instant::now();
    let recs = RecsBuilder::new(task.recs.clone(), task.anchor_ms);
    if let Some(sink) = local {
        let mut paths = |k: i32| Ok(sink.dir.join(partials_name(k, partition)));
        let out = fold_partition(
            input,
            partition,
            ctx,
            spec,
            &mut paths,
            recs,
            &sink.progress,
            reservation,
        )
        .await?;
        let report = TaskReport::new(Some(partition), &out, "local".into(), started);
        let mut slots = sink
            .recs
            .lock()
            .map_err(|_| BatchError::Argument("a fold task panicked".into()))?;
        if let Some(slot) = slots.get_mut(partition) {
            *slot = Some(out.recs);
        }
        return Ok(report);
    }

    let Some((store, job)) = &task.store else {
        return Err(BatchError::Argument(
            "a cluster fold task without a view store".into(),
        ));
    };
    let shown = global.map_or_else(|| "none (empty)".to_string(), |p| p.to_string());
    tracing::info!(partition = %shown, job, "weft fold task started");
    let views = ViewStore::open(store, s3)?;
    let disk = &ctx.runtime_env().disk_manager;
    let no_path =
        || BatchError::Argument("the executor's temporary files have no local path".into());
    // The files are written to the executor's temporary files (kept alive
    // here until staged), one per Kafka partition with users.
    let mut temporaries = std::collections::BTreeMap::new();
    let mut paths = |k: i32| -> Result<PathBuf> {
        let file = disk.create_tmp_file("weft fold partials")?;
        let path = file.path().ok_or_else(no_path)?.to_path_buf();
        temporaries.insert(k, file);
        Ok(path)
    };
    let progress = JobProgress::default();
    let mut out = fold_partition(
        input,
        partition,
        fit_to_task_pool(&ctx),
        spec,
        &mut paths,
        recs,
        &progress,
        reservation,
    )
    .await?;
    let attempt = attempt_id(global.unwrap_or(NO_PARTITION));
    let mut staged = Vec::with_capacity(out.files.len());
    for file in &mut out.files {
        let (Some(global), Some(k)) = (global, file.partition) else {
            return Err(BatchError::Argument(
                "a fold task read rows but no shuffle location".into(),
            ));
        };
        let path = temporaries
            .get(&k)
            .and_then(|t| t.path())
            .ok_or_else(no_path)?;
        file.name = partials_name(k, global);
        let as_staged = format!("partials-p{k}-{attempt}.sst");
        views.stage_file(job, path, &as_staged).await?;
        staged.push(as_staged);
    }
    let recs_file = disk.create_tmp_file("weft fold recommendations")?;
    let recs_path = recs_file.path().ok_or_else(no_path)?;
    let bytes = out
        .recs
        .to_bytes()
        .map_err(|e| BatchError::Argument(format!("encoding recommendation statistics: {e}")))?;
    std::fs::write(recs_path, &bytes).map_err(BatchError::io(recs_path))?;
    let recs_staged = recs_staged_name(&attempt);
    views.stage_file(job, recs_path, &recs_staged).await?;
    let report = TaskReport {
        staged,
        recs_staged: Some(recs_staged),
        ..TaskReport::new(global, &out, host_name(), started)
    };
    tracing::info!(
        partition = %shown,
        job,
        users = report.counts.users,
        rows = report.counts.rows,
        seconds = format!("{:.1}", report.seconds),
        "weft fold task finished"
    );
    Ok(report)
}

/// The reports in a run's output batches: one per task, `tasks` in all;
/// those of partitions with rows in partition order (an error names a
/// repeated partition or a wrong number of tasks).
pub(crate) fn reports(batches: &[RecordBatch], tasks: usize) -> Result<Vec<TaskReport>> {
    let mut out: Vec<TaskReport> = Vec::with_capacity(tasks);
    let mut received = 0;
    for batch in batches {
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| BatchError::Argument("a fold task's report is not text".into()))?;
        for json in col.iter().flatten() {
            let r: TaskReport = serde_json::from_str(json)
                .map_err(|e| BatchError::Argument(format!("a fold task's report: {e}")))?;
            received += 1;
            match r.partition {
                Some(p) if p >= tasks => {
                    return Err(BatchError::Argument(format!(
                        "a report of partition {p} of {tasks}"
                    )));
                }
                Some(p) if out.iter().any(|o| o.partition == Some(p)) => {
                    return Err(BatchError::Argument(format!(
                        "two reports of partition {p}"
                    )));
                }
                _ => out.push(r),
            }
        }
    }
    if received != tasks {
        return Err(BatchError::Argument(format!(
            "{received} fold task reports for {tasks} partitions"
        )));
    }
    out.sort_by_key(|r| r.partition);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use datafusion::physical_plan::empty::EmptyExec;

    use super::*;

    const SPEC: &str = include_str!("../../deploy/features.example.toml");

    fn fold(local: Option<Arc<LocalSink>>) -> FoldExec {
        let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(report_schema()));
        let task = FoldTask {
            spec_text: SPEC.into(),
            recs: RecsConfig::default(),
            anchor_ms: 42,
            store: Some(("s3://weft/views".into(), "job-1".into())),
        };
        let spec = Arc::new(FeatureSpec::parse(SPEC).unwrap());
        FoldExec::new(input, task, spec, local, S3Section::default())
    }

    /// The operator a cluster decodes is the one the client encoded; an
    /// in-process fold (its sink is memory of this process) is refused.
    #[test]
    fn the_fold_travels_whole_and_only_from_a_cluster_job() {
        let exec = fold(None);
        let payload = exec.encode().unwrap();
        let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(report_schema()));
        let decoded = FoldExec::decode(&payload, &[input], &S3Section::default()).unwrap();
        let decoded = decoded.downcast_ref::<FoldExec>().unwrap();
        assert_eq!(decoded.task.spec_text, SPEC);
        assert_eq!(decoded.task.anchor_ms, 42);
        assert_eq!(decoded.task.store, exec.task.store);
        assert_eq!(decoded.spec.hash(), exec.spec.hash());
        let e = FoldExec::decode(&payload, &[], &S3Section::default()).unwrap_err();
        assert!(e.to_string().contains("takes one input"), "{e}");
        let e = FoldExec::decode(b"\x01", &[], &S3Section::default()).unwrap_err();
        assert!(e.to_string().contains("decoding Weft's fold"), "{e}");

        let sink = Arc::new(LocalSink {
            dir: PathBuf::from("/nonexistent"),
            recs: Mutex::new(Vec::new()),
            progress: Arc::new(JobProgress::default()),
        });
        let e = fold(Some(sink)).encode().unwrap_err();
        assert!(e.to_string().contains("cannot be sent to a cluster"), "{e}");
    }
}
