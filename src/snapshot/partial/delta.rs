//! What a receiver already has of a file it is sent: the sender slides a window of
//! one block over the file's data and, wherever the window's rolling checksum and
//! hash match a block the receiver listed in its manifest — in any of its files, at
//! any offset here — the receiver copies that block from its own file instead of
//! receiving it. What matches nothing is sent. This is rsync's idea, across all of a
//! shard's files: the engine rewrites data into new files (an optimizer merges
//! segments, a WAL segment file is reused), and the bytes are mostly the receiver's
//! already.

use std::collections::HashMap;
use std::io;

use crate::snapshot::digest::{BLOCK, BlockSig, Rolling, ZERO_BLOCK, strong_hash};
use crate::snapshot::layout::FrozenFile;

/// A receiver's blocks, findable by rolling checksum.
#[derive(Default)]
pub struct BlockIndex {
    /// The receiver's files (archive paths) that blocks point into.
    pub paths: Vec<String>,
    by_weak: HashMap<u32, Vec<Found>>,
    /// A quick "certainly not" before the map: one bit per value of the checksum's
    /// low [`FILTER_BITS`] bits.
    filter: Vec<u64>,
}

/// Bits of the checksum that index the filter (2^20 bits = 128 KiB).
const FILTER_BITS: u32 = 20;

/// A block of the receiver's: which file, where, and its hash.
#[derive(Debug, Clone, Copy)]
struct Found {
    strong: [u8; 8],
    path: usize,
    offset: u64,
}

