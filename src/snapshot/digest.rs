//! SHA-256 of files' logical contents (holes read as zeros), cached by file identity.
//!
//! A frozen file is immutable while frozen, and after a thaw any change moves its
//! mtime/ctime, so `(device, inode, size, mtime, ctime)` identifies its content. The
//! cache lets a manifest of an unchanged shard be answered without reading it again.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Entries kept: far more than the files of any realistic set of collections
/// (each is ~100 bytes).
const CACHE_ENTRIES: usize = 100_000;
/// How old a file's last change must be for its digest to be cached: well above
/// the coarsest file-system timestamp granularity (a jiffy, up to 10 ms).
const SETTLED_NS: i128 = 1_000_000_000;

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

/// What is known of a file's content: its SHA-256 and, for files of more than one
/// block, each block's signature (what partial snapshots match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: [u8; 32],
    /// One per [`BLOCK`] of the logical size; `None` when not asked for, or for a
    /// file of one block.
    pub blocks: Option<Vec<BlockSig>>,
}

/// A block's signature: a rolling checksum ([`Rolling`]), cheap to slide over
/// another file byte by byte to find the block anywhere in it, and the first 8
/// bytes of its SHA-256 to confirm a find (a false confirmation has odds of 2^-64;
/// what a partial snapshot assembles is checked again by the whole file's SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSig {
    pub weak: u32,
    pub strong: [u8; 8],
}

/// The first 8 bytes of `data`'s SHA-256.
pub fn strong_hash(data: &[u8]) -> [u8; 8] {
    Sha256::digest(data)[..8].try_into().expect("8 bytes")
}

/// The rolling checksum of a window of bytes (the one rsync made known): `a`, the
/// sum of the bytes, and `b`, the sum of each byte times its distance from the
/// window's end, both modulo 2^16. Moving the window by one byte updates both in
/// constant time.
#[derive(Debug, Clone, Copy)]
pub struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    pub fn of(window: &[u8]) -> Rolling {
        let len = window.len() as u32;
        let (mut a, mut b) = (0u32, 0u32);
        for (i, byte) in window.iter().enumerate() {
            a = a.wrapping_add(u32::from(*byte));
            b = b.wrapping_add((len - i as u32).wrapping_mul(u32::from(*byte)));
        }
        Rolling { a, b, len }
    }

    /// Slide the window one byte: `out` leaves at the front, `into` enters at the back.
    #[inline]
    pub fn roll(&mut self, out: u8, into: u8) {
        self.a = self
            .a
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(into));
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(u32::from(out)))
            .wrapping_add(self.a);
    }

    #[inline]
    pub fn value(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

/// Blocks of partial snapshots' content form: fine enough that an append or an
/// in-place change moves little more than itself (measured: 32 KiB moves 7% less
/// than 128 KiB after a 1% change), coarse enough that a manifest stays small (holes,
/// most of a shard's logical size, take one character per block).
pub const BLOCK: u64 = 32 << 10;

/// File digests by file identity (part of [`super::Snapshots`]).
pub struct Digests(Mutex<lru::LruCache<FileIdentity, Arc<FileDigest>>>);

impl Default for Digests {
    fn default() -> Self {
        Digests(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CACHE_ENTRIES).unwrap(),
        )))
    }
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the logical content of `file` (size `size`, data only in `extents`).
pub fn file_sha256(
    digests: &Digests,
    file: &File,
    size: u64,
    extents: &[(u64, u64)],
) -> io::Result<[u8; 32]> {
    Ok(file_digest(digests, file, size, extents, false)?.sha256)
}

/// The file's digest; with `blocks`, its block hashes too (files of more than one
/// block). Reads only the data extents (holes hash as zeros without being read), and
/// only once per file identity.
pub fn file_digest(
    digests: &Digests,
    file: &File,
    size: u64,
    extents: &[(u64, u64)],
    blocks: bool,
) -> io::Result<Arc<FileDigest>> {
    let id = identity(file)?;
    let blocks = blocks && size > BLOCK;
    if let Some(hit) = digests.0.lock().unwrap().get(&id)
        && (!blocks || hit.blocks.is_some())
    {
        return Ok(hit.clone());
    }
    let mut whole = Sha256::new();
    let mut block_hashes = Vec::new();
    let mut buf = vec![0u8; BLOCK as usize];
    let mut next_extent = 0usize;
    let mut start = 0u64;
    while start < size {
        let len = (size - start).min(BLOCK);
        let block = &mut buf[..len as usize];
        let data = read_block(file, extents, &mut next_extent, start, block)?;
        whole.update(&*block);
        if blocks {
            let zeros = !data || block.iter().all(|b| *b == 0);
            block_hashes.push(if zeros {
                ZERO_BLOCK
            } else {
                BlockSig {
                    weak: Rolling::of(block).value(),
                    strong: strong_hash(block),
                }
            });
        }
        start += len;
    }
    let digest = Arc::new(FileDigest {
        sha256: whole.finalize().into(),
        blocks: blocks.then_some(block_hashes),
    });
    // A change in the same clock tick as the last one would keep the mtime: only
    // remember digests of files whose last change is safely in the past.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    if now_ns - id.mtime_ns.max(id.ctime_ns) > SETTLED_NS {
        digests.0.lock().unwrap().put(id, digest.clone());
    }
    Ok(digest)
}

