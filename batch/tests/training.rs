//! `weft batch training-set`: every row of a label file equals the
//! reference evaluator's "as of t, known at t" (docs/semantics.md) for its
//! user and time, label columns pass through unchanged, rows keep their
//! order; bad labels are refused naming the column.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use weft_batch::training::training_set;
use weft_batch::{BatchConfig, JobProgress};
use weft_core::eval::{Profile, compare_profiles};
use weft_core::generator::Sequenced;
use weft_core::{FeatureSpec, FeatureValue, reference};

use crate::common::*;

/// A label row: tenant, user, time, and the pass-through columns.
#[derive(Debug, Clone)]
struct Label {
    tenant: String,
    user: String,
    ts_ms: i64,
    label: i64,
    weight: f64,
    note: Option<String>,
}

fn write_labels(path: &Path, rows: &[Label]) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "note",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.note.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "tenant",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.tenant.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "user_id",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.user.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "ts_ms",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            )),
        ),
        (
            "label",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.label).collect::<Vec<_>>(),
            )),
        ),
        (
            "weight",
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.weight).collect::<Vec<_>>(),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    // Two row groups' worth of writes, to cross batch boundaries.
    let half = batch.num_rows() / 2;
    w.write(&batch.slice(0, half)).unwrap();
    w.write(&batch.slice(half, batch.num_rows() - half))
        .unwrap();
    w.close().unwrap();
}

fn read_all(path: &Path) -> RecordBatch {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow_select_concat(&schema, &batches)
}

fn arrow_select_concat(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    datafusion::arrow::compute::concat_batches(schema, batches).unwrap()
}

/// A written feature value back in core form (None: null).
fn value(column: &dyn Array, row: usize) -> Option<FeatureValue> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Int64 => FeatureValue::Int(column.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => FeatureValue::Float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => FeatureValue::Str(column.as_string::<i32>().value(row).to_string()),
        DataType::List(f) if f.data_type() == &DataType::Utf8 => {
            let items = column.as_list::<i32>().value(row);
            let items = items.as_string::<i32>();
            FeatureValue::List(
                (0..items.len())
                    .map(|i| items.value(i).to_string())
                    .collect(),
            )
        }
        DataType::List(_) => {
            let items = column.as_list::<i32>().value(row);
            let items = items.as_struct();
            let values = items.column(0).as_string::<i32>();
            let counts = items.column(1).as_primitive::<Int64Type>();
            FeatureValue::Ranked(
                (0..items.len())
                    .map(|i| (values.value(i).to_string(), counts.value(i)))
                    .collect(),
            )
        }
        other => panic!("unexpected feature column type {other}"),
    })
}

/// Each user's records in offset order.
fn records_by_user(events: &[Sequenced]) -> BTreeMap<(String, String), Vec<Sequenced>> {
    let mut sorted: Vec<&Sequenced> = events.iter().collect();
    sorted.sort_by_key(|s| (s.partition, s.offset));
    let mut out: BTreeMap<(String, String), Vec<Sequenced>> = BTreeMap::new();
    for s in sorted {
        out.entry((s.event.tenant.clone(), s.event.user_id.clone()))
            .or_default()
            .push(s.clone());
    }
    out
}

fn config(archive: &Path, spec: Arc<FeatureSpec>, text: String) -> BatchConfig {
    let mut c = BatchConfig::new(archive.to_str().unwrap(), "", spec, text);
    c.partitions = 2;
    c
}

