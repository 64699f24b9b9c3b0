//! Bad input stops the job with an error naming the file or key, and
//! publishes nothing; the boundary follows the archive's contiguity or the
//! archiver's commit record.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use weft_batch::{BatchConfig, BatchError, JobProgress};
use weft_core::archive::{
    ARCHIVER_STATE_DIR, ARCHIVER_STATE_FILE, ArchiverState, list_files, read_file,
};
use weft_view::ViewStore;

use crate::common::*;

async fn try_run(archive: &Path, views: &Path) -> Result<weft_batch::JobSummary, BatchError> {
    let (spec, text) = example_spec();
    let mut config = BatchConfig::new(
        archive.to_str().unwrap(),
        views.to_str().unwrap(),
        spec,
        text,
    );
    config.partitions = 2;
    weft_batch::run(&config, Arc::new(JobProgress::default())).await
}

async fn assert_nothing_published(views: &Path) {
    let store = ViewStore::open(views.to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(store.current().await.unwrap(), None);
    assert!(store.versions().await.unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(views).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no staging left behind: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_are_named_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let views = dir.path().join("views");

    let missing = dir.path().join("no-such-archive");
    let err = try_run(&missing, &views).await.unwrap_err();
    assert!(matches!(err, BatchError::MissingArchive(_)), "{err}");
    assert!(err.to_string().contains("no-such-archive"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = try_run(&empty, &views).await.unwrap_err();
    assert!(matches!(err, BatchError::EmptyArchive(_)), "{err}");

    let events = generated_events(3, 5_000, 300);
    type WriteBadFile = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, WriteBadFile, &str)> = vec![
        (
            "missing.parquet",
            Box::new(|p: &Path| {
                let ids: ArrayRef = Arc::new(StringArray::from(vec!["e1"]));
                write_parquet(p, vec![("event_id", ids)]);
            }),
            "column 'user_id' is missing",
        ),
        (
            "mistyped.parquet",
            Box::new(|p: &Path| {
                let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
                let i = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
                write_parquet(
                    p,
                    vec![
                        ("event_id", s("e1")),
                        ("user_id", s("u1")),
                        ("ts_ms", s("yesterday")),
                        ("kind", s("view")),
                        ("item_id", s("i")),
                        ("category", s("c")),
                        ("price_minor", i(1)),
                    ],
                );
            }),
            "column 'ts_ms' has type Utf8, expected Int64",
        ),
        (
            "corrupt.parquet",
            Box::new(|p: &Path| {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, b"PAR1 this is not really parquet PAR1").unwrap();
            }),
            "not a readable Parquet file",
        ),
    ];
    for (name, write, problem) in cases {
        let archive = dir.path().join(format!("archive-{name}"));
        write_archive(&archive, &events);
        write(&archive.join("tenant=acme/date=2026-01-01").join(name));
        let err = try_run(&archive, &views).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(name) && text.contains(problem),
            "{name}: {text}"
        );
        assert_nothing_published(&views).await;
    }
}

/// Expected O_p when `removed` offsets are missing: the last offset before
/// the first hole of each partition.
fn contiguous(events: &[weft_core::generator::Sequenced]) -> BTreeMap<i32, i64> {
    let mut by_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for s in events {
        by_partition.entry(s.partition).or_default().push(s.offset);
    }
    by_partition
        .into_iter()
        .map(|(p, mut offsets)| {
            offsets.sort_unstable();
            let mut next = 0;
            for o in offsets {
                if o != next {
                    break;
                }
                next += 1;
            }
            (p, next - 1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boundary_stops_at_the_first_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(5, 40_000, 1_500);
    write_archive(&archive, &events);
    // Lose one file in the middle of the archive: a hole in several partitions.
    let files = list_files(&archive).unwrap();
    let lost = &files[files.len() / 2];
    let lost_rows: std::collections::HashSet<(i32, i64)> = read_file(lost)
        .unwrap()
        .iter()
        .map(|s| (s.partition, s.offset))
        .collect();
    std::fs::remove_file(lost).unwrap();
    let present: Vec<_> = events
        .iter()
        .filter(|s| !lost_rows.contains(&(s.partition, s.offset)))
        .cloned()
        .collect();
    let boundary = contiguous(&present);
    let summary = try_run(&archive, &views).await.unwrap();
    assert_eq!(summary.manifest.boundary.offsets, boundary);
    assert_eq!(
        summary.manifest.boundary.source,
        weft_view::BoundarySource::Contiguity
    );
    let included: Vec<_> = present
        .into_iter()
        .filter(|s| s.offset <= boundary[&s.partition])
        .collect();
    assert!(
        included.len() < events.len() - lost_rows.len(),
        "events past a gap are left out"
    );
    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    assert_view_equals_reference(&view, &by_user(&included), &query_times(&included));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archiver_state_is_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let events = generated_events(6, 30_000, 1_000);
    // The archiver committed up to about two thirds of each partition; the
    // rest stands for files of an uncommitted flush. Holes below the
    // committed offsets (dead-lettered records) are not gaps.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for s in &events {
        let e = ends.entry(s.partition).or_default();
        *e = (*e).max(s.offset + 1);
    }
    let state = ArchiverState {
        flush: 7,
        offsets: ends.iter().map(|(p, end)| (*p, end * 2 / 3)).collect(),
    };
    let state_dir = archive.join(ARCHIVER_STATE_DIR);
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(
        state_dir.join(ARCHIVER_STATE_FILE),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    // One low offset is missing: a dead-lettered record, not a gap.
    let hole = events.iter().find(|s| s.offset == 10).unwrap().clone();
    let kept: Vec<_> = events
        .iter()
        .filter(|s| (s.partition, s.offset) != (hole.partition, hole.offset))
        .cloned()
        .collect();
    write_archive(&archive, &kept);

    let summary = try_run(&archive, &views).await.unwrap();
    let m = &summary.manifest;
    assert_eq!(
        m.boundary.source,
        weft_view::BoundarySource::ArchiverState { flush: 7 }
    );
    for (p, next) in &state.offsets {
        assert_eq!(m.boundary_of(*p), next - 1);
    }
    let included: Vec<_> = kept
        .into_iter()
        .filter(|s| s.offset < state.offsets[&s.partition])
        .collect();
    assert_eq!(m.counts.rows, included.len() as u64);
    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    assert_view_equals_reference(&view, &by_user(&included), &query_times(&included));
}

/// An archive partly written before `_ingest_ms` existed (every other file
/// without the column) runs, and its view equals the reference for every
/// user: the fold reads no arrival time, and the scan fills the old files'
/// column with nulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_before_the_arrival_column_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let events = generated_events(5, 20_000, 500);
    write_archive(&archive, &events);
    let files = list_files(&archive).unwrap();
    assert!(files.len() >= 4, "{} files", files.len());
    for path in files.iter().step_by(2) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let index = batches[0]
            .schema()
            .index_of(weft_core::archive::INGEST_COLUMN)
            .unwrap();
        let keep: Vec<usize> = (0..batches[0].num_columns())
            .filter(|&c| c != index)
            .collect();
        let old: Vec<RecordBatch> = batches.iter().map(|b| b.project(&keep).unwrap()).collect();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            old[0].schema(),
            None,
        )
        .unwrap();
        for b in &old {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }
    let views = dir.path().join("views");
    try_run(&archive, &views).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let view = open_current(&views, work.path()).await;
    assert_view_equals_reference(&view, &by_user(&events), &query_times(&events));
}
