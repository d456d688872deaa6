//! Streaming and stored snapshots through the real daemon: valid and deterministic
//! archives, random access, checksums, interop with the engine's own reader, and
//! consistency while writers run.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::Method;
use qdrant_edge::{EdgeShard, PointId, ScrollRequest, WithPayloadInterface, WithVector};
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// GNU tar lists and extracts it without a warning; Python's tarfile reads every member.
fn assert_tools_read(archive: &Path) -> PathBuf {
    let list = Command::new("tar")
        .arg("-tvf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        list.status.success() && list.stderr.is_empty(),
        "tar -tvf: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let out = archive.with_extension("extracted");
    std::fs::create_dir_all(&out).unwrap();
    let extract = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        extract.status.success() && extract.stderr.is_empty(),
        "tar -xf: {}",
        String::from_utf8_lossy(&extract.stderr)
    );
    let py = Command::new("python3")
        .arg("-c")
        .arg("import sys, tarfile\nt = tarfile.open(sys.argv[1])\nn = 0\nfor m in t.getmembers():\n    if m.isfile(): t.extractfile(m).read(); n += 1\nprint(n)")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        py.status.success() && py.stderr.is_empty(),
        "python tarfile: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    out
}

/// Every point of an engine shard directory: id → (payload, vector).
fn shard_points(dir: &Path) -> BTreeMap<PointId, (Value, Value)> {
    let shard = EdgeShard::load(dir, None)
        .unwrap_or_else(|e| panic!("engine cannot load {}: {e}", dir.display()));
    let mut request = ScrollRequest::new();
    request.limit = Some(100_000);
    request.with_payload = Some(WithPayloadInterface::Bool(true));
    request.with_vector = WithVector::Bool(true);
    let (records, _) = shard.scroll(request).unwrap();
    records
        .into_iter()
        .map(|r| {
            (
                r.id,
                (
                    serde_json::to_value(&r.payload).unwrap(),
                    dense_json(r.vector),
                ),
            )
        })
        .collect()
}

