//! Where the daemon fetches archives from (issue 20, items 8, 9 and 11): URL
//! recovery goes only where `storage.fetch_allow` / `fetch_deny` allow, on the
//! first request and every redirect, within header and total deadlines, and never
//! quotes what it fetched; `s3://` with the daemon's credentials stays in its
//! bucket and prefix; pulls from a misbehaving peer are bounded and cancellable;
//! `file://` follows no symlink and tells nothing about files outside.

use crate::support;
use crate::support::moto;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

/// A call that must end within `limit` (a hang is a failure, not a stuck test).
async fn bounded<T>(limit: u64, what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(limit), work)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {limit} s"))
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The daemon answers and holds no staging leftovers.
async fn alive_and_clean(daemon: &Daemon) {
    let (status, _) = call(&daemon.client(), Method::GET, "/collections", None).await;
    assert_eq!(status, 200);
    daemon.assert_no_staging_leftovers();
}

/// A Python HTTP server whose handler class body is `handler` (methods
/// `do_GET`/`do_POST`…; it sees `PORT`, `MARK` (a file to touch) and `time`).
fn py_server(mark: &Path, handler: &str) -> ServerProcess {
    let indented: String = handler.lines().map(|l| format!("    {l}\n")).collect();
    let mark = mark.to_str().unwrap().to_string();
    ServerProcess::start(move |port| {
        let script = format!(
            "import http.server, time, json, urllib.request\n\
             PORT = {port}\n\
             MARK = {mark:?}\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def log_message(self, *args): pass\n\
             {indented}\
             http.server.ThreadingHTTPServer(('127.0.0.1', PORT), H).serve_forever()\n"
        );
        let mut command = Command::new("python3");
        command.arg("-c").arg(script);
        command
    })
}

// ---- item 9: URL recovery ----

