//! Writing into `recover/` directories: files being written, finished uploads waiting
//! for a rename (rsync's hidden temp files), checksum sidecars, and `<name>.error`
//! files left by failed restores. Data goes to a file in `temp_path`, hashed and
//! written strictly in order; the restore itself runs when a visible file is closed
//! or a hidden one is renamed to a visible name, and its outcome is what that
//! `close`/`rename` returns.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::error::{FsError, FsResult};
use crate::snapshot::Scope;
use crate::snapshot::stored::SNAPSHOT_EXT;

pub const ERROR_EXT: &str = ".error";
const SIDECAR_EXTS: [&str; 2] = [".sha256", ".checksum"];

/// What a name in a recover directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Being written, or written and waiting for a rename (hidden names).
    Upload { size: u64 },
    /// A checksum sidecar, kept in memory for the snapshot it names.
    Sidecar { size: u64 },
    /// `<name>.error`: why a restore failed.
    Error { text: String },
}

#[derive(Default)]
struct DirState {
    /// Uploads by name: their temp file and size so far.
    uploads: BTreeMap<String, (PathBuf, u64)>,
    /// Finished sidecars by their own file name (`x.snapshot.sha256`): their text.
    sidecars: BTreeMap<String, String>,
    /// Finished snapshots waiting for their sidecar (`require_checksum`).
    waiting: BTreeMap<String, (PathBuf, u64)>,
    errors: BTreeMap<String, String>,
}

/// Every recover directory's state, by the scope it restores.
#[derive(Default)]
pub struct RecoverDirs {
    dirs: Mutex<HashMap<Scope, DirState>>,
}

/// An open upload: written strictly in order.
pub struct Upload {
    pub scope: Scope,
    pub name: String,
    pub path: PathBuf,
    file: Mutex<(std::fs::File, u64)>,
    pub sidecar: bool,
    /// Closed (or renamed) and handed on: later flushes of the same handle do nothing.
    pub done: std::sync::atomic::AtomicBool,
}

/// A snapshot upload ready to restore.
pub struct Ready {
    pub name: String,
    pub path: PathBuf,
    pub sidecar: Option<String>,
}

impl Upload {
    pub fn written(&self) -> u64 {
        self.file.lock().unwrap().1
    }
}

pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
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
        for (name, (_, size)) in &state.uploads {
            let kind = if sidecar_target(name).is_some() {
                EntryKind::Sidecar { size: *size }
            } else {
                EntryKind::Upload { size: *size }
            };
            out.push((name.clone(), kind));
        }
        for (name, (_, size)) in &state.waiting {
            out.push((name.clone(), EntryKind::Upload { size: *size }));
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

    pub fn lookup(&self, scope: &Scope, name: &str) -> Option<EntryKind> {
        self.entries(scope)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
    }

    /// Start writing `name` into the recover directory of `scope`.
    pub fn create(&self, scope: &Scope, name: &str, temp_path: &Path) -> FsResult<Upload> {
        if name.ends_with(ERROR_EXT) {
            return Err(FsError::NotPermitted(
                "`.error` files are written by snapfs",
            ));
        }
        let sidecar = sidecar_target(name).is_some();
        if let (Scope::Full, false, false) = (scope, sidecar, is_hidden(name)) {
            // recover/<c>.snapshot: the name says which collection.
            let collection = name.strip_suffix(SNAPSHOT_EXT).ok_or(FsError::Invalid(
                "name files in recover/ `<collection>.snapshot`",
            ))?;
            crate::storage::names::validate_collection_name(collection)
                .map_err(|_| FsError::Invalid("not a valid collection name"))?;
        }
        std::fs::create_dir_all(temp_path)?;
        let path = temp_path.join(format!(".recover-{}", uuid::Uuid::new_v4()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut dirs = self.dirs.lock().unwrap();
        let state = dirs.entry(scope.clone()).or_default();
        if let Some((old, _)) = state.uploads.insert(name.to_string(), (path.clone(), 0)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Upload {
            scope: scope.clone(),
            name: name.to_string(),
            path,
            file: Mutex::new((file, 0)),
            sidecar,
            done: Default::default(),
        })
    }

    /// Append `data` at `offset`, which must be where the file ends.
    pub fn write(&self, upload: &Upload, offset: u64, data: &[u8]) -> FsResult<u32> {
        if upload.done.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FsError::Invalid(
                "the file was closed and handed to the restore",
            ));
        }
        let mut guard = upload.file.lock().unwrap();
        let (file, written) = &mut *guard;
        if offset != *written {
            tracing::warn!(name = %upload.name, offset, expected = *written, "out-of-order write into recover/ refused: snapshots are written sequentially (cp, dd, rsync, curl -o do)");
            return Err(FsError::Invalid("out-of-order write"));
        }
        file.write_all(data)?;
        *written += data.len() as u64;
        if let Some(entry) = self
            .dirs
            .lock()
            .unwrap()
            .get_mut(&upload.scope)
            .and_then(|s| s.uploads.get_mut(&upload.name))
        {
            entry.1 = *written;
        }
        Ok(data.len() as u32)
    }

    /// The upload named `name` is complete. A snapshot is ready to restore with its
    /// sidecar (if any) — unless `require_checksum` and no sidecar came yet: then it
    /// waits. A sidecar is kept, and releases the snapshot waiting for it.
    pub fn take_finished(
        &self,
        scope: &Scope,
        name: &str,
        require_checksum: bool,
    ) -> Option<Ready> {
        let mut dirs = self.dirs.lock().unwrap();
        let state = dirs.get_mut(scope)?;
        let (path, size) = state.uploads.remove(name)?;
        if let Some(snapshot) = sidecar_target(name) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            return match state.waiting.remove(snapshot) {
                Some((waiting_path, _)) => Some(Ready {
                    name: snapshot.to_string(),
                    path: waiting_path,
                    sidecar: Some(text),
                }),
                None => {
                    state.sidecars.insert(name.to_string(), text);
                    None
                }
            };
        }
        let sidecar = SIDECAR_EXTS
            .iter()
            .find_map(|ext| state.sidecars.remove(&format!("{name}{ext}")));
        if sidecar.is_none() && require_checksum {
            state.waiting.insert(name.to_string(), (path, size));
            return None;
        }
        Some(Ready {
            name: name.to_string(),
            path,
            sidecar,
        })
    }

    /// Move a finished hidden upload to `new_name` (rsync's rename).
    pub fn rename(&self, scope: &Scope, from: &str, to: &str) -> FsResult<()> {
        let mut dirs = self.dirs.lock().unwrap();
        let state = dirs.get_mut(scope).ok_or(FsError::NotFound)?;
        let entry = state.uploads.remove(from).ok_or(FsError::NotFound)?;
        state.uploads.insert(to.to_string(), entry);
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

    /// `rm` in a recover directory: an error file, a sidecar, or an upload.
    pub fn remove(&self, scope: &Scope, name: &str) -> FsResult<()> {
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
        if let Some((path, _)) = state.waiting.remove(name) {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        if let Some((path, _)) = state.uploads.remove(name) {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        Err(FsError::NotFound)
    }

    /// An upload abandoned before it was complete (closed without being visible).
    pub fn abandon(&self, upload: &Upload) {
        let mut dirs = self.dirs.lock().unwrap();
        if let Some(state) = dirs.get_mut(&upload.scope)
            && state
                .uploads
                .get(&upload.name)
                .is_some_and(|(p, _)| *p == upload.path)
        {
            state.uploads.remove(&upload.name);
        }
        let _ = std::fs::remove_file(&upload.path);
    }
}

/// Error files carry a timestamp for the user; their mtime is when they were written.
pub fn error_text(message: &str) -> String {
    format!(
        "{}: restore failed: {message}\nFix the snapshot (or its checksum) and write it again; delete this file to clear it.\n",
        crate::snapshot::names::creation_time(SystemTime::now())
    )
}

pub use crate::snapshot::restore::sidecar_checksum;
