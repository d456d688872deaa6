//! The snapshot layer's error: [`SnapshotError`] (defined in the storage layer,
//! which wraps it in [`StorageError::Snapshot`]), and how a refusal of fetched bytes
//! is told without quoting them.

pub use crate::storage::SnapshotError;
use crate::storage::StorageError;

/// The daemon's own texts for an archive it cannot read, which quote nothing of
/// it: kept as they are. Every other such refusal is the tar reader's complaint,
/// which may quote the bytes it found.
const OWN_NOT_TAR_TEXTS: [&str; 3] = [
    "no entries",
    "end-of-archive marker",
    "headers take more than",
];

/// A refusal of fetched bytes, told without quoting them. The tar reader's
/// complaint about a body that is no archive quotes the bytes it found (a header
/// field, a path: the first hundred bytes of whatever the server sent, say a
/// metadata document): it is replaced by a fixed text naming `what` was fetched.
pub fn unquoted(what: &str, err: StorageError) -> StorageError {
    match err {
        StorageError::Snapshot(SnapshotError::NotTar(why))
            if !OWN_NOT_TAR_TEXTS.iter().any(|own| why.contains(own)) =>
        {
            StorageError::Snapshot(SnapshotError::NotTar(format!(
                "{what} is not a snapshot, or is cut short (what it holds is not quoted); check that the location names a snapshot archive"
            )))
        }
        other => other,
    }
}
