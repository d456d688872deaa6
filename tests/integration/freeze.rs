//! The writer's freeze, driven through the library: while frozen the shard files
//! do not change, reads answer from the frozen state, updates are acknowledged and
//! applied in order at the thaw, and nothing acknowledged is lost across a stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use snapfs::storage::{CreateCollection, ReadOptions, Storage};

fn points(ids: std::ops::Range<u64>, generation: u64) -> Vec<qdrant_edge::PointStructPersisted> {
    let list: Vec<Value> = ids
        .map(|id| json!({"id": id, "vector": [id as f32, 1.0, generation as f32, 0.5], "payload": {"gen": generation}}))
        .collect();
    serde_json::from_value(Value::Array(list)).unwrap()
}

/// Every regular file under `dir` with its bytes (the shards are small).
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                files.insert(
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

async fn open_with_collection(storage_dir: &Path) -> Arc<Storage> {
    let storage = tokio::task::block_in_place(|| Storage::open(storage_dir)).unwrap();
    let request: CreateCollection = serde_json::from_value(json!({
        "vectors": {"size": 4, "distance": "Euclid"}, "shard_number": 2,
        "wal_config": {"wal_capacity_mb": 1},
        // Flush and optimize as soon as maintenance runs, so a frozen shard would be touched if it could.
        "optimizers_config": {"flush_interval_sec": 0}
    }))
    .unwrap();
    storage
        .create_collection("c", request.into_config().unwrap())
        .await
        .unwrap();
    storage
}

fn gens(storage: &Storage) -> BTreeMap<u64, u64> {
    let collection = storage.collection("c").unwrap();
    let page = collection
        .scroll(
            None,
            10_000,
            None,
            &ReadOptions {
                with_payload: qdrant_edge::WithPayloadInterface::Bool(true),
                with_vector: qdrant_edge::WithVector::Bool(false),
            },
        )
        .unwrap();
    page.points
        .into_iter()
        .map(|r| {
            let id = match r.id {
                qdrant_edge::PointId::NumId(n) => n,
                other => panic!("unexpected id {other:?}"),
            };
            (id, r.payload.unwrap().0["gen"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_files_stay_put_while_updates_are_acknowledged_then_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_with_collection(dir.path()).await;
    let collection = storage.collection("c").unwrap();
    collection.upsert(points(0..100, 1), true).await.unwrap();

    let freeze = tokio::task::block_in_place(|| collection.freeze()).unwrap();
    let shard_dirs: Vec<_> = collection
        .shards()
        .iter()
        .map(|s| s.path().to_path_buf())
        .collect();
    let frozen_files: Vec<_> = shard_dirs.iter().map(|d| snapshot_files(d)).collect();

    // Updates during the freeze: acknowledged without waiting for the thaw.
    collection.upsert(points(100..150, 2), false).await.unwrap();
    collection.upsert(points(0..10, 3), false).await.unwrap();
    collection
        .delete(vec![qdrant_edge::PointId::NumId(99)], false)
        .await
        .unwrap();
    // A wait=true update waits for the thaw.
    let waiter = {
        let collection = collection.clone();
        tokio::spawn(async move { collection.upsert(points(0..5, 4), true).await })
    };

    // Reads keep answering, from the frozen state.
    let during = gens(&storage);
    assert_eq!(during.len(), 100);
    assert!(during.values().all(|g| *g == 1));
    // One pending record per shard an update touches: at least one per update.
    assert!(collection.stats().unwrap().pending_updates >= 4);
    assert!(collection.stats().unwrap().frozen_shards == 2);

    // Let maintenance ticks pass: nothing may flush or optimize a frozen shard.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiter.is_finished(), "wait=true must wait for the thaw");
    for (dir, before) in shard_dirs.iter().zip(&frozen_files) {
        assert!(
            &snapshot_files(dir) == before,
            "files of {} changed during the freeze",
            dir.display()
        );
    }

    drop(freeze);
    waiter.await.unwrap().unwrap();
    let after = gens(&storage);
    assert_eq!(after.len(), 149, "100 + 50 new - 1 deleted");
    assert_eq!(after[&0], 4, "applied in order: gen 3 then gen 4");
    assert_eq!(after[&7], 3);
    assert_eq!(after[&120], 2);
    assert!(!after.contains_key(&99));
    // The writer answers the waiting update while it applies the log, and clears the
    // log's count right after: the count reaches 0 a moment after the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while collection.stats().unwrap().pending_updates != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(collection.stats().unwrap().pending_updates, 0);
    storage.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_freezes_share_the_frozen_state_until_the_last_thaw() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_with_collection(dir.path()).await;
    let collection = storage.collection("c").unwrap();
    collection.upsert(points(0..20, 1), true).await.unwrap();
    let first = tokio::task::block_in_place(|| collection.freeze()).unwrap();
    let second = tokio::task::block_in_place(|| collection.freeze()).unwrap();
    collection.upsert(points(20..30, 1), false).await.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gens(&storage).len(),
        20,
        "still frozen by the second reader"
    );
    drop(second);
    // Waiting for updates on both shards waits for both thaws (the thaw is queued
    // in each shard's update order).
    let shards: std::collections::HashSet<u32> = (30..40)
        .map(|id| collection.shard_for(&qdrant_edge::PointId::NumId(id)))
        .collect();
    assert_eq!(shards.len(), 2);
    collection.upsert(points(30..40, 1), true).await.unwrap();
    assert_eq!(gens(&storage).len(), 40);
    storage.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_acknowledged_during_a_freeze_survive_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open_with_collection(dir.path()).await;
        let collection = storage.collection("c").unwrap();
        collection.upsert(points(0..10, 1), true).await.unwrap();
        let freeze = tokio::task::block_in_place(|| collection.freeze()).unwrap();
        collection.upsert(points(10..20, 2), false).await.unwrap();
        collection.upsert(points(0..3, 5), false).await.unwrap();
        // Stop while still frozen: the acknowledged updates are only in the pending log,
        // and the thaw that comes after the writers stopped applies nothing.
        storage.shutdown();
        drop(freeze);
        drop(collection);
        drop(storage);
    }
    let storage = tokio::task::block_in_place(|| Storage::open(dir.path())).unwrap();
    let after = gens(&storage);
    assert_eq!(after.len(), 20);
    assert_eq!(after[&1], 5);
    assert_eq!(after[&15], 2);
    storage.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_freeze_holds_only_that_shard() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_with_collection(dir.path()).await;
    let collection = storage.collection("c").unwrap();
    let freeze = tokio::task::block_in_place(|| collection.freeze_shards(&[0])).unwrap();
    assert!(collection.shards()[0].is_frozen() && !collection.shards()[1].is_frozen());
    let on = |shard: u32| {
        (0..1000u64)
            .find(|id| collection.shard_for(&qdrant_edge::PointId::NumId(*id)) == shard)
            .unwrap()
    };
    let (frozen_id, free_id) = (on(0), on(1));
    // wait=true on the free shard is applied at once; on the frozen one it waits.
    collection
        .upsert(points(free_id..free_id + 1, 1), true)
        .await
        .unwrap();
    let waiter = {
        let collection = collection.clone();
        tokio::spawn(async move {
            collection
                .upsert(points(frozen_id..frozen_id + 1, 1), true)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    assert_eq!(gens(&storage).len(), 1);
    drop(freeze);
    waiter.await.unwrap().unwrap();
    assert_eq!(gens(&storage).len(), 2);
    storage.shutdown();
}
