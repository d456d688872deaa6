//! Stored snapshots: archives written into the snapshots directory beside a
//! `<name>.checksum` sidecar (64 lowercase hex, no newline, Qdrant's convention).
//!
//! Creation streams the live view into `temp_path` while hashing (one pass), fsyncs,
//! writes the sidecar, then renames the archive into place: a listed snapshot is
//! always complete and its checksum is already there.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::digest::hex;
use super::names::{creation_time, name_timestamp, validate_snapshot_name};
use super::view::{Scope, SnapshotView};
use crate::storage::{Result, Storage, StorageError};

pub const SNAPSHOT_EXT: &str = ".snapshot";
pub const CHECKSUM_EXT: &str = ".checksum";
/// Copy buffer for writing archives: large sequential writes.
const CHUNK: usize = 1 << 20;

/// Qdrant's `SnapshotDescription`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotDescription {
    pub name: String,
    pub creation_time: Option<String>,
    pub size: u64,
    pub checksum: Option<String>,
}

/// Where stored snapshots of `scope` live.
pub fn scope_dir(snapshots_path: &Path, scope: &Scope) -> PathBuf {
    match scope {
        Scope::Collection(c) => snapshots_path.join(c),
        Scope::Shard(c, id) => snapshots_path.join(c).join("shards").join(id.to_string()),
        Scope::Full => snapshots_path.to_path_buf(),
    }
}

fn name_base(scope: &Scope, now: SystemTime) -> String {
    let ts = name_timestamp(now);
    match scope {
        Scope::Collection(c) => format!("{c}-{ts}"),
        Scope::Shard(c, id) => format!("{c}-shard-{id}-{ts}"),
        Scope::Full => format!("full-snapshot-{ts}"),
    }
}

/// Names being written right now (not yet visible on disk).
fn reserved() -> &'static Mutex<HashSet<PathBuf>> {
    static RESERVED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    RESERVED.get_or_init(Default::default)
}

/// Pick `<base>.snapshot`, or `<base>-1.snapshot`, `-2`, … on a clash, and hold it.
fn reserve_name(dir: &Path, base: &str) -> PathBuf {
    let mut held = reserved().lock().unwrap();
    for n in 0.. {
        let name = if n == 0 {
            format!("{base}{SNAPSHOT_EXT}")
        } else {
            format!("{base}-{n}{SNAPSHOT_EXT}")
        };
        let path = dir.join(name);
        if !path.exists() && !held.contains(&path) {
            held.insert(path.clone());
            return path;
        }
    }
    unreachable!()
}

fn release_name(path: &Path) {
    reserved().lock().unwrap().remove(path);
}

pub fn describe(path: &Path) -> io::Result<SnapshotDescription> {
    let meta = std::fs::metadata(path)?;
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let checksum = std::fs::read_to_string(sidecar(path))
        .ok()
        .map(|s| s.trim().to_string());
    Ok(SnapshotDescription {
        name,
        creation_time: meta.modified().ok().map(creation_time),
        size: meta.len(),
        checksum,
    })
}

pub fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CHECKSUM_EXT);
    PathBuf::from(name)
}

