//! The repository store: every stored snapshot is a generation in a restic
//! repository (content-defined chunks stored once, zstd, AES-256-CTR + Poly1305-AES),
//! written and read with rustic_core, in a local directory or an S3 prefix.
//!
//! A generation is one restic snapshot whose tree holds the archive's entries as plain
//! files and directories plus a recipe ([`recipe`]); it reads back as the complete
//! archive, byte for byte, assembled from the members (the tar headers are written
//! again, deterministically). Its tags name it for the restic CLI and for listing
//! without reading it: `snapfs`, `scope=…`, `collection=…`, `shard=…`, `name=…`,
//! `size=…`, `sha256=…` (names percent-encoded, as a tag cannot hold a comma).
//!
//! Incremental forever: each generation names the scope's previous one as its parent,
//! so unchanged frozen files are not chunked again ([`source`]); what is chunked is
//! stored only where the repository lacks the chunk. The archive's SHA-256, recorded
//! at creation, still needs the archive's bytes once (a SHA-256 cannot be put together
//! from parts), or comes from the checksum cache when this state was hashed before.
//!
//! The repository is shared with the restic CLI under restic's lock protocol
//! ([`lock`]): a create or a delete holds a shared lock, so a `restic prune` waits
//! for it and it refuses to start under a `prune`. The password is read once at
//! start (a file, an environment variable or the configuration, never argv); the
//! master key it opens is kept, so later opens do not run the key derivation again.

pub mod lock;
pub mod place;
pub mod recipe;
pub mod s3_place;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustic_core::ReadSubsetOption;
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{MasterKey, Node, NodeType, SnapshotFile, StringList};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, IndexedFullStatus, KeyOptions,
    OpenStatus, PruneOptions, Repository, RepositoryBackends, RepositoryOptions, RusticError,
    SnapshotOptions, TreeId,
};
use sha2::{Digest, Sha256};

use self::lock::{LockError, LockKey};
use self::place::{Backend, LocalPlace, Place};
use self::recipe::{MAX_RECIPE, RECIPE_NAME, Recipe};
use self::source::ArchiveSource;
use super::{
    NameReservations, OpenedSnapshot, SnapshotStore, StoredReader, StoredSnapshot, check_name,
    name_base, not_found,
};
use crate::snapshot::digest::hex;
use crate::snapshot::layout::{ArchiveLayout, RangeRead};
use crate::snapshot::view::{Recorded, Scope, SnapshotView};
use crate::storage::names::url_segment;
use crate::storage::{Result, StorageError};

/// Where the repository is and how to open it.
#[derive(Clone, PartialEq)]
pub struct RepositoryConfig {
    pub location: Location,
    /// The repository's password, already read from where the configuration says.
    pub password: String,
    /// rustic_core's local cache of snapshot and index files (none when unset).
    pub cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RepositoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryConfig")
            .field("location", &self.location)
            .field("password", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    /// A bucket and prefix (`s3:<bucket>/<prefix>`), with the S3 store's endpoint,
    /// region and credentials.
    S3(crate::snapshot::store::s3::S3Config),
}

/// The tag every snapfs generation carries.
const TAG: &str = "snapfs";
/// The host name generations are written under (one daemon's repository may be
/// shared by several hosts; scopes and names, not hosts, tell generations apart).
const HOST: &str = "snapfs";

/// A rustic_core error, shown by its one-line log form.
#[derive(Debug)]
pub struct RepoError(String);

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RepoError {}

#[allow(clippy::boxed_local)] // rustic_core hands its errors boxed
fn repo_error(what: &str, e: Box<RusticError>) -> StorageError {
    tracing::warn!(error = %e.display_log(), "{what}");
    StorageError::internal_from(what, RepoError(e.display_log()))
}

fn locked(e: LockError) -> StorageError {
    match e {
        LockError::Held(who) => StorageError::AlreadyInProgress(format!(
            "the snapshot repository is locked by someone else ({}); try again when it is done",
            who.0
        )),
        LockError::Io(e) => StorageError::internal_from("locking the snapshot repository", e),
    }
}

/// One generation, as its tags describe it.
#[derive(Debug, Clone)]
struct Generation {
    id: rustic_core::repofile::SnapshotId,
    tree: TreeId,
    scope: Scope,
    name: String,
    size: u64,
    sha256: String,
    time: SystemTime,
    summary: Option<rustic_core::repofile::SnapshotSummary>,
    /// What the state held (`points=`, `config=` tags; collection scopes).
    points: Option<u64>,
    config_sha256: Option<String>,
    tags: Vec<String>,
}

impl Generation {
    fn stored(&self) -> StoredSnapshot {
        StoredSnapshot {
            name: self.name.clone(),
            size: self.size,
            modified: self.time,
            checksum: Some(self.sha256.clone()),
        }
    }

