//! Restoring a collection or a shard from a snapshot archive. The archive is
//! unpacked while it arrives ([`super::intake`]: whole-file SHA-256, the embedded
//! manifest's digests, only files and directories at safe paths) into a hidden
//! staging directory beside the collections. Then, one restore per collection at a
//! time, everything is checked before live state is touched: the checksum and the
//! layout (config, shard directories, segments in either of Qdrant's formats).
//! Then the storage swaps it in (a journaled pair of renames) and the engine opens
//! it there, once: the open is the last check, and the switch commits only when it
//! succeeded (until then a failure, or a crash, puts the old state back). Nothing
//! moves after the open, so the engine is never opened twice. On any failure the
//! staging directory is removed and the collection is as it was.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use super::SnapshotError;
use super::Snapshots;
use super::intake::{ArchiveHash, Received};
use super::progress::{Running, count_refusal};
use super::segment_layout::normalize_segments;
use crate::storage::cache_pin::CachePin;
use crate::storage::collection::CONFIG_FILE;
use crate::storage::switch::ShardReplacement;
use crate::storage::sync_filesystem;
use crate::storage::{CollectionConfig, Result, StorageError};

pub mod full;

/// Files a collection snapshot carries beside its shard directories.
const COLLECTION_FILES: [&str; 5] = [
    CONFIG_FILE,
    "version.info",
    "shard_key_mapping.json",
    "payload_index.json",
    super::archive::MANIFEST_NAME,
];

/// What a finished restore reports.
#[derive(Debug)]
pub struct Restored {
    /// The archive's SHA-256; `None` when it was not computed (no checksum given).
    pub sha256: Option<String>,
    pub files: usize,
}

pub use super::intake::begin;

/// How a restore into `scope` is shown: (collection, `collection` | `shard <id>`).
/// A full-storage scope names no collection.
pub fn shown_as(scope: &super::Scope) -> Option<(String, String)> {
    match scope {
        super::Scope::Collection(c) => Some((c.clone(), "collection".into())),
        super::Scope::Shard(c, id) => Some((c.clone(), format!("shard {id}"))),
        super::Scope::Full => None,
    }
}

/// Receive the archive in the file at `path` (read once, unpacked on the way),
/// checked against `checksum` when given.
pub async fn receive_file(
    snapshots: &Arc<Snapshots>,
    path: &Path,
    shown_as: Option<(String, String)>,
    checksum: Option<String>,
) -> Result<Received> {
    let file = fs_err::File::open(path)?.into_parts().0;
    receive_opened(snapshots, file, shown_as, checksum).await
}

/// [`receive_file`] for a file already opened (checked where it lies).
pub async fn receive_opened(
    snapshots: &Arc<Snapshots>,
    mut file: std::fs::File,
    shown_as: Option<(String, String)>,
    checksum: Option<String>,
) -> Result<Received> {
    let snapshots = snapshots.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut intake = begin(&snapshots, shown_as, ArchiveHash::known_now(checksum))?;
        intake.expect_size(file.metadata()?.len())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            intake.push_blocking(&buf[..n])?;
        }
        intake.finish()
    })
    .await
    .map_err(StorageError::from_cause)?
}

/// Restore collection `name` (creating or replacing it) from a received archive,
/// checked against `checksum` when given.
pub async fn restore_collection(
    snapshots: &Arc<Snapshots>,
    name: &str,
    received: Received,
    checksum: Option<String>,
) -> Result<Restored> {
    crate::storage::names::validate_collection_name(name)?;
    run_restore(snapshots, name, Target::Collection, received, checksum).await
}

/// Restore shard `id` of the existing collection `name` from a received shard
/// snapshot.
pub async fn restore_shard(
    snapshots: &Arc<Snapshots>,
    name: &str,
    id: u32,
    received: Received,
    checksum: Option<String>,
) -> Result<Restored> {
    snapshots.storage().collection(name)?.shard(id)?;
    run_restore(snapshots, name, Target::Shard(id), received, checksum).await
}

/// What a restore replaces.
enum Target {
    Collection,
    /// A shard (the switch opens it with its collection's engine config).
    Shard(u32),
}

/// The steps every restore shares: serialize per collection, check in staging on a
/// blocking thread, switch, log and count the outcome.
async fn run_restore(
    snapshots: &Arc<Snapshots>,
    name: &str,
    target: Target,
    received: Received,
    checksum: Option<String>,
) -> Result<Restored> {
    let storage = snapshots.storage();
    let shard = match &target {
        Target::Collection => None,
        Target::Shard(id) => Some(*id),
    };
    let _turn = storage.restore_turn(name).await;
    let _metric = crate::metrics::RecoveryRunning::start(name);
    let _shown = Running::start(
        snapshots,
        name,
        shard.map_or_else(|| "collection".into(), |id| format!("shard {id}")),
        "switching",
        Arc::new(AtomicU64::new(received.report.archive_bytes)),
    );
    let started = Instant::now();
    let sha256 = received.report.sha256.clone();
    let files = received.report.files;
    let received_ms = received.took.as_millis() as u64;
    let result = async {
        let name_owned = name.to_string();
        let received = tokio::task::spawn_blocking(move || {
            if let Some(expected) = checksum {
                received.check_checksum(&expected)?;
            }
            refuse_partial(&received)?;
            let state_time = received.report.newest_mtime;
            let pin = match target {
                Target::Collection => {
                    prepare_collection(received.staging(), &name_owned, state_time)?
                }
                Target::Shard(_) => prepare_shard(received.staging())?,
            };
            Ok::<_, StorageError>((received, pin))
        })
        .await
        .map_err(StorageError::from_cause)??;
        let (received, pin) = received;
        crate::storage::crash_point("restore-staged");
        let checked_ms = started.elapsed().as_millis() as u64;
        let staging = received.staging().to_path_buf();
        let state_time = received.report.newest_mtime;
        let switched = match shard {
            None => storage.replace_collection(name, staging).await,
            Some(id) => {
                // Every file of the new shard is new: open views keep their own.
                let new = ShardReplacement {
                    staged: staging,
                    state_time: Some(state_time),
                    keep_pending: false,
                    opened: None,
                };
                storage.replace_shard(name, id, new).await
            }
        };
        // Whatever the switch did not take is removed with `received`.
        drop(received);
        drop(pin);
        switched.map(|()| checked_ms)
    }
    .await;
    match &result {
        Ok(checked_ms) => {
            let total = started.elapsed().as_millis() as u64;
            tracing::info!(
                collection = name,
                shard,
                sha256 = sha256
                    .as_deref()
                    .unwrap_or("not computed (no checksum given)"),
                received_ms,
                checked_ms,
                switched_ms = total.saturating_sub(*checked_ms),
                "restored"
            )
        }
        Err(err) => {
            count_refusal(err);
            tracing::warn!(collection = name, shard, %err, "restore refused");
        }
    }
    result.map(|_| Restored { sha256, files })
}

