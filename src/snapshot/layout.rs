//! A tar archive described, not built: a sorted list of pieces (header bytes, ranges
//! of frozen files, zero padding) with their offsets in the archive. The exact size is
//! known before the first byte, and a read at any offset finds its piece by binary
//! search and copies from there (pread of the frozen file, or for the mount's
//! replies its mapping, see [`ArchiveLayout::with_slice`]), never producing the
//! bytes before it. Memory is a few hundred bytes per entry, whatever the data size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use super::tar_header::{BLOCK, Kind, entry_headers, padded};
use crate::storage::extents::data_extents;

/// Bytes generated on first use (the manifest, whose digests need the data), with a
/// length fixed in advance.
pub type Generator = Arc<dyn Fn(&ArchiveLayout) -> io::Result<Vec<u8>> + Send + Sync>;

enum Source {
    Inline(Arc<[u8]>),
    /// `offset` into frozen file number `file`.
    File {
        file: usize,
        offset: u64,
    },
    Zeros,
    Deferred {
        bytes: Arc<OnceLock<Arc<[u8]>>>,
        generate: Generator,
    },
    /// A whole archive nested as one entry (collection archives inside a full one).
    Nested(Arc<ArchiveLayout>),
    /// `offset` into a file kept elsewhere (a repository generation's member).
    Ranged {
        reader: Arc<dyn RangeRead>,
        offset: u64,
    },
}

/// A file's logical bytes read by offset from wherever they are kept (a repository
/// assembles a generation's archive from its members so).
pub trait RangeRead: Send + Sync {
    /// Fill all of `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

struct Piece {
    start: u64,
    len: u64,
    source: Source,
}

/// One entry of the archive, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub path: String,
    /// Logical size (holes included).
    pub size: u64,
    /// Where the entry's data starts in the archive (after its headers).
    pub start: u64,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// Generated content held in memory.
    Inline(Arc<[u8]>),
    /// A frozen file (index into [`ArchiveLayout::files`]) and its data extents.
    File {
        file: usize,
        extents: Vec<(u64, u64)>,
    },
    Deferred,
    /// An archive nested as a file (index into [`ArchiveLayout::nested`]).
    Nested(usize),
    /// A file read through a [`RangeRead`], holding `extents` of it.
    Ranged {
        extents: Vec<(u64, u64)>,
    },
}

/// A frozen file kept open for the life of the layout: a rename or unlink of the
/// path cannot change what is streamed. When a freeze lasts too long the handle is
/// swapped for a private copy (see [`ArchiveLayout::copy_aside`]).
pub struct FrozenFile {
    file: RwLock<Backing>,
    pub size: u64,
    pub extents: Vec<(u64, u64)>,
    /// (device, inode) of the file as frozen: whose bytes these are.
    pub identity: (u64, u64),
    /// Already read from a private copy.
    copied: std::sync::atomic::AtomicBool,
}

/// The open file a frozen file is read from, and its mapping once a mapped read made
/// it (`None` inside: it could not be mapped, so it is read). A copy aside replaces
/// both at once.
struct Backing {
    file: File,
    map: OnceLock<Option<memmap2::Mmap>>,
}

impl Backing {
    fn new(file: File) -> Self {
        Backing {
            file,
            map: OnceLock::new(),
        }
    }
}

impl FrozenFile {
    /// Open `source` as it is now (its data extents found once).
    pub fn open(source: &Path) -> io::Result<FrozenFile> {
        Self::from_file(File::open(source)?)
    }

