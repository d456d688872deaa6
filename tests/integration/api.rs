//! The control API over the real socket, against the real daemon and engine.

use crate::support;

use hyper::Method;
use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn upsert_count_retrieve_query_on_single_and_multi_shard() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    for (name, shards) in [("one", 1), ("three", 3)] {
        create_collection(&client, name, sharded_vectors(8, "Cosine", shards)).await;
        let points: Vec<Value> = (0..300).map(|id| point(id, 8)).collect();
        upsert(&client, name, points, true).await;
        assert_eq!(count(&client, name).await, 300);

        let (status, got) = call(
            &client,
            Method::POST,
            &format!("/collections/{name}/points"),
            Some(json!({"ids": [5, 299, 1000], "with_vector": true})),
        )
        .await;
        assert_eq!(status, 200, "{got}");
        let records = got["result"].as_array().unwrap();
        assert_eq!(records.len(), 2, "unknown id 1000 is skipped: {got}");
        assert_eq!(records[0]["id"], 5);
        assert_eq!(records[0]["payload"]["tag"], "t5");
        assert_eq!(records[1]["id"], 299);
        assert_eq!(records[1]["vector"].as_array().unwrap().len(), 8);

        // The nearest point to a point's own vector is itself, across shards.
        let target = point(123, 8)["vector"].clone();
        let (status, found) = call(
            &client,
            Method::POST,
            &format!("/collections/{name}/points/query"),
            Some(json!({"query": target, "limit": 3, "with_payload": true})),
        )
        .await;
        assert_eq!(status, 200, "{found}");
        let hits = found["result"]["points"].as_array().unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0]["id"], 123);
        assert!(hits[0]["score"].as_f64().unwrap() > 0.999);
        assert!(hits[0]["score"].as_f64() >= hits[1]["score"].as_f64());

        // A filter narrows the query.
        let (_, filtered) = call(
            &client,
            Method::POST,
            &format!("/collections/{name}/points/query"),
            Some(
                json!({"query": {"nearest": target}, "limit": 50, "with_payload": true,
                        "filter": {"must": [{"key": "tag", "match": {"value": "t3"}}]}}),
            ),
        )
        .await;
        let hits = filtered["result"]["points"].as_array().unwrap();
        assert!(!hits.is_empty());
        assert!(
            hits.iter().all(|h| h["payload"]["tag"] == "t3"),
            "{filtered}"
        );

        // Scroll visits every point once, in id order.
        let all = all_points(&client, name).await;
        let ids: Vec<u64> = all.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());

        // Single point by id, then deletes by id and by filter.
        let (status, one) = call(
            &client,
            Method::GET,
            &format!("/collections/{name}/points/42"),
            None,
        )
        .await;
        assert_eq!(
            (status, one["result"]["payload"]["n"].clone()),
            (200, json!(42))
        );
        let (status, _) = delete_points(&client, name, json!({"points": [0, 1, 2]})).await;
        assert_eq!(status, 200);
        assert_eq!(count(&client, name).await, 297);
        let (status, _) = delete_points(
            &client,
            name,
            json!({"filter": {"must": [{"key": "tag", "match": {"value": "t0"}}]}}),
        )
        .await;
        assert_eq!(status, 200);
        let remaining = all_points(&client, name).await;
        assert!(remaining.iter().all(|p| p["payload"]["tag"] != "t0"));
        assert_eq!(remaining.len() as u64, count(&client, name).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn named_vectors_uuid_ids_and_batches() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(
        &client,
        "named",
        json!({"vectors": {"text": {"size": 4, "distance": "Dot"}, "image": {"size": 2, "distance": "Euclid"}}, "shard_number": 2}),
    )
    .await;
    let uuid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
    upsert(
        &client,
        "named",
        vec![
            json!({"id": uuid, "vector": {"text": [1.0, 0.0, 0.0, 0.0], "image": [0.5, 0.5]}, "payload": {"k": "u"}}),
            json!({"id": 7, "vector": {"text": [0.0, 1.0, 0.0, 0.0]}}),
        ],
        true,
    )
    .await;
    let (status, _) = call(
        &client,
        Method::PUT,
        "/collections/named/points?wait=true",
        Some(json!({"batch": {"ids": [8, 9], "vectors": {"text": [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]}, "payloads": [{"b": 1}, null]}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(count(&client, "named").await, 4);

    let (_, got) = call(
        &client,
        Method::GET,
        &format!("/collections/named/points/{uuid}"),
        None,
    )
    .await;
    assert_eq!(got["result"]["id"], uuid);
    assert_eq!(got["result"]["vector"]["image"], json!([0.5, 0.5]));

    let (status, found) = call(
        &client,
        Method::POST,
        "/collections/named/points/query",
        Some(json!({"query": [0.0, 0.0, 0.9, 0.1], "using": "text", "limit": 1})),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["result"]["points"][0]["id"], 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
        let client = daemon.client();
        create_collection(&client, "keep", sharded_vectors(16, "Euclid", 2)).await;
        upsert_ids(&client, "keep", 0..500, 16).await;
        let (status, _) = delete_points(&client, "keep", json!({"points": [10, 20]})).await;
        assert_eq!(status, 200);
        let expected = all_points(&client, "keep").await;
        assert!(
            daemon.stop().success(),
            "clean exit on SIGTERM; log:\n{}",
            daemon.log()
        );
        expected
    };
    assert!(
        !dir.path().join("snapfs.sock").exists(),
        "socket removed at exit"
    );
    let daemon = Daemon::start_in(dir.path(), &[], &[]);
    let client = daemon.client();
    assert_eq!(all_points(&client, "keep").await, expected);
    let (_, info) = call(&client, Method::GET, "/collections/keep", None).await;
    assert_eq!(info["result"]["points_count"], 498);
    assert_eq!(info["result"]["config"]["params"]["shard_number"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_acknowledged_upserts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for wait in [false, true] {
        let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
        let client = daemon.client();
        let name = format!("crash-{wait}");
        create_collection(&client, &name, sharded_vectors(8, "Dot", 3)).await;
        for batch in 0..10u64 {
            upsert(
                &client,
                &name,
                (batch * 100..batch * 100 + 100)
                    .map(|id| point(id, 8))
                    .collect(),
                wait,
            )
            .await;
        }
        daemon.kill9();
        let daemon = Daemon::start_in(dir.path(), &[], &[]);
        let client = daemon.client();
        assert_eq!(
            count(&client, &name).await,
            1000,
            "wait={wait}; log:\n{}",
            daemon.log()
        );
        let all = all_points(&client, &name).await;
        assert_eq!(all[999]["payload"]["n"], 999);
        drop(daemon);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_to_one_collection() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(&client, "busy", sharded_vectors(8, "Cosine", 2)).await;
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for batch in 0..10u64 {
                let start = writer * 10_000 + batch * 50;
                upsert(
                    &client,
                    "busy",
                    (start..start + 50).map(|id| point(id, 8)).collect(),
                    batch % 2 == 0,
                )
                .await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // The last batches were acknowledged without waiting; a wait=true no-op flushes the queue order.
    upsert(&client, "busy", vec![point(99_999, 8)], true).await;
    assert_eq!(count(&client, "busy").await, 4 * 10 * 50 + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn collections_list_info_exists_and_delete() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(&client, "b", vectors(4, "Manhattan")).await;
    create_collection(
        &client,
        "a",
        json!({"vectors": {"size": 4, "distance": "Dot"}, "hnsw_config": {"m": 8}}),
    )
    .await;
    let (_, list) = call(&client, Method::GET, "/collections", None).await;
    assert_eq!(
        list["result"]["collections"],
        json!([{"name": "a"}, {"name": "b"}])
    );
    let (_, info) = call(&client, Method::GET, "/collections/a", None).await;
    assert_eq!(info["status"], "ok");
    assert_eq!(info["result"]["status"], "green");
    assert_eq!(info["result"]["config"]["hnsw_config"]["m"], 8);
    assert_eq!(
        info["result"]["config"]["params"]["vectors"]["distance"],
        "Dot"
    );
    let mut on_disk: Value = serde_json::from_slice(
        &std::fs::read(daemon.data_dir.join("storage/collections/a/config.json")).unwrap(),
    )
    .unwrap();
    // Qdrant writes `uuid` into config.json but does not show it in the info.
    assert_eq!(on_disk["uuid"], Value::Null);
    on_disk.as_object_mut().unwrap().remove("uuid");
    assert_eq!(
        on_disk, info["result"]["config"],
        "config.json on disk is the Qdrant-schema config"
    );
    assert!(
        daemon
            .data_dir
            .join("storage/collections/a/0/edge_config.json")
            .exists(),
        "shard 0 is an edge shard"
    );

    let (_, exists) = call(&client, Method::GET, "/collections/a/exists", None).await;
    assert_eq!(exists["result"]["exists"], true);
    let (status, deleted) = call(&client, Method::DELETE, "/collections/a", None).await;
    assert_eq!((status, deleted["result"].clone()), (200, json!(true)));
    assert!(!daemon.data_dir.join("storage/collections/a").exists());
    let (_, again) = call(&client, Method::DELETE, "/collections/a", None).await;
    assert_eq!(again["result"], false);
    let (status, _) = call(&client, Method::GET, "/collections/a", None).await;
    assert_eq!(status, 404);
    let (_, root) = call(&client, Method::GET, "/", None).await;
    assert!(
        root["version"].is_string() && root["title"].is_string(),
        "{root}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_private_and_second_daemon_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start(&[]);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let mut second = Daemon::spawn(
        &daemon.data_dir,
        &["--socket", "/tmp/snapfs-second.sock"],
        &[],
    );
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(
        second.log().contains("another snapfs daemon"),
        "{}",
        second.log()
    );
    // The first one still answers.
    assert_answers(&daemon.client()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_socket_from_a_crash_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Daemon::start_in(dir.path(), &[], &[]);
    first.kill9();
    assert!(
        dir.path().join("snapfs.sock").exists(),
        "a crash leaves the socket file"
    );
    let second = Daemon::start_in(dir.path(), &[], &[]);
    assert_answers(&second.client()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_flag_creates_a_populated_collection_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), &["--demo"], &[]);
    let client = daemon.client();
    assert_eq!(count(&client, "demo").await, snapfs::demo::DEMO_POINTS);
    // Not recreated when collections exist.
    let (status, _) = delete_points(&client, "demo", json!({"points": [0]})).await;
    assert_eq!(status, 200);
    assert!(daemon.stop().success());
    let daemon = Daemon::start_in(dir.path(), &["--demo"], &[]);
    assert_eq!(
        count(&daemon.client(), "demo").await,
        snapfs::demo::DEMO_POINTS - 1
    );
}

/// /metrics is valid exposition: the Prometheus project's own parser reads every
/// family with its type, Qdrant's snapshot metrics carry the collection as `id`.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_with_a_real_parser() {
    let python = support::python_venv();
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    support::seeded_collection(&client, "measured", 1, 30).await;
    let name = stored_name(&client, "/collections/measured/snapshots").await;
    let _ = support::fetch(&client, "/collections/measured/shards/0/snapshot").await;
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/measured/snapshots/recover",
        Some(json!({"location": name, "checksum": "0".repeat(64)})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let text = support::fetch(&client, "/metrics").await;
    let mut check = std::process::Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/metrics_check.py"))
        .arg("measured")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(&text).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("all checks passed"),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text)
    );
}

/// Querying by a point's id leaves that point out inside the search, so pages taken
/// with `offset` follow each other without overlap or gap (Qdrant's behaviour).
#[tokio::test(flavor = "multi_thread")]
async fn query_by_point_id_pages_do_not_overlap() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "paged", 2, 60).await;
    let page = |offset: usize, limit: usize| {
        let client = client.clone();
        async move {
            let (status, found) = call(
                &client,
                Method::POST,
                "/collections/paged/points/query",
                Some(json!({"query": 5, "limit": limit, "offset": offset})),
            )
            .await;
            assert_eq!(status, 200, "{found}");
            found["result"]["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        }
    };
    let whole = page(0, 12).await;
    assert_eq!(whole.len(), 12);
    assert!(!whole.contains(&5), "{whole:?}");
    let mut paged = Vec::new();
    for offset in (0..12).step_by(3) {
        paged.extend(page(offset, 3).await);
    }
    assert_eq!(paged, whole);
}
