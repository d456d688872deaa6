//! Restoring a collection from a snapshot archive. Everything is checked before live
//! state is touched: the archive is unpacked in one pass (whole-file SHA-256, the
//! embedded manifest's digests, only files and directories at safe paths) into a
//! hidden staging directory beside the collections, its layout is checked (config,
//! shard directories, segments in either of Qdrant's formats) and every shard is
//! opened with the engine there. Only then does the storage swap it in (a journaled
//! pair of renames). On any failure the staging directory is removed and the
//! collection is as it was.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::unpacked::normalize_segments;
use super::verify::{VerifyError, VerifyReport, unpack_verified};
use crate::storage::collection::CONFIG_FILE;
use crate::storage::{Collection, CollectionConfig, Result, Storage, StorageError};

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
    pub sha256: String,
    pub files: usize,
}

/// Restores under way, by collection: what and since when (shown in `info.json`).
fn running() -> &'static Mutex<HashMap<String, (String, std::time::SystemTime)>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, (String, std::time::SystemTime)>>> =
        OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// The restore of `collection` under way, if any: (what, started).
pub fn running_restore(collection: &str) -> Option<(String, std::time::SystemTime)> {
    running().lock().unwrap().get(collection).cloned()
}

/// Marks a restore as running for as long as it lives.
struct Running(String);

impl Running {
    fn start(collection: &str, what: String) -> Self {
        running()
            .lock()
            .unwrap()
            .insert(collection.to_string(), (what, std::time::SystemTime::now()));
        Running(collection.to_string())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running().lock().unwrap().remove(&self.0);
    }
}

/// One restore per collection at a time; different collections in parallel.
fn collection_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Restore collection `name` (creating or replacing it) from the archive at
/// `archive`, checked against `checksum` when given.
pub async fn restore_collection(
    storage: &Arc<Storage>,
    name: &str,
    archive: &Path,
    checksum: Option<String>,
) -> Result<Restored> {
    crate::storage::names::validate_collection_name(name)?;
    run_restore(storage, name, Target::Collection, archive, checksum).await
}

/// Restore shard `id` of the existing collection `name` from a shard snapshot.
pub async fn restore_shard(
    storage: &Arc<Storage>,
    name: &str,
    id: u32,
    archive: &Path,
    checksum: Option<String>,
) -> Result<Restored> {
    let collection = storage.collection(name)?;
    collection.shard(id)?;
    let edge = collection.config().edge_config()?;
    drop(collection);
    run_restore(
        storage,
        name,
        Target::Shard(id, Box::new(edge)),
        archive,
        checksum,
    )
    .await
}

/// What a restore replaces.
enum Target {
    Collection,
    /// A shard, checked against its collection's engine config.
    Shard(u32, Box<qdrant_edge::EdgeConfig>),
}

/// The steps every restore shares: serialize per collection, prepare in staging on
/// a blocking thread, switch, clean up, log and count the outcome.
async fn run_restore(
    storage: &Arc<Storage>,
    name: &str,
    target: Target,
    archive: &Path,
    checksum: Option<String>,
) -> Result<Restored> {
    let shard = match &target {
        Target::Collection => None,
        Target::Shard(id, _) => Some(*id),
    };
    let lock = collection_lock(name);
    let _serialized = lock.lock().await;
    let _running = crate::metrics::RecoveryRunning::start();
    let _shown = Running::start(
        name,
        shard.map_or_else(|| "collection".into(), |id| format!("shard {id}")),
    );
    let staging = storage.staging_dir("restoring");
    let prepared = {
        let (archive, staging, name) = (archive.to_path_buf(), staging.clone(), name.to_string());
        tokio::task::spawn_blocking(move || match target {
            Target::Collection => prepare_collection(&archive, &staging, &name, checksum),
            Target::Shard(_, edge) => prepare_shard(&archive, &staging, *edge, checksum),
        })
        .await
        .map_err(|e| StorageError::internal(e.to_string()))?
    };
    if prepared.is_ok() {
        crate::storage::crash_point("restore-staged");
    }
    let result = match prepared {
        Ok(report) => {
            let switched = match shard {
                None => storage.replace_collection(name, staging.clone()).await,
                Some(id) => storage.replace_shard(name, id, staging.clone()).await,
            };
            switched.map(|()| Restored {
                sha256: report.sha256,
                files: report.files,
            })
        }
        Err(err) => Err(err),
    };
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    match &result {
        Ok(done) => tracing::info!(collection = name, shard, sha256 = %done.sha256, "restored"),
        Err(err) => {
            crate::metrics::restore_failed(failure_reason(err));
            tracing::warn!(collection = name, shard, %err, "restore refused");
        }
    }
    result
}

