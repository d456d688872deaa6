//! `snapfs doctor`: what a first run needs, checked without changing anything, each
//! finding with how to fix it. Exit 0 when nothing failed (warnings allowed), 1
//! otherwise, so scripts and provisioning can gate on it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the checks look at, from the configuration the daemon would run with.
pub struct Setup<'a> {
    pub data_dir: &'a Path,
    pub socket: &'a Path,
    pub mount: bool,
    /// `snapfs.allow_other`.
    pub allow_other: bool,
    /// `snapfs.group`.
    pub group: Option<&'a str>,
    pub snapshots_path: &'a Path,
    pub s3: Option<&'a crate::snapshot::store::s3::S3Config>,
    pub repository: Option<&'a crate::snapshot::store::repository::RepositoryConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One finding: what was checked, what was found, and how to fix it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub found: String,
    pub fix: Option<String>,
}

fn ok(check: &'static str, found: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        found: found.into(),
        fix: None,
    }
}

fn bad(
    level: Level,
    check: &'static str,
    found: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        level,
        check,
        found: found.into(),
        fix: Some(fix.into()),
    }
}

/// Every check, in order.
pub fn findings(setup: &Setup) -> Vec<Finding> {
    let mut out = vec![fuse_device(Path::new("/dev/fuse"))];
    if setup.mount {
        out.push(mount_rights());
        if setup.allow_other {
            let conf = std::fs::read_to_string(crate::host::FUSE_CONF).ok();
            out.push(allow_other(crate::host::mounts_directly(), conf.as_deref()));
        }
    }
    if let Some(name) = setup.group {
        out.push(group(name));
    }
    out.extend(data_dir(setup.data_dir));
    out.push(socket(setup.socket));
    out.push(store(setup));
    out.push(clock(SystemTime::now()));
    out
}

/// Print the findings; the exit code's verdict.
pub fn run(setup: &Setup) -> bool {
    let all = findings(setup);
    for f in &all {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("{tag} {}: {}", f.check, f.found);
        if let Some(fix) = &f.fix {
            println!("     fix: {fix}");
        }
    }
    let failed = all.iter().filter(|f| f.level == Level::Fail).count();
    let warned = all.iter().filter(|f| f.level == Level::Warn).count();
    println!("{} checks: {failed} failed, {warned} warnings", all.len());
    failed == 0
}

pub fn fuse_device(path: &Path) -> Finding {
    const CHECK: &str = "FUSE device";
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            return bad(
                Level::Fail,
                CHECK,
                format!("{}: {e}", path.display()),
                "load the fuse module (`modprobe fuse`), or in a container pass the device (`--device /dev/fuse`)",
            );
        }
    };
    if !meta.file_type().is_char_device() {
        return bad(
            Level::Fail,
            CHECK,
            format!("{} is not a character device", path.display()),
            "remove it and `modprobe fuse` (it must be char 10:229)",
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => ok(
            CHECK,
            format!("{} opens for reading and writing", path.display()),
        ),
        Err(e) => bad(
            Level::Fail,
            CHECK,
            format!("{} cannot be opened: {e}", path.display()),
            "run as root, or give this user read and write access to /dev/fuse (mode 0666 is the usual default)",
        ),
    }
}

fn mount_rights() -> Finding {
    const CHECK: &str = "mounting";
    if crate::host::mounts_directly() {
        return ok(CHECK, "root or CAP_SYS_ADMIN: the mount is made directly");
    }
    let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .find(|p| Path::new(p).exists());
    match fusermount {
        Some(path) => ok(CHECK, format!("not root: mounts go through {path}")),
        None => bad(
            Level::Fail,
            CHECK,
            "not root, and no fusermount3",
            "install the `fuse3` package (it provides the setuid fusermount3), or run as root",
        ),
    }
}

/// `allow_other` as an ordinary user needs `user_allow_other` in fuse.conf
/// (`conf`: its text, `None` when it cannot be read).
pub fn allow_other(direct: bool, conf: Option<&str>) -> Finding {
    const CHECK: &str = "allow_other";
    use crate::host::{FUSE_CONF, allows_other};
    if direct {
        return ok(
            CHECK,
            "mounting directly (root or CAP_SYS_ADMIN): other users may be let in",
        );
    }
    match conf {
        Some(text) if allows_other(text) => ok(CHECK, format!("{FUSE_CONF} has user_allow_other")),
        _ => bad(
            Level::Fail,
            CHECK,
            format!("mounting through fusermount3, and {FUSE_CONF} has no line `user_allow_other`"),
            format!(
                "add the line `user_allow_other` to {FUSE_CONF} (as root), or drop snapfs.allow_other"
            ),
        ),
    }
}

