//! The archive writer's files read back exactly, and appear atomically.

use weft_core::archive::{ArchiveWriter, archive_schema, list_files, read_archive, read_file};
use weft_core::generator::{GenConfig, Generator, Sequencer};

#[test]
fn generated_archive_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig::new(7, 30_000, 3, 2_000);
    let mut seq = Sequencer::new(cfg.partitions);
    let mut writer = ArchiveWriter::new(dir.path(), "gen", 5_000);
    let mut expected = Vec::new();
    let mut events = Generator::new(cfg).unwrap();
    while let Some(e) = events.next() {
        let s = seq.assign_at(e, events.last_arrival_ms());
        writer.push(&s).unwrap();
        expected.push(s);
    }
    // Arrival follows the event; late events (1 %) arrive minutes to days
    // after it.
    assert!(expected.iter().all(|s| s.ingest_ms >= s.event.ts_ms));
    let late = expected
        .iter()
        .filter(|s| s.ingest_ms - s.event.ts_ms >= 60_000)
        .count();
    assert!(late > 100 && late < 1_000, "{late} late of 30k");
    let files = writer.finish().unwrap();
    assert_eq!(list_files(dir.path()).unwrap(), {
        let mut f = files.clone();
        f.sort();
        f
    });
    expected.sort_by_key(|s| (s.partition, s.offset));
    let read = read_archive(dir.path()).unwrap();
    assert_eq!(read.len(), expected.len());
    assert_eq!(read, expected);
    // Hive layout: tenant=/date= directories, nothing else.
    for f in &files {
        let rel = f
            .strip_prefix(dir.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(rel.starts_with("tenant="), "{rel}");
        assert!(rel.contains("/date=20"), "{rel}");
    }
}

#[test]
fn unfinished_files_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let mut seq = Sequencer::new(4);
    let mut writer = ArchiveWriter::new(dir.path(), "gen", 1_000_000);
    for e in Generator::new(GenConfig::new(1, 2_000, 2, 100)).unwrap() {
        writer.push(&seq.assign(e)).unwrap();
    }
    // Files still open are only hidden temporaries: no reader sees them.
    assert!(list_files(dir.path()).unwrap().is_empty());
    assert!(read_archive(dir.path()).unwrap().is_empty());
    drop(writer);
    assert!(list_files(dir.path()).unwrap().is_empty());
}

#[test]
fn bad_files_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let day = dir.path().join("tenant=acme/date=2026-09-01");
    std::fs::create_dir_all(&day).unwrap();
    let path = day.join("broken.parquet");
    std::fs::write(&path, b"PAR1 not really").unwrap();
    let err = read_file(&path).unwrap_err().to_string();
    assert!(err.contains("broken.parquet"), "{err}");
    assert_eq!(archive_schema().fields().len(), 12);
}

/// A file written before `_ingest_ms` existed reads with the event time as
/// the arrival time.
#[test]
fn files_without_the_arrival_column_read_with_the_event_time() {
    use weft_core::archive::{ArchiveBatchBuilder, INGEST_COLUMN};
    use weft_core::time::date_of;
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = Generator::new(GenConfig::new(3, 200, 1, 20))
        .unwrap()
        .collect();
    let (tenant, date) = (all[0].tenant.clone(), date_of(all[0].ts_ms));
    let events: Vec<_> = all
        .into_iter()
        .filter(|e| e.tenant == tenant && date_of(e.ts_ms) == date)
        .collect();
    let day = dir.path().join(format!("tenant={tenant}/date={date}"));
    std::fs::create_dir_all(&day).unwrap();
    let mut builder = ArchiveBatchBuilder::default();
    assert!(!events.is_empty());
    for (i, e) in events.iter().enumerate() {
        builder.append(e, 0, i as i64, e.ts_ms + 5);
    }
    let batch = builder.finish();
    let index = batch.schema().index_of(INGEST_COLUMN).unwrap();
    let old = batch
        .project(
            &(0..batch.num_columns())
                .filter(|&c| c != index)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let path = day.join("old.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        old.schema(),
        None,
    )
    .unwrap();
    w.write(&old).unwrap();
    w.close().unwrap();
    let read = read_file(&path).unwrap();
    assert_eq!(read.len(), events.len());
    assert!(read.iter().all(|s| s.ingest_ms == s.event.ts_ms));
}
