//! Writing into `recover/` directories: snapshots being written (each unpacked into
//! a staging directory while it arrives, see [`crate::snapshot::intake`]), finished
//! hidden uploads waiting for a rename (rsync's temp files), checksum sidecars, and
//! `<name>.error` files left by failed restores. Writes must come strictly in order.
//! The restore itself runs when a visible file is closed or a hidden one is renamed
//! to a visible name, and its outcome is what that `close`/`rename` returns.
//!
//! Nothing slow (joining an unpacker, removing a staging directory) happens while
//! the directories' lock is held: entries are taken out first, and dropped after.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::error::{FsError, FsResult};
use crate::snapshot::Scope;
use crate::snapshot::intake::{Intake, Received};
use crate::snapshot::store::SNAPSHOT_EXT;
use crate::storage::StorageError;

pub const ERROR_EXT: &str = ".error";
const SIDECAR_EXTS: [&str; 2] = [".sha256", ".checksum"];
/// A sidecar holds one line; anything longer is not one.
const SIDECAR_MAX: u64 = 4096;

/// What a name in a recover directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Being written, or written and waiting (for a rename, or for its sidecar).
    Upload { size: u64 },
    /// A checksum sidecar, kept in memory for the snapshot it names.
    Sidecar { size: u64 },
    /// `<name>.error`: why a restore failed.
    Error { text: String },
}

/// A file being written into a recover directory.
pub struct UploadEntry {
    size: AtomicU64,
    /// Who created it (user, group): shown as its owner while it is written.
    owner: (u32, u32),
    body: Mutex<Body>,
}

enum Body {
    Sidecar(Vec<u8>),
    Receiving(Box<Intake>),
    Received(Received),
    Failed(StorageError),
    /// Handed on (restored, or moved to the waiting list).
    Taken,
}

impl UploadEntry {
    /// Stop receiving: wait for the unpacker (idempotent; blocking).
    fn finish(&self) {
        let mut body = self.body.lock().unwrap();
        if let Body::Receiving(_) = &*body
            && let Body::Receiving(intake) = std::mem::replace(&mut *body, Body::Taken)
        {
            *body = match intake.finish() {
                Ok(received) => Body::Received(received),
                Err(err) => Body::Failed(err),
            };
        }
    }

    /// The finished snapshot (or why it failed), taking it out of the entry.
    fn take_received(&self) -> Result<Received, StorageError> {
        self.finish();
        match std::mem::replace(&mut *self.body.lock().unwrap(), Body::Taken) {
            Body::Received(received) => Ok(received),
            Body::Failed(err) => Err(err),
            _ => Err(StorageError::internal("the upload was already handed on")),
        }
    }

    fn sidecar_text(&self) -> String {
        match &*self.body.lock().unwrap() {
            Body::Sidecar(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        }
    }
}

#[derive(Default)]
struct DirState {
    /// Files being written (or written and waiting for a rename), by name.
    uploads: BTreeMap<String, Arc<UploadEntry>>,
    /// Finished sidecars by their own file name (`x.snapshot.sha256`): their text.
    sidecars: BTreeMap<String, String>,
    /// Received snapshots waiting for their sidecar (`require_checksum`).
    waiting: BTreeMap<String, Received>,
    errors: BTreeMap<String, String>,
}

impl DirState {
    /// The finished sidecar for snapshot `name` (`name.sha256` or `name.checksum`),
    /// by its own file name.
    fn sidecar_of(&self, name: &str) -> Option<String> {
        SIDECAR_EXTS
            .iter()
            .map(|ext| format!("{name}{ext}"))
            .find(|sidecar| self.sidecars.contains_key(sidecar))
    }
}

/// Every recover directory's state, by the scope it restores.
#[derive(Default)]
pub struct RecoverDirs {
    dirs: Mutex<HashMap<Scope, DirState>>,
}

/// An open upload (a file handle).
pub struct Upload {
    pub scope: Scope,
    pub name: String,
    entry: Arc<UploadEntry>,
    /// Closed (or renamed) and handed on: later flushes of the same handle do nothing.
    pub done: AtomicBool,
}

impl Upload {
    pub fn written(&self) -> u64 {
        self.entry.size.load(Ordering::SeqCst)
    }
}

/// A snapshot upload ready to restore: unpacked in staging, or why it could not be.
pub struct Ready {
    pub name: String,
    pub received: Result<Received, StorageError>,
    pub sidecar: Option<String>,
}

pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The name a hidden temp file will most likely get: rsync writes `x` as
/// `.x.XXXXXX`. Used to file the `.error` of an upload that failed while hidden.
pub fn visible_name(name: &str) -> &str {
    let Some(rest) = name.strip_prefix('.') else {
        return name;
    };
    match rest.rsplit_once('.') {
        Some((stem, tag))
            if !stem.is_empty()
                && tag.len() == 6
                && tag.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            stem
        }
        _ => rest,
    }
}

