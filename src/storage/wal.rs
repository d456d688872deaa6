//! An empty write-ahead log for a shard, in the engine's on-disk format, whose next
//! operation gets a chosen number.
//!
//! A shard's WAL numbers its operations; after a flush it holds nothing the segments
//! lack. A shard assembled from another's segments (a partial snapshot of the
//! content form) does not need that shard's WAL bytes, only a WAL that numbers the
//! next operation above every operation in the segments — otherwise new updates
//! would be older than stored points and ignored. The engine reads a closed segment
//! `closed-<first index>` with no entries as exactly that (Qdrant writes the same
//! when it snapshots a shard without its WAL).
//!
//! Segment file format (qdrant's `wal` crate, pinned with qdrant-edge 0.9.0): an
//! 8-byte header — the bytes `wal`, a format version byte (0), a little-endian `u32`
//! CRC seed — then entries; an entry header of zeros ends the segment. The file has
//! the segment capacity as its size (sparse here).

use std::io::Write;
use std::path::Path;

use super::error::Result;

/// The segment format version the engine writes and reads.
const SEGMENT_VERSION: u8 = 0;

/// Make `dir` (which must not exist) a WAL with no entries whose next operation is
/// number `next`; its segments are `capacity` bytes.
pub fn write_empty(dir: &Path, next: u64, capacity: u64) -> Result<()> {
    fs_err::create_dir(dir)?;
    let segment = dir.join(format!("closed-{next}"));
    let mut file = fs_err::File::create_new(&segment)?;
    let mut header = [0u8; 8];
    header[..3].copy_from_slice(b"wal");
    header[3] = SEGMENT_VERSION;
    // The seed makes a reused segment file's old entries fail their CRC; any value
    // serves a new file, but a random one is what the format expects.
    header[4..].copy_from_slice(&rand::random::<u32>().to_le_bytes());
    file.write_all(&header)?;
    // Rounded down to 8 bytes as the engine does; the rest reads as zeros (no entry).
    file.set_len((capacity & !7).max(header.len() as u64))?;
    file.sync_all()?;
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use qdrant_edge::{
        CountRequest, EdgeConfig, EdgeShard, PointInsertOperations, PointOperations,
        PointStructPersisted, UpdateOperation,
    };
    use serde_json::json;

    fn config() -> EdgeConfig {
        serde_json::from_value(json!({
            "on_disk_payload": true,
            "vectors": {"": {"size": 4, "distance": "Dot"}},
            "wal_options": {"segment_capacity": 1 << 20, "segment_queue_len": 0, "retain_closed": 1},
        }))
        .unwrap()
    }

    fn upsert(shard: &EdgeShard, ids: std::ops::Range<u64>, x: f32) {
        let points: Vec<PointStructPersisted> = ids
            .map(|i| {
                serde_json::from_value(json!({"id": i, "vector": [x, 1.0, 2.0, 3.0]})).unwrap()
            })
            .collect();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .unwrap();
    }

    fn count(shard: &EdgeShard) -> usize {
        shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .unwrap()
    }

    #[test]
    fn the_engine_takes_an_empty_wal_and_numbers_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let shard = EdgeShard::new(&path, config()).unwrap();
        for batch in 0..5 {
            upsert(&shard, batch * 10..batch * 10 + 10, 1.0);
        }
        shard.flush().unwrap();
        let version = shard
            .snapshot_manifest()
            .map(|m| {
                serde_json::to_value(m)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|s| s["segment_version"].as_u64().unwrap())
                    .max()
                    .unwrap()
            })
            .unwrap();
        drop(shard);
        std::fs::remove_dir_all(path.join("wal")).unwrap();
        super::write_empty(&path.join("wal"), version + 1, 1 << 20).unwrap();

        let shard = EdgeShard::load(&path, Some(config())).unwrap();
        assert_eq!(count(&shard), 50);
        // A new update of a point of the last batch wins (numbered above it).
        upsert(&shard, 45..46, 9.0);
        upsert(&shard, 100..101, 9.0);
        assert_eq!(count(&shard), 51);
        drop(shard);
        // And it is in the WAL: replayed after a load without flushing segments.
        let shard = EdgeShard::load(&path, Some(config())).unwrap();
        assert_eq!(count(&shard), 51);
        let records = shard
            .retrieve(qdrant_edge::RetrieveRequest {
                point_ids: vec![qdrant_edge::PointId::NumId(45)],
                with_payload: None,
                with_vector: Some(qdrant_edge::WithVector::Bool(true)),
            })
            .unwrap();
        let vector = format!("{:?}", records[0].vector);
        assert!(
            vector.contains('9'),
            "the newer upsert of point 45 holds: {vector}"
        );
    }
}
