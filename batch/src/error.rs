//! [`BatchError`]: why a batch run or a view operation failed.

use std::path::PathBuf;

use weft_view::ViewError;

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
    /// A cluster run failed: the scheduler, and what it or an executor
    /// said.
    #[error("cluster {scheduler}: {problem}")]
    Cluster { scheduler: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The view format, the view store or an opened view
    /// ([`weft_view`]).
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("RocksDB {context}: {source}")]
    Rocks {
        context: String,
        #[source]
        source: rust_rocksdb::Error,
    },
}

/// An object store's failure is the view crate's ([`ViewError::ObjectStore`]).
impl From<object_store::Error> for BatchError {
    fn from(e: object_store::Error) -> BatchError {
        BatchError::View(e.into())
    }
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
