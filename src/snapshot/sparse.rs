//! Writing unpacked files: zero blocks stay holes (a snapshot of preallocated,
//! mostly-empty files unpacks to the same small footprint), data goes out in as few
//! `pwrite`s as the data allows, and the kernel is asked to start writing back every
//! few MiB, so the one `syncfs` before a restore's switch finds little left to do.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The file system's allocation unit: a block of zeros this size becomes a hole.
const BLOCK: usize = 4096;
/// Start writeback of what was written once this much has piled up.
const WRITEBACK_EVERY: u64 = 8 << 20;

pub struct SparseWriter {
    file: File,
    /// Logical position of the next byte.
    pos: u64,
    /// Start of the range not yet handed to writeback.
    unflushed_from: u64,
}

impl SparseWriter {
    /// Create `path` (and its parents); an existing file is an error
    /// (`AlreadyExists`: the archive holds the same path twice).
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(SparseWriter {
            file,
            pos: 0,
            unflushed_from: 0,
        })
    }

    /// Append `data`: runs of non-zero blocks are written in one call, zero blocks
    /// (aligned to the file's blocks, whatever the caller's piece sizes) are skipped.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut run_start = None;
        let mut offset = 0;
        while offset < data.len() {
            let to_boundary = BLOCK - ((self.pos as usize + offset) % BLOCK);
            let end = (offset + to_boundary).min(data.len());
            let zero = data[offset..end].iter().all(|b| *b == 0);
            match (zero, run_start) {
                (false, None) => run_start = Some(offset),
                (true, Some(start)) => {
                    self.file
                        .write_all_at(&data[start..offset], self.pos + start as u64)?;
                    run_start = None;
                }
                _ => {}
            }
            offset = end;
        }
        if let Some(start) = run_start {
            self.file
                .write_all_at(&data[start..], self.pos + start as u64)?;
        }
        self.pos += data.len() as u64;
        if self.pos - self.unflushed_from >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(())
    }

    /// Ask the kernel to begin writing back what was written since the last call;
    /// it returns at once (durability still comes from the caller's `syncfs`).
    fn start_writeback(&mut self) {
        let len = self.pos - self.unflushed_from;
        // SAFETY: a plain system call on a descriptor we own; failure only means
        // the data is written back later, by the sync.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.unflushed_from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_content_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; 10 * BLOCK + 100];
        data[BLOCK + 7] = 1;
        data[5 * BLOCK..6 * BLOCK].fill(9);
        data[10 * BLOCK + 99] = 3;
        let mut writer = SparseWriter::create(&path).unwrap();
        // Uneven pieces: a run may start in one call and end in the next.
        for piece in data.chunks(3000) {
            writer.write(piece).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // Only the three blocks holding data are allocated, of the file's eleven.
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert_eq!(allocated, 3 * BLOCK as u64);
    }

    #[test]
    fn a_path_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        SparseWriter::create(&path).unwrap().finish().unwrap();
        let err = SparseWriter::create(&path).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
