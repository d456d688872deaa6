//! A shard's `recover/`: a received shard archive is told apart by its content and
//! taken the one way that fits it (a full restore or a partial apply). Sits above
//! [`super::restore`] and [`super::partial::apply`], which know nothing of each other.

use std::sync::Arc;

use super::Snapshots;
use super::intake::Received;
use super::partial::apply;
use super::restore::restore_shard;
use crate::storage::{Result, StorageError};

/// Restore shard `id` from a full shard snapshot, or apply a partial one to it:
/// what a shard's `recover/` directory does (it tells them apart by content).
pub async fn restore_or_apply_shard(
    snapshots: &Arc<Snapshots>,
    name: &str,
    id: u32,
    received: Received,
    checksum: Option<String>,
) -> Result<()> {
    let (received, partial) = tokio::task::spawn_blocking(move || {
        let partial = apply::detect(&received).map(|p| p.is_some());
        (received, partial)
    })
    .await
    .map_err(|e| StorageError::internal_from("the shard archive check stopped", e))?;
    if partial? {
        apply::apply(snapshots, name, id, received, checksum, None).await?;
    } else {
        restore_shard(snapshots, name, id, received, checksum).await?;
    }
    Ok(())
}
