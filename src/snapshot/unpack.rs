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
use super::sparse::SparseWriter;
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
    unpack_verified(reader, expected, None)
}

/// [`unpack_entries`] with the whole-file SHA-256 computed on the way (checked
/// against `expected` when given) and trailing padding read, so the digest covers
/// every byte.
pub fn unpack_verified(
    reader: impl Read,
    expected: Option<&str>,
    dest: Option<&Path>,
) -> Result<VerifyReport, SnapshotError> {
    let mut hashing = HashingReader::new(reader, true);
    let mut report = unpack_entries(&mut hashing, dest, None, FileDigests::Check)?;
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
/// match them all. `space` is the room there is: the archive is refused as soon as
/// its entries declare more. Each file's digest is computed unless `file_digests`
/// says the caller checks the whole archive instead. The caller discards `dest`
/// unless this returns `Ok`. Reads the archive up to its end-of-archive marker (not
/// the padding after it).
pub fn unpack_entries(
    reader: impl Read,
    dest: Option<&Path>,
    space: Option<u64>,
    file_digests: FileDigests,
) -> Result<VerifyReport, SnapshotError> {
    let mut report = VerifyReport::default();
    let mut digests: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut declared = 0u64;
    let tap = Rc::new(RefCell::new(HeaderTap::default()));
    let mut archive = tar::Archive::new(Tapped {
        inner: reader,
        tap: tap.clone(),
    });
    let mut entries = archive.entries().map_err(|e| not_tar(&e))?;
    // Padding after the previous entry's data, which the next header read skips.
    let mut padding = 0;
    loop {
        tap.borrow_mut().start();
        let Some(entry) = entries.next() else { break };
        let raw = tap.borrow_mut().stop();
        let mut entry = entry.map_err(|e| not_tar(&e))?;
        let stored = entry.header().entry_size().unwrap_or(0);
        let layout = raw
            .get(padding..)
            .and_then(data_layout)
            .unwrap_or(DataLayout::Dense);
        padding = (padded(stored) - stored) as usize;
        let path = entry.path().map_err(|e| not_tar(&e))?.into_owned();
        let shown = path.display().to_string();
        check_entry_path(&path).map_err(|why| SnapshotError::UnsafeEntry {
            path: shown.clone(),
            why,
        })?;
        let kind = entry.header().entry_type();
        report.entries += 1;
        report.newest_mtime = report.newest_mtime.max(entry.header().mtime().unwrap_or(0));
        if kind.is_dir() {
            if let Some(dest) = dest {
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
        // What will really be written: a sparse entry's stored bytes, not its
        // logical size (the engine preallocates; a 1 MB archive of a small shard
        // describes files of some hundred MB, mostly holes).
        declared = declared.saturating_add(stored);
        if let Some(free) = space
            && declared > free
        {
            return Err(SnapshotError::NoSpace {
                needed: declared,
                free,
            });
        }
        let mut hashing = HashingReader::new(&mut entry, file_digests == FileDigests::Check);
        let is_manifest = shown == MANIFEST_NAME;
        let mut content = Vec::new();
        match (dest, nested_segment(&path)) {
            (_, _) if is_manifest => {
                hashing
                    .read_to_end(&mut content)
                    .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
            }
            (Some(dest), Some(segment_dir)) => {
                report.files +=
                    unpack_nested_segment(&mut hashing, &dest.join(segment_dir), &shown)?;
                io::copy(&mut hashing, &mut io::sink())
                    .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
            }
            (Some(dest), None) => {
                let mut out = SparseWriter::create(&dest.join(&path), layout)
                    .map_err(|e| duplicate_or_io(e, &shown))?;
                copy_entry(&mut hashing, &shown, |data| out.write(data))?;
                out.finish()?;
            }
            (None, _) => copy_entry(&mut hashing, &shown, |_| Ok(()))?,
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
        report.manifest_checked = Some(check_manifest(&manifest, &digests)?);
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

/// Read an entry to its end in 1 MiB pieces, handing each to `sink`.
fn copy_entry(
    entry: &mut impl Read,
    shown: &str,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
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
/// `<uuid>.tar`) into `target`, with the outer archive's rules. Returns the files.
fn unpack_nested_segment(
    reader: &mut impl Read,
    target: &Path,
    shown: &str,
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
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| nested(shown, &e))? {
        let mut entry = entry.map_err(|e| nested(shown, &e))?;
        let path = entry.path().map_err(|e| nested(shown, &e))?.into_owned();
        let inner = format!("{shown}/{}", path.display());
        check_entry_path(&path).map_err(|why| SnapshotError::UnsafeEntry {
            path: inner.clone(),
            why,
        })?;
        let kind = entry.header().entry_type();
        // Qdrant writes only `snapshot/files/…`; anything else is not the segment's.
        let Ok(relative) = path.strip_prefix(prefix) else {
            if !(kind.is_dir() || kind.is_file()) {
                return Err(not_allowed(inner, kind));
            }
            continue;
        };
        if kind.is_dir() {
            fs_err::create_dir_all(target.join(relative))?;
        } else if kind.is_file() || kind.is_gnu_sparse() {
            let mut out = SparseWriter::create(&target.join(relative), DataLayout::Dense)
                .map_err(|e| duplicate_or_io(e, &inner))?;
            copy_entry(&mut entry, &inner, |data| out.write(data))?;
            out.finish()?;
            files += 1;
        } else {
            return Err(not_allowed(inner, kind));
        }
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
            .find(|p| !manifest.entries.iter().any(|e| &e.path == *p))
            .cloned()
            .unwrap_or_default();
        return Err(SnapshotError::ManifestMismatch {
            path: extra,
            why: "in the archive but not in the manifest".into(),
        });
    }
    Ok(listed)
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