    /// From a restic snapshot's tags; `None` for one snapfs did not write.
    fn of(snap: &SnapshotFile) -> Option<Generation> {
        let mut tags: HashMap<&str, &str> = HashMap::new();
        let mut ours = false;
        for tag in snap.tags.iter() {
            match tag.split_once('=') {
                Some((key, value)) => {
                    tags.insert(key, value);
                }
                None => ours |= tag == TAG,
            }
        }
        if !ours {
            return None;
        }
        let decode = |v: &str| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        };
        let scope = match *tags.get("scope")? {
            "collection" => Scope::Collection(decode(tags.get("collection")?)?),
            "shard" => Scope::Shard(
                decode(tags.get("collection")?)?,
                tags.get("shard")?.parse().ok()?,
            ),
            "full" => Scope::Full,
            _ => return None,
        };
        let sha256 = tags.get("sha256")?.to_string();
        if sha256.len() != 64 {
            return None;
        }
        Some(Generation {
            id: snap.id,
            tree: snap.tree,
            scope,
            name: decode(tags.get("name")?)?,
            size: tags.get("size")?.parse().ok()?,
            sha256,
            time: SystemTime::from(snap.time.timestamp()),
            summary: snap.summary.clone(),
            points: tags.get("points").and_then(|v| v.parse().ok()),
            config_sha256: tags
                .get("config")
                .filter(|v| v.len() == 64)
                .map(|v| v.to_string()),
            tags: snap.tags.iter().cloned().collect(),
        })
    }

    fn details(&self) -> super::StoredDetails {
        let summary = self.summary.clone().unwrap_or_default();
        super::StoredDetails {
            name: self.name.clone(),
            id: self.id.to_hex().to_string(),
            bytes_covered: summary.total_bytes_processed,
            bytes_added: summary.data_added_packed,
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            seconds: summary.total_duration,
            points: self.points,
            config_sha256: self.config_sha256.clone(),
            tags: self.tags.clone(),
        }
    }

    fn tags(
        scope: &Scope,
        name: &str,
        size: u64,
        sha256: &str,
        recorded: Option<&Recorded>,
    ) -> Vec<String> {
        let mut tags = vec![TAG.to_string()];
        match scope {
            Scope::Collection(c) => {
                tags.push("scope=collection".into());
                tags.push(format!("collection={}", url_segment(c)));
            }
            Scope::Shard(c, id) => {
                tags.push("scope=shard".into());
                tags.push(format!("collection={}", url_segment(c)));
                tags.push(format!("shard={id}"));
            }
            Scope::Full => tags.push("scope=full".into()),
        }
        tags.push(format!("name={}", url_segment(name)));
        tags.push(format!("size={size}"));
        tags.push(format!("sha256={sha256}"));
        if let Some(recorded) = recorded {
            tags.push(format!("points={}", recorded.points));
            tags.push(format!("config={}", recorded.config_sha256));
        }
        tags
    }
}

pub struct RepositoryStore {
    place: Arc<dyn Place>,
    backends: RepositoryBackends,
    options: RepositoryOptions,
    key: MasterKey,
    lock_key: LockKey,
    names: NameReservations,
    /// Bumped by every create and delete: an indexed repository of an older epoch
    /// does not know the newest blobs.
    epoch: AtomicU64,
    indexed: Mutex<Option<(u64, Arc<Repository<IndexedFullStatus>>)>>,
    /// Creations and deletes hold it shared, a prune exclusively: a prune in this
    /// daemon waits for the generations being written (the restic locks say the same
    /// to other processes).
    gc: std::sync::RwLock<()>,
    /// Generations open for reading: a prune waits for them (it may remove or repack
    /// the packs they read), as restic's readers hold a lock a prune waits for.
    readers: Arc<Readers>,
}

/// How many generations are open for reading, and a signal when one closes.
#[derive(Default)]
struct Readers {
    open: Mutex<usize>,
    closed: std::sync::Condvar,
}

/// Held by an open generation's reader.
struct ReaderHold(Arc<Readers>);

impl ReaderHold {
    fn new(readers: &Arc<Readers>) -> ReaderHold {
        *readers.open.lock().unwrap() += 1;
        ReaderHold(readers.clone())
    }
}

impl Drop for ReaderHold {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap();
        *open = open.saturating_sub(1);
        self.0.closed.notify_all();
    }
}

/// How long a prune waits for the generations open for reading to close.
const PRUNE_WAITS_FOR_READERS: std::time::Duration = std::time::Duration::from_secs(60);

