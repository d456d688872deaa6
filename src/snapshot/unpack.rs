//! The unpacker: checking an archive, and unpacking it in the same pass: it must be a tar of plain
//! files and directories with safe relative paths; a snapfs archive's embedded
//! manifest must match every file's size and SHA-256; the whole file may be checked
//! against a known checksum. One sequential pass over the bytes, from any reader, so
//! a restore can unpack while the archive is still arriving.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::rc::Rc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::archive::MANIFEST_NAME;
use super::digest::hex;
use super::error::SnapshotError;
pub use super::limits::Limits;
use super::limits::{MAX_MANIFEST_BYTES, Tally};
use super::sparse::SparseWriter;
use super::store::repository::recipe::RECIPE_NAME;
use super::tar_header::{DataLayout, data_layout, padded};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: usize,
    pub files: usize,
    pub logical_bytes: u64,
    pub archive_bytes: u64,
    pub sha256: String,
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

#[derive(Deserialize)]
struct Manifest {
    entries: Vec<ManifestEntry>,
    /// A partial archive's manifest lists the whole new state; the archive carries
    /// the files that changed.
    #[serde(default)]
    partial: bool,
}

#[derive(Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
    /// A partial archive's file assembled from the receiver's bytes and the
    /// entry's: checked once assembled.
    #[serde(default)]
    copies: Option<Vec<CopyFrom>>,
}

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

