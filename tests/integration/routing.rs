//! Point-to-shard routing equals Qdrant's, checked against shards a Qdrant 1.18.3
//! server wrote (tests/fixtures/qdrant-1.18.3): every point found in Qdrant's
//! shard N must route to N here.

use std::path::PathBuf;

use qdrant_edge::{EdgeShard, PointId, ScrollRequest};
use snapfs::storage::router::ShardRouter;

fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qdrant-1.18.3")
        .join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

fn ids_in_shard_snapshot(snapshot: &str) -> Vec<PointId> {
    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("shard");
    EdgeShard::unpack_snapshot(&fixture(snapshot), &shard_dir).unwrap();
    let shard = EdgeShard::load(&shard_dir, None).unwrap();
    let mut request = ScrollRequest::new();
    request.limit = Some(10_000);
    let (records, _) = shard.scroll(request).unwrap();
    records.into_iter().map(|r| r.id).collect()
}

#[test]
fn routes_like_qdrant_for_the_multi_fixture() {
    let router = ShardRouter::new(3);
    for (snapshot, shard) in [
        ("qdrant-multi-shard-1.snapshot", 1),
        ("qdrant-multi-shard-2-streamed.snapshot", 2),
    ] {
        let ids = ids_in_shard_snapshot(snapshot);
        assert!(
            ids.len() > 400,
            "{snapshot}: expected a third of 1800 points, got {}",
            ids.len()
        );
        let misrouted: Vec<_> = ids
            .iter()
            .filter(|id| router.shard_for(id) != shard)
            .collect();
        assert!(
            misrouted.is_empty(),
            "{snapshot}: {} of {} points route elsewhere, e.g. {:?}",
            misrouted.len(),
            ids.len(),
            &misrouted[..misrouted.len().min(5)]
        );
    }
}

#[test]
fn known_ids_route_to_known_shards() {
    // Read off the Qdrant 1.18.3 shards above (ids 10, 20, … were deleted there; the
    // others below 30 not in shard 1 or 2 are in shard 0), so a change in hashing shows
    // up as a plain diff without unpacking anything.
    let expected: [(u64, u32); 14] = [
        (1, 2),
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 0),
        (8, 0),
        (9, 1),
        (13, 0),
        (17, 1),
        (18, 1),
        (21, 1),
        (22, 2),
        (24, 1),
        (19, 0),
    ];
    let router = ShardRouter::new(3);
    for (id, shard) in expected {
        assert_eq!(router.shard_for(&PointId::NumId(id)), shard, "id {id}");
    }
}
