//! Stored snapshots, wherever they are kept: one [`SnapshotStore`] trait, chosen
//! once at start ([`open`]) and asked by the service, the API and the mount without
//! knowing which it is.
//!
//! Three stores implement it: [`local`] (files in `storage.snapshots_path`, each beside
//! a `<name>.checksum` sidecar), [`s3`] (objects laid out as Qdrant lays them out,
//! each beside a `.checksum` object) and [`repository`] (generations in a
//! deduplicated, encrypted restic repository). The trait is what every store can promise:
//! - a listing per scope with sizes, times and checksums known up front (a store
//!   that keeps an archive in pieces, e.g. a deduplicating repository, records its
//!   size and checksum when it writes it, and lists them without assembling it);
//! - reads by offset ([`StoredReader`]): an archive need not exist as one file or
//!   object, only be readable at any offset (a plain file also offers itself, so the
//!   mount can pass reads through to the kernel);
//! - creation from a frozen view, under a name the store picks and holds while it
//!   writes ([`NameReservations`], shared by the stores: Qdrant's names, `-1`, `-2`,
//!   … on a clash), complete-or-nothing: a listed snapshot is whole and its checksum
//!   already there.
//!
//! Methods block (a store does file I/O or waits for a network): call them from a
//! blocking thread (`spawn_blocking`, the mount's workers), never from an async task.
//! To add a store: implement the trait in a module beside these, give it a
//! `snapshots_storage` value in the configuration, construct it in [`open`], and run
//! the shared conformance checks ([`conformance`]) against it.

pub mod conformance;
pub mod local;
pub mod repository;
pub mod s3;
pub mod s3_reader;

use std::collections::HashSet;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::names::{creation_time, name_timestamp};
use super::view::{Scope, SnapshotView};
use crate::storage::{Result, StorageError};

/// A stored snapshot's file name ends so.
pub const SNAPSHOT_EXT: &str = ".snapshot";
/// Its checksum sidecar's name: the snapshot's name and this.
pub const CHECKSUM_EXT: &str = ".checksum";

/// Qdrant's `SnapshotDescription`: what REST and gRPC answer for a stored snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotDescription {
    pub name: String,
    pub creation_time: Option<String>,
    pub size: u64,
    pub checksum: Option<String>,
}

/// One stored snapshot as a store lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
    /// The checksum sidecar's text (64 lowercase hex), when there is one.
    pub checksum: Option<String>,
}

impl StoredSnapshot {
    pub fn description(&self) -> SnapshotDescription {
        SnapshotDescription {
            name: self.name.clone(),
            creation_time: Some(creation_time(self.modified)),
            size: self.size,
            checksum: self.checksum.clone(),
        }
    }
}

/// What a store knows of how a stored snapshot was made, beyond Qdrant's
/// description (a repository generation's figures); `snapfs snapshot list -v`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredDetails {
    pub name: String,
    /// The store's own id (a restic snapshot id).
    pub id: String,
    /// Logical bytes of the files the snapshot holds.
    pub bytes_covered: u64,
    /// Bytes it added to the store (new chunks, compressed and encrypted).
    pub bytes_added: u64,
    /// Files chunked anew, changed since the parent, and found unchanged.
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// How long writing it took.
    pub seconds: f64,
    /// What it recorded of the state it holds (a collection snapshot's point count
    /// and the SHA-256 of its configuration), for a restore drill to compare with.
    pub points: Option<u64>,
    pub config_sha256: Option<String>,
    /// The store's tags on it (a repository generation's restic tags).
    pub tags: Vec<String>,
}

/// Reads a stored snapshot's bytes by offset; blocking.
pub trait StoredReader: Send + Sync {
    /// Fill `buf` from `offset`; short only at the end (0 past it).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;

    /// The plain file holding exactly these bytes, when there is one.
    fn file(&self) -> Option<&File> {
        None
    }
}

