//! Qdrant's REST snapshot API as Qdrant's own tests use it
//! (tests/openapi/test_snapshot.py and test_shard_snapshot.py of Qdrant 1.18.3, run
//! whole by scripts/qdrant-conformance.sh): recover bodies with fields Qdrant
//! ignores, `wait=false` deletes answered 202, names that resolve to no stored
//! snapshot (traversals, plain and percent-encoded, symlinks) answered 404 on every
//! snapshot endpoint without anything outside the snapshots directory read or
//! deleted, and Qdrant's words for refused `file://` locations.

use crate::support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

async fn setup(client: &Client, name: &str, points: u64) {
    create_collection(client, name, sharded_vectors(8, "Dot", 2)).await;
    upsert_ids(client, name, 0..points, 8).await;
}

/// `POST path?wait=true`: the created snapshot's description.
async fn create_snapshot(client: &Client, path: &str) -> Value {
    create_stored(client, &format!("{path}?wait=true")).await
}

async fn listed(client: &Client, path: &str) -> Vec<String> {
    let (status, body) = call(client, Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// One request over the socket, whatever the answer's body (a snapshot's bytes
/// too): the status and the body as text.
fn request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: snapfs\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(
                    path.display().to_string(),
                    format!("-> {}", target.display()).into_bytes(),
                );
            } else {
                out.insert(path.display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_bodies_ignore_fields_qdrant_does_not_use() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 40).await;
    let collection = create_snapshot(&client, "/collections/docs/snapshots").await;
    let shard = create_snapshot(&client, "/collections/docs/shards/1/snapshots").await;
    let before = by_id(&all_points(&client, "docs").await);

    // Qdrant's tests send `"wait": "true"` in the body; unknown keys are ignored too.
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/docs/snapshots/recover",
        Some(json!({
            "location": collection["name"],
            "checksum": collection["checksum"],
            "wait": "true",
            "something_new": {"nested": [1, 2]},
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], true, "{body}");
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/docs/shards/1/snapshots/recover",
        Some(json!({
            "location": shard["name"],
            "checksum": shard["checksum"],
            "priority": "replica",
            "wait": "true",
            "api_key": null,
            "extra": 1,
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&client, "docs").await) == before);

    // The fields Qdrant uses are still checked; a refused body changes nothing.
    for (path, stored) in [
        ("/collections/docs/snapshots/recover", &collection),
        ("/collections/docs/shards/1/snapshots/recover", &shard),
    ] {
        let name = &stored["name"];
        for (what, request) in [
            (
                "no location",
                json!({"wait": "true", "checksum": stored["checksum"]}),
            ),
            (
                "location not a string",
                json!({"location": 5, "wait": "true"}),
            ),
            (
                "unknown priority",
                json!({"location": name, "priority": "urgent", "x": 1}),
            ),
            (
                "checksum not a string",
                json!({"location": name, "checksum": 7, "x": 1}),
            ),
            (
                "wrong checksum",
                json!({"location": name, "checksum": "3".repeat(64), "wait": "true"}),
            ),
            ("body not an object", json!("location")),
        ] {
            let (status, body) = call(&client, Method::PUT, path, Some(request)).await;
            assert_eq!(status, 400, "{what} at {path}: {body}");
            assert!(!error_of(&body).is_empty(), "{what}: {body}");
        }
    }
    assert!(by_id(&all_points(&client, "docs").await) == before);
    assert_eq!(
        listed(&client, "/collections/docs/snapshots").await,
        [collection["name"].as_str().unwrap()]
    );
    daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_false_deletes_are_accepted_then_done() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 20).await;
    let snapshots = daemon.data_dir.join("snapshots");
    for list in [
        "/collections/docs/snapshots",
        "/collections/docs/shards/0/snapshots",
        "/snapshots",
    ] {
        let kept = create_snapshot(&client, list).await;
        let gone = create_snapshot(&client, list).await;
        let gone_name = gone["name"].as_str().unwrap();
        let sidecars_before = tree(&snapshots)
            .keys()
            .filter(|p| p.ends_with(".checksum"))
            .count();

        let (status, body) = call(
            &client,
            Method::DELETE,
            &format!("{list}/{gone_name}?wait=false"),
            None,
        )
        .await;
        assert_eq!(status, 202, "{list}: {body}");
        // Qdrant's answer: no `result`.
        assert_eq!(body["status"], "accepted", "{body}");
        assert!(body.get("result").is_none(), "{body}");
        assert!(body["time"].is_number(), "{body}");

        // Gone shortly after, its checksum with it (the snapshot first: a listed
        // snapshot always has its checksum).
        let deadline = Instant::now() + Duration::from_secs(10);
        // Names only: files go while the walk runs, so their bytes are not read.
        let sidecar_left = || {
            snapfs::storage::regular_files(&snapshots)
                .iter()
                .any(|(p, _)| p.ends_with(format!("{gone_name}.checksum")))
        };
        while listed(&client, list).await.contains(&gone_name.to_string()) || sidecar_left() {
            assert!(Instant::now() < deadline, "{gone_name} still there");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            listed(&client, list).await,
            [kept["name"].as_str().unwrap()]
        );
        let sidecars = tree(&snapshots);
        assert_eq!(
            sidecars.keys().filter(|p| p.ends_with(".checksum")).count(),
            sidecars_before - 1
        );

        // A name that is not there: 404 with or without wait, nothing removed.
        for wait in ["true", "false"] {
            let (status, body) = call(
                &client,
                Method::DELETE,
                &format!("{list}/{gone_name}?wait={wait}"),
                None,
            )
            .await;
            assert_eq!(status, 404, "{list} wait={wait}: {body}");
        }
        assert_eq!(
            listed(&client, list).await,
            [kept["name"].as_str().unwrap()]
        );
        // wait=true still answers 200 with `true`.
        let (status, body) = call(
            &client,
            Method::DELETE,
            &format!("{list}/{}?wait=true", kept["name"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], true);
        assert!(listed(&client, list).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_resolve_to_no_stored_snapshot_are_404_and_nothing_outside_is_touched() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 30).await;
    let stored = create_snapshot(&client, "/collections/docs/snapshots").await;
    let stored_name = stored["name"].as_str().unwrap().to_string();
    let snapshots = daemon.data_dir.join("snapshots");
    let stored_path = snapshots.join("docs").join(&stored_name);

    // A sentinel outside the snapshots directory that would pass for a snapshot of
    // `docs` if a name could reach it: a copy of a real one (with its checksum).
    let sentinel = daemon.data_dir.join("sentinel.snapshot");
    std::fs::copy(&stored_path, &sentinel).unwrap();
    std::fs::write(
        daemon.data_dir.join("sentinel.snapshot.checksum"),
        stored["checksum"].as_str().unwrap(),
    )
    .unwrap();
    // And symlinks inside it that lead out, one per scope.
    for dir in ["", "docs", "docs/shards/0"] {
        let dir = snapshots.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&sentinel, dir.join("link.snapshot")).unwrap();
    }
    let before_points = by_id(&all_points(&client, "docs").await);
    let before_files = tree(&daemon.data_dir.join("snapshots"));
    let sentinel_bytes = std::fs::read(&sentinel).unwrap();

    let absolute = sentinel.display().to_string();
    let encoded = |name: &str| name.replace('/', "%2F");
    // Each scope's listing path and the name that would reach the sentinel from it.
    let scopes = [
        ("/snapshots", "../sentinel.snapshot"),
        ("/collections/docs/snapshots", "../../sentinel.snapshot"),
        (
            "/collections/docs/shards/0/snapshots",
            "../../../../sentinel.snapshot",
        ),
    ];
    for (list, reaching) in scopes {
        let names = [
            encoded(reaching),
            encoded(&absolute),
            "..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
            "%2Fetc%2Fpasswd".to_string(),
            "..".to_string(),
            "%2E%2E".to_string(),
            "link.snapshot".to_string(),
            "sentinel.snapshot".to_string(),
            // Plain, unencoded: these reach no route, also 404.
            reaching.to_string(),
            "/etc/passwd".to_string(),
        ];
        for name in &names {
            let path = format!("{list}/{name}");
            let (status, body) = request(&daemon.socket, "GET", &path, None);
            assert_eq!(status, 404, "GET {path}: {body}");
            for wait in ["true", "false"] {
                let path = format!("{path}?wait={wait}");
                let (status, body) = request(&daemon.socket, "DELETE", &path, None);
                assert_eq!(status, 404, "DELETE {path}: {body}");
            }
        }
    }
    // Recovery by name: the same names, decoded, as they arrive in a JSON body.
    for location in [
        "../sentinel.snapshot",
        "../../sentinel.snapshot",
        "../../../../sentinel.snapshot",
        "..%2F..%2Fsentinel.snapshot",
        absolute.as_str(),
        "link.snapshot",
        "sentinel.snapshot",
        "..",
        "../../../../../../../etc/passwd",
    ] {
        for path in [
            "/collections/docs/snapshots/recover",
            "/collections/docs/shards/0/snapshots/recover",
        ] {
            for wait in ["true", "false"] {
                let path = format!("{path}?wait={wait}");
                let body = json!({"location": location, "wait": wait});
                let (status, answer) = request(&daemon.socket, "PUT", &path, Some(&body));
                assert_eq!(status, 404, "PUT {path} {body}: {answer}");
            }
        }
    }

    // Nothing was read out, nothing deleted, nothing changed.
    assert_eq!(std::fs::read(&sentinel).unwrap(), sentinel_bytes);
    assert!(daemon.data_dir.join("sentinel.snapshot.checksum").exists());
    assert!(tree(&daemon.data_dir.join("snapshots")) == before_files);
    assert!(by_id(&all_points(&client, "docs").await) == before_points);
    assert_eq!(
        listed(&client, "/collections/docs/snapshots").await,
        [stored_name.as_str()]
    );
    daemon.assert_no_staging_leftovers();
    // The real one still answers.
    let (status, _) = request(
        &daemon.socket,
        "GET",
        &format!("/collections/docs/snapshots/{stored_name}"),
        None,
    );
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_file_locations_say_what_qdrant_says() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    setup(&client, "docs", 10).await;
    let before = by_id(&all_points(&client, "docs").await);
    let outside = daemon.data_dir.join("outside.snapshot");
    let stored = create_snapshot(&client, "/collections/docs/snapshots").await;
    std::fs::copy(
        daemon
            .data_dir
            .join("snapshots/docs")
            .join(stored["name"].as_str().unwrap()),
        &outside,
    )
    .unwrap();
    let invalid = "Bad request: Invalid snapshot URI, file path must be absolute or on localhost";
    // Unlike Qdrant (400 "does not exist" first), a missing file outside the
    // allowed directories is 403 like an existing one: the answer tells nothing
    // about which files exist (issue 20, item 11).
    let forbidden = "Forbidden: Snapshot file path must be inside the snapshots directory";
    for collection in ["docs", "somethingthatdoesnotexist"] {
        for (location, status, words) in [
            ("file://whatever.snapshot", 400, invalid),
            ("file://./etc/passwd", 400, invalid),
            ("file:///whatever.snapshot", 403, forbidden),
            ("file://localhost/whatever.snapshot", 403, forbidden),
            (
                &format!("file://{}", outside.display()),
                403,
                "Forbidden: Snapshot file path must be inside the snapshots directory",
            ),
            (
                "file:///etc/passwd",
                403,
                "Forbidden: Snapshot file path must be inside the snapshots directory",
            ),
        ] {
            let (got, body) = call(
                &client,
                Method::PUT,
                &format!("/collections/{collection}/snapshots/recover"),
                Some(json!({"location": location})),
            )
            .await;
            assert_eq!(got, status, "{location}: {body}");
            let error = error_of(&body);
            if status == 400 {
                assert_eq!(error, words, "{location}");
            } else {
                assert!(error.starts_with(words), "{location}: {error}");
            }
        }
    }
    let (status, _) = call(
        &client,
        Method::GET,
        "/collections/somethingthatdoesnotexist",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(by_id(&all_points(&client, "docs").await) == before);
    daemon.assert_no_staging_leftovers();
}
