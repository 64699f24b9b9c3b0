//! `weft batch training-set --cluster df://host:port`: the training set's
//! per-user evaluation on a Ballista cluster, with the same semantics and
//! the same code as in this process.
//!
//! The client stages the labels' keys (`tenant`, `user_id`, `ts_ms` and
//! the label row number) in the view store's staging area of the job and
//! submits one plan: [`TrainingExec`] over two inputs hash-partitioned
//! alike by (tenant, user), the archive's scan and the staged labels'. The
//! scheduler cuts it at both repartitions (two shuffle stages); each task
//! of the last stage reads one partition of both, so it holds only its
//! partition's label users, groups their records (in memory or sorted
//! externally within the executor's pool, as a local run does), evaluates
//! every label row of its users ("as of t, known at t"), label users
//! without records included, and streams the rows (label row number and
//! features) back to the client. Each task also stages a small report
//! (users, records, grouping) for the summary and the progress line. The
//! client writes the rows it receives to its scratch files and assembles
//! the output in label order exactly as a local run does; the job's
//! staging area is deleted at the end, whatever the outcome.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::{SendableRecordBatchStream, SpillFile, TaskContext};
use datafusion::logical_expr::{cast, col};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col as pcol;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use weft_config::S3Section;
use weft_core::FeatureSpec;
use weft_view::ViewStore;

use super::{
    Folded, LabelUsers, Labels, ROW, ScratchWriter, TrainingRows, bad, feature_schema,
    no_event_rows, subset,
};
use crate::cluster::client::{self, cluster_error};
use crate::cluster::codec::{from_payload, to_payload};
use crate::columns::StrCol;
use crate::fold::group_partition;
use crate::job::{BatchConfig, JobProgress};
use crate::operator::{
    NO_PARTITION, attempt_id, fit_to_task_pool, grouping_reservation, host_name,
    on_blocking_thread, shuffle_partition, staged_partition,
};
use crate::source;
use crate::{BatchError, Result};

/// The staged name of the labels' keys.
const LABELS: &str = "labels.parquet";
/// Staged task reports: `training-<attempt>.json`.
const REPORT_PREFIX: &str = "training-";
const REPORT_SUFFIX: &str = ".json";
/// What an executor logs when a training task begins (and ends).
pub const TASK_STARTED: &str = "weft training task started";
pub const TASK_FINISHED: &str = "weft training task finished";

/// What every task of a training-set job needs, as it travels to the
/// executors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrainingTask {
    /// The feature spec's text (parsed again where the task runs) and the
    /// features computed, in output order.
    pub spec_text: String,
    pub features: Vec<String>,
    /// The view store (as the user gave it; each executor reaches it with
    /// its own `[s3]` settings) and the job's id, which names its staging
    /// area, where the task stages its report.
    pub store: String,
    pub job: String,
}

/// What one task did, staged as JSON for the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainingReport {
    /// The hash partition evaluated (None: a partition empty on both
    /// sides).
    partition: Option<usize>,
    label_rows: u64,
    users: u64,
    users_with_events: u64,
    records: u64,
    in_memory: bool,
    spills: usize,
    host: String,
    seconds: f64,
}

/// The training set's operator: input 0 is the archive's rows, input 1 the
/// labels' keys, both hash-partitioned by (tenant, user) into as many
/// partitions; partition `i` outputs the feature rows (label row number,
/// then the features) of every label row of partition `i`.
#[derive(Debug)]
pub struct TrainingExec {
    archive: Arc<dyn ExecutionPlan>,
    labels: Arc<dyn ExecutionPlan>,
    task: Arc<TrainingTask>,
    spec: Arc<FeatureSpec>,
    s3: S3Section,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// The scratch rows' schema: the label row number, then the features.
fn rows_schema(spec: &FeatureSpec) -> SchemaRef {
    let mut fields = vec![ArrowField::new(ROW, DataType::UInt64, false)];
    fields.extend(
        feature_schema(spec)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone()),
    );
    Arc::new(Schema::new(fields))
}

