//! Turning an unpacked shard directory from Qdrant's snapshot layout back into an
//! engine shard directory: a streamable segment `segments/<uuid>/files/…` becomes
//! `segments/<uuid>/…` (what Qdrant does on recovery). Restore builds on this.

use std::io;
use std::path::Path;

/// Normalize every segment under `shard_dir/segments` in place.
pub fn normalize_segments(shard_dir: &Path) -> io::Result<()> {
    let segments = shard_dir.join("segments");
    let Ok(entries) = std::fs::read_dir(&segments) else {
        return Ok(());
    };
    for entry in entries {
        let segment = entry?.path();
        let files = segment.join("files");
        if segment.is_dir() && files.is_dir() {
            for item in std::fs::read_dir(&files)? {
                let item = item?;
                std::fs::rename(item.path(), segment.join(item.file_name()))?;
            }
            std::fs::remove_dir(&files)?;
        }
    }
    Ok(())
}