fn group(name: &str) -> Finding {
    const CHECK: &str = "group";
    match crate::host::group_id(name) {
        Ok(gid) => ok(
            CHECK,
            format!("{name} is gid {gid}: it shares the socket (and the mount with allow_other)"),
        ),
        Err(e) => bad(
            Level::Fail,
            CHECK,
            format!("{e:#}"),
            format!(
                "create the group (`groupadd --system {name}`) and add its users (`usermod -aG {name} USER`)"
            ),
        ),
    }
}

fn data_dir(dir: &Path) -> Vec<Finding> {
    const CHECK: &str = "data directory";
    // The nearest existing ancestor: the directory is created at the first start.
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            return vec![bad(
                Level::Fail,
                CHECK,
                format!("{}: no part of it exists", dir.display()),
                "give a data directory on a mounted file system (--data-dir, snapfs.data_dir)",
            )];
        }
    }
    let mut out = Vec::new();
    let stats = match crate::storage::filesystem_stats(&existing) {
        Ok(stats) => stats,
        Err(e) => {
            return vec![bad(
                Level::Fail,
                CHECK,
                format!("{}: {e}", existing.display()),
                "check the path and its permissions",
            )];
        }
    };
    let free = stats.f_bavail * stats.f_frsize;
    let found = format!(
        "{} ({}{} GiB free)",
        dir.display(),
        if existing == dir {
            String::new()
        } else {
            format!("to be created in {}; ", existing.display())
        },
        free / (1 << 30)
    );
    out.push(if free < 1 << 30 {
        bad(
            Level::Warn,
            CHECK,
            found,
            "less than 1 GiB free: a restore needs room for the archive it unpacks",
        )
    } else {
        ok(CHECK, found)
    });
    out.push(sparse_files(&existing));
    out
}

/// A file with a 64 MiB hole uses (nearly) no blocks: sparse files work there (the
/// engine's WAL and snapshots' holes rely on it).
fn sparse_files(dir: &Path) -> Finding {
    const CHECK: &str = "sparse files";
    let probe = tempfile::Builder::new()
        .prefix(".snapfs-doctor-")
        .tempfile_in(dir);
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            return bad(
                Level::Fail,
                CHECK,
                format!("cannot write in {}: {e}", dir.display()),
                "make the data directory writable for the daemon's user",
            );
        }
    };
    let sparse = (|| -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        probe.as_file().write_all_at(b"x", 64 << 20)?;
        probe.as_file().sync_all()?;
        Ok(probe.as_file().metadata()?.blocks() * 512)
    })();
    match sparse {
        Ok(used) if used < 1 << 20 => ok(CHECK, format!("a 64 MiB hole uses {used} bytes")),
        Ok(used) => bad(
            Level::Warn,
            CHECK,
            format!("a 64 MiB hole uses {} MiB", used >> 20),
            "use a file system with sparse files (ext4, xfs, btrfs): without them every shard's WAL and every restore takes its full size",
        ),
        Err(e) => bad(
            Level::Fail,
            CHECK,
            format!("writing a probe: {e}"),
            "check the data directory's file system",
        ),
    }
}

fn socket(path: &Path) -> Finding {
    const CHECK: &str = "control socket";
    match std::fs::symlink_metadata(path) {
        Err(_) => ok(
            CHECK,
            format!(
                "{} is free (no daemon runs on this data directory)",
                path.display()
            ),
        ),
        Ok(meta) if !meta.file_type().is_socket() => bad(
            Level::Fail,
            CHECK,
            format!("{} exists and is not a socket", path.display()),
            "move that file away: the daemon will not replace it",
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => ok(CHECK, format!("{}: a daemon answers", path.display())),
            Err(_) => bad(
                Level::Warn,
                CHECK,
                format!(
                    "{}: a socket nobody listens on (a daemon that did not stop cleanly)",
                    path.display()
                ),
                "nothing to do: the next start replaces it",
            ),
        },
    }
}

