//! Restore: real Qdrant 1.18.3 snapshots and snapfs's own, through
//! `PUT /collections/{c}/snapshots/recover`; hostile and broken archives are refused
//! with a clear error and change nothing.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

async fn recover_shard(
    client: &Client,
    collection: &str,
    shard: u32,
    location: impl Into<Value>,
) -> (u16, Value) {
    call(
        client,
        Method::PUT,
        &format!("/collections/{collection}/shards/{shard}/snapshots/recover"),
        Some(json!({"location": location.into()})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn qdrant_collection_snapshots_restore_to_the_exact_points() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    for (collection, file) in [
        ("docs", "qdrant-docs.snapshot"),
        ("multi", "qdrant-multi.snapshot"),
    ] {
        let path = qdrant_fixture(file);
        let checksum =
            std::fs::read_to_string(qdrant_fixture(&format!("{file}.checksum"))).unwrap();
        let location = stage(&daemon, &path, file);
        let (status, body) = recover_collection(
            &client,
            collection,
            json!({"location": location, "checksum": checksum.trim(), "priority": "snapshot"}),
        )
        .await;
        assert_eq!(status, 200, "{collection}: {body}");
        let want = qdrant_expected(collection);
        assert_eq!(count(&client, collection).await, want.len() as u64);
        let got = by_id(&all_points(&client, collection).await);
        let differing: Vec<_> = want
            .iter()
            .filter(|(id, p)| got.get(*id) != Some(p))
            .take(2)
            .collect();
        assert!(
            differing.is_empty() && got.len() == want.len(),
            "{collection}: restored points differ from Qdrant's, e.g. {differing:?} vs {:?}",
            differing
                .iter()
                .map(|(id, _)| got.get(*id))
                .collect::<Vec<_>>()
        );
    }
    daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_snapshot_restores_its_state_and_replaces_the_collection() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "docs", 3, 300).await;
    let before = all_points(&client, "docs").await;
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let name = body["result"]["name"].as_str().unwrap().to_string();
    let checksum = body["result"]["checksum"].as_str().unwrap().to_string();

    // Change the collection, then restore the stored state by name.
    upsert_ids(&client, "docs", 300..400, 8).await;
    let (status, _) = delete_points(&client, "docs", json!({"points": [1, 2, 3]})).await;
    assert_eq!(status, 200);
    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": name, "checksum": checksum}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 300);
    assert!(by_id(&all_points(&client, "docs").await) == by_id(&before));

    // The same archive also creates a new collection under another name.
    let stored = daemon.data_dir.join("snapshots/docs").join(&name);
    let location = stage(&daemon, &stored, "copy.snapshot");
    let (status, body) = recover_collection(&client, "copy", json!({"location": location})).await;
    assert_eq!(status, 200, "{body}");
    assert!(by_id(&all_points(&client, "copy").await) == by_id(&before));
    // Writes go on after a restore, and survive a restart.
    upsert(&client, "copy", vec![point(9999, 8)], true).await;
    assert_eq!(count(&client, "copy").await, 301);
    daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_and_broken_archives_change_nothing() {
    // A budget of logical bytes small enough that an attack archive which got past
    // it would show (a dense 3 GiB file), far above what the real cases need.
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(
        data.path(),
        &[],
        &[("SNAPFS__STORAGE__MAX_RESTORE_BYTES", "2147483648")],
    );
    let client = daemon.client();
    seeded_collection(&client, "keep", 2, 100).await;
    let before = by_id(&all_points(&client, "keep").await);
    let (_, body) = call(&client, Method::POST, "/collections/keep/snapshots", None).await;
    let good_name = body["result"]["name"].as_str().unwrap().to_string();
    let good = std::fs::read(daemon.data_dir.join("snapshots/keep").join(&good_name)).unwrap();
    let good_sum = body["result"]["checksum"].as_str().unwrap().to_string();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    // One byte changed inside the largest file's data: only that file's digest in
    // the embedded manifest can tell (no checksum given).
    let mut in_file = good.clone();
    {
        let mut archive = tar::Archive::new(&good[..]);
        let (at, len) = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| (e.raw_file_position() as usize, e.size() as usize))
            .max_by_key(|(_, len)| *len)
            .unwrap();
        assert!(len > 0);
        in_file[at + len / 2] ^= 0x40;
    }
    let gzip = {
        let plain = write("plain.tar", &good);
        run_ok(Command::new("gzip").arg("-k").arg(&plain));
        dir.join("plain.tar.gz")
    };
    let zip = {
        let script = format!(
            "import zipfile\nz = zipfile.ZipFile({:?}, 'w')\nz.writestr('config.json', '{{}}')\nz.close()",
            dir.join("a.zip").to_str().unwrap()
        );
        run_ok(Command::new("python3").arg("-c").arg(script));
        dir.join("a.zip")
    };
    let random: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let shard_snapshot = {
        let name = stored_name(&client, "/collections/keep/shards/0/snapshots").await;
        daemon.data_dir.join("snapshots/keep/shards/0").join(name)
    };
    // Tiny archives that declare huge sizes: GNU sparse entries (a manifest of a
    // TiB, a nested segment's file of 3 GiB, an outer file of 2^62 bytes).
    let sparse_manifest = write(
        "sparse-manifest.tar",
        &tar_bytes(&[sparse_entry("snapfs-manifest.json", 1 << 40, b"{")]),
    );
    let nested_sparse = write(
        "nested-sparse.tar",
        &tar_bytes(&[file_entry(
            "0/segments/6f0c1c8e-0d1e-4b1a-9d8e-1b2c3d4e5f60.tar",
            &tar_bytes(&[sparse_entry("snapshot/files/big", 3 << 30, b"x")]),
        )]),
    );
    let outer_sparse = write(
        "outer-sparse.tar",
        &tar_bytes(&[sparse_entry("0/x", 1 << 62, b"x")]),
    );
    for file in [&sparse_manifest, &nested_sparse, &outer_sparse] {
        assert!(std::fs::metadata(file).unwrap().len() <= 6 << 10);
    }
    let cases: Vec<(&str, PathBuf, Option<String>, &str)> = vec![
        (
            "sparse manifest of 1 TiB",
            sparse_manifest,
            None,
            "embedded manifest must be a plain file",
        ),
        (
            "nested sparse file of 3 GiB",
            nested_sparse,
            None,
            "max_restore_bytes",
        ),
        (
            "outer sparse file of 2^62 bytes",
            outer_sparse,
            None,
            "max_restore_bytes",
        ),
        (
            "truncated",
            write("truncated.tar", &good[..good.len() / 3]),
            None,
            "",
        ),
        (
            "flipped byte, right sidecar",
            write("flipped.tar", &flipped),
            Some(good_sum.clone()),
            "Checksum mismatch: expected",
        ),
        (
            "changed file data, no checksum",
            write("in-file.tar", &in_file),
            None,
            "manifest mismatch for",
        ),
        (
            "wrong checksum",
            write("wrong.tar", &good),
            Some("0".repeat(64)),
            "Checksum mismatch: expected 0000",
        ),
        ("random bytes", write("random.bin", &random), None, ""),
        ("gzip", gzip, None, ""),
        ("zip", zip, None, ""),
        (
            "../ entry",
            python_tar(dir, "dotdot.tar", "add('../evil')"),
            None,
            "`..`",
        ),
        (
            "absolute path",
            python_tar(dir, "abs.tar", "add('/tmp/evil')"),
            None,
            "",
        ),
        (
            "headers too large",
            python_tar(dir, "longname.tar", "add('n' * (17 << 20))"),
            None,
            "more than 16 MiB",
        ),
        (
            "symlink",
            python_tar(
                dir,
                "sym.tar",
                "add('link', type=tarfile.SYMTYPE, linkname='/etc/passwd')",
            ),
            None,
            "not allowed",
        ),
        (
            "hard link",
            python_tar(
                dir,
                "hard.tar",
                "add('a')\nadd('b', type=tarfile.LNKTYPE, linkname='a')",
            ),
            None,
            "not allowed",
        ),
        (
            "device",
            python_tar(
                dir,
                "dev.tar",
                "add('dev', type=tarfile.CHRTYPE, devmajor=1, devminor=3)",
            ),
            None,
            "not allowed",
        ),
        (
            "fifo",
            python_tar(dir, "fifo.tar", "add('fifo', type=tarfile.FIFOTYPE)"),
            None,
            "not allowed",
        ),
        (
            "duplicate entries",
            python_tar(
                dir,
                "dup.tar",
                "add('config.json', b'{}')\nadd('config.json', b'{}')",
            ),
            None,
            "duplicate",
        ),
        (
            "huge declared size",
            python_tar(
                dir,
                "huge.tar",
                "i = tarfile.TarInfo('big'); i.size = 1 << 40; t.fileobj.write(i.tobuf(tarfile.GNU_FORMAT, 'utf-8', 'surrogateescape'))",
            ),
            None,
            "not enough free space",
        ),
        (
            "no config",
            python_tar(dir, "noconf.tar", "add('0/x')"),
            None,
            "config.json is missing",
        ),
        ("shard snapshot", shard_snapshot, None, "shard snapshot"),
    ];
    for (what, file, checksum, words) in cases {
        let location = stage(
            &daemon,
            &file,
            &format!("case-{}", file.file_name().unwrap().to_string_lossy()),
        );
        let mut request = json!({"location": location});
        if let Some(sum) = checksum {
            request["checksum"] = json!(sum);
        }
        let failures_before = restore_failures(&client).await;
        let (status, body) = recover_collection(&client, "keep", request).await;
        // Counted once, under the reason its kind gives (never read from the text).
        let reason = if words.contains("Checksum") || words.starts_with("manifest mismatch") {
            "checksum"
        } else if words.contains("free space") {
            "space"
        } else {
            "invalid"
        };
        let failures_after = restore_failures(&client).await;
        for (label, count) in &failures_after {
            let added = count - failures_before[label];
            let expected = if label == reason { 1.0 } else { 0.0 };
            assert_eq!(
                added, expected,
                "{what}: reason {label} counted {added} times"
            );
        }
        let expected_status = if words.contains("free space") {
            507
        } else {
            400
        };
        assert_eq!(status, expected_status, "{what}: {body}");
        let message = body["status"]["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{what}: `{message}` should say `{words}`"
        );
        assert!(!message.is_empty(), "{what}: no message");
        assert!(
            by_id(&all_points(&client, "keep").await) == before,
            "{what} changed the collection"
        );
        assert!(
            daemon.staging_leftovers().is_empty(),
            "{what} left {:?}",
            daemon.staging_leftovers()
        );
        // The peak so far, not the moment after: a spike while the case ran counts.
        let peak = peak_rss_bytes(daemon.pid());
        assert!(peak < 768 << 20, "{what}: the daemon held {peak} bytes");
        let used = disk_usage(&daemon.data_dir);
        assert!(used < 512 << 20, "{what}: {used} bytes on disk");
    }

    // A shard snapshot whose vectors differ from the collection's does not fit.
    let location = stage(
        &daemon,
        &qdrant_fixture("qdrant-multi-shard-1.snapshot"),
        "foreign-shard.snapshot",
    );
    let (status, body) = recover_shard(&client, "keep", 0, location).await;
    assert_http_error(status, &body, 400, "does not fit this collection");
    assert!(by_id(&all_points(&client, "keep").await) == before);
    daemon.assert_no_staging_leftovers();

    // Locations outside the snapshots directory are forbidden; unknown priorities refused.
    let outside = dir.join("outside.snapshot");
    std::fs::write(&outside, &good).unwrap();
    let (status, body) = recover_collection(
        &client,
        "keep",
        json!({"location": format!("file://{}", outside.display())}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Qdrant's rule: a file:// location is absolute or on localhost; other schemes
    // are refused with words.
    for (location, words) in [
        (
            "file://keep.snapshot",
            "Invalid snapshot URI, file path must be absolute or on localhost",
        ),
        ("file://otherhost/tmp/x.snapshot", "Invalid snapshot URI"),
        ("ftp://example.com/x.snapshot", "is not available"),
    ] {
        let (status, body) =
            recover_collection(&client, "keep", json!({"location": location})).await;
        assert_eq!(status, 400, "{location}: {body}");
        assert!(error_of(&body).contains(words), "{location}: {body}");
    }
    // Percent-escapes and a localhost host are a path like any other.
    let escaped = format!(
        "file://localhost{}",
        outside
            .display()
            .to_string()
            .replace("outside", "%6Futside")
    );
    let (status, body) = recover_collection(&client, "keep", json!({"location": escaped})).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("outside.snapshot"), "{body}");
    let (status, body) = recover_collection(
        &client,
        "keep",
        json!({"location": good_name, "priority": "urgent"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        recover_collection(&client, "keep", json!({"location": "nope.snapshot"})).await;
    assert_eq!(status, 404, "{body}");
    // A collection name with a `/` in it (encoded in the path) is refused.
    let (status, body) = recover_collection(&client, "a%2Fb", json!({"location": good_name})).await;
    assert_eq!(status, 400, "{body}");
    assert!(!daemon.data_dir.join("storage/collections/a").exists());
    assert!(by_id(&all_points(&client, "keep").await) == before);
}

/// A collection snapshot whose shards the engine refuses: its config.json says
/// 16-dim vectors, its segments hold Qdrant's 8-dim ones. Its layout checks out, so
/// it is renamed into place and opened there; the open fails, and the old collection
/// comes back, serves as before and takes writes; the answer is 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_whose_shards_do_not_open_leaves_the_old_one_serving() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "keep", 2, 100).await;
    let before = by_id(&all_points(&client, "keep").await);
    // qdrant-docs.snapshot with one change: the vector size in its config.
    let misfit = daemon.data_dir.join("snapshots/misfit.snapshot");
    std::fs::create_dir_all(misfit.parent().unwrap()).unwrap();
    // GNU tar unpacks and packs it again (its WAL files are sparse entries).
    let unpacked = tempfile::tempdir().unwrap();
    let edit = r#"
set -e
tar -xf "$1" -C "$2"
python3 -c 'import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["params"]["vectors"]["size"] = 16
json.dump(c, open(p, "w"))' "$2/config.json"
cd "$2" && tar -cSf "$3" *
"#;
    run_ok(
        Command::new("sh")
            .args(["-c", edit, "sh"])
            .arg(qdrant_fixture("qdrant-docs.snapshot"))
            .arg(unpacked.path())
            .arg(&misfit),
    );
    let (status, body) = recover_collection(
        &client,
        "keep",
        json!({"location": format!("file://{}", misfit.display())}),
    )
    .await;
    assert_http_error(status, &body, 400, "do not open");
    assert!(by_id(&all_points(&client, "keep").await) == before);
    daemon.assert_no_staging_leftovers();
    upsert(&client, "keep", vec![point(4242, 8)], true).await;
    assert_eq!(count(&client, "keep").await, before.len() as u64 + 1);
    // Into a name no collection has: refused the same, and nothing is created.
    let (status, body) = recover_collection(
        &client,
        "fresh",
        json!({"location": format!("file://{}", misfit.display())}),
    )
    .await;
    assert_http_error(status, &body, 400, "do not open");
    let (status, _) = call(&client, Method::GET, "/collections/fresh", None).await;
    assert_eq!(status, 404);
    assert!(daemon.data_dir.join("storage/collections/keep").exists());
    assert!(!daemon.data_dir.join("storage/collections/fresh").exists());
    daemon.assert_no_staging_leftovers();
    assert!(
        daemon
            .log()
            .contains("the restored collection does not open"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_uploads_a_file_and_checks_its_sidecar() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("recover")
            .args(args)
            .env("SNAPFS_SOCKET", &daemon.socket)
            .output()
            .unwrap()
    };
    // The sidecar beside the file (Qdrant's `.checksum`) is found and checked.
    let multi = qdrant_fixture("qdrant-multi.snapshot");
    let out = cli(&["multi", multi.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("restored collection multi (checksum verified)")
    );
    assert_eq!(count(&client, "multi").await, 1800);

    // A wrong checksum fails with the words a user can act on, and changes nothing.
    let docs = qdrant_fixture("qdrant-docs.snapshot");
    let wrong = "ab".repeat(32);
    let out = cli(&["multi", docs.to_str().unwrap(), "--checksum", &wrong]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Checksum mismatch: expected {wrong}")),
        "{stderr}"
    );
    assert_eq!(count(&client, "multi").await, 1800);

    // --checksum-file with a sha256sum line; the upload replaces the collection.
    let work = tempfile::tempdir().unwrap();
    let sidecar = work.path().join("docs.sha256");
    let sum = std::fs::read_to_string(qdrant_fixture("qdrant-docs.snapshot.checksum")).unwrap();
    std::fs::write(&sidecar, format!("{}  qdrant-docs.snapshot\n", sum.trim())).unwrap();
    let out = cli(&[
        "multi",
        docs.to_str().unwrap(),
        "--checksum-file",
        sidecar.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count(&client, "multi").await, 200);
    let out = cli(&["multi", docs.to_str().unwrap(), "--shard", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("collection snapshot, not a shard snapshot")
    );
    let out = cli(&["multi", docs.to_str().unwrap(), "--priority", "urgent"]);
    assert!(!out.status.success());

    // Without a checksum (no sidecar beside the copy) the archive is not hashed: its
    // SHA-256 would check nothing. The restore still happens.
    let bare = work.path().join("bare.snapshot");
    std::fs::copy(&docs, &bare).unwrap();
    let shown = |log: &str| log.matches("not computed (no checksum given)").count();
    let before = shown(&daemon.log());
    let out = cli(&["bare", bare.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count(&client, "bare").await, 200);
    assert_eq!(shown(&daemon.log()), before + 1, "{}", daemon.log());
}

/// A crash (abort, as `kill -9`) before, at and after the switch: the next start
/// finds the old or the new collection, whole, and no leftovers. The engine opens
/// the restored state once, where it lives; the switch commits only after that
/// open, so a crash between the rename and the commit brings the old state back.
#[cfg(feature = "failpoints")] // SNAPFS_CRASH_AT / SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_around_the_switch_leaves_old_or_new() {
    for (crash_at, shard, new_state) in [
        // Unpacked and checked in staging, nothing switched yet.
        ("restore-staged", false, false),
        ("restore-before-switch", false, false),
        // Renamed into place, not yet opened by the engine.
        ("restore-after-switch", false, false),
        // Opened, not yet committed.
        ("restore-opened", false, false),
        ("restore-committed", false, true),
        ("shard-restore-before-switch", true, false),
        ("shard-restore-after-switch", true, false),
        ("shard-switch-opened", true, false),
        ("shard-switch-committed", true, true),
    ] {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        let daemon = Daemon::start_in(&data, &[], &[("SNAPFS_CRASH_AT", crash_at)]);
        let client = daemon.client();
        seeded_collection(&client, "keep", 1, 50).await;
        let base = if shard {
            "/collections/keep/shards/0/snapshots"
        } else {
            "/collections/keep/snapshots"
        };
        let (_, body) = call(&client, Method::POST, base, None).await;
        let name = body["result"]["name"].as_str().unwrap().to_string();
        let new_points = by_id(&all_points(&client, "keep").await);
        upsert_ids(&client, "keep", 50..120, 8).await;
        let old_points = by_id(&all_points(&client, "keep").await);

        // The restore aborts the daemon at the crash point: the request gets no answer.
        let answered = client
            .raw(
                Method::PUT,
                &format!("{base}/recover"),
                Some(&json!({"location": name})),
            )
            .await;
        assert!(
            answered.is_err(),
            "{crash_at}: the daemon should have crashed: {answered:?}"
        );
        let mut crashed = daemon;
        assert!(!crashed.wait_exit().success());
        assert!(
            crashed
                .log()
                .contains(&format!("SNAPFS_CRASH_AT={crash_at}")),
            "{}",
            crashed.log()
        );
        if crash_at == "restore-staged" {
            // The archive was unpacked into temp_path (DESIGN §3), on the
            // collections' file system, and the crash left it there.
            assert!(
                crashed
                    .staging_leftovers()
                    .iter()
                    .any(|n| n.starts_with("tmp/.restoring-")),
                "{:?}",
                crashed.staging_leftovers()
            );
        }

        let daemon = Daemon::start_in(&data, &[], &[]);
        let client = daemon.client();
        let now = by_id(&all_points(&client, "keep").await);
        let want = if new_state { &new_points } else { &old_points };
        assert!(
            now == *want,
            "{crash_at}: found {} points, want {}",
            now.len(),
            want.len()
        );
        assert!(
            daemon.staging_leftovers().is_empty(),
            "{crash_at}: {:?}",
            daemon.staging_leftovers()
        );
        // And the collection takes writes again.
        upsert(&client, "keep", vec![point(7777, 8)], true).await;
        assert_eq!(count(&client, "keep").await, want.len() as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_full_storage_snapshot_restores_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let full = qdrant_fixture("qdrant-full.snapshot");
    let args = ["--storage-snapshot", full.to_str().unwrap()];
    let daemon = Daemon::start_in(&data, &args, &[]);
    let client = daemon.client();
    for collection in ["docs", "multi"] {
        let want = qdrant_expected(collection);
        assert!(
            by_id(&all_points(&client, collection).await) == want,
            "{collection}"
        );
    }
    upsert(&client, "docs", vec![point(9999, 8)], true).await;
    let mut daemon = daemon;
    assert!(daemon.stop().success());

    // Again without --force: refused, nothing replaced.
    let mut refused = Daemon::spawn(&data, &args, &[]);
    assert!(!refused.wait_exit().success());
    assert!(
        refused.log().contains("already exists; pass --force"),
        "{}",
        refused.log()
    );
    // With --force: the snapshot's collections replace the current ones.
    let forced = Daemon::start_in(&data, &[args[0], args[1], "--force"], &[]);
    assert_eq!(count(&forced.client(), "docs").await, 200);
    forced.assert_no_staging_leftovers();
}

/// A real HTTP server on loopback (Python's), serving `dir` and requiring the
/// `api-key` header `secret`; over HTTPS with `tls` = (certificate, key).
fn keyed_server(dir: &Path, tls: Option<(&Path, &Path)>) -> ServerProcess {
    ServerProcess::start(|port| {
        let script = format!(
            "import functools, http.server\n\
             class H(http.server.SimpleHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       if self.headers.get('api-key') != 'secret':\n\
             \x20           self.send_error(403); return\n\
             \x20       super().do_GET()\n\
             s = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), functools.partial(H, directory={:?}))\n\
             {}\n\
             s.serve_forever()\n",
            dir.to_str().unwrap(),
            match tls {
                Some((cert, key)) => format!(
                    "import ssl; c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain({:?}, {:?}); s.socket = c.wrap_socket(s.socket, server_side=True)",
                    cert.to_str().unwrap(),
                    key.to_str().unwrap()
                ),
                None => String::new(),
            }
        );
        let mut command = Command::new("python3");
        command.arg("-c").arg(script);
        command
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_from_an_http_url_sends_the_api_key() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(
        qdrant_fixture("qdrant-docs.snapshot"),
        served.path().join("docs.snapshot"),
    )
    .unwrap();
    let server = keyed_server(served.path(), None);
    let url = format!("http://127.0.0.1:{}/docs.snapshot", server.port);
    let checksum =
        std::fs::read_to_string(qdrant_fixture("qdrant-docs.snapshot.checksum")).unwrap();

    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": url, "api_key": "wrong"}),
    )
    .await;
    assert_http_error(status, &body, 400, "HTTP 403");
    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": url, "api_key": "secret", "checksum": checksum.trim()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": "https://127.0.0.1:1/x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    daemon.assert_no_staging_leftovers();
}

/// A test certificate authority and a server certificate for 127.0.0.1 it signed,
/// made with the openssl tool: (CA certificate, server certificate, server key).
fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| run_ok(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=snapfs test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// https:// locations: the server's certificate is checked against the system's
/// roots and `SSL_CERT_FILE`; an untrusted one is refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn recovery_from_an_https_url_checks_the_certificate() {
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(
        qdrant_fixture("qdrant-docs.snapshot"),
        served.path().join("docs.snapshot"),
    )
    .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let server = keyed_server(served.path(), Some((&cert, &key)));
    let url = format!("https://127.0.0.1:{}/docs.snapshot", server.port);

    // Not trusted: refused, nothing created or left.
    let untrusting = Daemon::start(&[]);
    let (status, body) = recover_collection(
        &untrusting.client(),
        "docs",
        json!({"location": url, "api_key": "secret"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let error = body["status"]["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("certificate"), "{body}");
    untrusting.assert_no_staging_leftovers();

    // Trusted through SSL_CERT_FILE: restored, with the api-key sent.
    let daemon = Daemon::start_with_env(&[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let client = daemon.client();
    let checksum =
        std::fs::read_to_string(qdrant_fixture("qdrant-docs.snapshot.checksum")).unwrap();
    let (status, body) = recover_collection(
        &client,
        "docs",
        json!({"location": url, "api_key": "secret", "checksum": checksum.trim()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
    daemon.assert_no_staging_leftovers();
}

/// A size-limited file system (a 1 MiB tmpfs) under storage and temp_path: a restore
/// that does not fit is refused up front with words, an upload that fills the disk
/// fails cleanly, and nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn too_little_disk_is_refused_cleanly() {
    let temp = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&temp.path().join("small"), "1m");
    let small = tmpfs.path.clone();
    let storage = small.join("storage");
    let tmp = small.join("tmp");
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[
            ("SNAPFS__STORAGE__STORAGE_PATH", storage.to_str().unwrap()),
            ("SNAPFS__STORAGE__TEMP_PATH", tmp.to_str().unwrap()),
        ],
    );
    let client = daemon.client();
    let multi = qdrant_fixture("qdrant-multi.snapshot"); // 1.4 MB
    let location = stage(&daemon, &multi, "multi.snapshot");
    let (status, body) = recover_collection(&client, "multi", json!({"location": location})).await;
    assert_http_error(status, &body, 507, "not enough free space");
    // An upload (no size announced) fills the disk while it is unpacked: it fails
    // with the same words, and what it had unpacked is removed.
    let out = Command::new(BIN)
        .args(["recover", "multi"])
        .arg(&multi)
        .env("SNAPFS_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough free space"),
        "{out:?}"
    );
    let (status, _) = call(&client, Method::GET, "/collections/multi", None).await;
    assert_eq!(status, 404);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let hidden: Vec<_> = std::fs::read_dir(storage.join("collections"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// `file://` locations: the snapshots directory and `storage.recover_dirs` are
/// allowed; anything else, also through a symlink inside an allowed directory, is
/// 403 and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn file_locations_are_confined_to_the_allowed_directories() {
    let dirs = tempfile::tempdir().unwrap();
    let allowed = dirs.path().join("backups");
    let other = dirs.path().join("elsewhere");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let fixture = qdrant_fixture("qdrant-docs.snapshot");
    std::fs::copy(&fixture, allowed.join("docs.snapshot")).unwrap();
    std::fs::copy(&fixture, other.join("docs.snapshot")).unwrap();
    std::os::unix::fs::symlink(other.join("docs.snapshot"), allowed.join("link.snapshot")).unwrap();
    let daemon =
        Daemon::start_with_env(&[("SNAPFS__STORAGE__RECOVER_DIRS", allowed.to_str().unwrap())]);
    let client = daemon.client();
    for refused in [other.join("docs.snapshot"), allowed.join("link.snapshot")] {
        let location = format!("file://{}", refused.display());
        let (status, body) =
            recover_collection(&client, "docs", json!({"location": location})).await;
        assert_eq!(status, 403, "{location}: {body}");
        assert!(
            body["status"]["error"]
                .as_str()
                .unwrap()
                .contains(allowed.to_str().unwrap()),
            "the error names the allowed directories: {body}"
        );
    }
    let (status, _) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(status, 404);
    let location = format!("file://{}", allowed.join("docs.snapshot").display());
    let (status, body) = recover_collection(&client, "docs", json!({"location": location})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
}

/// A restore gives back the very state: a fresh snapshot of the restored collection
/// (or shard) is byte-identical to the archive restored, whether it replaced the
/// collection or created another one. The collection is first brought to rest by a
/// restart: the engine compacts some journals (the payload tracker's) when it loads a
/// shard, and a restore loads it, so only a snapshot of a loaded state can match.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_the_restored_state_is_byte_identical() {
    let data = tempfile::tempdir().unwrap();
    let mut first = Daemon::start_in(data.path(), &[], &[]);
    seeded_collection(&first.client(), "orig", 2, 300).await;
    first.stop();
    let daemon = Daemon::start_in(data.path(), &[], &[]);
    let client = daemon.client();
    // A stored snapshot of `scope` (`/collections/<c>[/shards/<id>]`): its file,
    // which lives under the same path in the snapshots directory.
    let stored = |scope: &str| {
        let client = daemon.client();
        let scope = scope.to_string();
        let snapshots = daemon.data_dir.join("snapshots");
        async move {
            let (status, body) =
                call(&client, Method::POST, &format!("{scope}/snapshots"), None).await;
            assert_eq!(status, 200, "{body}");
            snapshots
                .join(scope.trim_start_matches("/collections/"))
                .join(body["result"]["name"].as_str().unwrap())
        }
    };
    let original = stored("/collections/orig").await;
    let original_bytes = std::fs::read(&original).unwrap();
    let location = format!("file://{}", original.display());

    // Into a new collection, and over the collection itself.
    for target in ["copy", "orig"] {
        let (status, body) =
            recover_collection(&client, target, json!({"location": location})).await;
        assert_eq!(status, 200, "{body}");
        let again = std::fs::read(stored(&format!("/collections/{target}")).await).unwrap();
        assert!(
            again == original_bytes,
            "{target}: a snapshot of the restored state differs from the archive ({} vs {} bytes)",
            again.len(),
            original_bytes.len()
        );
    }

    // A shard snapshot restored into the same shard of the copy.
    let shard = stored("/collections/orig/shards/1").await;
    let shard_bytes = std::fs::read(&shard).unwrap();
    upsert(
        &client,
        "copy",
        vec![point(9_000, 8), point(9_001, 8)],
        true,
    )
    .await;
    let (status, body) =
        recover_shard(&client, "copy", 1, format!("file://{}", shard.display())).await;
    assert_eq!(status, 200, "{body}");
    let again = std::fs::read(stored("/collections/copy/shards/1").await).unwrap();
    assert!(
        again == shard_bytes,
        "the restored shard's snapshot differs"
    );
}

/// What a crash leaves in temp_path and among the stored snapshots (a full-storage
/// restore's unpacked archive, stored snapshots being written) is gone at the next
/// start; complete snapshots stay.
#[tokio::test(flavor = "multi_thread")]
async fn crash_leftovers_in_temp_and_snapshots_go_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut daemon = Daemon::start_in(&data, &[], &[]);
    seeded_collection(&daemon.client(), "keep", 1, 20).await;
    let stored = stored_name(&daemon.client(), "/collections/keep/snapshots").await;
    assert!(daemon.stop().success());
    let leftovers = [
        data.join("tmp/.full-0b8e/keep.snapshot"),
        data.join("tmp/.snapshot-Xy12.partial"),
        data.join("tmp/.restoring-1234/0/x"),
        data.join("snapshots/keep/.snapshot-Ab34.partial"),
        data.join("snapshots/keep/.tmp-Cd56"),
    ];
    for file in &leftovers {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"left by a crash").unwrap();
    }
    let daemon = Daemon::start_in(&data, &[], &[]);
    for file in &leftovers {
        assert!(!file.exists(), "{} is still there", file.display());
    }
    assert!(!data.join("tmp/.full-0b8e").exists());
    assert!(data.join("snapshots/keep").join(&stored).exists());
    assert_eq!(count(&daemon.client(), "keep").await, 20);
}

/// Recovery from a URL follows redirects but gives the API key only to the origin
/// it was meant for, and gives up on a transfer that stalls.
#[tokio::test(flavor = "multi_thread")]
async fn url_recovery_keeps_the_key_at_home_and_gives_up_on_a_stall() {
    let daemon = Daemon::start_with_env(&[("SNAPFS__STORAGE__TRANSFER_STALL_SECS", "1")]);
    let client = daemon.client();
    let file = qdrant_fixture("qdrant-docs.snapshot");
    // Another origin: serves the snapshot, but refuses a request that carries a key.
    let elsewhere = py_http(
        &file,
        "if self.headers.get('api-key') is not None:\n    self.send_error(400, 'a key reached another origin'); return\n\
         self.send_response(200); self.send_header('content-length', str(len(FILE))); self.end_headers(); self.wfile.write(FILE)",
    );
    // Home: needs the key; /same redirects within itself, /away to the other origin.
    let home = py_http(
        &file,
        &format!(
            "if self.headers.get('api-key') != 'secret':\n    self.send_error(403); return\n\
             if self.path == '/same':\n    self.send_response(302); self.send_header('location', '/docs.snapshot'); self.end_headers(); return\n\
             if self.path == '/away':\n    self.send_response(302); self.send_header('location', 'http://127.0.0.1:{}/docs.snapshot'); self.end_headers(); return\n\
             self.send_response(200); self.send_header('content-length', str(len(FILE))); self.end_headers(); self.wfile.write(FILE)",
            elsewhere.port
        ),
    );
    for path in ["/same", "/away"] {
        let (status, body) = recover_collection(
            &client,
            "docs",
            json!({"location": home.url(path), "api_key": "secret"}),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(count(&client, "docs").await, 200);
    }
    // A server that sends half the snapshot, then nothing.
    let stalled = py_http(
        &file,
        "self.send_response(200); self.send_header('content-length', str(len(FILE))); self.end_headers()\n\
         self.wfile.write(FILE[:len(FILE) // 2]); self.wfile.flush(); time.sleep(60)",
    );
    let (status, body) =
        recover_collection(&client, "stalled", json!({"location": stalled.url("/x")})).await;
    assert_http_error(status, &body, 400, "stalled");
    let (status, _) = call(&client, Method::GET, "/collections/stalled", None).await;
    assert_eq!(status, 404);
    // An abandoned restore's staging goes as soon as its unpacker has stopped.
    daemon.wait_no_staging_leftovers();
}

/// `snapfs_restore_failures_total` by reason, from `/metrics`.
async fn restore_failures(client: &Client) -> std::collections::BTreeMap<String, f64> {
    let text = String::from_utf8(fetch(client, "/metrics").await).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("snapfs_restore_failures_total{reason=\""))
        .map(|rest| {
            let (label, value) = rest.split_once("\"} ").unwrap();
            (label.to_string(), value.trim().parse().unwrap())
        })
        .collect()
}

/// A freeze whose shard is switched (restored) between placing its cut and settling
/// the frozen files builds its view again: a reader never sees "shutting down"
/// because a restore ran (the 30-minute soak hit this once, as an EBUSY lookup).
#[cfg(feature = "failpoints")] // SNAPFS_CRASH_AT / SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_restored_under_a_freeze_makes_the_view_build_again() {
    // Every freeze waits 3 s after its cut: the restore below lands in that window.
    let temp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &[],
        &[("SNAPFS_PAUSE_AT", "freeze-cut-placed:3000")],
    );
    let pauses = || {
        daemon
            .log()
            .matches("SNAPFS_PAUSE_AT=freeze-cut-placed")
            .count()
    };
    let client = daemon.client();
    seeded_collection(&client, "race", 1, 50).await;
    let name = stored_name(&client, "/collections/race/shards/0/snapshots").await;
    let stored = daemon.data_dir.join("snapshots/race/shards/0").join(&name);
    let location = stage(&daemon, &stored, "race-shard.snapshot");
    // Unflushed changes: the freeze must flush, which needs the shard's engine.
    upsert_ids(&client, "race", 50..80, 8).await;

    let before = pauses();
    let reader = {
        let client = daemon.client();
        tokio::spawn(async move { fetch(&client, "/collections/race/shards/0/snapshot").await })
    };
    // The reader's freeze is cut and waits: now the restore.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pauses() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never froze the shard"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = recover_shard(&client, "race", 0, location).await;
    assert_eq!(status, 200, "{body}");
    let archive = reader.await.expect("the live stream answers");
    // The race was hit: the reader's freeze was cut twice, before the switch and
    // again after it, when the build found its shard switched under it.
    assert!(pauses() >= before + 2, "{}", daemon.log());
    // The view was built again, of the restored shard: a whole archive.
    let file = daemon.data_dir.join("after-switch.snapshot");
    std::fs::write(&file, &archive).unwrap();
    run_ok(Command::new("tar").arg("-tf").arg(&file));
    assert_eq!(count(&client, "race").await, 50);
    // …and of the restored state (50 points), not the 80 frozen before the switch:
    // restoring the streamed archive leaves the shard at 50.
    upsert_ids(&client, "race", 80..90, 8).await;
    let streamed = stage(&daemon, &file, "streamed.snapshot");
    let (status, body) = recover_shard(&client, "race", 0, streamed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "race").await, 50);
    assert!(!daemon.log().contains("shutting down"), "{}", daemon.log());
}

/// A stored snapshot restored by name, with no checksum in the request, is checked
/// against the checksum stored beside it: a sidecar that does not match refuses the
/// restore and changes nothing (the same rule in every store; S3 had it first).
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_snapshot_is_checked_against_its_stored_checksum() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 50).await;
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let name = body["result"]["name"].as_str().unwrap().to_string();
    upsert_ids(&client, "docs", 50..60, 8).await;
    let before = all_points(&client, "docs").await;

    let sidecar = daemon
        .data_dir
        .join("snapshots/docs")
        .join(format!("{name}.checksum"));
    std::fs::write(&sidecar, "0".repeat(64)).unwrap();
    let (status, body) = recover_collection(&client, "docs", json!({"location": name})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("checksum"),
        "{body}"
    );
    assert!(by_id(&all_points(&client, "docs").await) == by_id(&before));
    daemon.assert_no_staging_leftovers();
}
