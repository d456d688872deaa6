//! The storage layer: every collection under `<storage_path>/collections/`, each
//! shard a Qdrant Edge shard with one writer (see [`shard`] for the freeze).
//!
//! Creation and deletion are atomic on disk: a collection is built in a hidden
//! staging directory and renamed into place; a deleted one is renamed to a hidden
//! name before it is removed. Hidden leftovers from a crash are removed at start.

pub mod cache_pin;
pub mod collection;
pub mod collection_config;
pub mod error;
pub mod extents;
pub mod format;
pub mod names;
pub mod ops;
pub mod pending_log;
pub mod router;
pub mod shard;
pub mod snapshot_error;
pub mod switch;
pub mod turns;
pub mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

pub use collection::{
    Collection, CollectionFreeze, CollectionStats, NearestQuery, QueryVector, ReadOptions,
    ScrollPage,
};
pub use collection_config::{CollectionConfig, CreateCollection};
pub use error::{Result, StorageError};
pub use snapshot_error::SnapshotError;
pub(crate) use switch::{crash_point, pause_point};

/// How often the maintenance thread looks for shards to flush or optimize.
const MAINTENANCE_TICK: Duration = Duration::from_millis(500);

pub struct Storage {
    collections_dir: PathBuf,
    /// This node's id in snapshots' `replica_state.json` (stable across restarts).
    peer_id: u64,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Serializes create and delete, which take seconds and touch the directory.
    layout_lock: tokio::sync::Mutex<()>,
    stopping: Arc<AtomicBool>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    /// Where restores unpack (`temp_path` when it shares the collections' file
    /// system, see [`Storage::stage_restores_in`]); beside the collections if unset.
    restore_staging: std::sync::OnceLock<PathBuf>,
    /// `temp_path` (see [`Storage::stage_restores_in`]).
    temp_path: std::sync::OnceLock<PathBuf>,
    /// `storage.max_restore_bytes` (see [`Storage::limit_restores`]).
    max_restore_bytes: std::sync::OnceLock<u64>,
    /// One restore or partial apply per collection at a time.
    restore_turns: turns::RestoreTurns,
    /// One partial apply or pull per shard.
    shard_claims: turns::ShardClaims,
    /// Name prefixes of read-only mirror collections, with the cluster each follows
    /// (`<cluster>.`): writers are refused there ([`Storage::check_writable`]).
    mirrors: RwLock<Vec<(String, String)>>,
    /// Disk bytes the restores into this storage have declared since it opened
    /// (only ever grows; see `snapshot::limits::Reservation`).
    restore_ledger: Arc<std::sync::atomic::AtomicU64>,
}

/// Prefix of a restore's staging directory.
const RESTORING_PREFIX: &str = ".restoring-";

/// What the daemon writes into `temp_path` while it works, by name prefix; found at
/// start, it is a crash's leftover.
/// The start of a backup restore drill's scratch directory in `temp_path`.
pub const DRILL_SCRATCH_PREFIX: &str = ".backup-drill-";

const TEMP_LEFTOVERS: [(&str, &str); 4] = [
    (
        DRILL_SCRATCH_PREFIX,
        "an interrupted restore drill's scratch storage",
    ),
    (
        RESTORING_PREFIX,
        "an interrupted restore's staging directory",
    ),
    (
        ".full-",
        "an interrupted full-storage restore's unpacked archive",
    ),
    (".snapshot-", "a stored snapshot being written"),
];

