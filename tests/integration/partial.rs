//! Partial snapshots between real daemons, Qdrant's own partial archives and the
//! engine's own apply.

use crate::support;

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
    // A low indexing threshold makes the optimizer rebuild A's segments as they
    // fill: pulls see segments merged, replaced and new.
    for client in [&ca, &cb] {
        create_collection(
            client,
            "docs",
            json!({"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 3,
                   "optimizers_config": {"indexing_threshold": 5, "default_segment_number": 1}}),
        )
        .await;
    }
    upsert_ids(&ca, "docs", 0..600, 8).await;
    wait_settled(&ca, "docs").await;
    for shard in 0..3 {
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], true, "{body}");
    }
    assert!(by_id(&all_points(&cb, "docs").await) == by_id(&all_points(&ca, "docs").await));
    for shard in 0..3 {
        let path =
            format!("/collections/docs/shards/{shard}/snapshot/partial/manifest?format=files");
        let (_, ma) = call(&ca, Method::GET, &path, None).await;
        let (_, mb) = call(&cb, Method::GET, &path, None).await;
        for (x, y) in ma["result"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .zip(mb["result"]["files"].as_array().unwrap())
        {
            if x != y {
                println!("DIFF {x} {y}");
            }
        }
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["result"], false,
            "second pull of shard {shard}: {body}"
        );
    }
    // Changes on A: upserts, deletes; pulled again.
    upsert(
        &ca,
        "docs",
        (590..650).map(|i| point(i * 3, 8)).collect(),
        true,
    )
    .await;
    let (status, body) = delete_points(&ca, "docs", json!({"points": [1, 2, 3, 50, 51]})).await;
    assert_eq!(status, 200, "{body}");
    wait_settled(&ca, "docs").await;
    for shard in 0..3 {
        let (status, body) = pull(&cb, "docs", shard, &a_url).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(by_id(&all_points(&cb, "docs").await) == by_id(&all_points(&ca, "docs").await));
    let moved = |metrics: &str, direction: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "snapfs_partial_snapshot_bytes_total{{direction=\"{direction}\"}} "
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let sent = moved(
        &String::from_utf8(fetch(&ca, "/metrics").await).unwrap(),
        "sent",
    );
    let received = moved(
        &String::from_utf8(fetch(&cb, "/metrics").await).unwrap(),
        "received",
    );
    assert!(
        sent > 0 && sent == received,
        "sent {sent}, received {received}"
    );
}