/// Stored snapshots of `scope`, by name.
pub fn list(snapshots_path: &Path, scope: &Scope) -> Result<Vec<SnapshotDescription>> {
    let dir = scope_dir(snapshots_path, scope);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(SNAPSHOT_EXT) && !name.starts_with('.') && entry.file_type()?.is_file() {
            match describe(&entry.path()) {
                Ok(d) => out.push(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The path of stored snapshot `name` of `scope`, which must exist: a plain name
/// (see [`validate_snapshot_name`]) of a regular file directly in the scope's
/// directory, named `*.snapshot` like every listed one. Anything else, a symlink
/// included (it could lead out of the snapshots directory), is not found.
pub fn stored_path(snapshots_path: &Path, scope: &Scope, name: &str) -> Result<PathBuf> {
    validate_snapshot_name(name)?;
    let not_found = || StorageError::NotFound(format!("Snapshot {name} not found"));
    if !name.ends_with(SNAPSHOT_EXT) {
        return Err(not_found());
    }
    let path = scope_dir(snapshots_path, scope).join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => Ok(path),
        _ => Err(not_found()),
    }
}

/// Open stored snapshot `name` of `scope` for reading, never through a symlink.
pub fn open_stored(snapshots_path: &Path, scope: &Scope, name: &str) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = stored_path(snapshots_path, scope, name)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound(format!("Snapshot {name} not found")),
            _ => e.into(),
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(StorageError::NotFound(format!("Snapshot {name} not found")));
    }
    Ok(file)
}

pub fn delete(snapshots_path: &Path, scope: &Scope, name: &str) -> Result<()> {
    remove(&stored_path(snapshots_path, scope, name)?)
}

/// Remove a stored snapshot found by [`stored_path`], and its checksum. One
/// already gone (a concurrent delete) is no error.
pub fn remove(path: &Path) -> Result<()> {
    for file in [path.to_path_buf(), sidecar(path)] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Create a stored snapshot of `scope`. Blocking.
pub fn create(
    storage: &Storage,
    snapshots_path: &Path,
    temp_path: &Path,
    scope: Scope,
) -> Result<SnapshotDescription> {
    let dir = scope_dir(snapshots_path, &scope);
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(temp_path)?;
    let view = SnapshotView::open(storage, scope.clone())?;
    let target = reserve_name(&dir, &name_base(&scope, SystemTime::now()));
    let result = write_stored(&view, &target, temp_path);
    release_name(&target);
    drop(view);
    result?;
    crate::metrics::snapshot_created(match &scope {
        Scope::Collection(c) | Scope::Shard(c, _) => c,
        Scope::Full => "",
    });
    Ok(describe(&target)?)
}

fn write_stored(view: &SnapshotView, target: &Path, temp_path: &Path) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".partial")
        .tempfile_in(temp_path)?;
    let digest = copy_hashing(view, temp.as_file())?;
    temp.as_file().sync_all()?;
    // The same state streamed later (live file, HTTP) need not hash again.
    super::checksum::remember(view.layout(), digest);
    let digest = hex(&digest);
    // The sidecar first (via its own temp + rename), so the snapshot never appears without it.
    write_atomically(&sidecar(target), digest.as_bytes())?;
    persist(temp, target)?;
    sync_dir(target.parent().unwrap())?;
    Ok(())
}

/// Write `view`'s archive into `file` and return its SHA-256, in one pass: hashing
/// runs on a thread of its own beside the reading and writing (a state hashed before
/// is not hashed again), and writeback starts every few MiB, so the `fsync` after
/// finds little left to write.
fn copy_hashing(view: &SnapshotView, file: &File) -> Result<[u8; 32]> {
    let layout = view.layout();
    let known = super::checksum::known_sha256(layout);
    std::thread::scope(|threads| {
        let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let hasher = known.is_none().then(|| {
            threads.spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in chunks {
                    hasher.update(&chunk);
                }
                <[u8; 32]>::from(hasher.finalize())
            })
        });
        let mut offset = 0u64;
        let mut unsynced_from = 0u64;
        while offset < layout.size() {
            let mut buf = vec![0u8; CHUNK.min((layout.size() - offset) as usize)];
            let n = layout.read_at(offset, &mut buf)?;
            if n == 0 {
                return Err(StorageError::internal("snapshot ended before its size"));
            }
            buf.truncate(n);
            file.write_all_at(&buf, offset)?;
            offset += n as u64;
            if offset - unsynced_from >= super::sparse::WRITEBACK_EVERY {
                super::sparse::start_writeback(file, unsynced_from, offset - unsynced_from);
                unsynced_from = offset;
            }
            if hasher.is_some() && to_hasher.send(buf).is_err() {
                return Err(StorageError::internal("the hashing thread ended early"));
            }
        }
        drop(to_hasher);
        match (hasher, known) {
            (Some(hasher), _) => hasher
                .join()
                .map_err(|_| StorageError::internal("the hashing thread panicked")),
            (None, Some(known)) => Ok(known),
            (None, None) => unreachable!("a hasher runs when the digest is unknown"),
        }
    })
}

/// Remove what an interrupted creation left among the stored snapshots: hidden
/// `.snapshot-…` and `.tmp-…` files (a complete snapshot is never hidden). Run at
/// start, before anything writes there.
pub fn clean_leftovers(snapshots_path: &Path) -> io::Result<()> {
    let mut dirs = vec![snapshots_path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(path);
            } else if name.starts_with(".snapshot-") || name.starts_with(".tmp-") {
                tracing::info!(path = %path.display(), "removing a stored snapshot's leftover from an interrupted creation");
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Rename into place; across file systems, copy into a hidden temp beside the target first.
fn persist(temp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
    match temp.persist_noclobber(target) {
        Ok(_) => Ok(()),
        Err(e) if e.error.raw_os_error() == Some(libc::EXDEV) => {
            let dir = target.parent().unwrap();
            let local = tempfile::Builder::new()
                .prefix(".snapshot-")
                .suffix(".partial")
                .tempfile_in(dir)?;
            io::copy(&mut File::open(e.file.path())?, &mut local.as_file())?;
            local.as_file().sync_all()?;
            local.persist_noclobber(target).map_err(|e| e.error)?;
            Ok(())
        }
        Err(e) => Err(e.error.into()),
    }
}

pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap();
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
