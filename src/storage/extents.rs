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

/// A private copy of `from` at `to` (created here; it must not exist) with the same
/// bytes and holes: a reflink where the file system shares blocks (btrfs, xfs),
/// else each data extent copied in the kernel (`copy_file_range`), holes left
/// holes. Returns the bytes copied (0 for a reflink).
pub fn copy_sparse(from: &std::path::Path, to: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let source = fs_err::File::open(from)?.into_parts().0;
    let size = source.metadata()?.len();
    let target = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?
        .into_parts()
        .0;
    if rustix::fs::ioctl_ficlone(&target, &source).is_ok() {
        return Ok(0);
    }
    target.set_len(size)?;
    let mut copied = 0;
    let mut buf = Vec::new();
    for (offset, len) in data_extents(&source, size)? {
        let end = offset + len;
        let (mut at_in, mut at_out) = (offset, offset);
        while at_in < end {
            let want = usize::try_from(end - at_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match rustix::fs::copy_file_range(
                &source,
                Some(&mut at_in),
                &target,
                Some(&mut at_out),
                want,
            ) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was copied", from.display()),
                    ));
                }
                Ok(_) => {}
                // No in-kernel copy here: through a buffer.
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                    buf.resize(1 << 20, 0);
                    let n = ((end - at_in) as usize).min(buf.len());
                    source.read_exact_at(&mut buf[..n], at_in)?;
                    target.write_all_at(&buf[..n], at_out)?;
                    at_in += n as u64;
                    at_out += n as u64;
                }
                Err(err) => return Err(err.into()),
            }
        }
        copied += len;
    }
    Ok(copied)
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

    #[test]
    fn a_sparse_copy_has_the_same_bytes_and_holes_and_its_own_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let mut f = File::create(&from).unwrap();
        f.set_len(16 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[5u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(9 << 20)).unwrap();
        f.write_all(&[6u8; 4096]).unwrap();
        drop(f);
        let to = dir.path().join("to");
        copy_sparse(&from, &to).unwrap();
        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        let (a, b) = (
            std::fs::metadata(&from).unwrap(),
            std::fs::metadata(&to).unwrap(),
        );
        assert_ne!(a.ino(), b.ino());
        assert!(
            b.blocks() * 512 < 1 << 20,
            "holes stay holes: {} bytes",
            b.blocks() * 512
        );
        // Writing the copy leaves the original as it was.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&to)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&from).unwrap()[0], 0);
        assert!(
            copy_sparse(&from, &to).is_err(),
            "an existing target is refused"
        );
    }
}