/// Shard `shard` of `c`'s manifest in the content form (`result` of the answer).
async fn files_manifest(client: &snapfs::client::Client, c: &str, shard: u32) -> Value {
    let path = format!("/collections/{c}/shards/{shard}/snapshot/partial/manifest?format=files");
    let (status, body) = call(client, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
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
async fn create_partial(
    client: &snapfs::client::Client,
    c: &str,
    shard: u32,
    manifest: &Value,
) -> Option<Vec<u8>> {
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
        serde_json::from_slice(&std::fs::read(partial_fixture("base.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest(&client, "p", 0).await,
        base,
        "the restored shard's manifest is Qdrant's"
    );

    // A full snapshot is refused by the partial endpoint, and changes nothing.
    let (status, body) = upload(
        &daemon,
        "/collections/p/shards/0/snapshot/partial/recover",
        &partial_fixture("base.snapshot"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("full shard snapshot"), "{body}");
    assert_eq!(
        manifest(&client, "p", 0).await,
        base,
        "the refusal changed nothing"
    );
    // A collection refuses a partial snapshot, and changes nothing.
    let (status, body) = upload(
        &daemon,
        "/collections/p/snapshots/upload",
        &partial_fixture("partial.snapshot"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("partial snapshot"), "{body}");
    assert_eq!(
        manifest(&client, "p", 0).await,
        base,
        "refusals changed nothing"
    );

    // A shard takes a partial snapshot by its snapshot upload too (as through its
    // recover/ directory): the content tells a partial one from a full one.
    let (status, body) = upload(
        &daemon,
        "/collections/p/shards/0/snapshots/upload",
        &partial_fixture("partial.snapshot"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], true);
    assert!(by_id(&all_points(&client, "p").await) == expected_points());

    // The stale manifest gets a diff; the current one 304.
    assert!(
        create_partial(&client, "p", 0, &base)
            .await
            .is_some_and(|b| !b.is_empty())
    );
    let now = manifest(&client, "p", 0).await;
    assert!(create_partial(&client, "p", 0, &now).await.is_none());
    daemon.assert_no_staging_leftovers();
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
    m.daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_edge_shard_mirrors_a_snapfs_shard_with_partial_snapshots() {
    let python = python_venv();
    let (daemon, url) = peer_daemon();
    let client = daemon.client();
    seeded_collection(&client, "edge", 1, 300).await;
    let work = tempfile::tempdir().unwrap();
    python_check(
        &python,
        "edge_partial_check.py",
        &[
            ("SNAPFS_URL", url.as_ref()),
            ("SNAPFS_API_KEY", PEER_KEY.as_ref()),
            ("SNAPFS_WORK", work.path().as_ref()),
        ],
        "all checks passed",
        &daemon,
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
    let content = call(
        &client,
        Method::GET,
        "/collections/e/shards/0/snapshot/partial/manifest?format=files",
        None,
    )
    .await
    .1["result"]
        .clone();

    upsert(
        &client,
        "e",
        (350..500).map(|i| point(i * 2, 8)).collect(),
        true,
    )
    .await;
    let (status, body) = delete_points(&client, "e", json!({"points": [0, 1, 2, 3]})).await;
    assert_eq!(status, 200, "{body}");

    let known_json = serde_json::to_value(&known).unwrap();
    let partial = create_partial(&client, "e", 0, &known_json)
        .await
        .expect("a diff");
    gnu_tar_reads(&partial);
    assert!(partial.len() < old.len() * 2);
    let by_content = create_partial(&client, "e", 0, &content)
        .await
        .expect("a diff");
    gnu_tar_reads(&by_content);

    // qdrant-edge's own apply, on the older shard.
    let partial_file = work.path().join("partial.snapshot");
    std::fs::write(&partial_file, &partial).unwrap();
    let unpacked = work.path().join("unpacked");
    qdrant_edge::EdgeShard::unpack_snapshot(&partial_file, &unpacked).unwrap();
    let theirs =
        qdrant_edge::internal::SnapshotManifest::load_from_snapshot(&unpacked, None).unwrap();
    drop(engine);
    let engine =
        qdrant_edge::EdgeShard::recover_partial_snapshot(&shard_dir, &known, &unpacked, &theirs)
            .unwrap();
    let snapfs_now = by_id(&all_points(&client, "e").await);
    assert_eq!(snapfs_now.len(), 400 + 150 - 4);
    let applied = engine_payloads(&engine);
    let want: std::collections::BTreeMap<String, Value> = snapfs_now
        .iter()
        .map(|(id, p)| (id.clone(), p["payload"].clone()))
        .collect();
    assert!(applied == want, "the engine's apply gives snapfs's points");
}

/// Every query answers while a pull runs (receiving, switching); updates are
/// acknowledged meanwhile and applied on the new state.
#[tokio::test(flavor = "multi_thread")]
async fn reads_answer_and_writes_are_kept_while_a_pull_is_applied() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    seeded_collection(&ca, "m", 1, 3000).await;
    seeded_collection(&cb, "m", 1, 10).await;
    let proxy = GateProxy::start(&a_url);
    proxy.hold();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (cb, stop) = (cb.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, body) = call(
                    &cb,
                    Method::POST,
                    "/collections/m/points/query",
                    Some(json!({"query": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "limit": 3})),
                )
                .await;
                if status == 200 {
                    answered += 1;
                } else {
                    failed.push(body);
                }
            }
            (answered, failed)
        })
    };
    let pulling = {
        let (cb, url) = (cb.clone(), proxy.url.clone());
        tokio::spawn(async move { pull(&cb, "m", 0, &url).await })
    };
    for _ in 0..500 {
        if proxy.is_holding() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(proxy.is_holding(), "the archive is held midway");
    // The pull shows as a restore under way, and counts as one (once B has taken in
    // the bytes the proxy let through: under load that can lag the hold a little).
    let mut info = Value::Null;
    for _ in 0..250 {
        info = call(&cb, Method::GET, "/collections/m", None).await.1;
        if info["result"]["snapfs"]["restore"]["bytes_received"].as_u64() > Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let restore = &info["result"]["snapfs"]["restore"];
    assert_eq!(restore["of"], "shard 0 (partial)", "{info}");
    assert!(restore["bytes_received"].as_u64().unwrap() > 0, "{info}");
    let metrics = String::from_utf8(fetch(&cb, "/metrics").await).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"snapshot_recovery_running{id="m"} 1"#),
        "{metrics}"
    );
    // Acknowledged while the pull runs: one at once, one once applied.
    upsert(&cb, "m", vec![point(900_001, 8)], false).await;
    let waiting = {
        let cb = cb.clone();
        tokio::spawn(async move { upsert(&cb, "m", vec![point(900_002, 8)], true).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "wait=true is answered once applied, after the switch"
    );
    proxy.release();
    let (status, body) = pulling.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], true, "{body}");
    waiting.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (answered, failed) = reader.await.unwrap();
    assert!(
        failed.is_empty(),
        "reads failed during the pull: {failed:?}"
    );
    assert!(answered > 5, "{answered} reads");

    let mut want = by_id(&all_points(&ca, "m").await);
    want.extend(by_id(&[point(900_001, 8), point(900_002, 8)]));
    let got = by_id(&all_points(&cb, "m").await);
    assert_eq!(got.len(), want.len());
    assert!(got.keys().eq(want.keys()), "A's points and both updates");
    b.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pull_gives_up_and_changes_nothing() {
    let (a, a_url) = peer_daemon();
    let b = Daemon::start_with_env(&[("SNAPFS__STORAGE__TRANSFER_STALL_SECS", "1")]);
    let (ca, cb) = (a.client(), b.client());
    seeded_collection(&ca, "s", 1, 3000).await;
    seeded_collection(&cb, "s", 1, 10).await;
    let before = by_id(&all_points(&cb, "s").await);
    let proxy = GateProxy::start(&a_url);
    proxy.hold();
    let (status, body) = pull(&cb, "s", 0, &proxy.url).await;
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("stalled"), "{body}");
    assert!(by_id(&all_points(&cb, "s").await) == before);
    // The abandoned intake's staging goes once its unpacker has stopped.
    b.wait_no_staging_leftovers();
    proxy.release();
    let (status, body) = pull(&cb, "s", 0, &proxy.url).await;
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&cb, "s").await) == by_id(&all_points(&ca, "s").await));
}

/// `kill -9` at each step of an apply: the next start finds the old shard or the
/// new one, whole, with nothing left over.
#[cfg(feature = "failpoints")] // SNAPFS_CRASH_AT / SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_any_step_of_an_apply_leaves_old_or_new() {
    let (a, a_url) = peer_daemon();
    let ca = a.client();
    seeded_collection(&ca, "k", 1, 500).await;
    let new_points = by_id(&all_points(&ca, "k").await);
    for (crash_at, new_state) in [
        ("partial-staged", false),
        ("shard-restore-before-switch", false),
        // Renamed into place but not yet opened by the engine: not committed.
        ("shard-restore-after-switch", false),
        ("shard-switch-opened", false),
        ("shard-switch-committed", true),
    ] {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        let b = Daemon::start_in(&data, &[], &[("SNAPFS_CRASH_AT", crash_at)]);
        let cb = b.client();
        seeded_collection(&cb, "k", 1, 20).await;
        upsert(&cb, "k", vec![point(70_000, 8)], true).await;
        let old_points = by_id(&all_points(&cb, "k").await);
        let answered = cb
            .raw(
                Method::POST,
                "/collections/k/shards/0/snapshot/partial/recover_from",
                Some(&json!({"peer_url": a_url, "api_key": PEER_KEY})),
            )
            .await;
        assert!(
            answered.is_err(),
            "{crash_at}: should have crashed: {answered:?}"
        );
        let mut crashed = b;
        assert!(!crashed.wait_exit().success());
        assert!(
            crashed
                .log()
                .contains(&format!("SNAPFS_CRASH_AT={crash_at}"))
        );

        let b = Daemon::start_in(&data, &[], &[]);
        let cb = b.client();
        let now = by_id(&all_points(&cb, "k").await);
        let want = if new_state { &new_points } else { &old_points };
        assert!(
            now == *want,
            "{crash_at}: {} points, want {}",
            now.len(),
            want.len()
        );
        assert!(
            b.staging_leftovers().is_empty(),
            "{crash_at}: {:?}",
            b.staging_leftovers()
        );
        upsert(&cb, "k", vec![point(80_000, 8)], true).await;
        assert_eq!(
            count(&cb, "k").await,
            want.len() as u64 + 1,
            "{crash_at}: takes writes"
        );
    }
}

