//! Who besides the daemon's own user may use what it serves. By default nobody:
//! the mount is its owner's only and the control socket is mode 0600. An operator
//! opens both to one group (`snapfs.group`), and the mount to other users
//! (`snapfs.allow_other`), in which case the kernel checks the modes the mount
//! shows: the group gets the owner's rights, everyone else none.
//!
//! Everything here is decided before the storage loads, so a wrong group or a
//! missing `user_allow_other` fails the start with the fix, not a half-served
//! daemon.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::fs::fuse::MountAccess;

/// The FUSE configuration file a non-root `allow_other` mount needs a line in.
pub const FUSE_CONF: &str = "/etc/fuse.conf";

/// The access a daemon grants, resolved from its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    pub mount: MountAccess,
    /// The group that may connect to the control socket.
    pub socket_group: Option<u32>,
}

/// Resolve `snapfs.group` and check that `snapfs.allow_other` can be honoured.
pub fn resolve(config: &Config) -> anyhow::Result<Access> {
    let group = match &config.group {
        Some(name) => Some(group_id(name)?),
        None => None,
    };
    if config.allow_other && config.mount.is_some() && !mounts_directly() {
        let conf = std::fs::read_to_string(FUSE_CONF).unwrap_or_default();
        if !allows_other(&conf) {
            bail!(
                "snapfs.allow_other needs the line `user_allow_other` in {FUSE_CONF} when snapfs mounts through fusermount3 (it runs neither as root nor with CAP_SYS_ADMIN); add the line (as root) or run without --allow-other"
            );
        }
    }
    Ok(Access {
        mount: MountAccess {
            allow_other: config.allow_other,
            group,
        },
        socket_group: group,
    })
}

/// Whether this process mounts itself (root, or a service user given
/// `CAP_SYS_ADMIN`, as the packaged unit does) rather than through the setuid
/// fusermount3, whose rules (`user_allow_other`) then do not apply.
pub fn mounts_directly() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether fuse.conf's text holds `user_allow_other` on a line of its own
/// (comments start with `#`).
pub fn allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .any(|line| line == "user_allow_other")
}

/// A group by name (or number), through the system's group database (NSS).
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c_name = CString::new(name).context("snapfs.group holds a NUL byte")?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: `libc::group` is plain old data (integers and pointers), for
        // which all zeroes is a valid value.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is to memory owned here and alive for the call;
        // getgrnam_r writes only into `group` and `buf` (within `buf.len()`).
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            bail!(
                "cannot look up the group {name:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if found.is_null() {
            bail!(
                "there is no group {name:?} (snapfs.group); create it (groupadd {name}) or name another"
            );
        }
        return Ok(group.gr_gid);
    }
}

/// Give the control socket to `gid` with mode 0660, so the group's members can
/// connect; and the directory it sits in (when that is the data directory, 0700
/// by default) to the group with mode 0710: members may pass through to the
/// socket but list and read nothing there.
pub fn share_socket(socket: &Path, data_dir: &Path, gid: u32) -> anyhow::Result<()> {
    let chown = |path: &Path| {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid))).with_context(|| {
            format!(
                "cannot give {} to the group {gid} (snapfs.group): the daemon's user must be root or a member",
                path.display()
            )
        })
    };
    chown(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    let parent = socket.parent().filter(|p| !p.as_os_str().is_empty());
    if let (Some(parent), Ok(data_dir)) = (parent, data_dir.canonicalize())
        && parent.canonicalize().is_ok_and(|p| p == data_dir)
    {
        chown(&data_dir)?;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o710))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_allow_other_counts_only_on_a_line_of_its_own() {
        assert!(allows_other("# comment\nuser_allow_other\n"));
        assert!(allows_other("  user_allow_other  # on purpose\n"));
        assert!(!allows_other("#user_allow_other\n"));
        assert!(!allows_other("mount_max = 1000\n"));
        assert!(!allows_other("user_allow_other_not\n"));
    }

    #[test]
    fn groups_resolve_by_name_or_number_and_unknown_ones_say_how_to_fix() {
        assert_eq!(group_id("root").unwrap(), 0);
        assert_eq!(group_id("4242").unwrap(), 4242);
        let err = group_id("snapfs-no-such-group").unwrap_err().to_string();
        assert!(err.contains("groupadd snapfs-no-such-group"), "{err}");
    }
}
