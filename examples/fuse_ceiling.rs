//! The FUSE ceiling for `scripts/bench.sh`: the least a FUSE server can do to serve
//! one file, so `cp` of it measures the kernel's FUSE path and nothing else.
//!
//! One read-only file, `file`, of SIZE bytes, mounted with the options, thread count,
//! readahead and open flags snapfs uses for a new live snapshot state. The mount's
//! throughput for `cp` is the ceiling snapfs's own reads are compared with. Two kinds:
//!
//! - without PLAIN: a repeating 1 MiB pattern held in memory, so each reply copies
//!   from a buffer the CPU cache keeps hot (no disk, no copy beyond the reply): the
//!   strictest reference, less than any server of real data does;
//! - with PLAIN (a plain file of SIZE bytes): each read is a `pread` of that file
//!   into a buffer and the reply, what any FUSE server of one plain file does when it
//!   does not hand the file to the kernel (passthrough). snapfs's live file is a tar
//!   built over engine files, so it reads so too;
//! - with PLAIN and `mmap`: the plain file mapped, each reply written straight from
//!   the mapping (one copy, from page cache into the reply): what a server could
//!   gain by mapping its files instead of reading them.
//!
//! Usage: `cargo run --release --example fuse_ceiling -- MOUNTPOINT SIZE [PLAIN
//! [mmap]]`; it serves until SIGINT or SIGTERM, then unmounts.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request, SessionACL,
};

/// As snapfs: 1 MiB reads and readahead, 64 background requests, 4 threads.
const READ: u32 = 1 << 20;
const MAX_BACKGROUND: u16 = 64;
const THREADS: usize = 4;
const FILE_INO: u64 = 2;
const TTL: Duration = Duration::from_secs(1);

struct Ceiling {
    size: u64,
    pattern: Vec<u8>,
    plain: Option<Plain>,
}

enum Plain {
    Read(File),
    Map(memmap2::Mmap),
}

thread_local! {
    /// Each worker thread's read buffer (plain-file kind), reused across reads.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Ceiling {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == 1;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.size },
            blocks: self.size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Ceiling {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(READ) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == "file" {
            reply.entry(&TTL, &self.attr(FILE_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            1 | FILE_INO => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == FILE_INO {
            // A new live state: through the page cache, its old pages dropped.
            reply.opened(FileHandle(1), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = (offset + u64::from(size)).min(self.size);
        let len = end.saturating_sub(offset) as usize;
        let plain = match &self.plain {
            None => {
                let start = (offset % 4096) as usize;
                return reply.data(&self.pattern[start..start + len]);
            }
            Some(Plain::Map(map)) => {
                let start = offset.min(self.size) as usize;
                return reply.data(&map[start..start + len]);
            }
            Some(Plain::Read(file)) => file,
        };
        READ_BUF.with_borrow_mut(|buf| {
            buf.resize(len, 0);
            match plain.read_exact_at(buf, offset) {
                Ok(()) => reply.data(buf),
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if offset == 0 {
            let _ = reply.add(INodeNo(FILE_INO), 1, FileType::RegularFile, "file");
        }
        reply.ok();
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(mount), Some(size)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: fuse_ceiling MOUNTPOINT SIZE [PLAIN [mmap]]");
    };
    let size: u64 = size.parse()?;
    let plain = match args.next() {
        None => None,
        Some(path) => {
            let file = File::open(path)?;
            anyhow::ensure!(
                file.metadata()?.len() >= size,
                "the plain file is shorter than SIZE"
            );
            Some(match args.next().as_deref() {
                None => Plain::Read(file),
                // SAFETY: the bench's own file, not changed while it is served.
                Some("mmap") => Plain::Map(unsafe { memmap2::Mmap::map(&file)? }),
                Some(other) => anyhow::bail!("unknown kind {other:?} (only `mmap`)"),
            })
        }
    };
    // A pattern a page longer than the largest read, so any offset's slice fits.
    let pattern: Vec<u8> = (0..(READ as usize + 4096))
        .map(|i| (i % 251) as u8)
        .collect();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("ceiling".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::CUSTOM(format!("max_read={READ}")),
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    let session = fuser::Session::new(
        Ceiling {
            size,
            pattern,
            plain,
        },
        &mount,
        &config,
    )?
    .spawn()?;
    let signals = signal_hook_like()?;
    signals.recv()?;
    drop(session);
    Ok(())
}

/// SIGINT or SIGTERM, as a channel (through tokio, already a dependency).
fn signal_hook_like() -> anyhow::Result<std::sync::mpsc::Receiver<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(rx)
}
