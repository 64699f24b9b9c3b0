//! [`ViewError`]: why reading, writing or publishing a view failed.

use std::path::PathBuf;

/// The object store's error, for callers that make or match one.
pub use object_store::Error as ObjectStoreError;

/// Why a view operation failed. Every variant names the file, key, store or
/// URL concerned.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A local location that must exist does not (or is not a directory).
    #[error("{0} does not exist")]
    Missing(String),
    #[error("bad argument: {0}")]
    Argument(String),
    /// A file whose contents are not what the view says (corrupt data).
    #[error("{file}: {problem}")]
    BadFile { file: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The object store failed (unreachable, refused, or an object is
    /// gone). Its message already holds its causes (the request's method
    /// and URL, the server's status and answer), so it is not chained again
    /// as a source.
    #[error("object store: {0}")]
    ObjectStore(object_store::Error),
    #[error("view store {store}: {problem}")]
    Store { store: String, problem: String },
    #[error("RocksDB {context}: {source}")]
    Rocks {
        context: String,
        #[source]
        source: rust_rocksdb::Error,
    },
}

impl From<object_store::Error> for ViewError {
    fn from(e: object_store::Error) -> ViewError {
        ViewError::ObjectStore(e)
    }
}

impl ViewError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ViewError {
        let path = path.into();
        move |source| ViewError::Io { path, source }
    }

    pub(crate) fn rocks(
        context: impl Into<String>,
    ) -> impl FnOnce(rust_rocksdb::Error) -> ViewError {
        let context = context.into();
        move |source| ViewError::Rocks { context, source }
    }
}

pub type Result<T, E = ViewError> = std::result::Result<T, E>;