impl RepositoryStore {
    /// Open the repository `config` names, creating it (with the configured
    /// password) when its location holds none yet.
    pub fn open(config: &RepositoryConfig) -> Result<RepositoryStore> {
        let place: Arc<dyn Place> = match &config.location {
            Location::Local(path) => Arc::new(LocalPlace::new(path)),
            Location::S3(s3) => Arc::new(s3_place::S3Place::new(s3)?),
        };
        let backends = RepositoryBackends::new(Arc::new(Backend::new(place.clone())), None);
        let mut options = RepositoryOptions::default();
        match &config.cache_dir {
            Some(dir) => options.cache_dir = Some(dir.clone()),
            None => options.no_cache = true,
        }
        let repo = Repository::new(&options, &backends)
            .map_err(|e| repo_error("opening the snapshot repository", e))?;
        let exists = place.exists("config").map_err(|e| {
            StorageError::bad_request(format!(
                "the snapshot repository at {} cannot be reached: {e}",
                place.location()
            ))
        })?;
        let credentials = Credentials::password(&config.password);
        let opened = if exists {
            repo.open(&credentials).map_err(|e| {
                if e.is_incorrect_password() {
                    StorageError::bad_request(format!(
                        "the snapshot repository at {} does not open with the configured password",
                        place.location()
                    ))
                } else {
                    repo_error("opening the snapshot repository", e)
                }
            })?
        } else {
            tracing::info!(location = %place.location(), "no snapshot repository there yet: creating one");
            place.prepare().map_err(|e| {
                StorageError::bad_request(format!(
                    "the snapshot repository at {} cannot be created: {e}",
                    place.location()
                ))
            })?;
            repo.init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| repo_error("creating the snapshot repository", e))?
        };
        let key = opened.key();
        let lock_key = LockKey::new(&key)
            .ok_or_else(|| StorageError::internal("the repository key has an unexpected shape"))?;
        match lock::remove_stale(&*place, &lock_key) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "stale repository locks of this host removed"),
            Err(e) => tracing::warn!(error = %e, "could not look for stale repository locks"),
        }
        tracing::info!(location = %place.location(), "stored snapshots go to a restic repository");
        Ok(RepositoryStore {
            place,
            backends,
            options,
            key,
            lock_key,
            names: NameReservations::default(),
            epoch: AtomicU64::new(0),
            indexed: Mutex::new(None),
            gc: std::sync::RwLock::new(()),
            readers: Arc::default(),
        })
    }

    fn open_repo(&self) -> Result<Repository<OpenStatus>> {
        Repository::new(&self.options, &self.backends)
            .and_then(|repo| repo.open(&Credentials::Masterkey(self.key.clone())))
            .map_err(|e| repo_error("opening the snapshot repository", e))
    }

    /// The repository with its index loaded, shared until a create or delete.
    fn indexed(&self) -> Result<Arc<Repository<IndexedFullStatus>>> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some((at, repo)) = &*self.indexed.lock().unwrap()
            && *at == epoch
        {
            return Ok(repo.clone());
        }
        let repo = Arc::new(
            self.open_repo()?
                .to_indexed()
                .map_err(|e| repo_error("reading the snapshot repository's index", e))?,
        );
        *self.indexed.lock().unwrap() = Some((epoch, repo.clone()));
        Ok(repo)
    }

    fn generations(&self) -> Result<Vec<Generation>> {
        let snaps = self
            .open_repo()?
            .get_all_snapshots()
            .map_err(|e| repo_error("listing the snapshot repository", e))?;
        Ok(snaps.iter().filter_map(Generation::of).collect())
    }

    /// The generations of `scope`, sorted by name.
    fn generations_of(&self, scope: &Scope) -> Result<Vec<Generation>> {
        let mut of: Vec<Generation> = self
            .generations()?
            .into_iter()
            .filter(|g| &g.scope == scope)
            .collect();
        of.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(of)
    }

    fn find(&self, scope: &Scope, name: &str) -> Result<Generation> {
        check_name(name)?;
        self.generations()?
            .into_iter()
            .find(|g| &g.scope == scope && g.name == name)
            .ok_or_else(|| not_found(name))
    }

    fn lock(&self, exclusive: bool) -> Result<lock::Lock> {
        lock::acquire(self.place.clone(), &self.lock_key, exclusive).map_err(locked)
    }
}

/// A record's restic snapshot carries this tag (not [`TAG`]: it is no generation).
const RECORD_TAG: &str = "snapfs-record";

/// A record, as its tags name it.
struct RecordSnapshot {
    id: rustic_core::repofile::SnapshotId,
    tree: TreeId,
    group: String,
    name: String,
}

impl RecordSnapshot {
    fn of(snap: &SnapshotFile) -> Option<RecordSnapshot> {
        if !snap.tags.iter().any(|t| t == RECORD_TAG) {
            return None;
        }
        let tag = |key: &str| {
            snap.tags
                .iter()
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        };
        Some(RecordSnapshot {
            id: snap.id,
            tree: snap.tree,
            group: tag("group")?,
            name: tag("record")?,
        })
    }
}

impl RepositoryStore {
    fn records(&self, group: &str) -> Result<Vec<RecordSnapshot>> {
        let snaps = self
            .open_repo()?
            .get_all_snapshots()
            .map_err(|e| repo_error("listing the snapshot repository", e))?;
        Ok(snaps
            .iter()
            .filter_map(RecordSnapshot::of)
            .filter(|r| r.group == group)
            .collect())
    }

