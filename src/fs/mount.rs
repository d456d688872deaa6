//! The mount's life: check the mount point, clear a stale mount a crashed daemon
//! left, mount, report "mounted at" only once the mount answers, and unmount on
//! every exit. A reader still holding a file at shutdown does not keep the daemon
//! alive: the connection is aborted (its reads fail with an error, never garbage)
//! and the mount detached.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use fuser::{Config, MountOption, SessionACL};
use rustix::mount::UnmountFlags;

use super::SnapFs;
use super::fuse::{FuseAdapter, MountAccess, READAHEAD};

/// fuser worker threads reading kernel requests. Slow work goes to the blocking
/// pool anyway; a few readers keep the queue drained while replies are written.
const FUSE_THREADS: usize = 4;
/// How long the first answer from a fresh mount may take.
const MOUNT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the session threads after the unmount.
const SESSION_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Check `mount_point` for use: no stale mount, a directory, and neither inside nor
/// above any of the daemon's own directories (the mount would hide them, or serve
/// itself). Creates the directory if only it is missing.
pub fn prepare_mount_point(mount_point: &Path, own_dirs: &[&Path]) -> anyhow::Result<PathBuf> {
    let exists = match std::fs::metadata(mount_point) {
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(path = %mount_point.display(), "clearing a stale mount left by a daemon that did not stop cleanly");
            detach(mount_point).with_context(|| {
                format!("cannot clear the stale mount at {}", mount_point.display())
            })?;
            true
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            return Err(err).with_context(|| format!("cannot use {}", mount_point.display()));
        }
        Ok(meta) if !meta.is_dir() => {
            bail!(
                "the mount point {} is not a directory",
                mount_point.display()
            )
        }
        Ok(_) => true,
    };
    let canonical = if exists {
        mount_point.canonicalize()
    } else {
        // Only the last component may be missing; it is created below.
        let parent = match mount_point.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        parent
            .canonicalize()
            .map(|p| p.join(mount_point.file_name().unwrap_or_default()))
    }
    .with_context(|| format!("cannot resolve the mount point {}", mount_point.display()))?;
    for dir in own_dirs {
        let Ok(dir) = dir.canonicalize() else {
            continue;
        };
        if canonical.starts_with(&dir) {
            bail!(
                "the mount point {} is inside the daemon's directory {}; choose a directory outside --data-dir",
                canonical.display(),
                dir.display()
            );
        }
        if dir.starts_with(&canonical) {
            bail!(
                "mounting at {} would hide the daemon's own directory {}; choose a directory outside it",
                canonical.display(),
                dir.display()
            );
        }
    }
    if !exists {
        std::fs::create_dir(&canonical)
            .with_context(|| format!("cannot create the mount point {}", canonical.display()))?;
        tracing::info!(path = %canonical.display(), "created the mount point");
    } else if is_mount_point(&canonical) {
        // Attributes may still come from the kernel's cache; a listing asks the
        // daemon behind the mount, and a dead one answers ENOTCONN.
        if let Err(err) = std::fs::read_dir(&canonical)
            && err.raw_os_error() == Some(libc::ENOTCONN)
        {
            tracing::warn!(path = %canonical.display(), "clearing a stale mount left by a daemon that did not stop cleanly");
            detach(&canonical).with_context(|| {
                format!("cannot clear the stale mount at {}", canonical.display())
            })?;
            return Ok(canonical);
        }
        bail!(
            "{} is already a mount point (another snapfs?); unmount it first (umount {})",
            canonical.display(),
            canonical.display()
        );
    }
    Ok(canonical)
}

/// Whether `path` is listed as a mount point of this process's namespace.
fn is_mount_point(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|point| unescape_mount_path(point) == wanted)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A mounted filesystem; unmounted when dropped.
pub struct Mounted {
    path: PathBuf,
    /// The mount's device number, which names its connection in fusectl.
    dev: u64,
    session: Option<fuser::BackgroundSession>,
    /// Ends the cache dropper (see [`drop_stale_caches`]).
    stop_dropper: Arc<AtomicBool>,
}

/// Mount `core` at the (prepared) `mount_point` and wait until it answers. With
/// `access.allow_other`, every user may come in and the kernel checks the modes
/// the mount shows (`default_permissions`); else the mount is its owner's only.
pub fn mount(
    core: Arc<SnapFs>,
    runtime: tokio::runtime::Handle,
    mount_point: &Path,
    access: MountAccess,
) -> anyhow::Result<Mounted> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("snapfs".into()),
        MountOption::Subtype("snapfs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        // Largest read per request; the kernel caps it at 256 pages (1 MiB).
        MountOption::CUSTOM(format!("max_read={READAHEAD}")),
    ];
    config.acl = if access.allow_other {
        // Without default_permissions, allow_other would let everyone do
        // whatever the daemon allows its owner.
        config.mount_options.push(MountOption::DefaultPermissions);
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    let adapter = FuseAdapter::new(core.clone(), runtime, access);
    let session = fuser::Session::new(adapter, mount_point, &config)
        .with_context(|| format!("cannot mount at {}", mount_point.display()))?;
    let session = session.spawn().context("cannot start the FUSE session")?;
    let stop_dropper = Arc::new(AtomicBool::new(false));
    let notifier = session.notifier();
    let stop = stop_dropper.clone();
    let core = Arc::downgrade(&core);
    std::thread::Builder::new()
        .name("snapfs-cache-drop".into())
        .spawn(move || drop_stale_caches(&core, &notifier, &stop))
        .context("cannot start the cache dropper")?;
    let mut mounted = Mounted {
        path: mount_point.to_path_buf(),
        dev: 0,
        session: Some(session),
        stop_dropper,
    };
    let meta = answer_within(mount_point, MOUNT_ANSWER_TIMEOUT)
        .with_context(|| format!("the mount at {} does not answer", mount_point.display()))?;
    mounted.dev = meta.dev();
    raise_readahead(meta.dev());
    tracing::info!("mounted at {}", mount_point.display());
    Ok(mounted)
}

