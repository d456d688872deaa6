//! What one restore may make the machine do. An archive declares sizes — an entry's
//! stored bytes, a sparse entry's logical size, a nested archive's entries, a file
//! a partial snapshot assembles, its paths and entry count — and nothing else bounds
//! them: the unpacker charges each to a [`Tally`] before it is believed, against the
//! [`Limits`] of the restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::error::SnapshotError;

/// The logical budget when `storage.max_restore_bytes` is not set: 256 GiB, more
/// than the logical size (preallocated tails included) of any collection this
/// daemon holds on the machines it runs on, and some minutes of producing and
/// hashing zeros at most. Fixed, not grown with the disk: it bounds CPU time.
pub const DEFAULT_LOGICAL_BYTES: u64 = 256 << 30;

/// The embedded manifest's largest size: 16 MiB lists some 80,000 files with their
/// block signatures, far more than a collection has.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Entries (files and directories, nested ones included) one archive may hold: a
/// collection of 100 shards of 50 segments of 30 files is 150,000.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// Bytes of entry paths one archive may hold, together: what the unpacker keeps in
/// memory to check the manifest (a Qdrant path is some 100 bytes).
pub const MAX_PATH_BYTES: u64 = 64 << 20;

/// What a file system allocates at least, per file or directory and per data
/// range: its block.
const FS_BLOCK: u64 = 4096;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes the entries may take on disk (data ranges rounded to the file
    /// system's blocks, a block per file and directory; holes are free); `None`:
    /// not checked (nothing is written).
    pub space: Option<u64>,
    /// Logical bytes all files together may describe: outer and nested entries, and
    /// files a partial archive assembles. Reading a sparse entry produces every zero
    /// of it (and the manifest check hashes them), so this bounds CPU time as well.
    pub logical: u64,
    /// Set from elsewhere (an abandoned restore): the unpacking stops at its next
    /// MiB.
    pub cancel: Arc<AtomicBool>,
    /// This restore's share of the disk, seen by the restores running beside it.
    pub reservation: Option<Arc<Reservation>>,
}

impl Limits {
    /// No disk check, the default logical budget, no canceller.
    pub fn unbounded_space() -> Limits {
        Limits {
            space: None,
            logical: DEFAULT_LOGICAL_BYTES,
            cancel: Arc::default(),
            reservation: None,
        }
    }

    /// [`Limits::unbounded_space`] with this logical budget.
    pub fn logical(logical: u64) -> Limits {
        Limits {
            logical,
            ..Limits::unbounded_space()
        }
    }

    pub(super) fn check_cancel(&self) -> Result<(), SnapshotError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(SnapshotError::Cancelled);
        }
        Ok(())
    }
}

/// One restore's declared disk bytes. Its free space is measured when it starts, so
/// what other restores had written by then is already out of it; what they declare
/// after that is subtracted as they declare it (a restore that then fails and
/// frees its bytes is still counted: on the safe side). Every restore of one
/// storage counts in that storage's ledger ([`crate::storage::Storage::restore_ledger`]:
/// disk bytes declared since it opened, only ever growing).
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<AtomicU64>,
    mine: AtomicU64,
    /// The ledger when this restore started.
    start: u64,
}

impl Reservation {
    /// A restore starting now, counted in `ledger`.
    pub fn new(ledger: &Arc<AtomicU64>) -> Self {
        Reservation {
            ledger: ledger.clone(),
            mine: AtomicU64::new(0),
            start: ledger.load(Ordering::SeqCst),
        }
    }

    pub(super) fn add(&self, bytes: u64) {
        self.mine.fetch_add(bytes, Ordering::SeqCst);
        self.ledger.fetch_add(bytes, Ordering::SeqCst);
    }

    /// What the other restores have declared since this one started.
    pub(super) fn others(&self) -> u64 {
        self.ledger
            .load(Ordering::SeqCst)
            .saturating_sub(self.start)
            .saturating_sub(self.mine.load(Ordering::SeqCst))
    }
}

