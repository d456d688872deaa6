//! The local store: stored snapshots as files in `storage.snapshots_path`, each
//! beside a `<name>.checksum` sidecar (64 lowercase hex, no newline, Qdrant's
//! convention): `<c>/<name>`, `<c>/shards/<id>/<name>`, `<name>` at the top.
//!
//! Creation streams the live view into `temp_path` while hashing (one pass), fsyncs,
//! writes the sidecar, then renames the archive into place: a listed snapshot is
//! always complete and its checksum is already there. Names are looked up without
//! following symlinks (one could lead out of the snapshots directory).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{
    CHECKSUM_EXT, NameReservations, OpenedSnapshot, SNAPSHOT_EXT, SnapshotStore, StoredSnapshot,
    check_name, name_base, not_found,
};
use crate::snapshot::digest::hex;
use crate::snapshot::view::{Scope, SnapshotView};
use crate::storage::{Result, StorageError};

/// Copy buffer for writing archives: large sequential writes.
const CHUNK: usize = 1 << 20;

pub struct LocalStore {
    root: PathBuf,
    temp_path: PathBuf,
    names: NameReservations,
}

impl LocalStore {
    /// The store in `root`, writing through `temp_path`; what an interrupted
    /// creation left is removed first.
    pub fn open(root: &Path, temp_path: &Path) -> Result<LocalStore> {
        clean_leftovers(root)?;
        Ok(LocalStore {
            root: root.to_path_buf(),
            temp_path: temp_path.to_path_buf(),
            names: NameReservations::default(),
        })
    }

    /// Where stored snapshots of `scope` live.
    fn scope_dir(&self, scope: &Scope) -> PathBuf {
        match scope {
            Scope::Collection(c) => self.root.join(c),
            Scope::Shard(c, id) => self.root.join(c).join("shards").join(id.to_string()),
            Scope::Full => self.root.clone(),
        }
    }

    /// The path of stored snapshot `name` of `scope`, which must exist as a regular
    /// file directly in the scope's directory (not through a symlink).
    fn stored_path(&self, scope: &Scope, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        let path = self.scope_dir(scope).join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(path),
            _ => Err(not_found(name)),
        }
    }
}

impl LocalStore {
    /// Records live in `.records/<group>/<name>.json` (a hidden directory: never
    /// a collection's).
    fn record_path(&self, group: &str, name: &str) -> Result<PathBuf> {
        super::check_record_name(group)?;
        super::check_record_name(name)?;
        Ok(self
            .root
            .join(".records")
            .join(group)
            .join(format!("{name}.json")))
    }
}

impl SnapshotStore for LocalStore {
    fn location(&self) -> String {
        format!("snapshots directory {}", self.root.display())
    }

    fn list(&self, scope: &Scope) -> Result<Vec<StoredSnapshot>> {
        let entries = match std::fs::read_dir(self.scope_dir(scope)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(SNAPSHOT_EXT)
                && !name.starts_with('.')
                && entry.file_type()?.is_file()
            {
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

    fn stat(&self, scope: &Scope, name: &str) -> Result<StoredSnapshot> {
        let path = self.stored_path(scope, name)?;
        describe(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_found(name),
            _ => e.into(),
        })
    }

    fn open(&self, scope: &Scope, name: &str) -> Result<OpenedSnapshot> {
        let path = self.stored_path(scope, name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => not_found(name),
                _ => e.into(),
            })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(not_found(name));
        }
        // A stored snapshot never changes in place: its identity names its bytes.
        let identity = [
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
        ];
        Ok(OpenedSnapshot {
            snapshot: StoredSnapshot {
                name: name.to_string(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                checksum: read_sidecar(&path),
            },
            version: Sha256::digest(identity.map(u64::to_le_bytes).concat()).into(),
            shown: name.to_string(),
            reader: Arc::new(super::FileReader(file)),
        })
    }

    fn create(&self, view: &SnapshotView) -> Result<StoredSnapshot> {
        let dir = self.scope_dir(view.scope());
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&self.temp_path)?;
        let base = name_base(view.scope(), SystemTime::now());
        let reserved = self
            .names
            .reserve(view.scope(), &base, |name| Ok(!dir.join(name).exists()))?;
        let target = dir.join(&reserved.name);
        write_stored(view, &target, &self.temp_path)?;
        drop(reserved);
        Ok(describe(&target)?)
    }

