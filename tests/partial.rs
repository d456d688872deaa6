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

/// `curl` a multipart upload of `file` (field `snapshot`) to the daemon's socket.
fn upload(daemon: &Daemon, path: &str, file: &std::path::Path) -> (u16, Value) {
    let out = std::process::Command::new("curl")
        .arg("-s")
        .arg("--unix-socket")
        .arg(&daemon.socket)
        .arg("-w")
        .arg("\n%{http_code}")
        .arg("-F")
        .arg(format!("snapshot=@{}", file.display()))
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn partial_fixture(name: &str) -> std::path::PathBuf {
    qdrant_fixture(&format!("partial/{name}"))
}

/// Collection `p` as the fixture's README describes it, its shard 0 restored from
/// Qdrant's `base.snapshot`.
async fn qdrant_base(daemon: &Daemon) {
    let client = daemon.client();
    create_collection(
        &client,
        "p",
        json!({"vectors": {"size": 8, "distance": "Cosine"}, "wal_config": {"wal_capacity_mb": 1}}),
    )
    .await;
    let (status, body) = upload(
        daemon,
        "/collections/p/shards/0/snapshots/upload",
        &partial_fixture("base.snapshot"),
    );
    assert_eq!(status, 200, "{body}");
}

async fn manifest(client: &snapfs::client::Client, c: &str, shard: u32) -> Value {
    let (status, body) = call(
        client,
        Method::GET,
        &format!("/collections/{c}/shards/{shard}/snapshot/partial/manifest"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

fn expected_points() -> std::collections::BTreeMap<String, Value> {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(partial_fixture("expected.json")).unwrap()).unwrap();
    by_id(expected["points"].as_array().unwrap())
}

/// POST a manifest to `partial/create`: the status and the archive (empty for 304).
async fn create_partial(client: &snapfs::client::Client, c: &str, shard: u32, manifest: &Value) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let answered = client
        .post_download(
            &format!("/collections/{c}/shards/{shard}/snapshot/partial/create"),
            serde_json::to_vec(manifest).unwrap(),
            |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    answered.map(|_| bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_snapshot_written_by_qdrant_applies_over_http() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    qdrant_base(&daemon).await;
    let base: Value =
        serde_json::from_slice(&std::fs::read(partial_fixture("base.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest(&client, "p", 0).await, base, "the restored shard's manifest is Qdrant's");

    // A full snapshot is refused by the partial endpoint, and the partial by the full one.
    let (status, body) = upload(
        &daemon,
        "/collections/p/shards/0/snapshot/partial/recover",
        &partial_fixture("base.snapshot"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("full shard snapshot"), "{body}");
    let (status, body) = upload(
        &daemon,
        "/collections/p/shards/0/snapshots/upload",
        &partial_fixture("partial.snapshot"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("partial snapshot"), "{body}");
    assert_eq!(manifest(&client, "p", 0).await, base, "refusals changed nothing");

    let (status, body) = upload(
        &daemon,
        "/collections/p/shards/0/snapshot/partial/recover",
        &partial_fixture("partial.snapshot"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], true);
    assert!(by_id(&all_points(&client, "p").await) == expected_points());

    // The stale manifest gets a diff; the current one 304.
    assert!(create_partial(&client, "p", 0, &base).await.is_some_and(|b| !b.is_empty()));
    let now = manifest(&client, "p", 0).await;
    assert!(create_partial(&client, "p", 0, &now).await.is_none());
    assert!(daemon.staging_leftovers().is_empty(), "{:?}", daemon.staging_leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_snapshot_written_by_qdrant_applies_through_the_shards_recover_dir() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    qdrant_base(&m.daemon).await;
    run_ok(
        std::process::Command::new("cp")
            .arg(partial_fixture("partial.snapshot"))
            .arg(m.path("collections/p/shards/0/recover/partial.snapshot")),
    );
    assert!(by_id(&all_points(&client, "p").await) == expected_points());
    assert!(m.daemon.staging_leftovers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_edge_shard_mirrors_a_snapfs_shard_with_partial_snapshots() {
    let python = python_venv();
    let (daemon, url) = peer_daemon();
    let client = daemon.client();
    seeded_collection(&client, "edge", 1, 300).await;
    let work = tempfile::tempdir().unwrap();
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/edge_partial_check.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .env("SNAPFS_URL", &url)
        .env("SNAPFS_API_KEY", PEER_KEY)
        .env("SNAPFS_WORK", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all checks passed"),
        "qdrant-edge-py check failed:\n{stdout}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
}

/// GNU tar lists and extracts `archive` without a word on stderr.
fn gnu_tar_reads(archive: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.tar");
    std::fs::write(&file, archive).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "GNU tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every point's payload in an engine shard, by id (as the API prints ids).
fn engine_payloads(shard: &qdrant_edge::EdgeShard) -> std::collections::BTreeMap<String, Value> {
    let mut request = qdrant_edge::ScrollRequest::new();
    request.limit = Some(100_000);
    request.with_payload = Some(qdrant_edge::WithPayloadInterface::Bool(true));
    let (records, _) = shard.scroll(request).unwrap();
    records
        .into_iter()
        .map(|r| {
            (
                serde_json::to_value(r.id).unwrap().to_string(),
                serde_json::to_value(r.payload).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_applies_snapfs_partials_and_gnu_tar_reads_them() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "e", 1, 400).await;
    let old = fetch(&client, "/collections/e/shards/0/snapshot").await;
    let work = tempfile::tempdir().unwrap();
    let old_file = work.path().join("old.snapshot");
    std::fs::write(&old_file, &old).unwrap();
    let shard_dir = work.path().join("shard");
    qdrant_edge::EdgeShard::unpack_snapshot(&old_file, &shard_dir).unwrap();
    let engine = qdrant_edge::EdgeShard::load(&shard_dir, None).unwrap();
    let known = engine.snapshot_manifest().unwrap();
    let content = call(&client, Method::GET, "/collections/e/shards/0/snapshot/partial/manifest?format=files", None).await.1["result"].clone();

    upsert(&client, "e", (350..500).map(|i| point(i * 2, 8)).collect(), true).await;
    let (status, body) = call(&client, Method::POST, "/collections/e/points/delete?wait=true", Some(json!({"points": [0, 1, 2, 3]}))).await;
    assert_eq!(status, 200, "{body}");

    let known_json = serde_json::to_value(&known).unwrap();
    let partial = create_partial(&client, "e", 0, &known_json).await.expect("a diff");
    gnu_tar_reads(&partial);
    assert!(partial.len() < old.len() * 2);
    let by_content = create_partial(&client, "e", 0, &content).await.expect("a diff");
    gnu_tar_reads(&by_content);

    // qdrant-edge's own apply, on the older shard.
    let partial_file = work.path().join("partial.snapshot");
    std::fs::write(&partial_file, &partial).unwrap();
    let unpacked = work.path().join("unpacked");
    qdrant_edge::EdgeShard::unpack_snapshot(&partial_file, &unpacked).unwrap();
    let theirs = qdrant_edge::internal::SnapshotManifest::load_from_snapshot(&unpacked, None).unwrap();
    drop(engine);
    let engine = qdrant_edge::EdgeShard::recover_partial_snapshot(&shard_dir, &known, &unpacked, &theirs).unwrap();
    let snapfs_now = by_id(&all_points(&client, "e").await);
    assert_eq!(snapfs_now.len(), 400 + 150 - 4);
    let applied = engine_payloads(&engine);
    let want: std::collections::BTreeMap<String, Value> = snapfs_now
        .iter()
        .map(|(id, p)| (id.clone(), p["payload"].clone()))
        .collect();
    assert!(applied == want, "the engine's apply gives snapfs's points");
}
