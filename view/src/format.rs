//! The view format: what a view directory holds, its [`Manifest`] (with the
//! merge [`Boundary`] it records), file descriptions and the SST options
//! writers and readers share.
//!
//! A view `vN` is a directory (or object prefix) `vNNNNNN/` holding
//! * `partials-p<k>-<i>.sst`: RocksDB SST files, one entry per user: its
//!   [`weft_core::keys::user_prefix`] to every partial of the user grouped
//!   by feature ([`weft_core::keys::begin_group`]: feature position in the
//!   spec, then (bucket, [`weft_core::codec`] partial) newest first), each
//!   file sorted, together covering every user once. Each file holds the
//!   users of one Kafka partition `k` (the partition of their events, so
//!   the users a serving shard's speed layer consumes), folded by fold
//!   partition `i`; the manifest lists its `partition`, so a shard opens
//!   only its partitions' files (format 4; format 3, still read unsharded,
//!   had `partials-<i>.sst` files of every partition; format 2 packed each
//!   entry with its feature's name and buckets oldest first; format 1 had
//!   one key per feature and bucket);
//! * `recs.sst`: neighbour and popularity lists ([`crate::recs`]);
//! * `spec.toml`: the feature spec the view was computed with;
//! * `manifest.json`: [`Manifest`], written last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use rust_rocksdb::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_core::keys::user_prefix_len;

use crate::cache::BlockCache;
use crate::recs::RecsConfig;
use crate::{Result, ViewError};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SPEC_FILE: &str = "spec.toml";
pub const CURRENT_FILE: &str = "CURRENT";
/// The view layout version; readers refuse others.
pub const VIEW_FORMAT: u32 = 4;
/// The first format whose partials files are split by Kafka partition
/// (what a serving shard needs).
pub const SPLIT_VIEW_FORMAT: u32 = 4;
/// The oldest format this build still reads (format 2 packed each entry
/// with its feature's name, buckets oldest first).
pub const OLDEST_VIEW_FORMAT: u32 = 2;

/// What a view is: written last, read first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: u64,
    pub created_ms: i64,
    /// The feature spec's hash ([`weft_core::FeatureSpec::hash`]): serving refuses to
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
    /// Partials files: the Kafka partition whose users the file holds
    /// (format 4; absent before, and for the recommendation file, which
    /// every shard reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    pub bytes: u64,
    pub entries: u64,
    pub sha256: String,
}

/// How the boundary was determined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundarySource {
    /// From `_archiver/state.json`: everything below its offsets is archived
    /// (invalid records are in the dead-letter topic, not gaps).
    ArchiverState { flush: u64 },
    /// From the offsets present: per partition, the prefix from offset 0
    /// without a hole.
    Contiguity,
}

/// The merge boundary: per partition the highest offset `O_p` the view
/// includes (-1: none). Events above it are the speed layer's. (The batch
/// job computes it from the archive: `weft_batch::source`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    pub offsets: BTreeMap<i32, i64>,
    pub source: BoundarySource,
}

/// The directory name of view `v`: `v000042`.
pub fn version_name(v: u64) -> String {
    format!("v{v:06}")
}

pub(crate) fn parse_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn user_prefix_of(key: &[u8]) -> &[u8] {
    &key[..user_prefix_len(key).unwrap_or(key.len())]
}

fn in_user_domain(key: &[u8]) -> bool {
    user_prefix_len(key).is_some()
}

/// Options of view SST files, for writing and reading: LZ4 blocks, a bloom
/// filter on whole keys (recommendation lookups) and on user prefixes (a
/// profile lookup skips the files that lack the user), and, for readers,
/// the block cache they share (a writer passes None).
pub fn sst_options(cache: Option<&BlockCache>) -> Options {
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
    if let Some(cache) = cache {
        table.set_block_cache(cache.rocks());
    }
    opts.set_block_based_table_factory(&table);
    opts
}

/// Size and SHA-256 of a written file.
pub fn describe(path: &Path, kind: FileKind, entries: u64) -> Result<ViewFile> {
    let mut f = File::open(path).map_err(ViewError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ViewError::io(path))?;
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
        partition: None,
        bytes,
        entries,
        sha256: format!("{:x}", hasher.finalize()),
    })
}