/// Runs a training set and checks every row against the reference (the
/// `only` features, or all), the label columns and the row order.
async fn check(
    archive: &Path,
    labels: &[Label],
    records: &BTreeMap<(String, String), Vec<Sequenced>>,
    only: &[String],
    memory_limit: Option<usize>,
) -> weft_batch::training::TrainingSummary {
    let (spec, text) = example_spec();
    let dir = tempfile::tempdir().unwrap();
    let (labels_path, out) = (
        dir.path().join("labels.parquet"),
        dir.path().join("train.parquet"),
    );
    write_labels(&labels_path, labels);
    let mut c = config(archive, spec.clone(), text);
    if let Some(m) = memory_limit {
        c.memory_limit = m;
        c.spill_dir = Some(dir.path().to_path_buf());
    }
    let progress = Arc::new(JobProgress::default());
    let summary = training_set(&c, &labels_path, &out, only, progress.clone())
        .await
        .unwrap();
    // The progress line ends at every archive row, skipped users' included.
    assert_eq!(
        progress.rows.load(std::sync::atomic::Ordering::Relaxed),
        progress
            .total_rows
            .load(std::sync::atomic::Ordering::Relaxed),
        "rows done of the archive's"
    );
    assert_eq!(summary.rows, labels.len() as u64);
    let got = read_all(&out);
    assert_eq!(got.num_rows(), labels.len());
    let names: Vec<String> = if only.is_empty() {
        spec.features.iter().map(|f| f.name.clone()).collect()
    } else {
        only.to_vec()
    };
    let schema = got.schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut expected_columns = vec!["note", "tenant", "user_id", "ts_ms", "label", "weight"];
    expected_columns.extend(names.iter().map(String::as_str));
    assert_eq!(columns, expected_columns);
    let note = got.column(0).as_string::<i32>();
    let label = got.column(4).as_primitive::<Int64Type>();
    let weight = got.column(5).as_primitive::<Float64Type>();
    let ts = got.column(3).as_primitive::<Int64Type>();
    let empty = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let note_i = (!note.is_null(i)).then(|| note.value(i).to_string());
        assert_eq!(
            (note_i, label.value(i), weight.value(i), ts.value(i)),
            (l.note.clone(), l.label, l.weight, l.ts_ms),
            "row {i}: label columns in input order"
        );
        let mine = records
            .get(&(l.tenant.clone(), l.user.clone()))
            .unwrap_or(&empty);
        let mut expected = reference::evaluate_known_at(&spec, mine, l.ts_ms);
        let served: Profile = names
            .iter()
            .enumerate()
            .filter_map(|(c, name)| Some((name.clone(), value(got.column(6 + c).as_ref(), i)?)))
            .collect();
        if only.is_empty() {
            compare_profiles(&spec, &served, &expected).unwrap_or_else(|d| {
                panic!("row {i} ({}/{} at {}): {d}", l.tenant, l.user, l.ts_ms)
            });
        } else {
            expected.retain(|k, _| names.contains(k));
            assert_eq!(
                served, expected,
                "row {i} ({}/{} at {})",
                l.tenant, l.user, l.ts_ms
            );
        }
    }
    summary
}

/// Label times that probe every edge: before a user's first event, at an
/// event's exact time and a ms before, between a late event's time and its
/// arrival, at its arrival, random times; users the archive does not have.
fn edge_labels(records: &BTreeMap<(String, String), Vec<Sequenced>>, seed: u64) -> Vec<Label> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut push = |tenant: &str, user: &str, ts_ms: i64, rng: &mut rand_chacha::ChaCha8Rng| {
        let n = out.len() as i64;
        out.push(Label {
            tenant: tenant.into(),
            user: user.into(),
            ts_ms,
            label: n * 7,
            weight: n as f64 / 3.0,
            note: (n % 5 != 0).then(|| format!("row-{n}")),
        });
        let _ = rng;
    };
    for ((tenant, user), recs) in records.iter().step_by(3) {
        let first = recs.iter().map(|s| s.event.ts_ms).min().unwrap();
        let last = recs.iter().map(|s| s.ingest_ms).max().unwrap();
        push(tenant, user, first - 1, &mut rng);
        let s = &recs[rng.random_range(0..recs.len())];
        push(tenant, user, s.event.ts_ms, &mut rng);
        push(tenant, user, s.event.ts_ms - 1, &mut rng);
        if let Some(late) = recs.iter().find(|s| s.ingest_ms - s.event.ts_ms > 60_000) {
            push(tenant, user, late.ingest_ms - 1, &mut rng);
            push(tenant, user, late.ingest_ms, &mut rng);
        }
        let t = rng.random_range(first..=last + 86_400_000);
        push(tenant, user, t, &mut rng);
    }
    for i in 0..20 {
        push(
            "acme-unknown",
            &format!("nobody-{i}"),
            1_790_000_000_000 + i,
            &mut rng,
        );
    }
    // Input order is not user order.
    for i in (1..out.len()).rev() {
        let j = rng.random_range(0..=i);
        out.swap(i, j);
    }
    out
}

