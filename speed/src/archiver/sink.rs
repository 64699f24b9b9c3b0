//! Where the archiver writes: a local directory (files fsynced and renamed
//! into place) or an object store such as S3 (each object uploaded whole:
//! one PUT, or a multipart upload completed only after its last part, so an
//! object is visible whole or not at all). Either way the commit record
//! `_archiver/state.json` is written after the flush's files.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use tokio::io::AsyncWriteExt;
use weft_config::S3Section;
use weft_core::archive::{
    ArchiverState, AtomicParquetFile, archive_schema, list_files, partition_dir, partition_rel,
    writer_properties,
};
use weft_view::Location;

use super::{STATE_DIR, STATE_FILE, flush_of};
use crate::SpeedError;

/// The archive the archiver writes.
pub(crate) enum Sink {
    Local(PathBuf),
    Remote {
        loc: Box<Location>,
        rt: tokio::runtime::Runtime,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpeedError + '_ {
    move |source| SpeedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Sink {
    /// Opens the archive at `root` (a directory, created if missing, or a
    /// `file://` / `s3://` URL).
    pub(crate) fn open(root: &str, s3: &S3Section) -> Result<Sink, SpeedError> {
        let loc = Location::parse(root, false, s3)
            .map_err(|e| SpeedError::Store(format!("archive {root}: {e}")))?;
        Ok(match &loc.local {
            Some(dir) => Sink::Local(dir.clone()),
            None => Sink::Remote {
                rt: weft_core::runtime::current_thread().map_err(io(Path::new(root)))?,
                loc: Box::new(loc),
            },
        })
    }

    fn remote_err(
        loc: &Location,
        doing: &str,
    ) -> impl FnOnce(object_store::Error) -> SpeedError + use<> {
        let context = format!("archive {}: {doing}", loc.display);
        move |e| SpeedError::Store(format!("{context}: {e}"))
    }

    /// The commit record (absent: nothing archived yet).
    pub(crate) fn read_state(&self) -> Result<ArchiverState, SpeedError> {
        match self {
            Sink::Local(root) => read_state(root),
            Sink::Remote { loc, rt } => {
                let path = loc.child(&format!("{STATE_DIR}/{STATE_FILE}"));
                let got = rt.block_on(async {
                    match loc.store.get(&path).await {
                        Ok(got) => got.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                match got.map_err(Self::remote_err(loc, &format!("reading {path}")))? {
                    Some(bytes) => serde_json::from_slice(&bytes)
                        .map_err(|e| SpeedError::Store(format!("{}/{path}: {e}", loc.display))),
                    None => Ok(ArchiverState::default()),
                }
            }
        }
    }

    /// Replaces the commit record (atomically: rename, or one PUT).
    pub(crate) fn write_state(&self, state: &ArchiverState) -> Result<(), SpeedError> {
        let bytes =
            serde_json::to_vec_pretty(state).map_err(|e| SpeedError::Store(e.to_string()))?;
        match self {
            Sink::Local(root) => write_state(root, &bytes),
            Sink::Remote { loc, rt } => {
                let path = loc.child(&format!("{STATE_DIR}/{STATE_FILE}"));
                rt.block_on(loc.store.put(&path, bytes.into()))
                    .map(|_| ())
                    .map_err(Self::remote_err(loc, &format!("writing {path}")))
            }
        }
    }

    /// Deletes the files of flushes the state does not record (a crash
    /// between writing them and the state), and stale local temporaries.
    /// (An upload cut short leaves no object; its parts are the bucket's
    /// lifecycle rule's to expire.)
    pub(crate) fn remove_uncommitted(&self, state: &ArchiverState) -> Result<usize, SpeedError> {
        match self {
            Sink::Local(root) => remove_uncommitted(root, state),
            Sink::Remote { loc, rt } => rt.block_on(async {
                let listing = Self::remote_err(loc, "listing");
                let objects: Vec<_> = loc
                    .store
                    .list(Some(loc.prefix()))
                    .try_collect()
                    .await
                    .map_err(listing)?;
                let mut removed = 0;
                for o in objects {
                    let name = o.location.filename().unwrap_or_default();
                    if flush_of(Path::new(name)).is_some_and(|n| n > state.flush) {
                        loc.store
                            .delete(&o.location)
                            .await
                            .map_err(Self::remote_err(loc, &format!("deleting {}", o.location)))?;
                        removed += 1;
                    }
                }
                Ok(removed)
            }),
        }
    }

    /// Writes one file of a flush, whole or not at all.
    pub(crate) fn write_file(
        &self,
        tenant: &str,
        day: i64,
        name: &str,
        batch: &RecordBatch,
    ) -> Result<(), SpeedError> {
        let store_err = |e: &dyn std::fmt::Display| SpeedError::Store(e.to_string());
        match self {
            Sink::Local(root) => {
                let dest = partition_dir(root, tenant, day).join(name);
                let mut file = AtomicParquetFile::create(dest).map_err(|e| store_err(&e))?;
                file.write(batch).map_err(|e| store_err(&e))?;
                file.commit().map_err(|e| store_err(&e))?;
                Ok(())
            }
            Sink::Remote { loc, rt } => {
                let path = loc.child(&format!("{}/{name}", partition_rel(tenant, day)));
                let mut bytes = Vec::new();
                let mut writer =
                    ArrowWriter::try_new(&mut bytes, archive_schema(), Some(writer_properties()))
                        .map_err(|e| store_err(&e))?;
                writer.write(batch).map_err(|e| store_err(&e))?;
                writer.close().map_err(|e| store_err(&e))?;
                // Small files go up in one PUT; larger ones in parts of a
                // multipart upload, completed only by `shutdown`.
                rt.block_on(async {
                    let mut up =
                        object_store::buffered::BufWriter::new(loc.store.clone(), path.clone());
                    if let Err(e) = up.write_all(&bytes).await {
                        let _ = up.abort().await;
                        return Err(e);
                    }
                    up.shutdown().await
                })
                .map_err(|e| {
                    SpeedError::Store(format!("archive {}: uploading {path}: {e}", loc.display))
                })
            }
        }
    }
}

/// Reads the state file of a local archive (absent: nothing archived yet).
pub fn read_state(root: &Path) -> Result<ArchiverState, SpeedError> {
    let path = root.join(STATE_DIR).join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| SpeedError::Store(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ArchiverState::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_state(root: &Path, bytes: &[u8]) -> Result<(), SpeedError> {
    let dir = root.join(STATE_DIR);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(".state.json.tmp");
    let path = dir.join(STATE_FILE);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))
}

fn remove_uncommitted(root: &Path, state: &ArchiverState) -> Result<usize, SpeedError> {
    if !root.exists() {
        return Ok(0);
    }
    let mut removed = remove_temporaries(root)?;
    let files = list_files(root).map_err(|e| SpeedError::Store(e.to_string()))?;
    for f in files {
        if flush_of(&f).is_some_and(|n| n > state.flush) {
            fs::remove_file(&f).map_err(io(&f))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes hidden `.<name>.tmp` files a killed writer left behind.
fn remove_temporaries(dir: &Path) -> Result<usize, SpeedError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            removed += remove_temporaries(&path)?;
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}