/// Open `archive`, check there is room for it, and unpack it verified into
/// `staging` (one pass). Blocking.
fn unpack_into(archive: &Path, staging: &Path, checksum: Option<&str>) -> Result<VerifyReport> {
    let file = std::fs::File::open(archive)?;
    let archive_len = file.metadata()?.len();
    std::fs::create_dir_all(staging)?;
    check_free_space(staging, archive_len)?;
    unpack_verified(
        std::io::BufReader::with_capacity(1 << 20, file),
        checksum,
        Some(staging),
    )
    .map_err(refusal)
}

/// Unpack a shard snapshot into `staging` and open it with the collection's config
/// (which refuses other vector names or sizes). Blocking.
fn prepare_shard(
    archive: &Path,
    staging: &Path,
    edge: qdrant_edge::EdgeConfig,
    checksum: Option<String>,
) -> Result<VerifyReport> {
    let report = unpack_into(archive, staging, checksum.as_deref())?;
    if staging.join(CONFIG_FILE).exists() || staging.join("0").is_dir() {
        return Err(StorageError::bad_request(
            "this is a collection snapshot, not a shard snapshot: restore it into the collection (collections/<c>/recover/ or recover/<c>.snapshot)",
        ));
    }
    if !staging.join("segments").is_dir() {
        return Err(StorageError::bad_request(
            "not a shard snapshot: it has no segments/ directory",
        ));
    }
    let _ = std::fs::remove_file(staging.join(super::archive::MANIFEST_NAME));
    normalize_segments(staging).map_err(refusal)?;
    let engine = qdrant_edge::EdgeShard::load(staging, Some(edge)).map_err(|e| {
        StorageError::bad_request(format!(
            "the shard snapshot does not fit this collection: {e}"
        ))
    })?;
    drop(engine);
    sync_filesystem(staging)?;
    Ok(report)
}

