//! The Debian package: built by scripts/package.sh (cargo-deb) from this build's
//! binary, installed with dpkg on this machine, its service's command started the
//! way its unit starts it (as the user `snapfs`, with CAP_SYS_ADMIN only), and
//! purged. Skipped with a notice without dpkg or cargo-deb (scripts/test.sh
//! installs cargo-deb), or where snapfs is already installed, so the test never
//! touches a real installation.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::support::{BIN, detach_if_mounted, is_mounted};

const DATA_DIR: &str = "/var/lib/snapfs";
const MOUNT: &str = "/mnt/snapfs";
const MEMBER: &str = "snapfs-test-member";
const OUTSIDER: &str = "snapfs-test";

fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|o| o.status.success())
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What the test installed, removed again whatever happens: the service's
/// process, its mount, the package, and the user, group and directories the
/// package made (none of them existed before: checked first).
struct Installed {
    daemon: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = Command::new("kill").arg(daemon.id().to_string()).status();
            let _ = daemon.wait();
        }
        detach_if_mounted(Path::new(MOUNT));
        let _ = Command::new("dpkg").args(["--purge", "snapfs"]).output();
        let _ = std::fs::remove_dir_all(DATA_DIR);
        let _ = std::fs::remove_dir(MOUNT);
        let _ = std::fs::remove_dir_all("/etc/snapfs");
        let _ = Command::new("userdel").arg("snapfs").output();
        let _ = Command::new("groupdel").arg("snapfs").output();
    }
}

/// A `Key=value` line of the installed unit.
fn unit_key(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

#[test]
fn the_debian_package_installs_and_its_service_runs_as_the_snapfs_user() {
    if !succeeds(Command::new("dpkg").arg("--version")) {
        eprintln!("skipped: no dpkg here (not Debian)");
        return;
    }
    if !succeeds(Command::new("cargo").args(["deb", "--version"])) {
        eprintln!("skipped: no cargo-deb (scripts/test.sh installs it)");
        return;
    }
    let taken = [
        succeeds(Command::new("dpkg").args(["-s", "snapfs"])),
        Path::new("/usr/bin/snapfs").exists(),
        Path::new(DATA_DIR).exists(),
        Path::new(MOUNT).exists(),
        Path::new("/etc/snapfs").exists(),
        succeeds(Command::new("getent").args(["passwd", "snapfs"])),
        succeeds(Command::new("getent").args(["group", "snapfs"])),
    ];
    if taken.iter().any(|t| *t) {
        eprintln!("skipped: snapfs (or its user, directories) is already on this machine");
        return;
    }

    // Build the package from this build's binary.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stage = tempfile::tempdir().unwrap();
    let built = Command::new(root.join("scripts/package.sh"))
        .env("PACKAGE_TARGET_DIR", stage.path())
        .env("SNAPFS_BIN", BIN)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", said(&built));
    let deb = String::from_utf8_lossy(&built.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(deb.ends_with(".deb"), "{}", said(&built));
    let contents = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/snapfs",
        "./usr/lib/systemd/system/snapfs.service",
        "./etc/snapfs/config.yaml",
        "./usr/share/bash-completion/completions/snapfs",
        "./usr/share/zsh/vendor-completions/_snapfs",
        "./usr/share/fish/vendor_completions.d/snapfs.fish",
        "./usr/share/man/man1/snapfs.1.gz",
        "./usr/share/doc/snapfs/OPERATIONS.md",
    ] {
        assert!(
            listing.contains(path),
            "{path} missing from the package:\n{listing}"
        );
    }

    // Install it.
    let mut installed = Installed { daemon: None };
    let dpkg = Command::new("dpkg").args(["-i", &deb]).output().unwrap();
    assert!(dpkg.status.success(), "{}", said(&dpkg));
    let passwd = String::from_utf8_lossy(
        &Command::new("getent")
            .args(["passwd", "snapfs"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        passwd.contains(":/var/lib/snapfs:/usr/sbin/nologin"),
        "{passwd}"
    );
    let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
    let gid: u32 = passwd.split(':').nth(3).unwrap().parse().unwrap();
    let data = std::fs::metadata(DATA_DIR).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o777),
        (uid, gid, 0o710)
    );
    let config = std::fs::metadata("/etc/snapfs/config.yaml").unwrap();
    assert_eq!(
        (config.uid(), config.gid(), config.mode() & 0o777),
        (0, gid, 0o640)
    );
    let man = Command::new("sh")
        .args(["-c", "zcat /usr/share/man/man1/snapfs.1.gz"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&man.stdout).contains(".TH snapfs"),
        "{}",
        said(&man)
    );

    // The unit's command, run as the unit runs it.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/snapfs.service").unwrap();
    assert_eq!(unit_key(&unit, "User"), "snapfs");
    assert_eq!(unit_key(&unit, "AmbientCapabilities"), "CAP_SYS_ADMIN");
    let exec = unit_key(&unit, "ExecStart");
    let as_service = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=snapfs",
            "--regid=snapfs",
            "--init-groups",
            "--inh-caps=-all,+sys_admin",
            "--ambient-caps=-all,+sys_admin",
            "--bounding-set=-all,+sys_admin",
            "--no-new-privs",
        ]);
        command.args(args);
        command
    };
    // doctor, with the service's rights, finds nothing to fix.
    let doctor = as_service(&[
        "/usr/bin/snapfs",
        "doctor",
        "--config",
        "/etc/snapfs/config.yaml",
    ])
    .output()
    .unwrap();
    assert!(doctor.status.success(), "{}", said(&doctor));
    let log = stage.path().join("service.log");
    let words: Vec<&str> = exec.split_whitespace().collect();
    installed.daemon = Some(
        as_service(&words)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("snapfs ready")
    {
        let exited = installed.daemon.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the service did not start ({exited:?}):\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(is_mounted(Path::new(MOUNT)));
    let socket = format!("{DATA_DIR}/snapfs.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (uid, gid, 0o660)
    );

    // A member of the group reads the mount and uses the socket; others get nothing.
    let member = |script: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={MEMBER}"),
                &format!("--regid={MEMBER}"),
                &format!("--groups={gid}"),
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap()
    };
    let curl = format!("curl -sSf --unix-socket {socket} http://localhost/collections");
    if succeeds(Command::new("id").arg(MEMBER)) {
        let read = member(&format!(
            "cat {MOUNT}/README.txt && ls {MOUNT}/live && {curl}"
        ));
        assert!(read.status.success(), "{}", said(&read));
    }
    if succeeds(Command::new("id").arg(OUTSIDER)) {
        for script in [format!("ls {MOUNT}"), curl.clone()] {
            let refused = Command::new("runuser")
                .args(["-u", OUTSIDER, "--", "sh", "-c", &script])
                .output()
                .unwrap();
            assert!(!refused.status.success(), "{script}: {}", said(&refused));
        }
    }

    // A stop (systemd's SIGTERM) unmounts and exits 0.
    let mut daemon = installed.daemon.take().unwrap();
    assert!(succeeds(
        Command::new("kill").args(["-TERM", &daemon.id().to_string()])
    ));
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "{status}:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!is_mounted(Path::new(MOUNT)));

    // Purge: the package's files go, the data directory stays (the user's).
    let purge = Command::new("dpkg")
        .args(["--purge", "snapfs"])
        .output()
        .unwrap();
    assert!(purge.status.success(), "{}", said(&purge));
    assert!(!Path::new("/usr/bin/snapfs").exists());
    assert!(Path::new(DATA_DIR).join("storage").is_dir());
    drop(installed);
}
