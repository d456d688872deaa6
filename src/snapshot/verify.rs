//! Offline verification of an archive: it must be a tar of plain files and
//! directories with safe relative paths; a snapfs archive's embedded manifest must
//! match every file's size and SHA-256; the whole file may be checked against a
//! known checksum. One sequential pass over the bytes.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::archive::MANIFEST_NAME;
use super::digest::hex;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: usize,
    pub files: usize,
    pub logical_bytes: u64,
    pub archive_bytes: u64,
    pub sha256: String,
    /// Files whose digest the embedded manifest confirmed (`None`: no manifest).
    pub manifest_checked: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a readable tar archive: {0}")]
    NotTar(String),
    #[error("unsafe entry {path:?}: {why}")]
    UnsafeEntry { path: String, why: String },
    #[error("Checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("manifest mismatch for {path}: {why}")]
    ManifestMismatch { path: String, why: String },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Deserialize)]
struct Manifest {
    entries: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
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
) -> Result<VerifyReport, VerifyError> {
    unpack_verified(reader, expected, None)
}

/// Verify the archive and, with `dest`, unpack it there in the same pass: only
/// regular files and directories, each at a checked relative path under `dest`
/// (nothing is ever created outside it, no link is ever created), holes kept as
/// holes. The caller discards `dest` unless this returns `Ok`.
pub fn unpack_verified(
    reader: impl Read,
    expected: Option<&str>,
    dest: Option<&Path>,
) -> Result<VerifyReport, VerifyError> {
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut report = VerifyReport::default();
    let mut digests: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(|e| not_tar(&e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| not_tar(&e))?;
            let path = entry.path().map_err(|e| not_tar(&e))?.into_owned();
            let shown = path.display().to_string();
            check_entry_path(&path).map_err(|why| VerifyError::UnsafeEntry {
                path: shown.clone(),
                why,
            })?;
            let kind = entry.header().entry_type();
            report.entries += 1;
            if kind.is_dir() {
                if let Some(dest) = dest {
                    std::fs::create_dir_all(dest.join(&path))?;
                }
                continue;
            }
            if !(kind.is_file() || kind.is_gnu_sparse()) {
                return Err(VerifyError::UnsafeEntry {
                    path: shown,
                    why: format!("entry type {kind:?} is not allowed (only files and directories)"),
                });
            }
            let mut out = match dest {
                Some(dest) => Some(SparseWriter::create(&dest.join(&path)).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        VerifyError::UnsafeEntry {
                            path: shown.clone(),
                            why: "duplicate entry".into(),
                        }
                    } else {
                        VerifyError::Io(e)
                    }
                })?),
                None => None,
            };
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            let mut content = Vec::new();
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
                if n == 0 {
                    break;
                }
                if let Some(out) = out.as_mut() {
                    out.write(&buf[..n])?;
                }
                hasher.update(&buf[..n]);
                if shown == MANIFEST_NAME {
                    content.extend_from_slice(&buf[..n]);
                }
                size += n as u64;
            }
            if let Some(out) = out {
                out.finish(size)?;
            }
            report.files += 1;
            report.logical_bytes += size;
            if shown == MANIFEST_NAME {
                manifest = Some(serde_json::from_slice(&content).map_err(|e| {
                    VerifyError::ManifestMismatch {
                        path: MANIFEST_NAME.into(),
                        why: format!("unreadable manifest: {e}"),
                    }
                })?);
            } else if digests
                .insert(shown.clone(), (size, hex(&hasher.finalize())))
                .is_some()
            {
                return Err(VerifyError::UnsafeEntry {
                    path: shown,
                    why: "duplicate entry".into(),
                });
            }
        }
    }
    // Drain trailing padding so the whole-file digest covers every byte.
    io::copy(&mut hashing, &mut io::sink())?;
    report.archive_bytes = hashing.bytes;
    report.sha256 = hex(&hashing.hasher.finalize());
    if report.entries == 0 {
        return Err(VerifyError::NotTar("no entries".into()));
    }
    if let Some(expected) = expected {
        let expected = expected.trim().to_ascii_lowercase();
        if expected != report.sha256 {
            return Err(VerifyError::ChecksumMismatch {
                expected,
                actual: report.sha256,
            });
        }
    }
    if let Some(manifest) = manifest {
        let mut listed = 0;
        for item in &manifest.entries {
            let Some((size, sha)) = digests.get(&item.path) else {
                return Err(VerifyError::ManifestMismatch {
                    path: item.path.clone(),
                    why: "listed in the manifest but missing from the archive".into(),
                });
            };
            if *size != item.size {
                return Err(VerifyError::ManifestMismatch {
                    path: item.path.clone(),
                    why: format!("size {size}, manifest says {}", item.size),
                });
            }
            if *sha != item.sha256 {
                return Err(VerifyError::ManifestMismatch {
                    path: item.path.clone(),
                    why: format!("Checksum mismatch: expected {}, got {sha}", item.sha256),
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
            return Err(VerifyError::ManifestMismatch {
                path: extra,
                why: "in the archive but not in the manifest".into(),
            });
        }
        report.manifest_checked = Some(listed);
    }
    Ok(report)
}

/// Writes a file, leaving runs of zeros as holes (sparse files stay sparse).
struct SparseWriter {
    file: std::fs::File,
}

impl SparseWriter {
    fn create(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(SparseWriter { file })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        // Zero runs are skipped a 4 KiB block at a time, the file system's unit.
        for block in data.chunks(4096) {
            if block.iter().all(|b| *b == 0) {
                self.file.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                self.file.write_all(block)?;
            }
        }
        Ok(())
    }

    /// Fix the length (a trailing hole). Durability is the caller's: one `syncfs`
    /// after the whole archive is cheaper than a sync per file.
    fn finish(self, size: u64) -> io::Result<()> {
        self.file.set_len(size)
    }
}

/// The tar reader's complaint, made printable (it may quote the garbage it found).
fn not_tar(err: &dyn std::fmt::Display) -> VerifyError {
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
    VerifyError::NotTar(text)
}