fn store(setup: &Setup) -> Finding {
    const CHECK: &str = "snapshot store";
    if let Some(repo) = setup.repository {
        return match &repo.location {
            crate::snapshot::store::repository::Location::Local(path) => {
                if path.join("config").is_file() && path.join("keys").is_dir() {
                    ok(CHECK, format!("restic repository at {}", path.display()))
                } else if path.exists()
                    && std::fs::read_dir(path)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(true)
                {
                    bad(
                        Level::Fail,
                        CHECK,
                        format!(
                            "{} holds something that is not a restic repository",
                            path.display()
                        ),
                        "point repository.location at an empty directory or a restic repository",
                    )
                } else {
                    ok(
                        CHECK,
                        format!(
                            "{}: no repository yet, created at the first start",
                            path.display()
                        ),
                    )
                }
            }
            other => bad(
                Level::Warn,
                CHECK,
                format!("restic repository {other:?}: reachability is checked at start, not here"),
                "start the daemon: a wrong password or a missing bucket stops it with the reason",
            ),
        };
    }
    if let Some(s3) = setup.s3 {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(e) => return bad(Level::Fail, CHECK, e.to_string(), "check the machine"),
        };
        let _entered = runtime.enter();
        let listed = crate::snapshot::store::s3::S3Store::new(s3).and_then(|store| {
            use crate::snapshot::store::SnapshotStore;
            store
                .list(&crate::snapshot::Scope::Full)
                .map(|l| (store.location(), l.len()))
        });
        return match listed {
            Ok((location, n)) => ok(
                CHECK,
                format!("{location}: reachable, {n} full-storage snapshots"),
            ),
            Err(e) => bad(
                Level::Fail,
                CHECK,
                format!("the S3 store: {e}"),
                "check s3_config (endpoint_url, bucket, region) and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            ),
        };
    }
    ok(
        CHECK,
        format!("local directory {}", setup.snapshots_path.display()),
    )
}

/// Schedules need a clock that is not wildly off.
pub fn clock(now: SystemTime) -> Finding {
    const CHECK: &str = "clock";
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    // 2024-01-01 and 2100-01-01.
    if !(1_704_067_200..4_102_444_800).contains(&secs) {
        return bad(
            Level::Fail,
            CHECK,
            format!(
                "the system time is {}Z",
                crate::snapshot::names::creation_time(now)
            ),
            "set the clock (NTP: `timedatectl set-ntp true`): backup schedules and retention count on it",
        );
    }
    ok(
        CHECK,
        format!("{}Z", crate::snapshot::names::creation_time(now)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_fuse_device_and_a_wrong_clock_fail_with_a_fix() {
        let missing = fuse_device(Path::new("/nonexistent/fuse"));
        assert_eq!(missing.level, Level::Fail);
        assert!(missing.fix.unwrap().contains("modprobe fuse"));
        let not_char = fuse_device(Path::new("/etc/hostname"));
        assert_eq!(not_char.level, Level::Fail);
        assert_eq!(clock(UNIX_EPOCH).level, Level::Fail);
        assert_eq!(clock(SystemTime::now()).level, Level::Ok);
    }

    #[test]
    fn allow_other_without_root_needs_user_allow_other() {
        assert_eq!(allow_other(true, None).level, Level::Ok);
        assert_eq!(
            allow_other(false, Some("user_allow_other\n")).level,
            Level::Ok
        );
        let missing = allow_other(false, Some("#user_allow_other\n"));
        assert_eq!(missing.level, Level::Fail);
        assert!(missing.fix.unwrap().contains("user_allow_other"));
        assert_eq!(allow_other(false, None).level, Level::Fail);
        assert_eq!(group("root").level, Level::Ok);
        let unknown = group("snapfs-no-such-group");
        assert_eq!(unknown.level, Level::Fail);
        assert!(unknown.fix.unwrap().contains("groupadd"));
    }

    #[test]
    fn the_data_directory_checks_free_space_and_sparse_files() {
        let dir = tempfile::tempdir().unwrap();
        let found = data_dir(&dir.path().join("not-yet"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].found.contains("to be created in"), "{found:?}");
        assert_eq!(found[1].check, "sparse files");
        assert_ne!(found[1].level, Level::Fail, "{found:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
    }
}