    /// Write record `name` of `group` as a restic snapshot of one file, `<name>.json`;
    /// the records it replaces are removed after it is written. The caller holds the
    /// shared lock.
    fn write_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let file = format!("{name}.json");
        let source = ArchiveSource::single(&file, bytes.to_vec(), Timestamp::now());
        let mut options = SnapshotOptions::default();
        options.host = Some(HOST.into());
        let mut snap = SnapshotFile::from_options(&options)
            .map_err(|e| repo_error("describing a record", e))?;
        for tag in [
            RECORD_TAG.to_string(),
            format!("group={group}"),
            format!("record={name}"),
        ] {
            let list: StringList = tag.parse().map_err(|_| StorageError::internal("a tag"))?;
            snap.add_tags(vec![list]);
        }
        let mut backup = BackupOptions::default();
        backup.no_scan = true;
        backup.parent_opts.force = true;
        let older = self.records(group)?;
        let repo = self
            .open_repo()?
            .to_indexed_ids()
            .map_err(|e| repo_error("reading the snapshot repository's index", e))?;
        let saved = repo
            .archive(&backup, &source, snap, &[PathBuf::from("/")])
            .map_err(|e| repo_error("writing a record", e));
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let saved = saved?;
        let stored = saved.summary.as_ref().map(|s| s.total_files_processed);
        if stored != Some(1) || source.failures().first().is_some() {
            let _ = repo.delete_snapshots(&[saved.id]);
            return Err(StorageError::internal(format!(
                "{group} record {name} was not stored"
            )));
        }
        let replaced: Vec<_> = older
            .iter()
            .filter(|r| r.name == name && r.id != saved.id)
            .map(|r| r.id)
            .collect();
        if !replaced.is_empty() {
            repo.delete_snapshots(&replaced)
                .map_err(|e| repo_error("removing a replaced record", e))?;
        }
        Ok(())
    }
}

/// What a generation being written is.
struct Written<'a> {
    scope: &'a Scope,
    name: &'a str,
    size: u64,
    sha256: &'a str,
    recorded: Option<&'a Recorded>,
}

impl RepositoryStore {
    /// Archive `source` as generation `written`, on `parent`
    /// (none: everything is chunked), at `time` (default now); a generation that did
    /// not get every file is removed again and the creation fails. The caller holds
    /// the shared lock.
    fn write_generation(
        &self,
        written: &Written<'_>,
        source: &ArchiveSource,
        parent: Option<rustic_core::repofile::SnapshotId>,
        time: Option<rustic_core::jiff::Zoned>,
        started: std::time::Instant,
    ) -> Result<StoredSnapshot> {
        let Written {
            scope,
            name,
            size,
            sha256,
            recorded,
        } = *written;
        let failures = source.failures();
        let files = source.files();
        let mut options = SnapshotOptions::default();
        options.host = Some(HOST.into());
        options.time = time;
        let mut snap = SnapshotFile::from_options(&options)
            .map_err(|e| repo_error("describing a generation", e))?;
        for tag in Generation::tags(scope, name, size, sha256, recorded) {
            let list: StringList = tag.parse().map_err(|_| StorageError::internal("a tag"))?;
            snap.add_tags(vec![list]);
        }
        let mut backup = BackupOptions::default();
        backup.no_scan = true;
        match parent {
            Some(parent) => backup.parent_opts.parents = vec![parent.to_hex().to_string()],
            None => backup.parent_opts.force = true,
        }
        let repo = self
            .open_repo()?
            .to_indexed_ids()
            .map_err(|e| repo_error("reading the snapshot repository's index", e))?;
        let saved = repo
            .archive(&backup, source, snap, &[PathBuf::from("/")])
            .map_err(|e| repo_error("writing a generation", e));
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let saved = saved?;
        let processed = saved.summary.as_ref().map(|s| s.total_files_processed);
        if let Some(failure) = failures.first().or_else(|| {
            (processed != Some(files))
                .then(|| format!("{} of {files} entries were stored", processed.unwrap_or(0)))
        }) {
            tracing::warn!(%failure, "a generation was not stored whole: removing it");
            if let Err(e) = repo.delete_snapshots(&[saved.id]) {
                tracing::warn!(error = %e.display_log(), "could not remove the incomplete generation");
            }
            return Err(StorageError::internal(format!(
                "snapshot {name} was not stored: an entry could not be read"
            )));
        }
        if let Some(summary) = &saved.summary {
            let read = summary.total_bytes_processed;
            let added = summary.data_added_packed;
            let took = started.elapsed();
            let id = match scope {
                Scope::Collection(c) | Scope::Shard(c, _) => c.as_str(),
                Scope::Full => "",
            };
            crate::metrics::generation_stored(id, read, added, took);
            tracing::info!(
                snapshot = %name,
                generation = %&saved.id.to_hex()[..8],
                bytes_covered = read,
                new_bytes_stored = added,
                dedup_ratio = format!("{:.1}", read as f64 / added.max(1) as f64),
                files_new = summary.files_new,
                files_changed = summary.files_changed,
                files_unmodified = summary.files_unmodified,
                seconds = format!("{:.3}", took.as_secs_f64()),
                "generation stored"
            );
        }
        Ok(StoredSnapshot {
            name: name.to_string(),
            size,
            modified: SystemTime::from(saved.time.timestamp()),
            checksum: Some(sha256.to_string()),
        })
    }