    /// A file already open, as it is now.
    pub fn from_file(file: File) -> io::Result<FrozenFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        let size = meta.len();
        let extents = data_extents(&file, size)?;
        let dense = extents.len() == 1 && extents[0] == (0, size) || size == 0;
        Ok(FrozenFile {
            file: RwLock::new(Backing::new(file)),
            size,
            extents: if dense { vec![(0, size)] } else { extents },
            identity: (meta.dev(), meta.ino()),
            copied: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read().unwrap().file.read_exact_at(buf, offset)
    }

    /// Hand `f` the file's bytes `offset..offset + len` in place (mapped, no copy),
    /// or return `None` where they are not (a file under [`Self::MAP_MIN`], not
    /// mappable, or already shorter than it was frozen: then
    /// [`Self::read_exact_at`] reports it).
    ///
    /// The contract, which makes the mapping safe to use:
    /// - the caller keeps the view (its freeze) alive: a frozen file does not change
    ///   until its freeze ends, and a freeze ends early only through
    ///   [`Self::copy_aside`], which waits for `f` to return (the same lock);
    /// - `f` only hands the bytes to the kernel (a FUSE reply's `writev`): if
    ///   something outside the daemon cut the file short after the length check
    ///   here, the kernel's copy fails (EFAULT, an EIO for the reader) where a read
    ///   by the daemon itself would die of SIGBUS.
    pub(crate) fn with_mapped<T>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        if self.size < Self::MAP_MIN {
            return None;
        }
        let backing = self.file.read().unwrap();
        let end = offset.checked_add(len as u64)?;
        if end > self.size || backing.file.metadata().ok()?.len() < end {
            return None;
        }
        let map = backing.map.get_or_init(|| {
            // SAFETY: a read-only shared mapping of a file that holds still while it
            // is read through it (see above); its length is checked before each use.
            unsafe {
                memmap2::MmapOptions::new()
                    .len(self.size as usize)
                    .map(&backing.file)
            }
            .ok()
        });
        let map = map.as_ref()?;
        let bytes = map.get(offset as usize..end as usize)?;
        // The range's page tables filled in one call, not a fault per page while the
        // reply is copied out of it (kernels before 5.14 refuse it: then faults).
        let _ = map.advise_range(memmap2::Advice::PopulateRead, offset as usize, len);
        Some(f(bytes))
    }

    /// Files smaller than this are read, not mapped: a mapping each would count
    /// against the process's map limit, which the engine's own mappings need.
    pub const MAP_MIN: u64 = 1 << 20;

    pub fn with_file<T>(&self, f: impl FnOnce(&File) -> T) -> T {
        f(&self.file.read().unwrap().file)
    }

    /// Copy the data extents into a new sparse file in `dir` and read from it from now on.
    fn copy_aside(&self, dir: &Path) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        // Held for writing throughout, so two copiers do not both copy.
        let mut current = self.file.write().unwrap();
        if self.copied.load(Ordering::SeqCst) {
            return Ok(());
        }
        let copy = tempfile::tempfile_in(dir)?;
        copy.set_len(self.size)?;
        let mut buf = vec![0u8; COPY_CHUNK];
        for (offset, len) in &self.extents {
            let mut done = 0u64;
            while done < *len {
                let n = (len - done).min(COPY_CHUNK as u64) as usize;
                current.file.read_exact_at(&mut buf[..n], offset + done)?;
                copy.write_all_at(&buf[..n], offset + done)?;
                done += n as u64;
            }
        }
        // The old mapping goes with the old file; the next mapped read maps the copy.
        *current = Backing::new(copy);
        self.copied.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Copy buffer when a freeze ends by copying files aside.
const COPY_CHUNK: usize = 1 << 20;

pub struct ArchiveLayout {
    pieces: Vec<Piece>,
    /// Shared with other layouts of the same frozen files (a partial archive and the
    /// shard view it is cut from), so a copy aside serves them all.
    files: Vec<Arc<FrozenFile>>,
    nested: Vec<Arc<ArchiveLayout>>,
    entries: Vec<EntryInfo>,
    size: u64,
    mtime: u64,
    fingerprint: [u8; 32],
}

pub struct ArchiveBuilder {
    layout: ArchiveLayout,
    mtime: u64,
    /// What identifies the state the files hold, beyond their identity (the
    /// frozen shards' change numbers): part of the fingerprint.
    state: Vec<u64>,
}

impl ArchiveBuilder {
    /// `mtime`: the modification time every header carries (the state's last change).
    pub fn new(mtime: u64) -> Self {
        ArchiveBuilder {
            layout: ArchiveLayout {
                pieces: Vec::new(),
                files: Vec::new(),
                nested: Vec::new(),
                entries: Vec::new(),
                size: 0,
                mtime,
                fingerprint: [0; 32],
            },
            mtime,
            state: Vec::new(),
        }
    }