/// What an archive has cost so far, charged before each piece is believed.
pub(super) struct Tally<'a> {
    limits: &'a Limits,
    disk: u64,
    logical: u64,
    entries: u64,
    path_bytes: u64,
}

impl<'a> Tally<'a> {
    pub(super) fn new(limits: &'a Limits) -> Self {
        Tally {
            limits,
            disk: 0,
            logical: 0,
            entries: 0,
            path_bytes: 0,
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        self.limits
    }

    /// One more entry at a path of `path_len` bytes.
    pub(super) fn entry(&mut self, path_len: usize) -> Result<(), SnapshotError> {
        self.entries += 1;
        self.path_bytes = self.path_bytes.saturating_add(path_len as u64);
        if self.entries > MAX_ENTRIES || self.path_bytes > MAX_PATH_BYTES {
            return Err(SnapshotError::invalid(format!(
                "the archive has more than {MAX_ENTRIES} entries or {MAX_PATH_BYTES} bytes of paths (no snapshot has)"
            )));
        }
        Ok(())
    }

    /// Logical bytes about to be read (or assembled).
    pub(super) fn logical(&mut self, bytes: u64) -> Result<(), SnapshotError> {
        self.logical = self.logical.saturating_add(bytes);
        if self.logical > self.limits.logical {
            return Err(SnapshotError::OverBudget {
                limit: self.limits.logical,
            });
        }
        Ok(())
    }

    /// Disk for a directory or an empty file: a block.
    pub(super) fn node(&mut self) -> Result<(), SnapshotError> {
        self.disk_bytes(FS_BLOCK)
    }

    /// Disk for a file whose data lies in `ranges` (`(offset, length)`): every
    /// block a range touches, and a block for the file.
    pub(super) fn data(&mut self, ranges: &[(u64, u64)]) -> Result<(), SnapshotError> {
        let blocks = ranges
            .iter()
            .filter(|(_, len)| *len > 0)
            .map(|&(offset, len)| {
                let first = offset / FS_BLOCK;
                let end = offset.saturating_add(len).div_ceil(FS_BLOCK);
                end - first
            })
            .fold(1u64, u64::saturating_add);
        self.disk_bytes(blocks.saturating_mul(FS_BLOCK))
    }

    fn disk_bytes(&mut self, bytes: u64) -> Result<(), SnapshotError> {
        self.disk = self.disk.saturating_add(bytes);
        let others = match &self.limits.reservation {
            Some(reservation) => {
                reservation.add(bytes);
                reservation.others()
            }
            None => 0,
        };
        if let Some(free) = self.limits.space
            && self.disk.saturating_add(others) > free
        {
            return Err(SnapshotError::NoSpace {
                needed: self.disk,
                free: free.saturating_sub(others),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_sees_what_others_declared_since_it_started() {
        let ledger = Arc::default();
        let before = Reservation::new(&ledger);
        before.add(1000);
        let mine = Reservation::new(&ledger);
        // Declared before this one started: already out of its measured free space.
        assert_eq!(mine.others(), 0);
        let after = Reservation::new(&ledger);
        after.add(300);
        mine.add(50);
        assert_eq!(mine.others(), 300);
        assert_eq!(after.others(), 50);
    }

    #[test]
    fn disk_is_charged_in_blocks_touched() {
        let limits = Limits {
            space: Some(5 * FS_BLOCK),
            ..Limits::unbounded_space()
        };
        let mut tally = Tally::new(&limits);
        // 512 bytes across a block boundary: two blocks, and one for the file.
        tally.data(&[(4000, 512), (1 << 40, 0)]).unwrap();
        assert_eq!(tally.disk, 3 * FS_BLOCK);
        tally.node().unwrap();
        tally.node().unwrap();
        assert!(matches!(tally.node(), Err(SnapshotError::NoSpace { .. })));
    }
}