/// Counts (and, with a hasher, hashes) everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R, hash: bool) -> Self {
        HashingReader {
            inner,
            hasher: hash.then(Sha256::new),
            bytes: 0,
        }
    }

    fn digest(self) -> Option<String> {
        self.hasher.map(|h| hex(&h.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Records the raw bytes read while it is on: the header blocks of each entry (and
/// the previous entry's padding), whose sparse maps the `tar` crate reads but does
/// not expose.
#[derive(Default)]
struct HeaderTap {
    on: bool,
    bytes: Vec<u8>,
}

impl HeaderTap {
    fn start(&mut self) {
        self.on = true;
        self.bytes.clear();
    }

    fn stop(&mut self) -> Vec<u8> {
        self.on = false;
        std::mem::take(&mut self.bytes)
    }
}

struct Tapped<R> {
    inner: R,
    tap: Rc<RefCell<HeaderTap>>,
}

/// The most header bytes one entry may have (long name, pax records, sparse map
/// extension blocks): 16 MiB holds a map of some 700,000 extents. More is refused
/// instead of being read into memory.
const MAX_HEADER_BYTES: usize = 16 << 20;

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut tap = self.tap.borrow_mut();
        if tap.on {
            if tap.bytes.len() + n > MAX_HEADER_BYTES {
                return Err(io::Error::other(
                    "an entry's headers take more than 16 MiB (no snapshot has names, pax records or sparse maps that large)",
                ));
            }
            tap.bytes.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
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
    report.sha256 = hashing.digest().expect("hashing");
    if let Some(expected) = expected {
        check_checksum(expected, &report.sha256)?;
    }
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

/// Read an entry to its end in 1 MiB pieces, handing each to `sink`; stops when
/// `cancel` is set.
fn copy_entry(
    entry: &mut impl Read,
    shown: &str,
    limits: &Limits,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        limits.check_cancel()?;
        let n = entry
            .read(&mut buf)
            .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n])?;
    }
}

/// `segments/<uuid>.tar` (anywhere in the tree): the directory it unpacks into.
fn nested_segment(path: &Path) -> Option<std::path::PathBuf> {
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
fn unpack_nested_segment(
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

/// Every file the manifest lists is in the archive with its size and SHA-256 (when
/// computed: see [`FileDigests`]), and nothing else is (a partial archive's manifest may list files the archive does
/// not carry: the receiver has them). Returns how many it confirmed.
fn check_manifest(
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
/// than a sender makes (each copy is at least one block, [`super::digest::BLOCK`]).
fn check_copies(size: u64, copies: &[CopyFrom]) -> Result<(), String> {
    let most = size.div_ceil(super::digest::BLOCK);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tar_header::{Kind, entry_headers};

    /// A GNU sparse entry of `real_size` logical bytes whose only data is `data` at
    /// offset 0.
    fn sparse_entry(path: &str, real_size: u64, data: &[u8]) -> Vec<u8> {
        let stored = data.len() as u64;
        let map = [(0, stored), (real_size, 0)];
        let kind = Kind::Sparse {
            real_size,
            stored,
            map: &map,
        };
        let mut out = entry_headers(path, &kind, 0);
        out.extend_from_slice(data);
        out.resize(out.len() + (padded(stored) - stored) as usize, 0);
        out
    }

    fn file_entry(path: &str, data: &[u8]) -> Vec<u8> {
        let size = data.len() as u64;
        let mut out = entry_headers(path, &Kind::File { size }, 0);
        out.extend_from_slice(data);
        out.resize(out.len() + (padded(size) - size) as usize, 0);
        out
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = entries.concat();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn limits(logical: u64) -> Limits {
        Limits {
            space: Some(1 << 30),
            logical,
            ..Limits::unbounded_space()
        }
    }

    /// Peak resident memory of this process so far (VmHWM), in bytes.
    fn peak_rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    #[test]
    fn a_sparse_manifest_of_a_terabyte_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = archive(&[sparse_entry(MANIFEST_NAME, 1 << 40, &[b'{'; 512])]);
        assert!(bytes.len() < 4096, "a tiny archive: {}", bytes.len());
        let err = unpack_entries(
            &bytes[..],
            Some(dir.path()),
            &limits(u64::MAX),
            FileDigests::Check,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("must be a plain file of at most"),
            "{err}"
        );
        // A plain manifest over the cap is refused as well.
        let big = archive(&[file_entry(
            MANIFEST_NAME,
            &vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize],
        )]);
        let err =
            unpack_entries(&big[..], None, &limits(u64::MAX), FileDigests::Check).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(peak_rss() < 1 << 30, "peak RSS {}", peak_rss());
    }

    #[test]
    fn sparse_entries_are_charged_their_logical_size() {
        // 2^62 logical bytes: years of producing zeros, refused at its header.
        let huge = archive(&[sparse_entry("0/x", 1 << 62, &[1u8; 512])]);
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = unpack_entries(
            &huge[..],
            Some(dir.path()),
            &Limits::unbounded_space(),
            FileDigests::Check,
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
        assert!(err.to_string().contains("max_restore_bytes"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        // Within the budget it unpacks, holes kept.
        let small = archive(&[sparse_entry("0/y", 64 << 20, &[1u8; 512])]);
        let report = unpack_entries(
            &small[..],
            Some(dir.path()),
            &limits(128 << 20),
            FileDigests::Check,
        )
        .unwrap();
        assert_eq!(report.logical_bytes, 64 << 20);
        let meta = std::fs::metadata(dir.path().join("0/y")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20);
        // Two such entries exceed a budget that holds one.
        let two = archive(&[
            sparse_entry("1/a", 64 << 20, &[1u8; 512]),
            sparse_entry("1/b", 64 << 20, &[1u8; 512]),
        ]);
        let err =
            unpack_entries(&two[..], None, &limits(100 << 20), FileDigests::Check).unwrap_err();
        assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
    }

    #[test]
    fn a_nested_sparse_entry_is_charged_and_lands_as_holes() {
        let nested = |logical: u64| {
            let inner = archive(&[sparse_entry("snapshot/files/big", logical, &[7u8; 512])]);
            archive(&[file_entry("0/segments/abc.tar", &inner)])
        };
        // 10 TB declared inside a 5 KB archive: refused, nothing written dense.
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_entries(
            &nested(10 << 40)[..],
            Some(dir.path()),
            &Limits::unbounded_space(),
            FileDigests::Check,
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
        // 256 MiB within the budget: the zeros it is read as become holes.
        let dir = tempfile::tempdir().unwrap();
        unpack_entries(
            &nested(256 << 20)[..],
            Some(dir.path()),
            &limits(1 << 30),
            FileDigests::Check,
        )
        .unwrap();
        let path = dir.path().join("0/segments/abc/big");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        assert!(
            meta.blocks() * 512 <= 64 << 10,
            "{} bytes on disk",
            meta.blocks() * 512
        );
    }

    #[test]
    fn restores_at_the_same_time_each_see_what_the_others_declared() {
        use crate::snapshot::limits::Reservation;
        use std::sync::Arc;
        let ledger = Arc::default();
        let bytes = archive(&[file_entry("0/a", &[1u8; 4096])]);
        let with = |reservation: &Arc<Reservation>| Limits {
            space: Some(64 << 10),
            reservation: Some(reservation.clone()),
            ..Limits::unbounded_space()
        };
        let mine = Arc::new(Reservation::new(&ledger));
        unpack_entries(&bytes[..], None, &with(&mine), FileDigests::Check).unwrap();
        // Another restore, started before this one's next archive, declares all but
        // a block of the room: no room for a file and its data block.
        let second = Arc::new(Reservation::new(&ledger));
        let other = Reservation::new(&ledger);
        other.add((64 << 10) - 4096);
        let err = unpack_entries(&bytes[..], None, &with(&second), FileDigests::Check).unwrap_err();
        assert!(
            matches!(err, SnapshotError::NoSpace { free: 4096, .. }),
            "{err}"
        );
        // What was declared before a restore started is out of its measured space.
        let third = Arc::new(Reservation::new(&ledger));
        unpack_entries(&bytes[..], None, &with(&third), FileDigests::Check).unwrap();
    }

    #[test]
    fn a_cancelled_unpacking_stops_at_once() {
        use std::sync::atomic::Ordering;
        // 64 GiB of zeros to produce and hash: minutes, unless stopped midway.
        let bytes = archive(&[sparse_entry("0/x", 64 << 30, &[1u8; 512])]);
        let limits = Limits::unbounded_space();
        let cancel = limits.cancel.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            cancel.store(true, Ordering::Relaxed);
        });
        let started = std::time::Instant::now();
        let err = unpack_entries(&bytes[..], None, &limits, FileDigests::Check).unwrap_err();
        stopper.join().unwrap();
        assert!(matches!(err, SnapshotError::Cancelled), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn copies_must_name_plain_paths_in_order_within_the_file() {
        let copy = |at: u64, path: &str, from: u64, len: u64| CopyFrom(at, path.into(), from, len);
        let size = 4 * super::super::digest::BLOCK;
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