fn dense_json(vector: Option<qdrant_edge::VectorStructInternal>) -> Value {
    use qdrant_edge::{VectorInternal, VectorStructInternal};
    match vector {
        Some(VectorStructInternal::Single(v)) => json!(v),
        Some(VectorStructInternal::Named(named)) => match named.get("") {
            Some(VectorInternal::Dense(v)) => json!(v),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

async fn setup(client: &Client, name: &str, shards: u32, points: u64) {
    create_collection(client, name, json!({"vectors": {"size": 8, "distance": "Dot"}, "shard_number": shards, "wal_config": {"wal_capacity_mb": 1}})).await;
    upsert_ids(client, name, 0..points, 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shard_stream_is_a_valid_tar_the_engine_loads() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 2, 400).await;
    let work = tempfile::tempdir().unwrap();
    let mut seen = BTreeSet::new();
    for shard in 0..2u32 {
        let bytes = fetch(
            &client,
            &format!("/collections/docs/shards/{shard}/snapshot"),
        )
        .await;
        let archive = write(work.path(), &format!("shard-{shard}.tar"), &bytes);
        let extracted = assert_tools_read(&archive);
        assert!(
            extracted.join("replica_state.json").exists()
                && extracted.join("shard_config.json").exists()
        );
        assert!(extracted.join("wal").is_dir());
        // The engine's own snapshot reader, then its loader.
        let unpacked = work.path().join(format!("unpacked-{shard}"));
        EdgeShard::unpack_snapshot(&archive, &unpacked).unwrap();
        let points = shard_points(&unpacked);
        let router = snapfs::storage::router::ShardRouter::new(2);
        assert!(!points.is_empty());
        for (id, (payload, vector)) in &points {
            assert_eq!(router.shard_for(id), shard);
            let n = match id {
                PointId::NumId(n) => *n,
                PointId::Uuid(_) => unreachable!(),
            };
            let source = point(n, 8);
            assert_eq!(payload, &source["payload"], "payload of {n}");
            let vector: Vec<f32> = serde_json::from_value(vector.clone()).unwrap();
            let expected: Vec<f32> = serde_json::from_value(source["vector"].clone()).unwrap();
            assert_eq!(vector, expected, "vector of {n}");
            seen.insert(n);
        }
        // Unpacked by plain GNU tar, once segments are back in the engine's layout, it loads too.
        snapfs::snapshot::segment_layout::normalize_segments(&extracted).unwrap();
        assert_eq!(shard_points(&extracted).len(), points.len());
    }
    assert_eq!(
        seen,
        (0..400).collect::<BTreeSet<u64>>(),
        "the two shards hold every point once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sparse_files_stay_small() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "small", 1, 300).await;
    let bytes = fetch(&client, "/collections/small/shards/0/snapshot").await;
    let apparent: u64 = walk_sizes(&daemon.data_dir.join("storage/collections/small/0"));
    assert!(
        apparent > 60 << 20,
        "the engine preallocates: {apparent} bytes apparent"
    );
    assert!(
        (bytes.len() as u64) < 4 << 20,
        "snapshot of 300 points is {} bytes; holes must not be streamed",
        bytes.len()
    );
}

fn walk_sizes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk_sizes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn same_state_same_bytes_also_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = {
        let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
        let client = daemon.client();
        setup(&client, "det", 3, 500).await;
        wait_settled(&client, "det").await;
        let first = create_stored(&client, "/collections/det/snapshots").await;
        let second = create_stored(&client, "/collections/det/snapshots").await;
        assert_ne!(
            first["name"], second["name"],
            "two snapshots in one second get distinct names"
        );
        assert!(daemon.stop().success());
        (first, second)
    };
    assert_eq!(
        first["checksum"], second["checksum"],
        "unchanged state, byte-identical archives"
    );
    assert_eq!(first["size"], second["size"]);

    // The engine may compact its files when it loads a shard (a real change of the
    // files, reported as a new last-change time); from then on restarts change nothing.
    let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
    let after_load = create_stored(&daemon.client(), "/collections/det/snapshots").await;
    assert!(daemon.stop().success());
    let daemon = Daemon::start_in(dir.path(), &[], &[]);
    let client = daemon.client();
    let third = create_stored(&client, "/collections/det/snapshots").await;
    assert_eq!(
        third["checksum"], after_load["checksum"],
        "a restart does not change the bytes"
    );
    let live = fetch(&client, "/collections/det/shards/1/snapshot").await;
    let live_again = fetch(&client, "/collections/det/shards/1/snapshot").await;
    assert!(live == live_again, "live shard stream is deterministic");

    upsert(&client, "det", vec![point(7, 8)], true).await;
    upsert(
        &client,
        "det",
        vec![json!({"id": 7, "vector": [1, 1, 1, 1, 1, 1, 1, 1], "payload": {"changed": true}})],
        true,
    )
    .await;
    let fourth = create_stored(&client, "/collections/det/snapshots").await;
    assert_ne!(
        fourth["checksum"], first["checksum"],
        "an upsert changes the bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_snapshots_checksums_ranges_and_delete() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 2, 300).await;
    setup(&client, "other", 1, 50).await;
    let work = tempfile::tempdir().unwrap();
    let bases = [
        "/collections/docs/snapshots",
        "/collections/docs/shards/1/snapshots",
        "/snapshots",
    ];
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for base in bases {
        let created = create_stored(&client, base).await;
        let name = created["name"].as_str().unwrap().to_string();
        let expected_prefix = match base {
            "/snapshots" => "full-snapshot-".to_string(),
            b if b.contains("shards") => "docs-shard-1-".to_string(),
            _ => "docs-".to_string(),
        };
        assert!(
            name.starts_with(&expected_prefix) && name.ends_with(".snapshot"),
            "{name}"
        );
        let (_, listed) = call(&client, Method::GET, base, None).await;
        assert!(
            listed["result"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == name.as_str()),
            "{listed}"
        );

        let bytes = fetch(&client, &format!("{base}/{name}")).await;
        assert_eq!(bytes.len() as u64, created["size"].as_u64().unwrap());
        let archive = write(work.path(), &name, &bytes);
        // The sidecar equals sha256sum of the download.
        let sidecar = std::fs::read_to_string(find_file(
            &daemon.data_dir.join("snapshots"),
            &format!("{name}.checksum"),
        ))
        .unwrap();
        assert_eq!(sidecar.len(), 64, "64 hex characters, no newline");
        let sum = Command::new("sha256sum").arg(&archive).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sum.stdout)
                .split_whitespace()
                .next()
                .unwrap(),
            sidecar
        );
        assert_eq!(created["checksum"], sidecar.as_str());
        assert_tools_read(&archive);

        // Random ranges equal the same slice of the full download.
        for _ in 0..25 {
            let start = next() % bytes.len() as u64;
            let len = 1 + next() % (300_000.min(bytes.len() as u64 - start));
            let (status, head, body) = fetch_range(
                &client,
                &format!("{base}/{name}"),
                &format!("bytes={start}-{}", start + len - 1),
            )
            .await;
            assert_eq!(status, 206, "{head}");
            assert!(
                head.to_lowercase().contains(&format!(
                    "content-range: bytes {start}-{}/{}",
                    start + len - 1,
                    bytes.len()
                )),
                "{head}"
            );
            assert!(
                body == bytes[start as usize..(start + len) as usize],
                "range {start}+{len} of {base}/{name}"
            );
        }
        let (status, _, _) = fetch_range(
            &client,
            &format!("{base}/{name}"),
            &format!("bytes={}-", bytes.len()),
        )
        .await;
        assert_eq!(status, 416);

        // verify: passes, and fails on one flipped byte.
        let ok = Command::new(BIN)
            .arg("verify")
            .arg(&archive)
            .arg("--checksum")
            .arg(&sidecar)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("files match their embedded SHA-256"));
        let mut flipped = bytes.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        let bad = write(work.path(), &format!("flipped-{name}"), &flipped);
        let out = Command::new(BIN)
            .arg("verify")
            .arg(&bad)
            .arg("--checksum")
            .arg(&sidecar)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("mismatch"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let (status, _) = call(&client, Method::DELETE, &format!("{base}/{name}"), None).await;
        assert_eq!(status, 200);
        assert!(find_file_opt(&daemon.data_dir.join("snapshots"), &name).is_none());
        assert!(
            find_file_opt(
                &daemon.data_dir.join("snapshots"),
                &format!("{name}.checksum")
            )
            .is_none()
        );
        let (status, _) = call(&client, Method::GET, &format!("{base}/{name}"), None).await;
        assert_eq!(status, 404);
    }
}

fn find_file_opt(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        if entry.file_name() == name {
            return Some(entry.path());
        }
        if entry.file_type().ok()?.is_dir()
            && let Some(found) = find_file_opt(&entry.path(), name)
        {
            return Some(found);
        }
    }
    None
}

fn find_file(dir: &Path, name: &str) -> PathBuf {
    find_file_opt(dir, name).unwrap_or_else(|| panic!("{name} not under {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn live_shard_stream_serves_any_range() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 1, 1000).await;
    wait_settled(&client, "docs").await;
    let full = fetch(&client, "/collections/docs/shards/0/snapshot").await;
    for (start, len) in [
        (0u64, 1u64),
        (511, 2),
        (4096, 100_000),
        (full.len() as u64 - 10, 10),
        (123_457, 777),
    ] {
        let (status, _, body) = fetch_range(
            &client,
            "/collections/docs/shards/0/snapshot",
            &format!("bytes={start}-{}", start + len - 1),
        )
        .await;
        assert_eq!(status, 206);
        assert!(
            body == full[start as usize..(start + len) as usize],
            "range {start}+{len}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_snapshot_nests_collection_archives() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "a", 1, 20).await;
    setup(&client, "b", 2, 30).await;
    // Different collections snapshot at the same time; so do two of one collection.
    let (sa, sb, sa2) = tokio::join!(
        create_stored(&client, "/collections/a/snapshots"),
        create_stored(&client, "/collections/b/snapshots"),
        create_stored(&client, "/collections/a/snapshots"),
    );
    assert!(
        sa["name"].as_str().unwrap().starts_with("a-")
            && sb["name"].as_str().unwrap().starts_with("b-")
    );
    assert_ne!(
        sa["name"], sa2["name"],
        "concurrent creates get distinct names"
    );
    assert_eq!(sa["checksum"], sa2["checksum"], "and the same bytes");
    let created = create_stored(&client, "/snapshots").await;
    let bytes = fetch(
        &client,
        &format!("/snapshots/{}", created["name"].as_str().unwrap()),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let out = assert_tools_read(&write(work.path(), "full.tar", &bytes));
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config,
        json!({"collections_mapping": {"a": "a.snapshot", "b": "b.snapshot"}, "collections_aliases": {}})
    );
    for name in ["a", "b"] {
        let nested = assert_tools_read(&out.join(format!("{name}.snapshot")));
        let collection_config: Value =
            serde_json::from_slice(&std::fs::read(nested.join("config.json")).unwrap()).unwrap();
        assert_eq!(collection_config["params"]["vectors"]["size"], 8);
        assert_eq!(
            std::fs::read_to_string(nested.join("version.info")).unwrap(),
            "0.4.2"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn async_creation_appears_complete_and_names_are_plain() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 1, 100).await;
    let (status, body) = call(
        &client,
        Method::POST,
        "/collections/docs/snapshots?wait=false",
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (_, l) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
        if !l["result"].as_array().unwrap().is_empty() {
            listed = l["result"][0].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        listed["checksum"].as_str().map(str::len),
        Some(64),
        "listed only with its checksum: {listed}"
    );

    for bad in [
        "..%2F..%2Fstorage%2Fpeer_id",
        "%2Fetc%2Fpasswd",
        ".hidden",
        "..",
        "a%5Cb",
    ] {
        for path in [
            format!("/collections/docs/snapshots/{bad}"),
            format!("/snapshots/{bad}"),
            format!("/collections/docs/shards/0/snapshots/{bad}"),
        ] {
            let (status, body) = call(&client, Method::GET, &path, None).await;
            assert!(status == 400 || status == 404, "{path}: {status} {body}");
            let (status, _) = call(&client, Method::DELETE, &path, None).await;
            assert!(status == 400 || status == 404, "{path}: {status}");
        }
    }
    let (status, body) = call(
        &client,
        Method::GET,
        "/collections/docs/snapshots/..%2F..%2Fstorage%2Fpeer_id",
        None,
    )
    .await;
    // A name that is no plain file name names no stored snapshot: 404, as Qdrant.
    assert_eq!(status, 404, "{body}");
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("plain file name")
    );
    let (status, _) = call(&client, Method::GET, "/collections/nope/snapshots", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &client,
        Method::GET,
        "/collections/docs/shards/5/snapshot",
        None,
    )
    .await;
    assert_eq!(status, 404);
    for path in [
        "/collections/docs/shards/abc/snapshot",
        "/collections/docs/shards/-1/snapshots",
    ] {
        let (status, body) = call(&client, Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["status"]["error"]
                .as_str()
                .unwrap()
                .contains("shard id must be a number"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_under_a_write_storm_hold_whole_batches_in_order() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(&client, "storm", sharded_vectors(4, "Dot", 3)).await;
    const BATCH: u64 = 30;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for batch in 0..60u64 {
                let points: Vec<Value> = (0..BATCH)
                    .map(|i| json!({"id": batch * BATCH + i, "vector": [1.0, 2.0, 3.0, batch as f32], "payload": {"batch": batch}}))
                    .collect();
                upsert(&client, "storm", points, batch % 3 == 0).await;
            }
        })
    };
    let work = tempfile::tempdir().unwrap();
    let mut observed = Vec::new();
    for round in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        let created = create_stored(&client, "/collections/storm/snapshots").await;
        let bytes = fetch(
            &client,
            &format!(
                "/collections/storm/snapshots/{}",
                created["name"].as_str().unwrap()
            ),
        )
        .await;
        let out = assert_tools_read(&write(work.path(), &format!("storm-{round}.tar"), &bytes));
        let mut batches: BTreeMap<u64, u64> = BTreeMap::new();
        for shard in 0..3 {
            let shard_dir = out.join(shard.to_string());
            snapfs::snapshot::segment_layout::normalize_segments(&shard_dir).unwrap();
            for (_, (payload, _)) in shard_points(&shard_dir) {
                *batches
                    .entry(payload["batch"].as_u64().unwrap())
                    .or_default() += 1;
            }
        }
        // A prefix of the batches, each one whole.
        let count = batches.len() as u64;
        assert_eq!(
            batches.keys().copied().collect::<Vec<_>>(),
            (0..count).collect::<Vec<_>>(),
            "round {round}: not a prefix"
        );
        assert!(
            batches.values().all(|n| *n == BATCH),
            "round {round}: a torn batch {batches:?}"
        );
        observed.push(count);
    }
    writer.await.unwrap();
    assert!(
        observed.windows(2).all(|w| w[0] <= w[1]),
        "snapshots move forward: {observed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_cannot_hold_writers_past_the_freeze_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start_with_env(&[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", "1")]);
    let client = daemon.client();
    // Large enough (~8 MB) that the stream cannot finish into socket buffers.
    create_collection(&client, "slow", vectors(512, "Dot")).await;
    for batch in 0..8u64 {
        upsert_ids(&client, "slow", batch * 500..batch * 500 + 500, 512).await;
    }

    // A reader that takes the first bytes of a live snapshot and then stalls.
    let mut reader = tokio::net::UnixStream::connect(client.socket())
        .await
        .unwrap();
    reader
        .write_all(b"GET /collections/slow/shards/0/snapshot HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut received = vec![0u8; 4096];
    let n = reader.read(&mut received).await.unwrap();
    received.truncate(n);

    // A wait=true update waits for the thaw, which the freeze limit forces.
    let started = std::time::Instant::now();
    upsert(&client, "slow", vec![point(10_000, 512)], true).await;
    let waited = started.elapsed();
    assert!(
        waited > std::time::Duration::from_millis(300),
        "the update was applied during the freeze ({waited:?})"
    );
    assert_eq!(count(&client, "slow").await, 4001);
    // The watchdog logs once the shards thawed, which is also when the update
    // returns: give its line a moment to reach the log.
    let mut log = daemon.log();
    for _ in 0..100 {
        if log.contains("copied aside") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = daemon.log();
    }
    assert!(log.contains("copied aside"), "{log}");

    // The slow reader still receives the frozen state, whole and valid.
    reader.read_to_end(&mut received).await.unwrap();
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let body = &received[split + 4..];
    let work = tempfile::tempdir().unwrap();
    let archive = write(work.path(), "slow.tar", body);
    let unpacked = work.path().join("unpacked");
    EdgeShard::unpack_snapshot(&archive, &unpacked).unwrap();
    let points = shard_points(&unpacked);
    assert_eq!(points.len(), 4000);
    assert!(!points.contains_key(&PointId::NumId(10_000)));
}

/// Live streams name their bytes (ETag, Last-Modified); a ranged request whose
/// If-Range names bytes of an earlier state gets the whole new archive, never a
/// piece of the new one joined to the old (what `curl -C -` would otherwise do).
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_download_of_a_changed_state_gets_it_whole() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "r", 1, 100).await;
    let get = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "--unix-socket"])
            .arg(&daemon.socket)
            .args(extra)
            .arg("http://localhost/collections/r/shards/0/snapshot")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let header = |text: &str, name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let first = get(&[]);
    let etag = header(&first, "etag");
    assert!(etag.starts_with('"') && etag.len() > 10, "{first}");
    assert!(!header(&first, "last-modified").is_empty(), "{first}");
    let same = get(&[
        "-H",
        "range: bytes=0-99",
        "-H",
        &format!("if-range: {etag}"),
    ]);
    assert!(same.starts_with("http/1.1 206"), "{same}");
    assert_eq!(
        header(&get(&[]), "etag"),
        etag,
        "the same state, the same tag"
    );

    upsert(&client, "r", vec![point(1000, 8)], true).await;
    let changed = get(&[
        "-H",
        "range: bytes=0-99",
        "-H",
        &format!("if-range: {etag}"),
    ]);
    assert!(changed.starts_with("http/1.1 200"), "{changed}");
    assert_ne!(header(&changed, "etag"), etag);
    assert_ne!(header(&changed, "content-length"), "100");
}
