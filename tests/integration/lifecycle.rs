//! The daemon's way out: a stop is bounded whatever is in flight, and an error exit
//! after the storage opened still closes it cleanly (its clocks survive).

use crate::support;

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use support::*;

/// Last-Modified of shard 0's live snapshot: the shard's last change, which only a
/// clean stop carries over to the next start.
fn last_modified(daemon: &Daemon, collection: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--unix-socket"])
        .arg(&daemon.socket)
        .arg(format!(
            "http://localhost/collections/{collection}/shards/0/snapshot"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: "))
        .unwrap_or_else(|| panic!("no last-modified in {text}"));
    value.trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_exit_after_the_storage_opened_still_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
    seeded_collection(&daemon.client(), "kept", 1, 100).await;
    wait_settled(&daemon.client(), "kept").await;
    let before = last_modified(&daemon, "kept");
    assert!(daemon.stop().success());
    // Whole seconds: a clock reset at the next start would show.
    std::thread::sleep(Duration::from_millis(1100));
    // A plain restart keeps it (the engine's load tidies files no archive holds).
    let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
    assert_eq!(last_modified(&daemon, "kept"), before);
    assert!(daemon.stop().success());

    // The TCP port is taken: the daemon fails after it opened the storage.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut failing = Daemon::spawn(dir.path(), &["--http", &addr, "--api-key", "k"], &[]);
    let status = failing.wait_exit();
    assert!(!status.success());
    assert!(failing.log().contains("cannot listen"), "{}", failing.log());

    let daemon = Daemon::start_in(dir.path(), &[], &[]);
    assert_eq!(
        last_modified(&daemon, "kept"),
        before,
        "the failed start left the shard marked as changed; log:\n{}",
        daemon.log()
    );
    assert_eq!(count(&daemon.client(), "kept").await, 100);
}

/// Upgrades keep the data directory; a downgrade is refused. A data directory
/// stamped by a newer snapfs (a storage format above this build's) stops the start
/// with what to do, and nothing in it changes: the collection is intact for the
/// snapfs that wrote it (here: the stamp put back).
#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), &[], &[]);
    seeded_collection(&daemon.client(), "kept", 1, 100).await;
    assert!(daemon.stop().success());
    let stamp_path = dir.path().join("storage/format.json");
    let ours = std::fs::read_to_string(&stamp_path).unwrap();
    let stamp: Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(stamp["format"], 1, "{ours}");
    assert_eq!(stamp["last_opened_by"], env!("CARGO_PKG_VERSION"), "{ours}");

    let newer = r#"{"format": 2, "engine": "qdrant-edge 9", "created_by": "0.1.0", "last_opened_by": "9.0.0"}"#;
    std::fs::write(&stamp_path, newer).unwrap();
    let before = tree(&dir.path().join("storage"));
    let mut refused = Daemon::spawn(dir.path(), &[], &[]);
    assert!(!refused.wait_exit().success());
    let log = refused.log();
    assert!(
        log.contains("storage format 2")
            && log.contains("9.0.0")
            && log.contains("reads up to format 1"),
        "{log}"
    );
    assert_eq!(tree(&dir.path().join("storage")), before);
    assert_eq!(std::fs::read_to_string(&stamp_path).unwrap(), newer);

    std::fs::write(&stamp_path, ours).unwrap();
    let daemon = Daemon::start_in(dir.path(), &[], &[]);
    assert_eq!(count(&daemon.client(), "kept").await, 100);
}

/// Every file under `dir` with its size and modification time, but the lock (which
/// holds whichever daemon last started).
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = snapfs::storage::regular_files(dir)
        .into_iter()
        .filter(|(path, _)| !path.ends_with("snapfs.lock"))
        .map(|(path, len)| {
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            (path, len, mtime)
        })
        .collect();
    out.sort();
    out
}

