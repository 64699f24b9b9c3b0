//! Weft's batch layer: recomputes every user's profile from the Parquet
//! archive with DataFusion and publishes immutable, versioned batch views.
//!
//! * [`source`]: where the archive is (local path or `s3://`/`gs://` URL),
//!   which files it holds (each footer checked before anything runs), and
//!   the merge boundary: per Kafka partition the highest offset `O_p` up to
//!   which the archive is contiguous.
//! * [`job`]: the run. DataFusion scans the archive (projection and the
//!   boundary pushed into the scan), hash-partitions rows by (tenant, user)
//!   and sorts each partition by (tenant, user, partition, offset) under a
//!   bounded, spilling memory pool; each partition is then folded user by
//!   user with `weft_core`'s aggregates (the same code the speed layer and
//!   the reference share) straight into a sorted SST file.
//! * [`recs`]: item-to-item neighbours from co-occurrence and item
//!   popularity per tenant and category, for recommendations.
//! * [`view`]: the view format (SST files + manifest), the view store, atomic
//!   publishing with retention and rollback, and opening a view for reads.
//! * [`export`]: one Parquet row per user, one column per feature.
//!
//! `docs/batch.md` is the user guide; `docs/semantics.md` the semantics.

pub mod export;
pub mod job;
pub mod recs;
pub mod source;
pub mod view;

mod columns;
mod group;

use std::path::PathBuf;

pub use job::{BatchConfig, JobProgress, JobSummary, run};
pub use view::{Manifest, OpenedView, ViewStore};

/// Why a batch run or a view operation failed. Every variant names the file,
/// key or URL concerned. A failed run publishes nothing.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("archive {0} does not exist")]
    MissingArchive(String),
    #[error("archive {0} holds no Parquet files")]
    EmptyArchive(String),
    #[error("{file}: {problem}")]
    BadFile { file: String, problem: String },
    #[error("bad argument: {0}")]
    Argument(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("view store {store}: {problem}")]
    View { store: String, problem: String },
    #[error("RocksDB {context}: {source}")]
    Rocks {
        context: String,
        #[source]
        source: rust_rocksdb::Error,
    },
}

impl BatchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BatchError {
        let path = path.into();
        move |source| BatchError::Io { path, source }
    }

    pub(crate) fn rocks(
        context: impl Into<String>,
    ) -> impl FnOnce(rust_rocksdb::Error) -> BatchError {
        let context = context.into();
        move |source| BatchError::Rocks { context, source }
    }
}

pub type Result<T, E = BatchError> = std::result::Result<T, E>;
