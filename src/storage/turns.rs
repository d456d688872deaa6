//! Who may replace a collection's files, and when: one restore or partial apply
//! per collection at a time ([`RestoreTurns`]), and one partial apply or pull per
//! shard ([`ShardClaims`]). Owned by the [`super::Storage`], keyed by collection
//! name (a restore may create the collection, or replace its `Collection`), so the
//! restore and the partial apply both take them here and neither knows the other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// The per-collection locks of restores and partial applies.
#[derive(Default)]
pub struct RestoreTurns {
    locks: Arc<Locks>,
}

/// A collection's turn to restore or apply (see [`RestoreTurns::wait`]); the last
/// one out removes the collection's lock, so the map holds only collections in use.
pub struct Turn {
    locks: Arc<Locks>,
    name: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard = None;
        let mut locks = self.locks.lock().unwrap();
        // Ours and the map's: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.name);
        }
    }
}

impl RestoreTurns {
    /// One restore (or partial apply) per collection at a time (as Qdrant: a
    /// second one waits for the first); different collections in parallel.
    pub async fn wait(&self, name: &str) -> Turn {
        let lock = self
            .locks
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Turn {
            locks: self.locks.clone(),
            name: name.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    /// Whether a lock of `name` is in the map (held or waited for).
    #[cfg(test)]
    fn holds(&self, name: &str) -> bool {
        self.locks.lock().unwrap().contains_key(name)
    }
}

type Claimed = Mutex<HashSet<(String, u32)>>;

/// The shards a partial apply (or pull) is under way on.
#[derive(Default)]
pub struct ShardClaims {
    claimed: Arc<Claimed>,
}

/// A partial apply (or pull) of a shard under way: a second one for the same shard
/// is refused at once (Qdrant answers 503 `already_in_progress`).
pub struct ShardClaim {
    claimed: Arc<Claimed>,
    key: (String, u32),
}

impl ShardClaims {
    /// Claim shard `id` of `collection`, unless it is claimed already.
    pub fn try_take(&self, collection: &str, id: u32) -> Option<ShardClaim> {
        let key = (collection.to_string(), id);
        // Built only when taken: dropping a claim gives its key back.
        if self.claimed.lock().unwrap().insert(key.clone()) {
            Some(ShardClaim {
                claimed: self.claimed.clone(),
                key,
            })
        } else {
            None
        }
    }
}

impl ShardClaim {
    /// Claim shard `id` of `collection` in `storage` (see
    /// [`super::Storage::try_claim_shard`]).
    pub fn try_take(storage: &super::Storage, collection: &str, id: u32) -> Option<ShardClaim> {
        storage.try_claim_shard(collection, id)
    }
}

impl Drop for ShardClaim {
    fn drop(&mut self) {
        self.claimed.lock().unwrap().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn restore_locks_go_with_the_last_turn() {
        let turns = Arc::new(RestoreTurns::default());
        let name = "locks-test-collection";
        let first = turns.wait(name).await;
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.wait(name).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        let second = waiting.await.unwrap();
        assert!(turns.holds(name));
        drop(second);
        assert!(!turns.holds(name));
    }

    #[test]
    fn a_shard_is_claimed_once_until_the_claim_goes() {
        let claims = ShardClaims::default();
        let claim = claims.try_take("c", 1).expect("first claim");
        assert!(claims.try_take("c", 1).is_none());
        let other = claims.try_take("c", 2).expect("another shard");
        drop(claim);
        assert!(claims.try_take("c", 1).is_some());
        drop(other);
    }
}
