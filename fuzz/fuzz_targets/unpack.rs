#![no_main]
//! The restore's unpacker, `snapshot::unpack::unpack_entries` (and its wrappers
//! `unpack_verified` / `verify_archive`), on arbitrary archives.
//!
//! Input: one mode byte, then the archive. Mode bit 0 clear: every tar header's
//! checksum is recomputed first (`fix_checksums`), so mutations reach past the tar
//! reader's checksum test; set: the bytes go in as they are. Bit 1: a tight `space`
//! (64 KiB of stored bytes) instead of a roomy one (256 MiB). Bit 2: unpack through
//! `unpack_verified` (whole-file SHA-256, trailing padding) instead of `unpack_entries`.
//!
//! Checks, besides never panicking: the archive is unpacked into `root/dest` of a
//! fresh temporary directory (on tmpfs when there is one), and whether that returns
//! `Ok` or `Err`:
//! - nothing is created outside `dest` (the only entry of `root` is `dest`);
//! - under `dest` there are only directories and regular files with one link each:
//!   no symlink, hard link, device, FIFO or socket;
//! - an archive that unpacks is one `verify_archive` (no destination) accepts too,
//!   with the same entry count, and `unpack_verified`'s SHA-256 is that of the bytes
//!   it read.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snapfs::snapshot::tar_header::read_number;
use snapfs::snapshot::unpack::{
    FileDigests, Limits, unpack_entries, unpack_verified, verify_archive,
};

const BLOCK: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, archive)) = data.split_first() else {
        return;
    };
    let mut archive = archive.to_vec();
    if mode & 1 == 0 {
        fix_checksums(&mut archive, 0);
    }
    let space = if mode & 2 == 0 { 256 << 20 } else { 64 << 10 };
    // Small logical budgets: a sparse entry's zeros cost time to produce.
    let limits = Limits {
        space: Some(space),
        logical: if mode & 8 == 0 { 256 << 20 } else { 1 << 20 },
        ..Limits::unbounded_space()
    };

    let root = tempfile::Builder::new()
        .prefix("snapfs-fuzz-")
        .tempdir_in(scratch())
        .expect("temporary directory");
    let dest = root.path().join("dest");
    fs::create_dir(&dest).unwrap();

    let unpacked = if mode & 4 == 0 {
        unpack_entries(&archive[..], Some(&dest), &limits, FileDigests::Check).map(|r| (r, None))
    } else {
        unpack_verified(&archive[..], None, Some(&dest), &limits).map(|r| {
            let sha = r.sha256.clone();
            (r, Some(sha))
        })
    };

    check_tree(root.path(), &dest);

    if let Ok((report, sha)) = unpacked {
        let verified = verify_archive(&archive[..], None)
            .unwrap_or_else(|e| panic!("unpacked ({report:?}) but does not verify: {e}"));
        assert_eq!(verified.entries, report.entries);
        if let Some(sha) = sha {
            // unpack_verified reads the input to its end: the hash of all of it.
            assert_eq!(sha, verified.sha256);
            assert_eq!(report.archive_bytes, archive.len() as u64);
        }
    }
});

/// Where the temporary directories go: tmpfs when there is one (cheap to make and
/// remove for every run).
fn scratch() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// `root` holds `dest` only; `dest` holds directories and single-link regular files.
fn check_tree(root: &Path, dest: &Path) {
    let names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dest"], "something was created outside dest");
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else {
                assert!(
                    kind.is_file(),
                    "{}: {kind:?} is no file or directory",
                    path.display()
                );
                assert_eq!(meta.nlink(), 1, "{}: a hard link", path.display());
            }
        }
    }
}

/// Recompute the checksum of every header block, following the tar framing (header,
/// sparse extension blocks, data padded to a block), and of the headers of nested
/// `.tar` entries (Qdrant's segment archives). Headers a mutation made unreadable
/// stop the walk; the rest of the bytes are left as they are.
fn fix_checksums(buf: &mut [u8], depth: u32) {
    let mut at = 0usize;
    while at + BLOCK <= buf.len() {
        let header = &mut buf[at..at + BLOCK];
        if header.iter().all(|b| *b == 0) {
            at += BLOCK;
            continue;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let kind = header[156];
        let nested = header[..100]
            .split(|b| *b == 0)
            .next()
            .unwrap()
            .ends_with(b".tar");
        let Some(size) = read_number(&header[124..136]) else {
            return;
        };
        let mut next = at + BLOCK;
        if kind == b'S' && header[482] != 0 {
            // Extension blocks (no checksum of their own), each saying if one follows.
            while next + BLOCK <= buf.len() {
                let more = buf[next + 504] != 0;
                next += BLOCK;
                if !more {
                    break;
                }
            }
        }
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(BLOCK))
            .and_then(|s| next.checked_add(s))
        else {
            return;
        };
        if nested && depth < 2 {
            let data_end = end.min(buf.len());
            fix_checksums(&mut buf[next.min(data_end)..data_end], depth + 1);
        }
        at = end;
    }
}
