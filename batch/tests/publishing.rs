//! Views are published atomically and kept for rollback; a spec change
//! shows in the manifest; export writes every user's features.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, StructArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weft_core::{FeatureSpec, FeatureValue, Profile};
use weft_view::format::MANIFEST_FILE;
use weft_view::{BlockCache, OpenedView, ViewStore, version_name};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_versioned_kept_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(8, 8_000, 400);
    write_archive(&archive, &events);
    let store = ViewStore::open(views.to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(store.current().await.unwrap(), None);
    // A half-written view (no manifest) and a stale staging directory are
    // never listed as views.
    std::fs::create_dir_all(views.join("v000100")).unwrap();
    std::fs::write(views.join("v000100/partials-0.sst"), b"partial").unwrap();
    std::fs::create_dir_all(views.join(".staging-1-2")).unwrap();
    assert!(store.versions().await.unwrap().is_empty());
    std::fs::remove_dir_all(views.join("v000100")).unwrap();

    let mut config = weft_batch::BatchConfig::new(
        archive.to_str().unwrap(),
        views.to_str().unwrap(),
        example_spec().0,
        example_spec().1,
    );
    config.keep = 2;
    for expected in 1..=4u64 {
        let summary = weft_batch::run(&config, Arc::new(weft_batch::JobProgress::default()))
            .await
            .unwrap();
        assert_eq!(summary.version, expected);
        assert_eq!(store.current().await.unwrap(), Some(expected));
    }
    assert_eq!(store.versions().await.unwrap(), vec![3, 4]);
    assert!(!views.join(version_name(1)).exists());

    store.set_current(3).await.unwrap();
    assert_eq!(store.current().await.unwrap(), Some(3));
    let work = tempfile::tempdir().unwrap();
    let view = OpenedView::open(&store, None, work.path(), true, &BlockCache::default())
        .await
        .unwrap();
    assert_eq!(view.manifest().version, 3);
    let err = store.set_current(1).await.unwrap_err();
    assert!(err.to_string().contains("v000001 does not exist"), "{err}");
    assert_eq!(store.current().await.unwrap(), Some(3));

    // A corrupted file is caught by the checksum.
    let file = &view.manifest().files[0].name;
    let path = views.join(version_name(4)).join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
    let work = tempfile::tempdir().unwrap();
    let err = OpenedView::open(&store, Some(4), work.path(), true, &BlockCache::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(file.as_str()), "{err}");

    // A different spec: a new hash in the manifest.
    let text = "[[feature]]\nname = \"views_7d\"\naggregate = \"count\"\nkinds = [\"view\"]\nwindow = \"7d\"\n";
    let other = Arc::new(FeatureSpec::parse(text).unwrap());
    let summary = run_job(&archive, &views, (other.clone(), text.to_string()), 1 << 30).await;
    assert_eq!(summary.manifest.spec_hash, other.hash());
    assert_ne!(summary.manifest.spec_hash, example_spec().0.hash());
    let manifest: weft_view::Manifest = serde_json::from_slice(
        &std::fs::read(
            views
                .join(version_name(summary.version))
                .join(MANIFEST_FILE),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest, summary.manifest);
}

/// Reads a feature's value back from an export column.
fn value_at(column: &dyn Array, row: usize) -> Option<FeatureValue> {
    if column.is_null(row) {
        return None;
    }
    if let Some(a) = column.as_primitive_opt::<Int64Type>() {
        return Some(FeatureValue::Int(a.value(row)));
    }
    if let Some(a) = column.as_primitive_opt::<Float64Type>() {
        return Some(FeatureValue::Float(a.value(row)));
    }
    if let Some(a) = column.as_string_opt::<i32>() {
        return Some(FeatureValue::Str(a.value(row).to_string()));
    }
    let list = column.as_list::<i32>().value(row);
    if let Some(s) = list.as_string_opt::<i32>() {
        return Some(FeatureValue::List(
            s.iter().map(|v| v.unwrap().to_string()).collect(),
        ));
    }
    let s: &StructArray = list.as_struct();
    let (values, counts) = (
        s.column(0).as_string::<i32>(),
        s.column(1).as_primitive::<Int64Type>(),
    );
    Some(FeatureValue::Ranked(
        (0..s.len())
            .map(|i| (values.value(i).to_string(), counts.value(i)))
            .collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_user_with_every_feature() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(9, 20_000, 900);
    write_archive(&archive, &events);
    run_job(&archive, &views, example_spec(), 1 << 30).await;
    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    let at = view.manifest().max_event_ms.unwrap();
    let out = dir.path().join("profiles.parquet");
    let summary = weft_batch::export::export(&view, &out, at).unwrap();
    let users = by_user(&events);
    assert_eq!(summary.users, users.len() as u64);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let spec = view.spec().clone();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.num_columns(), 2 + spec.features.len());
        let (tenants, ids) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            let mut exported = Profile::new();
            for (i, f) in spec.features.iter().enumerate() {
                if let Some(v) = value_at(batch.column(2 + i).as_ref(), row) {
                    exported.insert(f.name.clone(), v);
                }
            }
            let want = view
                .profile(tenants.value(row), ids.value(row), at)
                .unwrap();
            assert_eq!(exported, want, "{}/{}", tenants.value(row), ids.value(row));
            rows += 1;
        }
    }
    assert_eq!(rows, users.len());
}