/// The fixture's partial archive unpacked by GNU tar, changed by `edit`, packed
/// again (holes kept).
fn edited_partial(
    work: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&std::path::Path),
) -> std::path::PathBuf {
    let dir = work.join(name);
    std::fs::create_dir(&dir).unwrap();
    run_ok(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(partial_fixture("partial.snapshot"))
            .arg("-C")
            .arg(&dir),
    );
    edit(&dir);
    let out = work.join(format!("{name}.snapshot"));
    run_ok(
        std::process::Command::new("tar")
            .arg("--sparse")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&dir)
            .args(["segments", "wal", "replica_state.json", "shard_config.json"]),
    );
    out
}

/// The first segment's manifest in an unpacked partial archive.
fn first_segment_manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    segments[0].join("files/segment_manifest.json")
}

fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_partials_are_refused_with_words_and_change_nothing() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    qdrant_base(&daemon).await;
    let base_manifest = manifest(&client, "p", 0).await;
    let base_points = by_id(&all_points(&client, "p").await);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let good = std::fs::read(partial_fixture("partial.snapshot")).unwrap();
    let truncated = dir.join("truncated.snapshot");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let cases: Vec<(&str, std::path::PathBuf, &str, u16, &str)> = vec![
        (
            "segment manifest of another segment",
            edited_partial(dir, "other-id", |d| {
                edit_json(&first_segment_manifest(d), |m| {
                    m["segment_id"] = json!("00000000-0000-0000-0000-000000000000")
                })
            }),
            "",
            400,
            "holds the manifest of segment",
        ),
        (
            "a file newer than its segment",
            edited_partial(dir, "newer", |d| {
                edit_json(&first_segment_manifest(d), |m| {
                    let version = m["segment_version"].as_u64().unwrap();
                    let file = m["file_versions"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .next()
                        .unwrap()
                        .clone();
                    m["file_versions"][file] = json!(version + 5);
                })
            }),
            "",
            400,
            "newer than its segment",
        ),
        (
            "a segment without its manifest",
            edited_partial(dir, "no-manifest", |d| {
                std::fs::remove_file(first_segment_manifest(d)).unwrap()
            }),
            "",
            400,
            "has no segment manifest",
        ),
        (
            "an entry escaping the shard",
            python_tar(
                dir,
                "escape.tar",
                "add('segments/x/files/../../../../evil')",
            ),
            "",
            400,
            "`..`",
        ),
        ("truncated", truncated, "", 400, ""),
        (
            "wrong checksum",
            partial_fixture("partial.snapshot"),
            "?checksum=0000000000000000000000000000000000000000000000000000000000000000",
            400,
            "Checksum mismatch",
        ),
        (
            "unknown shard",
            partial_fixture("partial.snapshot"),
            "",
            404,
            "Shard 3",
        ),
    ];
    for (what, file, query, status_wanted, words) in cases {
        let shard = if what == "unknown shard" { 3 } else { 0 };
        let (status, body) = upload(
            &daemon,
            &format!("/collections/p/shards/{shard}/snapshot/partial/recover{query}"),
            &file,
        );
        assert_eq!(status, status_wanted, "{what}: {body}");
        assert!(error_of(&body).contains(words), "{what}: {body}");
        assert_eq!(
            manifest(&client, "p", 0).await,
            base_manifest,
            "{what}: shard unchanged"
        );
        assert!(
            by_id(&all_points(&client, "p").await) == base_points,
            "{what}: points unchanged"
        );
        assert!(
            daemon.staging_leftovers().is_empty(),
            "{what}: {:?}",
            daemon.staging_leftovers()
        );
    }

    // Manifests that are no manifests, and scopes that do not exist.
    for (body, words) in [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (
            r#"{"x": {"segment_id": "y", "segment_version": 1, "file_versions": {}}}"#,
            "holds the manifest",
        ),
        (
            r#"{"files": [{"path": "../x", "hash": "00", "size": 1}]}"#,
            "`..`",
        ),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&daemon.socket)
            .args([
                "-H",
                "content-type: application/json",
                "-d",
                body,
                "-w",
                "\n%{http_code}",
            ])
            .arg("http://localhost/collections/p/shards/0/snapshot/partial/create")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (answer, code) = text.rsplit_once('\n').unwrap();
        assert_eq!(code, "400", "{body}: {answer}");
        assert!(answer.contains(words), "{body}: {answer}");
    }
    for path in [
        "/collections/p/shards/3/snapshot/partial/manifest",
        "/collections/nope/shards/0/snapshot/partial/manifest",
    ] {
        let (status, body) = call(&client, Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(manifest(&client, "p", 0).await, base_manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_from_peers_that_cannot_serve_fail_with_words() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    seeded_collection(&ca, "v", 1, 100).await;
    seeded_collection(&cb, "v", 1, 10).await;
    create_collection(&ca, "other", vectors(4, "Dot")).await;
    create_collection(&cb, "other", vectors(8, "Cosine")).await;
    create_collection(&cb, "only-here", vectors(8, "Cosine")).await;
    let before = by_id(&all_points(&cb, "v").await);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (
            "v",
            json!({"peer_url": closed}),
            502,
            "cannot reach the peer",
        ),
        ("v", json!({"peer_url": a_url}), 502, "needs an API key"),
        (
            "v",
            json!({"peer_url": a_url, "api_key": "wrong"}),
            502,
            "refused the API key",
        ),
        (
            "only-here",
            json!({"peer_url": a_url, "api_key": PEER_KEY}),
            502,
            "has no collection",
        ),
        (
            "other",
            json!({"peer_url": a_url, "api_key": PEER_KEY}),
            400,
            "other vectors",
        ),
        (
            "v",
            json!({"peer_url": "ftp://x"}),
            400,
            "http:// or https://",
        ),
    ];
    for (collection, request, status_wanted, words) in cases {
        let (status, body) = call(
            &cb,
            Method::POST,
            &format!("/collections/{collection}/shards/0/snapshot/partial/recover_from"),
            Some(request.clone()),
        )
        .await;
        assert_eq!(status, status_wanted, "{request}: {body}");
        assert!(error_of(&body).contains(words), "{request}: {body}");
    }
    assert!(by_id(&all_points(&cb, "v").await) == before);
    b.assert_no_staging_leftovers();
    // Qdrant's peers build the URL with a doubled slash: it still finds the path.
    let (status, body) = pull(&cb, "v", 0, &format!("{a_url}/")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&ca, Method::GET, "//collections//v", None).await;
    assert_eq!(status, 200);
}

/// A content-form partial made for another receiver is refused: files it means to
/// keep are not here (another shard's segments).
#[tokio::test(flavor = "multi_thread")]
async fn a_content_partial_for_another_state_does_not_apply() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "c", 1, 200).await;
    seeded_collection(&client, "d", 1, 50).await;
    let old = files_manifest(&client, "c", 0).await;
    upsert_ids(&client, "c", 200..260, 8).await;
    let diff = create_partial(&client, "c", 0, &old).await.expect("a diff");
    let before = by_id(&all_points(&client, "d").await);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("diff.snapshot");
    std::fs::write(&file, diff).unwrap();
    let (status, body) = upload(
        &daemon,
        "/collections/d/shards/0/snapshot/partial/recover",
        &file,
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("another state"), "{body}");
    assert!(by_id(&all_points(&client, "d").await) == before);
    // Where it was made for, it applies.
    let (status, body) = upload(
        &daemon,
        "/collections/c/shards/0/snapshot/partial/recover",
        &file,
    );
    assert_eq!(status, 200, "{body}");
    daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mount_shows_each_shards_manifest() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    seeded_collection(&client, "mf", 2, 300).await;
    for shard in 0..2 {
        let path = m.path(&format!("collections/mf/shards/{shard}/manifest.json"));
        let meta = std::fs::metadata(&path).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(meta.len(), text.len() as u64, "exact size before reading");
        let shown: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(shown, manifest(&client, "mf", shard).await);
        assert!(!shown.as_object().unwrap().is_empty());
    }
    let listed = std::fs::read_dir(m.path("collections/mf/shards/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(listed.contains(&"manifest.json".to_string()), "{listed:?}");
    // A change shows at once.
    let before = std::fs::read(m.path("collections/mf/shards/0/manifest.json")).unwrap();
    let (status, body) = delete_points(
        &client,
        "mf",
        json!({"filter": {"must": [{"key": "tag", "match": {"value": "t1"}}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = std::fs::read(m.path("collections/mf/shards/0/manifest.json")).unwrap();
    assert_ne!(before, after);
}

/// Files the receiver has in another version go as deltas (the bytes it lacks, the
/// rest copied from its own files); one that does not assemble into the file the
/// manifest describes is refused.
#[tokio::test(flavor = "multi_thread")]
async fn changed_files_travel_as_deltas_against_the_receivers_blocks() {
    let (a, _) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    for client in [&ca, &cb] {
        create_collection(client, "pt", vectors(256, "Dot")).await;
    }
    upsert_ids(&ca, "pt", 0..2000, 256).await;
    // B gets A's state whole (its manifest is empty), then A changes a little.
    let everything = create_partial(&ca, "pt", 0, &json!({"files": []}))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first.snapshot");
    std::fs::write(&first, &everything).unwrap();
    let (status, body) = upload(
        &b,
        "/collections/pt/shards/0/snapshot/partial/recover",
        &first,
    );
    assert_eq!(status, 200, "{body}");
    let known = files_manifest(&cb, "pt", 0).await;
    assert!(known["block_size"].as_u64().is_some(), "{known}");
    upsert(
        &ca,
        "pt",
        (0..2000)
            .step_by(100)
            .map(|i| point(i + 5000, 256))
            .collect(),
        true,
    )
    .await;

    let diff = create_partial(&ca, "pt", 0, &known).await.expect("a diff");
    // The same state and manifest give the same bytes; any range of them can be read.
    assert!(create_partial(&ca, "pt", 0, &known).await.unwrap() == diff);
    let manifest_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(manifest_file.path(), serde_json::to_vec(&known).unwrap()).unwrap();
    let ranged = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&a.socket)
        .args([
            "-H",
            "range: bytes=1000-2999",
            "-H",
            "content-type: application/json",
            "--data-binary",
        ])
        .arg(format!("@{}", manifest_file.path().display()))
        .arg("http://localhost/collections/pt/shards/0/snapshot/partial/create")
        .output()
        .unwrap();
    assert!(
        ranged.stdout == diff[1000..3000],
        "a range of the partial: {} bytes, {}",
        ranged.stdout.len(),
        String::from_utf8_lossy(&ranged.stdout[..ranged.stdout.len().min(300)])
    );
    let full = fetch(&ca, "/collections/pt/shards/0/snapshot").await;
    assert!(
        diff.len() * 5 < full.len(),
        "diff {} of full {}",
        diff.len(),
        full.len()
    );
    gnu_tar_reads(&diff);
    let mut archive = tar::Archive::new(&diff[..]);
    let mut manifest = Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == "snapfs-manifest.json" {
            manifest = serde_json::from_reader(&mut entry).unwrap();
        }
    }
    let patched: Vec<&Value> = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("copies").is_some())
        .collect();
    assert!(
        !patched.is_empty(),
        "no file assembled from copies in {manifest}"
    );

    // A patch with a flipped byte: refused, B unchanged.
    let flipped = work.path().join("flipped.snapshot");
    std::fs::write(&flipped, &diff).unwrap();
    let script = format!(
        "import tarfile\nt = tarfile.open({path:?})\nm = [m for m in t.getmembers() if m.name == {name:?}][0]\nt.close()\nf = open({path:?}, 'r+b'); f.seek(m.offset_data); b = f.read(1); f.seek(m.offset_data); f.write(bytes([b[0] ^ 1])); f.close()",
        path = flipped.to_str().unwrap(),
        name = patched[0]["path"].as_str().unwrap()
    );
    run_ok(std::process::Command::new("python3").arg("-c").arg(script));
    let before = by_id(&all_points(&cb, "pt").await);
    let (status, body) = upload(
        &b,
        "/collections/pt/shards/0/snapshot/partial/recover",
        &flipped,
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("checksum mismatch"), "{body}");
    assert!(by_id(&all_points(&cb, "pt").await) == before);
    b.assert_no_staging_leftovers();

    let good = work.path().join("diff.snapshot");
    std::fs::write(&good, &diff).unwrap();
    let (status, body) = upload(
        &b,
        "/collections/pt/shards/0/snapshot/partial/recover",
        &good,
    );
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&cb, "pt").await) == by_id(&all_points(&ca, "pt").await));
    let now = files_manifest(&cb, "pt", 0).await;
    assert!(
        create_partial(&ca, "pt", 0, &now).await.is_none(),
        "in step: 304"
    );
}

