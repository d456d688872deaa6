//! Applying a partial archive to a shard, atomically, while reads keep answering.
//!
//! The received archive is unpacked in staging like any restore (checksum, safe
//! paths, embedded digests). Then, with the shard frozen (its files hold still;
//! updates are acknowledged into its pending log), a new shard directory is staged
//! beside the live one: every file the new state keeps from the frozen one is a
//! private copy of it (a reflink where the file system has them, else its data
//! extents copied in the kernel), the archive's files are moved in, and what the new
//! state no longer has is left out. Nothing is shared with the old shard: the
//! engine writes in place (its load rewrites status files, the pending updates
//! replayed on the new shard mark deletions), and a shared inode would carry those
//! writes into the old shard that a failure or a crash puts back, and into the
//! snapshots still reading it. The staged files are made durable (`syncfs`), then
//! the storage layer switches them in ([`crate::storage::Storage::replace_shard`]):
//! updates wait, the old shard closes, the engine opens the staged directory, a
//! journaled rename makes it the shard, and updates acknowledged meanwhile are
//! applied on it. Reads wait only for that last step; a crash anywhere leaves the
//! old shard or the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::manifest::{SegmentVersions, VersionManifest};
use super::{SEGMENT_MANIFEST, engine_manifest, shard_path};
use crate::snapshot::SnapshotError;
use crate::snapshot::Snapshots;
use crate::snapshot::digest::{file_sha256, hex};
use crate::snapshot::intake::Received;
use crate::snapshot::layout::FrozenFile;
use crate::snapshot::progress::Running;
use crate::snapshot::segment_layout::normalize_segments;
use crate::snapshot::unpack::{CopyFrom, TargetFile};
use crate::storage::shard::{TRACKER, TRACKER_JOURNAL};
use crate::storage::switch::{AfterOpen, ShardReplacement};
use crate::storage::{CollectionConfig, CollectionFreeze, Result, StorageError};

mod merge;

use merge::{files_under, max_segment_version, merge_content, merge_versions};

/// Files a partial archive may carry at the top besides `segments/` and `wal/`.
const SHARD_FILES: [&str; 7] = [
    "replica_state.json",
    "shard_config.json",
    "edge_config.json",
    "newest_clocks.json",
    "oldest_clocks.json",
    "applied_seq.json",
    crate::snapshot::archive::MANIFEST_NAME,
];
/// Kept from the archive when present (Qdrant's shard clocks), as Qdrant merges them.
const CLOCK_FILES: [&str; 3] = [
    "newest_clocks.json",
    "oldest_clocks.json",
    "applied_seq.json",
];

/// What kind of partial archive was received.
pub enum Partial {
    /// Qdrant's form: every segment's `segment_manifest.json`.
    Versions(VersionManifest),
    /// snapfs's content form: every file of the new state.
    Content(Vec<TargetFile>),
}

impl Partial {
    pub fn form(&self) -> &'static str {
        match self {
            Partial::Versions(_) => "versions",
            Partial::Content(_) => "content",
        }
    }
}

