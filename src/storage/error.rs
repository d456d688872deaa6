//! The storage layer's one error type, and its [`ErrorKind`]: what the caller can do
//! about it. The protocols map the kind (HTTP status, gRPC code) or the error
//! (errno) in exactly one place each.

use qdrant_edge::OperationError;

use super::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Collection `{0}` not found")]
    CollectionNotFound(String),
    #[error("Collection `{0}` already exists!")]
    CollectionExists(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Point {0} not found")]
    PointNotFound(String),
    #[error("snapfs is shutting down; retry once it is back")]
    ShuttingDown,
    /// Our fault: what failed, and the error that made it fail when there is one
    /// (kept as the [`std::error::Error::source`], shown after `what`).
    #[error("{}", internal_text(what, source))]
    Internal {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// Another server (a peer asked for a partial snapshot) failed or refused.
    #[error("{0}")]
    Peer(String),
    /// Not allowed by the configuration (a location outside the allowed ones).
    #[error("{0}")]
    Forbidden(String),
    /// The same kind of work is already running on the same target.
    #[error("{0}")]
    AlreadyInProgress(String),
    /// A freeze found shards still frozen by an older view that updates have passed
    /// since: it was undone; end those freezes and freeze again.
    #[error("shards {shards:?} of `{collection}` are still frozen at an older state")]
    StaleFreeze {
        collection: String,
        shards: Vec<u32>,
    },
    /// A snapshot refused, or a restore that failed: its kind says why.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The error under an internal one.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An internal error's text: `what: source`, or either alone: the same text the
/// callers wrote by hand before the cause was kept.
fn internal_text(what: &str, source: &Option<Cause>) -> String {
    match source {
        None => what.to_string(),
        Some(cause) if what.is_empty() => cause.to_string(),
        Some(cause) => format!("{what}: {cause}"),
    }
}

/// A cause told again by its text (an error duplicated for a second reader).
#[derive(Debug)]
struct CauseText(String);

impl std::fmt::Display for CauseText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CauseText {}

/// What an error means to the one who asked, whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The collection, point or file asked for does not exist.
    NotFound,
    /// What was to be created exists.
    Exists,
    /// The request (or the snapshot it brought) is wrong; retrying it will not help.
    Invalid,
    /// Not enough disk for what was asked.
    NoSpace,
    /// Shutting down, or the same work runs already on the same target: retry later.
    Unavailable,
    /// Another server (a peer, an object store) failed or refused.
    Peer,
    /// The configuration does not allow it (a location, a bucket, an address).
    Forbidden,
    /// Our fault (I/O, the engine, a bug).
    Internal,
}

impl StorageError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        StorageError::BadRequest(message.into())
    }

    /// Our fault, with no error under it (a broken invariant).
    pub fn internal(message: impl Into<String>) -> Self {
        StorageError::Internal {
            what: message.into(),
            source: None,
        }
    }

    /// Our fault: `what` failed because of `cause` (kept as the source; the text
    /// is `what: cause`).
    pub fn internal_from(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        StorageError::Internal {
            what: what.into(),
            source: Some(cause.into()),
        }
    }

    /// Our fault, told by `cause` alone (a task that panicked, a value that did not
    /// serialize): its text is the cause's.
    pub fn from_cause(cause: impl Into<Cause>) -> Self {
        StorageError::internal_from(String::new(), cause)
    }

    /// The same error again, for a second reader of one failure (an upload that
    /// failed answers every later write with it); an I/O error keeps its kind and text.
    pub fn duplicate(&self) -> StorageError {
        use StorageError::*;
        match self {
            CollectionNotFound(name) => CollectionNotFound(name.clone()),
            CollectionExists(name) => CollectionExists(name.clone()),
            BadRequest(why) => BadRequest(why.clone()),
            NotFound(why) => NotFound(why.clone()),
            PointNotFound(id) => PointNotFound(id.clone()),
            ShuttingDown => ShuttingDown,
            Internal { what, source } => Internal {
                what: what.clone(),
                source: source
                    .as_ref()
                    .map(|cause| Box::new(CauseText(cause.to_string())) as Cause),
            },
            Peer(why) => Peer(why.clone()),
            Forbidden(why) => Forbidden(why.clone()),
            AlreadyInProgress(why) => AlreadyInProgress(why.clone()),
            Snapshot(err) => Snapshot(err.duplicate()),
            StaleFreeze { collection, shards } => StaleFreeze {
                collection: collection.clone(),
                shards: shards.clone(),
            },
            Io(err) => Io(std::io::Error::new(err.kind(), err.to_string())),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::CollectionNotFound(_)
            | StorageError::PointNotFound(_)
            | StorageError::NotFound(_) => ErrorKind::NotFound,
            StorageError::CollectionExists(_) => ErrorKind::Exists,
            StorageError::BadRequest(_) => ErrorKind::Invalid,
            StorageError::ShuttingDown => ErrorKind::Unavailable,
            StorageError::Snapshot(err) if err.is_no_space() => ErrorKind::NoSpace,
            StorageError::Snapshot(SnapshotError::Io(_)) => ErrorKind::Internal,
            // Nobody is waiting for the answer (the sender went away).
            StorageError::Snapshot(SnapshotError::Cancelled) => ErrorKind::Unavailable,
            StorageError::Snapshot(_) => ErrorKind::Invalid,
            StorageError::Peer(_) => ErrorKind::Peer,
            StorageError::Forbidden(_) => ErrorKind::Forbidden,
            StorageError::AlreadyInProgress(_) => ErrorKind::Unavailable,
            StorageError::Internal { .. }
            | StorageError::Io(_)
            | StorageError::StaleFreeze { .. } => ErrorKind::Internal,
        }
    }

    /// Refused for lack of room on disk.
    pub fn is_no_space(&self) -> bool {
        self.kind() == ErrorKind::NoSpace
    }

    /// The `reason` label of `snapfs_restore_failures_total`.
    pub fn failure_reason(&self) -> crate::metrics::FailureReason {
        use crate::metrics::FailureReason;
        match self {
            StorageError::Snapshot(err) => err.reason(),
            StorageError::BadRequest(_) | StorageError::CollectionNotFound(_) => {
                FailureReason::Invalid
            }
            _ => FailureReason::Internal,
        }
    }

    /// Engine errors: the ones caused by the request (a wrong vector size, a bad
    /// filter) are the caller's; everything else is ours.
    pub fn from_engine(err: OperationError) -> Self {
        match err {
            OperationError::WrongVectorDimension { .. }
            | OperationError::VectorNameNotExists { .. }
            | OperationError::PointIdError { .. }
            | OperationError::TypeError { .. }
            | OperationError::TypeInferenceError { .. }
            | OperationError::ValidationError { .. }
            | OperationError::WrongSparse
            | OperationError::WrongMulti
            | OperationError::MissingRangeIndexForOrderBy { .. }
            | OperationError::MissingMapIndexForFacet { .. }
            | OperationError::VariableTypeError { .. }
            | OperationError::NonFiniteNumber { .. } => StorageError::BadRequest(err.to_string()),
            _ => StorageError::from_cause(err),
        }
    }
}

/// An error with its causes, `: `-joined (a client library's own text often hides
/// the connect or TLS reason in a cause).
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // An error that shows its cause already (an internal one) is not repeated.
        let told = cause.to_string();
        if !text.ends_with(&told) {
            text.push_str(": ");
            text.push_str(&told);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn an_internal_error_keeps_its_cause_and_its_text() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad bytes");
        let err = StorageError::internal_from("pending log p", io);
        assert_eq!(err.to_string(), "pending log p: bad bytes");
        let cause = err.source().expect("the cause is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(err.kind(), ErrorKind::Internal);
        // Told once, whether read alone or with its causes.
        assert_eq!(with_causes(&err), "pending log p: bad bytes");
        let again = err.duplicate();
        assert_eq!(again.to_string(), err.to_string());
        assert!(again.source().is_some());
        // A cause alone reads as the cause; no cause reads as the text.
        let alone = StorageError::from_cause(std::io::Error::other("gone"));
        assert_eq!(alone.to_string(), "gone");
        assert!(StorageError::internal("broken").source().is_none());
        assert_eq!(StorageError::internal("broken").to_string(), "broken");
    }
}
