//! Who besides the daemon's own user may use what it serves. By default nobody:
//! the mount is its owner's only and the control socket is mode 0600. An operator
//! opens both to one group (`snapfs.group`), and the mount to other users
//! (`snapfs.allow_other`), in which case the kernel checks the modes the mount
//! shows: the group gets the owner's rights, everyone else none.
//!
//! Everything here is decided before the storage loads, so a wrong group or a
//! missing `user_allow_other` fails the start with the fix, not a half-served
//! daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::fs::fuse::MountAccess;
use crate::host::{FUSE_CONF, allows_other, group_id, mounts_directly};

/// Resolve `snapfs.group` and check that `snapfs.allow_other` can be honoured. The
/// group (when set) shares the mount, with `allow_other`, and the control socket.
pub fn resolve(config: &Config) -> anyhow::Result<MountAccess> {
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
    Ok(MountAccess {
        allow_other: config.allow_other,
        group,
    })
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
