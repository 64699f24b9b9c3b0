//! Batch views: format, store, publishing, reading.
//!
//! A view `vN` is a directory (or object prefix) `vNNNNNN/` holding
//! * `partials-<i>.sst`: RocksDB SST files, one entry per user: its
//!   [`weft_core::keys::user_prefix`] to every partial of the user grouped
//!   by feature ([`weft_core::keys::begin_group`]: feature position in the
//!   spec, then (bucket, [`weft_core::codec`] partial) newest first), each
//!   file sorted, together covering every user once (format 3; format 2,
//!   still read, packed each entry with its feature's name and buckets
//!   oldest first; format 1 had one key per feature and bucket);
//! * `recs.sst`: neighbour and popularity lists ([`crate::recs`]);
//! * `spec.toml`: the feature spec the view was computed with;
//! * `manifest.json`: [`Manifest`], written last.
//!
//! The store's `CURRENT` file names the published view. Publishing writes the
//! whole view first (locally in a staging directory renamed into place in one
//! step; on an object store, `manifest.json` created only-if-absent after
//! the data), then replaces `CURRENT` atomically, so a reader that goes
//! through `CURRENT` sees the old view or the new one, never a partial one.
//! Older views are kept (`keep`) for rollback ([`ViewStore::set_current`]).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rust_rocksdb::{DB, IngestExternalFileOptions, Options};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_core::FeatureSpec;
use weft_core::eval::{Profile, StoredPartials};
use weft_core::keys::{user_prefix, user_prefix_len};

use crate::recs::{Ranked, RecsConfig, decode_ranked, neighbours_key, popular_key};
use crate::source::{Boundary, Location};
use crate::{BatchError, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SPEC_FILE: &str = "spec.toml";
pub const CURRENT_FILE: &str = "CURRENT";
/// The view layout version; readers refuse others.
pub const VIEW_FORMAT: u32 = 3;
/// The oldest format this build still reads (format 2 packed each entry
/// with its feature's name, buckets oldest first).
pub const OLDEST_VIEW_FORMAT: u32 = 2;

/// What a view is: written last, read first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: u64,
    pub created_ms: i64,
    /// The feature spec's hash ([`FeatureSpec::hash`]): serving refuses to
    /// merge a view with speed state of another spec.
    pub spec_hash: String,
    /// Per partition the highest offset the view includes.
    pub boundary: Boundary,
    /// The archive it was computed from.
    pub archive: String,
    /// The newest event time folded (None: no events).
    pub max_event_ms: Option<i64>,
    pub counts: Counts,
    pub recs: RecsConfig,
    pub files: Vec<ViewFile>,
}

impl Manifest {
    /// `O_p` of a partition (-1: the view holds nothing of it).
    pub fn boundary_of(&self, partition: i32) -> i64 {
        self.boundary.offsets.get(&partition).copied().unwrap_or(-1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub archive_files: u64,
    /// Rows read within the boundary, duplicates included.
    pub rows: u64,
    pub duplicates: u64,
    /// Events folded (rows minus duplicates).
    pub events: u64,
    pub users: u64,
    pub partials: u64,
    pub items: u64,
    pub recs_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Partials,
    Recs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewFile {
    pub name: String,
    pub kind: FileKind,
    pub bytes: u64,
    pub entries: u64,
    pub sha256: String,
}

pub fn version_name(v: u64) -> String {
    format!("v{v:06}")
}

fn parse_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// SST options shared by the writer (batch job) and any reader.
fn user_prefix_of(key: &[u8]) -> &[u8] {
    &key[..user_prefix_len(key).unwrap_or(key.len())]
}

fn in_user_domain(key: &[u8]) -> bool {
    user_prefix_len(key).is_some()
}

/// The block cache every opened view shares (uncompressed blocks).
static BLOCK_CACHE: std::sync::OnceLock<rust_rocksdb::Cache> = std::sync::OnceLock::new();
/// Its size, settable before the first view opens.
static BLOCK_CACHE_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(1 << 30);

/// Sets the size of the block cache opened views share (default 1 GiB);
/// effective if called before the first view is opened.
pub fn set_block_cache_bytes(bytes: usize) {
    BLOCK_CACHE_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Options of view SST files, for writing and reading: LZ4 blocks, a bloom
/// filter on whole keys (recommendation lookups) and on user prefixes (a
/// profile lookup skips the files that lack the user), and the shared block
/// cache.
pub(crate) fn sst_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rust_rocksdb::DBCompressionType::Lz4);
    opts.set_prefix_extractor(rust_rocksdb::SliceTransform::create(
        "weft.user_prefix.v1",
        user_prefix_of,
        Some(in_user_domain),
    ));
    let mut table = rust_rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    table.set_block_cache(block_cache());
    opts.set_block_based_table_factory(&table);
    opts
}

fn block_cache() -> &'static rust_rocksdb::Cache {
    BLOCK_CACHE.get_or_init(|| {
        rust_rocksdb::Cache::new_lru_cache(
            BLOCK_CACHE_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        )
    })
}

/// What [`OpenedView::warm`] or [`OpenedView::hold_in_memory`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    pub entries: u64,
    /// Keys and values, uncompressed.
    pub bytes: u64,
    /// False when it stopped early: the block cache was nearly full, or the
    /// view is larger than the memory limit (nothing is held then).
    pub complete: bool,
}

