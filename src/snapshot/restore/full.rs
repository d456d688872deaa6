//! Restoring a full-storage snapshot (`config.json` with `collections_mapping`
//! and one collection snapshot per collection): a start-up operation (`snapfs
//! serve --restore-full`), built on the collection restore.

use std::path::Path;
use std::sync::Arc;

use super::{receive_file, restore_collection};
use crate::snapshot::SnapshotError;
use crate::snapshot::Snapshots;
use crate::storage::collection::CONFIG_FILE;
use crate::storage::{Result, StorageError};

/// Restore every collection of a full-storage snapshot (`config.json` with
/// `collections_mapping`, one collection snapshot per collection). Collections that
/// exist are replaced only with `force`; others are left alone. The archive's
/// `<file>.checksum` is checked when present.
pub async fn restore_full(
    snapshots: &Arc<Snapshots>,
    archive: &Path,
    temp_path: &Path,
    force: bool,
) -> Result<Vec<String>> {
    let staging = temp_path.join(format!(".full-{}", uuid::Uuid::new_v4()));
    let result = restore_full_in(snapshots, archive, &staging, force).await;
    let _ = fs_err::remove_dir_all(&staging);
    result
}

async fn restore_full_in(
    snapshots: &Arc<Snapshots>,
    archive: &Path,
    staging: &Path,
    force: bool,
) -> Result<Vec<String>> {
    let storage = snapshots.storage();
    let mut sidecar = archive.as_os_str().to_owned();
    sidecar.push(crate::snapshot::store::CHECKSUM_EXT);
    let checksum = fs_err::read_to_string(&sidecar)
        .ok()
        .and_then(|t| crate::snapshot::checksum::sidecar_checksum(&t));
    let limit = storage
        .max_restore_bytes()
        .unwrap_or(crate::snapshot::limits::DEFAULT_LOGICAL_BYTES);
    let mapping = {
        let (archive, staging) = (archive.to_path_buf(), staging.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>> {
            // The outer archive is unpacked whole (each collection inside it is then
            // received like any other archive): a start-up operation, two passes.
            fs_err::create_dir_all(&staging)?;
            let file = std::fs::File::open(&archive)?;
            crate::snapshot::unpack::unpack_verified(
                std::io::BufReader::with_capacity(1 << 20, file),
                checksum.as_deref(),
                Some(&staging),
                &crate::snapshot::limits::Limits::logical(limit),
            )?;
            let config: serde_json::Value = crate::storage::read_bounded(
                &staging.join(CONFIG_FILE),
                crate::storage::MAX_JSON_FILE,
            )
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                SnapshotError::invalid(
                    "not a full-storage snapshot: config.json with collections_mapping is missing",
                )
            })?;
            let mapping = config["collections_mapping"].as_object().ok_or_else(|| {
                SnapshotError::invalid(
                    "not a full-storage snapshot: config.json has no collections_mapping",
                )
            })?;
            mapping
                .iter()
                .map(|(name, file)| {
                    let file = file.as_str().unwrap_or_default().to_string();
                    crate::snapshot::unpack::check_entry_path(Path::new(&file)).map_err(|why| {
                        SnapshotError::invalid(format!("collection {name}: {why}"))
                    })?;
                    Ok((name.clone(), file))
                })
                .collect()
        })
        .await
        .map_err(StorageError::from_cause)??
    };
    if !force
        && let Some((existing, _)) = mapping
            .iter()
            .find(|(name, _)| storage.collection(name).is_ok())
    {
        return Err(SnapshotError::invalid(format!(
            "collection {existing} already exists; pass --force to replace the collections in the snapshot"
        )).into());
    }
    let mut restored = Vec::new();
    for (name, file) in mapping {
        let shown = Some((name.clone(), "collection".to_string()));
        let received = receive_file(snapshots, &staging.join(&file), shown, None).await?;
        restore_collection(snapshots, &name, received, None).await?;
        restored.push(name);
    }
    Ok(restored)
}
