//! Switching a restored collection, or a new state of one shard, into place.
//!
//! A switch is a pair of renames under a journal: the old directory moves to a
//! hidden name, the staged one takes its place, the engine opens it there, and only
//! then the journal goes (the commit). [`recover`] runs at start, before anything
//! loads: a journal still there means the new state was never committed, and the old
//! one is put back. A crash at any point leaves the old state or the new one, never a
//! mix.
//!
//! A collection is switched whole: it is closed, swapped and reopened (requests
//! for it meanwhile get 404). A shard is switched inside its running collection:
//! updates and new freezes of the collection wait, reads of that shard wait for the
//! moment the new shard opens, and every other shard keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::collection::Collection;
use super::error::{Result, StorageError};
use super::shard::{Load, Shard, Waiting, write_restored_clock};
use super::{SnapshotError, Storage, file_name, names, remove_path};

/// What replaces a shard (see [`Storage::replace_shard`]).
pub struct ShardReplacement {
    /// The new shard directory, in the engine's layout, on the collections' file
    /// system (the switch is a rename).
    pub staged: PathBuf,
    /// The new state's last change, in whole seconds (an archive's state time);
    /// `None`: the switch is the change.
    pub state_time: Option<u64>,
    /// Updates acknowledged to the old shard while it was frozen for this switch
    /// are applied on the new shard (a partial apply: the pending log stays where
    /// it is, and callers waiting for their update are answered once it is applied
    /// there). Otherwise they go with the old shard (a restore replaces the state).
    pub keep_pending: bool,
    /// Runs once the new shard opened where it belongs, before anything else may
    /// reach it (updates and reads of it still wait).
    pub opened: Option<AfterOpen>,
}

/// Called with the new shard's directory and whether updates acknowledged during
/// the switch were applied on it already (its files are then not the load's alone).
pub type AfterOpen = Box<dyn FnOnce(&Path, bool) + Send>;