/// Reworks the generator's duplicate deliveries (identical copies, the
/// later offset arriving later) into the two cases it never makes: of
/// every other duplicated id, the copy at the later offset becomes known
/// first (the first copy arrives an hour late); of the others, the later
/// copy's contents differ (a producer that reused an id). Returns label
/// rows between the copies' known times, and at each.
fn reuse_ids(events: &mut [Sequenced]) -> Vec<Label> {
    let mut copies: BTreeMap<(String, String, String), Vec<usize>> = BTreeMap::new();
    for (i, s) in events.iter().enumerate() {
        let e = &s.event;
        copies
            .entry((e.tenant.clone(), e.user_id.clone(), e.event_id.clone()))
            .or_default()
            .push(i);
    }
    let known = |s: &Sequenced| s.event.ts_ms.max(s.ingest_ms);
    let mut labels = Vec::new();
    for (n, ((tenant, user, _), mut at)) in copies
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .enumerate()
    {
        at.sort_by_key(|&i| (events[i].partition, events[i].offset));
        let (first, later) = (at[0], at[1]);
        if n % 2 == 0 {
            events[later].ingest_ms = events[later].event.ts_ms;
            events[first].ingest_ms = known(&events[first]).max(known(&events[later])) + 3_600_000;
        } else {
            let e = &mut events[later].event;
            e.price_minor += 1_000;
            e.item_id.push_str("-reused");
        }
        let (a, b) = (known(&events[first]), known(&events[later]));
        for ts_ms in [
            a.min(b),
            a.min(b) + (a - b).abs() / 2,
            a.max(b) - 1,
            a.max(b),
        ] {
            labels.push(Label {
                tenant: tenant.clone(),
                user: user.clone(),
                ts_ms,
                label: n as i64,
                weight: 1.0,
                note: Some(format!("copies-{n}")),
            });
        }
    }
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_label_row_equals_the_reference_known_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let mut events = generated_events(17, 60_000, 1_500);
    let copies = reuse_ids(&mut events);
    assert!(
        copies.len() > 100,
        "{} label rows at reused ids",
        copies.len()
    );
    write_archive(&archive, &events);
    let records = records_by_user(&events);
    let late = events
        .iter()
        .filter(|s| s.ingest_ms - s.event.ts_ms > 60_000)
        .count();
    assert!(late > 100, "{late} late events");
    let mut labels = edge_labels(&records, 5);
    assert!(labels.len() > 2_000, "{} label rows", labels.len());
    labels.extend(copies);
    let summary = check(&archive, &labels, &records, &[], None).await;
    assert_eq!(summary.users_with_events + 20, summary.users);
    assert_eq!(summary.grouped_in_memory, summary.partitions);
    // A subset of the features: only those columns.
    let only = vec!["views_7d".to_string(), "recently_viewed".to_string()];
    check(&archive, &labels, &records, &only, None).await;
}

