//! The official Python `qdrant-client` (installed from PyPI into a virtualenv under
//! target/) creates, fills and queries a collection through the TCP listener.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Daemon, python_venv};

#[test]
fn official_qdrant_client_works_against_snapfs() {
    run_check("qdrant_client_check.py", "qdrant-client: all checks passed");
}

/// Sparse (idf) and dense vectors, a payload index, a sparse query, a snapshot and
/// its recovery from a URL — all through qdrant-client's own calls.
#[test]
fn a_hybrid_collection_through_qdrant_client() {
    run_check(
        "qdrant_client_hybrid_check.py",
        "qdrant-client hybrid: all checks passed",
    );
}

fn run_check(script: &str, passed: &str) {
    let python = python_venv();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(
        dir.path(),
        &["--http", &format!("127.0.0.1:{port}")],
        &[("SNAPFS_API_KEY", "py-key")],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(&python)
        .arg(&script)
        .env("SNAPFS_URL", format!("http://127.0.0.1:{port}"))
        .env("SNAPFS_API_KEY", "py-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "qdrant-client check failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        daemon.log()
    );
    assert!(stdout.contains(passed), "{stdout}");
}