/// Tell a received shard archive apart: a partial one (of which form) or a full
/// one (`None`). Turns streamable segments into engine segments on the way.
/// Blocking.
pub fn detect(received: &Received) -> Result<Option<Partial>> {
    let staging = received.staging();
    if let Some(target) = &received.report.partial_target {
        normalize_segments(staging).map_err(layout_refusal)?;
        return Ok(Some(Partial::Content(target.clone())));
    }
    normalize_segments(staging).map_err(layout_refusal)?;
    let segments = staging.join("segments");
    let mut manifests = VersionManifest::default();
    let mut without = Vec::new();
    let Ok(entries) = fs_err::read_dir(&segments) else {
        return Ok(None);
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join(SEGMENT_MANIFEST);
        if !path.exists() {
            without.push(id);
            continue;
        }
        let bytes =
            crate::storage::read_bounded(&path, crate::storage::MAX_JSON_FILE).map_err(|e| {
                SnapshotError::invalid(format!("invalid partial snapshot: segment {id}: {e}"))
            })?;
        let segment: SegmentVersions = serde_json::from_slice(&bytes).map_err(|e| {
            SnapshotError::invalid(format!(
                "invalid partial snapshot: the manifest of segment {id} is unreadable: {e}"
            ))
        })?;
        manifests.segments.insert(id, segment);
    }
    if manifests.segments.is_empty() {
        return Ok(None);
    }
    if let Some(id) = without.first() {
        return Err(SnapshotError::invalid(format!(
            "invalid partial snapshot: segment {id} has no segment manifest (is this a mix of a full and a partial snapshot?)"
        )).into());
    }
    manifests
        .validate()
        .map_err(|why| SnapshotError::invalid(format!("invalid partial snapshot: {why}")))?;
    Ok(Some(Partial::Versions(manifests)))
}

/// A partial apply (or pull) of a shard under way (taken with
/// [`Storage::try_claim_shard`]).
pub use crate::storage::turns::ShardClaim;

/// What an apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub form: &'static str,
    /// Bytes of the partial archive.
    pub archive_bytes: u64,
    /// Files taken from the archive; files kept (copies of the old state's).
    pub files_received: usize,
    pub files_kept: usize,
}

/// Apply the partial archive `received` to shard `id` of `collection`. `frozen`:
/// the shard's freeze taken by the caller at the start (a pull freezes before it
/// asks the peer, so the manifest it sent stays true); otherwise one is taken here.
/// Serialized with restores of the collection.
pub async fn apply(
    snapshots: &Arc<Snapshots>,
    collection: &str,
    id: u32,
    received: Received,
    checksum: Option<String>,
    frozen: Option<CollectionFreeze>,
) -> Result<Applied> {
    let storage = snapshots.storage();
    let target = storage.collection(collection)?;
    target.shard(id)?;
    let config = target.config().clone();
    drop(target);
    let _turn = storage.restore_turn(collection).await;
    let _metric = crate::metrics::RecoveryRunning::start(collection);
    let archive_bytes = received.report.archive_bytes;
    let _shown = Running::start(
        snapshots,
        collection,
        format!("shard {id} (partial)"),
        "switching",
        Arc::new(AtomicU64::new(archive_bytes)),
    );
    let started = std::time::Instant::now();
    let result = async {
        let staged = {
            let snapshots = snapshots.clone();
            let name = collection.to_string();
            tokio::task::spawn_blocking(move || -> Result<(Staged, CollectionFreeze, &'static str, AfterOpen)> {
                let storage = snapshots.storage();
                if let Some(expected) = checksum {
                    received.check_checksum(&expected)?;
                }
                let partial = detect(&received)?.ok_or_else(|| {
                    SnapshotError::invalid(
                        "this is a full shard snapshot, not a partial one: restore it with …/shards/{id}/snapshots/upload (or its recover/ directory)",
                    )
                })?;
                let frozen = match frozen {
                    Some(frozen) => frozen,
                    None => storage.collection(&name)?.join_freeze(&[id])?,
                };
                if !frozen.is_current() {
                    return Err(SnapshotError::invalid(format!(
                        "shard {id} of `{name}` was replaced while the partial snapshot arrived: take the manifest again"
                    )).into());
                }
                let staged = stage(&snapshots, &frozen, &received, &partial, &config)?;
                let opened = super::loaded::after_open(&snapshots, &staged.dir, &partial);
                Ok((staged, frozen, partial.form(), opened))
            })
            .await
            .map_err(StorageError::from_cause)??
        };
        let (staged, frozen, form, opened) = staged;
        let (files_received, files_kept) = (staged.received, staged.kept);
        crate::storage::crash_point("partial-staged");
        let new = ShardReplacement {
            staged: staged.dir.clone(),
            state_time: None,
            keep_pending: true,
            opened: Some(opened),
        };
        let switched = storage.replace_shard(collection, id, new).await;
        // The staged directory is the shard now, or is removed here.
        drop(staged);
        drop(frozen);
        switched?;
        Ok(Applied {
            form,
            archive_bytes,
            files_received,
            files_kept,
        })
    }
    .await;
    match &result {
        Ok(applied) => {
            crate::metrics::partial_bytes(crate::metrics::Direction::Received, archive_bytes);
            tracing::info!(
                collection,
                shard = id,
                form = applied.form,
                archive_bytes,
                files_received = applied.files_received,
                files_kept = applied.files_kept,
                ms = started.elapsed().as_millis() as u64,
                "partial snapshot applied"
            );
        }
        Err(err) => {
            crate::snapshot::progress::count_refusal(err);
            tracing::warn!(collection, shard = id, %err, "partial snapshot refused");
        }
    }
    result
}

