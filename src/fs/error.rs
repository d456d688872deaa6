//! The filesystem layer's error, and its one mapping to an errno.

use crate::storage::StorageError;

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
    Io(String),
    /// No room for a restore; the reason is in `<name>.error`.
    #[error("no space: {0}")]
    NoSpace(String),
    /// A restore refused the snapshot; the reason is in `<name>.error`.
    #[error("restore failed: {0}")]
    RestoreFailed(String),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
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
            FsError::RestoreFailed(_) => (libc::EIO, "EIO"),
            FsError::NoSpace(_) => (libc::ENOSPC, "ENOSPC"),
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
        match err {
            StorageError::CollectionNotFound(_)
            | StorageError::NotFound(_)
            | StorageError::PointNotFound(_) => FsError::NotFound,
            StorageError::Io(e) => FsError::from(e),
            StorageError::ShuttingDown => FsError::Busy(err.to_string()),
            StorageError::NoSpace(message) => FsError::NoSpace(message),
            other => FsError::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => FsError::NotFound,
            _ => FsError::Io(err.to_string()),
        }
    }
}
