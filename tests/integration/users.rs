//! Who may use the mount and the control socket: the daemon run as an ordinary
//! user (through fusermount3), and a root daemon sharing both with a group
//! (`--allow-other --group`), tried as a member and as a user outside the group.
//! The users come from scripts/test.sh (`snapfs-test`; `snapfs-test-member` in the
//! group `snapfs-test-ops`); each test is skipped with a notice where they are
//! missing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use crate::support::{self, *};

/// Not a member of the shared group.
const OUTSIDER: &str = "snapfs-test";
const MEMBER: &str = "snapfs-test-member";
const GROUP: &str = "snapfs-test-ops";

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `script` run by `sh` as `user` (with the user's groups).
fn as_user(user: &str, script: &str) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `script` succeeds as `user`; returns its stdout.
fn ok_as(user: &str, script: &str) -> String {
    let output = as_user(user, script);
    assert!(
        output.status.success(),
        "as {user}: {script}\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `script` fails as `user` and says "Permission denied" (or curl's "Couldn't
/// connect", for a socket it may not open).
fn refused_as(user: &str, script: &str) {
    let output = as_user(user, script);
    let said = text(&output);
    assert!(
        !output.status.success()
            && (said.contains("Permission denied") || said.contains("Couldn't connect")),
        "as {user}, expected a refusal: {script}\n{said}"
    );
}

fn gid_of(group: &str) -> u32 {
    let line = run_ok(Command::new("getent").args(["group", group]));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

/// A root daemon mounted with `--allow-other --group`: the group's members read
/// live/ and stored snapshots, restore through recover/ (with `cp -p` and `rsync
/// -a`, whose chmod and utimes pass because an upload belongs to whoever created
/// it) and use the control socket; anyone else is refused all of it, by the kernel
/// and by the socket's mode. The modes shown are the rights: the owner's, copied
/// to the group, none for others.
#[tokio::test(flavor = "multi_thread")]
async fn allow_other_shares_the_mount_and_the_socket_with_the_group_only() {
    if !(user_exists(MEMBER) && user_exists(OUTSIDER)) {
        eprintln!("skipped: no {MEMBER} or {OUTSIDER} user (scripts/test.sh creates them)");
        return;
    }
    let m = MountedDaemon::start_reachable(&["--demo", "--allow-other", "--group", GROUP]);
    let client = m.client();
    wait_settled(&client, "demo").await;
    let points = count(&client, "demo").await;
    let stored = stored_name(&client, "/collections/demo/snapshots").await;
    let mnt = m.mnt.display().to_string();
    let sock = m.daemon.socket.display().to_string();

    // The modes say what the kernel enforces.
    let gid = gid_of(GROUP);
    let live = std::fs::metadata(m.path("live/demo.snapshot")).unwrap();
    assert_eq!((live.mode() & 0o777, live.gid()), (0o440, gid));
    let recover = std::fs::metadata(m.path("recover")).unwrap();
    assert_eq!(recover.mode() & 0o777, 0o770);
    assert_eq!(
        std::fs::metadata(m.path("live")).unwrap().mode() & 0o777,
        0o550
    );
    let socket = std::fs::metadata(&m.daemon.socket).unwrap();
    assert_eq!((socket.mode() & 0o777, socket.gid()), (0o660, gid));
    let data_dir = std::fs::metadata(&m.daemon.data_dir).unwrap();
    assert_eq!((data_dir.mode() & 0o777, data_dir.gid()), (0o710, gid));

    // A member backs up: the live snapshot checks out, a stored one copies out.
    let work = ok_as(MEMBER, "mktemp -d").trim().to_string();
    ok_as(
        MEMBER,
        &format!(
            "cd {mnt}/live && sha256sum -c demo.snapshot.sha256 && cp demo.snapshot {work}/ && cp {mnt}/collections/demo/snapshots/{stored} {work}/"
        ),
    );
    let stored_sum = ok_as(MEMBER, &format!("sha256sum {work}/{stored}"));
    let checksum =
        std::fs::read_to_string(m.path(&format!("collections/demo/snapshots/{stored}.checksum")))
            .unwrap();
    assert!(
        stored_sum.starts_with(checksum.trim()),
        "{stored_sum} vs {checksum}"
    );
    // The socket is the group's too.
    let listed = ok_as(
        MEMBER,
        &format!("curl -sSf --unix-socket {sock} http://localhost/collections"),
    );
    assert!(listed.contains("\"demo\""), "{listed}");

    // A member restores: cp -p into recover/, then rsync -a into the collection's.
    upsert(&client, "demo", vec![point(900_001, 64)], true).await;
    ok_as(
        MEMBER,
        &format!("cp -p {work}/demo.snapshot {mnt}/recover/demo.snapshot"),
    );
    assert_eq!(count(&client, "demo").await, points);
    upsert(&client, "demo", vec![point(900_002, 64)], true).await;
    ok_as(
        MEMBER,
        &format!("rsync -a {work}/demo.snapshot {mnt}/collections/demo/recover/"),
    );
    assert_eq!(count(&client, "demo").await, points);
    assert!(names(&m.path("recover")).is_empty());

    // Anyone else: nothing, neither through the mount nor the socket.
    refused_as(OUTSIDER, &format!("ls {mnt}"));
    refused_as(
        OUTSIDER,
        &format!("cat {mnt}/live/demo.snapshot > /dev/null"),
    );
    refused_as(
        OUTSIDER,
        &format!("cp /etc/hostname {mnt}/recover/demo.snapshot"),
    );
    refused_as(
        OUTSIDER,
        &format!("curl -sSf --unix-socket {sock} http://localhost/collections"),
    );
    // The outsider changed nothing.
    assert_eq!(count(&client, "demo").await, points);
    let _ = std::fs::remove_dir_all(&work);
}

/// Without `--allow-other` a root daemon's mount stays its owner's: a member of
/// the configured group is refused by the kernel (the socket is still shared).
#[tokio::test(flavor = "multi_thread")]
async fn without_allow_other_the_mount_stays_the_owners() {
    if !user_exists(MEMBER) {
        eprintln!("skipped: no {MEMBER} user (scripts/test.sh creates it)");
        return;
    }
    let m = MountedDaemon::start_reachable(&["--demo", "--group", GROUP]);
    let mnt = m.mnt.display().to_string();
    refused_as(MEMBER, &format!("ls {mnt}/live"));
    let sock = m.daemon.socket.display().to_string();
    ok_as(
        MEMBER,
        &format!("curl -sSf --unix-socket {sock} http://localhost/collections"),
    );
}

/// A group that does not exist stops the start at once, with the fix, before the
/// daemon creates anything: its data directory holds only the test's log, and the
/// mount point is not made.
#[test]
fn an_unknown_group_is_refused_before_anything_is_created() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mnt = temp.path().join("mnt");
    let mut daemon = Daemon::spawn(
        &data,
        &[
            "--group",
            "snapfs-no-such-group",
            "--mount",
            mnt.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!daemon.wait_exit().success());
    let log = daemon.log();
    assert!(
        log.contains("no group \"snapfs-no-such-group\"") && log.contains("groupadd"),
        "{log}"
    );
    let left = names(&data);
    assert!(left.iter().all(|n| n.starts_with("daemon-")), "{left:?}");
    assert!(!mnt.exists());
}

/// An ordinary user's daemon asked for `--allow-other` without `user_allow_other`
/// in /etc/fuse.conf stops at once with the fix, and mounts nothing. Skipped where
/// the file has the line (nothing to refuse), or the user is missing.
#[test]
fn allow_other_without_user_allow_other_is_refused_with_the_fix() {
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if conf
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
    {
        eprintln!("skipped: /etc/fuse.conf allows other users here");
        return;
    }
    if !user_exists(OUTSIDER) {
        eprintln!("skipped: no {OUTSIDER} user (scripts/test.sh creates it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = dir.path().display();
    let bin = dir.path().join("snapfs");
    std::fs::copy(support::BIN, &bin).unwrap();
    let output = as_user(
        OUTSIDER,
        &format!("{d}/snapfs serve --data-dir {d}/data --mount {d}/m --allow-other"),
    );
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("user_allow_other") && said.contains("/etc/fuse.conf"),
        "{said}"
    );
    assert!(!is_mounted(&dir.path().join("m")));
}

/// An ordinary user runs the daemon and mounts through fusermount3: the user copies a
/// live snapshot and `sha256sum -c` checks it; without `allow_other` the mount is
/// its owner's only (root is refused too); a stop unmounts it. Skipped with a notice
/// when the machine has no `snapfs-test` user, no fusermount3, or a /dev/fuse the
/// user cannot open (scripts/test.sh sets all three up).
#[test]
fn an_ordinary_user_mounts_through_fusermount3() {
    let user = OUTSIDER;
    let home = std::path::PathBuf::from(format!("/home/{user}"));
    let ready = user_exists(user)
        && std::path::Path::new("/usr/bin/fusermount3").exists()
        && std::fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
        && home.is_dir();
    if !ready {
        eprintln!(
            "skipped: no {user} user, fusermount3 or open /dev/fuse (scripts/test.sh sets them up)"
        );
        return;
    }
    let as_user = |script: &str| as_user(user, script);
    let dir = home.join(format!("mount-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("m")).unwrap();
    std::fs::copy(crate::support::BIN, dir.join("snapfs")).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", &format!("{user}:{user}")])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let d = dir.display();
    // The daemon, as the user; it stops (and unmounts) on SIGTERM.
    let mut daemon = std::process::Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(dir.join("snapfs"))
        .args(["serve", "--demo", "--data-dir"])
        .arg(dir.join("d"))
        .arg("--mount")
        .arg(dir.join("m"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    struct Cleanup<'a>(&'a std::path::Path, &'a mut std::process::Child);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg(self.1.id().to_string())
                .status();
            let _ = self.1.wait();
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(self.0.join("m"))
                .status();
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let pid = daemon.id();
    let guard = Cleanup(&dir, &mut daemon);
    crate::support::eventually("the user's mount answers", || {
        as_user(&format!("test -f {d}/m/live/demo.snapshot"))
            .status
            .success()
    });
    let copied = as_user(&format!(
        "cd {d} && cp m/live/demo.snapshot demo.snapshot && cp m/live/demo.snapshot.sha256 demo.snapshot.sha256 && sha256sum -c demo.snapshot.sha256"
    ));
    assert!(
        copied.status.success(),
        "{}{}",
        String::from_utf8_lossy(&copied.stdout),
        String::from_utf8_lossy(&copied.stderr)
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(&format!("{d}/m")))
        .expect("the mount is listed");
    assert!(line.contains("fuse"), "{line}");
    // Owner-only: root itself is refused without allow_other.
    let by_root = std::fs::metadata(dir.join("m/live"));
    assert!(
        by_root.is_err(),
        "root reads another user's mount: {by_root:?}"
    );
    // A stop unmounts.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    crate::support::eventually("the mount is gone after SIGTERM", || {
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&format!("{d}/m"))
    });
    drop(guard);
}
