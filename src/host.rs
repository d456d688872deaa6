//! Facts about the host snapfs runs on that decide who may use what it serves: a
//! group's id, whether this process mounts FUSE itself (root or `CAP_SYS_ADMIN`)
//! or through the setuid `fusermount3`, and whether `/etc/fuse.conf` lets such a
//! mount admit other users. A leaf: the daemon's start and `snapfs doctor` both
//! ask here, so they cannot disagree.

use std::ffi::CString;

use anyhow::{Context, bail};

/// The FUSE configuration file a `fusermount3` mount with `allow_other` needs a
/// line in.
pub const FUSE_CONF: &str = "/etc/fuse.conf";

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