/// Fill `block` (the bytes at `start`) from the file's data extents, zeros
/// elsewhere; `next` walks the sorted extents along. Whether any data was read.
fn read_block(
    file: &File,
    extents: &[(u64, u64)],
    next: &mut usize,
    start: u64,
    block: &mut [u8],
) -> io::Result<bool> {
    let end = start + block.len() as u64;
    block.fill(0);
    while *next < extents.len() && extents[*next].0 + extents[*next].1 <= start {
        *next += 1;
    }
    let mut any = false;
    let mut i = *next;
    while i < extents.len() && extents[i].0 < end {
        let (offset, len) = extents[i];
        let from = offset.max(start);
        let to = (offset + len).min(end);
        if from < to {
            file.read_exact_at(
                &mut block[(from - start) as usize..(to - start) as usize],
                from,
            )?;
            any = true;
        }
        i += 1;
    }
    Ok(any)
}

/// The signature of a block of zeros (a hole, or zeros written): all zero bits,
/// which no real block has (its strong hash would have to be all zeros).
pub const ZERO_BLOCK: BlockSig = BlockSig {
    weak: 0,
    strong: [0; 8],
};

/// Hex digits of one block signature: 8 for the rolling checksum, 16 for the hash.
pub const SIG_HEX: usize = 24;

/// Block signatures as text: 24 hex digits per block, `.` for a block of zeros
/// (most blocks of the engine's preallocated files).
pub fn blocks_text(blocks: &[BlockSig]) -> String {
    let mut text = String::with_capacity(blocks.len() * 4);
    for block in blocks {
        if *block == ZERO_BLOCK {
            text.push('.');
        } else {
            text.push_str(&format!("{:08x}", block.weak));
            text.push_str(&hex(&block.strong));
        }
    }
    text
}

/// The blocks of [`blocks_text`]; `None` if the text is not made of such tokens.
pub fn parse_blocks(text: &str) -> Option<Vec<BlockSig>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            out.push(ZERO_BLOCK);
            rest = after;
        } else {
            let token = rest.get(..SIG_HEX)?;
            let weak = u32::from_str_radix(token.get(..8)?, 16).ok()?;
            let strong = u64::from_str_radix(token.get(8..)?, 16).ok()?.to_be_bytes();
            if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(BlockSig { weak, strong });
            rest = &rest[SIG_HEX..];
        }
    }
    Some(out)
}

pub fn bytes_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn the_rolling_checksum_slides() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let n = 700;
        let mut rolling = Rolling::of(&data[..n]);
        for start in 1..data.len() - n {
            rolling.roll(data[start - 1], data[start + n - 1]);
            assert_eq!(
                rolling.value(),
                Rolling::of(&data[start..start + n]).value(),
                "at {start}"
            );
        }
    }

    #[test]
    fn digests_read_data_extents_and_hash_holes_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.bin");
        let mut file = File::create(&path).unwrap();
        let size = 10 * BLOCK + 1234;
        file.set_len(size).unwrap();
        // Data crossing a block boundary, data inside one block, a hole block between.
        for (at, byte) in [(BLOCK - 100, 7u8), (4 * BLOCK + 5, 9u8)] {
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&[byte; 300]).unwrap();
        }
        drop(file);
        let file = File::open(&path).unwrap();
        let extents = crate::storage::extents::data_extents(&file, size).unwrap();
        let digests = Digests::default();
        let digest = file_digest(&digests, &file, size, &extents, true).unwrap();
        let content = std::fs::read(&path).unwrap();
        assert_eq!(digest.sha256, <[u8; 32]>::from(Sha256::digest(&content)));
        let blocks = digest.blocks.as_ref().unwrap();
        assert_eq!(blocks.len(), 11);
        for (i, hash) in blocks.iter().enumerate() {
            let start = i * BLOCK as usize;
            let end = (start + BLOCK as usize).min(content.len());
            let piece = &content[start..end];
            let want = if piece.iter().all(|b| *b == 0) {
                ZERO_BLOCK
            } else {
                BlockSig {
                    weak: Rolling::of(piece).value(),
                    strong: strong_hash(piece),
                }
            };
            assert_eq!(*hash, want, "block {i}");
        }
        assert_eq!(blocks[2], ZERO_BLOCK);
        assert_ne!(blocks[0], blocks[2]);
        let text = blocks_text(blocks);
        assert_eq!(parse_blocks(&text).unwrap(), *blocks, "round trip");
        assert!(parse_blocks("abc").is_none());
        // Asked without blocks: the same file digest.
        assert_eq!(
            file_sha256(&digests, &file, size, &extents).unwrap(),
            digest.sha256
        );
    }
}
