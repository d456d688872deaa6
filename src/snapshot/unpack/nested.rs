//! Qdrant's segment archives nested in a snapshot (`segments/<uuid>.tar`), unpacked
//! into `segments/<uuid>/` as the outer archive is read, never written to disk
//! whole. They get the outer archive's rules (safe paths, the header cap, every
//! byte charged), kept apart here because their entries are named and refused
//! differently.

use std::cell::RefCell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use super::readers::{HeaderTap, Tapped, copy_entry};
use super::{check_entry_path, duplicate_or_io, not_tar};
use crate::snapshot::error::SnapshotError;
use crate::snapshot::limits::Tally;
use crate::snapshot::sparse::SparseWriter;
use crate::snapshot::tar_header::{DataLayout, data_layout, padded};

/// `segments/<uuid>.tar` (anywhere in the tree): the directory it unpacks into.
pub(super) fn nested_segment(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?.to_str()?;
    let uuid = name.strip_suffix(".tar")?;
    let parent = path.parent()?;
    (parent.file_name()? == "segments" && !uuid.is_empty()).then(|| parent.join(uuid))
}

/// Unpack a nested segment archive (Qdrant's `snapshot/files/…` inside
/// `<uuid>.tar`) into `target`, with the outer archive's rules: the same cap on
/// header bytes, every entry's logical size and disk charged to `tally`, files written
/// with holes wherever they hold whole blocks of zeros (a nested sparse entry is
/// read as zeros, which must not land on disk dense). Returns the files.
pub(super) fn unpack_nested_segment(
    reader: &mut impl Read,
    target: &Path,
    shown: &str,
    tally: &mut Tally<'_>,
) -> Result<usize, SnapshotError> {
    let prefix = Path::new("snapshot/files");
    if target.exists() {
        return Err(SnapshotError::UnsafeEntry {
            path: shown.into(),
            why: "the segment is present both as a directory and as a nested archive".into(),
        });
    }
    fs_err::create_dir_all(target)?;
    let mut files = 0;
    let tap = Rc::new(RefCell::new(HeaderTap::default()));
    let mut archive = tar::Archive::new(Tapped {
        inner: reader,
        tap: tap.clone(),
    });
    let mut entries = archive.entries().map_err(|e| nested(shown, &e))?;
    let mut padding = 0;
    loop {
        tally.limits().check_cancel()?;
        tap.borrow_mut().start();
        let Some(entry) = entries.next() else { break };
        let raw = tap.borrow_mut().stop();
        let mut entry = entry.map_err(|e| nested(shown, &e))?;
        let stored = entry.header().entry_size().unwrap_or(0);
        let layout = raw.get(padding..).and_then(data_layout);
        padding = (padded(stored) - stored) as usize;
        let path = entry.path().map_err(|e| nested(shown, &e))?.into_owned();
        let inner = format!("{shown}/{}", path.display());
        check_entry_path(&path).map_err(|why| SnapshotError::UnsafeEntry {
            path: inner.clone(),
            why,
        })?;
        let kind = entry.header().entry_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_gnu_sparse()) {
            return Err(not_allowed(inner, kind));
        }
        tally.entry(inner.len())?;
        tally.logical(entry.size())?;
        // Qdrant writes only `snapshot/files/…`; anything else is not the segment's
        // (read past here, not while the header cap is counting).
        let Ok(relative) = path.strip_prefix(prefix) else {
            copy_entry(&mut entry, &inner, tally.limits(), |_| Ok(()))?;
            continue;
        };
        if kind.is_dir() {
            tally.node()?;
            fs_err::create_dir_all(target.join(relative))?;
            continue;
        }
        // Written with holes for blocks of zeros: on disk at most the blocks its
        // data ranges touch (a sparse entry's map), or its size.
        match (kind.is_gnu_sparse(), layout) {
            (true, Some(DataLayout::Sparse(map))) => tally.data(&map)?,
            (true, _) => {
                return Err(SnapshotError::UnsafeEntry {
                    path: inner,
                    why: "its sparse map does not read as GNU tar writes one".into(),
                });
            }
            (false, _) => tally.data(&[(0, entry.size())])?,
        }
        let mut out = SparseWriter::zeros_as_holes(&target.join(relative))
            .map_err(|e| duplicate_or_io(e, &inner))?;
        copy_entry(&mut entry, &inner, tally.limits(), |data| out.write(data))?;
        out.finish()?;
        files += 1;
    }
    Ok(files)
}

fn not_allowed(path: String, kind: tar::EntryType) -> SnapshotError {
    SnapshotError::UnsafeEntry {
        path,
        why: format!("entry type {kind:?} is not allowed (only files and directories)"),
    }
}

fn nested(shown: &str, err: &dyn std::fmt::Display) -> SnapshotError {
    not_tar(&format!("nested segment archive {shown}: {err}"))
}
