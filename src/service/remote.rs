//! What a client on a TCP listener (REST or gRPC) is told of an error: an internal
//! error (I/O, the engine, a bug) only as a short reason, logged in full; the
//! daemon's own directories by their config keys. The Unix socket (its owner
//! only) keeps the full texts. Each protocol's error map asks here.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::storage::StorageError;
use crate::storage::error::ErrorKind;

/// What a client on a TCP listener (REST or gRPC) is told of an internal error.
pub const INTERNAL_REASON: &str =
    "internal error in snapfs (I/O or storage engine); the daemon's log has the details";

/// The daemon's directories, each with the config key a remote client is shown in
/// its place (see [`hide_directories`]).
static PRIVATE_DIRECTORIES: OnceLock<Vec<(String, &'static str)>> = OnceLock::new();

/// Name the daemon's own directories (data, storage, snapshots, temp, recovery
/// sources), so that [`remote_text`] shows their config keys instead. Set once at
/// start; later calls are ignored.
pub fn hide_directories(directories: &[(PathBuf, &'static str)]) {
    let mut known: Vec<(String, &'static str)> = Vec::new();
    for (dir, key) in directories {
        let canonical = dir.canonicalize().ok();
        for path in std::iter::once(dir.clone()).chain(canonical) {
            let text = path.to_string_lossy().trim_end_matches('/').to_string();
            // The root itself, or a relative path, is no secret and would match everywhere.
            if text.len() > 1 && text.starts_with('/') && !known.iter().any(|(k, _)| *k == text) {
                known.push((text, key));
            }
        }
    }
    // The longest first: a directory inside another is named by its own key.
    known.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
    let _ = PRIVATE_DIRECTORIES.set(known);
}

/// The text a client on a TCP listener gets for an error whose full text is
/// `message`: [`INTERNAL_REASON`] when the error is internal (`private`), else the
/// message with the daemon's directories replaced by `<config key>`.
pub fn remote_text(private: bool, message: &str) -> Cow<'_, str> {
    if private {
        return Cow::Borrowed(INTERNAL_REASON);
    }
    let mut text = Cow::Borrowed(message);
    for (dir, key) in PRIVATE_DIRECTORIES.get().into_iter().flatten() {
        if text.contains(dir.as_str()) {
            text = Cow::Owned(text.replace(dir.as_str(), &format!("<{key}>")));
        }
    }
    text
}

/// Whether an error's text is for the host only: internal errors, except the one
/// that tells the client what to do (end its old freezes) and names nothing else.
pub fn is_private(err: &StorageError) -> bool {
    err.kind() == ErrorKind::Internal && !matches!(err, StorageError::StaleFreeze { .. })
}