impl TrainingExec {
    fn new(
        archive: Arc<dyn ExecutionPlan>,
        labels: Arc<dyn ExecutionPlan>,
        task: TrainingTask,
        spec: Arc<FeatureSpec>,
        s3: S3Section,
    ) -> TrainingExec {
        let schema = rows_schema(&spec);
        let partitions = archive.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        TrainingExec {
            archive,
            labels,
            task: Arc::new(task),
            spec,
            s3,
            schema,
            properties: Arc::new(properties),
        }
    }

    /// The operator's payload for [`crate::cluster::WeftCodec`].
    pub(crate) fn encode(&self) -> DfResult<Vec<u8>> {
        to_payload(self.task.as_ref(), "training set")
    }

    /// Rebuilds the operator from [`TrainingExec::encode`]'s payload, in a
    /// process that reaches object stores as `s3` says.
    pub(crate) fn decode(
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        s3: &S3Section,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (task, spec) = from_payload(payload, "training set", |t: &TrainingTask| &t.spec_text)?;
        let spec = subset(&spec, &task.features)
            .map_err(|e| DataFusionError::Plan(format!("the job's features: {e}")))?;
        let [archive, labels] = inputs else {
            return Err(DataFusionError::Plan(format!(
                "Weft's training set takes two inputs, the plan gives {}",
                inputs.len()
            )));
        };
        Ok(Arc::new(TrainingExec::new(
            archive.clone(),
            labels.clone(),
            task,
            Arc::new(spec),
            s3.clone(),
        )))
    }
}

impl DisplayAs for TrainingExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WeftTrainingExec: features={}, store={}, job={}",
            self.task.features.join(","),
            self.task.store,
            self.task.job
        )
    }
}

impl ExecutionPlan for TrainingExec {
    fn name(&self) -> &str {
        "WeftTrainingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.archive, &self.labels]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [archive, labels] = <[_; 2]>::try_from(children).map_err(|_| {
            DataFusionError::Plan("Weft's training set takes exactly two inputs".into())
        })?;
        Ok(Arc::new(TrainingExec::new(
            archive,
            labels,
            self.task.as_ref().clone(),
            self.spec.clone(),
            self.s3.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let reservation = grouping_reservation("weft training rows", partition, &ctx);
        let global = shuffle_partition(&[&self.archive, &self.labels], partition)?;
        let (archive, labels, task, spec, s3) = (
            self.archive.clone(),
            self.labels.clone(),
            self.task.clone(),
            self.spec.clone(),
            self.s3.clone(),
        );
        let rows = async move {
            let file = on_blocking_thread(move || async move {
                run_task(
                    archive,
                    labels,
                    partition,
                    global,
                    ctx,
                    &task,
                    spec,
                    &s3,
                    reservation,
                )
                .await
            })
            .await?;
            // The rows as written, read back batch by batch (the open file
            // outlives the temporary's name).
            let path = file.path().map(Path::to_path_buf).unwrap_or_default();
            let reader = File::open(&path)
                .map_err(BatchError::io(&path))
                .and_then(|f| {
                    ParquetRecordBatchReaderBuilder::try_new(f)
                        .and_then(|b| b.build())
                        .map_err(|e| bad(&path, e))
                })
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            drop(file);
            Ok::<_, DataFusionError>(futures::stream::iter(
                reader.map(|b| b.map_err(DataFusionError::from)),
            ))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(rows).try_flatten(),
        )))
    }
}