/// Rows that do not fit the smallest budget go through the external sort
/// (the batch job's grouping) and give the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_the_data_sorts_externally_and_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let mut events = generated_events(12, 250_000, 5_000);
    let copies = reuse_ids(&mut events);
    write_archive(&archive, &events);
    let records = records_by_user(&events);
    // Every user, so that every record is read: one label at its last
    // arrival, one mid-way.
    let mut labels: Vec<Label> = records
        .iter()
        .flat_map(|((tenant, user), recs)| {
            let (first, last) = (
                recs[0].event.ts_ms,
                recs.iter().map(|s| s.ingest_ms).max().unwrap(),
            );
            [last, first + (last - first) / 2].map(|ts_ms| Label {
                tenant: tenant.clone(),
                user: user.clone(),
                ts_ms,
                label: 1,
                weight: 0.5,
                note: None,
            })
        })
        .collect();
    labels.extend(copies);
    let summary = check(
        &archive,
        &labels,
        &records,
        &[],
        Some(weft_batch::job::MIN_MEMORY),
    )
    .await;
    assert!(
        summary.grouped_in_memory < summary.partitions,
        "the smallest budget cannot group in memory: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_labels_are_refused_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    write_archive(&archive, &generated_events(3, 2_000, 100));
    let (spec, text) = example_spec();
    let c = config(&archive, spec, text);
    let out = dir.path().join("train.parquet");
    let run = |labels: &Path, only: &[String]| {
        let (c, labels, out, only) = (&c, labels.to_path_buf(), out.clone(), only.to_vec());
        async move {
            training_set(c, &labels, &out, &only, Arc::new(JobProgress::default()))
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let path = dir.path().join(name);
        write_parquet(&path, columns);
        path
    };
    let strings = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let no_ts = write(
        "no_ts.parquet",
        vec![("tenant", strings(&["t"])), ("user_id", strings(&["u"]))],
    );
    let e = run(&no_ts, &[]).await;
    assert!(
        e.contains("no_ts.parquet") && e.contains("'ts_ms' is missing"),
        "{e}"
    );
    let text_ts = write(
        "text_ts.parquet",
        vec![
            ("tenant", strings(&["t"])),
            ("user_id", strings(&["u"])),
            ("ts_ms", strings(&["soon"])),
        ],
    );
    let e = run(&text_ts, &[]).await;
    assert!(e.contains("'ts_ms' is Utf8"), "{e}");
    let ok = vec![
        ("tenant", strings(&["t"])),
        ("user_id", strings(&["u"])),
        (
            "ts_ms",
            Arc::new(Int64Array::from(vec![1_790_000_000_000])) as ArrayRef,
        ),
    ];
    let mut clash = ok.clone();
    clash.push(("views_7d", strings(&["x"])));
    let e = run(&write("clash.parquet", clash), &[]).await;
    assert!(e.contains("'views_7d' is also a feature's name"), "{e}");
    let e = run(&write("ok.parquet", ok), &["no_such_feature".to_string()]).await;
    assert!(e.contains("no feature 'no_such_feature'"), "{e}");
    assert!(!out.exists(), "nothing written");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Random label times over a small archive: every row equals the
    /// reference.
    #[test]
    fn random_label_times_equal_the_reference(seed in 0u64..1_000, times in proptest::collection::vec(0i64..40 * 86_400_000, 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let events = generated_events(seed, 3_000, 60);
        write_archive(&archive, &events);
        let records = records_by_user(&events);
        let start = events.iter().map(|s| s.event.ts_ms).min().unwrap();
        let users: Vec<&(String, String)> = records.keys().collect();
        let labels: Vec<Label> = times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (tenant, user) = users[i * 7 % users.len()];
                Label {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    ts_ms: start - 86_400_000 + t,
                    label: i as i64,
                    weight: 1.0,
                    note: None,
                }
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(&archive, &labels, &records, &[], None));
    }
}

/// `weft batch export --point-in-time`: every user of the archive, in key
/// order, as known at `t`, equals the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_export_equals_the_reference_for_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let events = generated_events(23, 20_000, 600);
    write_archive(&archive, &events);
    let records = records_by_user(&events);
    // Mid-way through the data, with late events still on their way.
    let mut times: Vec<i64> = events.iter().map(|s| s.event.ts_ms).collect();
    times.sort_unstable();
    let t = times[times.len() / 2];
    let pending = events
        .iter()
        .filter(|s| s.event.ts_ms <= t && s.ingest_ms > t)
        .count();
    assert!(pending > 0, "some events have not arrived by t");
    let (spec, text) = example_spec();
    let out = dir.path().join("export.parquet");
    let summary = weft_batch::training::export_point_in_time(
        &config(&archive, spec.clone(), text),
        t,
        &out,
        Arc::new(JobProgress::default()),
    )
    .await
    .unwrap();
    assert_eq!(summary.rows, records.len() as u64);
    let got = read_all(&out);
    let (tenant, user) = (
        got.column(0).as_string::<i32>(),
        got.column(1).as_string::<i32>(),
    );
    for (i, ((t_name, u_name), mine)) in records.iter().enumerate() {
        assert_eq!(
            (tenant.value(i), user.value(i)),
            (t_name.as_str(), u_name.as_str())
        );
        let served: Profile = spec
            .features
            .iter()
            .enumerate()
            .filter_map(|(c, f)| Some((f.name.clone(), value(got.column(2 + c).as_ref(), i)?)))
            .collect();
        compare_profiles(
            &spec,
            &served,
            &reference::evaluate_known_at(&spec, mine, t),
        )
        .unwrap_or_else(|d| panic!("{t_name}/{u_name} at {t}: {d}"));
    }
}
