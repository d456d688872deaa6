//! The SHA-256 of a whole archive: computed while a reader streams it from start to
//! end (no second pass), or by one full read when asked before that, and remembered
//! per archive fingerprint, so the same state is never hashed twice.

use std::io;
use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::layout::ArchiveLayout;

/// Archive states remembered; each is 64 bytes.
const CACHE_ENTRIES: usize = 10_000;
/// Read size for a full hashing pass.
const CHUNK: usize = 1 << 20;

fn cache() -> &'static Mutex<lru::LruCache<[u8; 32], [u8; 32]>> {
    static CACHE: OnceLock<Mutex<lru::LruCache<[u8; 32], [u8; 32]>>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CACHE_ENTRIES).unwrap(),
        ))
    })
}

pub fn known_sha256(layout: &ArchiveLayout) -> Option<[u8; 32]> {
    cache().lock().unwrap().get(&layout.fingerprint()).copied()
}

/// Record the checksum of `layout`'s bytes, computed by whoever read them all.
pub fn remember(layout: &ArchiveLayout, digest: [u8; 32]) {
    cache().lock().unwrap().put(layout.fingerprint(), digest);
}

/// The archive's SHA-256, from the cache or by reading it once.
pub fn archive_sha256(layout: &ArchiveLayout) -> io::Result<[u8; 32]> {
    if let Some(known) = known_sha256(layout) {
        return Ok(known);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < layout.size() {
        let n = layout.read_at(offset, &mut buf)?;
        if n == 0 {
            return Err(io::Error::other("archive ended before its size"));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    remember(layout, digest);
    Ok(digest)
}

/// Follows one reader: as long as its reads are sequential from offset 0, the bytes
/// feed a hasher, and reaching the end records the archive's checksum. Kernel
/// readahead may re-read a little behind; such reads are ignored, a jump ahead stops
/// the hashing for this reader.
pub struct SequentialHasher {
    next: u64,
    hasher: Option<Sha256>,
}

impl SequentialHasher {
    /// A hasher for a reader of `layout`; idle when the checksum is known already.
    pub fn for_layout(layout: &ArchiveLayout) -> Self {
        let hasher = known_sha256(layout).is_none().then(Sha256::new);
        SequentialHasher { next: 0, hasher }
    }

    /// Still hashing: the checksum is unknown and the reads so far were in order.
    pub fn is_active(&self) -> bool {
        self.hasher.is_some()
    }

    /// The offset the next fresh byte must come from.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Stop hashing for this reader (its reads went out of order).
    pub fn abandon(&mut self) {
        self.hasher = None;
    }

    pub fn observe(&mut self, layout: &ArchiveLayout, offset: u64, data: &[u8]) {
        let Some(hasher) = self.hasher.as_mut() else {
            return;
        };
        let end = offset + data.len() as u64;
        if offset > self.next {
            self.hasher = None;
            return;
        }
        if end <= self.next {
            return;
        }
        let fresh = &data[(self.next - offset) as usize..];
        hasher.update(fresh);
        self.next = end;
        if self.next == layout.size() {
            let digest: [u8; 32] = self.hasher.take().unwrap().finalize().into();
            remember(layout, digest);
        }
    }
}

/// The checksum in a sidecar: bare hex, or a `sha256sum` line (`<hex>  <name>`).
pub fn sidecar_checksum(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}