impl BlockIndex {
    /// Index every whole block (not a file's short last block, not zeros) of the
    /// receiver's files: `(path, size, signatures)`.
    pub fn new<'a>(files: impl IntoIterator<Item = (&'a str, u64, Vec<BlockSig>)>) -> BlockIndex {
        let mut index = BlockIndex {
            filter: vec![0; (1usize << FILTER_BITS) / 64],
            ..Default::default()
        };
        for (path, size, blocks) in files {
            let at = index.paths.len();
            index.paths.push(path.to_string());
            for (i, sig) in blocks.into_iter().enumerate() {
                let offset = i as u64 * BLOCK;
                if sig == ZERO_BLOCK || offset + BLOCK > size {
                    continue;
                }
                let bit = (sig.weak & ((1 << FILTER_BITS) - 1)) as usize;
                index.filter[bit / 64] |= 1 << (bit % 64);
                index.by_weak.entry(sig.weak).or_default().push(Found {
                    strong: sig.strong,
                    path: at,
                    offset,
                });
            }
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.by_weak.is_empty()
    }

    #[inline]
    fn maybe(&self, weak: u32) -> bool {
        let bit = (weak & ((1 << FILTER_BITS) - 1)) as usize;
        self.filter[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// A run of the receiver's bytes that makes up part of the new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Where in the new file.
    pub at: u64,
    /// Index into [`BlockIndex::paths`].
    pub path: usize,
    /// Where in that file.
    pub from: u64,
    pub len: u64,
}

/// How to make a file from the receiver's blocks and sent bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Byte ranges of the file that are sent.
    pub literal: Vec<(u64, u64)>,
    pub copies: Vec<Copy>,
}

impl Delta {
    pub fn literal_bytes(&self) -> u64 {
        self.literal.iter().map(|(_, len)| len).sum()
    }
}

/// Bytes read at a time while sliding: far larger than a block, so refills are rare.
const READ: usize = 4 << 20;

/// Find the receiver's blocks in `file` (only its data extents; holes are zeros
/// and need nothing).
pub fn delta(file: &FrozenFile, index: &BlockIndex) -> io::Result<Delta> {
    let mut delta = Delta::default();
    for &(offset, len) in &merged(&file.extents) {
        slide(file, offset, len, index, &mut delta)?;
    }
    Ok(delta)
}

/// Adjacent extents as one.
fn merged(extents: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(offset, len) in extents {
        match out.last_mut() {
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => out.push((offset, len)),
        }
    }
    out
}

/// Slide over the data range `[start, start + len)`.
fn slide(
    file: &FrozenFile,
    start: u64,
    len: u64,
    index: &BlockIndex,
    delta: &mut Delta,
) -> io::Result<()> {
    let end = start + len;
    let block = BLOCK as usize;
    if len < BLOCK || index.is_empty() {
        push_literal(delta, start, len);
        return Ok(());
    }
    // buf holds the file's bytes [buf_at, buf_at + buf.len()).
    let mut buf: Vec<u8> = Vec::with_capacity(READ + block);
    let mut buf_at = start;
    let mut pos = start; // the window is [pos, pos + BLOCK)
    let mut literal_from = start;
    let mut rolling: Option<Rolling> = None;
    while pos + BLOCK <= end {
        // Keep the window (and what follows, for rolling) in the buffer.
        if pos + BLOCK > buf_at + buf.len() as u64 {
            let keep = (pos - buf_at) as usize;
            buf.drain(..keep.min(buf.len()));
            buf_at = pos;
            let want = ((end - (buf_at + buf.len() as u64)) as usize).min(READ);
            let old = buf.len();
            buf.resize(old + want, 0);
            file.read_exact_at(&mut buf[old..], buf_at + old as u64)?;
        }
        let at = (pos - buf_at) as usize;
        let window = &buf[at..at + block];
        let weak = match &mut rolling {
            Some(r) => r.value(),
            None => {
                let r = Rolling::of(window);
                rolling = Some(r);
                r.value()
            }
        };
        if index.maybe(weak)
            && let Some(candidates) = index.by_weak.get(&weak)
        {
            let strong = strong_hash(window);
            let continues = delta.copies.last().filter(|c| c.at + c.len == pos);
            let best = candidates
                .iter()
                .filter(|f| f.strong == strong)
                .min_by_key(|f| {
                    // Prefer the block that continues the last copy (one longer run).
                    !continues.is_some_and(|c| c.path == f.path && c.from + c.len == f.offset)
                });
            if let Some(found) = best {
                push_literal(delta, literal_from, pos - literal_from);
                push_copy(delta, pos, found.path, found.offset);
                pos += BLOCK;
                literal_from = pos;
                rolling = None;
                continue;
            }
        }
        // No match: slide one byte.
        if pos + BLOCK < end {
            if at + block >= buf.len() {
                // The next byte is not read yet: refill on the next round.
                let r = rolling.as_mut().expect("computed above");
                let mut next = [0u8; 1];
                file.read_exact_at(&mut next, pos + BLOCK)?;
                r.roll(buf[at], next[0]);
            } else {
                rolling
                    .as_mut()
                    .expect("computed above")
                    .roll(buf[at], buf[at + block]);
            }
        }
        pos += 1;
    }
    push_literal(delta, literal_from, end - literal_from);
    Ok(())
}

fn push_literal(delta: &mut Delta, at: u64, len: u64) {
    if len == 0 {
        return;
    }
    match delta.literal.last_mut() {
        Some((o, l)) if *o + *l == at => *l += len,
        _ => delta.literal.push((at, len)),
    }
}

fn push_copy(delta: &mut Delta, at: u64, path: usize, from: u64) {
    if let Some(last) = delta.copies.last_mut()
        && last.at + last.len == at
        && last.path == path
        && last.from + last.len == from
    {
        last.len += BLOCK;
        return;
    }
    delta.copies.push(Copy {
        at,
        path,
        from,
        len: BLOCK,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::digest::file_digest;
    use std::io::Write;

    fn frozen(dir: &std::path::Path, name: &str, content: &[u8]) -> FrozenFile {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        FrozenFile::open(&path).unwrap()
    }

    fn sigs(file: &FrozenFile) -> Vec<BlockSig> {
        file.with_file(|f| file_digest(&Default::default(), f, file.size, &file.extents, true))
            .unwrap()
            .blocks
            .clone()
            .unwrap()
    }

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    /// Apply a delta the way a receiver does: copies from `old`, literals from `new`.
    fn rebuild(delta: &Delta, old: &[&[u8]], new: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; new.len()];
        for &(at, len) in &delta.literal {
            out[at as usize..(at + len) as usize]
                .copy_from_slice(&new[at as usize..(at + len) as usize]);
        }
        for c in &delta.copies {
            let src = old[c.path];
            out[c.at as usize..(c.at + c.len) as usize]
                .copy_from_slice(&src[c.from as usize..(c.from + c.len) as usize]);
        }
        out
    }

    #[test]
    fn blocks_are_found_at_any_offset_in_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = BLOCK as usize;
        let first = noise(6 * b, 1);
        let second = noise(3 * b + 100, 2);
        // The new file: new bytes, then blocks 1..4 of the first file shifted by 777,
        // new bytes, the second file's block 2, and a new tail.
        let mut new = noise(777, 3);
        new.extend_from_slice(&first[b..4 * b]);
        new.extend_from_slice(&noise(5000, 4));
        new.extend_from_slice(&second[2 * b..3 * b]);
        new.extend_from_slice(&noise(123, 5));
        let old_files = [
            frozen(dir.path(), "a", &first),
            frozen(dir.path(), "b", &second),
        ];
        let index = BlockIndex::new([
            ("a", first.len() as u64, sigs(&old_files[0])),
            ("b", second.len() as u64, sigs(&old_files[1])),
        ]);
        let file = frozen(dir.path(), "new", &new);
        let delta = delta(&file, &index).unwrap();
        assert_eq!(rebuild(&delta, &[&first, &second], &new), new);
        // Three of the first file's blocks in one run, one of the second's.
        assert_eq!(delta.copies.len(), 2, "{:?}", delta.copies);
        assert_eq!(
            delta.copies[0],
            Copy {
                at: 777,
                path: 0,
                from: BLOCK,
                len: 3 * BLOCK
            }
        );
        assert_eq!(delta.copies[1].path, 1);
        assert_eq!(delta.literal_bytes(), (777 + 5000 + 123) as u64);
    }

    #[test]
    fn nothing_known_sends_everything() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(3 * BLOCK as usize, 9);
        let file = frozen(dir.path(), "x", &data);
        let delta = delta(&file, &BlockIndex::new([])).unwrap();
        assert_eq!(delta.literal, vec![(0, data.len() as u64)]);
        assert!(delta.copies.is_empty());
    }
}
