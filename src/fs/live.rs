//! Live files' sizes and the page cache. A live file's size needs a laid-out
//! archive, which needs a freeze; so the size and mtime of each scope's last state
//! are remembered against a cheap key (every covered shard's change number) and an
//! unchanged scope is stat'ed without freezing anything. Only one state per inode
//! goes through the kernel's page cache at a time (see docs/ARCHITECTURE.md, "The
//! filesystem layer"), and a state that moved on is dropped from the cache at once
//! (by the mount's dropper, [`SnapFs::take_stale_caches`]) rather than at the next
//! reader's open, which would wait for the kernel to free it.

use std::time::SystemTime;

use super::{FsResult, SnapFs};
use crate::snapshot::{Scope, SnapshotView};

/// Size and mtime of a live file's state, valid while `key` is unchanged.
#[derive(Clone)]
pub(super) struct LiveState {
    pub(super) key: StateKey,
    pub(super) size: u64,
    pub(super) mtime: SystemTime,
}

/// Identifies a state cheaply: every covered shard's change number (which moves
/// with every change to the shard's files and is never reused, not even by a shard
/// switched in or a collection re-created).
pub(super) type StateKey = Vec<(u32, u64)>;

/// A key no scope has now (change numbers start at 1): a state already past.
pub(super) const PAST_STATE: [(u32, u64); 1] = [(u32::MAX, 0)];

/// Which state a live file's page cache holds, and how many open handles read
/// through it. Only one state at a time goes through the cache; a handle of another
/// state opened meanwhile reads direct.
pub(super) struct CachedState {
    pub(super) fingerprint: [u8; 32],
    /// The scope's state key when the state was opened: when the scope's key moves
    /// on, the cached pages are stale.
    pub(super) key: StateKey,
    pub(super) open: usize,
}

impl SnapFs {
    /// The size and mtime of the state `scope` would stream now: remembered while
    /// nothing changed, otherwise from a fresh view (a short freeze and flush).
    pub(super) fn live_state(&self, scope: &Scope) -> FsResult<LiveState> {
        let key = self.state_key(scope)?;
        if let Some(state) = self.live_states.lock().unwrap().get(scope)
            && state.key == key
        {
            return Ok(state.clone());
        }
        let view = SnapshotView::open(self.ns.snapshots(), scope.clone())?;
        self.remember_state(scope, &view)
    }

    /// Record the state of a view just opened (its shards are frozen, so the key
    /// read now is the view's own).
    pub(super) fn remember_state(&self, scope: &Scope, view: &SnapshotView) -> FsResult<LiveState> {
        let state = LiveState {
            key: self.state_key(scope)?,
            size: view.size(),
            mtime: view.mtime(),
        };
        if view.is_frozen() {
            self.live_states
                .lock()
                .unwrap()
                .insert(scope.clone(), state.clone());
        }
        Ok(state)
    }

    fn state_key(&self, scope: &Scope) -> FsResult<StateKey> {
        let storage = self.ns.storage();
        let mut key = Vec::new();
        let mut add = |name: &str, only: Option<u32>| -> FsResult<()> {
            let collection = storage.collection(name)?;
            for shard in collection.shards() {
                if only.is_none_or(|id| id == shard.id()) {
                    key.push((shard.id(), shard.change_number()));
                }
            }
            if let Some(id) = only {
                collection.shard(id)?;
            }
            Ok(())
        };
        match scope {
            Scope::Collection(c) => add(c, None)?,
            Scope::Shard(c, id) => add(c, Some(*id))?,
            Scope::Full => {
                for name in storage.collection_names() {
                    // A collection deleted meanwhile simply drops out.
                    let _ = add(&name, None);
                }
            }
        }
        Ok(key)
    }

    /// May a new handle of live file `ino` holding state `fingerprint` read through
    /// the page cache, and may the cache be kept? Returns (cached, keep_cache).
    pub(super) fn enter_cache(
        &self,
        ino: u64,
        fingerprint: [u8; 32],
        key: StateKey,
    ) -> (bool, bool) {
        let mut states = self.cached_states.lock().unwrap();
        match states.get_mut(&ino) {
            Some(state) if state.fingerprint == fingerprint => {
                state.open += 1;
                (true, true)
            }
            Some(state) if state.open > 0 => (false, false),
            _ => {
                // A new state takes the cache over; the kernel drops the old pages
                // at this open (no keep_cache).
                states.insert(
                    ino,
                    CachedState {
                        fingerprint,
                        key,
                        open: 1,
                    },
                );
                (true, false)
            }
        }
    }

    /// The live files whose cached state no handle reads and whose scope has moved
    /// on (changed, or its collection gone): forgotten here, so their pages can be
    /// dropped now. The next open of such a file finds no cached state and takes the
    /// cache over. Files the kernel forgot (no node any more) have no pages left:
    /// they are forgotten here too, and not returned.
    pub fn take_stale_caches(&self) -> Vec<u64> {
        let idle: Vec<(u64, [u8; 32], StateKey)> = self
            .cached_states
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, state)| state.open == 0)
            .map(|(ino, state)| (*ino, state.fingerprint, state.key.clone()))
            .collect();
        // The keys are read without the lock (they look the storage up). The flag:
        // pages to drop (moved on), or none (the kernel forgot the file).
        let stale: Vec<(u64, [u8; 32], bool)> = idle
            .into_iter()
            .filter_map(|(ino, fingerprint, key)| match self.node(ino) {
                Ok(super::Node::Live(scope)) => {
                    let current = self.state_key(&scope).is_ok_and(|now| now == key);
                    (!current).then_some((ino, fingerprint, true))
                }
                _ => Some((ino, fingerprint, false)),
            })
            .collect();
        let mut states = self.cached_states.lock().unwrap();
        stale
            .into_iter()
            .filter(|(ino, fingerprint, _)| {
                // Still the same idle state (no open took it meanwhile).
                let idle = states
                    .get(ino)
                    .is_some_and(|s| s.open == 0 && s.fingerprint == *fingerprint);
                if idle {
                    states.remove(ino);
                }
                idle
            })
            .filter_map(|(ino, _, cached)| cached.then_some(ino))
            .collect()
    }
}
