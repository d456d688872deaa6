//! Turning an unpacked shard directory from Qdrant's snapshot layout back into an
//! engine shard directory, as Qdrant does on recovery: a streamable segment
//! `segments/<uuid>/files/…` moves up to `segments/<uuid>/…`. (Nested segment
//! archives, `segments/<uuid>.tar`, are unpacked into `segments/<uuid>/` while the
//! outer archive is read: see [`super::unpack::unpack_entries`].)

use std::io;
use std::path::Path;

/// Normalize every segment under `shard_dir/segments` in place (renames only).
pub fn normalize_segments(shard_dir: &Path) -> io::Result<()> {
    let segments = shard_dir.join("segments");
    let Ok(entries) = fs_err::read_dir(&segments) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let files = path.join("files");
        if path.is_dir() && files.is_dir() {
            for item in fs_err::read_dir(&files)? {
                let item = item?;
                let target = path.join(item.file_name());
                if target.exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "segment {} holds {} both in files/ and beside it",
                            path.display(),
                            item.file_name().to_string_lossy()
                        ),
                    ));
                }
                fs_err::rename(item.path(), target)?;
            }
            std::fs::remove_dir(&files)?;
        }
    }
    Ok(())
}
