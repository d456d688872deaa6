//! The CLI client: exit codes and the words a user sees.

use crate::support;

use std::process::{Command, Output};

use support::{BIN, Daemon};

fn snapfs(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SNAPFS_SOCKET", &daemon.socket)
        .output()
        .unwrap()
}

/// `snapfs`, which must succeed.
fn snapfs_ok(daemon: &Daemon, args: &[&str]) -> Output {
    let out = snapfs(daemon, args);
    assert!(out.status.success(), "{args:?}: {:?}", text(&out));
    out
}

/// `snapfs`, which must fail (exit non-zero).
fn snapfs_fails(daemon: &Daemon, args: &[&str]) -> Output {
    let out = snapfs(daemon, args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {:?}",
        text(&out)
    );
    out
}

/// `snapfs partial create docs 0 --manifest MANIFEST -o OUT` on `daemon`, which must succeed.
fn partial_create(daemon: &Daemon, manifest: &std::path::Path, out: &std::path::Path) -> Output {
    snapfs_ok(
        daemon,
        &[
            "partial",
            "create",
            "docs",
            "0",
            "--manifest",
            manifest.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn collections_and_points_commands() {
    let daemon = Daemon::start(&[]);
    let out = snapfs_ok(
        &daemon,
        &[
            "collections",
            "create",
            "docs",
            "--dim",
            "8",
            "--distance",
            "Dot",
            "--shards",
            "2",
        ],
    );
    assert!(text(&out).0.contains("created collection docs"));

    let out = snapfs_ok(
        &daemon,
        &[
            "points", "generate", "docs", "--count", "2500", "--dim", "8", "--batch", "1000",
        ],
    );
    assert!(
        text(&out)
            .0
            .contains("upserted 2500 random 8-dim points into docs")
    );

    let file = daemon.data_dir.join("points.jsonl");
    let lines: Vec<String> = (5000..5010)
        .map(|id| {
            format!("{{\"id\": {id}, \"vector\": [1,2,3,4,5,6,7,8], \"payload\": {{\"f\": true}}}}")
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = snapfs_ok(
        &daemon,
        &[
            "points",
            "upsert",
            "docs",
            "--file",
            file.to_str().unwrap(),
            "--batch",
            "3",
        ],
    );
    assert!(text(&out).0.contains("upserted 10 points into docs"));

    let out = snapfs(&daemon, &["points", "count", "docs"]);
    assert_eq!(text(&out).0.trim(), "2510");

    let out = snapfs(&daemon, &["collections", "list"]);
    assert_eq!(text(&out).0, "docs\n");
    let out = snapfs(&daemon, &["collections", "info", "docs"]);
    assert!(
        text(&out).0.contains("\"points_count\": 2510"),
        "{:?}",
        text(&out)
    );
    let out = snapfs(&daemon, &["collections", "delete", "docs"]);
    assert!(out.status.success());
    assert_eq!(text(&snapfs(&daemon, &["collections", "list"])).0, "");
}

#[test]
fn failures_exit_non_zero_with_the_servers_words() {
    let daemon = Daemon::start(&[]);
    let out = snapfs_fails(&daemon, &["points", "count", "missing"]);
    assert!(
        text(&out).1.contains("Collection `missing` not found"),
        "{:?}",
        text(&out)
    );

    let out = snapfs_fails(&daemon, &["collections", "delete", "missing"]);
    assert!(text(&out).1.contains("does not exist"));

    assert!(
        snapfs(&daemon, &["collections", "create", "docs", "--dim", "4"])
            .status
            .success()
    );
    let out = snapfs_fails(&daemon, &["collections", "create", "docs", "--dim", "4"]);
    assert!(text(&out).1.contains("already exists"), "{:?}", text(&out));

    let bad = daemon.data_dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 1, \"vector\": [1,2,3]}\n").unwrap();
    let out = snapfs_fails(
        &daemon,
        &["points", "upsert", "docs", "--file", bad.to_str().unwrap()],
    );
    assert!(
        text(&out).1.contains("expected dim: 4, got 3"),
        "{:?}",
        text(&out)
    );

    let out = snapfs(&daemon, &["collections", "create", "x", "--dim", "0"]);
    assert!(!out.status.success(), "clap rejects a zero dimension");

    let out = Command::new(BIN)
        .args(["collections", "list"])
        .env("SNAPFS_SOCKET", "/nonexistent/snapfs.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("cannot reach the snapfs daemon"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn partial_commands() {
    let (a, a_url) = support::peer_daemon();
    let (b, _) = support::peer_daemon();
    for daemon in [&a, &b] {
        snapfs_ok(
            daemon,
            &[
                "collections",
                "create",
                "docs",
                "--dim",
                "8",
                "--shards",
                "1",
            ],
        );
    }
    snapfs_ok(
        &a,
        &[
            "points", "generate", "docs", "--count", "3000", "--dim", "8",
        ],
    );
    let work = tempfile::tempdir().unwrap();

    // The manifest of B (empty), a diff of A against it, applied to B.
    let out = snapfs_ok(&b, &["partial", "manifest", "docs", "0"]);
    let manifest = work.path().join("b.json");
    std::fs::write(&manifest, &out.stdout).unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("the manifest is JSON");
    let diff = work.path().join("diff.snapshot");
    let out = partial_create(&a, &manifest, &diff);
    assert!(text(&out).0.contains("wrote"), "{:?}", text(&out));
    let out = snapfs_ok(
        &b,
        &["partial", "apply", "docs", "0", diff.to_str().unwrap()],
    );
    assert!(text(&out).0.contains("applied"), "{:?}", text(&out));
    let out = snapfs(&b, &["points", "count", "docs"]);
    assert!(text(&out).0.contains("3000"), "{:?}", text(&out));

    // Now equal: the content form says so.
    let out = snapfs_ok(&b, &["partial", "manifest", "docs", "0", "--files"]);
    std::fs::write(&manifest, &out.stdout).unwrap();
    let out = partial_create(&a, &manifest, &diff);
    assert!(text(&out).0.contains("nothing to send"), "{:?}", text(&out));

    // Pull: after a change on A, moved vs full; then up to date.
    let pull = || {
        snapfs_ok(
            &b,
            &[
                "partial",
                "pull",
                "docs",
                "0",
                "--from",
                &a_url,
                "--api-key",
                support::PEER_KEY,
            ],
        )
    };
    snapfs_ok(
        &a,
        &[
            "points", "generate", "docs", "--count", "30", "--dim", "8", "--start", "10000",
        ],
    );
    let out = pull();
    assert!(
        text(&out).0.contains("moved") && text(&out).0.contains("of a full"),
        "{:?}",
        text(&out)
    );
    let out = pull();
    assert!(text(&out).0.contains("up to date"), "{:?}", text(&out));

    // Words for what fails: a wrong key, a file that is no snapshot.
    let out = snapfs_fails(
        &b,
        &[
            "partial",
            "pull",
            "docs",
            "0",
            "--from",
            &a_url,
            "--api-key",
            "nope",
        ],
    );
    assert!(
        text(&out).1.contains("refused the API key"),
        "{:?}",
        text(&out)
    );
    let out = snapfs_fails(
        &b,
        &["partial", "apply", "docs", "0", manifest.to_str().unwrap()],
    );
    assert!(
        text(&out).1.contains("not a readable tar"),
        "{:?}",
        text(&out)
    );
}

/// Completions and the man page come from the clap definitions: every subcommand is
/// in them, bash parses its completion script, and the man page is roff.
#[test]
fn completions_and_the_man_page_name_every_subcommand() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    for sub in [
        "serve",
        "follow",
        "cluster",
        "backup",
        "recover",
        "completions",
        "manpage",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("snapfs.bash");
    std::fs::write(&script, &bash).unwrap();
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(parsed.success(), "bash -n of the completion script");
    for shell in ["zsh", "fish"] {
        assert!(run(&["completions", shell]).contains("cluster"), "{shell}");
    }
    let man = run(&["manpage"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH snapfs"),
        "{}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains(".TH snapfs"), "a man page header");
    assert!(man.contains("follow"), "subcommands are listed");
}

/// `snapfs doctor` checks without changing anything: on this machine everything
/// passes (FUSE, the data directory, sparse files, the clock); a daemon running on
/// the data directory is seen answering; a plain file where the socket goes fails
/// with its fix, and the exit code says so.
#[test]
fn doctor_says_what_is_ready_and_how_to_fix_what_is_not() {
    let doctor = |data: &std::path::Path| {
        let out = Command::new(BIN)
            .args(["doctor", "--data-dir"])
            .arg(data)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    let (passed, said) = doctor(&fresh);
    assert!(passed, "{said}");
    assert!(said.contains("ok   FUSE device: /dev/fuse opens"), "{said}");
    assert!(said.contains("to be created in"), "{said}");
    assert!(
        said.contains("ok   sparse files: a 64 MiB hole uses"),
        "{said}"
    );
    assert!(said.contains("0 failed"), "{said}");
    assert!(!fresh.exists(), "doctor creates nothing");

    let mut daemon = Daemon::start(&[]);
    let (passed, said) = doctor(&daemon.data_dir);
    assert!(passed, "{said}");
    assert!(said.contains("a daemon answers"), "{said}");
    daemon.stop();

    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("snapfs.sock"), b"not a socket").unwrap();
    let (passed, said) = doctor(&blocked);
    assert!(!passed, "{said}");
    assert!(said.contains("FAIL control socket"), "{said}");
    assert!(said.contains("fix: move that file away"), "{said}");
}