/// A new shard directory being assembled; removed on drop unless the switch took it.
struct Staged {
    /// Whose digest cache checks the files.
    snapshots: Arc<Snapshots>,
    dir: PathBuf,
    received: usize,
    kept: usize,
    /// Bytes copied to keep files of the live shard (0 where reflinked).
    copied: u64,
    /// Disk bytes this staging may still take: the free space when it began, less
    /// what it has written (kept copies, assembled files).
    room: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = fs_err::remove_dir_all(&self.dir);
        }
    }
}

impl Staged {
    /// Keep the live file `from` as `relative` in the staged directory: a private
    /// copy, never a link (see the module's note).
    fn keep(&mut self, from: &Path, relative: &str) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let to = self.dir.join(relative);
        make_parent(&to)?;
        // What the copy takes at most: what the original takes (a reflink, less).
        self.charge(fs_err::metadata(from)?.blocks() * 512)?;
        self.copied += crate::storage::extents::copy_sparse(from, &to)?;
        self.kept += 1;
        Ok(())
    }

    /// Take `bytes` of the room, or refuse (507) before they are written.
    fn charge(&mut self, bytes: u64) -> Result<()> {
        let Some(left) = self.room.checked_sub(bytes) else {
            return Err(SnapshotError::NoSpace {
                needed: bytes,
                free: self.room,
            }
            .into());
        };
        self.room = left;
        Ok(())
    }

    /// Move a received file in (replacing a kept one, if one was there).
    fn take(&mut self, from: &Path, relative: &str) -> Result<()> {
        let to = self.dir.join(relative);
        make_parent(&to)?;
        if std::fs::symlink_metadata(&to).is_ok() {
            // The archive's version replaces a file we had.
            self.kept -= 1;
        }
        fs_err::rename(from, &to)?;
        self.received += 1;
        Ok(())
    }
}

