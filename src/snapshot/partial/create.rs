//! Cutting a partial archive from a frozen shard view: the files the receiver lacks,
//! taken from the view's own frozen files (so the view's freeze, its copy aside at
//! the freeze limit and its bytes serve the partial archive too), laid out like any
//! snapfs archive.
//!
//! - Qdrant's form: for every current segment its `segment_manifest.json` (so the
//!   receiver learns which files are gone), `segment.json`, `version.info` and the
//!   files the version rule selects, then `wal/`, `replica_state.json` and
//!   `shard_config.json`; `snapfs-manifest.json` last, as in every snapfs archive.
//! - The content form: the files whose content differs — each as the bytes the
//!   receiver does not have, the rest to be copied from its own files — and last a
//!   `snapfs-manifest.json` marked `"partial": true` that lists every file of the new
//!   state with its digest (and the copies that make it), so the receiver knows what
//!   to keep, what to drop, how to assemble and how to check.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::delta::{BlockIndex, Delta, delta};
use super::manifest::{ManifestRequest, VersionManifest, files_to_send};
use super::{ContentManifest, manifests_of};
use crate::metrics::CreationRunning;
use crate::snapshot::Snapshots;
use crate::snapshot::archive::{Item, MANIFEST_NAME, add_items, add_manifest, replica_files};
use crate::snapshot::digest::BLOCK;
use crate::snapshot::layout::{ArchiveBuilder, ArchiveLayout, EntryKind, FrozenFile};
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::{Result, StorageError};

/// A partial archive, readable for as long as it is held (it holds the shard view).
pub struct PartialArchive {
    pub view: Arc<SnapshotView>,
    pub layout: Arc<ArchiveLayout>,
    _running: CreationRunning,
}

impl PartialArchive {
    /// The size of a full shard archive of the same state.
    pub fn full_size(&self) -> u64 {
        self.view.size()
    }
}

pub enum Created {
    /// The receiver already has this state (HTTP 304).
    NotModified,
    Archive(PartialArchive),
}

/// The partial archive that takes a receiver described by `request` to the current
/// state of shard `id` of `collection`. Blocking (freezes, may hash files).
pub fn create(
    snapshots: &Arc<Snapshots>,
    collection: &str,
    id: u32,
    request: &ManifestRequest,
) -> Result<Created> {
    let view = SnapshotView::open(snapshots, Scope::Shard(collection.to_string(), id))?;
    let layout = match request {
        ManifestRequest::Versions(known) => {
            let state = view
                .shard_state()
                .ok_or_else(|| StorageError::internal("a shard view without its manifest"))?;
            // Exact equality, as Qdrant decides: the most careful answer.
            if *known == state.versions {
                return Ok(Created::NotModified);
            }
            version_layout(&view, &state.versions, known, snapshots.storage().peer_id())?
        }
        ManifestRequest::Content(known) => {
            let manifests = manifests_of(&view, true)?;
            let current = manifests
                .content()
                .ok_or_else(|| StorageError::internal("the content manifest was not computed"))?;
            match content_layout(&view, current, known)? {
                Some(layout) => layout,
                None => return Ok(Created::NotModified),
            }
        }
    };
    Ok(Created::Archive(PartialArchive {
        view,
        layout: Arc::new(layout),
        _running: CreationRunning::start(collection),
    }))
}

/// The view's frozen files by archive path.
fn frozen_files(view: &SnapshotView) -> HashMap<&str, &Arc<FrozenFile>> {
    let layout = view.layout();
    layout
        .entries()
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File { file, .. } => Some((entry.path.as_str(), &layout.files()[*file])),
            _ => None,
        })
        .collect()
}

fn frozen(files: &HashMap<&str, &Arc<FrozenFile>>, path: &str) -> Result<Item> {
    frozen_file(files, path).map(Item::Frozen)
}

fn frozen_file(files: &HashMap<&str, &Arc<FrozenFile>>, path: &str) -> Result<Arc<FrozenFile>> {
    files.get(path).map(|f| Arc::clone(f)).ok_or_else(|| {
        StorageError::internal(format!(
            "{path} is in the shard's manifest but not among its files"
        ))
    })
}

