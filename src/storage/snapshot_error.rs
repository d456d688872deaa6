//! Why an archive was refused or a restore failed: one variant per refusal, so the
//! metrics, the HTTP status and the errno are chosen by matching the kind, never the
//! message text. Defined in the storage layer, inside the one error the upper
//! layers see ([`super::StorageError::Snapshot`]), so that storage never imports the
//! snapshot layer; the snapshot layer names it `crate::snapshot::SnapshotError`.

use std::io;

use crate::metrics::FailureReason;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a readable tar archive: {0}")]
    NotTar(String),
    #[error("unsafe entry {path:?}: {why}")]
    UnsafeEntry { path: String, why: String },
    #[error("Checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("manifest mismatch for {path}: {why}")]
    ManifestMismatch { path: String, why: String },
    /// A file whose SHA-256 is not the one the embedded manifest lists: corrupted
    /// bytes, as for a whole-file checksum mismatch.
    #[error("manifest mismatch for {path}: Checksum mismatch: expected {expected}, got {actual}")]
    EntryChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    /// The archive's entries would not fit (checked before they are written).
    #[error(
        "not enough free space to restore: the archive's entries need more than {needed} bytes, {free} are free where collections are stored"
    )]
    NoSpace { needed: u64, free: u64 },
    /// The archive's announced size (a Content-Length, a file's length) cannot fit.
    #[error(
        "not enough free space to restore: the archive is {size} bytes, {free} are free where collections are stored"
    )]
    TooLarge { size: u64, free: u64 },
    /// The archive describes more bytes of files than one restore may unpack
    /// (`storage.max_restore_bytes`): sparse entries declare sizes nothing else
    /// bounds, and every zero of them would be produced and hashed.
    #[error(
        "the snapshot describes more than {limit} bytes of files (storage.max_restore_bytes); a real snapshot this large needs a higher limit"
    )]
    OverBudget { limit: u64 },
    /// The restore was abandoned (its sender went away, or the daemon stops).
    #[error("the restore was cancelled")]
    Cancelled,
    /// The disk filled up while the archive was being unpacked.
    #[error(
        "not enough free space to restore: the disk holding the collections filled up after {received} bytes of the archive"
    )]
    DiskFull { received: u64 },
    /// Segments neither in snapfs's nor in one of Qdrant's layouts.
    #[error("the snapshot's segments are not laid out as Qdrant writes them: {0}")]
    BadLayout(String),
    /// A well-formed archive that is not what was asked for (the wrong kind of
    /// snapshot, a config that does not fit, shards that do not open).
    #[error("{0}")]
    Invalid(String),
    /// Our side failed (the message names the path: opened through `fs-err`).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl SnapshotError {
    pub fn invalid(message: impl Into<String>) -> Self {
        SnapshotError::Invalid(message.into())
    }

    /// The `reason` label of `snapfs_restore_failures_total`.
    pub fn reason(&self) -> FailureReason {
        match self {
            SnapshotError::ChecksumMismatch { .. }
            | SnapshotError::EntryChecksumMismatch { .. } => FailureReason::Checksum,
            SnapshotError::NoSpace { .. }
            | SnapshotError::TooLarge { .. }
            | SnapshotError::DiskFull { .. } => FailureReason::Space,
            SnapshotError::Io(_) | SnapshotError::Cancelled => FailureReason::Internal,
            SnapshotError::OverBudget { .. }
            | SnapshotError::NotTar(_)
            | SnapshotError::UnsafeEntry { .. }
            | SnapshotError::ManifestMismatch { .. }
            | SnapshotError::BadLayout(_)
            | SnapshotError::Invalid(_) => FailureReason::Invalid,
        }
    }

    /// Refused for lack of room, not for what the archive holds.
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            SnapshotError::NoSpace { .. }
                | SnapshotError::TooLarge { .. }
                | SnapshotError::DiskFull { .. }
        )
    }

    /// An I/O error out of the unpacker, told apart from a full disk.
    pub fn from_unpacking(err: SnapshotError, received: u64) -> Self {
        match err {
            SnapshotError::Io(e)
                if e.raw_os_error() == Some(libc::ENOSPC)
                    || e.kind() == io::ErrorKind::StorageFull =>
            {
                SnapshotError::DiskFull { received }
            }
            other => other,
        }
    }

    /// The same refusal again (an intake that refused answers every later push
    /// with it); an I/O error keeps its kind and text.
    pub fn duplicate(&self) -> SnapshotError {
        use SnapshotError::*;
        match self {
            NotTar(why) => NotTar(why.clone()),
            UnsafeEntry { path, why } => UnsafeEntry {
                path: path.clone(),
                why: why.clone(),
            },
            ChecksumMismatch { expected, actual } => ChecksumMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            ManifestMismatch { path, why } => ManifestMismatch {
                path: path.clone(),
                why: why.clone(),
            },
            EntryChecksumMismatch {
                path,
                expected,
                actual,
            } => EntryChecksumMismatch {
                path: path.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            NoSpace { needed, free } => NoSpace {
                needed: *needed,
                free: *free,
            },
            TooLarge { size, free } => TooLarge {
                size: *size,
                free: *free,
            },
            DiskFull { received } => DiskFull {
                received: *received,
            },
            OverBudget { limit } => OverBudget { limit: *limit },
            Cancelled => Cancelled,
            BadLayout(why) => BadLayout(why.clone()),
            Invalid(why) => Invalid(why.clone()),
            Io(err) => Io(io::Error::new(err.kind(), err.to_string())),
        }
    }
}
