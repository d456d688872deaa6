//! What goes into each kind of archive, in which order (docs/FORMAT.md):
//!
//! - shard: the shard directory in Qdrant's streamable layout
//!   (`segments/<uuid>/files/…`, `wal/…`, `replica_state.json`, `shard_config.json`,
//!   `edge_config.json`), entries sorted by path, then `snapfs-manifest.json`;
//! - collection: one `<id>/` shard directory per shard (by id), then `version.info`,
//!   `config.json`, `shard_key_mapping.json`, `payload_index.json`, and last the manifest.
//!
//! Every header carries the same mtime (the state's last change), uid/gid 0, fixed
//! modes: the same state gives the same bytes.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::Snapshots;
use super::digest::{bytes_sha256, file_sha256, hex};
use super::layout::{ArchiveBuilder, ArchiveLayout, EntryKind, FrozenFile, Generator};

pub const MANIFEST_NAME: &str = "snapfs-manifest.json";
/// The engine's repair journal beside a payload tracker (see [`add_shard`]).
pub use crate::storage::shard::TRACKER_JOURNAL;
/// What Qdrant 1.18.3 writes into a collection snapshot's `version.info` (the version
/// of its collection storage format, not of the server).
pub const COLLECTION_FORMAT_VERSION: &str = "0.4.2";

/// Add one shard directory under `prefix` (`""` for a shard archive, `"<id>/"` inside
/// a collection archive).
pub fn add_shard(
    builder: &mut ArchiveBuilder,
    prefix: &str,
    shard_dir: &Path,
    peer_id: u64,
) -> io::Result<()> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let segments = shard_dir.join("segments");
    for segment in sorted_dir(&segments)? {
        let name = segment.file_name().unwrap().to_string_lossy().into_owned();
        let usable = segment.is_dir()
            && !name.starts_with('.')
            && !name.ends_with(".deleted")
            && segment.join("segment.json").exists();
        if usable {
            collect_files(&segment, &format!("segments/{name}/files"), &mut files)?;
        }
        // A payload tracker's journal only repairs writes a crash tore; the frozen
        // tracker is whole (flushed). Qdrant leaves it out of snapshots too, and the
        // engine removes it when it loads a shard, so leaving it out also gives the
        // same archive before and after a load.
        files.retain(|(path, _)| !path.ends_with(&format!("/{TRACKER_JOURNAL}")));
    }
    collect_files(&shard_dir.join("wal"), "wal", &mut files)?;
    let edge_config = shard_dir.join("edge_config.json");
    if edge_config.exists() {
        files.push(("edge_config.json".to_string(), edge_config));
    }
    let mut items: Vec<(String, Item)> = files
        .into_iter()
        .map(|(path, source)| (path, Item::File(source)))
        .collect();
    items.extend(replica_files(peer_id));
    add_items(builder, prefix, items)
}

/// The files Qdrant writes beside a shard's data in every shard snapshot: this node
/// as the shard's one active replica, and the shard's type.
pub fn replica_files(peer_id: u64) -> [(String, Item); 2] {
    let replica_state = json!({"is_local": true, "this_peer_id": peer_id, "peers": {peer_id.to_string(): "Active"}});
    [
        (
            "replica_state.json".into(),
            Item::Bytes(replica_state.to_string().into_bytes()),
        ),
        (
            "shard_config.json".into(),
            Item::Bytes(br#"{"type":"ReplicaSet"}"#.to_vec()),
        ),
    ]
}

/// What an entry of a shard archive is made of.
pub enum Item {
    /// A file on disk, frozen when added.
    File(PathBuf),
    /// A file another layout already froze.
    Frozen(Arc<FrozenFile>),
    /// Only these `(offset, length)` ranges of a frozen file, the rest left as holes
    /// (a partial snapshot's changed blocks).
    Ranges(Arc<FrozenFile>, Vec<(u64, u64)>),
    Bytes(Vec<u8>),
}

/// Add `items` under `prefix` sorted by path, each directory on the way as an entry
/// before its contents: the same items always give the same bytes.
pub fn add_items(
    builder: &mut ArchiveBuilder,
    prefix: &str,
    mut items: Vec<(String, Item)>,
) -> io::Result<()> {
    let mut dirs = BTreeSet::new();
    for (path, _) in &items {
        let mut at = path.as_str();
        while let Some(slash) = at.rfind('/') {
            at = &at[..slash];
            dirs.insert(format!("{at}/"));
        }
    }
    let mut all: Vec<(String, Option<Item>)> = dirs.into_iter().map(|d| (d, None)).collect();
    all.extend(items.drain(..).map(|(p, i)| (p, Some(i))));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    if !prefix.is_empty() {
        builder.dir(prefix);
    }
    for (path, item) in all {
        let full = format!("{prefix}{path}");
        match item {
            None => builder.dir(&full),
            Some(Item::File(source)) => builder.file(&full, &source)?,
            Some(Item::Frozen(frozen)) => builder.frozen_file(&full, frozen),
            Some(Item::Ranges(frozen, ranges)) => builder.frozen_ranges(&full, frozen, ranges),
            Some(Item::Bytes(bytes)) => builder.bytes(&full, bytes),
        }
    }
    Ok(())
}

/// The collection-level files that follow the shard directories. `payload_index` is
/// Qdrant's `payload_index.json`, `{"schema": {field: type or params}}`.
pub fn add_collection_files(
    builder: &mut ArchiveBuilder,
    config_json: Vec<u8>,
    payload_index: Vec<u8>,
) {
    builder.bytes(
        "version.info",
        COLLECTION_FORMAT_VERSION.as_bytes().to_vec(),
    );
    builder.bytes("config.json", config_json);
    builder.bytes("shard_key_mapping.json", b"[]".to_vec());
    builder.bytes("payload_index.json", payload_index);
}

#[derive(Serialize)]
struct ManifestEntry<'a> {
    path: &'a str,
    size: u64,
    sha256: String,
}