impl Storage {
    /// Replace (or create) collection `name` by the complete, validated collection
    /// directory `staged`. Readers of the old collection's snapshots keep their open
    /// files.
    pub async fn replace_collection(self: &Arc<Self>, name: &str, staged: PathBuf) -> Result<()> {
        names::validate_collection_name(name)?;
        let _layout = self.layout_lock.lock().await;
        let this = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || this.replace_collection_blocking(&name, &staged))
            .await
            .map_err(StorageError::from_cause)?
    }

    fn replace_collection_blocking(&self, name: &str, staged: &Path) -> Result<()> {
        let target = self.collections_dir.join(name);
        let old = self.staging_dir("replaced");
        let journal = Journal {
            collection: name.to_string(),
            shard: None,
            // In full: it may be in temp_path (joining an absolute path replaces).
            staged: staged.to_string_lossy().into_owned(),
            old: file_name(&old),
            // Opened only where it will live: the switch commits once that worked.
            checked: false,
        };
        let journal_path = self.collections_dir.join(format!("{JOURNAL_PREFIX}{name}"));
        self.write_journal(&journal_path, &journal)?;
        let previous = self.collections.write().unwrap().remove(name);
        if let Some(previous) = &previous {
            previous.shutdown();
        }
        let had_old = target.exists();
        if had_old {
            fs_err::rename(&target, &old)?;
        }
        crash_point("restore-before-switch");
        fs_err::rename(staged, &target)?;
        sync_dir(&self.collections_dir)?;
        sync_dir(&target)?;
        crash_point("restore-after-switch");
        // The engine opens the restored shards once, here, where they stay: the
        // open is the check, and nothing moves after it.
        let collection = match Collection::open_restored(&target, name) {
            Ok(collection) => collection,
            Err(err) => {
                tracing::error!(collection = name, %err, "the restored collection does not open: the old one is put back");
                let failed = self.staging_dir("failed");
                fs_err::rename(&target, &failed)?;
                if had_old {
                    fs_err::rename(&old, &target)?;
                }
                sync_dir(&self.collections_dir)?;
                self.drop_journal(&journal_path)?;
                if had_old && previous.is_some() {
                    let back = Collection::open(&target, name)?;
                    self.collections
                        .write()
                        .unwrap()
                        .insert(name.to_string(), Arc::new(back));
                }
                let _ = remove_path(&failed);
                return Err(SnapshotError::invalid(format!(
                    "the snapshot's shards do not open: {err}"
                ))
                .into());
            }
        };
        // Not synced again: the restored files were before the rename, and what the
        // open wrote (settled JSON, a replayed WAL's segments) a later load redoes.
        crash_point("restore-opened");
        // The moment of truth: from here on the restored collection is the one.
        self.drop_journal(&journal_path)?;
        crash_point("restore-committed");
        self.collections
            .write()
            .unwrap()
            .insert(name.to_string(), Arc::new(collection));
        if old.exists() {
            remove_path(&old)?;
        }
        tracing::info!(
            collection = name,
            replaced = previous.is_some(),
            "collection restored"
        );
        Ok(())
    }

    /// Replace shard `id` of collection `name` by `new.staged`, inside the running
    /// collection. The staged files must share no inode with the live shard's (the
    /// new shard writes them in place, and the old one may be put back).
    pub async fn replace_shard(
        self: &Arc<Self>,
        name: &str,
        id: u32,
        new: ShardReplacement,
    ) -> Result<()> {
        let _layout = self.layout_lock.lock().await;
        let this = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || this.replace_shard_blocking(&name, id, new))
            .await
            .map_err(StorageError::from_cause)?
    }

    fn replace_shard_blocking(&self, name: &str, id: u32, new: ShardReplacement) -> Result<()> {
        let collection = self.collection(name)?;
        let edge = collection.config().edge_config()?;
        let (dir, pending) = collection.shard_files(id);
        let collection_dir = collection.dir().to_path_buf();
        let _paused = collection.pause_dispatch();
        let mut slot = collection.shard_slot_mut(id)?;
        let old: Arc<Shard> = slot.clone();
        let waiting = if new.keep_pending {
            old.hand_over()
        } else {
            old.shutdown();
            Waiting::new()
        };
        // Closed (flushed) before anything else opens these files or takes the path.
        old.close();
        let reopen_old = |waiting: Waiting| {
            Shard::open_after(id, &dir, &pending, edge.clone(), waiting, Load::Reopen)
        };
        let aside = self.staging_dir("replaced-shard");
        let journal = Journal {
            collection: name.to_string(),
            shard: Some(id),
            // In full: it may be in temp_path (joining an absolute path replaces).
            staged: new.staged.to_string_lossy().into_owned(),
            old: file_name(&aside),
            // Opened only where it will live: the switch commits once that worked.
            checked: false,
        };
        let journal_path = self
            .collections_dir
            .join(format!("{JOURNAL_PREFIX}{name}-shard-{id}"));
        self.write_journal(&journal_path, &journal)?;
        fs_err::create_dir(&aside)?;
        for (piece, saved) in shard_pieces(&collection_dir, id) {
            if saved == "pending" && new.keep_pending {
                // The log stays for the new shard, which applies it and then empties
                // it. Until the switch commits, a rollback (a failed open, a crash)
                // must find it as it was, or updates acknowledged meanwhile are lost.
                if piece.exists() {
                    copy_durably(&piece, &aside.join(saved))?;
                }
                continue;
            }
            if piece.exists() {
                fs_err::rename(&piece, aside.join(saved))?;
            }
        }
        sync_dir(&aside)?;
        crash_point("shard-restore-before-switch");
        fs_err::rename(&new.staged, &dir)?;
        // The snapshot's time, written only once the shard is the new one.
        if let Some(secs) = new.state_time {
            write_restored_clock(&collection_dir.join(format!("{id}.clock")), secs)?;
        }
        sync_dir(&collection_dir)?;
        sync_dir(&dir)?;
        crash_point("shard-restore-after-switch");
        let updates_applied = !waiting.is_empty();
        // A restore's state keeps its archive's time whatever its first load rewrites.
        let load = match new.state_time {
            Some(_) => Load::Restore,
            None => Load::Reopen,
        };
        let opened = Shard::open_after(id, &dir, &pending, edge.clone(), waiting, load);
        let shard = match opened {
            Ok(shard) => shard,
            Err(err) => {
                tracing::error!(collection = name, shard = id, %err, "the new shard does not open: the old one is put back");
                let failed = self.staging_dir("failed-shard");
                fs_err::rename(&dir, &failed)?;
                for (piece, saved) in shard_pieces(&collection_dir, id) {
                    if aside.join(saved).exists() {
                        let _ = remove_path(&piece);
                        fs_err::rename(aside.join(saved), &piece)?;
                    }
                }
                sync_dir(&collection_dir)?;
                self.drop_journal(&journal_path)?;
                *slot = Arc::new(reopen_old(Waiting::new())?);
                let _ = remove_path(&failed);
                let _ = remove_path(&aside);
                return Err(StorageError::bad_request(format!(
                    "the new state of shard {id} does not fit this collection (the engine cannot open it), so the old one stays: {err}"
                )));
            }
        };
        crash_point("shard-switch-opened");
        // It opened: now it is the shard.
        self.drop_journal(&journal_path)?;
        crash_point("shard-switch-committed");
        if let Some(after) = new.opened {
            after(&dir, updates_applied);
        }
        *slot = Arc::new(shard);
        drop(slot);
        remove_path(&aside)?;
        tracing::info!(collection = name, shard = id, "shard switched");
        Ok(())
    }

    fn write_journal(&self, path: &Path, journal: &Journal) -> Result<()> {
        let text = serde_json::to_vec(journal).map_err(StorageError::from_cause)?;
        let temp = self.staging_dir("tmp-journal");
        {
            use std::io::Write;
            let mut file = fs_err::File::create(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
        }
        fs_err::rename(&temp, path)?;
        sync_dir(&self.collections_dir)
    }

    fn drop_journal(&self, path: &Path) -> Result<()> {
        fs_err::remove_file(path)?;
        sync_dir(&self.collections_dir)
    }
}

