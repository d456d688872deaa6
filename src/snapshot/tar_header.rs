//! GNU tar headers, written byte by byte so that every field is deterministic:
//! fixed modes, uid/gid 0, empty user/group names, one mtime for the whole archive.
//!
//! Formats produced (all read by GNU tar, Python's `tarfile`, the `tar` crate and
//! Qdrant): regular files (`0`), directories (`5`), GNU long names (`L`, for paths over
//! 100 bytes) and old-GNU sparse files (`S`, with extension blocks for maps of more
//! than four extents), the same sparse flavour Qdrant's own snapshots use.

pub const BLOCK: u64 = 512;
/// Sparse map entries that fit in the main header / in one extension block.
const SPARSE_IN_HEADER: usize = 4;
const SPARSE_IN_EXTENSION: usize = 21;

pub const FILE_MODE: u32 = 0o644;
pub const DIR_MODE: u32 = 0o755;

/// Round up to the next 512-byte block.
pub fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

/// What a header describes.
pub enum Kind<'a> {
    File {
        size: u64,
    },
    Dir,
    /// `stored` bytes follow; `map` lists `(offset, length)` data extents in file order
    /// (the last entry may be `(real_size, 0)` for a trailing hole).
    Sparse {
        real_size: u64,
        stored: u64,
        map: &'a [(u64, u64)],
    },
}

/// All header blocks for one entry (long-name entry included), ready to be written
/// before the entry's data.
pub fn entry_headers(path: &str, kind: &Kind<'_>, mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK as usize * 2);
    let name = path.as_bytes();
    if name.len() > 100 {
        // GNU long name: a pseudo-entry whose data is the NUL-terminated full path.
        let long = header_block(
            b"././@LongLink",
            b'L',
            0o644,
            name.len() as u64 + 1,
            0,
            None,
        );
        out.extend_from_slice(&long);
        let mut data = name.to_vec();
        data.push(0);
        data.resize(padded(data.len() as u64) as usize, 0);
        out.extend_from_slice(&data);
    }
    let short = &name[..name.len().min(100)];
    match kind {
        Kind::File { size } => {
            out.extend_from_slice(&header_block(short, b'0', FILE_MODE, *size, mtime, None))
        }
        Kind::Dir => out.extend_from_slice(&header_block(short, b'5', DIR_MODE, 0, mtime, None)),
        Kind::Sparse {
            real_size,
            stored,
            map,
        } => {
            let mut header = header_block(
                short,
                b'S',
                FILE_MODE,
                *stored,
                mtime,
                Some((map, *real_size)),
            );
            let (first, rest) = map.split_at(map.len().min(SPARSE_IN_HEADER));
            debug_assert_eq!(first.len(), map.len().min(SPARSE_IN_HEADER));
            if !rest.is_empty() {
                header[482] = 1;
                set_checksum(&mut header);
            }
            out.extend_from_slice(&header);
            let chunks: Vec<_> = rest.chunks(SPARSE_IN_EXTENSION).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let mut block = [0u8; BLOCK as usize];
                for (j, (offset, len)) in chunk.iter().enumerate() {
                    put_number(&mut block[j * 24..j * 24 + 12], *offset);
                    put_number(&mut block[j * 24 + 12..j * 24 + 24], *len);
                }
                block[504] = u8::from(i + 1 < chunks.len());
                out.extend_from_slice(&block);
            }
        }
    }
    out
}

/// Header blocks an entry needs before its data, without building them.
pub fn headers_len(path: &str, kind: &Kind<'_>) -> u64 {
    let long = if path.len() > 100 {
        BLOCK + padded(path.len() as u64 + 1)
    } else {
        0
    };
    let extensions = match kind {
        Kind::Sparse { map, .. } if map.len() > SPARSE_IN_HEADER => {
            (map.len() - SPARSE_IN_HEADER).div_ceil(SPARSE_IN_EXTENSION) as u64 * BLOCK
        }
        _ => 0,
    };
    long + BLOCK + extensions
}