    /// Name the state the files hold (the frozen shards' change numbers): a file
    /// changed in place within one tick of the file system's clock keeps its
    /// identity (device, inode, size, mtime, ctime), the state's number does not.
    pub fn state(&mut self, numbers: &[u64]) {
        self.state.extend_from_slice(numbers);
    }

    fn push(&mut self, len: u64, source: Source) {
        if len == 0 {
            return;
        }
        let start = self.layout.size;
        self.layout.pieces.push(Piece { start, len, source });
        self.layout.size += len;
    }

    fn pad(&mut self, len: u64) {
        let pad = padded(len) - len;
        self.push(pad, Source::Zeros);
    }

    /// Push an entry's headers; returns where its data starts.
    fn headers(&mut self, path: &str, kind: &Kind<'_>) -> u64 {
        let headers: Arc<[u8]> = entry_headers(path, kind, self.mtime).into();
        self.push(headers.len() as u64, Source::Inline(headers));
        self.layout.size
    }

    pub fn dir(&mut self, path: &str) {
        let path = format!("{}/", path.trim_end_matches('/'));
        let start = self.headers(&path, &Kind::Dir);
        self.layout.entries.push(EntryInfo {
            path,
            size: 0,
            start,
            kind: EntryKind::Dir,
        });
    }

    pub fn bytes(&mut self, path: &str, data: impl Into<Arc<[u8]>>) {
        let data: Arc<[u8]> = data.into();
        let len = data.len() as u64;
        let start = self.headers(path, &Kind::File { size: len });
        self.push(len, Source::Inline(data.clone()));
        self.pad(len);
        self.layout.entries.push(EntryInfo {
            path: path.to_string(),
            size: len,
            start,
            kind: EntryKind::Inline(data),
        });
    }

    /// Content of fixed `len` produced on first read.
    pub fn deferred(&mut self, path: &str, len: u64, generate: Generator) {
        let start = self.headers(path, &Kind::File { size: len });
        self.push(
            len,
            Source::Deferred {
                bytes: Arc::new(OnceLock::new()),
                generate,
            },
        );
        self.pad(len);
        self.layout.entries.push(EntryInfo {
            path: path.to_string(),
            size: len,
            start,
            kind: EntryKind::Deferred,
        });
    }

    /// A file from disk: a regular entry if it has no holes, a sparse entry holding
    /// only its data extents otherwise.
    pub fn file(&mut self, path: &str, source: &Path) -> io::Result<()> {
        self.frozen_file(path, Arc::new(FrozenFile::open(source)?));
        Ok(())
    }

    /// An entry for a file another layout already froze (same bytes, and a copy
    /// aside made for either serves both).
    pub fn frozen_file(&mut self, path: &str, frozen: Arc<FrozenFile>) {
        let extents = frozen.extents.clone();
        self.frozen_ranges(path, frozen, extents);
    }

    /// An entry of the file's logical size holding only `extents` of it (sorted,
    /// disjoint); the rest reads as holes.
    pub fn frozen_ranges(&mut self, path: &str, frozen: Arc<FrozenFile>, extents: Vec<(u64, u64)>) {
        let index = self.layout.files.len();
        let size = frozen.size;
        let start = self.extents_entry(path, size, &extents, |offset| Source::File {
            file: index,
            offset,
        });
        self.layout.entries.push(EntryInfo {
            path: path.to_string(),
            size,
            start,
            kind: EntryKind::File {
                file: index,
                extents,
            },
        });
        self.layout.files.push(frozen);
    }

    /// An entry of logical `size` holding `extents` of a file read through `reader`:
    /// the same headers and bytes as [`Self::frozen_ranges`] of a file with that
    /// content.
    pub fn ranged(
        &mut self,
        path: &str,
        size: u64,
        extents: Vec<(u64, u64)>,
        reader: Arc<dyn RangeRead>,
    ) {
        let start = self.extents_entry(path, size, &extents, |offset| Source::Ranged {
            reader: reader.clone(),
            offset,
        });
        self.layout.entries.push(EntryInfo {
            path: path.to_string(),
            size,
            start,
            kind: EntryKind::Ranged { extents },
        });
    }

