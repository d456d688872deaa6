//! Turning an unpacked shard directory from Qdrant's snapshot layout back into an
//! engine shard directory, as Qdrant does on recovery: a streamable segment
//! `segments/<uuid>/files/…` moves up to `segments/<uuid>/…`; a nested segment
//! archive `segments/<uuid>.tar` (holding `snapshot/files/…`) is unpacked, with the
//! same checks as the outer archive, into `segments/<uuid>/` and removed.

use std::io;
use std::path::Path;

use super::verify::{VerifyError, unpack_verified};

/// Normalize every segment under `shard_dir/segments` in place.
pub fn normalize_segments(shard_dir: &Path) -> Result<(), VerifyError> {
    let segments = shard_dir.join("segments");
    let Ok(entries) = std::fs::read_dir(&segments) else {
        return Ok(());
    };
    let mut paths: Vec<_> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(uuid) = name.strip_suffix(".tar")
            && path.is_file()
        {
            let nested = segments.join(format!(".unpacking-{uuid}"));
            let file = std::fs::File::open(&path)?;
            unpack_verified(io::BufReader::new(file), None, Some(&nested))?;
            let files = nested.join("snapshot").join("files");
            if !files.is_dir() {
                return Err(VerifyError::NotTar(format!(
                    "nested segment {name} has no snapshot/files/ directory"
                )));
            }
            let target = segments.join(uuid);
            if target.exists() {
                return Err(VerifyError::UnsafeEntry {
                    path: format!("segments/{uuid}"),
                    why: "present both as a directory and as a nested archive".into(),
                });
            }
            std::fs::rename(&files, &target)?;
            std::fs::remove_dir_all(&nested)?;
            std::fs::remove_file(&path)?;
            continue;
        }
        let files = path.join("files");
        if path.is_dir() && files.is_dir() {
            for item in std::fs::read_dir(&files)? {
                let item = item?;
                std::fs::rename(item.path(), path.join(item.file_name()))?;
            }
            std::fs::remove_dir(&files)?;
        }
    }
    Ok(())
}