/// Placeholder while the length is computed: digests are always 64 hex characters.
const PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn manifest_bytes(
    layout_entries: &[super::layout::EntryInfo],
    mut digest: impl FnMut(usize) -> io::Result<String>,
) -> io::Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (index, entry) in layout_entries.iter().enumerate() {
        if matches!(entry.kind, EntryKind::Dir | EntryKind::Deferred) {
            continue;
        }
        entries.push(ManifestEntry {
            path: &entry.path,
            size: entry.size,
            sha256: digest(index)?,
        });
    }
    let manifest = json!({"format": "snapfs-manifest", "version": 1, "entries": entries});
    let mut bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Append `snapfs-manifest.json`: every file entry's path, logical size and SHA-256.
/// Its length is fixed now; its digests are computed when it is first read (from
/// the digest cache for files seen before).
pub fn add_manifest(builder: &mut ArchiveBuilder, snapshots: &Arc<Snapshots>) -> io::Result<()> {
    let len = manifest_bytes(builder.entries(), |_| Ok(PLACEHOLDER.to_string()))?.len() as u64;
    let snapshots = snapshots.clone();
    let generate: Generator = Arc::new(move |layout: &ArchiveLayout| {
        let entries = layout.entries();
        // The manifest describes the entries before it.
        let described = &entries[..entries.len().saturating_sub(1)];
        manifest_bytes(described, |index| {
            let digest = match &described[index].kind {
                EntryKind::Inline(data) => bytes_sha256(data),
                EntryKind::File { file, extents } => {
                    let frozen = &layout.files()[*file];
                    frozen
                        .with_file(|f| file_sha256(&snapshots.digests, f, frozen.size, extents))?
                }
                EntryKind::Nested(index) => snapshots
                    .checksums
                    .archive_sha256(&layout.nested()[*index])?,
                EntryKind::Ranged { .. } => {
                    return Err(io::Error::other(
                        "a manifest is made of frozen entries, not of read-back ones",
                    ));
                }
                EntryKind::Dir | EntryKind::Deferred => unreachable!("skipped above"),
            };
            Ok(hex(&digest))
        })
    });
    builder.deferred(MANIFEST_NAME, len, generate);
    Ok(())
}

fn sorted_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    entries.sort();
    Ok(entries)
}

/// Regular files under `dir`, as `(archive path under prefix, source path)`.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for path in sorted_dir(dir)? {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        let archive_path = format!("{prefix}/{name}");
        if meta.is_dir() {
            collect_files(&path, &archive_path, out)?;
        } else if meta.is_file() {
            out.push((archive_path, path));
        }
    }
    Ok(())
}

/// Qdrant's `payload_index.json` for the indexed fields of a collection (fields in
/// name order, so the same state gives the same bytes).
pub fn payload_index_json(
    schema: &std::collections::BTreeMap<String, qdrant_edge::PayloadIndexInfo>,
) -> Vec<u8> {
    let fields: serde_json::Map<String, serde_json::Value> = schema
        .iter()
        .map(|(field, info)| {
            let schema = match &info.params {
                Some(params) => serde_json::to_value(params),
                None => serde_json::to_value(info.data_type),
            }
            .expect("plain data");
            (field.clone(), schema)
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "schema": fields })).expect("plain data")
}
