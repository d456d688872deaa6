//! Keeping a directory's files in the page cache while the engine closes and
//! reopens them.
//!
//! The engine drops a segment's files from the page cache when it closes them
//! (`posix_fadvise(DONTNEED)`, so that closed segments do not crowd the cache). A
//! restore that checks a shard by opening it, closes it and opens it again where it
//! belongs would read everything from disk a second time. The kernel never drops
//! pages that are mapped, so the files are mapped (populated, which for pages
//! already cached only fills page tables) from before the first close until after
//! the last open. Only their data extents are mapped: the engine preallocates
//! sparse files, and populating a hole would allocate it on some file systems
//! (tmpfs gives every faulted page of a shared mapping memory of its own).

use std::path::Path;

pub struct CachePin {
    _maps: Vec<memmap2::Mmap>,
}

impl CachePin {
    /// Files smaller than this are cheap to read again.
    const MIN_SIZE: u64 = 1 << 20;

    pub fn pin(dir: &Path) -> CachePin {
        let mut maps = Vec::new();
        for (path, len) in super::regular_files(dir) {
            if len < CachePin::MIN_SIZE {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            let extents = crate::storage::extents::data_extents(&file, len).unwrap_or_default();
            for (offset, extent) in extents {
                // SAFETY: a read-only shared mapping of a file nobody truncates while
                // the pin is held; its bytes are never read through it (it only keeps
                // the pages resident). Extents start on file-system block (and so
                // page) boundaries.
                let map = unsafe {
                    memmap2::MmapOptions::new()
                        .offset(offset)
                        .len(extent as usize)
                        .populate()
                        .map(&file)
                };
                if let Ok(map) = map {
                    maps.push(map);
                }
            }
        }
        CachePin { _maps: maps }
    }
}