impl Storage {
    /// Open (or initialize) the storage at `storage_path` and load every collection.
    pub fn open(storage_path: &Path) -> Result<Arc<Self>> {
        // A directory of a newer format is refused before anything in it changes.
        fs_err::create_dir_all(storage_path)?;
        format::check_and_stamp(storage_path)?;
        let collections_dir = storage_path.join("collections");
        fs_err::create_dir_all(&collections_dir)?;
        // A restore interrupted by a crash is finished or undone before anything
        // else looks at the directory (its journal says which).
        switch::recover(&collections_dir)?;
        let mut collections = BTreeMap::new();
        for entry in fs_err::read_dir(&collections_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') {
                tracing::info!(path = %path.display(), "removing a leftover from an interrupted create or delete");
                remove_path(&path)?;
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            let started = std::time::Instant::now();
            let collection = Collection::open(&path, &name)?;
            tracing::info!(collection = %name, shards = collection.shards().len(), elapsed_ms = started.elapsed().as_millis() as u64, "loaded");
            collections.insert(name, Arc::new(collection));
        }
        let peer_id = load_or_create_peer_id(storage_path)?;
        let storage = Arc::new(Storage {
            peer_id,
            collections_dir,
            collections: RwLock::new(collections),
            layout_lock: tokio::sync::Mutex::new(()),
            stopping: Arc::new(AtomicBool::new(false)),
            maintenance: Mutex::new(None),
            restore_staging: std::sync::OnceLock::new(),
            temp_path: std::sync::OnceLock::new(),
            max_restore_bytes: std::sync::OnceLock::new(),
            restore_turns: turns::RestoreTurns::default(),
            shard_claims: turns::ShardClaims::default(),
            restore_ledger: Arc::default(),
            mirrors: RwLock::default(),
        });
        storage.start_maintenance()?;
        Ok(storage)
    }

    /// Collection `name`'s turn to be restored or to have a partial snapshot
    /// applied: one at a time per collection, the next one waits.
    pub async fn restore_turn(&self, name: &str) -> turns::Turn {
        self.restore_turns.wait(name).await
    }

    /// Claim shard `id` of `collection` for a partial apply or pull; `None` while
    /// another one holds it.
    pub fn try_claim_shard(&self, collection: &str, id: u32) -> Option<turns::ShardClaim> {
        self.shard_claims.try_take(collection, id)
    }

    /// The count of disk bytes this storage's restores have declared, which each
    /// restore subtracts from the free space it measured when it started.
    pub fn restore_ledger(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.restore_ledger.clone()
    }

    /// Collections named `<cluster>.…` mirror a followed Qdrant cluster: only the
    /// follower writes them.
    pub fn set_mirrored_clusters(&self, clusters: &[String]) {
        *self.mirrors.write().unwrap() = clusters
            .iter()
            .map(|c| (format!("{c}."), c.clone()))
            .collect();
    }

