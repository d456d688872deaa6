//! Freezes: every shard a snapshot covers stops at one cut in the update order
//! (placed under the collection's dispatch lock, so a batch is never split) and
//! flushes; the guard thaws them when dropped.

use std::sync::Arc;

use super::Collection;
use crate::storage::error::{Result, StorageError};
use crate::storage::shard::Shard;

impl Collection {
    // ---- freeze ----

    /// Freeze every shard at one cut in the update order and flush, so the files
    /// hold one consistent state until the returned guard is dropped.
    /// Blocking: call from a blocking thread.
    pub fn freeze(self: &Arc<Self>) -> Result<CollectionFreeze> {
        let all: Vec<u32> = (0..self.shard_count()).collect();
        self.freeze_shards(&all)
    }

    /// Freeze only `ids` (a shard snapshot), at one cut in the update order. A shard
    /// still frozen by an older view that updates have passed since cannot join this
    /// cut (its files hold an older state than the other shards' would): the freeze
    /// is undone and [`StorageError::StaleFreeze`] names those shards, so the caller
    /// can end the older freezes and try again.
    pub fn freeze_shards(self: &Arc<Self>, ids: &[u32]) -> Result<CollectionFreeze> {
        self.freeze_at_cut(ids, false)
    }

    /// Freeze `ids`, joining freezes already in place whatever state they hold: for
    /// work that only needs the files to stay put (a partial apply stages from them
    /// and keeps the pending log), or that holds a view's freeze a little longer.
    pub fn join_freeze(self: &Arc<Self>, ids: &[u32]) -> Result<CollectionFreeze> {
        self.freeze_at_cut(ids, true)
    }

    fn freeze_at_cut(self: &Arc<Self>, ids: &[u32], join_any: bool) -> Result<CollectionFreeze> {
        let mut guard = CollectionFreeze {
            collection: self.clone(),
            shards: Vec::new(),
        };
        let cuts = {
            let _exclusive = self.dispatch.write().unwrap();
            let mut cuts = Vec::new();
            for id in ids {
                let shard = self.shard(*id)?;
                cuts.push(shard.freeze_cut()?);
                // From here on the guard owns this shard's freeze: an error below still thaws.
                guard.shards.push(shard);
            }
            cuts
        };
        // This cut holds every update acknowledged before it only if no shard
        // joined a freeze that updates have passed since.
        let mut lagging = Vec::new();
        for (cut, id) in cuts.into_iter().zip(ids) {
            if cut.recv().map_err(|_| StorageError::ShuttingDown)? {
                lagging.push(*id);
            }
        }
        if !lagging.is_empty() && !join_any {
            return Err(StorageError::StaleFreeze {
                collection: self.name.clone(),
                shards: lagging,
            });
        }
        crate::storage::pause_point("freeze-cut-placed");
        for shard in &guard.shards {
            shard
                .settle_frozen()
                .map_err(|err| guard.switched_meanwhile(err))?;
        }
        Ok(guard)
    }
}

/// A frozen collection; dropping it thaws every shard it froze.
pub struct CollectionFreeze {
    collection: Arc<Collection>,
    /// The frozen shards (the very objects: a shard switched meanwhile is not these).
    shards: Vec<Arc<Shard>>,
}

impl CollectionFreeze {
    pub fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }

    /// The frozen shards, in the order asked.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// `err`, met while using the frozen shards, unless one of them was switched
    /// (restored) meanwhile — its engine closed with it: then not a failure but a
    /// stale freeze, which the caller places again.
    pub fn switched_meanwhile(&self, err: StorageError) -> StorageError {
        if self.is_current() {
            err
        } else {
            StorageError::StaleFreeze {
                collection: self.collection.name().to_string(),
                shards: Vec::new(),
            }
        }
    }

    /// The collection still serves (a restore did not replace it) and every frozen
    /// shard still serves its slot (none was switched since).
    pub fn is_current(&self) -> bool {
        !self
            .collection
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)
            && self.shards.iter().all(|shard| {
                self.collection
                    .shard(shard.id())
                    .is_ok_and(|now| Arc::ptr_eq(&now, shard))
            })
    }
}

impl Drop for CollectionFreeze {
    /// Thaws every shard at one point in the update order, as the freeze cut them:
    /// a freeze placed meanwhile cuts all of them before or all after.
    fn drop(&mut self) {
        let _exclusive = self
            .collection
            .dispatch
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for shard in &self.shards {
            shard.thaw();
        }
    }
}
