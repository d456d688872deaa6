//! The mount's `snapshots/` directories when stored snapshots live in S3
//! (`snapshots_storage: s3`): each `.snapshot` object and its `.checksum` object as
//! files, with the object's size and time.
//!
//! A listing is one LIST request (plus a GET per checksum), so it is kept for
//! [`LISTING_TTL`]: `ls -l` stats every name it lists, and the kernel looks names
//! up before each use. A name not in the kept listing is asked again at once (a
//! snapshot just created over HTTP shows up at the next `ls`). `rm` and a failed
//! lookup drop the kept listing. Reads go through [`ObjectReader`], which reads
//! ahead while a copy goes forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::snapshot::Scope;
use crate::snapshot::s3::{S3Snapshots, StoredObject};
use crate::snapshot::s3_reader::ObjectReader;
use crate::snapshot::stored::CHECKSUM_EXT;

use super::error::{FsError, FsResult};

/// How long a listing of one `snapshots/` directory is reused.
pub const LISTING_TTL: Duration = Duration::from_secs(2);

/// What a name in an S3-backed `snapshots/` directory is.
#[derive(Debug, Clone)]
pub enum S3Entry {
    Snapshot {
        size: u64,
        mtime: SystemTime,
    },
    /// The checksum object's text (64 hex).
    Checksum {
        text: String,
        mtime: SystemTime,
    },
}

impl S3Entry {
    pub fn size(&self) -> u64 {
        match self {
            S3Entry::Snapshot { size, .. } => *size,
            S3Entry::Checksum { text, .. } => text.len() as u64,
        }
    }

    pub fn mtime(&self) -> SystemTime {
        match self {
            S3Entry::Snapshot { mtime, .. } | S3Entry::Checksum { mtime, .. } => *mtime,
        }
    }
}

/// One directory's files, sorted by name.
type Listing = Arc<Vec<(String, S3Entry)>>;

pub struct S3Stored {
    s3: Arc<S3Snapshots>,
    /// Per directory: when it was listed, and what was there.
    listings: Mutex<HashMap<Scope, (Instant, Listing)>>,
}

impl S3Stored {
    pub fn new(s3: Arc<S3Snapshots>) -> Self {
        S3Stored {
            s3,
            listings: Mutex::default(),
        }
    }

    /// The names in `scope`'s `snapshots/` directory, sorted; blocking.
    pub fn entries(&self, scope: &Scope) -> FsResult<Listing> {
        if let Some((at, listing)) = self.listings.lock().unwrap().get(scope)
            && at.elapsed() < LISTING_TTL
        {
            return Ok(listing.clone());
        }
        self.list_now(scope)
    }

    fn list_now(&self, scope: &Scope) -> FsResult<Listing> {
        let listing = Arc::new(entries_of(block_on(self.s3.list_objects(scope))?));
        self.listings
            .lock()
            .unwrap()
            .insert(scope.clone(), (Instant::now(), listing.clone()));
        Ok(listing)
    }

    /// Entry `name` of `scope`'s directory: from the kept listing, else listed again.
    pub fn entry(&self, scope: &Scope, name: &str) -> FsResult<S3Entry> {
        let find = |listing: &[(String, S3Entry)]| {
            listing
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
        };
        if let Some(found) = find(&self.entries(scope)?) {
            return Ok(found);
        }
        find(&self.list_now(scope)?).ok_or(FsError::NotFound)
    }

    /// A reader of stored snapshot `name` of `scope` (read ahead while going forward).
    pub fn open(&self, scope: &Scope, name: &str) -> FsResult<ObjectReader> {
        let (key, meta) = block_on(self.s3.head(scope, name))?;
        Ok(self.s3.reader(key, meta.size))
    }

    /// `rm` of stored snapshot `name` (its checksum object goes with it).
    pub fn delete(&self, scope: &Scope, name: &str) -> FsResult<()> {
        let result = block_on(async {
            let (key, _) = self.s3.head(scope, name).await?;
            self.s3.delete(&key).await
        });
        self.listings.lock().unwrap().remove(scope);
        result.map_err(Into::into)
    }
}

/// The files a listing shows: each snapshot, and its checksum object if it has one.
fn entries_of(objects: Vec<StoredObject>) -> Vec<(String, S3Entry)> {
    let mut out = Vec::new();
    for object in objects {
        let mtime = object.modified;
        if let Some(text) = object.checksum {
            out.push((
                format!("{}{CHECKSUM_EXT}", object.name),
                S3Entry::Checksum { text, mtime },
            ));
        }
        out.push((
            object.name,
            S3Entry::Snapshot {
                size: object.size,
                mtime,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Wait for `work` from a blocking thread of the runtime (FUSE work runs there).
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Handle::current().block_on(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_listed_beside_their_snapshots() {
        let objects = vec![
            StoredObject {
                name: "c-1.snapshot".into(),
                size: 10,
                modified: SystemTime::UNIX_EPOCH,
                checksum: Some("ab".repeat(32)),
            },
            StoredObject {
                name: "c-0.snapshot".into(),
                size: 10,
                modified: SystemTime::UNIX_EPOCH,
                checksum: None,
            },
        ];
        let names: Vec<String> = entries_of(objects).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["c-0.snapshot", "c-1.snapshot", "c-1.snapshot.checksum"]
        );
    }
}