/// A full restore takes full snapshots only.
fn refuse_partial(received: &Received) -> Result<()> {
    let staging = received.staging();
    let mut dirs = vec![staging.to_path_buf()];
    if let Ok(entries) = fs_err::read_dir(staging) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    if received.report.partial_target.is_some()
        || dirs.iter().any(|dir| super::partial::is_partial_tree(dir))
    {
        return Err(SnapshotError::invalid(
            "this is a partial snapshot: restore it into its shard (POST /collections/{c}/shards/{id}/snapshots/upload or …/snapshot/partial/recover, or write it into collections/<c>/shards/<id>/recover/)",
        ).into());
    }
    Ok(())
}

/// Check a staged shard snapshot's layout. The switch opens it with the collection's
/// config (which refuses other vector names or sizes). Blocking.
fn prepare_shard(staging: &Path) -> Result<CachePin> {
    if staging.join(CONFIG_FILE).exists() || staging.join("0").is_dir() {
        return Err(SnapshotError::invalid(
            "this is a collection snapshot, not a shard snapshot: restore it into the collection (collections/<c>/recover/ or recover/<c>.snapshot)",
        ).into());
    }
    if !staging.join("segments").is_dir() {
        return Err(
            SnapshotError::invalid("not a shard snapshot: it has no segments/ directory").into(),
        );
    }
    let _ = fs_err::remove_file(staging.join(super::archive::MANIFEST_NAME));
    normalize_segments(staging).map_err(layout_refusal)?;
    // The engine opens it once, where it will live (the switch's check): what is
    // switched in is durable first.
    let pin = CachePin::pin(staging);
    sync_filesystem(staging)?;
    Ok(pin)
}

/// Check a staged collection snapshot and open every shard with the engine.
/// Blocking.
fn prepare_collection(staging: &Path, name: &str, state_time: u64) -> Result<CachePin> {
    let mut shard_dirs = BTreeSet::new();
    for entry in fs_err::read_dir(staging)? {
        let entry = entry?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && entry_name.parse::<u32>().is_ok() {
            shard_dirs.insert(entry_name.parse::<u32>().unwrap());
        } else if matches!(entry_name.as_str(), "segments" | "wal") {
            return Err(SnapshotError::invalid(
                "this is a shard snapshot, not a collection snapshot: restore it into a shard (collections/<c>/shards/<id>/recover/)",
            ).into());
        } else if !COLLECTION_FILES.contains(&entry_name.as_str()) {
            return Err(SnapshotError::invalid(format!(
                "unexpected entry `{entry_name}` at the top of a collection snapshot"
            ))
            .into());
        }
    }
    let config_bytes =
        crate::storage::read_bounded(&staging.join(CONFIG_FILE), crate::storage::MAX_JSON_FILE)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    SnapshotError::invalid("not a collection snapshot: config.json is missing")
                }
                _ => {
                    SnapshotError::invalid(format!("the snapshot's config.json is refused: {}", e))
                }
            })?;
    let config: CollectionConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        SnapshotError::invalid(format!(
            "the snapshot's config.json is not a collection config: {e}"
        ))
    })?;
    config.validate()?;
    let expected: BTreeSet<u32> = (0..config.shard_count()).collect();
    if shard_dirs != expected {
        return Err(SnapshotError::invalid(format!(
            "the snapshot holds shards {shard_dirs:?} but its config says shard_number {}",
            config.shard_count()
        ))
        .into());
    }
    for id in &shard_dirs {
        normalize_segments(&staging.join(id.to_string())).map_err(layout_refusal)?;
    }
    for extra in &COLLECTION_FILES[1..] {
        let _ = fs_err::remove_file(staging.join(extra));
    }
    for id in &shard_dirs {
        crate::storage::shard::write_restored_clock(
            &staging.join(format!("{id}.clock")),
            state_time,
        )?;
    }
    // Every shard opens with the engine once, where it will live, and the switch
    // commits only then (`Storage::replace_collection`). What is switched in is
    // durable first.
    let pin = CachePin::pin(staging);
    let started = Instant::now();
    sync_filesystem(staging)?;
    tracing::debug!(
        collection = name,
        sync_ms = started.elapsed().as_millis() as u64,
        "staged collection checked"
    );
    Ok(pin)
}

fn layout_refusal(err: std::io::Error) -> SnapshotError {
    SnapshotError::BadLayout(err.to_string())
}
