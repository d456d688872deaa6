//! Reading a generation back: its members read through the repository's index with
//! read-ahead on other threads, the archive served whole or put together from its
//! members by the recipe's layout, and the count of open readers a prune waits
//! for. Kept apart because it is the hot path of a download, a copy from the mount
//! and a restore.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{Node, NodeType};
use rustic_core::{IndexedFullStatus, Repository, RusticError, TreeId};

use crate::snapshot::layout::{ArchiveLayout, RangeRead};
use crate::snapshot::store::StoredReader;

/// How many generations are open for reading, and a signal when one closes.
#[derive(Default)]
pub(super) struct Readers {
    pub(super) open: Mutex<usize>,
    pub(super) closed: std::sync::Condvar,
}

/// Held by an open generation's reader.
pub(super) struct ReaderHold(Arc<Readers>);

impl ReaderHold {
    pub(super) fn new(readers: &Arc<Readers>) -> ReaderHold {
        *readers.open.lock().unwrap() += 1;
        ReaderHold(readers.clone())
    }
}

impl Drop for ReaderHold {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap();
        *open = open.saturating_sub(1);
        self.0.closed.notify_all();
    }
}

/// How long a prune waits for the generations open for reading to close.
pub(super) const PRUNE_WAITS_FOR_READERS: std::time::Duration = std::time::Duration::from_secs(60);

/// A generation's member, read through the repository's index.
pub(super) struct Member {
    repo: Arc<Repository<IndexedFullStatus>>,
    file: Arc<rustic_core::vfs::OpenFile>,
    name: String,
    size: u64,
    /// Read-ahead: blobs past the last read are decrypted into the repository's
    /// blob cache on another thread while the reader uses what it has (a download,
    /// a `cp` and a restore read forward; one thread alternating fetching, decrypting
    /// and copying went at a third of the disk's speed).
    ahead: Mutex<Ahead>,
}

#[derive(Default)]
struct Ahead {
    /// Where the read-ahead ends.
    until: u64,
    running: Vec<std::thread::JoinHandle<()>>,
}

/// How much one read-ahead thread reads: with [`READ_AHEAD_THREADS`] of them, well
/// inside the repository's 32 MiB blob cache.
const READ_AHEAD: u64 = 6 << 20;
/// Read-ahead threads per member: one waits for the disk while another decrypts.
const READ_AHEAD_THREADS: usize = 2;

impl Member {
    pub(super) fn new(
        repo: &Arc<Repository<IndexedFullStatus>>,
        node: &Node,
        name: &str,
    ) -> std::result::Result<Member, Box<RusticError>> {
        Ok(Member {
            repo: repo.clone(),
            file: Arc::new(repo.open_file(node)?),
            name: name.to_string(),
            size: node.meta.size,
            ahead: Mutex::new(Ahead::default()),
        })
    }

    /// Keep up to [`READ_AHEAD_THREADS`] windows being read past `from`.
    fn read_ahead(&self, from: u64) {
        let mut ahead = self.ahead.lock().unwrap();
        ahead.running.retain(|t| !t.is_finished());
        if ahead.until < from {
            ahead.until = from;
        }
        let horizon = from + READ_AHEAD * READ_AHEAD_THREADS as u64;
        while ahead.running.len() < READ_AHEAD_THREADS && ahead.until < horizon.min(self.size) {
            let start = ahead.until;
            let len = READ_AHEAD.min(self.size - start);
            ahead.until = start + len;
            let (repo, file) = (self.repo.clone(), self.file.clone());
            // A failure here is met again, and reported, by the read that needs the bytes.
            if let Ok(thread) = std::thread::Builder::new()
                .name("repo-read-ahead".into())
                .spawn(move || {
                    let _ = repo.read_file_at(&file, start as usize, len as usize);
                })
            {
                ahead.running.push(thread);
            }
        }
    }
}

impl RangeRead for Member {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let bytes = self
                .repo
                .read_file_at(&self.file, offset as usize + done, buf.len() - done)
                .map_err(|e| {
                    tracing::warn!(generation = %self.name, error = %e.display_log(), "a generation could not be read");
                    std::io::Error::other(format!(
                        "stored snapshot {} cannot be read from the repository (damaged or missing data; `restic check --read-data` tells more)",
                        self.name
                    ))
                })?;
            if bytes.is_empty() {
                return Err(std::io::Error::other(format!(
                    "stored snapshot {} is shorter in the repository than recorded",
                    self.name
                )));
            }
            buf[done..done + bytes.len()].copy_from_slice(&bytes);
            done += bytes.len();
        }
        self.read_ahead(offset + buf.len() as u64);
        Ok(())
    }
}

/// The members of tree `root`, by path (`a/b`), files only.
pub(super) fn files_of(
    repo: &Repository<IndexedFullStatus>,
    root: TreeId,
) -> std::result::Result<HashMap<String, Node>, Box<RusticError>> {
    let mut out = HashMap::new();
    let mut pending = vec![(String::new(), root)];
    while let Some((prefix, id)) = pending.pop() {
        for node in repo.get_tree(&id)?.nodes {
            let path = format!("{prefix}{}", node.name().to_string_lossy());
            match (node.node_type.clone(), node.subtree) {
                (NodeType::Dir, Some(subtree)) => pending.push((format!("{path}/"), subtree)),
                (NodeType::File, _) => {
                    out.insert(path, node);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// An archive kept whole: its one member's bytes.
pub(super) struct Whole {
    pub(super) member: Member,
    pub(super) size: u64,
    pub(super) _hold: ReaderHold,
}

impl StoredReader for Whole {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size.saturating_sub(offset)).min(buf.len() as u64) as usize;
        if n > 0 {
            self.member.read_exact_at(&mut buf[..n], offset)?;
        }
        Ok(n)
    }
}

/// An archive put together from its members (and held open against a prune).
pub(super) struct Assembled {
    pub(super) layout: ArchiveLayout,
    pub(super) _hold: ReaderHold,
}

impl StoredReader for Assembled {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.layout.read_at(offset, buf)
    }
}
