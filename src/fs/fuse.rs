//! The FUSE adapter: translates kernel requests into [`SnapFs`] calls and answers.
//! Anything that may touch the disk, freeze a collection or hash runs on the
//! runtime's blocking pool, never on a fuser thread, so a slow open never holds up
//! other requests. Every operation is answered: implemented, or an explicit errno.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::{AccessMask, Attr, FileKind, FsError, FsResult, SnapFs};
use crate::metrics;

/// How long the kernel may keep a name → node answer: listings follow collections
/// and snapshots as they come and go within this.
const ENTRY_TTL: Duration = Duration::from_secs(1);
/// Attributes of stable nodes (directories, stored snapshots, README.txt).
const STABLE_ATTR_TTL: Duration = Duration::from_secs(1);
/// Live and generated files change without notice: the kernel asks every time.
const VOLATILE_ATTR_TTL: Duration = Duration::ZERO;
/// Kernel readahead for page-cached files (stored snapshots): 1 MiB, the largest
/// single FUSE request (256 pages).
pub const READAHEAD: u32 = 1 << 20;
/// Pending background requests (readahead, async direct I/O) the kernel may queue.
const MAX_BACKGROUND: u16 = 64;

thread_local! {
    /// One read buffer per worker thread: 1 MiB requests would otherwise cost an
    /// allocation and its page faults every time.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub struct FuseAdapter {
    core: Arc<SnapFs>,
    runtime: tokio::runtime::Handle,
    owners: Owners,
    passthrough: bool,
    /// Passthrough backing files, one per inode while any handle of it is open
    /// (the kernel requires every open of an inode to share it).
    backings: Arc<Mutex<Backings>>,
}

#[derive(Default)]
struct Backings {
    by_ino: HashMap<u64, (Arc<BackingId>, usize)>,
    ino_of_fh: HashMap<u64, u64>,
}

impl FuseAdapter {
    pub fn new(core: Arc<SnapFs>, runtime: tokio::runtime::Handle, access: MountAccess) -> Self {
        let owners = Owners {
            uid: rustix::process::getuid().as_raw(),
            gid: access
                .group
                .unwrap_or_else(|| rustix::process::getgid().as_raw()),
            shared: access.allow_other,
        };
        FuseAdapter {
            core,
            runtime,
            owners,
            passthrough: false,
            backings: Arc::default(),
        }
    }

    /// Run `work` on the blocking pool with a handle on the core.
    fn spawn(&self, work: impl FnOnce(&SnapFs) + Send + 'static) {
        let core = self.core.clone();
        self.runtime.spawn_blocking(move || work(&core));
    }
}

/// Who may use the mount besides the daemon's user.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountAccess {
    /// Mounted with `allow_other` and `default_permissions`: the kernel lets
    /// every user in and checks the modes below.
    pub allow_other: bool,
    /// The group the mount's files belong to (default: the daemon's own).
    pub group: Option<u32>,
}

/// The owner and group every node shows, and whether the group shares the
/// owner's rights.
#[derive(Debug, Clone, Copy)]
struct Owners {
    uid: u32,
    gid: u32,
    /// With `allow_other` the modes are real: the group gets the owner's rights
    /// and everyone else none. Without it only the owner gets in, and the modes
    /// stay the plain read-only ones.
    shared: bool,
}

impl Owners {
    fn mode(&self, perm: u16) -> u16 {
        if self.shared {
            let owner = (perm >> 6) & 0o7;
            owner << 6 | owner << 3
        } else {
            perm
        }
    }
}

fn to_file_attr(attr: &Attr, owners: Owners) -> FileAttr {
    // An upload belongs to whoever created it, so their own chmod or utimes on it
    // (cp -p, rsync) passes the kernel's owner check.
    let (uid, gid) = attr.owner.unwrap_or((owners.uid, owners.gid));
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: match attr.kind {
            FileKind::Directory => FileType::Directory,
            FileKind::File => FileType::RegularFile,
        },
        perm: owners.mode(attr.perm),
        nlink: attr.nlink,
        uid,
        gid,
        rdev: 0,
        blksize: super::BLOCK_SIZE,
        flags: 0,
    }
}