/// Qdrant's form between two daemons (what a Qdrant server would be sent): the
/// same end state, then nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_in_qdrants_form_gives_the_peers_state() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    seeded_collection(&ca, "q", 1, 800).await;
    seeded_collection(&cb, "q", 1, 30).await;
    let pull_versions = |cb: snapfs::client::Client, url: String| async move {
        call(
            &cb,
            Method::POST,
            "/collections/q/shards/0/snapshot/partial/recover_from",
            Some(json!({"peer_url": url, "api_key": PEER_KEY, "manifest": "versions"})),
        )
        .await
    };
    let (status, body) = pull_versions(cb.clone(), a_url.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["snapfs"]["form"], "versions", "{body}");
    assert!(by_id(&all_points(&cb, "q").await) == by_id(&all_points(&ca, "q").await));
    upsert_ids(&ca, "q", 790..900, 8).await;
    let (status, body) = pull_versions(cb.clone(), a_url.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&cb, "q").await) == by_id(&all_points(&ca, "q").await));
    let (status, body) = pull_versions(cb.clone(), a_url.clone()).await;
    assert_eq!(
        (status, body["result"].clone()),
        (200, json!(false)),
        "{body}"
    );
    let (status, body) = call(
        &cb,
        Method::POST,
        "/collections/q/shards/0/snapshot/partial/recover_from",
        Some(json!({"peer_url": a_url, "manifest": "sideways"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    drop(b);
}

/// A reader of a live snapshot of the old state keeps its bytes across an apply
/// whose new shard shares (hard links) and then writes files of the old one.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_live_snapshot_keeps_its_bytes_across_an_apply() {
    let (a, a_url) = peer_daemon();
    let m = MountedDaemon::start(&[]);
    let (ca, cb) = (a.client(), m.client());
    seeded_collection(&ca, "o", 1, 1500).await;
    seeded_collection(&cb, "o", 1, 1000).await;
    // B mirrors A once; then A changes and B's live file is opened before the next pull.
    let (status, body) = pull(&cb, "o", 0, &a_url).await;
    assert_eq!(status, 200, "{body}");
    upsert(
        &ca,
        "o",
        (0..1500).step_by(10).map(|i| point(i + 3, 8)).collect(),
        true,
    )
    .await;
    use std::io::Read;
    let live = m.path("collections/o/shards/0/o-shard-0.snapshot");
    let mut reader = std::fs::File::open(&live).unwrap();
    let mut bytes = vec![0u8; 4096];
    reader.read_exact(&mut bytes).unwrap();
    // While it is open: a pull switches B's shard (updates and reads go on).
    let (status, body) = pull(&cb, "o", 0, &a_url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], true);
    upsert_ids(&cb, "o", 5000..5200, 8).await;
    reader.read_to_end(&mut bytes).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("old.snapshot");
    std::fs::write(&file, &bytes).unwrap();
    // Every file's digest in the embedded manifest still matches: no byte changed.
    run_ok(std::process::Command::new(BIN).arg("verify").arg(&file));
    assert!(
        by_id(&all_points(&cb, "o").await).len() == by_id(&all_points(&ca, "o").await).len() + 200
    );
}

/// A second partial apply or pull of a shard while one runs is refused at once,
/// as Qdrant answers it.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_of_a_busy_shard_is_503_already_in_progress() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    seeded_collection(&ca, "busy", 1, 3000).await;
    seeded_collection(&cb, "busy", 1, 10).await;
    let proxy = GateProxy::start(&a_url);
    proxy.hold();
    let pulling = {
        let (cb, url) = (cb.clone(), proxy.url.clone());
        tokio::spawn(async move { pull(&cb, "busy", 0, &url).await })
    };
    for _ in 0..500 {
        if proxy.is_holding() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(proxy.is_holding(), "the first pull is held midway");
    let (status, body) = pull(&cb, "busy", 0, &a_url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "already_in_progress", "{body}");
    let (status, body) = upload(
        &b,
        "/collections/busy/shards/0/snapshot/partial/recover",
        &partial_fixture("partial.snapshot"),
    );
    assert_eq!(status, 503, "{body}");
    proxy.release();
    let (status, body) = pulling.await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_read_only_the_shards_own_files() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "c", 1, 200).await;
    let before = by_id(&all_points(&client, "c").await);
    let files = files_manifest(&client, "c", 0).await["files"]
        .as_array()
        .unwrap()
        .clone();
    // The file to assemble: one of a segment's, small but not empty.
    let target = files
        .iter()
        .find(|f| {
            f["path"].as_str().unwrap().starts_with("segments/")
                && (64..1 << 20).contains(&f["size"].as_u64().unwrap())
        })
        .unwrap()
        .clone();
    let target_path = target["path"].as_str().unwrap().to_string();
    let size = target["size"].as_u64().unwrap();
    let segment = target_path.split('/').nth(1).unwrap().to_string();
    // Inside the shard's own directory: a FIFO (opening it would wait for a
    // writer) and a link to a host file.
    let segment_dir = daemon
        .data_dir
        .join("storage/collections/c/0/segments")
        .join(&segment);
    assert!(segment_dir.is_dir(), "{}", segment_dir.display());
    run_ok(std::process::Command::new("mkfifo").arg(segment_dir.join("fifo")));
    std::os::unix::fs::symlink("/etc/passwd", segment_dir.join("passwd-link")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, b"0123456789").unwrap();
    let archive = |source: &str| {
        let mut entries: Vec<Value> = files
            .iter()
            .filter(|f| f["path"] != target["path"])
            .map(|f| json!({"path": f["path"], "size": f["size"], "sha256": f["hash"]}))
            .collect();
        entries.push(json!({
            "path": target_path, "size": size, "sha256": "0".repeat(64),
            "copies": [[0, source, 0, 8]],
        }));
        let manifest =
            json!({"format": "snapfs-manifest", "version": 1, "partial": true, "entries": entries});
        tar_bytes(&[
            file_entry(&target_path, &vec![0u8; size as usize]),
            file_entry(
                "snapfs-manifest.json",
                &serde_json::to_vec(&manifest).unwrap(),
            ),
        ])
    };
    let secret_path = secret.display().to_string();
    let cases = [
        ("/etc/passwd".to_string(), "a copy's source is refused"),
        (
            "/etc/no-such-file".to_string(),
            "a copy's source is refused",
        ),
        (secret_path.clone(), "a copy's source is refused"),
        (
            "../../../../../../../../etc/shadow".to_string(),
            "a copy's source is refused",
        ),
        (
            format!("segments/{segment}/files/../../../../etc/passwd"),
            "a copy's source is refused",
        ),
        (
            format!("segments/{segment}/files/fifo"),
            "which this shard does not have",
        ),
        (
            format!("segments/{segment}/files/passwd-link"),
            "which this shard does not have",
        ),
        ("etc/passwd".to_string(), "which this shard does not have"),
        ("etc/hostname".to_string(), "which this shard does not have"),
    ];
    let mut answers = Vec::new();
    for (source, words) in &cases {
        let file = work.path().join("partial.snapshot");
        std::fs::write(&file, archive(source)).unwrap();
        let (status, body) = upload(
            &daemon,
            "/collections/c/shards/0/snapshot/partial/recover",
            &file,
        );
        assert_eq!(status, 400, "{source}: {body}");
        let message = error_of(&body);
        assert!(message.contains(words), "{source}: {message}");
        // Nothing about the file named: not its size, not whether it exists.
        for leak in ["past the end", "assemble", "checksum", "0123456789"] {
            assert!(!message.contains(leak), "{source}: {message}");
        }
        answers.push(message.replace(source.as_str(), "<source>"));
        assert!(by_id(&all_points(&client, "c").await) == before, "{source}");
        assert!(
            daemon.staging_leftovers().is_empty(),
            "{source}: {:?}",
            daemon.staging_leftovers()
        );
    }
    // A right and a wrong guess about a host file get the same answer.
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[7], answers[8]);
    // The shard still serves and takes writes.
    upsert(&client, "c", vec![point(5000, 8)], true).await;
    assert_eq!(count(&client, "c").await, before.len() as u64 + 1);
}