/// A file read by offset with pread, short only at its end (a stored snapshot's
/// file, a `file://` location's).
pub struct FileReader(pub File);

impl StoredReader for FileReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match std::os::unix::fs::FileExt::read_at(
                &self.0,
                &mut buf[done..],
                offset + done as u64,
            ) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

/// A stored snapshot opened for reading.
pub struct OpenedSnapshot {
    pub snapshot: StoredSnapshot,
    /// Names these very bytes (file identity and time, object ETag…): HTTP's
    /// validators are made from it.
    pub version: [u8; 32],
    /// How the snapshot is named in messages and logs (`s3://bucket/key`, or its name).
    pub shown: String,
    pub reader: Arc<dyn StoredReader>,
}

/// Where stored snapshots are kept. See the module note.
pub trait SnapshotStore: Send + Sync {
    /// Where, in words, for logs (`snapshots directory /x`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// The stored snapshots of `scope`, sorted by name.
    fn list(&self, scope: &Scope) -> Result<Vec<StoredSnapshot>>;

    /// Stored snapshot `name` of `scope`: `NotFound` for anything that names none
    /// (a bad name, a hidden one, a checksum sidecar, a symlink…).
    fn stat(&self, scope: &Scope, name: &str) -> Result<StoredSnapshot>;

    /// Stored snapshot `name` of `scope`, for reading.
    fn open(&self, scope: &Scope, name: &str) -> Result<OpenedSnapshot>;

    /// Write `view`'s archive as a new stored snapshot of its scope and return it:
    /// complete with its checksum, or nothing left behind.
    fn create(&self, view: &SnapshotView) -> Result<StoredSnapshot>;

    /// Remove stored snapshot `name` of `scope` and its checksum. One already gone
    /// meanwhile is no error; one that never was is `NotFound`.
    fn delete(&self, scope: &Scope, name: &str) -> Result<()>;

    /// The name of the stored snapshot of `scope` that `id` names in the store's own
    /// terms (a repository's snapshot id, or a unique prefix of it): what a
    /// `restic:<id>` location resolves to. Stores without such ids refuse.
    fn name_by_id(&self, _scope: &Scope, _id: &str) -> Result<String> {
        Err(StorageError::bad_request(
            "restic:<id> locations name generations of the repository store; this daemon stores snapshots elsewhere",
        ))
    }

    /// How the stored snapshots of `scope` were made, where the store records it
    /// (none for plain files and objects).
    fn details(&self, _scope: &Scope) -> Result<Vec<StoredDetails>> {
        Ok(Vec::new())
    }

    /// Reclaim the space of removed snapshots (a repository's prune), after the
    /// creations under way; what it freed, in words. `None` where a delete frees its
    /// space already.
    fn prune(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Check the store's structure and, with `read_part = Some((k, n))`, read part
    /// `k` of `n` of its data: the problems found, in words (empty: none). `None`
    /// where the store has no structure beyond its files.
    fn check(&self, _read_part: Option<(u32, u32)>) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// Keep `bytes` as record `name` of `group` (a cluster generation's manifest),
    /// replacing one of that name; whole or not at all. Both names are plain
    /// ([`check_record_name`]).
    fn put_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()>;

    /// Record `name` of `group`, up to `limit` bytes: `NotFound` when there is none.
    fn get_record(&self, group: &str, name: &str, limit: u64) -> Result<Vec<u8>>;

    /// The names of `group`'s records, sorted.
    fn list_records(&self, group: &str) -> Result<Vec<String>>;

    /// Remove record `name` of `group`; one that is not there is no error.
    fn delete_record(&self, group: &str, name: &str) -> Result<()>;

    /// How long a listing may be reused by a reader that lists often (the mount):
    /// zero where listing is cheap.
    fn listing_ttl(&self) -> Duration {
        Duration::ZERO
    }

    /// The daemon stops: stop writing, leave nothing half-written; waits up to `limit`.
    fn stop(&self, _limit: Duration) {}
}

/// Which store, and its settings: the daemon's (`storage.snapshots_config`), or a
/// backup policy's own (`store:`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreChoice {
    /// The local store's directory.
    pub snapshots_path: std::path::PathBuf,
    /// `Some`: an S3 bucket.
    pub s3: Option<s3::S3Config>,
    /// `Some`: a restic repository (wins over `s3`, which then only gives its S3 settings).
    pub repository: Option<repository::RepositoryConfig>,
}