/// Link-local (the cloud metadata address) is refused by default before any
/// connection, on the first URL and on a redirect from an allowed server; a
/// configured deny list refuses loopback by address and by name (checked on the
/// resolved addresses: the server never sees a request).
#[tokio::test(flavor = "multi_thread")]
async fn url_recovery_goes_only_where_allowed() {
    let temp = tempfile::tempdir().unwrap();
    let file = qdrant_fixture("qdrant-docs.snapshot");
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let (status, body) = bounded(
        60,
        "a recovery from 169.254.169.254",
        recover_collection(
            &client,
            "docs",
            json!({"location": "http://169.254.169.254/latest/meta-data/"}),
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("storage.fetch_deny"), "{body}");
    // An allowed server redirecting there: refused at the redirect.
    let redirecting = py_http(
        &file,
        "self.send_response(302); self.send_header('location', 'http://169.254.169.254/latest/meta-data/iam'); self.end_headers()",
    );
    let (status, body) = bounded(
        60,
        "a redirected recovery",
        recover_collection(&client, "docs", json!({"location": redirecting.url("/x")})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("169.254.169.254"), "{body}");
    let (status, _) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    alive_and_clean(&daemon).await;
    drop(daemon);

    // Loopback denied: by address and by name; the server is never reached.
    let mark = temp.path().join("reached");
    let server = py_server(
        &mark,
        "def do_GET(self):\n    open(MARK, 'w').close(); self.send_error(500)",
    );
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[(
            "SNAPFS__STORAGE__FETCH_DENY",
            "169.254.0.0/16, fe80::/10, 127.0.0.0/8, ::1",
        )],
    );
    let client = daemon.client();
    for location in [
        server.url("/x"),
        format!("http://localhost:{}/x", server.port),
    ] {
        let (status, body) =
            recover_collection(&client, "docs", json!({"location": location})).await;
        assert_eq!(status, 403, "{location}: {body}");
        assert!(error_of(&body).contains("storage.fetch_deny"), "{body}");
    }
    assert!(!mark.exists(), "the denied server was reached");
    alive_and_clean(&daemon).await;
}

/// A server that never sends its headers is cut by `storage.fetch_header_secs`;
/// a body that is no tar is refused without quoting it.
#[tokio::test(flavor = "multi_thread")]
async fn url_recovery_deadlines_and_unquoted_refusals() {
    let temp = tempfile::tempdir().unwrap();
    let marker = "SECRET-METADATA-TOKEN-4711";
    let body_file = temp.path().join("body");
    std::fs::write(&body_file, format!("{marker} ").repeat(200)).unwrap();
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[("SNAPFS__STORAGE__FETCH_HEADER_SECS", "2")],
    );
    let client = daemon.client();
    let silent = py_http(&body_file, "time.sleep(600)");
    let (status, body) = bounded(
        60,
        "a recovery from a silent server",
        recover_collection(&client, "docs", json!({"location": silent.url("/x")})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_of(&body).contains("storage.fetch_header_secs"),
        "{body}"
    );

    let text = py_http(
        &body_file,
        "self.send_response(200); self.send_header('content-length', str(len(FILE))); self.end_headers(); self.wfile.write(FILE)",
    );
    let (status, body) =
        recover_collection(&client, "docs", json!({"location": text.url("/x")})).await;
    assert_eq!(status, 400, "{body}");
    let error = error_of(&body);
    assert!(error.contains("not a snapshot"), "{body}");
    assert!(!error.contains("SECRET"), "fetched bytes quoted: {body}");
    let (status, _) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    alive_and_clean(&daemon).await;
}

// ---- item 9 and 11: s3:// ----

#[tokio::test(flavor = "multi_thread")]
async fn s3_locations_stay_in_the_configured_bucket_and_checksums_are_small() {
    use moto::{ACCESS, Moto, REGION, SECRET};
    let moto = Moto::start();
    moto.create_bucket("snaps");
    moto.create_bucket("other");
    let temp = tempfile::tempdir().unwrap();
    let snapshot = qdrant_fixture("qdrant-docs.snapshot");
    moto.put("other", "x/docs.snapshot", &snapshot);
    moto.put("snaps", "elsewhere/docs.snapshot", &snapshot);
    moto.put("snaps", "backups/docs.snapshot", &snapshot);
    let big = temp.path().join("big.checksum");
    std::fs::write(&big, vec![b'a'; 4 << 20]).unwrap();
    moto.put("snaps", "backups/docs.snapshot.checksum", &big);
    let endpoint = moto.endpoint();
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET",
                "snaps",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PREFIX",
                "backups",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__REGION",
                REGION,
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL",
                &endpoint,
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY",
                ACCESS,
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY",
                SECRET,
            ),
            ("AWS_PROFILE", "none"),
        ],
    );
    let client = daemon.client();
    for location in [
        "s3://other/x/docs.snapshot",
        "s3://snaps/elsewhere/docs.snapshot",
        "s3://snaps/backups/../elsewhere/docs.snapshot",
    ] {
        let (status, body) =
            recover_collection(&client, "docs", json!({"location": location})).await;
        assert_eq!(status, 403, "{location}: {body}");
        assert!(
            error_of(&body).contains("storage.fetch_s3_buckets"),
            "{body}"
        );
    }
    let (status, _) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    // The request's own credentials reach what they reach.
    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": "s3://other/x/docs.snapshot", "api_key": format!("{ACCESS}:{SECRET}")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
    // Inside the prefix, but its checksum object is 4 MiB: refused, unread.
    let before = rss_kib(daemon.pid());
    let (status, body) = recover_collection(
        &client,
        "copy",
        json!({"location": "s3://snaps/backups/docs.snapshot"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("more than a checksum"), "{body}");
    let after = rss_kib(daemon.pid());
    assert!(after < before + 64 * 1024, "RSS {before} -> {after} KiB");
    let (status, _) = call(&client, Method::GET, "/collections/copy", None).await;
    assert_eq!(status, 404);
    alive_and_clean(&daemon).await;
}

// ---- item 11: file:// ----

/// Outside the allowed directories is 403 whether the file exists or not; inside,
/// no symlink is followed, even one that points inside.
#[tokio::test(flavor = "multi_thread")]
async fn file_locations_follow_no_symlink_and_hide_what_exists() {
    let temp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(&temp.path().join("data"), &[], &[]);
    let client = daemon.client();
    let snapshots = daemon.data_dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let fixture = qdrant_fixture("qdrant-docs.snapshot");
    std::fs::copy(&fixture, snapshots.join("docs.snapshot")).unwrap();
    std::fs::copy(&fixture, temp.path().join("outside.snapshot")).unwrap();
    std::os::unix::fs::symlink(
        temp.path().join("outside.snapshot"),
        snapshots.join("out.snapshot"),
    )
    .unwrap();
    std::os::unix::fs::symlink("docs.snapshot", snapshots.join("in.snapshot")).unwrap();
    for path in [
        temp.path().join("outside.snapshot"),
        temp.path().join("missing.snapshot"),
        snapshots.join("out.snapshot"),
        snapshots.join("in.snapshot"),
    ] {
        let location = format!("file://{}", path.display());
        let (status, body) =
            recover_collection(&client, "docs", json!({"location": location})).await;
        assert_eq!(status, 403, "{location}: {body}");
        assert!(error_of(&body).starts_with("Forbidden"), "{body}");
    }
    let (status, _) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    let location = format!("file://{}", snapshots.join("docs.snapshot").display());
    let (status, body) = recover_collection(&client, "docs", json!({"location": location})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
    alive_and_clean(&daemon).await;
}

// ---- item 8: pulls from a misbehaving peer ----

async fn pull(client: &Client, collection: &str, peer: &str, wait: bool) -> (u16, Value) {
    call(
        client,
        Method::POST,
        &format!("/collections/{collection}/shards/0/snapshot/partial/recover_from?wait={wait}"),
        Some(json!({"peer_url": peer})),
    )
    .await
}

/// A collection here, and the files a fake peer needs to pass for its twin: its
/// root document and collection info.
async fn twin_files(client: &Client, dir: &Path) {
    seeded_collection(client, "docs", 1, 50).await;
    let info = fetch(client, "/collections/docs").await;
    std::fs::write(dir.join("info.json"), info).unwrap();
    std::fs::write(
        dir.join("root.json"),
        br#"{"title":"fake","snapfs_version":"0"}"#,
    )
    .unwrap();
}

/// GET answers of a fake twin peer (`DIR` holds root.json and info.json).
fn twin_get(dir: &Path) -> String {
    format!(
        "def do_GET(self):\n\
         \x20   name = 'root.json' if self.path == '/' else 'info.json'\n\
         \x20   data = open({:?} + '/' + name, 'rb').read()\n\
         \x20   self.send_response(200); self.send_header('content-type', 'application/json')\n\
         \x20   self.send_header('content-length', str(len(data))); self.end_headers(); self.wfile.write(data)\n",
        dir.to_str().unwrap()
    )
}

/// A peer whose root document never ends is refused at
/// `storage.fetch_json_max_bytes`, with memory bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_with_an_endless_json_answer_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let peer = py_server(
        &temp.path().join("mark"),
        "def do_GET(self):\n\
         \x20   self.send_response(200); self.send_header('content-type', 'application/json'); self.end_headers()\n\
         \x20   self.wfile.write(b'{\"title\": \"')\n\
         \x20   chunk = b'x' * 65536\n\
         \x20   try:\n\
         \x20       while True: self.wfile.write(chunk)\n\
         \x20   except OSError: pass",
    );
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[("SNAPFS__STORAGE__FETCH_JSON_MAX_BYTES", "65536")],
    );
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 20).await;
    let before_points = by_id(&all_points(&client, "docs").await);
    let before = rss_kib(daemon.pid());
    let (status, body) = bounded(
        120,
        "a pull from an endless peer",
        pull(&client, "docs", &peer.url(""), true),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body).contains("storage.fetch_json_max_bytes"),
        "{body}"
    );
    let after = rss_kib(daemon.pid());
    assert!(after < before + 64 * 1024, "RSS {before} -> {after} KiB");
    assert!(by_id(&all_points(&client, "docs").await) == before_points);
    alive_and_clean(&daemon).await;
}