fn version_layout(
    view: &SnapshotView,
    current: &VersionManifest,
    known: &VersionManifest,
    peer_id: u64,
) -> Result<ArchiveLayout> {
    let files = frozen_files(view);
    let mut items = Vec::new();
    for (id, segment) in &current.segments {
        let prefix = format!("segments/{id}/files/");
        let manifest = serde_json::to_vec(segment).map_err(StorageError::from_cause)?;
        items.push((
            format!("{prefix}segment_manifest.json"),
            Item::Bytes(manifest),
        ));
        let mut send = files_to_send(known.segments.get(id), segment);
        // Every segment keeps these whatever changed.
        send.insert("segment.json".into());
        send.insert("version.info".into());
        for file in send {
            let path = format!("{prefix}{file}");
            items.push((path.clone(), frozen(&files, &path)?));
        }
    }
    for (path, file) in &files {
        if path.starts_with("wal/") {
            items.push((path.to_string(), Item::Frozen(Arc::clone(file))));
        }
    }
    items.extend(replica_files(peer_id));
    let mut builder = ArchiveBuilder::new(mtime_secs(view));
    let io = |e: std::io::Error| StorageError::internal_from("laying out the partial snapshot", e);
    add_items(&mut builder, "", items).map_err(io)?;
    add_manifest(&mut builder, view.snapshots()).map_err(io)?;
    builder.finish().map_err(io)
}

/// `None` when the receiver has exactly this content already. A file that
/// differs and is larger than a block goes as its delta against everything the
/// receiver has ([`super::delta`]): the bytes it lacks, and where to copy the rest
/// from in its own files.
fn content_layout(
    view: &SnapshotView,
    current: &ContentManifest,
    known: &ContentManifest,
) -> Result<Option<ArchiveLayout>> {
    let files = frozen_files(view);
    let theirs = known.by_path();
    let index = if known.block_size == Some(BLOCK) {
        BlockIndex::new(
            known
                .files
                .iter()
                .filter_map(|e| Some((e.path.as_str(), e.size, e.block_sigs()?))),
        )
    } else {
        BlockIndex::default()
    };
    let mut items = Vec::new();
    let mut entries = Vec::new();
    for entry in &current.files {
        let mut listed = json!({"path": entry.path, "size": entry.size, "sha256": entry.hash});
        let same = theirs
            .get(entry.path.as_str())
            .is_some_and(|known| known.hash == entry.hash && known.size == entry.size);
        if !same {
            let frozen = frozen_file(&files, &entry.path)?;
            let delta = if entry.size > BLOCK && !index.is_empty() {
                delta(&frozen, &index).map_err(|e| {
                    StorageError::internal_from(
                        format!("comparing {} with the receiver's", entry.path),
                        e,
                    )
                })?
            } else {
                Delta::default()
            };
            if delta.copies.is_empty() {
                items.push((entry.path.clone(), Item::Frozen(frozen)));
            } else {
                let copies: Vec<_> = delta
                    .copies
                    .iter()
                    .map(|c| json!([c.at, index.paths[c.path], c.from, c.len]))
                    .collect();
                listed["copies"] = json!(copies);
                items.push((entry.path.clone(), Item::Ranges(frozen, delta.literal)));
            }
        }
        entries.push(listed);
    }
    let ours = current.by_path();
    let gone = theirs.keys().any(|path| !ours.contains_key(path));
    if items.is_empty() && !gone {
        return Ok(None);
    }
    let manifest =
        json!({"format": "snapfs-manifest", "version": 1, "partial": true, "entries": entries});
    let mut manifest = serde_json::to_vec(&manifest).map_err(StorageError::from_cause)?;
    manifest.push(b'\n');
    let mut builder = ArchiveBuilder::new(mtime_secs(view));
    let io = |e: std::io::Error| StorageError::internal_from("laying out the partial snapshot", e);
    add_items(&mut builder, "", items).map_err(io)?;
    builder.bytes(MANIFEST_NAME, manifest);
    Ok(Some(builder.finish().map_err(io)?))
}

fn mtime_secs(view: &SnapshotView) -> u64 {
    view.mtime()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
