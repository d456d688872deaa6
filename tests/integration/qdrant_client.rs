//! The official Python `qdrant-client` (installed from PyPI into a virtualenv under
//! target/) creates, fills and queries a collection through the TCP listener.

use crate::support;

use support::{Daemon, free_port, python_check, python_venv};

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

/// The same checks with stored snapshots kept as generations of a restic
/// repository (issue 22): qdrant-client's snapshot calls do not see a difference.
#[test]
fn qdrant_client_works_with_the_repository_store() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "py-repo").unwrap();
    let repository = support::repository_env(&dir.path().join("repo"), &password);
    let env: Vec<(&str, &str)> = repository.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_check_with(
        "qdrant_client_check.py",
        "qdrant-client: all checks passed",
        &env,
    );
    run_check_with(
        "qdrant_client_hybrid_check.py",
        "qdrant-client hybrid: all checks passed",
        &env,
    );
}

fn run_check(script: &str, passed: &str) {
    run_check_with(script, passed, &[]);
}

fn run_check_with(script: &str, passed: &str, env: &[(&str, &str)]) {
    let python = python_venv();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    env.push(("SNAPFS_API_KEY", "py-key"));
    let daemon = Daemon::start_in(dir.path(), &["--http", &format!("127.0.0.1:{port}")], &env);
    let url = format!("http://127.0.0.1:{port}");
    python_check(
        &python,
        script,
        &[
            ("SNAPFS_URL", url.as_ref()),
            ("SNAPFS_API_KEY", "py-key".as_ref()),
        ],
        passed,
        &daemon,
    );
}
