//! Writing unpacked files as the archive describes them: a regular entry's bytes
//! are all data (zeros included, as the file had them), a GNU sparse entry's data
//! ranges are written and the rest stays holes. So a restored file has the extents
//! its original had, and a snapshot of the restored state is the same archive. Bytes
//! outside the data ranges are zeros by construction; should one not be, it is
//! written anyway (content always wins over the map). Writes go out in as few
//! `pwrite`s as the data allows, and the kernel is asked to start writing back every
//! few MiB, so the one `syncfs` before a restore's switch finds little left to do.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::tar_header::DataLayout;

/// The granularity of holes: a file system's block (4 KiB on ext4, xfs, tmpfs).
const HOLE_BLOCK: u64 = 4096;

/// Start writeback of what was written once this much has piled up.
pub const WRITEBACK_EVERY: u64 = 8 << 20;

pub struct SparseWriter {
    file: File,
    /// `None`: every byte is data. Else the data ranges, in order.
    regions: Option<Vec<(u64, u64)>>,
    /// The first range that may still be ahead (writes only move forward).
    next_region: usize,
    /// Logical position of the next byte.
    pos: u64,
    /// Start of the range not yet handed to writeback.
    unflushed_from: u64,
}

impl SparseWriter {
    /// Create `path` (and its parents); an existing file is an error
    /// (`AlreadyExists`: the archive holds the same path twice).
    pub fn create(path: &Path, layout: DataLayout) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(SparseWriter {
            file,
            regions: match layout {
                DataLayout::Dense => None,
                DataLayout::Sparse(map) => Some(map),
            },
            next_region: 0,
            pos: 0,
            unflushed_from: 0,
        })
    }

    /// Create `path` (as [`SparseWriter::create`]) for bytes that come with no map
    /// of their own (a nested archive's entries, whose holes arrive as zeros): every
    /// block of zeros becomes a hole, so what lands on disk is bounded by the
    /// non-zero bytes sent, whatever size an entry declares.
    pub fn zeros_as_holes(path: &Path) -> io::Result<Self> {
        Self::create(path, DataLayout::Sparse(Vec::new()))
    }

    /// Append `data`, the file's next bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let start = self.pos;
        let end = start + data.len() as u64;
        match &self.regions {
            None => self.file.write_all_at(data, start)?,
            Some(regions) => {
                // Walk [start, end) as alternating data ranges and gaps, from the
                // first range not yet behind.
                while regions
                    .get(self.next_region)
                    .is_some_and(|(offset, len)| offset + len <= start)
                {
                    self.next_region += 1;
                }
                let mut at = start;
                let ahead = regions[self.next_region..]
                    .iter()
                    .take_while(|(offset, _)| *offset < end);
                for &(offset, len) in ahead {
                    let from = offset.max(start);
                    let to = (offset + len).min(end);
                    self.write_gap(data, start, at, from)?;
                    self.file.write_all_at(
                        &data[(from - start) as usize..(to - start) as usize],
                        from,
                    )?;
                    at = to;
                }
                self.write_gap(data, start, at, end)?;
            }
        }
        self.pos = end;
        if self.pos - self.unflushed_from >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(())
    }

    /// Bytes `[from, to)` lie in a hole: skipped where zero (they always are in a
    /// well-formed archive), written otherwise, a file-system block at a time, so a
    /// hole stays a hole around the odd non-zero byte.
    fn write_gap(&self, data: &[u8], start: u64, from: u64, to: u64) -> io::Result<()> {
        let mut at = from;
        while at < to {
            // Up to the next block boundary of the file.
            let next = (at / HOLE_BLOCK + 1).saturating_mul(HOLE_BLOCK);
            let end = next.min(to);
            let piece = &data[(at - start) as usize..(end - start) as usize];
            if piece.iter().any(|b| *b != 0) {
                self.file.write_all_at(piece, at)?;
            }
            at = end;
        }
        Ok(())
    }

    /// Ask the kernel to begin writing back what was written since the last call.
    fn start_writeback(&mut self) {
        start_writeback(
            &self.file,
            self.unflushed_from,
            self.pos - self.unflushed_from,
        );
        self.unflushed_from = self.pos;
    }

    /// Fix the length (a trailing hole) and start writeback of the rest.
    pub fn finish(mut self) -> io::Result<u64> {
        self.file.set_len(self.pos)?;
        if self.pos > self.unflushed_from {
            self.start_writeback();
        }
        Ok(self.pos)
    }
}

/// Ask the kernel to begin writing back bytes `from..from + len` of `file`; it
/// returns at once, so the final `fsync`/`syncfs` finds little left to write.
pub fn start_writeback(file: &File, from: u64, len: u64) {
    // SAFETY: a plain system call on a descriptor the caller owns; failure only
    // means the data is written back later, by the sync.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const BLOCK: usize = 4096;

    fn extents(path: &Path) -> Vec<(u64, u64)> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        crate::storage::extents::data_extents(&file, size).unwrap()
    }

    #[test]
    fn a_regular_entry_is_written_whole_zeros_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; 3 * BLOCK];
        data[BLOCK] = 1;
        let mut writer = SparseWriter::create(&path, DataLayout::Dense).unwrap();
        for piece in data.chunks(1000) {
            writer.write(piece).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(extents(&path), [(0, 3 * BLOCK as u64)]);
    }

    #[test]
    fn a_sparse_entry_keeps_its_map_of_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Data in blocks 1 and 5..7 (block 6 all zeros, yet data), holes elsewhere.
        let b = BLOCK as u64;
        let map = vec![(b, b), (5 * b, 2 * b), (10 * b, 0)];
        let mut data = vec![0u8; 10 * BLOCK];
        data[BLOCK + 7] = 1;
        data[5 * BLOCK..6 * BLOCK].fill(9);
        let mut writer = SparseWriter::create(&path, DataLayout::Sparse(map)).unwrap();
        // Uneven pieces: ranges start in one call and end in the next.
        for piece in data.chunks(3000) {
            writer.write(piece).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(extents(&path), [(b, b), (5 * b, 2 * b)]);
        assert_eq!(std::fs::metadata(&path).unwrap().blocks() * 512, 3 * b);
    }

    #[test]
    fn bytes_the_map_calls_holes_are_still_written_if_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..2 * BLOCK).map(|i| (i % 251) as u8).collect();
        let mut writer = SparseWriter::create(&path, DataLayout::Sparse(vec![])).unwrap();
        writer.write(&data).unwrap();
        writer.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn zeros_become_holes_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let b = BLOCK as u64;
        // A non-zero byte in block 2 and one in block 7; the rest zeros.
        let mut data = vec![0u8; 9 * BLOCK];
        data[2 * BLOCK + 5] = 3;
        data[7 * BLOCK] = 4;
        let mut writer = SparseWriter::zeros_as_holes(&path).unwrap();
        for piece in data.chunks(5000) {
            writer.write(piece).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(extents(&path), [(2 * b, b), (7 * b, b)]);
    }

    #[test]
    fn a_path_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        SparseWriter::create(&path, DataLayout::Dense)
            .unwrap()
            .finish()
            .unwrap();
        let err = SparseWriter::create(&path, DataLayout::Dense)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