    fn put_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()> {
        Ok(put_record_file(&self.record_path(group, name)?, bytes)?)
    }

    fn get_record(&self, group: &str, name: &str, limit: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        self.record_path(group, name)?;
        // A regular file beneath the store's root, no symbolic link on the way.
        let relative = format!(".records/{group}/{name}.json");
        let file =
            crate::storage::open_regular_beneath(&self.root, &relative).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::NotFound => super::record_not_found(group, name),
                    _ => e.into(),
                }
            })?;
        if file.metadata()?.len() > limit {
            return Err(StorageError::internal(format!(
                "{group} record {name} is larger than {limit} bytes"
            )));
        }
        let mut bytes = Vec::new();
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn list_records(&self, group: &str) -> Result<Vec<String>> {
        super::check_record_name(group)?;
        let entries = match std::fs::read_dir(self.root.join(".records").join(group)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json")
                && super::check_record_name(name).is_ok()
                && entry.file_type()?.is_file()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete_record(&self, group: &str, name: &str) -> Result<()> {
        match std::fs::remove_file(self.record_path(group, name)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<()> {
        let path = self.stored_path(scope, name)?;
        for file in [path.clone(), sidecar(&path)] {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

fn put_record_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("a record has a directory"))?;
    write_atomically(path, bytes)
}

fn describe(path: &Path) -> io::Result<StoredSnapshot> {
    let meta = std::fs::metadata(path)?;
    Ok(StoredSnapshot {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        checksum: read_sidecar(path),
    })
}

/// The sidecar's text, if it has one (at most a line's worth is read).
fn read_sidecar(path: &Path) -> Option<String> {
    let mut text = String::new();
    io::Read::read_to_string(
        &mut io::Read::take(File::open(sidecar(path)).ok()?, 1024),
        &mut text,
    )
    .ok()?;
    Some(text.trim().to_string())
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CHECKSUM_EXT);
    PathBuf::from(name)
}

fn write_stored(view: &SnapshotView, target: &Path, temp_path: &Path) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".partial")
        .tempfile_in(temp_path)?;
    let digest = copy_hashing(view, temp.as_file())?;
    temp.as_file().sync_all()?;
    // The same state streamed later (live file, HTTP) need not hash again.
    view.snapshots().checksums().remember(view.layout(), digest);
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
    let known = view.snapshots().checksums().known_sha256(layout);
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
            if offset - unsynced_from >= crate::snapshot::sparse::WRITEBACK_EVERY {
                crate::snapshot::sparse::start_writeback(
                    file,
                    unsynced_from,
                    offset - unsynced_from,
                );
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
fn clean_leftovers(snapshots_path: &Path) -> io::Result<()> {
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

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    crate::storage::write_atomically(path, data)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_local_store_keeps_the_stores_promises() {
        let temp = tempfile::tempdir().unwrap();
        let storage = Storage::open(&temp.path().join("storage")).unwrap();
        crate::demo::create_demo_collection(&storage).await.unwrap();
        let store =
            LocalStore::open(&temp.path().join("snapshots"), &temp.path().join("tmp")).unwrap();
        let snapshots = crate::snapshot::Snapshots::new(storage);
        super::super::conformance::check_every_scope(&store, &snapshots);
    }

    #[test]
    fn a_symlink_among_stored_snapshots_names_none() {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalStore::open(temp.path(), temp.path()).unwrap();
        std::fs::write(temp.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(temp.path().join("secret"), temp.path().join("s.snapshot"))
            .unwrap();
        assert!(matches!(
            store.open(&Scope::Full, "s.snapshot"),
            Err(StorageError::NotFound(_))
        ));
        assert!(store.list(&Scope::Full).unwrap().is_empty());
    }
}