impl StoreChoice {
    /// Both name the same place (a repository's location, a bucket and prefix at
    /// one endpoint, a directory), whatever else their settings say: one store
    /// object must serve a place, so names are reserved and prunes ordered in one.
    pub fn same_place(&self, other: &StoreChoice) -> bool {
        match (&self.repository, &other.repository) {
            (Some(a), Some(b)) => return a.location == b.location,
            (None, None) => {}
            _ => return false,
        }
        match (&self.s3, &other.s3) {
            (Some(a), Some(b)) => {
                a.bucket == b.bucket && a.prefix == b.prefix && a.endpoint_url == b.endpoint_url
            }
            (None, None) => self.snapshots_path == other.snapshots_path,
            _ => false,
        }
    }

    /// The store this choice names, opened ([`open`]).
    pub fn open(&self, temp_path: &std::path::Path) -> Result<Arc<dyn SnapshotStore>> {
        open(
            &self.snapshots_path,
            temp_path,
            self.s3.as_ref(),
            self.repository.as_ref(),
        )
    }
}

/// The store the configuration names, opened (an interrupted creation's leftovers
/// removed; a repository created on first use).
pub fn open(
    snapshots_path: &std::path::Path,
    temp_path: &std::path::Path,
    s3: Option<&s3::S3Config>,
    repository: Option<&repository::RepositoryConfig>,
) -> Result<Arc<dyn SnapshotStore>> {
    Ok(match (repository, s3) {
        (Some(config), _) => Arc::new(repository::RepositoryStore::open(config)?),
        (None, Some(config)) => {
            let store = s3::S3Store::new(config)?;
            tracing::info!(location = %store.location(), "stored snapshots go to S3");
            Arc::new(store)
        }
        (None, None) => Arc::new(local::LocalStore::open(snapshots_path, temp_path)?),
    })
}

/// The first part of a new stored snapshot's name, as Qdrant names them:
/// `<c>-<time>`, `<c>-shard-<id>-<time>`, `full-snapshot-<time>`.
pub fn name_base(scope: &Scope, now: SystemTime) -> String {
    let ts = name_timestamp(now);
    match scope {
        Scope::Collection(c) => format!("{c}-{ts}"),
        Scope::Shard(c, id) => format!("{c}-shard-{id}-{ts}"),
        Scope::Full => format!("full-snapshot-{ts}"),
    }
}

/// Names being written right now by one store (not yet listed). A name is held
/// from [`NameReservations::reserve`] until its [`Reserved`] is dropped.
#[derive(Default)]
pub struct NameReservations {
    held: Arc<Mutex<HashSet<(Scope, String)>>>,
}

/// A name held for a snapshot being written; released when dropped.
pub struct Reserved {
    pub name: String,
    scope: Scope,
    held: Arc<Mutex<HashSet<(Scope, String)>>>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let key = (self.scope.clone(), std::mem::take(&mut self.name));
        self.held.lock().unwrap().remove(&key);
    }
}