fn attr_ttl(attr: &Attr) -> Duration {
    if attr.volatile {
        VOLATILE_ATTR_TTL
    } else {
        STABLE_ATTR_TTL
    }
}

/// Log (routine errors at debug), count and turn an error into an errno.
fn errno(op: &'static str, err: &FsError) -> Errno {
    let (code, name) = err.errno();
    if err.is_routine() {
        tracing::debug!(op, errno = name, %err, "fuse");
    } else {
        tracing::warn!(op, errno = name, %err, "fuse operation failed");
    }
    metrics::fuse_error(name);
    Errno::from_i32(code)
}

macro_rules! answer {
    ($reply:expr, $op:literal, $err:expr) => {
        $reply.error(errno($op, &$err))
    };
}

fn name_str(name: &OsStr) -> FsResult<&str> {
    name.to_str().ok_or(FsError::NotFound)
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        // Passthrough lets the kernel read stored snapshots itself, at disk speed.
        self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        tracing::info!(passthrough = self.passthrough, "FUSE session initialised");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let owners = self.owners;
        self.spawn(move |core| {
            match name_str(&name).and_then(|name| core.lookup(parent.0, name)) {
                Ok(attr) => reply.entry_with_ttls(
                    &attr_ttl(&attr),
                    &ENTRY_TTL,
                    &to_file_attr(&attr, owners),
                    Generation(0),
                ),
                Err(err) => answer!(reply, "lookup", err),
            }
        });
    }

    // fuser's batch_forget hands each node to this.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let owners = self.owners;
        self.spawn(move |core| match core.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&attr_ttl(&attr), &to_file_attr(&attr, owners)),
            Err(err) => answer!(reply, "getattr", err),
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.core.is_upload(ino.0) && size.is_none() {
            // rsync and cp -p set times and modes on the file they upload; they mean
            // nothing for a snapshot to restore, and refusing them would fail the copy.
            let owners = self.owners;
            return self.spawn(move |core| match core.getattr(ino.0, None) {
                Ok(attr) => reply.attr(&VOLATILE_ATTR_TTL, &to_file_attr(&attr, owners)),
                Err(err) => answer!(reply, "setattr", err),
            });
        }
        let err = if mode.is_some() || uid.is_some() || gid.is_some() {
            FsError::NotPermitted("modes and owners are fixed")
        } else {
            self.core.refuse_change(ino.0)
        };
        answer!(reply, "setattr", err);
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        answer!(
            reply,
            "readlink",
            FsError::Invalid("there are no symbolic links")
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        answer!(reply, "mknod", self.core.refuse_change(parent.0));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        answer!(reply, "mkdir", self.core.refuse_change(parent.0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(move |core| {
            match name_str(&name).and_then(|name| core.unlink(parent.0, name)) {
                Ok(()) => reply.ok(),
                Err(err) => answer!(reply, "unlink", err),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        answer!(reply, "rmdir", self.core.refuse_change(parent.0));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        answer!(
            reply,
            "symlink",
            FsError::NotPermitted("symbolic links are not supported")
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.spawn(move |core| {
            let result = name_str(&name).and_then(|from| {
                name_str(&newname).and_then(|to| core.rename(parent.0, from, newparent.0, to))
            });
            match result {
                Ok(()) => reply.ok(),
                Err(err) => answer!(reply, "rename", err),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        answer!(
            reply,
            "link",
            FsError::NotPermitted("hard links are not supported")
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let passthrough = self.passthrough;
        let backings = self.backings.clone();
        self.spawn(move |core| {
            let opened = match core.open(ino.0, write) {
                Ok(opened) => opened,
                Err(err) => return answer!(reply, "open", err),
            };
            let mut flags = FopenFlags::empty();
            if opened.direct_io {
                flags |= FopenFlags::FOPEN_DIRECT_IO;
            }
            if opened.keep_cache {
                flags |= FopenFlags::FOPEN_KEEP_CACHE;
            }
            if passthrough && let Some(file) = &opened.backing {
                let mut table = backings.lock().unwrap();
                let shared = match table.by_ino.get_mut(&ino.0) {
                    Some((id, count)) => {
                        *count += 1;
                        Some(id.clone())
                    }
                    None => match reply.open_backing(file) {
                        Ok(id) => {
                            let id = Arc::new(id);
                            table.by_ino.insert(ino.0, (id.clone(), 1));
                            Some(id)
                        }
                        Err(err) => {
                            tracing::debug!(%err, "passthrough unavailable for this file; serving reads");
                            None
                        }
                    },
                };
                if let Some(id) = shared {
                    table.ino_of_fh.insert(opened.fh, ino.0);
                    return reply.opened_passthrough(FileHandle(opened.fh), flags, &id);
                }
            }
            reply.opened(FileHandle(opened.fh), flags);
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(move |core| {
            READ_BUF.with_borrow_mut(|buf| {
                buf.resize(size as usize, 0);
                let mut reply = Some(reply);
                let result = core.read(fh.0, offset, buf, |data| {
                    reply.take().unwrap().data(data);
                });
                if let (Err(err), Some(reply)) = (result, reply) {
                    answer!(reply, "read", err);
                }
            });
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(move |core| match core.write(fh.0, offset, &data) {
            Ok(n) => reply.written(n),
            Err(err) => answer!(reply, "write", err),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) waits for this answer: a restore's outcome is what close returns.
        self.spawn(move |core| match core.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(err) => answer!(reply, "flush", err),
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        {
            let mut table = self.backings.lock().unwrap();
            if let Some(ino) = table.ino_of_fh.remove(&fh.0)
                && let Some((_, count)) = table.by_ino.get_mut(&ino)
            {
                *count -= 1;
                if *count == 0 {
                    table.by_ino.remove(&ino);
                }
            }
        }
        // Dropping the last reference to a live view thaws its shards: not on this thread.
        self.spawn(move |core| {
            core.release(fh.0);
            reply.ok();
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // nothing written through the mount waits for a sync
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |core| match core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(err) => answer!(reply, "opendir", err),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.core.readdir(fh.0, offset) {
            Ok(entries) => {
                for (i, entry) in entries.iter().enumerate() {
                    let kind = if entry.is_dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    let next = offset + i as u64 + 1;
                    if reply.add(INodeNo(entry.ino), next, kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => answer!(reply, "readdir", err),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        // Never requested at init; answered in case a kernel sends it anyway.
        answer!(reply, "readdirplus", FsError::Unsupported("readdirplus"));
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(move |core| match core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(err) => answer!(reply, "statfs", err),
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        answer!(
            reply,
            "setxattr",
            FsError::Unsupported("extended attributes")
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        answer!(reply, "getxattr", FsError::NoAttribute);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        // No extended attributes: an empty list.
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        answer!(
            reply,
            "removexattr",
            FsError::Unsupported("extended attributes")
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let mask = AccessMask {
            write: mask.contains(AccessFlags::W_OK),
        };
        match self.core.access(ino.0, mask) {
            Ok(()) => reply.ok(),
            Err(err) => answer!(reply, "access", err),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_owned();
        let owners = self.owners;
        let creator = (req.uid(), req.gid());
        self.spawn(move |core| {
            match name_str(&name).and_then(|name| core.create(parent.0, name, creator)) {
                Ok((attr, fh)) => reply.created(
                    &VOLATILE_ATTR_TTL,
                    &to_file_attr(&attr, owners),
                    Generation(0),
                    FileHandle(fh),
                    // Uploads bypass the page cache: every byte comes to us, in order.
                    FopenFlags::FOPEN_DIRECT_IO,
                ),
                Err(err) => answer!(reply, "create", err),
            }
        });
    }

    // Not here: getlk/setlk, bmap, poll, lseek and copy_file_range keep fuser's
    // answer, ENOSYS, which the kernel takes as "do it yourself": local locks,
    // always-ready polling, its own seeking (every byte of an archive is data),
    // read + write instead of a server-side copy.

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        answer!(reply, "fallocate", self.core.refuse_change(ino.0));
    }
}
