//! The mount (DESIGN §2), through real FUSE mounts in temp dirs and the real tools
//! users point at it: ls, stat, cp, cat, dd, tar, sha256sum, rsync, rm.

use crate::support;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use support::*;

/// Write a file and close it, returning close's own error (std ignores it on drop).
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut file = std::fs::File::create(path)?;
    file.write_all(data)?;
    let fd = file.into_raw_fd();
    // SAFETY: closing the descriptor we own exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Print what `du` (apparent and allocated) and `df` say of `dir`, for the log of a
/// failing test.
fn show_disk(dir: &Path) {
    for args in [
        &["du", "-sh", "--apparent-size"][..],
        &["du", "-sh"],
        &["df"],
    ] {
        let out = Command::new(args[0])
            .args(&args[1..])
            .arg(dir)
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn errno_of(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => panic!("the operation succeeded but must fail"),
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_follows_the_design_and_listings_follow_changes() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "docs", 2, 50).await;

    assert_eq!(
        names(&m.mnt),
        [
            "README.txt",
            "collections",
            "live",
            "metrics",
            "recover",
            "snapshots",
            "storage.snapshot"
        ]
    );
    eventually("docs in live/", || {
        names(&m.path("live")) == ["docs.snapshot", "docs.snapshot.sha256"]
    });
    assert_eq!(names(&m.path("collections")), ["docs"]);
    assert_eq!(
        names(&m.path("collections/docs")),
        ["info.json", "recover", "shards", "snapshots"]
    );
    assert_eq!(names(&m.path("collections/docs/shards")), ["0", "1"]);
    assert_eq!(
        names(&m.path("collections/docs/shards/1")),
        [
            "docs-shard-1.snapshot",
            "manifest.json",
            "recover",
            "snapshots"
        ]
    );
    assert!(names(&m.path("recover")).is_empty());
    assert!(names(&m.path("snapshots")).is_empty());

    let info: Value =
        serde_json::from_slice(&std::fs::read(m.path("collections/docs/info.json")).unwrap())
            .unwrap();
    assert_eq!(info["points_count"], 50, "{info}");
    assert_eq!(info["shards"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["config"]["params"]["shard_number"], 2, "{info}");
    assert!(info["state_version"].as_u64().unwrap() > 0, "{info}");
    let readme = std::fs::read_to_string(m.path("README.txt")).unwrap();
    assert!(readme.contains("sha256sum -c"), "{readme}");
    let metrics = std::fs::read_to_string(m.path("metrics")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"snapshot_creation_running{id="docs"} 0"#),
        "{metrics}"
    );
    let mut http_metrics = Vec::new();
    client
        .download(
            "/metrics",
            |c| {
                http_metrics.extend_from_slice(c);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&http_metrics)
            .contains("snapfs_snapshot_bytes_streamed_total{via=\"fuse\"}")
    );

    // storage.snapshot: every collection, nested, with the full-storage config.
    let full = std::fs::read(m.path("storage.snapshot")).unwrap();
    assert_eq!(
        std::fs::metadata(m.path("storage.snapshot")).unwrap().len(),
        full.len() as u64
    );
    let listing = run_ok(
        Command::new("tar")
            .arg("-tf")
            .arg(m.path("storage.snapshot")),
    );
    assert!(
        listing.lines().any(|l| l == "docs.snapshot")
            && listing.lines().any(|l| l == "config.json"),
        "{listing}"
    );

    // Unknown names are ENOENT, at every level.
    for missing in [
        "nope",
        "live/nope.snapshot",
        "collections/nope",
        "collections/docs/shards/7",
    ] {
        assert_eq!(
            errno_of(std::fs::metadata(m.path(missing))),
            libc::ENOENT,
            "{missing}"
        );
    }

    // Collections come and go.
    settled_collection(&client, "other", 1, 5).await;
    eventually("other appears", || {
        names(&m.path("live")).contains(&"other.snapshot".to_string())
            && names(&m.path("collections")) == ["docs", "other"]
    });
    let (status, body) = call(&client, Method::DELETE, "/collections/other", None).await;
    assert_eq!(status, 200, "{body}");
    eventually("other disappears", || {
        names(&m.path("collections")) == ["docs"] && !m.path("live/other.snapshot").exists()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn live_files_work_with_cp_sha256sum_tar_and_dd() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "docs", 2, 300).await;
    let work = tempfile::tempdir().unwrap();
    let live = m.path("live/docs.snapshot");

    // Exact size before anything is read, and the mtime is the last change.
    let before = std::fs::metadata(&live).unwrap();
    let copy = work.path().join("a.snapshot");
    run_ok(Command::new("cp").arg(&live).arg(&copy));
    let bytes = std::fs::read(&copy).unwrap();
    assert_eq!(
        before.len(),
        bytes.len() as u64,
        "st_size equals the bytes read"
    );
    assert_eq!(before.blksize(), 1 << 20);

    // Deterministic: the same state gives the same bytes, also through `cat`.
    let again = run_ok_bytes(Command::new("cat").arg(&live));
    assert!(again == bytes, "a second read differs");

    // The shard file equals the HTTP live stream of the same shard.
    let shard_file =
        std::fs::read(m.path("collections/docs/shards/0/docs-shard-0.snapshot")).unwrap();
    let mut http = Vec::new();
    client
        .download(
            "/collections/docs/shards/0/snapshot",
            |c| {
                http.extend_from_slice(c);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap();
    assert!(shard_file == http, "mount and HTTP shard snapshots differ");

    // sha256sum -c from inside live/, and against the copy.
    let out = run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("docs.snapshot.sha256")
            .current_dir(m.path("live")),
    );
    assert!(out.contains("docs.snapshot: OK"), "{out}");
    let line = std::fs::read_to_string(m.path("live/docs.snapshot.sha256")).unwrap();
    let sum = run_ok(Command::new("sha256sum").arg(&copy));
    assert_eq!(
        line.split_whitespace().next(),
        sum.split_whitespace().next()
    );
    assert_eq!(
        std::fs::metadata(m.path("live/docs.snapshot.sha256"))
            .unwrap()
            .len(),
        line.len() as u64
    );

    // tar lists it without complaint.
    let output = Command::new("tar").arg("-tvf").arg(&live).output().unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{output:?}"
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(listing.contains("config.json") && listing.contains("snapfs-manifest.json"));

    // Random access: dd skip= against the full copy, at several offsets.
    for (bs, skip, count) in [(4096u64, 3u64, 5u64), (1000, 77, 3), (65536, 1, 2)] {
        let out = run_ok_bytes(Command::new("dd").args([
            format!("if={}", live.display()),
            format!("bs={bs}"),
            format!("skip={skip}"),
            format!("count={count}"),
            "status=none".into(),
        ]));
        let start = (bs * skip) as usize;
        let end = (start + (bs * count) as usize).min(bytes.len());
        assert!(out == bytes[start..end], "dd bs={bs} skip={skip} differs");
    }
    // Seeking inside one open file, backwards too.
    let mut file = std::fs::File::open(&live).unwrap();
    let mut buf = vec![0u8; 1500];
    for offset in [bytes.len() as u64 - 1500, 10, 70_000, 0] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.read_exact(&mut buf).unwrap();
        assert!(buf == bytes[offset as usize..offset as usize + 1500]);
    }
    // An open file holds its freeze: a wait=true update below would wait for it.
    drop(file);

    // ls -l, stat, find, du behave.
    run_ok(Command::new("ls").arg("-lR").arg(&m.mnt));
    let found = run_ok(
        Command::new("find")
            .arg(&m.mnt)
            .arg("-name")
            .arg("*.snapshot"),
    );
    assert!(found.contains("docs-shard-1.snapshot"), "{found}");
    run_ok(Command::new("du").arg("-s").arg(m.path("live")));
    let stat = run_ok(Command::new("stat").arg("-c").arg("%s %Y").arg(&live));
    assert_eq!(stat.trim(), format!("{} {}", before.len(), before.mtime()));

    // A change moves the mtime and the bytes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    upsert(&client, "docs", vec![point(1000, 8)], true).await;
    wait_settled(&client, "docs").await;
    let after = std::fs::metadata(&live).unwrap();
    assert!(after.modified().unwrap() > before.modified().unwrap());
    let changed = std::fs::read(&live).unwrap();
    assert_eq!(after.len(), changed.len() as u64);
    assert!(changed != bytes);
}

fn run_ok_bytes(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    output.stdout
}

fn rsync(src: &Path, dst: &Path) -> String {
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg("--stats")
            .arg("--out-format=xfer %n")
            .arg(format!("{}/", src.display()))
            .arg(dst),
    )
}

fn stat_line(output: &str, key: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}` in rsync output:\n{output}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rsync_skips_unchanged_collections() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "alpha", 1, 100).await;
    settled_collection(&client, "beta", 2, 100).await;
    let backup = tempfile::tempdir().unwrap();
    let dst = backup.path().join("live");

    let first = rsync(&m.path("live"), &dst);
    assert!(
        first.contains("xfer alpha.snapshot") && first.contains("xfer beta.snapshot"),
        "{first}"
    );
    let second = rsync(&m.path("live"), &dst);
    assert_eq!(
        stat_line(&second, "Literal data:"),
        "Literal data: 0 bytes",
        "{second}"
    );
    let files_sent = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("xfer ") && !l.ends_with('/'))
            .map(String::from)
            .collect()
    };
    assert!(
        files_sent(&second).is_empty(),
        "nothing is sent the second time:\n{second}"
    );

    // rsync's quick check compares whole seconds: a change within the same second
    // as the copied state, of the same size, is not seen (docs/SEMANTICS.md, known
    // limit). Step past the second so this checks what the mount promises.
    std::thread::sleep(Duration::from_millis(1100));
    upsert(&client, "alpha", vec![point(5000, 8)], true).await;
    wait_settled(&client, "alpha").await;
    let third = rsync(&m.path("live"), &dst);
    assert_eq!(
        files_sent(&third),
        ["xfer alpha.snapshot", "xfer alpha.snapshot.sha256"],
        "{third}"
    );
    // The backup verifies and equals what the mount serves now.
    let out = run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("alpha.snapshot.sha256")
            .current_dir(&dst),
    );
    assert!(out.contains("alpha.snapshot: OK"), "{out}");
    assert!(
        std::fs::read(dst.join("beta.snapshot")).unwrap()
            == std::fs::read(m.path("live/beta.snapshot")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readers_while_points_are_written() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "one", 2, 200).await;
    settled_collection(&client, "two", 1, 200).await;

    // Two processes reading one unchanged file at once get identical bytes.
    let live = m.path("live/one.snapshot");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| std::fs::read(&live).unwrap());
        let b = s.spawn(|| std::fs::read(&live).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a == b, "two concurrent readers of one state differ");

    // Writers keep upserting into both while both are copied, several times; every
    // copy is a whole, self-consistent archive (its manifest verifies).
    let writer_client = m.client();
    let writer = tokio::spawn(async move {
        for round in 0..40u64 {
            let points: Vec<Value> = (0..20).map(|i| point(10_000 + round * 20 + i, 8)).collect();
            upsert(&writer_client, "one", points.clone(), false).await;
            upsert(&writer_client, "two", points, false).await;
        }
    });
    let work = tempfile::tempdir().unwrap();
    let mnt = m.mnt.clone();
    let dir = work.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        for round in 0..3 {
            std::thread::scope(|s| {
                for c in ["one", "two"] {
                    let (mnt, dir) = (&mnt, &dir);
                    s.spawn(move || {
                        let copy = dir.join(format!("{c}-{round}.snapshot"));
                        run_ok(
                            Command::new("cp")
                                .arg(mnt.join(format!("live/{c}.snapshot")))
                                .arg(&copy),
                        );
                        run_ok(Command::new(BIN).arg("verify").arg(&copy));
                    });
                }
            });
        }
    })
    .await
    .unwrap();
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_snapshots_are_plain_files_and_rm_deletes_them() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "docs", 1, 100).await;
    let name = stored_name(&client, "/collections/docs/snapshots").await;
    let shard_name = stored_name(&client, "/collections/docs/shards/0/snapshots").await;

    let dir = m.path("collections/docs/snapshots");
    eventually("stored snapshot listed", || {
        names(&dir) == [name.clone(), format!("{name}.checksum")]
    });
    let file = dir.join(&name);
    let on_disk = m.daemon.data_dir.join("snapshots/docs").join(&name);
    let meta = std::fs::metadata(&file).unwrap();
    let disk_meta = std::fs::metadata(&on_disk).unwrap();
    assert_eq!(meta.len(), disk_meta.len());
    assert_eq!(meta.mtime(), disk_meta.mtime());
    let work = tempfile::tempdir().unwrap();
    run_ok(Command::new("cp").arg(&file).arg(work.path()));
    assert!(std::fs::read(work.path().join(&name)).unwrap() == std::fs::read(&on_disk).unwrap());
    let sum = run_ok(Command::new("sha256sum").arg(&file));
    let checksum = std::fs::read_to_string(dir.join(format!("{name}.checksum"))).unwrap();
    assert_eq!(sum.split_whitespace().next().unwrap(), checksum);
    let shard_dir = m.path("collections/docs/shards/0/snapshots");
    eventually("shard snapshot listed", || {
        names(&shard_dir).contains(&shard_name)
    });

    // Writing over a stored snapshot is refused; a checksum alone cannot be removed.
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().write(true).open(&file)),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::remove_file(dir.join(format!("{name}.checksum")))),
        libc::EPERM
    );

    // rm deletes the snapshot with its checksum; the HTTP list agrees.
    std::fs::remove_file(&file).unwrap();
    assert!(!on_disk.exists());
    assert!(
        !m.daemon
            .data_dir
            .join(format!("snapshots/docs/{name}.checksum"))
            .exists()
    );
    let (_, list) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(list["result"], json!([]), "{list}");
    eventually("listing empty", || names(&dir).is_empty());
    assert_eq!(errno_of(std::fs::remove_file(&file)), libc::ENOENT);
    run_ok(Command::new("rm").arg(shard_dir.join(&shard_name)));
    let (_, list) = call(
        &client,
        Method::GET,
        "/collections/docs/shards/0/snapshots",
        None,
    )
    .await;
    assert_eq!(list["result"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_outside_stored_snapshots_fail_with_the_right_errno() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "docs", 1, 10).await;
    let live = m.path("live/docs.snapshot");
    let write = |p: &Path| std::fs::write(p, b"x");

    assert_eq!(errno_of(write(&m.path("new-file"))), libc::EROFS);
    assert_eq!(errno_of(write(&m.path("live/new.snapshot"))), libc::EROFS);
    // Not a snapshot: the restore fails at close (EIO), leaves an .error, changes nothing.
    assert_eq!(
        errno_of(write_and_close(&m.path("recover/docs.snapshot"), b"x")),
        libc::EIO
    );
    std::fs::remove_file(m.path("recover/docs.snapshot.error")).unwrap();
    assert_eq!(errno_of(write(&live)), libc::EROFS);
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().append(true).open(&live)),
        libc::EROFS
    );
    assert_eq!(errno_of(std::fs::remove_file(&live)), libc::EROFS);
    assert_eq!(
        errno_of(std::fs::remove_file(m.path("collections/docs/info.json"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::create_dir(m.path("collections/new"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::remove_dir(m.path("collections/docs/recover"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::rename(&live, m.path("live/other.snapshot"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", m.path("live/link"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(std::fs::hard_link(&live, m.path("live/hard"))),
        libc::EPERM
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        errno_of(std::fs::set_permissions(
            &live,
            std::fs::Permissions::from_mode(0o644)
        )),
        libc::EPERM
    );
    let touch = Command::new("touch").arg(&live).output().unwrap();
    assert!(!touch.status.success());
    assert!(
        String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
        "{touch:?}"
    );
    // Nothing changed: still one collection, same points, same listing.
    assert_eq!(count(&client, "docs").await, 10);
    assert_eq!(
        names(&m.path("live")),
        ["docs.snapshot", "docs.snapshot.sha256"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_collections_reader_finishes_its_frozen_view() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "gone", 2, 400).await;
    let live = m.path("live/gone.snapshot");
    let expected = std::fs::read(&live).unwrap();
    let mut file = std::fs::File::open(&live).unwrap();
    let mut got = vec![0u8; expected.len() / 2];
    file.read_exact(&mut got).unwrap();
    let (status, body) = call(&client, Method::DELETE, "/collections/gone", None).await;
    assert_eq!(status, 200, "{body}");
    match file.read_to_end(&mut got) {
        Ok(_) => assert!(got == expected, "the reader got bytes of another state"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    drop(file);
    eventually("gone is gone", || !live.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_reader_active_unmounts_and_exits() {
    let mut m = MountedDaemon::start(&[]);
    let client = m.client();
    settled_collection(&client, "docs", 1, 200).await;
    let mut file = std::fs::File::open(m.path("live/docs.snapshot")).unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_exact(&mut buf).unwrap();
    let status = m.daemon.stop();
    assert!(status.success(), "exit {status}; log:\n{}", m.daemon.log());
    assert!(!is_mounted(&m.mnt), "still mounted");
    assert!(
        m.daemon.log().contains("aborting its connection"),
        "{}",
        m.daemon.log()
    );
    // The reader gets an error, never bytes of nothing.
    let mut rest = Vec::new();
    assert!(file.read_to_end(&mut rest).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_mounts_are_cleared_and_bad_mount_points_refused() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mnt = temp.path().join("mnt");
    let mount_arg = ["--mount", mnt.to_str().unwrap()];
    let mut daemon = Daemon::start_in(&data, &mount_arg, &[]);
    assert!(is_mounted(&mnt));
    daemon.kill9();
    // The crashed daemon's mount is stale: ENOTCONN (read_dir: never from a cache).
    assert_eq!(errno_of(std::fs::read_dir(&mnt)), libc::ENOTCONN);
    let mut daemon = Daemon::start_in(&data, &mount_arg, &[]);
    assert!(
        daemon.log().contains("clearing a stale mount"),
        "{}",
        daemon.log()
    );
    assert!(
        std::fs::read_to_string(mnt.join("README.txt"))
            .unwrap()
            .contains("snapfs")
    );
    // A second daemon cannot take the same mount point (nor the same data dir).
    let other = temp.path().join("data2");
    let mut second = Daemon::spawn(&other, &mount_arg, &[]);
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(
        second.log().contains("already a mount point"),
        "{}",
        second.log()
    );
    assert!(daemon.stop().success());
    assert!(!is_mounted(&mnt));

    for (mount, words) in [
        (data.join("inside"), "inside the daemon's directory"),
        (
            temp.path().to_path_buf(),
            "would hide the daemon's own directory",
        ),
    ] {
        let mut refused = Daemon::spawn(&data, &["--mount", mount.to_str().unwrap()], &[]);
        let status = refused.wait_exit();
        assert!(!status.success());
        assert!(refused.log().contains(words), "{}", refused.log());
        assert!(!is_mounted(&mount));
    }
    let file = temp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let mut refused = Daemon::spawn(&data, &["--mount", file.to_str().unwrap()], &[]);
    assert!(!refused.wait_exit().success());
    assert!(
        refused.log().contains("is not a directory"),
        "{}",
        refused.log()
    );
}

/// A daemon mounted in `dir` with collection "docs" (2 shards, 300 points, settled)
/// and its live file. Its freeze limit is 0.3 s: a reader holding a state open lets
/// a change under it be applied soon (the state's files are copied aside).
async fn docs_with_short_freezes(dir: &Path) -> (Daemon, std::path::PathBuf) {
    let mnt = dir.join("mnt");
    let daemon = Daemon::start_in(
        &dir.join("data"),
        &["--mount", mnt.to_str().unwrap()],
        &[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", "0.3")],
    );
    settled_collection(&daemon.client(), "docs", 2, 300).await;
    (daemon, mnt.join("live/docs.snapshot"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_file_keeps_its_state_while_new_readers_see_the_next() {
    // A short freeze limit lets a new state appear while an old reader is still open
    // (its files are copied aside), so two states of one file are read at once.
    let temp = tempfile::tempdir().unwrap();
    let (daemon, live) = docs_with_short_freezes(temp.path()).await;
    let client = daemon.client();
    let first_state = std::fs::read(&live).unwrap();

    // A reader opens the first state and reads half of it.
    let mut old_reader = std::fs::File::open(&live).unwrap();
    let mut old_bytes = vec![0u8; first_state.len() / 2];
    old_reader.read_exact(&mut old_bytes).unwrap();

    // The collection changes; past the freeze limit the reader's view is copied
    // aside and the change is applied while it is still open.
    upsert(&client, "docs", vec![point(7777, 8)], true).await;
    wait_settled(&client, "docs").await;

    // A new reader sees the new state, whole and valid.
    let second_state = std::fs::read(&live).unwrap();
    assert!(second_state != first_state);
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("docs.snapshot");
    std::fs::write(&copy, &second_state).unwrap();
    run_ok(Command::new(BIN).arg("verify").arg(&copy));

    // The old reader finishes with exactly the first state: no page of the new one.
    old_reader.read_to_end(&mut old_bytes).unwrap();
    assert!(old_bytes == first_state, "the open file mixed two states");
    old_reader.seek(SeekFrom::Start(0)).unwrap();
    let mut reread = Vec::new();
    old_reader.read_to_end(&mut reread).unwrap();
    assert!(reread == first_state, "re-reading the old handle changed");
    drop(old_reader);

    // And readers after it see the new state again.
    assert!(std::fs::read(&live).unwrap() == second_state);
}

/// A state that moved on leaves the kernel's page cache at once (the mount's
/// dropper), not at its next reader's open, which would wait for the kernel to free
/// it; a state a handle still reads stays until that handle closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_moved_on_leaves_the_page_cache_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let (daemon, live) = docs_with_short_freezes(temp.path()).await;
    let client = daemon.client();
    let drops = || async {
        let text = String::from_utf8(fetch(&client, "/metrics").await).unwrap();
        sample(&text, "snapfs_fuse_cache_drops_total").unwrap()
    };
    let drops_reach = |n: f64| async move {
        for _ in 0..100 {
            if drops().await >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drops().await
    };

    // Read through the cache, then held open by a reader while the collection
    // changes (applied once the reader's freeze is copied aside): nothing is
    // dropped under it.
    let first = std::fs::read(&live).unwrap();
    let mut held = std::fs::File::open(&live).unwrap();
    upsert(&client, "docs", vec![point(7777, 8)], true).await;
    wait_settled(&client, "docs").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        drops().await,
        0.0,
        "a state an open handle reads was dropped"
    );
    let mut held_bytes = Vec::new();
    held.read_to_end(&mut held_bytes).unwrap();
    assert!(held_bytes == first, "the open handle's state changed");
    // Closed, it goes (the dropper looks again at least every second).
    drop(held);
    assert_eq!(drops_reach(1.0).await, 1.0);
    wait_settled(&client, "docs").await;

    // The new state is read and closed; the next change drops it with no open of
    // the file in between.
    let second = std::fs::read(&live).unwrap();
    assert!(second != first);
    upsert(&client, "docs", vec![point(7778, 8)], true).await;
    assert_eq!(drops_reach(2.0).await, 2.0);

    // Readers after it get the newest state, whole and valid, and nothing more is
    // dropped without a change.
    wait_settled(&client, "docs").await;
    let third = std::fs::read(&live).unwrap();
    assert!(third != second);
    let copy = temp.path().join("third.snapshot");
    std::fs::write(&copy, &third).unwrap();
    run_ok(Command::new(BIN).arg("verify").arg(&copy));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(drops().await, 2.0);
}

// ---- restore by writing into recover/ ----

#[tokio::test(flavor = "multi_thread")]
async fn writing_into_recover_restores_with_cp_dd_rsync_and_sidecars() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    let docs = qdrant_fixture("qdrant-docs.snapshot");
    let checksum =
        std::fs::read_to_string(qdrant_fixture("qdrant-docs.snapshot.checksum")).unwrap();

    // cp into recover/<c>.snapshot creates the collection; the file leaves recover/.
    run_ok(
        Command::new("cp")
            .arg(&docs)
            .arg(m.path("recover/docs.snapshot")),
    );
    assert_eq!(count(&client, "docs").await, 200);
    assert!(names(&m.path("recover")).is_empty());
    eventually("docs listed", || {
        names(&m.path("collections")).contains(&"docs".to_string())
    });

    // dd into a collection's recover/ (any name) replaces it.
    upsert(&client, "docs", vec![point(5000, 8)], true).await;
    assert_eq!(count(&client, "docs").await, 201);
    run_ok(Command::new("dd").args([
        format!("if={}", docs.display()),
        format!(
            "of={}",
            m.path("collections/docs/recover/backup.tar").display()
        ),
        "bs=64k".into(),
        "status=none".into(),
    ]));
    assert_eq!(count(&client, "docs").await, 200);

    // rsync writes a hidden temp file and renames it: the rename restores.
    upsert(&client, "docs", vec![point(5001, 8)], true).await;
    let src = tempfile::tempdir().unwrap();
    std::fs::copy(&docs, src.path().join("docs.snapshot")).unwrap();
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(src.path().join("docs.snapshot"))
            .arg(m.path("recover/")),
    );
    assert_eq!(count(&client, "docs").await, 200);

    // mv from another file system (copy, then unlink the source).
    upsert(&client, "docs", vec![point(5003, 8)], true).await;
    let moved = src.path().join("moved.snapshot");
    std::fs::copy(&docs, &moved).unwrap();
    run_ok(
        Command::new("mv")
            .arg(&moved)
            .arg(m.path("collections/docs/recover/")),
    );
    assert_eq!(count(&client, "docs").await, 200);
    assert!(!moved.exists());

    // curl -o (a file:// URL: no server needed) writes like any other tool.
    upsert(&client, "docs", vec![point(5004, 8)], true).await;
    run_ok(
        Command::new("curl")
            .args(["-sS", "-o"])
            .arg(m.path("collections/docs/recover/fetched.snapshot"))
            .arg(format!("file://{}", docs.display())),
    );
    assert_eq!(count(&client, "docs").await, 200);

    // A sidecar written first is used: the right one passes, a wrong one fails cp,
    // leaves docs.snapshot.error and changes nothing.
    std::fs::write(
        m.path("recover/docs.snapshot.sha256"),
        format!("{}  docs.snapshot\n", checksum.trim()),
    )
    .unwrap();
    run_ok(
        Command::new("cp")
            .arg(&docs)
            .arg(m.path("recover/docs.snapshot")),
    );
    upsert(&client, "docs", vec![point(5002, 8)], true).await;
    std::fs::write(m.path("recover/docs.snapshot.checksum"), "0".repeat(64)).unwrap();
    let output = Command::new("cp")
        .arg(&docs)
        .arg(m.path("recover/docs.snapshot"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "cp must fail: {output:?}");
    assert_eq!(
        count(&client, "docs").await,
        201,
        "a refused restore changes nothing"
    );
    let error = std::fs::read_to_string(m.path("recover/docs.snapshot.error")).unwrap();
    assert!(
        error.contains("Checksum mismatch: expected 0000"),
        "{error}"
    );
    std::fs::remove_file(m.path("recover/docs.snapshot.error")).unwrap();
    assert!(
        names(&m.path("recover")).is_empty(),
        "{:?}",
        names(&m.path("recover"))
    );

    // Garbage fails the same way, as soon as the unpacker sees it is not a tar: the
    // write fails (cp stops there), the `.error` says why; a bad name is refused at
    // create.
    let junk = src.path().join("junk");
    let noise: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&junk, &noise).unwrap();
    let output = Command::new("cp")
        .arg(&junk)
        .arg(m.path("recover/junk.snapshot"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Input/output error"),
        "{output:?}"
    );
    let error = std::fs::read_to_string(m.path("recover/junk.snapshot.error")).unwrap();
    assert!(error.contains("not a readable tar archive"), "{error}");
    assert!(!names(&m.path("collections")).contains(&"junk".to_string()));
    assert_eq!(
        errno_of(std::fs::write(m.path("recover/no-extension"), b"x")),
        libc::EINVAL
    );
    // A collection snapshot dropped into a shard's recover/ is refused with words.
    let output = Command::new("cp")
        .arg(&docs)
        .arg(m.path("collections/docs/shards/0/recover/docs.snapshot"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error =
        std::fs::read_to_string(m.path("collections/docs/shards/0/recover/docs.snapshot.error"))
            .unwrap();
    assert!(
        error.contains("collection snapshot, not a shard snapshot"),
        "{error}"
    );
    assert_eq!(count(&client, "docs").await, 201);
    // An out-of-order write is refused (EINVAL) and nothing is restored or left.
    let output = Command::new("dd")
        .args([
            format!("if={}", docs.display()),
            format!("of={}", m.path("recover/docs.snapshot").display()),
            "bs=1k".into(),
            "seek=1".into(),
            "conv=notrunc".into(),
            "status=none".into(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Invalid argument"),
        "{output:?}"
    );
    assert_eq!(count(&client, "docs").await, 201);
    // `.error` files are snapfs's to write; a sidecar without a digest fails the restore.
    assert_eq!(
        errno_of(std::fs::write(m.path("recover/x.snapshot.error"), b"x")),
        libc::EPERM
    );
    // A sidecar holds one line: more than 4 KiB is refused and nothing is kept.
    assert_eq!(
        errno_of(std::fs::write(
            m.path("recover/x.snapshot.sha256"),
            vec![b'a'; 5000]
        )),
        libc::EINVAL
    );
    // The refused file goes at its release, which the kernel sends after close returns.
    eventually("the refused sidecar to go", || {
        !names(&m.path("recover")).contains(&"x.snapshot.sha256".to_string())
    });
    std::fs::write(m.path("recover/docs.snapshot.sha256"), "not a digest\n").unwrap();
    let output = Command::new("cp")
        .arg(&docs)
        .arg(m.path("recover/docs.snapshot"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = std::fs::read_to_string(m.path("recover/docs.snapshot.error")).unwrap();
    assert!(error.contains("holds no SHA-256"), "{error}");
    std::fs::remove_file(m.path("recover/docs.snapshot.error")).unwrap();
    assert_eq!(count(&client, "docs").await, 201);
    // Only the earlier junk.snapshot.error is left in recover/.
    assert_eq!(names(&m.path("recover")), ["junk.snapshot.error"]);

    // Nothing of the uploads (each unpacked into a staging directory while it
    // arrived) is left.
    m.daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn qdrant_shard_snapshots_restore_through_their_shards_recover() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    let want = qdrant_expected("multi");

    // The collection from Qdrant's collection snapshot, through recover/<c>.snapshot.
    run_ok(
        Command::new("cp")
            .arg(qdrant_fixture("qdrant-multi.snapshot"))
            .arg(m.path("recover/multi.snapshot")),
    );
    assert!(by_id(&all_points(&client, "multi").await) == want);

    // Lose every point, then bring shards 1 and 2 back from Qdrant's shard snapshots
    // (nested-tar and streamable segment formats), each with its checksum sidecar.
    let ids: Vec<u64> = (0..2000).collect();
    let (status, body) = delete_points(&client, "multi", json!({"points": ids})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "multi").await, 0);
    for (id, file) in [
        (1, "qdrant-multi-shard-1.snapshot"),
        (2, "qdrant-multi-shard-2-streamed.snapshot"),
    ] {
        let dir = m.path(&format!("collections/multi/shards/{id}/recover"));
        let sum = std::fs::read_to_string(qdrant_fixture(&format!("{file}.checksum"))).unwrap();
        std::fs::write(dir.join(format!("{file}.checksum")), sum).unwrap();
        run_ok(
            Command::new("cp")
                .arg(qdrant_fixture(file))
                .arg(dir.join(file)),
        );
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    }
    let restored = by_id(&all_points(&client, "multi").await);
    assert!(!restored.is_empty());
    for (id, point) in &restored {
        assert_eq!(
            want.get(id),
            Some(point),
            "point {id} differs from Qdrant's"
        );
    }
    // Shard 0 is still empty; shards 1 and 2 hold exactly Qdrant's points for them.
    let (_, info) = call(&client, Method::GET, "/collections/multi", None).await;
    let total = info["result"]["points_count"].as_u64().unwrap();
    assert_eq!(total, restored.len() as u64);
    let info: Value =
        serde_json::from_slice(&std::fs::read(m.path("collections/multi/info.json")).unwrap())
            .unwrap();
    let per_shard: Vec<u64> = info["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["points_count"].as_u64().unwrap())
        .collect();
    assert_eq!(per_shard[0], 0, "{info}");
    assert_eq!(per_shard[1] + per_shard[2], total, "{info}");
    assert!(per_shard[1] > 0 && per_shard[2] > 0, "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_checksum_waits_for_the_sidecar_in_either_order() {
    let m = MountedDaemon::start_with_env(&[("SNAPFS__STORAGE__REQUIRE_CHECKSUM", "true")]);
    let client = m.client();
    let docs = qdrant_fixture("qdrant-docs.snapshot");
    let sum = std::fs::read_to_string(qdrant_fixture("qdrant-docs.snapshot.checksum")).unwrap();

    // Snapshot first: it waits (listed), the sidecar's close runs the restore.
    run_ok(
        Command::new("cp")
            .arg(&docs)
            .arg(m.path("recover/docs.snapshot")),
    );
    assert_eq!(names(&m.path("recover")), ["docs.snapshot"]);
    assert!(!names(&m.path("collections")).contains(&"docs".to_string()));
    std::fs::write(m.path("recover/docs.snapshot.sha256"), sum.trim()).unwrap();
    assert_eq!(count(&client, "docs").await, 200);
    assert!(
        names(&m.path("recover")).is_empty(),
        "{:?}",
        names(&m.path("recover"))
    );

    // Sidecar first: the snapshot's close runs it. A wrong sidecar after the
    // snapshot fails the sidecar's close and leaves the .error under the snapshot.
    upsert(&client, "docs", vec![point(4242, 8)], true).await;
    std::fs::write(
        m.path("collections/docs/recover/x.snapshot.checksum"),
        sum.trim(),
    )
    .unwrap();
    run_ok(
        Command::new("cp")
            .arg(&docs)
            .arg(m.path("collections/docs/recover/x.snapshot")),
    );
    assert_eq!(count(&client, "docs").await, 200);
    upsert(&client, "docs", vec![point(4242, 8)], true).await;
    run_ok(
        Command::new("cp")
            .arg(&docs)
            .arg(m.path("recover/docs.snapshot")),
    );
    assert_eq!(
        errno_of(write_and_close(
            &m.path("recover/docs.snapshot.sha256"),
            "f".repeat(64).as_bytes()
        )),
        libc::EIO
    );
    assert_eq!(count(&client, "docs").await, 201);
    let error = std::fs::read_to_string(m.path("recover/docs.snapshot.error")).unwrap();
    assert!(
        error.contains("Checksum mismatch: expected ffff"),
        "{error}"
    );

    // Over HTTP a checksum must be named.
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/docs/snapshots/recover",
        Some(json!({"location": "nope.snapshot"})),
    )
    .await;
    assert_http_error(status, &body, 400, "require_checksum");
}

/// While a snapshot is being written into recover/, the collection's `info.json`
/// shows the restore receiving, with the bytes so far; once closed, it is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_under_way_shows_in_info_json() {
    use std::io::Write;
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    let docs = std::fs::read(qdrant_fixture("qdrant-docs.snapshot")).unwrap();
    run_ok(
        Command::new("cp")
            .arg(qdrant_fixture("qdrant-docs.snapshot"))
            .arg(m.path("recover/docs.snapshot")),
    );
    let info = || -> Value {
        serde_json::from_slice(&std::fs::read(m.path("collections/docs/info.json")).unwrap())
            .unwrap()
    };
    assert!(info()["restore"].is_null(), "{}", info());

    let half = docs.len() / 2;
    let mut file =
        std::fs::File::create(m.path("collections/docs/recover/again.snapshot")).unwrap();
    file.write_all(&docs[..half]).unwrap();
    let shown = info();
    assert_eq!(shown["restore"]["state"], "receiving", "{shown}");
    assert_eq!(shown["restore"]["of"], "collection", "{shown}");
    assert_eq!(shown["restore"]["bytes_received"], half as u64, "{shown}");
    let metrics = std::fs::read_to_string(m.path("metrics")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"snapshot_recovery_running{id="docs"} 1"#),
        "{metrics}"
    );
    file.write_all(&docs[half..]).unwrap();
    drop(file); // close: the restore runs and the close waits for it
    assert!(info()["restore"].is_null(), "{}", info());
    assert_eq!(count(&client, "docs").await, 200);
    assert!(names(&m.path("collections/docs/recover")).is_empty());
    let metrics = std::fs::read_to_string(m.path("metrics")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"snapshot_recovery_running{id="docs"} 0"#),
        "{metrics}"
    );
}

/// Every kind of snapfs snapshot restores to the same points: the live collection
/// file (through recover/), a live shard snapshot streamed over HTTP (into a shard's
/// recover/), a stored shard snapshot (over HTTP), and a stored full-storage snapshot
/// (`--storage-snapshot`, in a second daemon).
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_snapfs_snapshot_restores_to_the_same_points() {
    let m = MountedDaemon::start(&[]);
    let client = m.client();
    seeded_collection(&client, "src", 2, 240).await;
    let want = by_id(&all_points(&client, "src").await);
    let work = tempfile::tempdir().unwrap();

    // The live collection file, copied out and written into recover/.
    let live = work.path().join("src.snapshot");
    run_ok(
        Command::new("cp")
            .arg(m.path("live/src.snapshot"))
            .arg(&live),
    );
    run_ok(
        Command::new("cp")
            .arg(&live)
            .arg(m.path("recover/copy.snapshot")),
    );
    assert!(
        by_id(&all_points(&client, "copy").await) == want,
        "live collection"
    );

    // Live shard snapshots over HTTP, into a changed copy's shards.
    upsert_ids(&client, "copy", 1000..1040, 8).await;
    for shard in 0..2 {
        let bytes = fetch(
            &client,
            &format!("/collections/src/shards/{shard}/snapshot"),
        )
        .await;
        let file = work.path().join(format!("shard-{shard}.snapshot"));
        std::fs::write(&file, &bytes).unwrap();
        run_ok(Command::new("cp").arg(&file).arg(m.path(&format!(
            "collections/copy/shards/{shard}/recover/s.snapshot"
        ))));
    }
    assert!(
        by_id(&all_points(&client, "copy").await) == want,
        "live shards"
    );

    // A stored shard snapshot, restored over HTTP by name into `src` itself.
    upsert_ids(&client, "src", 2000..2040, 8).await;
    let (status, body) = call(
        &client,
        Method::POST,
        "/collections/copy/shards/1/snapshots",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored = m
        .daemon
        .data_dir
        .join("snapshots/copy/shards/1")
        .join(body["result"]["name"].as_str().unwrap());
    assert!(stored.is_file(), "{}", stored.display());
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/src/shards/1/snapshots/recover",
        Some(json!({"location": format!("file://{}", stored.display())})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let src_now = by_id(&all_points(&client, "src").await);
    let shard0_extra = src_now.len() - want.len();
    assert!(
        want.iter().all(|(id, p)| src_now.get(id) == Some(p)),
        "stored shard: every original point is back"
    );
    assert!(
        shard0_extra < 40,
        "shard 1's new points went with the restore"
    );

    // A full-storage snapshot, restored at the start of another daemon.
    let (status, body) = call(&client, Method::POST, "/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let full = m
        .daemon
        .data_dir
        .join("snapshots")
        .join(body["result"]["name"].as_str().unwrap());
    let data = tempfile::tempdir().unwrap();
    let other = Daemon::start_in(
        data.path(),
        &["--storage-snapshot", full.to_str().unwrap()],
        &[],
    );
    let restored = other.client();
    assert!(
        by_id(&all_points(&restored, "copy").await) == want,
        "full: copy"
    );
    assert!(
        by_id(&all_points(&restored, "src").await) == src_now,
        "full: src"
    );
}

/// A collection whose archive is small but whose files are large and sparse (the
/// engine preallocates) restores on a small disk: what a restore needs is the bytes
/// it writes, not the files' logical sizes.
#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_snapshot_restores_on_a_small_disk() {
    let temp = tempfile::tempdir().unwrap();
    let small = Tmpfs::mount(&temp.path().join("small"), "64m");
    let m = MountedDaemon::start_with_env(&[
        (
            "SNAPFS__STORAGE__STORAGE_PATH",
            small.path.join("storage").to_str().unwrap(),
        ),
        (
            "SNAPFS__STORAGE__TEMP_PATH",
            small.path.join("tmp").to_str().unwrap(),
        ),
    ]);
    let client = m.client();
    seeded_collection(&client, "sparse", 1, 300).await;
    let copy = temp.path().join("sparse.snapshot");
    run_ok(
        Command::new("cp")
            .arg(m.path("live/sparse.snapshot"))
            .arg(&copy),
    );
    let logical: u64 = snapfs::storage::regular_files(&small.path.join("storage"))
        .iter()
        .map(|(_, len)| len)
        .sum();
    assert!(
        logical > 64 << 20,
        "the files are larger than the disk: {logical}"
    );
    show_disk(&small.path);
    let out = Command::new("cp")
        .arg(&copy)
        .arg(m.path("recover/again.snapshot"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {:?}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(m.path("recover/again.snapshot.error"))
    );
    assert_eq!(count(&client, "again").await, 300);
}

/// An empty file written into recover/ (`cp` of an empty file, `touch`) restores
/// nothing and leaves an `.error` that says so; over HTTP an empty upload is 400.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_file_in_recover_leaves_an_error() {
    let m = MountedDaemon::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty.snapshot");
    std::fs::write(&empty, b"").unwrap();
    run_ok(
        Command::new("cp")
            .arg(&empty)
            .arg(m.path("recover/empty.snapshot")),
    );
    run_ok(Command::new("touch").arg(m.path("recover/touched.snapshot")));
    for name in ["empty", "touched"] {
        let error = std::fs::read_to_string(m.path(&format!("recover/{name}.snapshot.error")))
            .unwrap_or_else(|e| panic!("{name}: no .error ({e})"));
        assert!(error.contains("the file is empty"), "{error}");
        assert!(!m.path(&format!("live/{name}.snapshot")).exists());
    }
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&m.daemon.socket)
        .arg("-F")
        .arg(format!("snapshot=@{}", empty.display()))
        .arg("http://localhost/collections/empty/snapshots/upload")
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("no entries"),
        "{body}"
    );
    m.daemon.assert_no_staging_leftovers();
}