/// A recovery from a server that trickles a byte at a time: a request that would
/// not finish for hours. Returns once it is under way (its staging directory exists).
fn start_a_never_ending_request(
    daemon: &Daemon,
) -> (
    ServerProcess,
    tokio::task::JoinHandle<anyhow::Result<(hyper::StatusCode, serde_json::Value)>>,
) {
    let trickle = py_http(
        &qdrant_fixture("qdrant-docs.snapshot"),
        "self.send_response(200); self.send_header('content-length', str(len(FILE))); self.end_headers()\n\
         for i in range(len(FILE)):\n    self.wfile.write(FILE[i:i + 1]); self.wfile.flush(); time.sleep(0.2)",
    );
    let url = trickle.url("/docs.snapshot");
    let client = daemon.client();
    let in_flight = tokio::spawn(async move {
        client
            .raw(
                Method::PUT,
                "/collections/docs/snapshots/recover",
                Some(&json!({ "location": url })),
            )
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while daemon.staging_leftovers().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (trickle, in_flight)
}

/// After a stop, nothing was restored, nothing acknowledged was lost and nothing
/// is left over.
async fn assert_restart_is_whole(dir: &std::path::Path) {
    let daemon = Daemon::start_in(dir, &[], &[]);
    let (status, _) = call(&daemon.client(), Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    assert_eq!(count(&daemon.client(), "kept").await, 50);
    daemon.assert_no_staging_leftovers();
}

/// A request in flight does not hold the stop beyond `snapfs.shutdown_grace_secs`.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_does_not_wait_forever_for_a_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &[],
        &[("SNAPFS__SNAPFS__SHUTDOWN_GRACE_SECS", "1")],
    );
    seeded_collection(&daemon.client(), "kept", 1, 50).await;
    let (_trickle, in_flight) = start_a_never_ending_request(&daemon);

    let status = daemon.stop();
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("abandoned"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    // The client saw its request cut, not a success.
    match in_flight.await.unwrap() {
        Ok((status, body)) => assert_ne!(status.as_u16(), 200, "{body}"),
        Err(_cut) => {}
    }
    assert_restart_is_whole(dir.path()).await;
}

/// A second SIGTERM ends a stop at once (exit 1); what was acknowledged survives.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &[],
        &[("SNAPFS__SNAPFS__SHUTDOWN_GRACE_SECS", "600")],
    );
    seeded_collection(&daemon.client(), "kept", 1, 50).await;
    let (_trickle, _in_flight) = start_a_never_ending_request(&daemon);
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !daemon.log().contains("SIGTERM: shutting down") {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above, our own child.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    assert!(daemon.log().contains("second signal"), "{}", daemon.log());
    assert_restart_is_whole(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_daemon_writes_only_its_own_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "private", 1, 20).await;
    let (status, body) = call(
        &client,
        Method::POST,
        "/collections/private/snapshots",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut checked = 0;
    let mut pending = vec![daemon.data_dir.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            // The test harness's own log file is not the daemon's.
            if name.starts_with("daemon-") && name.ends_with(".log") {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(
                mode & 0o077,
                0,
                "{} is mode {mode:o}: other users could read it",
                entry.path().display()
            );
            checked += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    assert!(checked > 10, "only {checked} entries looked at");
    for dir in ["storage", "snapshots", "tmp"] {
        let mode = std::fs::metadata(daemon.data_dir.join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
}

/// Under systemd (`Type=notify`): `READY=1` comes once the control socket answers,
/// with a `STATUS=` line; the watchdog is fed at half its period; a stop says
/// `STOPPING=1`. The service manager is played by a datagram socket.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_manager_hears_ready_after_the_socket_answers() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let data = dir.path().join("data");
    let mut daemon = Daemon::spawn(
        &data,
        &[],
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = manager.recv(&mut buf).expect("a message from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = receive();
    assert!(ready.contains("READY=1"), "the first message: {ready}");
    // Ready means answering, at once.
    let (status, root) = daemon
        .client()
        .raw(Method::GET, "/", None)
        .await
        .expect("the socket answers when READY=1 is sent");
    assert!(status.is_success(), "{root}");
    assert!(ready.contains("STATUS="), "{ready}");
    assert!(ready.contains("collections"), "{ready}");
    // The watchdog, fed every 200 ms.
    let started = std::time::Instant::now();
    let mut fed = 0;
    while fed < 3 {
        if receive().contains("WATCHDOG=1") {
            fed += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fed 3 times in {:?}",
        started.elapsed()
    );
    let exit = daemon.stop();
    assert!(exit.success(), "{exit:?}");
    let mut said = Vec::new();
    while let Ok(n) = {
        manager
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 4096];
        manager
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    } {
        said.push(n);
    }
    assert!(said.iter().any(|m| m.contains("STOPPING=1")), "{said:?}");
}

/// The unit file in packaging/ is one systemd takes (`systemd-analyze verify`, with
/// this build as its binary). Skipped with a notice where systemd is not installed.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: no systemd-analyze on this machine");
        return;
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("packaging/snapfs.service")).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("snapfs.service");
    std::fs::write(&local, unit.replace("/usr/bin/snapfs", BIN)).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|path| path.is_file())
        })
        .ok_or(())
}
