//! The mount's `snapshots/` directories: the stored snapshots of whichever store is
//! configured ([`SnapshotStore`]), each beside its checksum as
//! `<name>.checksum` (64 hex), with the snapshot's size and time.
//!
//! Where listing is costly (a LIST request and a GET per checksum in S3), a listing
//! is kept for the store's `listing_ttl`: `ls -l` stats every name it lists, and the
//! kernel looks names up before each use. A name not in the kept listing is asked
//! again at once (a snapshot just created over HTTP shows up at the next `ls`).
//! `rm` and a failed lookup drop the kept listing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::snapshot::Scope;
use crate::snapshot::store::{CHECKSUM_EXT, OpenedSnapshot, SnapshotStore, StoredSnapshot};

use super::error::{FsError, FsResult};

/// What a name in a `snapshots/` directory is.
#[derive(Debug, Clone)]
pub enum StoredEntry {
    Snapshot {
        size: u64,
        mtime: SystemTime,
    },
    /// The checksum's text (64 hex).
    Checksum {
        text: String,
        mtime: SystemTime,
    },
}

impl StoredEntry {
    pub fn size(&self) -> u64 {
        match self {
            StoredEntry::Snapshot { size, .. } => *size,
            StoredEntry::Checksum { text, .. } => text.len() as u64,
        }
    }

    pub fn mtime(&self) -> SystemTime {
        match self {
            StoredEntry::Snapshot { mtime, .. } | StoredEntry::Checksum { mtime, .. } => *mtime,
        }
    }
}

/// One directory's files, sorted by name.
type Listing = Arc<Vec<(String, StoredEntry)>>;

pub struct StoredDirs {
    store: Arc<dyn SnapshotStore>,
    /// Per directory: when it was listed, and what was there.
    listings: Mutex<HashMap<Scope, (Instant, Listing)>>,
}

impl StoredDirs {
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        StoredDirs {
            store,
            listings: Mutex::default(),
        }
    }

    /// The names in `scope`'s `snapshots/` directory, sorted; blocking.
    pub fn entries(&self, scope: &Scope) -> FsResult<Listing> {
        if let Some((at, listing)) = self.listings.lock().unwrap().get(scope)
            && at.elapsed() < self.store.listing_ttl()
        {
            return Ok(listing.clone());
        }
        self.list_now(scope)
    }

    fn list_now(&self, scope: &Scope) -> FsResult<Listing> {
        let listing = Arc::new(entries_of(self.store.list(scope)?));
        if !self.store.listing_ttl().is_zero() {
            self.listings
                .lock()
                .unwrap()
                .insert(scope.clone(), (Instant::now(), listing.clone()));
        }
        Ok(listing)
    }

    /// Entry `name` of `scope`'s directory: from the kept listing, else listed again.
    pub fn entry(&self, scope: &Scope, name: &str) -> FsResult<StoredEntry> {
        let find = |listing: &[(String, StoredEntry)]| {
            listing
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
        };
        if self.store.listing_ttl().is_zero() {
            return self.stat(scope, name);
        }
        if let Some(found) = find(&self.entries(scope)?) {
            return Ok(found);
        }
        find(&self.list_now(scope)?).ok_or(FsError::NotFound)
    }

    /// Entry `name`, asked of the store alone (a directory may hold many).
    fn stat(&self, scope: &Scope, name: &str) -> FsResult<StoredEntry> {
        let (snapshot, checksum) = match name.strip_suffix(CHECKSUM_EXT) {
            Some(snapshot) => (snapshot, true),
            None => (name, false),
        };
        let found = match self.store.stat(scope, snapshot) {
            Ok(found) => found,
            // A name that cannot be a stored snapshot's is simply not there.
            Err(err) if err.kind() == crate::storage::error::ErrorKind::Invalid => {
                return Err(FsError::NotFound);
            }
            Err(err) => return Err(err.into()),
        };
        let mtime = found.modified;
        match (checksum, found.checksum) {
            (false, _) => Ok(StoredEntry::Snapshot {
                size: found.size,
                mtime,
            }),
            (true, Some(text)) => Ok(StoredEntry::Checksum { text, mtime }),
            (true, None) => Err(FsError::NotFound),
        }
    }

    /// Stored snapshot `name` of `scope`, for reading.
    pub fn open(&self, scope: &Scope, name: &str) -> FsResult<OpenedSnapshot> {
        Ok(self.store.open(scope, name)?)
    }

    /// `rm` of stored snapshot `name` (its checksum goes with it); a checksum alone
    /// cannot be removed.
    pub fn delete(&self, scope: &Scope, name: &str) -> FsResult<()> {
        if name.ends_with(CHECKSUM_EXT) {
            return Err(FsError::NotPermitted(
                "a checksum goes with its snapshot: delete the snapshot instead",
            ));
        }
        let result = self.store.delete(scope, name);
        self.listings.lock().unwrap().remove(scope);
        result.map_err(Into::into)
    }
}

/// The files a listing shows: each snapshot, and its checksum if it has one.
fn entries_of(snapshots: Vec<StoredSnapshot>) -> Vec<(String, StoredEntry)> {
    let mut out = Vec::new();
    for snapshot in snapshots {
        let mtime = snapshot.modified;
        if let Some(text) = snapshot.checksum {
            out.push((
                format!("{}{CHECKSUM_EXT}", snapshot.name),
                StoredEntry::Checksum { text, mtime },
            ));
        }
        out.push((
            snapshot.name,
            StoredEntry::Snapshot {
                size: snapshot.size,
                mtime,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_listed_beside_their_snapshots() {
        let snapshot = |name: &str, checksum: Option<String>| StoredSnapshot {
            name: name.into(),
            size: 10,
            modified: SystemTime::UNIX_EPOCH,
            checksum,
        };
        let listed = vec![
            snapshot("c-1.snapshot", Some("ab".repeat(32))),
            snapshot("c-0.snapshot", None),
        ];
        let names: Vec<String> = entries_of(listed).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["c-0.snapshot", "c-1.snapshot", "c-1.snapshot.checksum"]
        );
    }
}