    /// Refuse a writer's change to collection `name` (points, indexes, a restore, a
    /// delete, a create under the name) when it is a mirror of a followed cluster.
    pub fn check_writable(&self, name: &str) -> Result<()> {
        match self
            .mirrors
            .read()
            .unwrap()
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
        {
            Some((_, cluster)) => Err(StorageError::Forbidden(format!(
                "collection `{name}` is a read-only mirror of Qdrant cluster `{cluster}` (follow.clusters): write to the cluster; snapfs follows it"
            ))),
            None => Ok(()),
        }
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::CollectionNotFound(name.to_string()))
    }

    pub fn collection_names(&self) -> Vec<String> {
        self.collections.read().unwrap().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.collections.read().unwrap().is_empty()
    }

    pub async fn create_collection(
        self: &Arc<Self>,
        name: &str,
        config: CollectionConfig,
    ) -> Result<()> {
        names::validate_collection_name(name)?;
        config.validate()?;
        let _layout = self.layout_lock.lock().await;
        if self.collections.read().unwrap().contains_key(name) {
            return Err(StorageError::CollectionExists(name.to_string()));
        }
        let this = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || this.create_blocking(&name, config))
            .await
            .map_err(StorageError::from_cause)?
    }

    fn create_blocking(&self, name: &str, config: CollectionConfig) -> Result<()> {
        let staging = self
            .collections_dir
            .join(format!(".creating-{}", uuid::Uuid::new_v4()));
        let built = Collection::create(&staging, name, config);
        // The engine remembers its path: build, close, rename, then open for real.
        match built {
            Ok(collection) => collection.shutdown(),
            Err(err) => {
                let _ = remove_path(&staging);
                return Err(err);
            }
        }
        let target = self.collections_dir.join(name);
        fs_err::rename(&staging, &target)?;
        let collection = Collection::open(&target, name)?;
        self.collections
            .write()
            .unwrap()
            .insert(name.to_string(), Arc::new(collection));
        tracing::info!(collection = name, "created");
        Ok(())
    }

    /// Let restores unpack into `temp_path` (`storage.temp_path`: uploads and
    /// unpack staging), if it is on the collections' file system — the switch is a rename,
    /// which cannot cross file systems; otherwise they stay beside the collections.
    /// Removes what an interrupted restore left there (call after [`Storage::open`],
    /// which has already finished or undone any interrupted switch).
    pub fn stage_restores_in(&self, temp_path: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        fs_err::create_dir_all(temp_path)?;
        let _ = self.temp_path.set(temp_path.to_path_buf());
        for entry in fs_err::read_dir(temp_path)? {
            let path = entry?.path();
            let name = file_name(&path);
            if let Some((_, what)) = TEMP_LEFTOVERS
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
            {
                tracing::info!(path = %path.display(), "removing {what} a crash left");
                remove_path(&path)?;
            }
        }
        if fs_err::metadata(temp_path)?.dev() == fs_err::metadata(&self.collections_dir)?.dev() {
            let _ = self.restore_staging.set(temp_path.to_path_buf());
        } else {
            tracing::info!(temp_path = %temp_path.display(), "temp_path is on another file system than the collections: restores unpack beside the collections instead");
        }
        Ok(())
    }

    /// Bound the logical bytes one restore may unpack (`storage.max_restore_bytes`);
    /// unset, each restore's bound follows the free space (the snapshot layer's
    /// `intake::default_logical_limit`).
    pub fn limit_restores(&self, max_restore_bytes: u64) {
        let _ = self.max_restore_bytes.set(max_restore_bytes);
    }

    /// The configured bound on one restore's logical bytes, if any.
    pub fn max_restore_bytes(&self) -> Option<u64> {
        self.max_restore_bytes.get().copied()
    }

    /// The daemon is stopping (its shards are closing for good).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Where temporary files go (`temp_path`; the collections directory before
    /// [`Storage::stage_restores_in`] named one).
    pub fn temp_path(&self) -> PathBuf {
        self.temp_path
            .get()
            .cloned()
            .unwrap_or_else(|| self.collections_dir.clone())
    }

    /// A fresh staging directory for a restore (see [`Storage::stage_restores_in`]).
    pub fn restore_staging_dir(&self) -> PathBuf {
        let root = self.restore_staging.get().unwrap_or(&self.collections_dir);
        root.join(format!("{RESTORING_PREFIX}{}", uuid::Uuid::new_v4()))
    }

    /// A fresh hidden directory beside the collections, for building a collection to
    /// swap in (removed at start if a crash leaves it behind).
    pub fn staging_dir(&self, purpose: &str) -> PathBuf {
        self.collections_dir
            .join(format!(".{purpose}-{}", uuid::Uuid::new_v4()))
    }

    pub async fn delete_collection(self: &Arc<Self>, name: &str) -> Result<bool> {
        let _layout = self.layout_lock.lock().await;
        let Some(collection) = self.collections.write().unwrap().remove(name) else {
            return Ok(false);
        };
        let graveyard = self
            .collections_dir
            .join(format!(".deleting-{}", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || -> Result<()> {
            collection.shutdown();
            fs_err::rename(collection.dir(), &graveyard)?;
            // Readers holding the collection keep their open files; the directory goes now.
            remove_path(&graveyard)?;
            Ok(())
        })
        .await
        .map_err(StorageError::from_cause)??;
        tracing::info!(collection = name, "deleted");
        Ok(true)
    }

    fn start_maintenance(self: &Arc<Self>) -> Result<()> {
        let weak: Weak<Storage> = Arc::downgrade(self);
        let stopping = self.stopping.clone();
        let handle = std::thread::Builder::new().name("maintenance".into()).spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                std::thread::sleep(MAINTENANCE_TICK);
                let Some(storage) = weak.upgrade() else { return };
                let collections: Vec<_> = storage.collections.read().unwrap().values().cloned().collect();
                drop(storage);
                for collection in collections {
                    let interval = Duration::from_secs(collection.config().optimizer_config.flush_interval_sec);
                    for shard in collection.shards() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Err(err) = shard.maintain(interval) {
                            tracing::error!(collection = collection.name(), shard = shard.id(), %err, "maintenance failed");
                        }
                    }
                }
            }
        })?;
        *self.maintenance.lock().unwrap() = Some(handle);
        Ok(())
    }

    /// Stop maintenance, stop every writer after its queued updates, flush everything.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(handle) = self.maintenance.lock().unwrap().take() {
            let _ = handle.join();
        }
        let collections: Vec<_> = self.collections.read().unwrap().values().cloned().collect();
        for collection in collections {
            collection.shutdown();
        }
    }
}

