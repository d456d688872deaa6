//! Partial snapshots of a shard: a manifest says what a receiver has, the archive
//! carries only what it lacks, and applying it gives the receiver the sender's state.
//!
//! Two manifest forms ([`manifest`]): Qdrant's version-based one, so Qdrant servers,
//! Qdrant Edge devices (`qdrant-edge-py`'s `update_from_snapshot`) and snapfs
//! interoperate, and a content-hash one that snapfs peers use, which is right even
//! when versions say nothing (a restored shard, a peer with another history).
//!
//! Archives are cut from a frozen shard view like every snapfs archive ([`create`]):
//! a virtual tar with an exact size, ranges, the same bytes for the same state. An
//! archive is applied ([`apply`]) by merging it into a staged copy of the frozen
//! shard (private copies, reflinked where the file system can) and switching that
//! copy in; [`peer`] pulls one from another snapfs or a Qdrant server.

pub mod apply;
pub mod create;
pub mod delta;
pub mod loaded;
pub mod manifest;
pub mod peer;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub use manifest::{ContentEntry, ContentManifest, ManifestRequest, VersionManifest};

use super::digest::{BLOCK, blocks_text, file_digest, hex};
use super::layout::EntryKind;
use super::{Scope, SnapshotView, Snapshots};
use crate::storage::shard::Shard;
use crate::storage::{Result, StorageError};

/// Qdrant's per-segment version manifest in a partial archive.
pub const SEGMENT_MANIFEST: &str = "segment_manifest.json";

/// Whether a received collection or full shard archive holds partial pieces (which
/// a full restore must refuse).
pub fn is_partial_tree(dir: &Path) -> bool {
    let Ok(entries) = fs_err::read_dir(dir.join("segments")) else {
        return false;
    };
    entries.flatten().any(|segment| {
        let path = segment.path();
        path.join(SEGMENT_MANIFEST).exists() || path.join("files").join(SEGMENT_MANIFEST).exists()
    })
}

/// The engine's version manifest of `shard` (call with the shard frozen, so that
/// it describes its files).
pub fn engine_manifest(shard: &Shard) -> Result<VersionManifest> {
    let manifest = shard
        .engine()?
        .snapshot_manifest()
        .map_err(StorageError::from_engine)?;
    let value = serde_json::to_value(&manifest).map_err(StorageError::from_cause)?;
    serde_json::from_value(value).map_err(|e| {
        StorageError::internal_from("the engine's snapshot manifest has another shape", e)
    })
}

/// Where a file of a shard archive lies in the shard directory: a streamable
/// segment's `segments/<id>/files/<f>` is the segment's `segments/<id>/<f>`.
pub fn shard_path(archive_path: &str) -> String {
    if let Some(rest) = archive_path.strip_prefix("segments/")
        && let Some((segment, inner)) = rest.split_once('/')
        && let Some(file) = inner.strip_prefix("files/")
    {
        return format!("segments/{segment}/{file}");
    }
    archive_path.to_string()
}

/// A shard's manifests of one state, computed once per state.
pub struct ShardManifests {
    /// The state's change number (see `Shard::change_number`).
    pub change: u64,
    pub versions: VersionManifest,
    /// Hashing every file takes a pass over the data: done when first asked.
    content: OnceLock<ContentManifest>,
}

impl ShardManifests {
    pub fn content(&self) -> Option<&ContentManifest> {
        self.content.get()
    }
}

/// States remembered: a few per shard of a handful of busy collections.
const CACHED_STATES: usize = 256;

/// Shard states' manifests by change number (part of [`super::Snapshots`]).
pub struct ManifestCache(Mutex<lru::LruCache<u64, Arc<ShardManifests>>>);

impl Default for ManifestCache {
    fn default() -> Self {
        ManifestCache(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CACHED_STATES).unwrap(),
        )))
    }
}

/// The manifests of shard `id` of `collection` as it is now: from the cache while
/// the shard has not changed (no freeze), otherwise from a short freeze. With
/// `content`, the content form is computed too (from the digest cache for files
/// seen before). Blocking.
pub fn manifests(
    snapshots: &Arc<Snapshots>,
    collection: &str,
    id: u32,
    content: bool,
) -> Result<Arc<ShardManifests>> {
    let change = snapshots
        .storage()
        .collection(collection)?
        .shard(id)?
        .change_number();
    if let Some(known) = snapshots.manifests.0.lock().unwrap().get(&change).cloned()
        && (!content || known.content().is_some())
    {
        return Ok(known);
    }
    let view = SnapshotView::open(snapshots, Scope::Shard(collection.to_string(), id))?;
    manifests_of(&view, content)
}

/// The manifests of the state `view` holds frozen (a shard view).
pub fn manifests_of(view: &SnapshotView, content: bool) -> Result<Arc<ShardManifests>> {
    let state = view
        .shard_state()
        .ok_or_else(|| StorageError::internal("manifests are made of shard views"))?;
    let entry = {
        let mut cache = view.snapshots().manifests.0.lock().unwrap();
        match cache.get(&state.change) {
            Some(known) => known.clone(),
            None => {
                let made = Arc::new(ShardManifests {
                    change: state.change,
                    versions: state.versions.clone(),
                    content: OnceLock::new(),
                });
                cache.put(state.change, made.clone());
                made
            }
        }
    };
    if content && entry.content.get().is_none() {
        let computed = content_manifest(view)?;
        let _ = entry.content.set(computed);
    }
    Ok(entry)
}

/// Every file of a shard view's archive with its SHA-256 and block hashes, but the
/// WAL (generated entries, which are no file of the shard, are left out too).
fn content_manifest(view: &SnapshotView) -> Result<ContentManifest> {
    let layout = view.layout();
    let mut files = Vec::new();
    for entry in layout.entries() {
        let EntryKind::File { file, extents } = &entry.kind else {
            continue;
        };
        // The WAL is not the state: after the freeze's flush the segments hold every
        // operation in it. A receiver writes an empty WAL numbered after them.
        if entry.path.starts_with("wal/") {
            continue;
        }
        let frozen = &layout.files()[*file];
        let digest = frozen
            .with_file(|f| file_digest(&view.snapshots().digests, f, frozen.size, extents, true))
            .map_err(|e| StorageError::internal_from(format!("hashing {}", entry.path), e))?;
        files.push(ContentEntry {
            path: entry.path.clone(),
            hash: hex(&digest.sha256),
            size: entry.size,
            blocks: digest.blocks.as_deref().map(blocks_text),
        });
    }
    Ok(ContentManifest {
        block_size: Some(BLOCK),
        files,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn streamable_segment_paths_map_to_the_shard() {
        let cases = [
            (
                "segments/ab-1/files/payload_storage/page_0.dat",
                "segments/ab-1/payload_storage/page_0.dat",
            ),
            (
                "segments/ab-1/files/segment.json",
                "segments/ab-1/segment.json",
            ),
            ("wal/open-1", "wal/open-1"),
            ("edge_config.json", "edge_config.json"),
            ("segments/ab-1/other/x", "segments/ab-1/other/x"),
        ];
        for (archive, shard) in cases {
            assert_eq!(super::shard_path(archive), shard);
        }
    }
}
