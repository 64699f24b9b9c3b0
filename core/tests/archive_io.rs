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
    for e in Generator::new(cfg).unwrap() {
        let s = seq.assign(e);
        writer.push(&s).unwrap();
        expected.push(s);
    }
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
    assert_eq!(archive_schema().fields().len(), 11);
}
