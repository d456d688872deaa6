//! Partial snapshots between real daemons, Qdrant's own partial archives and the
//! engine's own apply.

mod support;

use hyper::Method;
use serde_json::{Value, json};
use support::*;

async fn pull(client: &snapfs::client::Client, c: &str, shard: u32, peer: &str) -> (u16, Value) {
    call(
        client,
        Method::POST,
        &format!("/collections/{c}/shards/{shard}/snapshot/partial/recover_from"),
        Some(json!({"peer_url": peer, "api_key": PEER_KEY})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_pulls_a_peers_changes_shard_by_shard() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    for client in [&ca, &cb] {
        create_collection(
            client,
            "docs",
            json!({"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 3}),
        )
        .await;
    }
    upsert(&ca, "docs", (0..600).map(|i| point(i, 8)).collect(), true).await;
    for shard in 0..3 {
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], true, "{body}");
    }
    assert!(by_id(&all_points(&cb, "docs").await) == by_id(&all_points(&ca, "docs").await));
    for shard in 0..3 {
        let path = format!("/collections/docs/shards/{shard}/snapshot/partial/manifest?format=files");
        let (_, ma) = call(&ca, Method::GET, &path, None).await;
        let (_, mb) = call(&cb, Method::GET, &path, None).await;
        for (x, y) in ma["result"]["files"].as_array().unwrap().iter().zip(mb["result"]["files"].as_array().unwrap()) {
            if x != y { println!("DIFF {x} {y}"); }
        }
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], false, "second pull of shard {shard}: {body}");
    }
    // Changes on A: upserts, deletes; pulled again.
    upsert(&ca, "docs", (590..650).map(|i| point(i * 3, 8)).collect(), true).await;
    let (status, body) = call(
        &ca,
        Method::POST,
        "/collections/docs/points/delete?wait=true",
        Some(json!({"points": [1, 2, 3, 50, 51]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for shard in 0..3 {
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(by_id(&all_points(&cb, "docs").await) == by_id(&all_points(&ca, "docs").await));
    println!("{}", b.log());
}
