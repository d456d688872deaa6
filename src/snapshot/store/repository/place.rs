//! Where a repository's files are kept: [`Place`] is the little a restic repository
//! needs of storage (list a directory, read a file or a range of it, write a file
//! whole, remove one), implemented for a local directory here and for an S3 prefix in
//! [`super::s3_place`]. [`Backend`] maps rustic_core's file types onto restic's
//! layout (`config`, `keys/`, `snapshots/`, `index/`, `data/<2 hex>/`) over any place,
//! and the lock files (`locks/`, which rustic_core does not write) use the same place.
//!
//! A local file is written to a temporary name, synced and renamed into place, then
//! its directory synced: a crash leaves no torn `config`, key, index or snapshot file
//! under its final name (restic names files by their content hash, and a torn one
//! would fail every later read of the repository).

use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

/// What a repository needs of the storage it lives in; paths are relative,
/// `/`-separated, and made by [`Backend`] only (never from input).
pub trait Place: Send + Sync + 'static {
    /// For messages: a directory or an `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// Files directly in `dir` (or anywhere below it when `deep`), as paths relative
    /// to `dir`, with sizes; an absent `dir` is empty.
    fn list(&self, dir: &str, deep: bool) -> io::Result<Vec<(String, u64)>>;
    /// The whole file, or `len` bytes from `offset`.
    fn read(&self, path: &str, range: Option<(u64, u64)>) -> io::Result<Bytes>;
    /// Create or replace `path` with `data`, durably and whole.
    fn write(&self, path: &str, data: &[Bytes]) -> io::Result<()>;
    /// Remove `path`; one already gone is no error.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// Make the top directory (a local place) or check that it can be reached (a
    /// bucket): a missing bucket is a clear error here, not at the first write.
    fn prepare(&self) -> io::Result<()>;
}

/// A repository in a local directory.
pub struct LocalPlace {
    root: PathBuf,
}

impl LocalPlace {
    pub fn new(root: &Path) -> LocalPlace {
        LocalPlace {
            root: root.to_path_buf(),
        }
    }
}

impl Place for LocalPlace {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, dir: &str, deep: bool) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        list_local(&self.root.join(dir), "", deep, &mut out)?;
        Ok(out)
    }

    fn read(&self, path: &str, range: Option<(u64, u64)>) -> io::Result<Bytes> {
        let file = fs_err::File::open(self.root.join(path))?;
        match range {
            None => {
                let mut data = Vec::new();
                (&file).read_to_end(&mut data)?;
                Ok(data.into())
            }
            Some((offset, len)) => {
                let mut data = vec![0u8; len as usize];
                file.file().read_exact_at(&mut data, offset)?;
                Ok(data.into())
            }
        }
    }

    fn write(&self, path: &str, data: &[Bytes]) -> io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().expect("repository paths have a directory");
        fs_err::create_dir_all(dir)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".write-")
            .tempfile_in(dir)?;
        for part in data {
            temp.write_all(part)?;
        }
        temp.as_file().sync_all()?;
        temp.persist(&target).map_err(|e| e.error)?;
        fs_err::File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        match std::fs::remove_file(self.root.join(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.root.join(path).try_exists()
    }

    fn prepare(&self) -> io::Result<()> {
        fs_err::create_dir_all(&self.root)
    }
}

fn list_local(
    dir: &Path,
    prefix: &str,
    deep: bool,
    out: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a write under way
        }
        let kind = entry.file_type()?;
        if kind.is_file() {
            let size = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push((format!("{prefix}{name}"), size));
        } else if kind.is_dir() && deep {
            list_local(&entry.path(), &format!("{prefix}{name}/"), deep, out)?;
        }
    }
    Ok(())
}

/// rustic_core's view of a [`Place`]: restic's layout of file types.
#[derive(Clone)]
pub struct Backend {
    place: Arc<dyn Place>,
}

impl Backend {
    pub fn new(place: Arc<dyn Place>) -> Backend {
        Backend { place }
    }

    pub fn place(&self) -> &Arc<dyn Place> {
        &self.place
    }
}

fn path_of(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".to_string(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &*hex),
        other => format!("{}/{}", other.dirname(), &*hex),
    }
}

/// An I/O error as rustic_core carries it (its message names the file type and id,
/// never a host path: the place's own error is the source).
fn io_error(what: &'static str, tpe: FileType, id: Option<&Id>, e: io::Error) -> Box<RusticError> {
    let err = RusticError::with_source(ErrorKind::Backend, what, e)
        .attach_context("type", tpe.to_string());
    match id {
        Some(id) => err.attach_context("id", id.to_hex().to_string()),
        None => err,
    }
}

impl ReadBackend for Backend {
    fn location(&self) -> String {
        self.place.location()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let listed = self
                .place
                .list("", false)
                .map_err(|e| io_error("Failed to list the repository", tpe, None, e))?;
            return Ok(listed
                .into_iter()
                .filter(|(name, _)| name == "config")
                .map(|(_, size)| (Id::default(), size.min(u32::MAX as u64) as u32))
                .collect());
        }
        let listed = self
            .place
            .list(tpe.dirname(), tpe == FileType::Pack)
            .map_err(|e| io_error("Failed to list the repository", tpe, None, e))?;
        Ok(listed
            .into_iter()
            .filter_map(|(path, size)| {
                let name = path.rsplit('/').next()?;
                let id: Id = name.parse().ok()?;
                // A pack is at most 4 GiB in restic's format; a bigger file is not one.
                Some((id, u32::try_from(size).ok()?))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.place
            .read(&path_of(tpe, id), None)
            .map_err(|e| io_error("Failed to read a repository file", tpe, Some(id), e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.place
            .read(&path_of(tpe, id), Some((offset as u64, length as u64)))
            .map_err(|e| io_error("Failed to read a repository file", tpe, Some(id), e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        path_of(tpe, id)
    }
}

impl WriteBackend for Backend {
    fn create(&self) -> RusticResult<()> {
        self.place
            .prepare()
            .map_err(|e| io_error("Failed to create the repository", FileType::Config, None, e))
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        self.place
            .write(&path_of(tpe, id), content.slice())
            .map_err(|e| io_error("Failed to write a repository file", tpe, Some(id), e))?;
        if tpe == FileType::Pack {
            // Crash tests: killed with data stored that no index or snapshot names yet.
            crate::storage::crash_point("repository-pack-written");
        }
        Ok(())
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        self.place
            .remove(&path_of(tpe, id))
            .map_err(|e| io_error("Failed to remove a repository file", tpe, Some(id), e))
    }
}
