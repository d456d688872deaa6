//! SHA-256 of files' logical contents (holes read as zeros), cached by file identity.
//!
//! A frozen file is immutable while frozen, and after a thaw any change moves its
//! mtime/ctime, so `(device, inode, size, mtime, ctime)` identifies its content. The
//! cache lets a manifest of an unchanged shard be answered without reading it again.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// Entries kept: far more than the files of any realistic set of collections
/// (each is ~100 bytes).
const CACHE_ENTRIES: usize = 100_000;
/// How old a file's last change must be for its digest to be cached: well above
/// the coarsest file-system timestamp granularity (a jiffy, up to 10 ms).
const SETTLED_NS: i128 = 1_000_000_000;
/// Read size when hashing: large enough for full-speed sequential reads.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn identity(file: &File) -> io::Result<FileIdentity> {
    let m = file.metadata()?;
    Ok(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    })
}

fn cache() -> &'static Mutex<lru::LruCache<FileIdentity, [u8; 32]>> {
    static CACHE: OnceLock<Mutex<lru::LruCache<FileIdentity, [u8; 32]>>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CACHE_ENTRIES).unwrap(),
        ))
    })
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the logical content of `file` (size `size`, data only in `extents`).
pub fn file_sha256(file: &File, size: u64, extents: &[(u64, u64)]) -> io::Result<[u8; 32]> {
    let id = identity(file)?;
    if let Some(hit) = cache().lock().unwrap().get(&id) {
        return Ok(*hit);
    }
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut position = 0u64;
    let feed_zeros = |hasher: &mut Sha256, mut len: u64| {
        while len > 0 {
            let n = len.min(CHUNK as u64) as usize;
            hasher.update(&zeros[..n]);
            len -= n as u64;
        }
    };
    for (offset, len) in extents {
        feed_zeros(&mut hasher, offset - position);
        let mut done = 0u64;
        while done < *len {
            let n = (len - done).min(CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset + done)?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        position = offset + len;
    }
    feed_zeros(&mut hasher, size - position);
    let digest: [u8; 32] = hasher.finalize().into();
    // A change in the same clock tick as the last one would keep the mtime: only
    // remember digests of files whose last change is safely in the past.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    if now_ns - id.mtime_ns.max(id.ctime_ns) > SETTLED_NS {
        cache().lock().unwrap().put(id, digest);
    }
    Ok(digest)
}

pub fn bytes_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
