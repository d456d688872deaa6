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
//!
//! This file holds the [`RepositoryStore`] and its [`SnapshotStore`] side; opening
//! the repository is in `open`, a generation's tags and the listing in
//! `generation`, writing one (and importing an archive) in `write`, reading one
//! back in `read`, and the records in `records`.

pub mod lock;
pub mod place;
pub mod recipe;
pub mod s3_place;
pub mod source;

mod generation;
mod open;
mod read;
mod records;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustic_core::ReadSubsetOption;
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{MasterKey, Node};
use rustic_core::{
    CheckOptions, Credentials, IndexedFullStatus, OpenStatus, PruneOptions, Repository,
    RepositoryBackends, RepositoryOptions, RusticError,
};
use sha2::{Digest, Sha256};

use self::generation::Generation;
use self::lock::{LockError, LockKey};
use self::place::Place;
use self::read::{
    Assembled, Member, PRUNE_WAITS_FOR_READERS, ReaderHold, Readers, Whole, files_of,
};
use self::recipe::{MAX_RECIPE, RECIPE_NAME, Recipe};
use self::source::ArchiveSource;
use self::write::Written;
use super::{
    NameReservations, OpenedSnapshot, SnapshotStore, StoredReader, StoredSnapshot, name_base,
};
use crate::snapshot::digest::hex;
use crate::snapshot::layout::{ArchiveLayout, RangeRead};
use crate::snapshot::view::{Scope, SnapshotView};
use crate::storage::{Result, StorageError};

pub use self::open::{Location, RepositoryConfig};

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

impl RepositoryStore {
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

    fn lock(&self, exclusive: bool) -> Result<lock::Lock> {
        lock::acquire(self.place.clone(), &self.lock_key, exclusive).map_err(locked)
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
mod tests;
