//! Where a file really holds data. The engine preallocates large sparse files (WAL
//! segments, mmap chunks, payload pages); only their data extents go into a snapshot.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `(offset, length)` of each data extent of `file` (of logical size `size`), in order.
/// Where the file system cannot tell (no SEEK_DATA), the whole file is one extent.
pub fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut position = 0u64;
    while position < size {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let data = unsafe { libc::lseek(fd, position as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // ENXIO: no data after `position`, the rest is a hole.
                Some(libc::ENXIO) => Ok(extents),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if extents.is_empty() => {
                    Ok(vec![(0, size)])
                }
                _ => Err(err),
            };
        }
        let data = data as u64;
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(size);
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