/// The snapshot a sidecar name is for (`x.snapshot.sha256` → `x.snapshot`).
fn sidecar_target(name: &str) -> Option<&str> {
    SIDECAR_EXTS.iter().find_map(|ext| name.strip_suffix(ext))
}

impl RecoverDirs {
    pub fn entries(&self, scope: &Scope) -> Vec<(String, EntryKind)> {
        let dirs = self.dirs.lock().unwrap();
        let Some(state) = dirs.get(scope) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, entry) in &state.uploads {
            let size = entry.size.load(Ordering::SeqCst);
            let kind = if sidecar_target(name).is_some() {
                EntryKind::Sidecar { size }
            } else {
                EntryKind::Upload { size }
            };
            out.push((name.clone(), kind));
        }
        for (name, received) in &state.waiting {
            out.push((
                name.clone(),
                EntryKind::Upload {
                    size: received.report.archive_bytes,
                },
            ));
        }
        for (name, text) in &state.sidecars {
            out.push((
                name.clone(),
                EntryKind::Sidecar {
                    size: text.len() as u64,
                },
            ));
        }
        for (name, text) in &state.errors {
            out.push((
                format!("{name}{ERROR_EXT}"),
                EntryKind::Error { text: text.clone() },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// The user and group that created the upload `name`, while it is one.
    pub fn owner(&self, scope: &Scope, name: &str) -> Option<(u32, u32)> {
        let dirs = self.dirs.lock().unwrap();
        Some(dirs.get(scope)?.uploads.get(name)?.owner)
    }

    pub fn lookup(&self, scope: &Scope, name: &str) -> Option<EntryKind> {
        self.entries(scope)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
    }

    /// Start writing `name` into the recover directory of `scope`; a snapshot
    /// starts receiving into an intake made by `begin`, given how to show it (the
    /// collection it will restore, when the scope or the name says so).
    pub fn create(
        &self,
        scope: &Scope,
        name: &str,
        owner: (u32, u32),
        begin: impl FnOnce(Option<(String, String)>, Option<String>) -> Result<Intake, StorageError>,
    ) -> FsResult<Upload> {
        if name.ends_with(ERROR_EXT) {
            return Err(FsError::NotPermitted(
                "`.error` files are written by snapfs",
            ));
        }
        let sidecar = sidecar_target(name).is_some();
        let target = match scope {
            Scope::Full => visible_name(name)
                .strip_suffix(SNAPSHOT_EXT)
                .map(|c| (c.to_string(), "collection".to_string())),
            scoped => crate::snapshot::restore::shown_as(scoped),
        };
        if let (Scope::Full, false, false) = (scope, sidecar, is_hidden(name)) {
            // recover/<c>.snapshot: the name says which collection.
            let Some((collection, _)) = &target else {
                return Err(FsError::Invalid(
                    "name files in recover/ `<collection>.snapshot`",
                ));
            };
            crate::storage::names::validate_collection_name(collection)
                .map_err(|_| FsError::Invalid("not a valid collection name"))?;
        }
        let body = if sidecar {
            Body::Sidecar(Vec::new())
        } else {
            Body::Receiving(Box::new(begin(target, self.sidecar_for(scope, name))?))
        };
        let entry = Arc::new(UploadEntry {
            size: AtomicU64::new(0),
            owner,
            body: Mutex::new(body),
        });
        let replaced = self
            .dirs
            .lock()
            .unwrap()
            .entry(scope.clone())
            .or_default()
            .uploads
            .insert(name.to_string(), entry.clone());
        drop(replaced);
        Ok(Upload {
            scope: scope.clone(),
            name: name.to_string(),
            entry,
            done: AtomicBool::new(false),
        })
    }

    /// Append `data` at `offset`, which must be where the file ends. A snapshot's
    /// bytes go to its unpacker; if it refuses them, the write fails and says why.
    pub fn write(&self, upload: &Upload, offset: u64, data: &[u8]) -> FsResult<u32> {
        if upload.done.load(Ordering::SeqCst) {
            return Err(FsError::Invalid(
                "the file was closed and handed to the restore",
            ));
        }
        let entry = &upload.entry;
        let mut body = entry.body.lock().unwrap();
        let written = entry.size.load(Ordering::SeqCst);
        if offset != written {
            tracing::warn!(name = %upload.name, offset, expected = written, "out-of-order write into recover/ refused: snapshots are written sequentially (cp, dd, rsync, curl -o do)");
            return Err(FsError::Invalid("out-of-order write"));
        }
        match &mut *body {
            Body::Sidecar(bytes) => {
                if written + data.len() as u64 > SIDECAR_MAX {
                    return Err(FsError::Invalid(
                        "a checksum sidecar holds one line (a SHA-256)",
                    ));
                }
                bytes.extend_from_slice(data);
            }
            Body::Receiving(intake) => {
                if let Err(err) = intake.push_blocking(data) {
                    // Refused on the way: the rest need not be written.
                    self.record_error(
                        &upload.scope,
                        visible_name(&upload.name),
                        error_text(&err.to_string()),
                    );
                    let fs_error = restore_error(&err);
                    *body = Body::Failed(err);
                    return Err(fs_error);
                }
            }
            Body::Failed(err) => return Err(restore_error(err)),
            Body::Received(_) | Body::Taken => {
                return Err(FsError::Invalid(
                    "the file was closed and handed to the restore",
                ));
            }
        }
        entry.size.fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data.len() as u32)
    }

    /// A hidden upload was closed: let its unpacker finish (it waits for a rename).
    pub fn closed_hidden(&self, upload: &Upload) {
        upload.entry.finish();
    }

    /// The checksum in a finished sidecar for the snapshot upload `name` (an
    /// rsync temp name counts as the name it will get), if one was written before
    /// it: the intake checks it and need not hash each file on its own.
    fn sidecar_for(&self, scope: &Scope, name: &str) -> Option<String> {
        let dirs = self.dirs.lock().unwrap();
        let state = dirs.get(scope)?;
        let sidecar = state.sidecar_of(visible_name(name))?;
        sidecar_checksum(&state.sidecars[&sidecar])
    }

    /// The upload named `name` is complete. A snapshot is ready to restore with its
    /// sidecar (if any) — unless `require_checksum` and no sidecar came yet: then it
    /// waits. A sidecar is kept, and releases the snapshot waiting for it. Blocking
    /// (waits for the snapshot's unpacker).
    pub fn take_finished(
        &self,
        scope: &Scope,
        name: &str,
        require_checksum: bool,
    ) -> Option<Ready> {
        let entry = self
            .dirs
            .lock()
            .unwrap()
            .get_mut(scope)?
            .uploads
            .remove(name)?;
        if let Some(snapshot) = sidecar_target(name) {
            let text = entry.sidecar_text();
            let mut dirs = self.dirs.lock().unwrap();
            let state = dirs.entry(scope.clone()).or_default();
            return match state.waiting.remove(snapshot) {
                Some(received) => Some(Ready {
                    name: snapshot.to_string(),
                    received: Ok(received),
                    sidecar: Some(text),
                }),
                None => {
                    state.sidecars.insert(name.to_string(), text);
                    None
                }
            };
        }
        let received = entry.take_received();
        let mut dirs = self.dirs.lock().unwrap();
        let state = dirs.entry(scope.clone()).or_default();
        let sidecar = state
            .sidecar_of(name)
            .and_then(|sidecar| state.sidecars.remove(&sidecar));
        match received {
            Ok(received) if sidecar.is_none() && require_checksum => {
                state.waiting.insert(name.to_string(), received);
                None
            }
            received => Some(Ready {
                name: name.to_string(),
                received,
                sidecar,
            }),
        }
    }

    /// Move a finished hidden upload to `new_name` (rsync's rename).
    pub fn rename(&self, scope: &Scope, from: &str, to: &str) -> FsResult<()> {
        let replaced = {
            let mut dirs = self.dirs.lock().unwrap();
            let state = dirs.get_mut(scope).ok_or(FsError::NotFound)?;
            let entry = state.uploads.remove(from).ok_or(FsError::NotFound)?;
            state.uploads.insert(to.to_string(), entry)
        };
        drop(replaced);
        Ok(())
    }

    pub fn record_error(&self, scope: &Scope, name: &str, text: String) {
        let mut dirs = self.dirs.lock().unwrap();
        dirs.entry(scope.clone())
            .or_default()
            .errors
            .insert(name.to_string(), text);
    }

    pub fn clear_error(&self, scope: &Scope, name: &str) {
        if let Some(state) = self.dirs.lock().unwrap().get_mut(scope) {
            state.errors.remove(name);
        }
    }

    /// `rm` in a recover directory: an error file, a sidecar, or an upload (whose
    /// staging directory goes with it).
    pub fn remove(&self, scope: &Scope, name: &str) -> FsResult<()> {
        let (waiting, upload) = {
            let mut dirs = self.dirs.lock().unwrap();
            let state = dirs.get_mut(scope).ok_or(FsError::NotFound)?;
            if let Some(snapshot) = name.strip_suffix(ERROR_EXT)
                && state.errors.remove(snapshot).is_some()
            {
                return Ok(());
            }
            if state.sidecars.remove(name).is_some() {
                return Ok(());
            }
            (state.waiting.remove(name), state.uploads.remove(name))
        };
        if waiting.is_none() && upload.is_none() {
            return Err(FsError::NotFound);
        }
        Ok(())
    }

    /// A visible upload closed for the last time with nothing written (`cp` of an
    /// empty file, `touch`): nothing to restore, and an `.error` that says so (the
    /// close itself cannot fail any more: the kernel reports the last close after
    /// the file's flushes, which could not know it was the last).
    pub fn closed_empty(&self, upload: &Upload) {
        if !is_hidden(&upload.name) && sidecar_target(&upload.name).is_none() {
            tracing::warn!(name = %upload.name, "an empty file was written into recover/: nothing restored");
            self.record_error(
                &upload.scope,
                &upload.name,
                error_text(
                    "the file is empty (nothing was written into it): there is nothing to restore",
                ),
            );
        }
        self.abandon(upload);
    }

    /// An upload abandoned before it was complete (closed without being visible).
    pub fn abandon(&self, upload: &Upload) {
        let removed = {
            let mut dirs = self.dirs.lock().unwrap();
            dirs.get_mut(&upload.scope).and_then(|state| {
                let ours = state
                    .uploads
                    .get(&upload.name)
                    .is_some_and(|entry| Arc::ptr_eq(entry, &upload.entry));
                ours.then(|| state.uploads.remove(&upload.name)).flatten()
            })
        };
        drop(removed);
    }
}

/// A failed restore as its writer sees it (ENOSPC for want of room, EIO else: the
/// one errno map, [`FsError::errno`], decides).
pub fn restore_error(err: &StorageError) -> FsError {
    FsError::RestoreFailed(err.duplicate())
}

/// Error files carry a timestamp for the user; their mtime is when they were written.
pub fn error_text(message: &str) -> String {
    format!(
        "{}: restore failed: {message}\nFix the snapshot (or its checksum) and write it again; delete this file to clear it.\n",
        crate::snapshot::names::creation_time(SystemTime::now())
    )
}

pub use crate::snapshot::checksum::sidecar_checksum;

#[cfg(test)]
mod tests {
    use super::visible_name;

    #[test]
    fn rsync_temp_names_map_to_their_target() {
        assert_eq!(visible_name(".x.snapshot.Ab12Cd"), "x.snapshot");
        assert_eq!(visible_name(".x.snapshot"), "x.snapshot");
        assert_eq!(visible_name("x.snapshot"), "x.snapshot");
        assert_eq!(visible_name(".part"), "part");
    }
}