impl Staged {
    /// A new file from the archive's bytes for it (its entry at `arrived` holds
    /// them; the rest are holes there) and `copies` of our own files' bytes,
    /// checked whole against the target digest.
    fn assemble(
        &mut self,
        live: &LiveFiles,
        arrived: &Path,
        relative: &str,
        target: &TargetFile,
        copies: &[CopyFrom],
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let refused = |why: String| -> StorageError {
            SnapshotError::invalid(format!("the partial snapshot's {} {why}", target.path)).into()
        };
        let sent =
            FrozenFile::open(arrived).map_err(|_| refused("is missing from the archive".into()))?;
        if sent.size != target.size {
            return Err(refused("has another size than the manifest says".into()));
        }
        let to = self.dir.join(relative);
        make_parent(&to)?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)?;
        out.set_len(target.size)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        // Only the source's data extents inside `[from_at, from_at + len)` are
        // copied: its holes stay holes here, and what is written is charged first.
        let mut copy = |staged: &mut Staged,
                        from: &FrozenFile,
                        from_at: u64,
                        to_at: u64,
                        len: u64|
         -> Result<()> {
            let end = from_at + len;
            for &(extent, extent_len) in &from.extents {
                let start = extent.max(from_at);
                let stop = (extent + extent_len).min(end);
                if start >= stop {
                    continue;
                }
                staged.charge(stop - start)?;
                let mut at = start;
                while at < stop {
                    let n = ((stop - at) as usize).min(buf.len());
                    from.read_exact_at(&mut buf[..n], at)?;
                    out.write_all_at(&buf[..n], to_at + (at - from_at))?;
                    at += n as u64;
                }
            }
            Ok(())
        };
        // The sent bytes first (a file system rounds data extents to its blocks,
        // with zeros around them), then the copies, which never overlap sent bytes.
        copy(self, &sent, 0, 0, sent.size)?;
        let mut sources: BTreeMap<&str, FrozenFile> = BTreeMap::new();
        for CopyFrom(at, path, from, len) in copies {
            let in_range = at.checked_add(*len).is_some_and(|end| end <= target.size);
            if !in_range {
                return Err(refused(format!("copies past its end ({at} + {len})")));
            }
            if !sources.contains_key(path.as_str()) {
                let ours = live.open(path).ok_or_else(|| {
                    refused(format!(
                        "copies from {path}, which this shard does not have"
                    ))
                })?;
                sources.insert(path, ours);
            }
            let source = &sources[path.as_str()];
            if from.checked_add(*len).is_none_or(|end| end > source.size) {
                return Err(refused(format!("copies past the end of {path}")));
            }
            copy(self, source, *from, *at, *len)?;
        }
        drop(out);
        if digest_of(&self.snapshots, &to).as_deref() != Some(target.sha256.as_str()) {
            return Err(refused(
                "does not assemble into the file the manifest describes (checksum mismatch): was it made for another state of this shard?".into(),
            ));
        }
        self.received += 1;
        Ok(())
    }
}

/// The live shard's own files, the only ones a partial archive may copy from: a
/// copy's source is looked up among them by name, never joined to a path as sent,
/// and opened beneath the shard's directory without following links.
struct LiveFiles {
    dir: PathBuf,
    /// Paths relative to the shard directory (`segments/<id>/<file>`, `wal/…`).
    names: BTreeSet<String>,
}

impl LiveFiles {
    fn list(dir: &Path) -> LiveFiles {
        LiveFiles {
            dir: dir.to_path_buf(),
            names: files_under(dir).into_iter().map(|(_, name)| name).collect(),
        }
    }

    /// Where the file an archive path names lies, if this shard has it as a
    /// regular file (found by name among its own, never joined as sent).
    fn path_of(&self, archive_path: &str) -> Option<PathBuf> {
        let name = shard_path(archive_path);
        self.names.contains(&name).then(|| self.dir.join(name))
    }

    /// The file an archive path names, if this shard has it as a regular file.
    fn open(&self, archive_path: &str) -> Option<FrozenFile> {
        let name = shard_path(archive_path);
        if !self.names.contains(&name) {
            return None;
        }
        let opened =
            crate::storage::open_regular_beneath(&self.dir, &name).and_then(FrozenFile::from_file);
        match opened {
            Ok(file) => Some(file),
            Err(err) => {
                tracing::warn!(file = name, %err, "a file of the shard's own could not be opened to copy from");
                None
            }
        }
    }
}

/// Copy buffer for assembling files.
const COPY_BUFFER: usize = 1 << 20;

fn make_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    Ok(())
}

/// The SHA-256 of a file (from the digest cache when it is unchanged).
pub(super) fn digest_of(snapshots: &Snapshots, path: &Path) -> Option<String> {
    let frozen = FrozenFile::open(path).ok()?;
    frozen
        .with_file(|f| file_sha256(&snapshots.digests, f, frozen.size, &frozen.extents))
        .map(|d| hex(&d))
        .ok()
}