fn header_block(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    sparse: Option<(&[(u64, u64)], u64)>,
) -> [u8; 512] {
    let mut h = [0u8; BLOCK as usize];
    h[..name.len()].copy_from_slice(name);
    put_octal(&mut h[100..108], mode as u64);
    put_octal(&mut h[108..116], 0); // uid
    put_octal(&mut h[116..124], 0); // gid
    put_number(&mut h[124..136], size);
    put_number(&mut h[136..148], mtime);
    h[156] = typeflag;
    // GNU magic and version: "ustar  \0".
    h[257..265].copy_from_slice(b"ustar  \0");
    if let Some((map, real_size)) = sparse {
        for (i, (offset, len)) in map.iter().take(SPARSE_IN_HEADER).enumerate() {
            let at = 386 + i * 24;
            put_number(&mut h[at..at + 12], *offset);
            put_number(&mut h[at + 12..at + 24], *len);
        }
        put_number(&mut h[483..495], real_size);
    }
    set_checksum(&mut h);
    h
}

fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    // Six octal digits, NUL, space: the traditional layout every reader accepts.
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(digits.as_bytes());
    h[154] = 0;
    h[155] = b' ';
}

/// Octal, zero-padded, NUL-terminated; the value must fit.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    assert!(
        digits.len() == width,
        "{value} does not fit an octal field of {width} digits"
    );
    field[..width].copy_from_slice(digits.as_bytes());
    field[width] = 0;
}