/// What a switch is doing, written before it starts and removed after.
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    collection: String,
    /// Set when one shard of the collection is replaced.
    #[serde(default)]
    shard: Option<u32>,
    /// The staging directory holding the new collection or shard: a path (journals
    /// written before restores staged in temp_path hold a name in the collections
    /// directory; joining either to it gives the directory).
    staged: String,
    /// The hidden name the old collection (or shard's pieces) is moved to.
    old: String,
    /// `true` only in journals of older versions, whose restores opened the new
    /// state in staging before the switch (the rename committed it). Written `false`:
    /// the switch commits when this journal goes, after the new state opened where
    /// it belongs.
    #[serde(default = "yes")]
    checked: bool,
}

fn yes() -> bool {
    true
}

const JOURNAL_PREFIX: &str = ".restore-journal-";

/// Finish or undo switches a crash interrupted. The staged directory still there
/// means the new state never took the name: put the old one back. Otherwise the
/// switch happened. Either way the hidden leftovers go with the start-up cleanup.
pub(super) fn recover(collections_dir: &Path) -> Result<()> {
    for entry in fs_err::read_dir(collections_dir)? {
        let path = entry?.path();
        if !file_name(&path).starts_with(JOURNAL_PREFIX) {
            continue;
        }
        let journal: Option<Journal> = fs_err::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(journal) = journal {
            let target = collections_dir.join(&journal.collection);
            let staged = collections_dir.join(&journal.staged);
            let old = collections_dir.join(&journal.old);
            if let Some(id) = journal.shard {
                if staged.exists() || !journal.checked {
                    // Never switched, or switched but not yet opened: the new
                    // directory (if it took the name) goes, the old pieces come back.
                    let shard_dir = target.join(id.to_string());
                    if !staged.exists() && shard_dir.exists() && old.join("shard").exists() {
                        remove_path(&shard_dir)?;
                    }
                    for (piece, saved) in shard_pieces(&target, id) {
                        if old.join(saved).exists() {
                            if piece.exists() {
                                remove_path(&piece)?;
                            }
                            fs_err::rename(old.join(saved), &piece)?;
                        }
                    }
                    tracing::warn!(collection = %journal.collection, shard = id, "a shard switch was interrupted before the new shard was committed: the old shard stays");
                } else {
                    tracing::warn!(collection = %journal.collection, shard = id, "a shard switch was interrupted after it happened: the new shard stays");
                }
            } else if staged.exists() {
                if !target.exists() && old.exists() {
                    fs_err::rename(&old, &target)?;
                }
                tracing::warn!(collection = %journal.collection, "a restore was interrupted before the switch: the old collection stays");
            } else if !journal.checked {
                // Switched but not committed (the engine had not opened it, or its
                // open was not yet on record): the restored directory goes, the old
                // collection (if there was one) comes back.
                if target.exists() {
                    remove_path(&target)?;
                }
                if old.exists() {
                    fs_err::rename(&old, &target)?;
                }
                tracing::warn!(collection = %journal.collection, "a restore was interrupted before the restored collection opened: the old collection stays");
            } else {
                tracing::warn!(collection = %journal.collection, "a restore was interrupted after the switch: the restored collection stays");
            }
        }
        // An unreadable journal was torn while being written: nothing had moved yet.
        fs_err::remove_file(&path)?;
        sync_dir(collections_dir)?;
    }
    Ok(())
}