/// One task, on an executor: its partition's label users, their records
/// grouped and evaluated at every label time into a temporary file of
/// rows; its report staged.
#[allow(clippy::too_many_arguments)]
async fn run_task(
    archive: Arc<dyn ExecutionPlan>,
    labels: Arc<dyn ExecutionPlan>,
    partition: usize,
    global: Option<usize>,
    ctx: Arc<TaskContext>,
    task: &TrainingTask,
    spec: Arc<FeatureSpec>,
    s3: &S3Section,
    reservation: MemoryReservation,
) -> Result<Arc<dyn SpillFile>> {
    let started = Instant::now();
    let shown = global.map_or_else(|| "none (empty)".to_string(), |p| p.to_string());
    tracing::info!(partition = %shown, job = %task.job, "{TASK_STARTED}");
    let views = ViewStore::open(&task.store, s3)?;
    let mut users = LabelUsers::new();
    let mut label_rows = 0u64;
    let mut stream = labels.execute(partition, ctx.clone())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                BatchError::Argument(format!("the staged labels have no column '{name}'"))
            })
        };
        let (tenants, ids, ts, rows) = (
            column("tenant")?,
            column("user_id")?,
            column("ts_ms")?,
            column(ROW)?,
        );
        let tenant = StrCol::new(tenants.as_ref(), "tenant")?;
        let user = StrCol::new(ids.as_ref(), "user_id")?;
        let (Some(ts), Some(rows)) = (
            ts.as_primitive_opt::<Int64Type>(),
            rows.as_primitive_opt::<UInt64Type>(),
        ) else {
            return Err(BatchError::Argument(
                "the staged labels' ts_ms or row numbers are mistyped".into(),
            ));
        };
        for i in 0..batch.num_rows() {
            users.add(tenant.value(i), user.value(i), ts.value(i), rows.value(i))?;
        }
        label_rows += batch.num_rows() as u64;
    }
    users.sort();
    let users = Arc::new(users);

    // Temporary files of the executor's own, in its work directory.
    let disk = &ctx.runtime_env().disk_manager;
    let no_path =
        || BatchError::Argument("the executor's temporary files have no local path".into());
    let file = disk.create_tmp_file("weft training rows")?;
    let path = file.path().ok_or_else(no_path)?.to_path_buf();
    let writer = ScratchWriter::create(path, &feature_schema(&spec))?;
    let mut rows = TrainingRows::new(spec.clone(), users.clone(), writer);
    let progress = JobProgress::default();
    let grouping = group_partition(
        archive,
        partition,
        fit_to_task_pool(&ctx),
        &progress,
        reservation,
        &mut rows,
    )
    .await?;
    let (with_events, records, mut writer) = rows.finish()?;
    let mut has_events = vec![false; users.len()];
    for u in &with_events {
        has_events[*u as usize] = true;
    }
    no_event_rows(&spec, &users, &has_events, &mut writer)?;
    writer.close()?;

    let report = TrainingReport {
        partition: global,
        label_rows,
        users: users.len() as u64,
        users_with_events: with_events.len() as u64,
        records,
        in_memory: grouping.in_memory,
        spills: grouping.spills,
        host: host_name(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec(&report)
        .map_err(|e| BatchError::Argument(format!("encoding a task report: {e}")))?;
    let staged = disk.create_tmp_file("weft training report")?;
    let staged_path = staged.path().ok_or_else(no_path)?;
    std::fs::write(staged_path, json).map_err(BatchError::io(staged_path))?;
    let name = format!(
        "{REPORT_PREFIX}{}{REPORT_SUFFIX}",
        attempt_id(global.unwrap_or(NO_PARTITION))
    );
    views.stage_file(&task.job, staged_path, &name).await?;
    tracing::info!(
        partition = %shown,
        job = %task.job,
        label_rows,
        users = report.users,
        records,
        seconds = format!("{:.1}", report.seconds),
        "{TASK_FINISHED}"
    );
    Ok(file)
}

/// How many training tasks staged names show done.
fn tasks_done(names: &[String]) -> usize {
    client::count_partitions(
        names
            .iter()
            .filter_map(|n| staged_partition(n, REPORT_PREFIX, REPORT_SUFFIX)),
    )
}

/// The label keys (tenant, user, time, row number) as the tasks read them.
fn label_keys(labels: &Labels, path: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        ArrowField::new("tenant", DataType::Utf8, false),
        ArrowField::new("user_id", DataType::Utf8, false),
        ArrowField::new("ts_ms", DataType::Int64, false),
        ArrowField::new(ROW, DataType::UInt64, false),
    ]));
    let file = File::create(path).map_err(BatchError::io(path))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| bad(path, e))?;
    let mut row = 0u64;
    for batch in &labels.batches {
        let utf8 = |name: &str| -> Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| BatchError::Argument(format!("labels: no column '{name}'")))?;
            datafusion::arrow::compute::cast(c, &DataType::Utf8)
                .map_err(|e| BatchError::DataFusion(e.into()))
        };
        let ts = batch
            .column_by_name("ts_ms")
            .cloned()
            .ok_or_else(|| BatchError::Argument("labels: no column 'ts_ms'".into()))?;
        let n = batch.num_rows() as u64;
        let rows: ArrayRef = Arc::new(UInt64Array::from_iter_values(row..row + n));
        let keys = RecordBatch::try_new(
            schema.clone(),
            vec![utf8("tenant")?, utf8("user_id")?, ts, rows],
        )
        .map_err(|e| BatchError::DataFusion(e.into()))?;
        writer.write(&keys).map_err(|e| bad(path, e))?;
        row += n;
    }
    writer.close().map_err(|e| bad(path, e))?;
    Ok(())
}