/// Bytes per [`InMemory`] arena chunk.
const CHUNK: usize = 64 << 20;

/// Where one entry lives in an [`InMemory`] view.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    chunk: u32,
    at: u32,
    key_len: u32,
    value_len: u32,
}

/// A whole view's entries in memory: keys and values in 64 MiB chunks, and
/// a hash table of where each one is. A lookup is a hash and a probe, not a
/// RocksDB read (filters, index block, block cache).
#[derive(Debug, Default)]
struct InMemory {
    chunks: Vec<Vec<u8>>,
    slots: hashbrown::HashTable<Slot>,
}

impl InMemory {
    fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::default().hash_one(key)
    }

    fn bytes(&self, s: &Slot) -> &[u8] {
        let at = s.at as usize;
        let len = (s.key_len + s.value_len) as usize;
        &self.chunks[s.chunk as usize][at..at + len]
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        let len = key.len() + value.len();
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() + len > c.capacity())
        {
            self.chunks.push(Vec::with_capacity(CHUNK.max(len)));
        }
        let chunk = self.chunks.len() - 1;
        let buf = &mut self.chunks[chunk];
        let slot = Slot {
            hash: Self::hash(key),
            chunk: chunk as u32,
            at: buf.len() as u32,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        };
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        self.slots.insert_unique(slot.hash, slot, |s| s.hash);
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = Self::hash(key);
        let slot = self.slots.find(hash, |s| {
            s.hash == hash && s.key_len as usize == key.len() && &self.bytes(s)[..key.len()] == key
        })?;
        Some(&self.bytes(slot)[key.len()..])
    }
}

