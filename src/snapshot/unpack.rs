//! The unpacker: checking an archive, and unpacking it in the same pass: it must be a tar of plain
//! files and directories with safe relative paths; a snapfs archive's embedded
//! manifest must match every file's size and SHA-256; the whole file may be checked
//! against a known checksum. One sequential pass over the bytes, from any reader, so
//! a restore can unpack while the archive is still arriving.
//!
//! This file holds the public surface and the walk over the outer archive
//! ([`unpack_entries`]); the embedded manifest's checks are in `manifest`, the
//! reader wrappers that count, hash and keep header bytes in `readers`, and the
//! segment archives nested inside in `nested`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::rc::Rc;

use serde::Deserialize;

use super::archive::MANIFEST_NAME;
use super::error::SnapshotError;
pub use super::limits::Limits;
use super::limits::{MAX_MANIFEST_BYTES, Tally};
use super::sparse::SparseWriter;
use super::store::repository::recipe::RECIPE_NAME;
use super::tar_header::{DataLayout, data_layout, padded};

mod manifest;
mod nested;
mod readers;
#[cfg(test)]
mod tests;

use manifest::{Manifest, check_manifest};
use nested::{nested_segment, unpack_nested_segment};
use readers::{HashingReader, HeaderTap, Tapped, copy_entry};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: usize,
    pub files: usize,
    pub logical_bytes: u64,
    pub archive_bytes: u64,
    /// The whole archive's SHA-256 (hex); `None` where nothing could check it and it
    /// was not computed ([`crate::snapshot::intake::ArchiveHash::Skipped`]).
    pub sha256: Option<String>,
    /// Files the embedded manifest confirmed (`None`: no manifest): their sizes,
    /// and their digests unless the whole archive's checksum was the check (see
    /// [`FileDigests`]).
    pub manifest_checked: Option<usize>,
    /// The newest entry mtime (seconds): a snapfs archive's state time.
    pub newest_mtime: u64,
    /// A partial archive of the content form: every file of the state it leads to
    /// (its embedded manifest), of which the archive carried only some.
    pub partial_target: Option<Vec<TargetFile>>,
}

/// A file of the state a content-form partial archive leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The archive carries only some bytes of it (its entry's data); these runs
    /// are copied from the receiver's own files.
    pub copies: Option<Vec<CopyFrom>>,
}

/// `[at, path, from, len]`: `len` bytes at `from` in the receiver's file `path` (an
/// archive path) go to `at` in this file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CopyFrom(pub u64, pub String, pub u64, pub u64);

/// Whether each file's SHA-256 is computed and compared with the embedded
/// manifest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDigests {
    /// Always, when nothing else vouches for the bytes.
    Check,
    /// Not: the caller checks the whole archive against a checksum given before
    /// its first byte, which covers every file's bytes (a manifest's digests were
    /// made from those same bytes). The manifest's names and sizes are still
    /// checked. Hashing every byte twice was the largest cost of a restore.
    CoveredByArchiveChecksum,
}

/// Reject anything but a relative path of normal components.
pub fn check_entry_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("`..` in path".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(())
}

/// Verify the archive read from `reader`; `expected` is the whole-file checksum, if known.
pub fn verify_archive(
    reader: impl Read,
    expected: Option<&str>,
) -> Result<VerifyReport, SnapshotError> {
    unpack_verified(reader, expected, None, &Limits::unbounded_space())
}

/// [`unpack_entries`] with the whole-file SHA-256 computed on the way (checked
/// against `expected` when given) and trailing padding read, so the digest covers
/// every byte.
pub fn unpack_verified(
    reader: impl Read,
    expected: Option<&str>,
    dest: Option<&Path>,
    limits: &Limits,
) -> Result<VerifyReport, SnapshotError> {
    let mut hashing = HashingReader::new(reader, true);
    let mut report = unpack_entries(&mut hashing, dest, limits, FileDigests::Check)?;
    io::copy(&mut hashing, &mut io::sink())?;
    report.archive_bytes = hashing.bytes;
    let sha256 = hashing.digest().expect("hashing");
    if let Some(expected) = expected {
        check_checksum(expected, &sha256)?;
    }
    report.sha256 = Some(sha256);
    Ok(report)
}