    /// Take the snapshot archive `file` in as generation `name` of `scope`, whole
    /// (any archive a restore takes: Qdrant's, or snapfs's from another store), so it
    /// reads back byte for byte; its chunks dedup against everything stored. The
    /// archive is checked first (a tar of safe entries; its embedded manifest when it
    /// has one; `checksum` when given). `Ok(None)`: that very archive is there already.
    pub fn import(
        &self,
        scope: &Scope,
        name: &str,
        file: &Path,
        checksum: Option<&str>,
    ) -> Result<Option<StoredSnapshot>> {
        check_name(name).map_err(|_| {
            StorageError::bad_request(format!(
                "{name} is not a snapshot name (<name>.snapshot, no `/`, not hidden)"
            ))
        })?;
        let started = std::time::Instant::now();
        let opened = fs_err::File::open(file)?;
        let report = crate::snapshot::unpack::verify_archive(
            std::io::BufReader::with_capacity(1 << 20, opened),
            checksum,
        )
        .map_err(|e| StorageError::bad_request(format!("{name} is not taken in: {e}")))?;
        let sha256 = report.sha256.unwrap_or_default();
        let _lock = self.lock(false)?;
        let existing = self.generations()?;
        if let Some(there) = existing
            .iter()
            .find(|g| &g.scope == scope && g.name == name)
        {
            return match there.sha256 == sha256 {
                true => Ok(None),
                false => Err(StorageError::AlreadyInProgress(format!(
                    "the repository holds another snapshot named {name} for that scope"
                ))),
            };
        }
        let frozen = Arc::new(crate::snapshot::layout::FrozenFile::open(file)?);
        if frozen.size != report.archive_bytes {
            return Err(StorageError::bad_request(format!(
                "{name} changed while it was read"
            )));
        }
        let recipe = Recipe::whole(name, name, scope, report.archive_bytes, &sha256);
        let recipe = serde_json::to_vec(&recipe)
            .map_err(|e| StorageError::internal_from("writing a recipe", e))?;
        let modified = std::fs::metadata(file)?.modified()?;
        let time = rustic_core::jiff::Timestamp::try_from(modified)
            .ok()
            .map(|t| t.to_zoned(rustic_core::jiff::tz::TimeZone::UTC));
        let source = ArchiveSource::whole(name, frozen, RECIPE_NAME, recipe, Timestamp::now())?;
        let written = Written {
            scope,
            name,
            size: report.archive_bytes,
            sha256: &sha256,
            recorded: None,
        };
        self.write_generation(&written, &source, None, time, started)
            .map(Some)
    }
}

/// A generation's member, read through the repository's index.
struct Member {
    repo: Arc<Repository<IndexedFullStatus>>,
    file: Arc<rustic_core::vfs::OpenFile>,
    name: String,
    size: u64,
    /// Read-ahead: blobs past the last read are decrypted into the repository's
    /// blob cache on another thread while the reader uses what it has (a download,
    /// a `cp` and a restore read forward; one thread alternating fetching, decrypting
    /// and copying went at a third of the disk's speed).
    ahead: Mutex<Ahead>,
}

#[derive(Default)]
struct Ahead {
    /// Where the read-ahead ends.
    until: u64,
    running: Vec<std::thread::JoinHandle<()>>,
}

/// How much one read-ahead thread reads: with [`READ_AHEAD_THREADS`] of them, well
/// inside the repository's 32 MiB blob cache.
const READ_AHEAD: u64 = 6 << 20;
/// Read-ahead threads per member: one waits for the disk while another decrypts.
const READ_AHEAD_THREADS: usize = 2;

impl Member {
    fn new(
        repo: &Arc<Repository<IndexedFullStatus>>,
        node: &Node,
        name: &str,
    ) -> std::result::Result<Member, Box<RusticError>> {
        Ok(Member {
            repo: repo.clone(),
            file: Arc::new(repo.open_file(node)?),
            name: name.to_string(),
            size: node.meta.size,
            ahead: Mutex::new(Ahead::default()),
        })
    }