/// Octal when it fits, else GNU base-256 (high bit set, big-endian), as GNU tar does
/// for files of 8 GiB and more.
fn put_number(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    if value < 8u64.pow(width as u32) {
        put_octal(field, value);
    } else {
        field.fill(0);
        let bytes = value.to_be_bytes();
        let len = field.len();
        field[len - 8..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

/// How an entry's data lies in its file, read back from its raw header blocks.
#[derive(Debug, PartialEq, Eq)]
pub enum DataLayout {
    /// Every byte is data (a regular entry): written as it comes, zeros included.
    Dense,
    /// An old-GNU sparse entry: only these `(offset, length)` ranges are data; the
    /// rest is holes.
    Sparse(Vec<(u64, u64)>),
}

/// The layout of the entry whose header blocks are exactly `raw` (long-name and pax
/// entries first, then the main header and, for a sparse file, its extension
/// blocks), or `None` when they do not read that way to the last byte.
pub fn data_layout(raw: &[u8]) -> Option<DataLayout> {
    let block = |at: usize| raw.get(at..at.checked_add(BLOCK as usize)?);
    let mut at = 0;
    loop {
        let header = block(at)?;
        match header[156] {
            // Long names and pax records precede the entry they describe.
            b'L' | b'K' | b'x' | b'g' => {
                let size = read_number(&header[124..136])?;
                // Checked: a size near 2^64 must not wrap the skip (to zero: no end).
                let skip = size.checked_next_multiple_of(BLOCK)?.checked_add(BLOCK)?;
                at = at.checked_add(usize::try_from(skip).ok()?)?;
            }
            b'S' => {
                let (map, end) = sparse_map(raw, at)?;
                // The map must describe exactly the data stored.
                let stored = read_number(&header[124..136])?;
                let mapped = map
                    .iter()
                    .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len));
                // In order, not overlapping, and none ending past 2^64.
                let ordered = map
                    .iter()
                    .try_fold(0u64, |end, &(offset, len)| {
                        (offset >= end).then(|| offset.checked_add(len)).flatten()
                    })
                    .is_some();
                return (end == raw.len() && mapped == Some(stored) && ordered)
                    .then_some(DataLayout::Sparse(map));
            }
            _ => return (at + BLOCK as usize == raw.len()).then_some(DataLayout::Dense),
        }
    }
}

/// The sparse map of the old-GNU header at `at` and its extension blocks, and where
/// the blocks end.
fn sparse_map(raw: &[u8], at: usize) -> Option<(Vec<(u64, u64)>, usize)> {
    let mut map = Vec::new();
    let mut push = |entry: &[u8]| -> Option<()> {
        if entry.iter().all(|b| *b == 0) {
            return Some(());
        }
        map.push((read_number(&entry[..12])?, read_number(&entry[12..24])?));
        Some(())
    };
    let header = raw.get(at..at + BLOCK as usize)?;
    for i in 0..SPARSE_IN_HEADER {
        push(&header[386 + i * 24..410 + i * 24])?;
    }
    let mut extended = header[482] != 0;
    let mut next = at + BLOCK as usize;
    while extended {
        let ext = raw.get(next..next + BLOCK as usize)?;
        for i in 0..SPARSE_IN_EXTENSION {
            push(&ext[i * 24..i * 24 + 24])?;
        }
        extended = ext[504] != 0;
        next += BLOCK as usize;
    }
    Some((map, next))
}

/// A numeric field: octal (spaces and NULs around it), or GNU base-256.
pub fn read_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_read_back_what_was_written() {
        let long = "d/".repeat(80) + "file";
        assert_eq!(
            data_layout(&entry_headers(&long, &Kind::File { size: 5 }, 7)),
            Some(DataLayout::Dense)
        );
        // More extents than the main header holds: extension blocks, long name too.
        let map: Vec<(u64, u64)> = (0..30).map(|i| (i * 8192, 4096)).collect();
        let kind = Kind::Sparse {
            real_size: 30 * 8192,
            stored: 30 * 4096,
            map: &map,
        };
        assert_eq!(
            data_layout(&entry_headers(&long, &kind, 7)),
            Some(DataLayout::Sparse(map.clone()))
        );
        assert_eq!(data_layout(&[0u8; 100]), None);
    }

    #[test]
    fn header_lengths_match_what_is_built() {
        let long = "d/".repeat(80) + "file";
        let map: Vec<(u64, u64)> = (0..30).map(|i| (i * 8192, 4096)).collect();
        let kinds = [
            Kind::File { size: 10 },
            Kind::Dir,
            Kind::Sparse {
                real_size: 1 << 20,
                stored: 4096,
                map: &map[..1],
            },
            Kind::Sparse {
                real_size: 1 << 20,
                stored: 30 * 4096,
                map: &map,
            },
        ];
        for path in ["short", long.as_str()] {
            for kind in &kinds {
                assert_eq!(
                    entry_headers(path, kind, 0).len() as u64,
                    headers_len(path, kind)
                );
            }
        }
    }

    /// Found by fuzzing (fuzz/ `sparse_map`): sizes near 2^64 in the header blocks
    /// overflowed (a panic with overflow checks; without them a long-name size that
    /// rounds to 2^64 - 512 made the skip zero, an endless loop).
    #[test]
    fn sizes_near_2_pow_64_are_refused_not_overflowed() {
        let base_256 = |field: &mut [u8], value: u64| {
            field.fill(0);
            field[4..].copy_from_slice(&value.to_be_bytes());
            field[0] = 0x80;
        };
        for size in [u64::MAX - 511, u64::MAX] {
            let mut raw = [0u8; 1024];
            raw[156] = b'L';
            base_256(&mut raw[124..136], size);
            assert_eq!(data_layout(&raw), None, "long name of {size} bytes");
        }
        // Sparse maps whose lengths add up past 2^64, or whose extent ends past it.
        for map in [[(0, 1 << 63), (1 << 63, 1 << 63)], [(0, 0), (u64::MAX, 2)]] {
            let mut raw = [0u8; 512];
            raw[156] = b'S';
            for (i, (offset, len)) in map.iter().enumerate() {
                base_256(&mut raw[386 + i * 24..398 + i * 24], *offset);
                base_256(&mut raw[398 + i * 24..410 + i * 24], *len);
            }
            base_256(&mut raw[124..136], map[1].1);
            assert_eq!(data_layout(&raw), None, "{map:?}");
        }
    }

    #[test]
    fn large_numbers_use_base_256() {
        let mut field = [0u8; 12];
        put_number(&mut field, 8u64.pow(11));
        assert_eq!(field[0], 0x80);
        assert_eq!(
            u64::from_be_bytes(field[4..].try_into().unwrap()),
            8u64.pow(11)
        );
        put_number(&mut field, 8u64.pow(11) - 1);
        assert_eq!(&field, b"77777777777\0");
    }
}