    /// Headers and pieces of a file entry: regular when `extents` cover it all,
    /// GNU sparse otherwise. Returns where its data starts.
    fn extents_entry(
        &mut self,
        path: &str,
        size: u64,
        extents: &[(u64, u64)],
        source: impl Fn(u64) -> Source,
    ) -> u64 {
        let dense = extents == [(0, size)] || size == 0;
        if dense {
            let start = self.headers(path, &Kind::File { size });
            self.push(size, source(0));
            self.pad(size);
            start
        } else {
            let stored: u64 = extents.iter().map(|(_, len)| len).sum();
            let mut map = extents.to_vec();
            let ends_in_hole = extents.last().is_none_or(|(o, l)| o + l < size);
            if ends_in_hole {
                // GNU convention (and Qdrant's): a last empty extent at the real size.
                map.push((size, 0));
            }
            let start = self.headers(
                path,
                &Kind::Sparse {
                    real_size: size,
                    stored,
                    map: &map,
                },
            );
            for (offset, len) in extents {
                self.push(*len, source(*offset));
            }
            self.pad(stored);
            start
        }
    }

    /// Another archive as one regular entry.
    pub fn nested(&mut self, path: &str, archive: Arc<ArchiveLayout>) {
        let len = archive.size();
        let start = self.headers(path, &Kind::File { size: len });
        self.push(len, Source::Nested(archive.clone()));
        self.pad(len);
        let index = self.layout.nested.len();
        self.layout.nested.push(archive);
        self.layout.entries.push(EntryInfo {
            path: path.to_string(),
            size: len,
            start,
            kind: EntryKind::Nested(index),
        });
    }

    /// End-of-archive marker (two zero blocks).
    pub fn finish(mut self) -> io::Result<ArchiveLayout> {
        self.push(2 * BLOCK, Source::Zeros);
        self.layout.fingerprint = self.fingerprint()?;
        Ok(self.layout)
    }

    /// Identifies the archive's bytes without reading the data: the state's
    /// numbers, entry paths and sizes, inline contents, and for files their identity
    /// (device, inode, mtime, ctime) and extents. Two layouts with the same
    /// fingerprint give the same bytes.
    fn fingerprint(&self) -> io::Result<[u8; 32]> {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::MetadataExt;
        let mut h = Sha256::new();
        h.update(self.mtime.to_le_bytes());
        h.update((self.state.len() as u64).to_le_bytes());
        for number in &self.state {
            h.update(number.to_le_bytes());
        }
        h.update(self.layout.size.to_le_bytes());
        for entry in &self.layout.entries {
            h.update(entry.path.as_bytes());
            h.update([0]);
            h.update(entry.size.to_le_bytes());
            match &entry.kind {
                EntryKind::Dir => h.update(b"d"),
                EntryKind::Deferred => h.update(b"g"),
                EntryKind::Inline(data) => {
                    h.update(b"i");
                    h.update(Sha256::digest(data));
                }
                EntryKind::Nested(index) => {
                    h.update(b"n");
                    h.update(self.layout.nested[*index].fingerprint);
                }
                EntryKind::Ranged { extents } => {
                    // Such a layout is read back, never named by state: its bytes are
                    // identified by what it was read from (see the repository store).
                    h.update(b"r");
                    for (o, l) in extents {
                        h.update(o.to_le_bytes());
                        h.update(l.to_le_bytes());
                    }
                }
                EntryKind::File { file, extents } => {
                    let m = self.layout.files[*file].with_file(|f| f.metadata())?;
                    h.update(b"f");
                    for v in [
                        m.dev(),
                        m.ino(),
                        m.mtime() as u64,
                        m.mtime_nsec() as u64,
                        m.ctime() as u64,
                        m.ctime_nsec() as u64,
                    ] {
                        h.update(v.to_le_bytes());
                    }
                    for (o, l) in extents {
                        h.update(o.to_le_bytes());
                        h.update(l.to_le_bytes());
                    }
                }
            }
        }
        Ok(h.finalize().into())
    }

