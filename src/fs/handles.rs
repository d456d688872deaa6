//! Open handles: what each `open`/`opendir` holds until `release`. Handle numbers
//! come from a counter and are never reused, so a late request on a released
//! handle fails instead of reading another file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::error::{FsError, FsResult};
use crate::snapshot::{Scope, SnapshotView};

pub enum Handle {
    /// A live snapshot: one frozen view for the handle's whole life, so one open
    /// file never mixes two states.
    Live(Box<LiveRead>),
    /// A stored snapshot, read by offset from its store, with the size and time it
    /// had when opened: an open file keeps its attributes (and its bytes) after its
    /// snapshot is deleted, as an unlinked file does.
    Stored {
        reader: Arc<dyn crate::snapshot::store::StoredReader>,
        size: u64,
        mtime: SystemTime,
    },
    /// A small generated file, fixed at open.
    Bytes { data: Arc<[u8]>, mtime: SystemTime },
    /// A directory listing, fixed at opendir so offsets stay meaningful.
    Dir(Vec<DirEntry>),
    /// A snapshot being written into a recover/ directory.
    Upload(Box<super::recover::Upload>),
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub is_dir: bool,
    pub name: String,
}

pub struct LiveRead {
    pub view: Arc<SnapshotView>,
    pub scope: Scope,
    /// Whether a read reached the end (counted once as a snapshot produced).
    pub finished: AtomicBool,
    /// Reads go through the page cache of this inode (see `SnapFs::enter_cache`).
    pub cached_ino: Option<u64>,
}

impl LiveRead {
    pub fn new(view: Arc<SnapshotView>, scope: Scope) -> Self {
        LiveRead {
            view,
            scope,
            finished: AtomicBool::new(false),
            cached_ino: None,
        }
    }
}

#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Handle>>>,
}

impl Handles {
    pub fn insert(&self, handle: Handle) -> u64 {
        // Starts at 1: some tools treat handle 0 as "none".
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().unwrap().insert(fh, Arc::new(handle));
        fh
    }

    pub fn get(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.open
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Forget `fh`; the handle (and a live view's freeze) ends once no read still
    /// holds it.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        self.open.lock().unwrap().remove(&fh)
    }
}