/// Qdrant peer ids are random integers that fit a JSON number exactly (< 2^53).
fn load_or_create_peer_id(storage_path: &Path) -> Result<u64> {
    let path = storage_path.join("peer_id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text.trim().parse().map_err(|e| {
            StorageError::internal_from(format!("{} is not a number", path.display()), e)
        });
    }
    let id = rand::random_range(1..(1u64 << 53));
    let temp = storage_path.join(".peer_id.tmp");
    fs_err::write(&temp, id.to_string())?;
    fs_err::rename(&temp, &path)?;
    Ok(id)
}

pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs_err::remove_dir_all(path)
    } else {
        fs_err::remove_file(path)
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Every regular file under `dir` (recursively) with its length, best effort: what
/// cannot be read is skipped. Unsorted.
pub fn regular_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out
}

/// The most a JSON file of a shard or collection may hold (`config.json`,
/// `segment.json`, `segment_manifest.json`, …): they come from archives too, and
/// the engine's own are a few KiB.
pub const MAX_JSON_FILE: u64 = 16 << 20;

/// Replace `path` with `data` whole or not at all: a hidden temporary file beside it,
/// synced, renamed over it, and the directory synced.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a file to replace has a directory"))?;
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Read a small file whole, refusing one larger than `limit` (its size is checked
/// before it is read, and the read stops at the limit should it grow meanwhile).
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = fs_err::File::open(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is {size} bytes, more than the {limit} such a file may have",
                file_name(path)
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Open `rest` (relative, plain parts) beneath directory `dir` for reading: no `..`
/// out of it, no symbolic link anywhere on the way (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; where the kernel lacks it or a seccomp
/// filter refuses it, one component at a time, none followed), and non-blocking, so
/// opening a FIFO cannot wait for a writer.
pub fn open_beneath(dir: &Path, rest: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let base = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat2(
        &base,
        rest,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(std::fs::File::from(fd)),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let parts: Vec<_> = rest.components().collect();
    let mut at = base;
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
        };
        if i + 1 == parts.len() {
            return Ok(std::fs::File::from(rustix::fs::openat(
                &at,
                *name,
                flags,
                Mode::empty(),
            )?));
        }
        at = rustix::fs::openat(
            &at,
            *name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Err(std::io::Error::from_raw_os_error(libc::ENOENT))
}

/// [`open_beneath`], and only a regular file (a device or a FIFO would block or
/// never end).
pub fn open_regular_beneath(dir: &Path, relative: &str) -> std::io::Result<std::fs::File> {
    let file = open_beneath(dir, Path::new(relative))?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// `statvfs` of the file system holding `path`.
pub fn filesystem_stats(path: &Path) -> std::io::Result<rustix::fs::StatVfs> {
    Ok(rustix::fs::statvfs(path)?)
}

/// `syncfs` of the file system holding `dir`: everything staged there is durable.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let handle = fs_err::File::open(dir)?;
    rustix::fs::syncfs(&handle).map_err(std::io::Error::from)?;
    Ok(())
}
