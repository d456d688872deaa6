//! Open handles: what each `open`/`opendir` holds until `release`. Handle numbers
//! come from a counter and are never reused, so a late request on a released
//! handle fails instead of reading another file.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use super::error::{FsError, FsResult};
use crate::snapshot::checksum::SequentialHasher;
use crate::snapshot::layout::ArchiveLayout;
use crate::snapshot::{Scope, SnapshotView};

pub enum Handle {
    /// A live snapshot: one frozen view for the handle's whole life, so one open
    /// file never mixes two states.
    Live(Box<LiveRead>),
    /// A stored snapshot or its checksum: a plain file, read with pread.
    Stored(File),
    /// A stored snapshot in S3, read with ranged GETs (read ahead).
    S3(Box<crate::snapshot::s3_reader::ObjectReader>),
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
    pub hasher: OrderedHasher,
    /// Whether a read reached the end (counted once as a snapshot produced).
    pub finished: AtomicBool,
    /// Reads go through the page cache of this inode (see `SnapFs::enter_cache`).
    pub cached_ino: Option<u64>,
}

impl LiveRead {
    pub fn new(view: Arc<SnapshotView>, scope: Scope) -> Self {
        let hasher = OrderedHasher::new(view.layout());
        LiveRead {
            view,
            scope,
            hasher,
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

/// Reads that finished out of order wait for their turn to be hashed, but no more
/// than this many at once; beyond it this reader's checksum is given up (it is
/// computed on demand later) rather than holding buffers.
const MAX_WAITING_READS: usize = 8;

/// Feeds a live reader's bytes to a [`SequentialHasher`] in offset order, after the
/// data went to the kernel: reads served by different threads may finish hashing
/// out of order, and a read only waits while an earlier read, already under way,
/// will fill the gap before it.
pub struct OrderedHasher {
    state: Mutex<HashState>,
    turn: Condvar,
}

struct HashState {
    hasher: SequentialHasher,
    /// Start offsets of reads under way.
    underway: BTreeSet<u64>,
    waiting: usize,
}

impl OrderedHasher {
    fn new(layout: &ArchiveLayout) -> Self {
        OrderedHasher {
            state: Mutex::new(HashState {
                hasher: SequentialHasher::for_layout(layout),
                underway: BTreeSet::new(),
                waiting: 0,
            }),
            turn: Condvar::new(),
        }
    }

    /// A read at `offset` starts.
    pub fn begin(&self, offset: u64) {
        let mut state = self.state.lock().unwrap();
        if state.hasher.is_active() {
            state.underway.insert(offset);
        }
    }

    /// The read that began at `offset` produced `data` (empty if it failed).
    pub fn finish(&self, layout: &ArchiveLayout, offset: u64, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        loop {
            if !state.hasher.is_active() {
                break;
            }
            let next = state.hasher.next_offset();
            if offset <= next || data.is_empty() {
                state.hasher.observe(layout, offset, data);
                break;
            }
            let gap_will_fill = state.underway.range(..=next).next().is_some();
            if !gap_will_fill || state.waiting >= MAX_WAITING_READS {
                state.hasher.abandon();
                break;
            }
            state.waiting += 1;
            state = self.turn.wait(state).unwrap();
            state.waiting -= 1;
        }
        state.underway.remove(&offset);
        drop(state);
        self.turn.notify_all();
    }
}
