//! The small generated files of the mount: `README.txt` and `collections/<c>/info.json`.

use std::time::UNIX_EPOCH;

use serde_json::json;

use super::error::FsResult;
use crate::snapshot::Snapshots;
use crate::snapshot::names::creation_time;
use crate::storage::Collection;

pub const README_TEXT: &str = "\
snapfs: vector collections and their snapshots as files
=======================================================

Back up
  cp live/<c>.snapshot /backup/            a fresh, consistent snapshot of collection <c>
  rsync -a live/ /backup/                  unchanged collections are skipped (size + mtime)
  cd live && sha256sum -c <c>.snapshot.sha256
  cp storage.snapshot /backup/             every collection in one archive
  collections/<c>/shards/<id>/<c>-shard-<id>.snapshot   one shard

  Reading a live file freezes what it covers (updates are still accepted and applied
  afterwards) and streams a tar archive built from the collection's own files. Its
  size and mtime are exact before anything is read; the same state always gives the
  same bytes.

Stored snapshots
  snapshots/, collections/<c>/snapshots/, collections/<c>/shards/<id>/snapshots/
  hold snapshots made with `snapfs snapshot create` (or Qdrant's HTTP API), each with
  a .checksum file. Copy them out; rm deletes one with its checksum.

Restore
  cp /backup/<c>.snapshot recover/         creates or replaces collection <c>
  cp x.snapshot collections/<c>/recover/   any name: restores <c>
  rsync /backup/<c>.snapshot recover/      rsync's temp file + rename works too
  Write <name>.sha256 or <name>.checksum first to have the snapshot checked against
  it. The restore runs when the file is closed (or renamed into place); if it fails,
  cp fails and <name>.error says why (rm it to clear it). Nothing changes unless the
  whole snapshot checks out.
  collections/<c>/shards/<id>/recover/     a shard snapshot: restores that shard

Also
  metrics                         Prometheus text, as GET /metrics
  collections/<c>/info.json       configuration, point count, shards, last change,
                                  and a restore under way (with the bytes so far)

Everything else is read-only: writes fail with EROFS, links and chmod with EPERM.
The HTTP API on the control socket does what a file cannot say (see the README).
";

/// `info.json`: what a user checks before and after a backup or restore.
pub fn info_json(snapshots: &Snapshots, collection: &Collection) -> FsResult<Vec<u8>> {
    let stats = collection.stats()?;
    let config: serde_json::Value = serde_json::to_value(collection.config())
        .map_err(|e| super::error::FsError::io(e.to_string()))?;
    let shards: Vec<_> = collection
        .shards()
        .into_iter()
        .map(|shard| {
            let points = shard
                .engine()
                .ok()
                .and_then(|e| e.info().ok())
                .map(|i| i.points_count);
            json!({
                "id": shard.id(),
                "points_count": points,
                "frozen": shard.is_frozen(),
                "pending_updates": shard.pending_updates(),
                "last_change": creation_time(shard.last_change()),
            })
        })
        .collect();
    let status = if stats.optimizing_shards > 0 || stats.pending_updates > 0 {
        "yellow"
    } else {
        "green"
    };
    let state_version = stats
        .last_change
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let info = json!({
        "name": collection.name(),
        "status": status,
        "points_count": stats.points_count,
        "segments_count": stats.segments_count,
        "shards": shards,
        // Moves whenever the collection's files (and so its snapshot bytes) change.
        "state_version": state_version,
        "last_update": creation_time(stats.last_change),
        "restore": crate::snapshot::progress::running_restore(snapshots, collection.name())
            .map(|r| r.to_json()),
        "config": config,
    });
    let mut text =
        serde_json::to_vec_pretty(&info).map_err(|e| super::error::FsError::io(e.to_string()))?;
    text.push(b'\n');
    Ok(text)
}
