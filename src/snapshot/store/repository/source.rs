//! A frozen archive as rustic_core's backup source: each entry of the archive a file
//! or directory of the generation's tree (plus the recipe), in the tree's order.
//!
//! Incremental forever rests on the metadata given here. rustic_core reuses a file's
//! chunk list from the parent generation, without opening it, when the parent has a
//! node of that path with the same size, mtime, ctime and inode: for a frozen engine
//! file those are the file's own, the identity the digest cache already trusts (a
//! frozen file does not change; after a thaw any change moves its mtime or ctime).
//! Entries snapfs generates (configs, the manifest, nested archives) get this
//! creation's time as ctime, so they never match and are always read again: they are
//! small, or (a full snapshot's nested archives) assembled and chunked anew. So does a
//! frozen file that changed within the last second (its next change could come within
//! the same clock tick and keep its times): it is read again next time.
//!
//! rustic_core logs and skips an entry it fails to read rather than failing the
//! backup; the readers here record any failure in [`Failures`], and the store throws
//! the generation away when there is one.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult,
};

use crate::snapshot::layout::{ArchiveLayout, EntryKind, FrozenFile};

/// Go's `os.ModeDir`, as restic stores a directory's mode.
const GO_MODE_DIR: u32 = 1 << 31;
const READ_CHUNK: usize = 1 << 20;
/// How long ago a file must have last changed for its times to identify its
/// content (well above the coarsest file-system clock tick).
const SETTLED_SECS: f64 = 1.0;

/// Read failures met while rustic_core read the source.
#[derive(Default, Clone)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    fn record(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    pub fn first(&self) -> Option<String> {
        self.0.lock().unwrap().first().cloned()
    }
}

/// How one member's bytes are read.
#[derive(Clone)]
pub enum Member {
    /// A frozen file's logical content (holes read as zeros).
    Frozen(Arc<FrozenFile>),
    /// `len` bytes of the archive from `start` (generated and nested entries).
    Archive {
        layout: Arc<ArchiveLayout>,
        start: u64,
        len: u64,
    },
    Bytes(Arc<[u8]>),
}

pub struct Opener {
    member: Member,
    path: String,
    failures: Failures,
}

pub struct MemberReader {
    member: Member,
    at: u64,
    size: u64,
    path: String,
    failures: Failures,
}

impl Read for MemberReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.size - self.at).min(buf.len().min(READ_CHUNK) as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let out = &mut buf[..want];
        let done = match &self.member {
            Member::Frozen(frozen) => frozen.read_exact_at(out, self.at),
            Member::Archive { layout, start, .. } => match layout.read_at(start + self.at, out) {
                Ok(n) if n == want => Ok(()),
                Ok(_) => Err(io::Error::other("the archive ended early")),
                Err(e) => Err(e),
            },
            Member::Bytes(bytes) => {
                out.copy_from_slice(&bytes[self.at as usize..self.at as usize + want]);
                Ok(())
            }
        };
        if let Err(e) = done {
            self.failures.record(format!("{}: {e}", self.path));
            return Err(e);
        }
        self.at += want as u64;
        Ok(want)
    }
}

impl ReadSourceOpen for Opener {
    type Reader = MemberReader;

    fn open(self) -> RusticResult<MemberReader> {
        let size = match &self.member {
            Member::Frozen(frozen) => frozen.size,
            Member::Archive { len, .. } => *len,
            Member::Bytes(bytes) => bytes.len() as u64,
        };
        Ok(MemberReader {
            member: self.member,
            at: 0,
            size,
            path: self.path,
            failures: self.failures,
        })
    }
}

/// The entries of one generation, sorted as a restic tree wants them.
pub struct ArchiveSource {
    entries: Vec<Entry>,
    failures: Failures,
    size: u64,
}

fn node(name: &str, kind: NodeType, meta: Metadata) -> Node {
    Node::new_node(OsStr::new(name), kind, meta)
}

fn timestamp(secs: i64, nanos: i64) -> Option<Timestamp> {
    Timestamp::new(secs, nanos as i32).ok()
}

/// A frozen file's node metadata: its own times, inode and size, so that an unchanged
/// file matches its parent's node. A file changed within the last second could
/// change again within one tick of the file system's clock and keep its times:
/// recorded with this generation's time `now` as ctime, it cannot match in the next
/// generation, which reads it again (the digest cache's rule).
fn frozen_meta(frozen: &FrozenFile, now: Timestamp) -> io::Result<Metadata> {
    let m = frozen.with_file(|f| f.metadata())?;
    let mtime = timestamp(m.mtime(), m.mtime_nsec());
    let ctime = timestamp(m.ctime(), m.ctime_nsec());
    let settled = ctime
        .zip(mtime)
        .is_some_and(|(c, m)| now.duration_since(c.max(m)).as_secs_f64() >= SETTLED_SECS);
    Ok(Metadata {
        mode: Some(0o644),
        mtime,
        ctime: if settled { ctime } else { Some(now) },
        uid: Some(0),
        gid: Some(0),
        inode: m.ino(),
        device_id: m.dev(),
        size: frozen.size,
        ..Default::default()
    })
}

/// Metadata of bytes snapfs generates: `now` as ctime, so never a parent's match.
fn generated_meta(size: u64, mtime: Option<Timestamp>, now: Timestamp) -> Metadata {
    Metadata {
        mode: Some(0o644),
        mtime,
        ctime: Some(now),
        uid: Some(0),
        gid: Some(0),
        size,
        ..Default::default()
    }
}

type Entry = (PathBuf, Node, Option<Member>);

