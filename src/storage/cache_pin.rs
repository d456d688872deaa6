//! Keeping a directory's files in the page cache while the engine closes and
//! reopens them.
//!
//! The engine drops a segment's files from the page cache when it closes them
//! (`posix_fadvise(DONTNEED)`, so that closed segments do not crowd the cache). A
//! restore that checks a shard by opening it, closes it and opens it again where it
//! belongs would read everything from disk a second time. The kernel never drops
//! pages that are mapped, so the files are mapped (populated, which for pages
//! already cached only fills page tables) from before the first close until after
//! the last open.

use std::path::Path;

pub struct CachePin {
    _maps: Vec<memmap2::Mmap>,
}

impl CachePin {
    /// Files smaller than this are cheap to read again.
    const MIN_SIZE: u64 = 1 << 20;

    pub fn pin(dir: &Path) -> CachePin {
        let maps = super::regular_files(dir)
            .into_iter()
            .filter(|(_, len)| *len >= CachePin::MIN_SIZE)
            .filter_map(|(path, _)| {
                let file = std::fs::File::open(path).ok()?;
                // SAFETY: a read-only shared mapping of a file nobody truncates while
                // the pin is held; its bytes are never read through it (it only keeps
                // the pages resident).
                unsafe { memmap2::MmapOptions::new().populate().map(&file) }.ok()
            })
            .collect();
        CachePin { _maps: maps }
    }
}
