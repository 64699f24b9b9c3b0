//! One error type for both APIs, with its gRPC code and HTTP status
//! (the table is in `docs/operations.md`).

use tonic::{Code, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A call forwarded to a node that does not own the user either
    /// (`serve.peers` disagree between nodes).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    /// A server fault (a corrupt store): logged, never a client's doing.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The error of gRPC code `code` (another node's answer); a code this
    /// type has no variant for is INTERNAL.
    pub fn from_code(code: Code, message: String) -> ApiError {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ApiError::InvalidArgument(message),
            Code::Unauthenticated => ApiError::Unauthenticated(message),
            Code::PermissionDenied => ApiError::PermissionDenied(message),
            Code::NotFound => ApiError::NotFound(message),
            Code::ResourceExhausted => ApiError::ResourceExhausted(message),
            Code::FailedPrecondition => ApiError::FailedPrecondition(message),
            Code::DeadlineExceeded => ApiError::DeadlineExceeded(message),
            Code::Unavailable | Code::Cancelled | Code::Aborted => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }

    pub fn http_status(&self) -> u16 {
        http_status(self.code())
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::DeadlineExceeded => 504,
        Code::Unavailable => 503,
        Code::Unimplemented => 501,
        _ => 500,
    }
}

/// The canonical upper-case name of a code (`INVALID_ARGUMENT`), for
/// metrics labels and JSON error bodies.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = e.code();
        Status::new(code, e.to_string())
    }
}

/// The speed store could not answer: every variant is spelled out, so a
/// new one needs a decision here. A store that cannot be read now (I/O,
/// RocksDB) is UNAVAILABLE: the client may retry or go to a replica. Data
/// that does not decode is INTERNAL: retrying the same node cannot help.
impl From<weft_speed::SpeedError> for ApiError {
    fn from(e: weft_speed::SpeedError) -> ApiError {
        use weft_speed::SpeedError;
        tracing::error!(error = %e, "speed view read failed");
        match e {
            SpeedError::Kafka { .. }
            | SpeedError::Broker(_)
            | SpeedError::LocalBroker(_)
            | SpeedError::Store(_)
            | SpeedError::Io { .. } => ApiError::Unavailable(format!("speed view: {e}")),
            SpeedError::Corrupt(_) => ApiError::Internal(format!("speed view: {e}")),
        }
    }
}

/// A batch view read failed: UNAVAILABLE when the view's object store
/// could not be reached (retrying may succeed), INTERNAL otherwise (a
/// corrupt or unreadable view).
impl From<weft_view::ViewError> for ApiError {
    fn from(e: weft_view::ViewError) -> ApiError {
        tracing::error!(error = %e, "batch view read failed");
        match e {
            weft_view::ViewError::ObjectStore(_) => {
                ApiError::Unavailable(format!("batch view: {e}"))
            }
            _ => ApiError::Internal(format!("batch view: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_errors_have_their_codes() {
        let unreadable = weft_speed::SpeedError::Store("reading partials: IO error".into());
        assert_eq!(ApiError::from(unreadable).code(), Code::Unavailable);
        let corrupt = weft_speed::SpeedError::Corrupt("acme/u1: truncated partial".into());
        let e = ApiError::from(corrupt);
        assert_eq!(e.code(), Code::Internal);
        assert_eq!(
            e.to_string(),
            "speed view: speed store: corrupt: acme/u1: truncated partial"
        );
    }

    #[test]
    fn view_errors_have_their_codes() {
        let unreachable = weft_view::ViewError::ObjectStore(object_store_error());
        assert_eq!(ApiError::from(unreachable).code(), Code::Unavailable);
        let corrupt = weft_view::ViewError::BadFile {
            file: "v000001.db".into(),
            problem: "corrupt ranked list".into(),
        };
        let e = ApiError::from(corrupt);
        assert_eq!(e.code(), Code::Internal);
        assert_eq!(e.to_string(), "batch view: v000001.db: corrupt ranked list");
    }

    fn object_store_error() -> weft_view::error::ObjectStoreError {
        weft_view::error::ObjectStoreError::Generic {
            store: "S3",
            source: "connection refused".into(),
        }
    }
}
