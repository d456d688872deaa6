//! Where a file really holds data. The engine preallocates large sparse files (WAL
//! segments, mmap chunks, payload pages); only their data extents go into a snapshot.

use std::fs::File;
use std::io;

use rustix::fs::{SeekFrom, seek};
use rustix::io::Errno;

/// `(offset, length)` of each data extent of `file` (of logical size `size`), in order.
/// Where the file system cannot tell (no SEEK_DATA), the whole file is one extent.
pub fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut position = 0u64;
    while position < size {
        let data = match seek(file, SeekFrom::Data(position)) {
            Ok(data) => data,
            // ENXIO: no data after `position`, the rest is a hole.
            Err(Errno::NXIO) => return Ok(extents),
            Err(Errno::INVAL | Errno::OPNOTSUPP) if extents.is_empty() => {
                return Ok(vec![(0, size)]);
            }
            Err(err) => return Err(err.into()),
        };
        if data >= size {
            break;
        }
        let hole = seek(file, SeekFrom::Hole(data))?;
        let end = hole.min(size);
        match extents.last_mut() {
            Some((start, len)) if *start + *len == data => *len = end - *start,
            _ => extents.push((data, end - data)),
        }
        position = end;
    }
    Ok(extents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn finds_data_between_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.seek(SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[2u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let extents = data_extents(&f, 8 << 20).unwrap();
        let stored: u64 = extents.iter().map(|(_, l)| l).sum();
        // File systems may round extents up to their block size, never drop data.
        assert!(extents.iter().any(|(o, _)| *o == 0));
        assert!(
            extents
                .iter()
                .any(|(o, l)| *o <= 4 << 20 && o + l >= (4 << 20) + 4096)
        );
        assert!(stored < 8 << 20, "holes are not data: {extents:?}");

        let dense = dir.path().join("dense");
        std::fs::write(&dense, vec![7u8; 10_000]).unwrap();
        let f = File::open(&dense).unwrap();
        assert_eq!(data_extents(&f, 10_000).unwrap(), vec![(0, 10_000)]);

        let empty = dir.path().join("empty");
        File::create(&empty).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(
            data_extents(&File::open(&empty).unwrap(), 1 << 20).unwrap(),
            vec![]
        );
    }
}