/// A shard's directory and the files beside it that belong to it, with the names
/// they get while set aside.
fn shard_pieces(collection_dir: &Path, id: u32) -> [(PathBuf, &'static str); 3] {
    [
        (collection_dir.join(id.to_string()), "shard"),
        (collection_dir.join(format!("{id}.pending")), "pending"),
        (collection_dir.join(format!("{id}.clock")), "clock"),
    ]
}

/// A copy of `from` at `to`, on disk before this returns.
fn copy_durably(from: &Path, to: &Path) -> Result<()> {
    fs_err::copy(from, to)?;
    fs_err::File::open(to)?.sync_all()?;
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Crash tests: `SNAPFS_CRASH_AT=<point>` makes the process abort right there, as a
/// `kill -9` at that instant would (no destructors, no flush). Only with the
/// `failpoints` feature: otherwise a no-op.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(point: &str) {
    if std::env::var("SNAPFS_CRASH_AT").is_ok_and(|at| at == point) {
        eprintln!("SNAPFS_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Without the `failpoints` feature, crash points do nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str) {}

/// Race tests: `SNAPFS_PAUSE_AT=<point>:<ms>` makes the thread passing `point` sleep
/// that long, widening a window a test needs to hit every time. Only with the
/// `failpoints` feature: otherwise a no-op.
#[cfg(feature = "failpoints")]
pub(crate) fn pause_point(point: &str) {
    // Read once: freezes pass here on every snapshot.
    static PAUSE_AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let pause = PAUSE_AT.get_or_init(|| {
        let at = std::env::var("SNAPFS_PAUSE_AT").ok()?;
        let (name, ms) = at.split_once(':')?;
        Some((name.to_string(), ms.parse().ok()?))
    });
    if let Some((name, ms)) = pause
        && name == point
    {
        // Said, so a test can wait for the window instead of guessing when it opens.
        eprintln!("SNAPFS_PAUSE_AT={point}: pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}

/// Without the `failpoints` feature, pause points do nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn pause_point(_point: &str) {}