    /// Keep up to [`READ_AHEAD_THREADS`] windows being read past `from`.
    fn read_ahead(&self, from: u64) {
        let mut ahead = self.ahead.lock().unwrap();
        ahead.running.retain(|t| !t.is_finished());
        if ahead.until < from {
            ahead.until = from;
        }
        let horizon = from + READ_AHEAD * READ_AHEAD_THREADS as u64;
        while ahead.running.len() < READ_AHEAD_THREADS && ahead.until < horizon.min(self.size) {
            let start = ahead.until;
            let len = READ_AHEAD.min(self.size - start);
            ahead.until = start + len;
            let (repo, file) = (self.repo.clone(), self.file.clone());
            // A failure here is met again, and reported, by the read that needs the bytes.
            if let Ok(thread) = std::thread::Builder::new()
                .name("repo-read-ahead".into())
                .spawn(move || {
                    let _ = repo.read_file_at(&file, start as usize, len as usize);
                })
            {
                ahead.running.push(thread);
            }
        }
    }
}

impl RangeRead for Member {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let bytes = self
                .repo
                .read_file_at(&self.file, offset as usize + done, buf.len() - done)
                .map_err(|e| {
                    tracing::warn!(generation = %self.name, error = %e.display_log(), "a generation could not be read");
                    std::io::Error::other(format!(
                        "stored snapshot {} cannot be read from the repository (damaged or missing data; `restic check --read-data` tells more)",
                        self.name
                    ))
                })?;
            if bytes.is_empty() {
                return Err(std::io::Error::other(format!(
                    "stored snapshot {} is shorter in the repository than recorded",
                    self.name
                )));
            }
            buf[done..done + bytes.len()].copy_from_slice(&bytes);
            done += bytes.len();
        }
        self.read_ahead(offset + buf.len() as u64);
        Ok(())
    }
}