impl NameReservations {
    /// Hold `<base>.snapshot`, or `<base>-1.snapshot`, `-2`, … : the first that no
    /// creation of this store holds and `take` accepts. `take(name)` is the store's
    /// own check (the name is free where it stores, and taken there if it can be):
    /// `Ok(false)` moves on to the next.
    pub fn reserve(
        &self,
        scope: &Scope,
        base: &str,
        mut take: impl FnMut(&str) -> Result<bool>,
    ) -> Result<Reserved> {
        for n in 0u32.. {
            let name = match n {
                0 => format!("{base}{SNAPSHOT_EXT}"),
                n => format!("{base}-{n}{SNAPSHOT_EXT}"),
            };
            let key = (scope.clone(), name.clone());
            if !self.held.lock().unwrap().insert(key.clone()) {
                continue;
            }
            let reserved = Reserved {
                name,
                scope: scope.clone(),
                held: self.held.clone(),
            };
            if take(&reserved.name)? {
                return Ok(reserved);
            }
        }
        Err(StorageError::internal("no free snapshot name"))
    }
}

/// A record's group or name: 1 to 128 letters, digits, `-`, `_` or `.`, not
/// starting with `.` (it becomes part of a path or key).
pub fn check_record_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::NotFound(format!("record {name:?} not found")))
    }
}

/// What `NotFound` says for a record.
pub fn record_not_found(group: &str, name: &str) -> StorageError {
    StorageError::NotFound(format!("{group} record {name} not found"))
}

/// What `NotFound` says for a stored snapshot.
pub fn not_found(name: &str) -> StorageError {
    StorageError::NotFound(format!("Snapshot {name} not found"))
}

/// A name that can be a stored snapshot's at all: `validate_snapshot_name`, and
/// `*.snapshot` like every listed one. Anything else is simply not found.
pub fn check_name(name: &str) -> Result<()> {
    super::names::validate_snapshot_name(name)?;
    if !name.ends_with(SNAPSHOT_EXT) {
        return Err(not_found(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_skip_held_and_taken_names_and_release_on_drop() {
        let names = NameReservations::default();
        let scope = Scope::Collection("c".into());
        let first = names.reserve(&scope, "c-t", |_| Ok(true)).unwrap();
        assert_eq!(first.name, "c-t.snapshot");
        // Held by the first; and the store says `-1` is taken where it stores.
        let second = names
            .reserve(&scope, "c-t", |n| Ok(n != "c-t-1.snapshot"))
            .unwrap();
        assert_eq!(second.name, "c-t-2.snapshot");
        // Another scope has its own names.
        let other = Scope::Shard("c".into(), 0);
        assert_eq!(
            names.reserve(&other, "c-t", |_| Ok(true)).unwrap().name,
            "c-t.snapshot"
        );
        drop(first);
        assert_eq!(
            names.reserve(&scope, "c-t", |_| Ok(true)).unwrap().name,
            "c-t.snapshot"
        );
    }

    #[test]
    fn one_place_is_one_store_whatever_else_the_settings_say() {
        use repository::{Location, RepositoryConfig};
        let repo = |path: &str, password: &str| StoreChoice {
            snapshots_path: "/data/snapshots".into(),
            repository: Some(RepositoryConfig {
                location: Location::Local(path.into()),
                password: password.into(),
                cache_dir: None,
            }),
            ..StoreChoice::default()
        };
        let mut policy = repo("/backups/repo", "a");
        policy.snapshots_path = Default::default();
        assert!(repo("/backups/repo", "a").same_place(&policy));
        assert!(!repo("/backups/other", "a").same_place(&policy));
        let local = |path: &str| StoreChoice {
            snapshots_path: path.into(),
            ..StoreChoice::default()
        };
        assert!(local("/x").same_place(&local("/x")));
        assert!(!local("/x").same_place(&local("/y")));
        assert!(!local("/backups/repo").same_place(&policy));
    }

    #[test]
    fn only_snapshot_names_are_checked_in() {
        assert!(check_name("docs-1.snapshot").is_ok());
        assert!(matches!(
            check_name("docs-1.snapshot.checksum"),
            Err(StorageError::NotFound(_))
        ));
        assert!(check_name("../x.snapshot").is_err());
    }
}