/// A peer that takes the manifest and never answers holds the shard's freeze only
/// until `storage.fetch_header_secs`; writes go on; a pull can be cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_peer_is_cut_and_a_pull_can_be_cancelled() {
    let temp = tempfile::tempdir().unwrap();
    let mark = temp.path().join("posted");
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[("SNAPFS__STORAGE__FETCH_HEADER_SECS", "3")],
    );
    let client = daemon.client();
    twin_files(&client, temp.path()).await;
    let peer = py_server(
        &mark,
        &format!(
            "{}def do_POST(self):\n    open(MARK, 'w').close(); time.sleep(600)\n",
            twin_get(temp.path())
        ),
    );
    let (status, body) = bounded(
        120,
        "a pull from a stalled peer",
        pull(&client, "docs", &peer.url(""), true),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body).contains("storage.fetch_header_secs"),
        "{body}"
    );
    assert!(mark.exists(), "the peer got the manifest");
    bounded(
        60,
        "an upsert after the stalled pull",
        upsert(&client, "docs", vec![point(1000, 8)], true),
    )
    .await;
    assert_eq!(count(&client, "docs").await, 51);
    alive_and_clean(&daemon).await;
    drop(daemon);

    // A long header deadline: a wait=false pull is cancelled through the API.
    std::fs::remove_file(&mark).unwrap();
    let daemon = Daemon::start_in(
        &temp.path().join("data2"),
        &[],
        &[("SNAPFS__STORAGE__FETCH_HEADER_SECS", "600")],
    );
    let client = daemon.client();
    twin_files(&client, temp.path()).await;
    let (status, body) = pull(&client, "docs", &peer.url(""), false).await;
    assert_eq!(status, 202, "{body}");
    for _ in 0..600 {
        if mark.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(mark.exists(), "the peer got the manifest");
    let cancel = "/collections/docs/shards/0/snapshot/partial/recover_from/cancel";
    let (status, body) = call(&client, Method::POST, cancel, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!(true), "{body}");
    bounded(
        60,
        "an upsert after the cancelled pull",
        upsert(&client, "docs", vec![point(1000, 8)], true),
    )
    .await;
    assert_eq!(count(&client, "docs").await, 51);
    let (status, body) = call(&client, Method::POST, cancel, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!(false), "{body}");
    assert!(
        daemon.log().contains("was cancelled"),
        "the pull ended cancelled"
    );
    alive_and_clean(&daemon).await;
}