impl ArchiveSource {
    /// `layout`'s entries and the recipe (`recipe_name`, `recipe`), as a tree rooted
    /// at `/`; generated entries carry `now` as ctime (never reused from a parent).
    pub fn new(
        layout: &Arc<ArchiveLayout>,
        recipe_name: &str,
        recipe: Vec<u8>,
        now: Timestamp,
    ) -> io::Result<ArchiveSource> {
        let mtime = timestamp(layout.mtime() as i64, 0);
        let mut entries = Vec::new();
        for entry in layout.entries() {
            let path = entry.path.trim_end_matches('/');
            let name = path.rsplit('/').next().unwrap_or(path);
            let full = PathBuf::from("/").join(path);
            let (meta, member) = match &entry.kind {
                EntryKind::Dir => {
                    let meta = Metadata {
                        mode: Some(GO_MODE_DIR | 0o755),
                        mtime,
                        uid: Some(0),
                        gid: Some(0),
                        ..Default::default()
                    };
                    entries.push((full, node(name, NodeType::Dir, meta), None));
                    continue;
                }
                EntryKind::File { file, .. } => {
                    let frozen = layout.files()[*file].clone();
                    (frozen_meta(&frozen, now)?, Member::Frozen(frozen))
                }
                EntryKind::Inline(bytes) => (
                    generated_meta(entry.size, mtime, now),
                    Member::Bytes(bytes.clone()),
                ),
                EntryKind::Deferred | EntryKind::Nested(_) | EntryKind::Ranged { .. } => (
                    generated_meta(entry.size, mtime, now),
                    Member::Archive {
                        layout: layout.clone(),
                        start: entry.start,
                        len: entry.size,
                    },
                ),
            };
            entries.push((full, node(name, NodeType::File, meta), Some(member)));
        }
        Ok(Self::with_recipe(entries, recipe_name, recipe, mtime, now))
    }

    /// An archive file imported whole: the one member `name` (the file's own
    /// metadata) and the recipe.
    pub fn whole(
        name: &str,
        file: Arc<FrozenFile>,
        recipe_name: &str,
        recipe: Vec<u8>,
        now: Timestamp,
    ) -> io::Result<ArchiveSource> {
        let meta = frozen_meta(&file, now)?;
        let entries = vec![(
            PathBuf::from("/").join(name),
            node(name, NodeType::File, meta),
            Some(Member::Frozen(file)),
        )];
        Ok(Self::with_recipe(entries, recipe_name, recipe, None, now))
    }

    /// One small generated file `name` holding `bytes` (a record), alone in the tree.
    pub fn single(name: &str, bytes: Vec<u8>, now: Timestamp) -> ArchiveSource {
        Self::with_recipe(Vec::new(), name, bytes, None, now)
    }

    /// `entries` and the recipe, in the order a restic tree wants them.
    fn with_recipe(
        mut entries: Vec<Entry>,
        recipe_name: &str,
        recipe: Vec<u8>,
        mtime: Option<Timestamp>,
        now: Timestamp,
    ) -> ArchiveSource {
        entries.push((
            PathBuf::from("/").join(recipe_name),
            node(
                recipe_name,
                NodeType::File,
                generated_meta(recipe.len() as u64, mtime, now),
            ),
            Some(Member::Bytes(recipe.into())),
        ));
        // A restic tree lists each directory's children by name, depth first: the
        // order of paths compared component by component (not the archive's byte order,
        // where `a.json` comes before `a/`).
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let size = entries.iter().map(|(_, node, _)| node.meta.size).sum();
        ArchiveSource {
            entries,
            failures: Failures::default(),
            size,
        }
    }

    /// The files (not directories) the tree will hold: what a whole generation stores.
    pub fn files(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(_, _, member)| member.is_some())
            .count() as u64
    }

    pub fn failures(&self) -> Failures {
        self.failures.clone()
    }
}

impl ReadSource for ArchiveSource {
    type Open = Opener;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Opener>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.size))
    }

    fn entries(&self) -> Self::Iter {
        self.entries
            .iter()
            .map(|(path, node, member)| {
                let open = member.clone().map(|member| Opener {
                    member,
                    path: path.display().to_string(),
                    failures: self.failures.clone(),
                });
                if node.node_type == NodeType::File && open.is_none() {
                    return Err(RusticError::new(
                        ErrorKind::Internal,
                        "a file without content",
                    ));
                }
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: node.clone(),
                    open,
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::layout::ArchiveBuilder;

    #[test]
    fn only_settled_files_keep_their_own_times() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, b"settled").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"just written").unwrap();
        let mut builder = ArchiveBuilder::new(7);
        builder.file("old", &old).unwrap();
        builder.file("fresh", &fresh).unwrap();
        builder.bytes("generated.json", b"{}".to_vec());
        let layout = Arc::new(builder.finish().unwrap());
        let now = Timestamp::now();
        let source = ArchiveSource::new(&layout, ".recipe", b"{}".to_vec(), now).unwrap();
        let ctime_of = |name: &str| {
            source
                .entries
                .iter()
                .find(|(path, _, _)| path == &PathBuf::from("/").join(name))
                .unwrap()
                .1
                .meta
                .ctime
        };
        let real = |path: &std::path::Path| {
            let m = std::fs::metadata(path).unwrap();
            timestamp(m.ctime(), m.ctime_nsec())
        };
        assert_eq!(
            ctime_of("old"),
            real(&old),
            "a settled file keeps its ctime"
        );
        assert_eq!(
            ctime_of("fresh"),
            Some(now),
            "a fresh one gets the generation's"
        );
        assert_eq!(ctime_of("generated.json"), Some(now));
        // The tree's order: by path component, the recipe included.
        let paths: Vec<_> = source.entries.iter().map(|(p, _, _)| p.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(paths.len(), 4);
    }
}
