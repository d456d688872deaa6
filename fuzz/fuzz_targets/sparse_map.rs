#![no_main]
//! `snapshot::tar_header::data_layout`: how an entry's data lies in its file, read
//! from the entry's raw header blocks (long names, pax records, the old-GNU sparse map
//! and its extension blocks) while a restore unpacks.
//!
//! Two checks on every input, besides never panicking:
//! - raw: `data_layout(input)`. `Dense` only for whole blocks; `Sparse(map)` only when
//!   the map's extents are in order and do not overlap (`offset + len <= next
//!   offset`), none ends past 2^64 and their lengths add up without overflow (to the
//!   header's stored `size`, which the function checks itself);
//! - round trip: a regular file, directory or sparse file built from the input
//!   (path length, mtime, size; for a sparse file, extents as gaps and lengths, and
//!   maybe a trailing `(real_size, 0)` hole) is written by `entry_headers`, then read
//!   back by `data_layout` as the same layout, in `headers_len` bytes.

use libfuzzer_sys::fuzz_target;
use snapfs::snapshot::tar_header::{DataLayout, Kind, data_layout, entry_headers, headers_len};

fuzz_target!(|data: &[u8]| {
    raw(data);
    round_trip(data);
});

fn raw(data: &[u8]) {
    match data_layout(data) {
        None => {}
        Some(DataLayout::Dense) => assert!(!data.is_empty() && data.len() % 512 == 0),
        Some(DataLayout::Sparse(map)) => {
            let mut end = 0u64;
            for &(offset, len) in &map {
                assert!(offset >= end, "extents out of order: {map:?}");
                end = offset.checked_add(len).expect("an extent ending past 2^64");
            }
            map.iter()
                .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len))
                .expect("extent lengths adding up past 2^64");
            // (That they add up to the header's stored size is data_layout's own
            // test.) The map is no longer than the blocks can hold.
            assert!(map.len() <= data.len() / 512 * 21 + 4);
        }
    }
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

fn round_trip(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let path = "p".repeat(usize::from(rest.first().copied().unwrap_or(0)) * 2 + 1);
    let mtime = u64_at(rest, 1);
    let body = rest.get(9..).unwrap_or_default();
    let (kind_map, expected);
    let kind = match shape % 3 {
        0 => {
            expected = DataLayout::Dense;
            Kind::File {
                size: u64_at(body, 0),
            }
        }
        1 => {
            expected = DataLayout::Dense;
            Kind::Dir
        }
        _ => {
            // Extents as (gap before, length - 1) pairs; then maybe a trailing hole.
            let mut map = Vec::new();
            let mut end = 0u64;
            let mut stored = 0u64;
            for pair in body.chunks_exact(16) {
                let gap = u64_at(pair, 0) >> (shape >> 2 & 63);
                let len = (u64_at(pair, 8) >> (shape >> 2 & 63)).saturating_add(1);
                let Some(offset) = end.checked_add(gap) else {
                    return;
                };
                let Some(new_end) = offset.checked_add(len) else {
                    return;
                };
                let Some(total) = stored.checked_add(len) else {
                    return;
                };
                map.push((offset, len));
                (end, stored) = (new_end, total);
            }
            let real_size = if shape & 2 != 0 && end > 0 {
                map.push((end, 0));
                end
            } else {
                end
            };
            kind_map = map;
            expected = DataLayout::Sparse(kind_map.clone());
            Kind::Sparse {
                real_size,
                stored,
                map: &kind_map,
            }
        }
    };
    let headers = entry_headers(&path, &kind, mtime);
    assert_eq!(headers.len() as u64, headers_len(&path, &kind));
    assert_eq!(
        data_layout(&headers),
        Some(expected),
        "path of {} bytes",
        path.len()
    );
}