/// Assemble the new shard in a staging directory. Blocking.
fn stage(
    snapshots: &Arc<Snapshots>,
    frozen: &CollectionFreeze,
    received: &Received,
    partial: &Partial,
    config: &CollectionConfig,
) -> Result<Staged> {
    let live = frozen.shards()[0].clone();
    let live_dir = live.path().to_path_buf();
    let incoming = received.staging();
    check_top_level(incoming)?;
    let mut staged = Staged {
        snapshots: snapshots.clone(),
        dir: snapshots.storage().restore_staging_dir(),
        received: 0,
        kept: 0,
        copied: 0,
        room: 0,
    };
    fs_err::create_dir(&staged.dir)?;
    staged.room = crate::snapshot::intake::free_space(&staged.dir)?;
    match partial {
        Partial::Versions(theirs) => {
            let ours = engine_manifest(&live)?;
            merge_versions(&mut staged, &live_dir, &ours, incoming, theirs)?
        }
        Partial::Content(target) => {
            merge_content(&mut staged, &live_dir, incoming, target)?;
            // The content form carries no WAL: one that numbers the next operation
            // above every operation in the new segments.
            let next = max_segment_version(&staged.dir)? + 1;
            let capacity = config.wal_config.wal_capacity_mb as u64 * 1024 * 1024;
            crate::storage::wal::write_empty(&staged.dir.join("wal"), next, capacity)?;
        }
    }
    check_vectors(&staged.dir, config)?;
    // Durable before the switch deletes the old shard: a power loss after it must
    // find every byte of the new one.
    crate::storage::sync_filesystem(&staged.dir)?;
    tracing::debug!(
        kept = staged.kept,
        copied_bytes = staged.copied,
        "partial apply staged"
    );
    Ok(staged)
}

/// Only a shard's own pieces at the top of a partial archive.
fn check_top_level(incoming: &Path) -> Result<()> {
    for entry in fs_err::read_dir(incoming)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let known = name == "segments" || name == "wal" || SHARD_FILES.contains(&name.as_str());
        if !known {
            return Err(SnapshotError::invalid(format!(
                "unexpected entry `{name}` at the top of a partial shard snapshot"
            ))
            .into());
        }
    }
    Ok(())
}

/// The new state's segments hold the collection's vectors (names, sizes,
/// distances): another collection's shard is refused before anything switches.
fn check_vectors(shard_dir: &Path, config: &CollectionConfig) -> Result<()> {
    let want: BTreeMap<String, (u64, String)> = config
        .params
        .vectors
        .by_name()
        .into_iter()
        .map(|(name, p)| (name.to_string(), (p.size, format!("{:?}", p.distance))))
        .collect();
    let Ok(entries) = fs_err::read_dir(shard_dir.join("segments")) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path().join("segment.json");
        let bytes = match crate::storage::read_bounded(&path, crate::storage::MAX_JSON_FILE) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(
                    SnapshotError::invalid(format!("the partial snapshot's segment: {e}")).into(),
                );
            }
        };
        let segment: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            SnapshotError::invalid(format!(
                "{}: unreadable segment.json: {e}",
                entry.path().display()
            ))
        })?;
        let Some(vectors) = segment["config"]["vector_data"].as_object() else {
            continue;
        };
        let have: BTreeMap<String, (u64, String)> = vectors
            .iter()
            .map(|(name, v)| {
                (
                    name.clone(),
                    (
                        v["size"].as_u64().unwrap_or(0),
                        v["distance"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect();
        if have != want {
            return Err(SnapshotError::invalid(format!(
                "the partial snapshot's shard has other vectors than this collection: it has {}, the collection {}",
                describe(&have),
                describe(&want)
            )).into());
        }
    }
    Ok(())
}

fn describe(vectors: &BTreeMap<String, (u64, String)>) -> String {
    vectors
        .iter()
        .map(|(name, (size, distance))| {
            let name = if name.is_empty() { "(unnamed)" } else { name };
            format!("{name}: {size} {distance}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn layout_refusal(err: std::io::Error) -> SnapshotError {
    SnapshotError::BadLayout(err.to_string())
}