/// Restore every collection of a full-storage snapshot (`config.json` with
/// `collections_mapping`, one collection snapshot per collection). Collections that
/// exist are replaced only with `force`; others are left alone. The archive's
/// `<file>.checksum` is checked when present.
pub async fn restore_full(
    storage: &Arc<Storage>,
    archive: &Path,
    temp_path: &Path,
    force: bool,
) -> Result<Vec<String>> {
    let staging = temp_path.join(format!(".full-{}", uuid::Uuid::new_v4()));
    let result = restore_full_in(storage, archive, &staging, force).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn restore_full_in(
    storage: &Arc<Storage>,
    archive: &Path,
    staging: &Path,
    force: bool,
) -> Result<Vec<String>> {
    let mut sidecar = archive.as_os_str().to_owned();
    sidecar.push(super::stored::CHECKSUM_EXT);
    let checksum = std::fs::read_to_string(&sidecar)
        .ok()
        .and_then(|t| sidecar_checksum(&t));
    let mapping = {
        let (archive, staging) = (archive.to_path_buf(), staging.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>> {
            unpack_into(&archive, &staging, checksum.as_deref())?;
            let config: serde_json::Value = std::fs::read(staging.join(CONFIG_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| StorageError::bad_request("not a full-storage snapshot: config.json with collections_mapping is missing"))?;
            let mapping = config["collections_mapping"].as_object().ok_or_else(|| {
                StorageError::bad_request("not a full-storage snapshot: config.json has no collections_mapping")
            })?;
            mapping
                .iter()
                .map(|(name, file)| {
                    let file = file.as_str().unwrap_or_default().to_string();
                    super::verify::check_entry_path(Path::new(&file))
                        .map_err(|why| StorageError::bad_request(format!("collection {name}: {why}")))?;
                    Ok((name.clone(), file))
                })
                .collect()
        })
        .await
        .map_err(|e| StorageError::internal(e.to_string()))??
    };
    if !force
        && let Some((existing, _)) = mapping
            .iter()
            .find(|(name, _)| storage.collection(name).is_ok())
    {
        return Err(StorageError::bad_request(format!(
            "collection {existing} already exists; pass --force to replace the collections in the snapshot"
        )));
    }
    let mut restored = Vec::new();
    for (name, file) in mapping {
        restore_collection(storage, &name, &staging.join(&file), None).await?;
        restored.push(name);
    }
    Ok(restored)
}

/// Unpack and check everything in `staging`. Blocking.
fn prepare_collection(
    archive: &Path,
    staging: &Path,
    name: &str,
    checksum: Option<String>,
) -> Result<VerifyReport> {
    let report = unpack_into(archive, staging, checksum.as_deref())?;

    let mut shard_dirs = BTreeSet::new();
    for entry in std::fs::read_dir(staging)? {
        let entry = entry?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && entry_name.parse::<u32>().is_ok() {
            shard_dirs.insert(entry_name.parse::<u32>().unwrap());
        } else if matches!(entry_name.as_str(), "segments" | "wal") {
            return Err(StorageError::bad_request(
                "this is a shard snapshot, not a collection snapshot: restore it into a shard (collections/<c>/shards/<id>/recover/)",
            ));
        } else if !COLLECTION_FILES.contains(&entry_name.as_str()) {
            return Err(StorageError::bad_request(format!(
                "unexpected entry `{entry_name}` at the top of a collection snapshot"
            )));
        }
    }
    let config_bytes = std::fs::read(staging.join(CONFIG_FILE)).map_err(|_| {
        StorageError::bad_request("not a collection snapshot: config.json is missing")
    })?;
    let config: CollectionConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        StorageError::bad_request(format!(
            "the snapshot's config.json is not a collection config: {e}"
        ))
    })?;
    config.validate()?;
    let expected: BTreeSet<u32> = (0..config.shard_count()).collect();
    if shard_dirs != expected {
        return Err(StorageError::bad_request(format!(
            "the snapshot holds shards {shard_dirs:?} but its config says shard_number {}",
            config.shard_count()
        )));
    }
    for id in &shard_dirs {
        normalize_segments(&staging.join(id.to_string())).map_err(refusal)?;
    }
    for extra in &COLLECTION_FILES[1..] {
        let _ = std::fs::remove_file(staging.join(extra));
    }
    // Every shard must open with the engine before the collection is switched.
    let collection = Collection::open(staging, name).map_err(|e| {
        StorageError::bad_request(format!("the snapshot's shards do not open: {e}"))
    })?;
    collection.shutdown();
    drop(collection);
    // One sync, after the engine wrote its files: what is switched in is durable.
    sync_filesystem(staging)?;
    Ok(report)
}

fn refusal(err: VerifyError) -> StorageError {
    match err {
        VerifyError::Io(e) => StorageError::Io(e),
        other => StorageError::bad_request(other.to_string()),
    }
}

/// The restore needs at most the archive's size again (data is stored sparse, and
/// nested segment archives are unpacked one at a time); refuse up front if the file
/// system holding the collections has less.
fn check_free_space(dir: &Path, needed: u64) -> Result<()> {
    let stats = crate::storage::filesystem_stats(dir)?;
    let free = stats.f_bavail * stats.f_frsize;
    if free < needed {
        return Err(StorageError::bad_request(format!(
            "not enough free space to restore: the archive needs up to {needed} bytes, {free} are free where collections are stored"
        )));
    }
    Ok(())
}

fn sync_filesystem(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A short label for the failures metric.
fn failure_reason(err: &StorageError) -> &'static str {
    let text = err.to_string();
    if text.contains("Checksum mismatch") {
        "checksum"
    } else if text.contains("free space") {
        "space"
    } else if matches!(err, StorageError::BadRequest(_)) {
        "invalid"
    } else {
        "internal"
    }
}

/// Where an uploaded or named archive is kept while it is restored.
pub fn upload_path(temp_path: &Path) -> PathBuf {
    temp_path.join(format!(".upload-{}", uuid::Uuid::new_v4()))
}

/// The checksum in a sidecar: bare hex, or a `sha256sum` line (`<hex>  <name>`).
pub fn sidecar_checksum(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}