/// Size and SHA-256 of a written file.
pub(crate) fn describe(path: &Path, kind: FileKind, entries: u64) -> Result<ViewFile> {
    let mut f = File::open(path).map_err(BatchError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(BatchError::io(path))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(ViewFile {
        name: path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string(),
        kind,
        bytes,
        entries,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(BatchError::io(path))?;
    f.write_all(bytes).map_err(BatchError::io(path))?;
    f.sync_all().map_err(BatchError::io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BatchError::io(dir))
}

/// A directory a job writes a view into before publishing it. Removed on
/// drop unless published.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    published: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published && self._temp.is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where views are published: a local directory or an object-store URL.
#[derive(Debug, Clone)]
pub struct ViewStore {
    loc: Location,
}

impl ViewStore {
    /// Opens a view store, creating a local directory if it is missing.
    pub fn open(location: &str) -> Result<ViewStore> {
        Ok(ViewStore {
            loc: Location::parse(location, false)?,
        })
    }

    pub fn display(&self) -> &str {
        &self.loc.display
    }

    fn err(&self, problem: impl Into<String>) -> BatchError {
        BatchError::View {
            store: self.loc.display.clone(),
            problem: problem.into(),
        }
    }

    /// A fresh staging directory: inside a local store (so publishing is a
    /// rename), or a temporary directory for a remote one.
    pub fn staging(&self) -> Result<Staging> {
        match &self.loc.local {
            Some(root) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let dir = root.join(format!(".staging-{}-{nanos}", std::process::id()));
                fs::create_dir_all(&dir).map_err(BatchError::io(&dir))?;
                Ok(Staging {
                    dir,
                    _temp: None,
                    published: false,
                })
            }
            None => {
                let temp = tempfile::tempdir().map_err(BatchError::io(std::env::temp_dir()))?;
                Ok(Staging {
                    dir: temp.path().to_path_buf(),
                    _temp: Some(temp),
                    published: false,
                })
            }
        }
    }

    /// Published views (those with a manifest), oldest first.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        let prefix = self.loc.prefix().clone();
        let metas: Vec<_> = self.loc.store.list(Some(&prefix)).try_collect().await?;
        let mut out: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.prefix_match(&prefix)?.collect();
                match parts.as_slice() {
                    [dir, file] if file.as_ref() == MANIFEST_FILE => parse_version(dir.as_ref()),
                    _ => None,
                }
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The published view's version (None: nothing published yet).
    pub async fn current(&self) -> Result<Option<u64>> {
        match self.loc.store.get(&self.loc.child(CURRENT_FILE)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let text = String::from_utf8_lossy(&bytes);
                parse_version(text.trim())
                    .map(Some)
                    .ok_or_else(|| self.err(format!("{CURRENT_FILE} holds '{}'", text.trim())))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn manifest(&self, version: u64) -> Result<Manifest> {
        let path = self
            .loc
            .child(&format!("{}/{MANIFEST_FILE}", version_name(version)));
        let bytes = match self.loc.store.get(&path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.err(format!("view {} does not exist", version_name(version))));
            }
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(format!("{path}: not a view manifest: {e}")))?;
        if !(OLDEST_VIEW_FORMAT..=VIEW_FORMAT).contains(&manifest.format) {
            return Err(self.err(format!(
                "{path}: view format {} is not supported (this build reads {OLDEST_VIEW_FORMAT} to {VIEW_FORMAT})",
                manifest.format
            )));
        }
        Ok(manifest)
    }

    /// Publishes a staged view as the next version and makes it current;
    /// then deletes all but the newest `keep` views (never the current one).
    /// Returns the version.
    pub async fn publish(
        &self,
        mut staging: Staging,
        mut manifest: Manifest,
        keep: usize,
    ) -> Result<u64> {
        let version = match &self.loc.local {
            Some(root) => loop {
                let dirs = fs::read_dir(root).map_err(BatchError::io(root))?;
                let highest = dirs
                    .filter_map(|d| parse_version(d.ok()?.file_name().to_str()?))
                    .max()
                    .unwrap_or(0);
                manifest.version = highest + 1;
                let bytes =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| self.err(e.to_string()))?;
                write_synced(&staging.dir.join(MANIFEST_FILE), &bytes)?;
                for entry in fs::read_dir(&staging.dir).map_err(BatchError::io(&staging.dir))? {
                    let path = entry.map_err(BatchError::io(&staging.dir))?.path();
                    File::open(&path)
                        .and_then(|f| f.sync_all())
                        .map_err(BatchError::io(&path))?;
                }
                sync_dir(&staging.dir)?;
                let target = root.join(version_name(manifest.version));
                match fs::rename(&staging.dir, &target) {
                    Ok(()) => {
                        staging.published = true;
                        sync_dir(root)?;
                        break manifest.version;
                    }
                    // Another job took this version: take the next one.
                    Err(e) if target.exists() => {
                        tracing::warn!(error = %e, "view {} exists; retrying", target.display());
                    }
                    Err(e) => return Err(BatchError::io(&target)(e)),
                }
            },
            None => {
                let highest = self.versions().await?.last().copied().unwrap_or(0);
                manifest.version = highest + 1;
                let dir = version_name(manifest.version);
                for entry in fs::read_dir(&staging.dir).map_err(BatchError::io(&staging.dir))? {
                    let path = entry.map_err(BatchError::io(&staging.dir))?.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    self.upload(&path, &self.loc.child(&format!("{dir}/{name}")))
                        .await?;
                }
                let bytes =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| self.err(e.to_string()))?;
                let put = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.loc
                    .store
                    .put_opts(
                        &self.loc.child(&format!("{dir}/{MANIFEST_FILE}")),
                        bytes.into(),
                        put,
                    )
                    .await
                    .map_err(|e| self.err(format!("publishing {dir}: {e}")))?;
                manifest.version
            }
        };
        self.set_current(version).await?;
        self.prune(keep).await?;
        Ok(version)
    }

    async fn upload(&self, from: &Path, to: &ObjPath) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut writer = object_store::buffered::BufWriter::new(self.loc.store.clone(), to.clone());
        let mut f = File::open(from).map_err(BatchError::io(from))?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).map_err(BatchError::io(from))?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|e| self.err(format!("uploading {}: {e}", from.display())))?;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| self.err(format!("uploading {}: {e}", from.display())))
    }

    /// Makes `version` the published view (also: rollback). It must exist.
    pub async fn set_current(&self, version: u64) -> Result<()> {
        self.manifest(version).await?;
        let text = format!("{}\n", version_name(version));
        match &self.loc.local {
            Some(root) => {
                let tmp = root.join(format!(".{CURRENT_FILE}.tmp"));
                write_synced(&tmp, text.as_bytes())?;
                let path = root.join(CURRENT_FILE);
                fs::rename(&tmp, &path).map_err(BatchError::io(&path))?;
                sync_dir(root)
            }
            None => {
                self.loc
                    .store
                    .put(&self.loc.child(CURRENT_FILE), PutPayload::from(text))
                    .await?;
                Ok(())
            }
        }
    }

    /// Deletes all but the newest `keep` views, never the current one.
    pub async fn prune(&self, keep: usize) -> Result<Vec<u64>> {
        let current = self.current().await?;
        let versions = self.versions().await?;
        let doomed: Vec<u64> = versions
            .iter()
            .rev()
            .skip(keep.max(1))
            .copied()
            .filter(|v| Some(*v) != current)
            .collect();
        for v in &doomed {
            match &self.loc.local {
                Some(root) => {
                    let dir = root.join(version_name(*v));
                    // The manifest goes first, so a half-deleted view is
                    // never listed as published.
                    fs::remove_file(dir.join(MANIFEST_FILE)).map_err(BatchError::io(&dir))?;
                    fs::remove_dir_all(&dir).map_err(BatchError::io(&dir))?;
                }
                None => {
                    let prefix = self.loc.child(&version_name(*v));
                    self.loc
                        .store
                        .delete(
                            &self
                                .loc
                                .child(&format!("{}/{MANIFEST_FILE}", version_name(*v))),
                        )
                        .await?;
                    let objects: Vec<_> = self.loc.store.list(Some(&prefix)).try_collect().await?;
                    for o in objects {
                        self.loc.store.delete(&o.location).await?;
                    }
                }
            }
        }
        Ok(doomed)
    }

    /// A local directory holding the view's files: the view itself for a
    /// local store, a download into `cache` otherwise.
    async fn fetch(&self, version: u64, manifest: &Manifest, cache: &Path) -> Result<PathBuf> {
        let name = version_name(version);
        if let Some(root) = &self.loc.local {
            return Ok(root.join(name));
        }
        let dir = cache.join(format!("download-{name}"));
        fs::create_dir_all(&dir).map_err(BatchError::io(&dir))?;
        let names = manifest
            .files
            .iter()
            .map(|f| f.name.clone())
            .chain([SPEC_FILE.to_string()]);
        for file in names {
            let got = self
                .loc
                .store
                .get(&self.loc.child(&format!("{name}/{file}")))
                .await?;
            let mut stream = got.into_stream();
            let path = dir.join(&file);
            let mut out = File::create(&path).map_err(BatchError::io(&path))?;
            while let Some(chunk) = stream.try_next().await? {
                out.write_all(&chunk).map_err(BatchError::io(&path))?;
            }
        }
        Ok(dir)
    }
}