#[cfg(feature = "failpoints")] // SNAPFS_CRASH_AT / SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn an_apply_cut_short_leaves_the_old_shards_files_untouched() {
    let (a, a_url) = peer_daemon();
    let ca = a.client();
    seeded_collection(&ca, "k", 1, 500).await;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // B mirrors A: after this pull most of its files are the same as A's.
    let mut b = Daemon::start_in(&data, &[], &[]);
    let cb = b.client();
    seeded_collection(&cb, "k", 1, 20).await;
    let (status, body) = pull(&cb, "k", 0, &a_url).await;
    assert_eq!(status, 200, "{body}");
    assert!(b.stop().success());
    // A moves on: new points, deleted ones.
    upsert_ids(&ca, "k", 500..600, 8).await;
    let (status, body) =
        delete_points(&ca, "k", json!({"points": (0..10).collect::<Vec<u64>>()})).await;
    assert_eq!(status, 200, "{body}");

    // The next pull stops once the new shard has opened in place, before it is
    // committed: the engine has written the new shard's files by then, and applied
    // on it the updates acknowledged while the pull ran (a delete of a point in a
    // segment both states have, and new points into the appendable one).
    let b = Daemon::start_in(&data, &[], &[("SNAPFS_CRASH_AT", "shard-switch-opened")]);
    let cb = b.client();
    let mut old_points = by_id(&all_points(&cb, "k").await);
    assert!(old_points.contains_key("100"), "B has A's point 100");
    let proxy = GateProxy::start(&a_url);
    proxy.hold();
    let pulling = {
        let (cb, url) = (cb.clone(), proxy.url.clone());
        tokio::spawn(async move {
            cb.raw(
                Method::POST,
                "/collections/k/shards/0/snapshot/partial/recover_from",
                Some(&json!({"peer_url": url, "api_key": PEER_KEY})),
            )
            .await
        })
    };
    for _ in 0..500 {
        if proxy.is_holding() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(proxy.is_holding(), "the archive is held midway");
    upsert(&cb, "k", vec![point(90_000, 8), point(90_001, 8)], false).await;
    let (status, body) = call(
        &cb,
        Method::POST,
        "/collections/k/points/delete?wait=false",
        Some(json!({"points": [100, 101]})),
    )
    .await;
    assert!(status == 200 || status == 202, "{body}");
    proxy.release();
    let answered = pulling.await.unwrap();
    assert!(answered.is_err(), "should have crashed: {answered:?}");
    let mut crashed = b;
    assert!(!crashed.wait_exit().success());
    // Acknowledged, so kept: the next start applies them on the old shard.
    assert!(old_points.remove("100").is_some() && old_points.remove("101").is_some());

    // The old shard, set aside for the switch, and the new one the engine has
    // opened (and written) share no file: what the new shard wrote is not in the
    // old one that the next start puts back.
    let collections = data.join("storage/collections");
    let aside = std::fs::read_dir(&collections)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".replaced-shard-")
        })
        .expect("the old shard set aside")
        .join("shard");
    let inodes = |dir: &std::path::Path| -> std::collections::BTreeMap<(u64, u64), String> {
        use std::os::unix::fs::MetadataExt;
        let mut found = std::collections::BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    pending.push(entry.path());
                } else {
                    found.insert((meta.dev(), meta.ino()), entry.path().display().to_string());
                }
            }
        }
        found
    };
    let old = inodes(&aside);
    let new = inodes(&collections.join("k/0"));
    assert!(
        old.len() > 5 && new.len() > 5,
        "{} and {} files",
        old.len(),
        new.len()
    );
    let shared: Vec<_> = old.keys().filter_map(|k| new.get(k)).collect();
    assert!(
        shared.is_empty(),
        "files shared by the old and the new shard: {shared:?}"
    );
    // The files the pull left unchanged are there in both, as copies.
    let names = |files: &std::collections::BTreeMap<(u64, u64), String>, root: &std::path::Path| {
        files
            .values()
            .map(|p| {
                p.strip_prefix(&root.display().to_string())
                    .unwrap()
                    .to_string()
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let kept = names(&old, &aside)
        .intersection(&names(&new, &collections.join("k/0")))
        .count();
    assert!(kept > 0, "no file kept from the old shard");

    // The next start puts the old shard back, whole.
    let b = Daemon::start_in(&data, &[], &[]);
    let cb = b.client();
    let mut now = by_id(&all_points(&cb, "k").await);
    for id in ["90000", "90001"] {
        assert!(now.remove(id).is_some(), "acknowledged point {id} is lost");
    }
    assert!(
        now == old_points,
        "the old shard, less the acknowledged deletes"
    );
    b.assert_no_staging_leftovers();
    // And a pull now brings A's state.
    let (status, body) = pull(&cb, "k", 0, &a_url).await;
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&cb, "k").await) == by_id(&all_points(&ca, "k").await));
}