/// A stop (SIGTERM) cancels a pull waiting for a silent peer at once: its caller
/// gets the reason, not a connection cut at the end of the shutdown grace, and
/// the shard is as it was when the daemon comes back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_cancels_a_pull_still_receiving() {
    let temp = tempfile::tempdir().unwrap();
    let mark = temp.path().join("posted");
    let data = temp.path().join("data");
    // Neither deadline would end the pull before the test's bound does.
    let env = [
        ("SNAPFS__STORAGE__FETCH_HEADER_SECS", "600"),
        ("SNAPFS__SNAPFS__SHUTDOWN_GRACE_SECS", "300"),
    ];
    let mut daemon = Daemon::start_in(&data, &[], &env);
    let client = daemon.client();
    twin_files(&client, temp.path()).await;
    let before = by_id(&all_points(&client, "docs").await);
    let peer = py_server(
        &mark,
        &format!(
            "{}def do_POST(self):\n    open(MARK, 'w').close(); time.sleep(600)\n",
            twin_get(temp.path())
        ),
    );
    let url = peer.url("");
    let pulling = tokio::spawn(async move { pull(&client, "docs", &url, true).await });
    for _ in 0..600 {
        if mark.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(mark.exists(), "the peer got the manifest");
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    let (status, body) = bounded(60, "the pull after SIGTERM", pulling)
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("was cancelled"), "{body}");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    drop(daemon);
    let daemon = Daemon::start_in(&data, &[], &env);
    let client = daemon.client();
    assert!(by_id(&all_points(&client, "docs").await) == before);
    alive_and_clean(&daemon).await;
}

/// A peer that sends a good partial archive, then zeros without end, is cut a
/// few MiB after the archive's end; the shard is unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_sending_an_endless_tail_is_cut() {
    let temp = tempfile::tempdir().unwrap();
    let (source, source_url) = peer_daemon();
    seeded_collection(&source.client(), "docs", 1, 300).await;
    let daemon = Daemon::start_in(&temp.path().join("data"), &[], &[]);
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 20).await;
    let before = by_id(&all_points(&client, "docs").await);
    // A relay to the real peer that appends zeros to the archive, forever.
    let relay = py_server(
        &temp.path().join("mark"),
        &format!(
            "UP = {source_url:?}\n\
             KEY = {PEER_KEY:?}\n\
             def relay(self, data=None):\n\
             \x20   req = urllib.request.Request(self.UP + self.path, data=data, headers={{'api-key': self.KEY, 'content-type': 'application/json'}})\n\
             \x20   body = urllib.request.urlopen(req).read()\n\
             \x20   self.send_response(200); self.end_headers(); self.wfile.write(body)\n\
             \x20   return body\n\
             def do_GET(self):\n\
             \x20   body = self.relay()\n\
             def do_POST(self):\n\
             \x20   n = int(self.headers['content-length'])\n\
             \x20   self.relay(self.rfile.read(n))\n\
             \x20   zeros = bytes(65536)\n\
             \x20   try:\n\
             \x20       while True: self.wfile.write(zeros)\n\
             \x20   except OSError: pass\n"
        ),
    );
    let (status, body) = bounded(
        120,
        "a pull from a peer that does not stop",
        pull(&client, "docs", &relay.url(""), true),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("end-of-archive"), "{body}");
    assert!(by_id(&all_points(&client, "docs").await) == before);
    alive_and_clean(&daemon).await;
    drop(source);
}