    pub fn entries(&self) -> &[EntryInfo] {
        &self.layout.entries
    }

    pub fn files(&self) -> &[Arc<FrozenFile>] {
        &self.layout.files
    }
}

impl ArchiveLayout {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The modification time every header carries (seconds).
    pub fn mtime(&self) -> u64 {
        self.mtime
    }

    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    pub fn files(&self) -> &[Arc<FrozenFile>] {
        &self.files
    }

    /// The frozen file behind the entry at `path`, if it is one.
    pub fn frozen_at(&self, path: &str) -> Option<&Arc<FrozenFile>> {
        self.entries.iter().find_map(|entry| match &entry.kind {
            EntryKind::File { file, .. } if entry.path == path => Some(&self.files[*file]),
            _ => None,
        })
    }

    pub fn nested(&self) -> &[Arc<ArchiveLayout>] {
        &self.nested
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Replace every frozen file (nested archives included) by a private copy in
    /// `dir`, so the originals may change again while this layout is still read.
    pub fn copy_aside(&self, dir: &Path) -> io::Result<()> {
        for file in &self.files {
            file.copy_aside(dir)?;
        }
        for nested in &self.nested {
            nested.copy_aside(dir)?;
        }
        Ok(())
    }

    /// Hand `f` the archive's bytes `offset..offset + len` (cut at the end) in place,
    /// when they lie in one piece that is in memory or a mapped frozen file: a reply
    /// can then be sent from them without a copy into a buffer first. `None` when
    /// they do not (a header and data together, zeros, a nested or ranged piece, a
    /// small file): then [`Self::read_at`]. The contract of
    /// [`FrozenFile::with_mapped`] holds: the layout's view stays alive, and `f`
    /// only hands the bytes to the kernel.
    pub(crate) fn with_slice<T>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        let len = (len as u64).min(self.size.saturating_sub(offset)) as usize;
        if len == 0 {
            return None;
        }
        let piece = &self.pieces[self.pieces.partition_point(|p| p.start + p.len <= offset)];
        let within = offset - piece.start;
        if within + len as u64 > piece.len {
            return None;
        }
        match &piece.source {
            Source::Inline(data) => Some(f(&data[within as usize..within as usize + len])),
            Source::File { file, offset } => self.files[*file].with_mapped(offset + within, len, f),
            _ => None,
        }
    }

    /// Fill `buf` from archive offset `offset`; returns the bytes read (short only at the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut index = self.pieces.partition_point(|p| p.start + p.len <= offset);
        let mut done = 0usize;
        let mut at = offset;
        while done < buf.len() && index < self.pieces.len() {
            let piece = &self.pieces[index];
            let within = at - piece.start;
            let take = ((piece.len - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + take];
            match &piece.source {
                Source::Inline(data) => {
                    out.copy_from_slice(&data[within as usize..within as usize + take])
                }
                Source::Zeros => out.fill(0),
                Source::File { file, offset } => self.files[*file]
                    .read_exact_at(out, offset + within)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("frozen file changed or vanished while streaming: {e}"),
                        )
                    })?,
                Source::Ranged { reader, offset } => reader.read_exact_at(out, offset + within)?,
                Source::Nested(archive) => {
                    let n = archive.read_at(within, out)?;
                    if n != take {
                        return Err(io::Error::other("nested archive ended early"));
                    }
                }
                Source::Deferred { bytes, generate } => {
                    let data = match bytes.get() {
                        Some(data) => data.clone(),
                        None => {
                            let generated: Arc<[u8]> = generate(self)?.into();
                            if generated.len() as u64 != piece.len {
                                return Err(io::Error::other("generated entry changed length"));
                            }
                            bytes.get_or_init(|| generated).clone()
                        }
                    };
                    out.copy_from_slice(&data[within as usize..within as usize + take]);
                }
            }
            done += take;
            at += take as u64;
            index += 1;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::path::PathBuf;