/// Drop the kernel's cached pages of a live file as soon as its state moves on
/// (every change to a shard wakes this), not at the next reader's open: freeing a
/// state's pages takes the kernel about 0.2 ms per MB here, which the first byte of
/// the new state would otherwise wait for (a reader who comes while the drop is
/// still running waits for the rest). A state some handle still reads is left
/// alone until the last one closes: the next look, at the latest a second later,
/// drops it. Runs on its own thread: the kernel may wait for FUSE replies while it
/// drops pages. Holds the core weakly, and ends with the mount.
fn drop_stale_caches(
    core: &std::sync::Weak<SnapFs>,
    notifier: &fuser::Notifier,
    stop: &AtomicBool,
) {
    let changes = crate::storage::shard::ChangeListener::new();
    while !stop.load(Ordering::SeqCst) {
        let seen = changes.so_far();
        let Some(core) = core.upgrade() else {
            return;
        };
        for ino in core.take_stale_caches() {
            // Offset 0, length 0: every page of the file. (fuser answers Ok when
            // the kernel no longer knows the inode.)
            match notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                Ok(()) => crate::metrics::fuse_cache_dropped(),
                // The mount is going.
                Err(err) => tracing::debug!(ino, %err, "no cache to drop"),
            }
        }
        drop(core);
        changes.wait(seen, Duration::from_secs(1));
    }
}

/// stat the mount's README from another thread, so a mount that never answers
/// cannot hang the caller.
fn answer_within(mount_point: &Path, limit: Duration) -> anyhow::Result<std::fs::Metadata> {
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = mount_point.to_path_buf();
    std::thread::spawn(move || {
        let _ = std::fs::metadata(probe.join(super::namespace::README))?;
        let _ = tx.send(std::fs::metadata(&probe));
        Ok::<_, std::io::Error>(())
    });
    match rx.recv_timeout(limit) {
        Ok(result) => Ok(result?),
        Err(_) => bail!("no answer within {limit:?}"),
    }
}

/// Kernel readahead for a FUSE mount starts at 128 KiB whatever init asked; the
/// mount's bdi takes a larger value from root. Best effort.
fn raise_readahead(dev: u64) {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(err) = std::fs::write(&knob, (READAHEAD / 1024).to_string()) {
        tracing::debug!(%err, knob, "could not raise the mount's readahead");
    }
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmount. A busy mount (a reader still has a file open) has its connection
    /// aborted and is detached, so the daemon can still stop.
    pub fn unmount(&mut self) {
        self.stop_dropper.store(true, Ordering::SeqCst);
        let Some(session) = self.session.take() else {
            return;
        };
        match umount(&self.path, UnmountFlags::empty()) {
            Ok(()) => tracing::info!("unmounted {}", self.path.display()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(
                    "the mount at {} is busy (a file is open): aborting its connection and detaching it",
                    self.path.display()
                );
                abort_connection(self.dev);
                if let Err(err) = detach(&self.path) {
                    tracing::error!(%err, "lazy unmount of {} failed", self.path.display());
                }
            }
            Err(err) => {
                // Already unmounted by hand, say; make sure nothing stays behind.
                tracing::warn!(%err, "unmounting {} failed; detaching it", self.path.display());
                abort_connection(self.dev);
                let _ = detach(&self.path);
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.join());
        });
        match rx.recv_timeout(SESSION_JOIN_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "the FUSE session ended with an error"),
            Err(_) => {
                tracing::error!("the FUSE session did not end; aborting its connection");
                abort_connection(self.dev);
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn umount(path: &Path, flags: UnmountFlags) -> std::io::Result<()> {
    Ok(rustix::mount::unmount(path, flags)?)
}

/// Lazy unmount: the mount disappears from the namespace now, and is released
/// once nothing uses it.
pub fn detach(path: &Path) -> std::io::Result<()> {
    umount(path, UnmountFlags::DETACH)
}

/// End a FUSE connection through fusectl: pending and future requests fail with
/// ENOTCONN, and the session loop sees the device close. Best effort.
fn abort_connection(dev: u64) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let control = dir.join(rustix::fs::minor(dev).to_string()).join("abort");
    if !control.exists() {
        // fusectl may not be mounted yet (root can mount it): the system call, not
        // a `mount` program found through PATH.
        if let Err(err) = rustix::mount::mount(
            "fusectl",
            dir,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        ) {
            tracing::debug!(%err, "could not mount fusectl");
        }
    }
    if let Err(err) = std::fs::write(&control, "1") {
        tracing::warn!(%err, control = %control.display(), "could not abort the FUSE connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_mount_points_inside_or_above_own_dirs() {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let inside = data.join("mnt");
        let err = prepare_mount_point(&inside, &[&data]).unwrap_err();
        assert!(
            format!("{err:#}").contains("inside the daemon's directory"),
            "{err:#}"
        );
        assert!(!inside.exists(), "a refused mount point is not created");
        let err = prepare_mount_point(temp.path(), &[&data]).unwrap_err();
        assert!(format!("{err:#}").contains("would hide"), "{err:#}");
        let file = temp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_mount_point(&file, &[&data]).unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
        let fresh = temp.path().join("mnt");
        assert_eq!(
            prepare_mount_point(&fresh, &[&data]).unwrap(),
            fresh.canonicalize().unwrap()
        );
    }

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
