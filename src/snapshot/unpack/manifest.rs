//! The embedded manifest (`MANIFEST_NAME`, a snapfs archive's last entry) and its
//! checks against the files the walk read: it names every file with its size and
//! SHA-256, and a partial archive's manifest may also assemble files from the
//! receiver's own bytes, whose copies are checked here before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{CopyFrom, check_entry_path, check_plain_relative};
use crate::snapshot::archive::MANIFEST_NAME;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::limits::Tally;

#[derive(Deserialize)]
pub(super) struct Manifest {
    pub(super) entries: Vec<ManifestEntry>,
    /// A partial archive's manifest lists the whole new state; the archive carries
    /// the files that changed.
    #[serde(default)]
    pub(super) partial: bool,
}

#[derive(Deserialize)]
pub(super) struct ManifestEntry {
    pub(super) path: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    /// A partial archive's file assembled from the receiver's bytes and the
    /// entry's: checked once assembled.
    #[serde(default)]
    pub(super) copies: Option<Vec<CopyFrom>>,
}

/// Every file the manifest lists is in the archive with its size and SHA-256 (when
/// computed: see [`super::FileDigests`]), and nothing else is (a partial archive's manifest may list files the archive does
/// not carry: the receiver has them). Returns how many it confirmed.
pub(super) fn check_manifest(
    manifest: &Manifest,
    digests: &BTreeMap<String, (u64, Option<String>)>,
    tally: &mut Tally<'_>,
) -> Result<usize, SnapshotError> {
    let mut listed = 0;
    let mut paths = std::collections::BTreeSet::new();
    let assembled = manifest.entries.iter().any(|e| e.copies.is_some());
    if assembled && !manifest.partial {
        return Err(SnapshotError::ManifestMismatch {
            path: MANIFEST_NAME.into(),
            why: "only a partial manifest may copy from the receiver's files".into(),
        });
    }
    for item in &manifest.entries {
        check_entry_path(Path::new(&item.path)).map_err(|why| SnapshotError::ManifestMismatch {
            path: item.path.clone(),
            why,
        })?;
        if !paths.insert(item.path.as_str()) {
            return Err(SnapshotError::ManifestMismatch {
                path: item.path.clone(),
                why: "listed twice in the manifest".into(),
            });
        }
        if let Some(copies) = &item.copies {
            check_copies(item.size, copies).map_err(|why| SnapshotError::ManifestMismatch {
                path: item.path.clone(),
                why,
            })?;
            // The receiver writes and hashes all of it.
            tally.logical(item.size)?;
        }
        let Some((size, sha)) = digests.get(&item.path) else {
            if manifest.partial {
                continue;
            }
            return Err(SnapshotError::ManifestMismatch {
                path: item.path.clone(),
                why: "listed in the manifest but missing from the archive".into(),
            });
        };
        if *size != item.size {
            return Err(SnapshotError::ManifestMismatch {
                path: item.path.clone(),
                why: format!("size {size}, manifest says {}", item.size),
            });
        }
        if let Some(sha) = sha
            && *sha != item.sha256
            && item.copies.is_none()
        {
            return Err(SnapshotError::EntryChecksumMismatch {
                path: item.path.clone(),
                expected: item.sha256.clone(),
                actual: sha.clone(),
            });
        }
        listed += 1;
    }
    if listed != digests.len() {
        let extra = digests
            .keys()
            .find(|p| !paths.contains(p.as_str()))
            .cloned()
            .unwrap_or_default();
        return Err(SnapshotError::ManifestMismatch {
            path: extra,
            why: "in the archive but not in the manifest".into(),
        });
    }
    Ok(listed)
}

/// A file's copies from the receiver's files are well formed: each names a plain
/// relative path (as an entry's path: the receiver resolves it among its shard's
/// own files, never as given), they lie in order inside the file without
/// overlapping (so assembling costs at most the file's size), and there are no more
/// than a sender makes (each copy is at least one block, [`crate::snapshot::digest::BLOCK`]).
fn check_copies(size: u64, copies: &[CopyFrom]) -> Result<(), String> {
    let most = size.div_ceil(crate::snapshot::digest::BLOCK);
    if copies.len() as u64 > most {
        return Err(format!(
            "{} copies for a file of {size} bytes (at most {most})",
            copies.len()
        ));
    }
    let mut end = 0u64;
    for CopyFrom(at, path, from, len) in copies {
        check_plain_relative(path).map_err(|why| format!("a copy's source is refused: {why}"))?;
        if *len == 0 || *at < end {
            return Err("its copies must be non-empty, in order and not overlapping".into());
        }
        end = at
            .checked_add(*len)
            .filter(|end| *end <= size)
            .ok_or("a copy reaches past the file's end")?;
        from.checked_add(*len)
            .ok_or("a copy's source range overflows")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_must_name_plain_paths_in_order_within_the_file() {
        let copy = |at: u64, path: &str, from: u64, len: u64| CopyFrom(at, path.into(), from, len);
        let size = 4 * crate::snapshot::digest::BLOCK;
        let cases: Vec<(Vec<CopyFrom>, &str)> = vec![
            (vec![copy(0, "/etc/passwd", 0, 10)], "absolute"),
            (vec![copy(0, "../../../etc/shadow", 0, 4)], "`..`"),
            (vec![copy(0, "segments/./x", 0, 4)], "plain relative"),
            (vec![copy(0, "segments//x", 0, 4)], "plain relative"),
            (vec![copy(0, "", 0, 4)], "empty"),
            (vec![copy(10, "a", 0, 10), copy(5, "a", 0, 2)], "in order"),
            (
                vec![copy(0, "a", 0, 10), copy(5, "a", 0, 10)],
                "not overlapping",
            ),
            (vec![copy(0, "a", 0, 0)], "non-empty"),
            (vec![copy(size - 1, "a", 0, 2)], "past the file's end"),
            (vec![copy(0, "a", u64::MAX, 2)], "overflows"),
            (
                (0..5).map(|i| copy(i * 10, "a", 0, 1)).collect(),
                "at most 4",
            ),
        ];
        for (copies, words) in cases {
            let err = check_copies(size, &copies).unwrap_err();
            assert!(err.contains(words), "{copies:?}: {err}");
        }
        check_copies(
            size,
            &[
                copy(0, "segments/s/files/a", 0, 10),
                copy(10, "wal/b", 5, 100),
            ],
        )
        .unwrap();
    }
}