/// `Checksum mismatch: …` unless `actual` is the `expected` SHA-256 (any case).
pub fn check_checksum(expected: &str, actual: &str) -> Result<(), SnapshotError> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected != actual {
        return Err(SnapshotError::ChecksumMismatch {
            expected,
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Walk the archive's entries and, with `dest`, unpack them there: only regular
/// files and directories, each at a checked relative path under `dest` (nothing is
/// ever created outside it, no link is ever created), holes kept as holes, Qdrant's
/// nested segment archives (`segments/<uuid>.tar`) unpacked on the way into
/// `segments/<uuid>/`. Every file is hashed; a snapfs manifest (the last entry) must
/// match them all. `limits` bounds what the entries may declare (disk, logical
/// size) and can stop the walk from another thread. Each file's digest is computed
/// unless `file_digests` says the caller checks the whole archive instead. The
/// caller discards `dest` unless this returns `Ok`. Reads the archive up to its
/// end-of-archive marker (not the padding after it).
pub fn unpack_entries(
    reader: impl Read,
    dest: Option<&Path>,
    limits: &Limits,
    file_digests: FileDigests,
) -> Result<VerifyReport, SnapshotError> {
    let mut report = VerifyReport::default();
    let mut digests: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut tally = Tally::new(limits);
    let tap = Rc::new(RefCell::new(HeaderTap::default()));
    let mut archive = tar::Archive::new(Tapped {
        inner: reader,
        tap: tap.clone(),
    });
    let mut entries = archive.entries().map_err(|e| not_tar(&e))?;
    // Padding after the previous entry's data, which the next header read skips.
    let mut padding = 0;
    loop {
        limits.check_cancel()?;
        tap.borrow_mut().start();
        let Some(entry) = entries.next() else { break };
        let raw = tap.borrow_mut().stop();
        let mut entry = entry.map_err(|e| not_tar(&e))?;
        let stored = entry.header().entry_size().unwrap_or(0);
        let kind = entry.header().entry_type();
        let read_layout = raw.get(padding..).and_then(data_layout);
        padding = (padded(stored) - stored) as usize;
        let path = entry.path().map_err(|e| not_tar(&e))?.into_owned();
        let shown = path.display().to_string();
        check_entry_path(&path).map_err(|why| SnapshotError::UnsafeEntry {
            path: shown.clone(),
            why,
        })?;
        tally.entry(shown.len())?;
        report.entries += 1;
        report.newest_mtime = report.newest_mtime.max(entry.header().mtime().unwrap_or(0));
        if kind.is_dir() {
            if let Some(dest) = dest {
                tally.node()?;
                fs_err::create_dir_all(dest.join(&path))?;
            }
            continue;
        }
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            return Err(SnapshotError::UnsafeEntry {
                path: shown,
                why: format!("entry type {kind:?} is not allowed (only files and directories)"),
            });
        }
        // The recipe a repository generation keeps at its root, which `restic dump`
        // puts in its archive: not an entry of the snapshot, read past (and charged).
        if shown == RECIPE_NAME && kind.is_file() {
            tally.logical(entry.size())?;
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
            continue;
        }
        // A sparse entry is written from its own map: one the reader and we read
        // differently is refused, never written dense (a 10 TB "sparse" file
        // written dense fills any disk).
        let layout = match (kind.is_gnu_sparse(), read_layout) {
            (true, Some(sparse @ DataLayout::Sparse(_))) => sparse,
            (true, _) => {
                return Err(SnapshotError::UnsafeEntry {
                    path: shown,
                    why: "its sparse map does not read as GNU tar writes one".into(),
                });
            }
            (false, _) => DataLayout::Dense,
        };
        // What will really be written: a sparse entry's data ranges, not its
        // logical size (the engine preallocates; a 1 MB archive of a small shard
        // describes files of some hundred MB, mostly holes). A nested segment
        // archive is not written itself: its files are charged as they are read.
        let nested_dir = dest.and_then(|_| nested_segment(&path));
        match (&layout, &nested_dir) {
            (_, Some(_)) => {}
            (DataLayout::Sparse(map), None) => tally.data(map)?,
            (DataLayout::Dense, None) => tally.data(&[(0, stored)])?,
        }
        let is_manifest = shown == MANIFEST_NAME;
        if is_manifest && (kind.is_gnu_sparse() || entry.size() > MAX_MANIFEST_BYTES) {
            return Err(SnapshotError::ManifestMismatch {
                path: MANIFEST_NAME.into(),
                why: format!(
                    "the embedded manifest must be a plain file of at most {MAX_MANIFEST_BYTES} bytes"
                ),
            });
        }
        // What will be read: every logical byte, zeros of holes included (a nested
        // archive's entries are charged again as they are read: a bound, not a
        // count).
        tally.logical(entry.size())?;
        let mut hashing = HashingReader::new(&mut entry, file_digests == FileDigests::Check);
        let mut content = Vec::new();
        match (dest, nested_dir) {
            (_, _) if is_manifest => {
                (&mut hashing)
                    .take(MAX_MANIFEST_BYTES)
                    .read_to_end(&mut content)
                    .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
            }
            (Some(dest), Some(segment_dir)) => {
                report.files += unpack_nested_segment(
                    &mut hashing,
                    &dest.join(segment_dir),
                    &shown,
                    &mut tally,
                )?;
                copy_entry(&mut hashing, &shown, limits, |_| Ok(()))?;
            }
            (Some(dest), None) => {
                let mut out = SparseWriter::create(&dest.join(&path), layout)
                    .map_err(|e| duplicate_or_io(e, &shown))?;
                copy_entry(&mut hashing, &shown, limits, |data| out.write(data))?;
                out.finish()?;
            }
            (None, _) => copy_entry(&mut hashing, &shown, limits, |_| Ok(()))?,
        }
        let size = hashing.bytes;
        report.files += 1;
        report.logical_bytes += size;
        if is_manifest {
            manifest = Some(serde_json::from_slice(&content).map_err(|e| {
                SnapshotError::ManifestMismatch {
                    path: MANIFEST_NAME.into(),
                    why: format!("unreadable manifest: {e}"),
                }
            })?);
        } else if digests
            .insert(shown.clone(), (size, hashing.digest()))
            .is_some()
        {
            return Err(SnapshotError::UnsafeEntry {
                path: shown,
                why: "duplicate entry".into(),
            });
        }
    }
    if report.entries == 0 {
        return Err(SnapshotError::NotTar("no entries".into()));
    }
    if let Some(manifest) = manifest {
        report.manifest_checked = Some(check_manifest(&manifest, &digests, &mut tally)?);
        if manifest.partial {
            report.partial_target = Some(
                manifest
                    .entries
                    .into_iter()
                    .map(|e| TargetFile {
                        path: e.path,
                        size: e.size,
                        sha256: e.sha256,
                        copies: e.copies,
                    })
                    .collect(),
            );
        }
    }
    Ok(report)
}

fn duplicate_or_io(err: io::Error, shown: &str) -> SnapshotError {
    if err.kind() == io::ErrorKind::AlreadyExists {
        SnapshotError::UnsafeEntry {
            path: shown.into(),
            why: "duplicate entry".into(),
        }
    } else {
        SnapshotError::Io(err)
    }
}

/// A relative path of plain components: no empty, `.` or `..` part, not absolute.
pub fn check_plain_relative(path: &str) -> Result<(), String> {
    check_entry_path(Path::new(path))?;
    if path.starts_with('/') || path.split('/').any(|part| part.is_empty() || part == ".") {
        return Err("not a plain relative path".into());
    }
    Ok(())
}

/// The tar reader's complaint, made printable (it may quote the garbage it found).
fn not_tar(err: &dyn std::fmt::Display) -> SnapshotError {
    let text: String = err
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(160)
        .collect();
    SnapshotError::NotTar(text)
}