/// The training set's rows on the cluster of `scheduler`: `archive` is the
/// archive's scan hash-partitioned by (tenant, user), `spec` the job's
/// spec cut to `features` (the executors cut it again from the task); the
/// rows received are written to `scratch` for the assembly.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_on_cluster(
    scheduler: &str,
    config: &BatchConfig,
    ctx: &SessionContext,
    archive: Arc<dyn ExecutionPlan>,
    labels: &Labels,
    features: &[String],
    spec: Arc<FeatureSpec>,
    scratch: &Path,
    progress: &JobProgress,
) -> Result<Folded> {
    if config.views.is_empty() {
        return Err(BatchError::Argument(
            "views.store: a training set on a cluster needs a view store that every executor reaches (give --views, or set it in the --config file or WEFT__VIEWS__STORE): its staging area carries the labels to the tasks".into(),
        ));
    }
    let url = client::reach(scheduler, config).await?;
    let views = ViewStore::open(&config.views, &config.s3)?;
    let job = client::job_id();
    let result = on_cluster(
        scheduler, &url, &job, config, ctx, &views, archive, labels, features, spec, scratch,
        progress,
    )
    .await;
    if let Err(e) = views.discard_job(&job).await {
        tracing::warn!(error = %e, job, "the training job's staged files were not removed");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn on_cluster(
    scheduler: &str,
    url: &str,
    job: &str,
    config: &BatchConfig,
    ctx: &SessionContext,
    views: &ViewStore,
    archive: Arc<dyn ExecutionPlan>,
    labels: &Labels,
    features: &[String],
    spec: Arc<FeatureSpec>,
    scratch: &Path,
    progress: &JobProgress,
) -> Result<Folded> {
    let keys_path = scratch.join("label-keys.parquet");
    label_keys(labels, &keys_path)?;
    views.stage_file(job, &keys_path, LABELS).await?;
    // Gone (moved into a local store's staging, or uploaded): the scratch
    // directory holds feature rows only.
    match std::fs::remove_file(&keys_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(BatchError::io(&keys_path)(e));
        }
        _ => {}
    }
    let staged = views.staged_url(job, LABELS)?;
    source::register(views.location(), ctx);

    // The labels' keys, typed as the archive's scan types tenant and user
    // (so that both sides hash alike), partitioned as the archive is.
    let archive_schema = archive.schema();
    let typed = |name: &str| -> Result<datafusion::logical_expr::Expr> {
        let field = archive_schema
            .field_with_name(name)
            .map_err(|e| BatchError::DataFusion(e.into()))?;
        Ok(cast(col(name), field.data_type().clone()).alias(name))
    };
    let keys = ctx
        .read_parquet(staged.as_str(), ParquetReadOptions::default())
        .await?
        .select(vec![
            typed("tenant")?,
            typed("user_id")?,
            col("ts_ms"),
            col(ROW),
        ])?
        .create_physical_plan()
        .await?;
    let schema = keys.schema();
    let partitions = archive.output_partitioning().partition_count();
    let label_side: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        keys,
        Partitioning::Hash(
            vec![pcol("tenant", &schema)?, pcol("user_id", &schema)?],
            partitions,
        ),
    )?);
    let task = TrainingTask {
        spec_text: config.spec_text.clone(),
        features: features.to_vec(),
        store: config.views.clone(),
        job: job.to_string(),
    };
    let exec = TrainingExec::new(archive, label_side, task, spec, config.s3.clone());
    let out_schema = exec.schema.clone();
    tracing::info!(
        job,
        scheduler,
        partitions,
        "submitting the training set: stages 1 and 2 scan the archive and the labels and shuffle both by (tenant, user), stage 3 evaluates"
    );
    progress.tasks.store(partitions, Ordering::Relaxed);
    let path = scratch.join("cluster.parquet");
    let received = async {
        let mut stream = client::submit(url, job, Arc::new(exec), ctx, config).await?;
        let file = File::create(&path).map_err(BatchError::io(&path))?;
        let mut writer = ArrowWriter::try_new(file, out_schema, None).map_err(|e| bad(&path, e))?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            progress.rows.store(rows, Ordering::Relaxed);
            writer.write(&batch).map_err(|e| bad(&path, e))?;
        }
        writer.close().map_err(|e| bad(&path, e))?;
        Ok::<_, BatchError>(rows)
    };
    let rows = tokio::select! {
        rows = received => rows.map_err(|e| cluster_error(scheduler, e))?,
        never = client::watch_tasks(views, job, partitions, progress, tasks_done) => match never {},
    };
    progress.tasks_done.store(partitions, Ordering::Relaxed);

    // The tasks' reports: one per partition (a retried attempt's report
    // is the same), one per empty task.
    let mut folded = Folded {
        users_with_events: 0,
        records: 0,
        grouped_in_memory: 0,
    };
    let mut seen = std::collections::BTreeSet::new();
    for name in views.staged_names(job).await? {
        let Some(p) = staged_partition(&name, REPORT_PREFIX, REPORT_SUFFIX) else {
            continue;
        };
        if p != NO_PARTITION && !seen.insert(p) {
            continue;
        }
        let bytes = views.read_staged(job, &name).await?;
        let r: TrainingReport = serde_json::from_slice(&bytes)
            .map_err(|e| cluster_error(scheduler, format!("{name}: {e}")))?;
        tracing::info!(
            job,
            partition = ?r.partition,
            host = %r.host,
            label_rows = r.label_rows,
            users = r.users,
            records = r.records,
            seconds = format!("{:.1}", r.seconds),
            "training task done"
        );
        folded.users_with_events += r.users_with_events;
        folded.records += r.records;
        folded.grouped_in_memory += usize::from(r.in_memory);
    }
    if rows != labels.rows {
        return Err(cluster_error(
            scheduler,
            format!(
                "{rows} feature rows came back for {} label rows",
                labels.rows
            ),
        ));
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use datafusion::physical_plan::empty::EmptyExec;

    use super::*;

    const SPEC: &str = include_str!("../../../deploy/features.example.toml");

    /// The operator a cluster decodes is the one the client encoded, its
    /// features in the client's order; a plan without both inputs is
    /// refused.
    #[test]
    fn the_training_operator_travels_whole() {
        let spec = FeatureSpec::parse(SPEC).unwrap();
        let features: Vec<String> = spec
            .features
            .iter()
            .rev()
            .take(2)
            .map(|f| f.name.clone())
            .collect();
        let task = TrainingTask {
            spec_text: SPEC.into(),
            features: features.clone(),
            store: "s3://weft/views".into(),
            job: "job-1".into(),
        };
        let sub = Arc::new(subset(&spec, &features).unwrap());
        let input = || -> Arc<dyn ExecutionPlan> { Arc::new(EmptyExec::new(rows_schema(&sub))) };
        let exec = TrainingExec::new(input(), input(), task, sub.clone(), S3Section::default());
        let payload = exec.encode().unwrap();
        let decoded =
            TrainingExec::decode(&payload, &[input(), input()], &S3Section::default()).unwrap();
        let decoded = decoded.downcast_ref::<TrainingExec>().unwrap();
        assert_eq!(decoded.task.features, features);
        assert_eq!(decoded.task.job, "job-1");
        assert_eq!(decoded.spec.hash(), sub.hash());
        assert_eq!(decoded.schema, exec.schema);
        let e = TrainingExec::decode(&payload, &[input()], &S3Section::default()).unwrap_err();
        assert!(e.to_string().contains("takes two inputs"), "{e}");
        let e = TrainingExec::decode(b"\x01", &[], &S3Section::default()).unwrap_err();
        assert!(
            e.to_string().contains("decoding Weft's training set"),
            "{e}"
        );
    }

    #[test]
    fn reports_count_each_partition_once() {
        let names: Vec<String> = [
            "training-0.00aa.json",
            "training-0.00bb.json",
            "training-2.00cc.json",
            "labels.parquet",
        ]
        .map(String::from)
        .into();
        assert_eq!(tasks_done(&names), 2);
    }
}
