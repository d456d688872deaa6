//! What is under way and how it ended: the restores running per collection (shown
//! in `info.json` and `GET /collections/{c}`), and the count of refused ones. Kept
//! apart from the restore itself so the intake (which shows a restore as
//! `receiving`) and the restore (which shows it as `switching`) both use it without
//! depending on each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Snapshots;
use crate::storage::StorageError;

/// A restore under way, as `info.json` shows it.
#[derive(Debug, Clone)]
pub struct RestoreState {
    /// `collection` or `shard <id>`.
    pub of: String,
    /// `receiving` (bytes arriving and being unpacked) or `switching` (checked and
    /// swapped in).
    pub phase: &'static str,
    pub since: SystemTime,
    pub bytes: Arc<AtomicU64>,
}

impl RestoreState {
    /// As `info.json` and `GET /collections/{c}` (under `snapfs`) show it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.phase,
            "of": self.of,
            "since": super::names::creation_time(self.since),
            "bytes_received": self.bytes.load(Ordering::Relaxed),
        })
    }
}

/// The restores under way, by collection, each with its serial number (part of
/// [`Snapshots`]).
#[derive(Default)]
pub struct Restores {
    running: Mutex<HashMap<String, (u64, RestoreState)>>,
    next: AtomicU64,
}

/// The restore of `collection` under way, if any.
pub fn running_restore(snapshots: &Snapshots, collection: &str) -> Option<RestoreState> {
    snapshots
        .restores
        .running
        .lock()
        .unwrap()
        .get(collection)
        .map(|(_, state)| state.clone())
}

/// Shows a restore of a collection as running for as long as it lives.
pub struct Running {
    snapshots: Arc<Snapshots>,
    collection: String,
    id: u64,
}

impl Running {
    pub fn start(
        snapshots: &Arc<Snapshots>,
        collection: &str,
        of: String,
        phase: &'static str,
        bytes: Arc<AtomicU64>,
    ) -> Self {
        let id = snapshots.restores.next.fetch_add(1, Ordering::Relaxed);
        let state = RestoreState {
            of,
            phase,
            since: SystemTime::now(),
            bytes,
        };
        snapshots
            .restores
            .running
            .lock()
            .unwrap()
            .insert(collection.to_string(), (id, state));
        Running {
            snapshots: snapshots.clone(),
            collection: collection.to_string(),
            id,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.snapshots.restores.running.lock().unwrap();
        if running
            .get(&self.collection)
            .is_some_and(|(id, _)| *id == self.id)
        {
            running.remove(&self.collection);
        }
    }
}

/// Count a refused restore in `snapfs_restore_failures_total`, by its kind.
pub fn count_refusal(err: &StorageError) {
    crate::metrics::restore_failed(err.failure_reason());
}
