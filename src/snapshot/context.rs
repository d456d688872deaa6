//! The snapshot layer's state, owned: one [`Snapshots`] per daemon, made at start
//! beside the [`Storage`] it serves and passed down to everything that opens views,
//! hashes archives, pulls from peers or shows a restore.
//!
//! Each piece used to be a process-wide static in the module that uses it. Owned,
//! their lifetime is the daemon's, a test makes its own and shares nothing with the
//! next, and what the layer remembers is listed here in one place (as
//! mountpoint-s3's file system owns its client and caches).

use std::sync::Arc;

use super::checksum::Checksums;
use super::digest::Digests;
use super::partial::ManifestCache;
use super::partial::loaded::Rewrites;
use super::partial::peer::Pulls;
use super::progress::Restores;
use super::view::LiveViews;
use crate::storage::Storage;

pub struct Snapshots {
    storage: Arc<Storage>,
    /// Views alive, by scope, and the turns their openers take.
    pub(super) views: LiveViews,
    /// Whole-archive SHA-256s by archive fingerprint, and the hashes under way.
    pub(super) checksums: Checksums,
    /// Per-file SHA-256s and block hashes by file identity.
    pub(super) digests: Digests,
    /// Partial-snapshot manifests by shard change number.
    pub(super) manifests: ManifestCache,
    /// Peer pulls under way, each cancellable.
    pub(super) pulls: Pulls,
    /// Files a load rewrote after a content-form apply (so peers converge).
    pub(super) rewrites: Rewrites,
    /// Restores under way, per collection, as `info.json` shows them.
    pub(super) restores: Restores,
}

impl Snapshots {
    pub fn new(storage: Arc<Storage>) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            storage,
            views: LiveViews::default(),
            checksums: Checksums::default(),
            digests: Digests::default(),
            manifests: ManifestCache::default(),
            pulls: Pulls::default(),
            rewrites: Rewrites::default(),
            restores: Restores::default(),
        })
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub fn checksums(&self) -> &Checksums {
        &self.checksums
    }
}