    /// Files that exercise every header kind: dense, sparse with more extents than a
    /// header holds, fully empty sparse, a trailing hole, a long name.
    fn fixture(dir: &Path) -> Vec<(String, PathBuf)> {
        let mut files = Vec::new();
        let dense = dir.join("dense.bin");
        std::fs::write(
            &dense,
            (0..70_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        files.push(("dense.bin".to_string(), dense));
        let sparse = dir.join("sparse.bin");
        let mut f = File::create(&sparse).unwrap();
        f.set_len(64 << 20).unwrap();
        for i in 0..30u64 {
            f.seek(SeekFrom::Start(i * (2 << 20))).unwrap();
            f.write_all(&[i as u8 + 1; 5000]).unwrap();
        }
        files.push(("sparse.bin".to_string(), sparse));
        let empty = dir.join("empty.bin");
        File::create(&empty).unwrap().set_len(1 << 20).unwrap();
        files.push(("empty.bin".to_string(), empty));
        let long = format!("{}/file.json", "deeply-nested-directory-name".repeat(5));
        let long_src = dir.join("long.json");
        std::fs::write(&long_src, b"{\"long\":true}").unwrap();
        files.push((long, long_src));
        files
    }

    fn read_all(layout: &ArchiveLayout) -> Vec<u8> {
        let mut out = vec![0u8; layout.size() as usize];
        assert_eq!(layout.read_at(0, &mut out).unwrap(), out.len());
        out
    }

    #[test]
    fn random_ranges_equal_slices_and_the_tar_crate_reads_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let files = fixture(dir.path());
        let mut builder = ArchiveBuilder::new(1_700_000_000);
        builder.dir("top");
        builder.bytes("top/inline.txt", b"hello".to_vec());
        for (path, source) in &files {
            builder.file(path, source).unwrap();
        }
        let inner = {
            let mut b = ArchiveBuilder::new(1);
            b.bytes("x", b"nested".to_vec());
            Arc::new(b.finish().unwrap())
        };
        builder.nested("inner.tar", inner.clone());
        let layout = builder.finish().unwrap();
        let whole = read_all(&layout);
        assert_eq!(whole.len() % 512, 0);
        assert!(
            layout.size() < 2 << 20,
            "holes are not stored: {} bytes",
            layout.size()
        );

        // Random ranges, including ones that cross piece boundaries.
        let mut seed = 0x2545f4914f6cdd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let start = seed % layout.size();
            let len = (seed >> 32) % 20_000 + 1;
            let mut buf = vec![0u8; len as usize];
            let n = layout.read_at(start, &mut buf).unwrap();
            assert_eq!(n as u64, len.min(layout.size() - start));
            assert_eq!(&buf[..n], &whole[start as usize..start as usize + n]);
        }

        // The reference reader sees every entry with its logical content.
        let mut archive = tar::Archive::new(&whole[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            if let Some((_, source)) = files.iter().find(|(p, _)| *p == path) {
                assert!(
                    content == std::fs::read(source).unwrap(),
                    "content of {path}"
                );
            }
            if path == "inner.tar" {
                assert_eq!(content, read_all(&inner));
            }
            if path == "top/inline.txt" {
                assert_eq!(content, b"hello");
            }
            assert_eq!(entry.header().mtime().unwrap(), 1_700_000_000);
            seen.push(path);
        }
        // GNU tar extracts the same contents without a warning.
        let tar_file = dir.path().join("all.tar");
        std::fs::write(&tar_file, &whole).unwrap();
        let out = dir.path().join("gnu");
        std::fs::create_dir(&out).unwrap();
        let run = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tar_file)
            .arg("-C")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success() && run.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        for (path, source) in &files {
            assert!(
                std::fs::read(out.join(path)).unwrap() == std::fs::read(source).unwrap(),
                "GNU tar: {path}"
            );
        }

        let mut expected = vec![
            "top/".to_string(),
            "top/inline.txt".to_string(),
            "inner.tar".to_string(),
        ];
        expected.extend(files.iter().map(|(p, _)| p.clone()));
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn same_files_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = fixture(dir.path());
        let build = || {
            let mut builder = ArchiveBuilder::new(42);
            for (path, source) in &files {
                builder.file(path, source).unwrap();
            }
            builder.finish().unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(read_all(&a) == read_all(&b));
        // A change to a file changes the fingerprint.
        std::fs::write(&files[0].1, b"changed").unwrap();
        assert_ne!(build().fingerprint(), a.fingerprint());
        // So does another state number, whatever the files look like.
        let numbered = |n: u64| {
            let mut builder = ArchiveBuilder::new(42);
            builder.state(&[n]);
            for (path, source) in &files {
                builder.file(path, source).unwrap();
            }
            builder.finish().unwrap().fingerprint()
        };
        assert_eq!(numbered(7), numbered(7));
        assert_ne!(numbered(7), numbered(8));
    }

    #[test]
    fn slices_in_place_equal_reads_follow_a_copy_aside_and_refuse_a_cut_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = fixture(dir.path());
        // A dense file big enough to be mapped (small ones are read).
        let big = dir.path().join("big.bin");
        std::fs::write(
            &big,
            (0..3_000_000u32)
                .map(|i| (i % 253) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        files.push(("big.bin".to_string(), big.clone()));
        let mut builder = ArchiveBuilder::new(7);
        for (path, source) in &files {
            builder.file(path, source).unwrap();
        }
        let layout = builder.finish().unwrap();
        let whole = read_all(&layout);
        let slice = |offset: u64, len: usize| layout.with_slice(offset, len, |b| b.to_vec());

        // Every range handed in place holds what a read gives; ranges inside one
        // file's data are handed so, ranges across a header are not.
        let entry = |path: &str| layout.entries().iter().find(|e| e.path == path).unwrap();
        let (dense, mapped) = (entry("dense.bin"), entry("big.bin"));
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut in_place = 0;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let start = seed % layout.size();
            let len = ((seed >> 32) % 20_000 + 1) as usize;
            if let Some(bytes) = slice(start, len) {
                let end = start as usize + bytes.len();
                assert_eq!(bytes.len(), len.min(whole.len() - start as usize));
                assert!(bytes == whole[start as usize..end], "range {start}+{len}");
                in_place += 1;
            }
        }
        assert!(in_place > 0, "no range was handed in place");
        let one_mib = 1 << 20;
        assert_eq!(
            slice(mapped.start + 5, one_mib).unwrap(),
            &whole[mapped.start as usize + 5..][..one_mib]
        );
        assert_eq!(
            slice(mapped.start - 1, 2),
            None,
            "a header and data together"
        );
        assert_eq!(
            slice(dense.start, 100),
            None,
            "a small file is read, not mapped"
        );

        // After a copy aside the original may change: the slices are the copy's.
        let aside = dir.path().join("aside");
        std::fs::create_dir(&aside).unwrap();
        layout.copy_aside(&aside).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .write_all_at(&vec![0xAAu8; one_mib], 0)
            .unwrap();
        assert_eq!(
            slice(mapped.start + 5, one_mib).unwrap(),
            &whole[mapped.start as usize + 5..][..one_mib]
        );

        // A file cut short under a layout is not touched through its mapping: no
        // slice, and the read reports it.
        let cut = dir.path().join("cut.bin");
        std::fs::write(&cut, vec![7u8; 3_000_000]).unwrap();
        let mut builder = ArchiveBuilder::new(7);
        builder.file("cut.bin", &cut).unwrap();
        let layout = builder.finish().unwrap();
        let start = layout.entries()[0].start;
        assert_eq!(
            layout.with_slice(start, 4096, |b| b.to_vec()),
            Some(vec![7u8; 4096])
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(1000)
            .unwrap();
        assert_eq!(
            layout.with_slice(start + 2_000_000, 4096, |b| b.len()),
            None
        );
        let mut buf = vec![0u8; 4096];
        assert!(layout.read_at(start + 2_000_000, &mut buf).is_err());
    }
}
