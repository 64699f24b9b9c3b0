//! [`OpenedView`]: a view opened for reading (profiles, neighbours,
//! popularity), optionally held in memory or warmed into the block cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_rocksdb::{DB, IngestExternalFileOptions};
use weft_config::PartitionSet;
use weft_core::FeatureSpec;
use weft_core::eval::{Profile, StoredPartials};
use weft_core::keys::user_prefix;

use crate::cache::BlockCache;
use crate::format::{
    Manifest, SPEC_FILE, SPLIT_VIEW_FORMAT, ViewFile, describe, sst_options, version_name,
};
use crate::memory::InMemory;
use crate::recs::{Ranked, decode_ranked, neighbours_key, popular_key};
use crate::store::ViewStore;
use crate::{Result, ViewError};

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

/// A view opened for reading: its SST files ingested into a private RocksDB
/// under a work directory (hard links, so no copy on a local store).
pub struct OpenedView {
    manifest: Manifest,
    spec: Arc<FeatureSpec>,
    db: DB,
    db_path: PathBuf,
    /// The block cache its reads go through (shared with other views).
    cache: BlockCache,
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
    /// checksum is checked (sizes always are). Its blocks are cached in
    /// `cache`, which views opened by one process usually share.
    pub async fn open(
        store: &ViewStore,
        version: Option<u64>,
        work_dir: &Path,
        verify: bool,
        cache: &BlockCache,
    ) -> Result<OpenedView> {
        OpenedView::open_partitions(store, version, work_dir, verify, cache, None).await
    }

    /// As [`OpenedView::open`], holding only the users of `partitions`
    /// (a serving shard's, an embedded reader's): only their partials
    /// files are fetched and opened, with the recommendation file. None:
    /// every partition. A view from before partials files were split by
    /// Kafka partition (format 3 and older) opens whole only: asked for a
    /// part of it, this fails naming its format.
    pub async fn open_partitions(
        store: &ViewStore,
        version: Option<u64>,
        work_dir: &Path,
        verify: bool,
        cache: &BlockCache,
        partitions: Option<&PartitionSet>,
    ) -> Result<OpenedView> {
        let version = match version {
            Some(v) => v,
            None => store
                .current()
                .await?
                .ok_or_else(|| store.err("no view has been published yet"))?,
        };
        let manifest = store.manifest(version).await?;
        let mut opened = manifest.clone();
        if let Some(partitions) = partitions {
            if manifest.format < SPLIT_VIEW_FORMAT {
                return Err(store.err(format!(
                    "{}: view format {} is not split by Kafka partition, so it cannot be \
                     opened for partitions {partitions} only (a shard needs format \
                     {SPLIT_VIEW_FORMAT} or later: publish a view with this build's weft batch run)",
                    version_name(version),
                    manifest.format
                )));
            }
            opened
                .files
                .retain(|f| f.partition.is_none_or(|p| partitions.contains(p)));
        }
        fs::create_dir_all(work_dir).map_err(ViewError::io(work_dir))?;
        let dir = store.fetch(version, &opened, work_dir).await?;
        let spec_path = dir.join(SPEC_FILE);
        let text = fs::read_to_string(&spec_path).map_err(ViewError::io(&spec_path))?;
        let spec = FeatureSpec::parse(&text).map_err(|e| ViewError::BadFile {
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
            fs::remove_dir_all(&db_path).map_err(ViewError::io(&db_path))?;
        }
        let mut opts = sst_options(Some(cache));
        opts.create_if_missing(true);
        let db = DB::open(&opts, &db_path)
            .map_err(ViewError::rocks(format!("opening {}", db_path.display())))?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        for file in &opened.files {
            let path = dir.join(&file.name);
            let found = if verify {
                describe(&path, file.kind, file.entries)?
            } else {
                let bytes = fs::metadata(&path).map_err(ViewError::io(&path))?.len();
                ViewFile {
                    bytes,
                    sha256: file.sha256.clone(),
                    ..file.clone()
                }
            };
            if found.bytes != file.bytes || found.sha256 != file.sha256 {
                return Err(ViewError::BadFile {
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
                fs::copy(&path, &link).map_err(ViewError::io(&link))?;
            }
            db.ingest_external_file_opts(&ingest, vec![&link])
                .map_err(ViewError::rocks(format!("ingesting {}", path.display())))?;
        }
        Ok(OpenedView {
            manifest,
            spec: Arc::new(spec),
            db,
            db_path,
            cache: cache.clone(),
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
        let bad = |problem: String| ViewError::BadFile {
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
            .map_err(ViewError::rocks("reading partials"))?
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
                entries: m.entries(),
                bytes: m.bytes_held(),
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
    /// block cache before the first request needs them: without
    /// this, the first minutes after a switch pay a file read and a
    /// decompression on most lookups. Stops once the cache is nearly full
    /// (a view larger than the cache is warmed in part). Returns the
    /// entries and bytes read.
    pub fn warm(&self) -> Result<Warmed> {
        let cache = &self.cache;
        let full = cache.capacity() / 10 * 9;
        self.scan(true, "warming", |_, _, read| {
            read.entries % 4096 != 0 || cache.usage() < full
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
        it.status().map_err(ViewError::rocks(format!(
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
            decode_ranked(v).map_err(|problem| ViewError::BadFile {
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
            .map_err(ViewError::rocks("reading recs"))?
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