/// The members of tree `root`, by path (`a/b`), files only.
fn files_of(
    repo: &Repository<IndexedFullStatus>,
    root: TreeId,
) -> std::result::Result<HashMap<String, Node>, Box<RusticError>> {
    let mut out = HashMap::new();
    let mut pending = vec![(String::new(), root)];
    while let Some((prefix, id)) = pending.pop() {
        for node in repo.get_tree(&id)?.nodes {
            let path = format!("{prefix}{}", node.name().to_string_lossy());
            match (node.node_type.clone(), node.subtree) {
                (NodeType::Dir, Some(subtree)) => pending.push((format!("{path}/"), subtree)),
                (NodeType::File, _) => {
                    out.insert(path, node);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// An archive kept whole: its one member's bytes.
struct Whole {
    member: Member,
    size: u64,
    _hold: ReaderHold,
}

impl StoredReader for Whole {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size.saturating_sub(offset)).min(buf.len() as u64) as usize;
        if n > 0 {
            self.member.read_exact_at(&mut buf[..n], offset)?;
        }
        Ok(n)
    }
}

/// An archive put together from its members (and held open against a prune).
struct Assembled {
    layout: ArchiveLayout,
    _hold: ReaderHold,
}

impl StoredReader for Assembled {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.layout.read_at(offset, buf)
    }
}

impl SnapshotStore for RepositoryStore {
    fn location(&self) -> String {
        format!("restic repository {}", self.place.location())
    }

    fn list(&self, scope: &Scope) -> Result<Vec<StoredSnapshot>> {
        Ok(self
            .generations_of(scope)?
            .iter()
            .map(Generation::stored)
            .collect())
    }

    fn stat(&self, scope: &Scope, name: &str) -> Result<StoredSnapshot> {
        Ok(self.find(scope, name)?.stored())
    }

    fn open(&self, scope: &Scope, name: &str) -> Result<OpenedSnapshot> {
        // Not while a prune runs; the reader holds off the next one until it closes.
        let hold = {
            let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
            ReaderHold::new(&self.readers)
        };
        let generation = self.find(scope, name)?;
        let repo = self.indexed()?;
        let what = format!("reading stored snapshot {name} from the repository");
        let mut files = files_of(&repo, generation.tree).map_err(|e| repo_error(&what, e))?;
        let recipe_node = files
            .remove(RECIPE_NAME)
            .filter(|node| node.meta.size <= MAX_RECIPE)
            .ok_or_else(|| {
                StorageError::internal(format!(
                    "stored snapshot {name} has no recipe in the repository"
                ))
            })?;
        let open = |node: &Node| Member::new(&repo, node, name);
        let recipe_member = open(&recipe_node).map_err(|e| repo_error(&what, e))?;
        let mut text = vec![0u8; recipe_node.meta.size as usize];
        recipe_member.read_exact_at(&mut text, 0)?;
        let recipe = Recipe::parse(&text)
            .map_err(|why| StorageError::internal(format!("stored snapshot {name}: {why}")))?;
        if recipe.sha256 != generation.sha256 || recipe.size != generation.size {
            return Err(StorageError::internal(format!(
                "stored snapshot {name}: its recipe and its tags disagree"
            )));
        }
        let reader: Arc<dyn StoredReader> = match &recipe.whole {
            Some(member) => {
                let node = files
                    .get(member)
                    .filter(|node| node.meta.size == recipe.size)
                    .ok_or_else(|| {
                        StorageError::internal(format!("stored snapshot {name} lacks its archive"))
                    })?;
                let member = open(node).map_err(|e| repo_error(&what, e))?;
                Arc::new(Whole {
                    member,
                    size: recipe.size,
                    _hold: hold,
                })
            }
            None => Arc::new(Assembled {
                layout: recipe.layout(|path, size| {
                    let node = files
                        .get(path)
                        .filter(|node| node.meta.size == size)
                        .ok_or_else(|| {
                            std::io::Error::other(format!(
                                "stored snapshot {name} lacks member {path}"
                            ))
                        })?;
                    let member = open(node).map_err(|e| std::io::Error::other(e.display_log()))?;
                    Ok(Arc::new(member) as Arc<dyn RangeRead>)
                })?,
                _hold: hold,
            }),
        };
        Ok(OpenedSnapshot {
            snapshot: generation.stored(),
            version: Sha256::digest(generation.id.to_hex().as_bytes()).into(),
            shown: format!("{name} (generation {})", &generation.id.to_hex()[..8]),
            reader,
        })
    }

    fn create(&self, view: &SnapshotView) -> Result<StoredSnapshot> {
        let scope = view.scope().clone();
        let layout: Arc<ArchiveLayout> = view.layout().clone();
        let started = std::time::Instant::now();
        // Counted first, while the view surely still holds its freeze (hashing a large
        // archive may outlast the freeze limit).
        let recorded = view.recorded();
        let sha256 = hex(&view.sha256()?);
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock(false)?;
        crate::storage::pause_point("repository-locked");
        let existing = self.generations()?;
        let reserved =
            self.names
                .reserve(&scope, &name_base(&scope, SystemTime::now()), |name| {
                    Ok(!existing.iter().any(|g| g.scope == scope && g.name == name))
                })?;
        let name = reserved.name.clone();
        let parent = existing
            .iter()
            .filter(|g| g.scope == scope)
            .max_by_key(|g| g.time)
            .map(|g| g.id);
        let recipe = serde_json::to_vec(&Recipe::of(&layout, &name, &scope, &sha256))
            .map_err(|e| StorageError::internal_from("writing a recipe", e))?;
        let source = ArchiveSource::new(&layout, RECIPE_NAME, recipe, Timestamp::now())?;
        let written = Written {
            scope: &scope,
            name: &name,
            size: layout.size(),
            sha256: &sha256,
            recorded: recorded.as_ref(),
        };
        let saved = self.write_generation(&written, &source, parent, None, started)?;
        drop(reserved);
        Ok(saved)
    }

    fn put_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()> {
        super::check_record_name(group)?;
        super::check_record_name(name)?;
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock(false)?;
        self.write_record(group, name, bytes)
    }

    fn get_record(&self, group: &str, name: &str, limit: u64) -> Result<Vec<u8>> {
        super::check_record_name(group)?;
        super::check_record_name(name)?;
        let record = self
            .records(group)?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| super::record_not_found(group, name))?;
        let repo = self.indexed()?;
        let what = format!("reading {group} record {name} from the repository");
        let files = files_of(&repo, record.tree).map_err(|e| repo_error(&what, e))?;
        let node = files
            .get(&format!("{name}.json"))
            .ok_or_else(|| StorageError::internal(format!("{group} record {name} is empty")))?;
        if node.meta.size > limit {
            return Err(StorageError::internal(format!(
                "{group} record {name} is {} bytes, more than {limit}",
                node.meta.size
            )));
        }
        let member = Member::new(&repo, node, name).map_err(|e| repo_error(&what, e))?;
        let mut bytes = vec![0u8; node.meta.size as usize];
        member.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    fn list_records(&self, group: &str) -> Result<Vec<String>> {
        super::check_record_name(group)?;
        let mut names: Vec<String> = self
            .records(group)?
            .into_iter()
            .map(|r| r.name)
            .filter(|n| super::check_record_name(n).is_ok())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn delete_record(&self, group: &str, name: &str) -> Result<()> {
        super::check_record_name(group)?;
        super::check_record_name(name)?;
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock(false)?;
        let ids: Vec<_> = self
            .records(group)?
            .into_iter()
            .filter(|r| r.name == name)
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.open_repo()?
            .delete_snapshots(&ids)
            .map_err(|e| repo_error("removing a record", e))?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<()> {
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock(false)?;
        let generation = self.find(scope, name)?;
        let repo = self.open_repo()?;
        repo.delete_snapshots(&[generation.id])
            .map_err(|e| repo_error("removing a generation", e))?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn details(&self, scope: &Scope) -> Result<Vec<super::StoredDetails>> {
        Ok(self
            .generations_of(scope)?
            .iter()
            .map(Generation::details)
            .collect())
    }

    fn name_by_id(&self, scope: &Scope, id: &str) -> Result<String> {
        if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::bad_request(
                "restic:<id> takes a generation's id: at least 8 hex characters",
            ));
        }
        let id = id.to_ascii_lowercase();
        let all = self.generations()?;
        let found: Vec<&Generation> = all
            .iter()
            .filter(|g| g.id.to_hex().starts_with(id.as_str()))
            .collect();
        match found.as_slice() {
            [] => Err(StorageError::NotFound(format!(
                "no generation {id} in the repository"
            ))),
            [one] if &one.scope == scope => Ok(one.name.clone()),
            [_] => Err(StorageError::bad_request(format!(
                "generation {id} is not a snapshot of this collection or shard"
            ))),
            _ => Err(StorageError::bad_request(format!(
                "restic:{id} names more than one generation: give more of the id"
            ))),
        }
    }

    fn prune(&self) -> Result<Option<String>> {
        let _gc = self.gc.write().unwrap_or_else(|p| p.into_inner());
        // No new reader from here; the open ones are waited for, up to a limit.
        let open = self.readers.open.lock().unwrap();
        let (open, _) = self
            .readers
            .closed
            .wait_timeout_while(open, PRUNE_WAITS_FOR_READERS, |open| *open > 0)
            .unwrap_or_else(|p| p.into_inner());
        if *open > 0 {
            return Err(StorageError::AlreadyInProgress(format!(
                "{} stored snapshots of the repository are being read (a download, a copy from the mount, a restore); prune again when they are closed",
                *open
            )));
        }
        drop(open);
        let _lock = self.lock(true)?;
        crate::storage::pause_point("repository-pruning");
        let repo = self.open_repo()?;
        let mut options = PruneOptions::default();
        // Packs go at once, as restic's prune removes them (rustic's default keeps
        // them marked in the index for a day, a mark restic does not read).
        options.instant_delete = true;
        let plan = repo
            .prune_plan(&options)
            .map_err(|e| repo_error("planning a prune of the snapshot repository", e))?;
        let packs = plan.stats.packs_to_delete.remove;
        let bytes = plan.stats.size_to_delete.remove;
        let repacked = plan.stats.size_sum().repack;
        repo.prune(&options, plan)
            .map_err(|e| repo_error("pruning the snapshot repository", e))?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            packs_removed = packs,
            bytes_freed = bytes,
            bytes_repacked = repacked,
            "repository pruned"
        );
        Ok(Some(format!(
            "{packs} pack files ({bytes} bytes) removed, {repacked} bytes repacked"
        )))
    }

    fn check(&self, read_part: Option<(u32, u32)>) -> Result<Option<Vec<String>>> {
        let _gc = self.gc.read().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock(false)?;
        let repo = self.open_repo()?;
        let mut options = CheckOptions::default();
        if let Some((part, parts)) = read_part {
            options.read_data = true;
            options.read_data_subset = ReadSubsetOption::IdSubSet((part, parts));
        }
        let results = repo
            .check(options)
            .map_err(|e| repo_error("checking the snapshot repository", e))?;
        // Whole unless rustic says it found errors; then every finding is told, the
        // warnings (an unused pack, a cache file) among them.
        if results.is_ok().is_ok() {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(
            results
                .0
                .iter()
                .map(|(level, error)| format!("{level:?}: {error}"))
                .collect(),
        ))
    }

    fn listing_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    /// The daemon stops: a generation still being written is cut (not listed: its
    /// snapshot file is written last), and the locks it held go, so the restic CLI
    /// starts at once afterwards.
    fn stop(&self, _limit: std::time::Duration) {
        match lock::remove_own(&*self.place, &self.lock_key) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "repository locks of work cut by the stop removed"
            ),
            Err(e) => tracing::warn!(error = %e, "could not remove this daemon's repository locks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::storage::Storage;

    fn local(path: &Path, password: &str) -> Result<RepositoryStore> {
        RepositoryStore::open(&RepositoryConfig {
            location: Location::Local(path.to_path_buf()),
            password: password.into(),
            cache_dir: None,
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_repository_store_keeps_the_stores_promises() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("storage")).unwrap();
        crate::demo::create_demo_collection(&storage).await.unwrap();
        let store = local(&dir.path().join("repo"), "secret").unwrap();
        let snapshots = crate::snapshot::Snapshots::new(storage.clone());
        super::super::conformance::check_every_scope(&store, &snapshots);
        // A wrong password is a clear refusal, not a new repository.
        match local(&dir.path().join("repo"), "wrong") {
            Err(StorageError::BadRequest(text)) => assert!(text.contains("password"), "{text}"),
            Err(other) => panic!("wrong password: {other}"),
            Ok(_) => panic!("a wrong password opened the repository"),
        }
    }
}
