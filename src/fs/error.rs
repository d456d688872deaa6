//! The filesystem layer's error, and its one mapping to an errno.

use crate::storage::StorageError;
use crate::storage::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    /// A change to a part of the mount that only the daemon changes.
    #[error("read-only: {0}")]
    ReadOnly(&'static str),
    /// An operation this filesystem never allows (links, ownership, modes).
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("stale file handle")]
    BadHandle,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("no such attribute")]
    NoAttribute,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("busy: {0}")]
    Busy(String),
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The storage failed what the operation asked of it.
    #[error(transparent)]
    Storage(StorageError),
    /// A restore refused the snapshot (or found no room); the reason is in
    /// `<name>.error`.
    #[error("restore failed: {0}")]
    RestoreFailed(#[source] StorageError),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An I/O failure of the filesystem's own (no system error behind it).
    pub fn io(message: impl Into<String>) -> Self {
        FsError::Io(std::io::Error::other(message.into()))
    }

    /// The errno the kernel passes on to the caller, and its name for logs and metrics.
    pub fn errno(&self) -> (i32, &'static str) {
        match self {
            FsError::NotFound => (libc::ENOENT, "ENOENT"),
            FsError::NotADirectory => (libc::ENOTDIR, "ENOTDIR"),
            FsError::IsADirectory => (libc::EISDIR, "EISDIR"),
            FsError::ReadOnly(_) => (libc::EROFS, "EROFS"),
            FsError::NotPermitted(_) => (libc::EPERM, "EPERM"),
            FsError::BadHandle => (libc::EBADF, "EBADF"),
            FsError::Invalid(_) => (libc::EINVAL, "EINVAL"),
            FsError::NoAttribute => (libc::ENODATA, "ENODATA"),
            FsError::Unsupported(_) => (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            FsError::Busy(_) => (libc::EBUSY, "EBUSY"),
            FsError::Io(_) => (libc::EIO, "EIO"),
            FsError::Storage(err) | FsError::RestoreFailed(err) if err.is_no_space() => {
                (libc::ENOSPC, "ENOSPC")
            }
            FsError::Storage(_) | FsError::RestoreFailed(_) => (libc::EIO, "EIO"),
        }
    }

    /// Expected answers (a lookup that misses, a refused write) are not worth a warning.
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            FsError::NotFound
                | FsError::NoAttribute
                | FsError::ReadOnly(_)
                | FsError::NotPermitted(_)
                | FsError::NotADirectory
                | FsError::IsADirectory
        )
    }
}

impl From<StorageError> for FsError {
    fn from(err: StorageError) -> Self {
        match (err.kind(), err) {
            (ErrorKind::NotFound, _) => FsError::NotFound,
            (ErrorKind::Unavailable, err) => FsError::Busy(err.to_string()),
            // An I/O error keeps its errno where it has one.
            (_, StorageError::Io(e)) => FsError::from(e),
            (_, other) => FsError::Storage(other),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => FsError::NotFound,
            _ => FsError::Io(err),
        }
    }
}