/// The content manifest's files that differ between two daemons' shard (path, A's
/// size, B's size), for a failure message.
async fn differing_files(
    ca: &snapfs::client::Client,
    cb: &snapfs::client::Client,
    c: &str,
    shard: u32,
) -> Vec<String> {
    let ma = files_manifest(ca, c, shard).await;
    let mb = files_manifest(cb, c, shard).await;
    let of = |m: &Value| -> std::collections::BTreeMap<String, (String, u64)> {
        m["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                (
                    f["path"].as_str().unwrap_or_default().to_string(),
                    (
                        f["hash"].as_str().unwrap_or_default().to_string(),
                        f["size"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    };
    let (fa, fb) = (of(&ma), of(&mb));
    let mut paths: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| fa.get(*p) != fb.get(*p))
        .map(|p| {
            format!(
                "{p} (A: {:?}, B: {:?})",
                fa.get(p).map(|f| f.1),
                fb.get(p).map(|f| f.1)
            )
        })
        .collect()
}

/// After deletes, an open live stream and an optimizer run on the peer, pulls of a
/// shard converge: within a few rounds the peer answers 304 (`result: false`), and
/// keeps answering it after a pause with no write. (The engine's load repairs the
/// versions of points deleted in an appendable segment, so the receiver's file
/// differs from the sender's right after every apply: without `partial::loaded`,
/// every pull moved that file again.)
#[tokio::test(flavor = "multi_thread")]
async fn pulls_after_deletes_converge_to_not_modified() {
    let (a, a_url) = peer_daemon();
    let (b, _) = peer_daemon();
    let (ca, cb) = (a.client(), b.client());
    // As found: default optimizers, deletes in the appendable segments, no settling.
    let plain = json!({"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 2});
    // With an optimizer run on A between the changes and the pulls: indexed segments
    // are built, deletes land in them and in the appendable one.
    let optimized = json!({"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 2,
        "optimizers_config": {"indexing_threshold": 5, "default_segment_number": 1}});
    for (name, config, settle) in [("cv", plain, false), ("cvo", optimized, true)] {
        for client in [&ca, &cb] {
            create_collection(client, name, config.clone()).await;
        }
        upsert_ids(&ca, name, 0..3000, 8).await;
        if settle {
            wait_settled(&ca, name).await;
        }
        // A live stream of shard 0, then more points and deletes on A.
        let stream = fetch(&ca, &format!("/collections/{name}/shards/0/snapshot")).await;
        assert!(!stream.is_empty());
        upsert_ids(&ca, name, 3000..3300, 8).await;
        let (status, body) = delete_points(
            &ca,
            name,
            json!({"points": [1, 2, 3, 4, 5, 100, 200, 300, 3100, 3200]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if settle {
            wait_settled(&ca, name).await;
        }
        for shard in 0..2 {
            let (status, body) = pull(&cb, name, shard, &a_url).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["result"], true, "{body}");
        }
        for shard in 0..2 {
            converge(&ca, &cb, name, shard, &a_url).await;
        }
        // A change that leaves the rewritten file as it was on A (an index): A does
        // not send it, and B's file, as its load made it, stands for A's.
        let (status, body) = call(
            &ca,
            Method::PUT,
            &format!("/collections/{name}/index?wait=true"),
            Some(json!({"field_name": "tag", "field_schema": "keyword"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for shard in 0..2 {
            let (status, body) = pull(&cb, name, shard, &a_url).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["result"], true, "{body}");
            converge(&ca, &cb, name, shard, &a_url).await;
        }
        assert!(by_id(&all_points(&cb, name).await) == by_id(&all_points(&ca, name).await));
    }
    b.assert_no_staging_leftovers();
}

/// Pull shard `shard` until the peer answers `false`, at most 3 times; then a pull
/// after a pause is `false` again (nothing on either side rewrote a file).
async fn converge(
    ca: &snapfs::client::Client,
    cb: &snapfs::client::Client,
    c: &str,
    shard: u32,
    peer: &str,
) {
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (status, body) = pull(cb, c, shard, peer).await;
        assert_eq!(status, 200, "{body}");
        rounds.push(body["result"].clone());
        if body["result"] == false {
            break;
        }
    }
    assert_eq!(
        rounds.last(),
        Some(&json!(false)),
        "{c} shard {shard} does not converge ({rounds:?}); files that differ: {:?}",
        differing_files(ca, cb, c, shard).await
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (status, body) = pull(cb, c, shard, peer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        false,
        "{c} shard {shard} drifts apart with no write; files that differ: {:?}",
        differing_files(ca, cb, c, shard).await
    );
}