/// A view opened for reading: its SST files ingested into a private RocksDB
/// under a work directory (hard links, so no copy on a local store).
pub struct OpenedView {
    manifest: Manifest,
    spec: Arc<FeatureSpec>,
    db: DB,
    db_path: PathBuf,
    /// The whole view, once [`OpenedView::hold_in_memory`] read it: then
    /// every lookup is answered from here.
    memory: std::sync::OnceLock<InMemory>,
}

impl std::fmt::Debug for OpenedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedView")
            .field("version", &self.manifest.version)
            .field("db", &self.db_path)
            .finish_non_exhaustive()
    }
}

impl OpenedView {
    /// Opens `version` (None: the current one) into `work_dir`, which must
    /// not be shared with another open view. With `verify`, every file's
    /// checksum is checked (sizes always are).
    pub async fn open(
        store: &ViewStore,
        version: Option<u64>,
        work_dir: &Path,
        verify: bool,
    ) -> Result<OpenedView> {
        let version = match version {
            Some(v) => v,
            None => store
                .current()
                .await?
                .ok_or_else(|| store.err("no view has been published yet"))?,
        };
        let manifest = store.manifest(version).await?;
        fs::create_dir_all(work_dir).map_err(BatchError::io(work_dir))?;
        let dir = store.fetch(version, &manifest, work_dir).await?;
        let spec_path = dir.join(SPEC_FILE);
        let text = fs::read_to_string(&spec_path).map_err(BatchError::io(&spec_path))?;
        let spec = FeatureSpec::parse(&text).map_err(|e| BatchError::BadFile {
            file: spec_path.display().to_string(),
            problem: e.to_string(),
        })?;
        if spec.hash() != manifest.spec_hash {
            return Err(store.err(format!(
                "{}: spec hash {} does not match the manifest's {}",
                spec_path.display(),
                spec.hash(),
                manifest.spec_hash
            )));
        }
        let db_path = work_dir.join(format!("{}.db", version_name(version)));
        if db_path.exists() {
            fs::remove_dir_all(&db_path).map_err(BatchError::io(&db_path))?;
        }
        let mut opts = sst_options();
        opts.create_if_missing(true);
        let db = DB::open(&opts, &db_path)
            .map_err(BatchError::rocks(format!("opening {}", db_path.display())))?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        for file in &manifest.files {
            let path = dir.join(&file.name);
            let found = if verify {
                describe(&path, file.kind, file.entries)?
            } else {
                let bytes = fs::metadata(&path).map_err(BatchError::io(&path))?.len();
                ViewFile {
                    bytes,
                    sha256: file.sha256.clone(),
                    ..file.clone()
                }
            };
            if found.bytes != file.bytes || found.sha256 != file.sha256 {
                return Err(BatchError::BadFile {
                    file: path.display().to_string(),
                    problem: format!(
                        "{} bytes, sha256 {}; the manifest says {} bytes, sha256 {}",
                        found.bytes, found.sha256, file.bytes, file.sha256
                    ),
                });
            }
            // Ingest a hard link (or a copy across file systems): RocksDB
            // takes ownership of what it ingests, the view stays immutable.
            let link = db_path.join(format!("ingest-{}", file.name));
            if fs::hard_link(&path, &link).is_err() {
                fs::copy(&path, &link).map_err(BatchError::io(&link))?;
            }
            db.ingest_external_file_opts(&ingest, vec![&link])
                .map_err(BatchError::rocks(format!("ingesting {}", path.display())))?;
        }
        Ok(OpenedView {
            manifest,
            spec: Arc::new(spec),
            db,
            db_path,
            memory: std::sync::OnceLock::new(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Every partial of one user: the user's packed value, from memory if
    /// the view is held there, else one point lookup (bloom-filtered).
    /// With `as_of`, only those the windows cover then
    /// ([`StoredPartials::at`]).
    pub fn user_partials(
        &self,
        tenant: &str,
        user: &str,
        as_of: Option<i64>,
    ) -> Result<StoredPartials<'_>> {
        let key = user_prefix(tenant, user);
        let mut out = StoredPartials::at(&self.spec, as_of);
        let bad = |problem: String| BatchError::BadFile {
            file: self.db_path.display().to_string(),
            problem: format!("{tenant}/{user}: {problem}"),
        };
        if let Some(memory) = self.memory.get() {
            if let Some(value) = memory.get(&key) {
                self.push_value(&mut out, value).map_err(bad)?;
            }
            return Ok(out);
        }
        let Some(value) = self
            .db
            .get_pinned(&key)
            .map_err(BatchError::rocks("reading partials"))?
        else {
            return Ok(out);
        };
        self.push_value(&mut out, &value).map_err(bad)?;
        Ok(out)
    }

    /// Adds one user's value, as this view's format stores it, to `out`.
    pub fn push_value(&self, out: &mut StoredPartials<'_>, value: &[u8]) -> Result<(), String> {
        match self.manifest.format {
            2 => out.push_packed(value),
            _ => out.push_grouped(value),
        }
    }

    /// Reads the whole view into memory, if its keys and values come to at
    /// most `limit` bytes; from then on every lookup is a hash probe instead
    /// of a RocksDB read. A larger view is left as it was (`complete`
    /// false). Holding it costs its keys and values plus about 24-55 bytes
    /// an entry; the view's blocks are not cached on the way.
    pub fn hold_in_memory(&self, limit: u64) -> Result<Warmed> {
        if let Some(m) = self.memory.get() {
            return Ok(Warmed {
                entries: m.slots.len() as u64,
                bytes: m.chunks.iter().map(|c| c.len() as u64).sum(),
                complete: true,
            });
        }
        let mut memory = InMemory::default();
        let held = self.scan(false, "reading into memory", |key, value, read| {
            if read.bytes > limit {
                return false;
            }
            memory.insert(key, value);
            true
        })?;
        if held.complete {
            let _ = self.memory.set(memory);
        }
        Ok(held)
    }

    /// Reads the whole view once, in key order, so its blocks are in the
    /// shared block cache before the first request needs them: without
    /// this, the first minutes after a switch pay a file read and a
    /// decompression on most lookups. Stops once the cache is nearly full
    /// (a view larger than the cache is warmed in part). Returns the
    /// entries and bytes read.
    pub fn warm(&self) -> Result<Warmed> {
        let cache = block_cache();
        let full = cache.get_capacity() / 10 * 9;
        self.scan(true, "warming", |_, _, read| {
            read.entries % 4096 != 0 || cache.get_usage() < full
        })
    }

    /// Visits every entry in key order with what was read so far (this
    /// entry included) until `f` returns false (`complete` false then).
    fn scan(
        &self,
        fill_cache: bool,
        what: &str,
        mut f: impl FnMut(&[u8], &[u8], &Warmed) -> bool,
    ) -> Result<Warmed> {
        let mut ro = rust_rocksdb::ReadOptions::default();
        ro.fill_cache(fill_cache);
        ro.set_readahead_size(4 << 20);
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek_to_first();
        let mut read = Warmed::default();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            read.entries += 1;
            read.bytes += (key.len() + value.len()) as u64;
            if !f(key, value, &read) {
                return Ok(read);
            }
            it.next();
        }
        it.status().map_err(BatchError::rocks(format!(
            "{what} {}",
            self.db_path.display()
        )))?;
        read.complete = true;
        Ok(read)
    }

    /// A user's profile from the view alone, as of `t_ms`.
    pub fn profile(&self, tenant: &str, user: &str, t_ms: i64) -> Result<Profile> {
        Ok(self.user_partials(tenant, user, Some(t_ms))?.evaluate(t_ms))
    }

    fn ranked(&self, key: &[u8]) -> Result<Ranked> {
        let decode = |v: &[u8]| {
            decode_ranked(v).map_err(|problem| BatchError::BadFile {
                file: self.db_path.display().to_string(),
                problem,
            })
        };
        if let Some(memory) = self.memory.get() {
            return memory.get(key).map_or_else(|| Ok(Vec::new()), decode);
        }
        match self
            .db
            .get_pinned(key)
            .map_err(BatchError::rocks("reading recs"))?
        {
            None => Ok(Vec::new()),
            Some(v) => decode(&v),
        }
    }

    /// An item's neighbours, best first.
    pub fn neighbours(&self, tenant: &str, item: &str) -> Result<Ranked> {
        self.ranked(&neighbours_key(tenant, item))
    }

    /// The most popular items of a tenant (`category` None) or of one of its
    /// categories.
    pub fn popular(&self, tenant: &str, category: Option<&str>) -> Result<Ranked> {
        self.ranked(&popular_key(tenant, category.unwrap_or("")))
    }
}

/// Watches a view store from a background thread: calls `on_new` with each
/// newly published view whose spec hash is `spec_hash` (the current one at
/// start included), every `every`. Views of another spec are logged and
/// skipped. The thread ends when `on_new` returns false.
pub fn spawn_watcher(
    store: ViewStore,
    spec_hash: String,
    every: std::time::Duration,
    mut on_new: impl FnMut(&Manifest) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weft-view-watch".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "view watcher: no runtime");
                    return;
                }
            };
            let mut seen: Option<u64> = None;
            loop {
                let found = rt.block_on(async {
                    match store.current().await? {
                        Some(v) if Some(v) != seen => Ok(Some(store.manifest(v).await?)),
                        _ => Ok::<_, BatchError>(None),
                    }
                });
                match found {
                    Ok(Some(m)) => {
                        seen = Some(m.version);
                        if m.spec_hash != spec_hash {
                            tracing::error!(
                                view = %version_name(m.version),
                                view_spec = %m.spec_hash,
                                spec = %spec_hash,
                                "ignoring a batch view of another feature spec"
                            );
                        } else if !on_new(&m) {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, store = %store.display(), "view watcher"),
                }
                std::thread::sleep(every);
            }
        })
}
