//! The filesystem layer: collections, shards and snapshots as a mount (the layout:
//! docs/SEMANTICS.md, "The mount").
//!
//! [`SnapFs`] is the core and knows nothing about FUSE: it resolves names
//! ([`namespace`]), holds open files ([`handles`]) and produces bytes, returning plain
//! results and [`FsError`]s. [`fuse`] is a thin adapter that translates kernel
//! requests into these calls on worker threads, and [`mount`] owns the mount's life
//! (checks, stale mounts, unmount on every exit).
//!
//! Live files get their exact size and mtime from a view of the state they would
//! stream. Building a view freezes and flushes, so the size of each state is
//! remembered against a cheap key (every covered shard's last-change clock): an
//! unchanged collection is stat'ed without freezing anything, which is what makes
//! rsync's quick check free.

pub mod clusters;
pub mod error;
pub mod fuse;
pub mod handles;
mod live;
pub mod mount;
pub mod namespace;
pub mod recover;
mod restore_ops;
pub mod stored;
pub mod texts;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::{FsError, FsResult};
use handles::{DirEntry, Handle, Handles, LiveRead};
use live::{CachedState, LiveState};
use namespace::{Namespace, Node, ROOT_INO};
use recover::{EntryKind, RecoverDirs};

use crate::metrics;
use crate::snapshot::digest::hex;
use crate::snapshot::store::SNAPSHOT_EXT;
use crate::snapshot::{Scope, SnapshotView, Snapshots};

/// Reported as `st_blksize`: tools size their reads by it (cp reads 1 MiB at a
/// time), and one FUSE request carries at most 1 MiB.
pub const BLOCK_SIZE: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
}

/// A node's attributes, as `stat` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    /// The attributes change without notice (live files, generated files): the
    /// kernel must ask every time.
    pub volatile: bool,
    /// The user and group an upload belongs to (whoever created it); `None`: the
    /// mount's owner and group.
    pub owner: Option<(u32, u32)>,
}

/// What `open` decided.
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache: generated files change between opens, and a live
    /// file opened while another handle of it holds a different state must not
    /// share that state's cached pages.
    pub direct_io: bool,
    /// The page cache already holds this very state's bytes: keep it.
    pub keep_cache: bool,
    /// A plain file whose reads the kernel may serve itself (FUSE passthrough).
    pub backing: Option<std::fs::File>,
}

/// Which access a check asks for.
#[derive(Debug, Clone, Copy)]
pub struct AccessMask {
    pub write: bool,
}

/// Filesystem statistics, from the file system that holds the snapshots.
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

pub struct SnapFs {
    ns: Namespace,
    /// Nodes the kernel knows by inode number, with how many lookups it holds of
    /// each; `forget` drops them (the root is never forgotten).
    inodes: Mutex<HashMap<u64, (Node, u64)>>,
    handles: Handles,
    live_states: Mutex<HashMap<Scope, LiveState>>,
    /// By live file inode.
    cached_states: Mutex<HashMap<u64, CachedState>>,
    recover: RecoverDirs,
    /// A snapshot written into recover/ waits for its checksum sidecar.
    require_checksum: bool,
    /// Where `statfs` looks: the snapshots directory.
    snapshots_path: PathBuf,
    /// The `snapshots/` directories: whichever store keeps stored snapshots.
    stored: stored::StoredDirs,
    started: SystemTime,
    /// The service, for `backups/<policy>.json` (none: no backups/ directory).
    backups: Option<Arc<crate::service::Service>>,
    /// The followed clusters' generations (none: no clusters/ directory).
    clusters: Option<clusters::ClusterDirs>,
}

impl SnapFs {
    /// The mount of `storage`, showing the stored snapshots of `store`; `statfs`
    /// answers for `snapshots_path`.
    pub fn new(
        snapshots: Arc<Snapshots>,
        snapshots_path: PathBuf,
        store: Arc<dyn crate::snapshot::store::SnapshotStore>,
    ) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT_INO, (Node::Root, u64::MAX));
        SnapFs {
            ns: Namespace::new(snapshots),
            inodes: Mutex::new(inodes),
            handles: Handles::default(),
            live_states: Mutex::new(HashMap::new()),
            cached_states: Mutex::new(HashMap::new()),
            recover: RecoverDirs::default(),
            require_checksum: false,
            snapshots_path,
            stored: stored::StoredDirs::new(store),
            started: SystemTime::now(),
            backups: None,
            clusters: None,
        }
    }

    /// Show `clusters/` for the service's followed clusters (when it has any).
    pub fn with_clusters(mut self, service: Arc<crate::service::Service>) -> Self {
        let names: Vec<String> = service
            .follow
            .clusters()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        if !names.is_empty() {
            let snapshots = self.ns.snapshots().clone();
            self.ns =
                std::mem::replace(&mut self.ns, Namespace::new(snapshots)).with_clusters(names);
            self.clusters = Some(clusters::ClusterDirs::new(service));
        }
        self
    }

    fn cluster_dirs(&self) -> FsResult<&clusters::ClusterDirs> {
        self.clusters.as_ref().ok_or(FsError::NotFound)
    }

    /// Show `backups/<policy>.json` for the service's backup policies (when it has any).
    pub fn with_backups(mut self, service: Arc<crate::service::Service>) -> Self {
        let names: Vec<String> = service
            .backups
            .policies()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        if !names.is_empty() {
            let snapshots = self.ns.snapshots().clone();
            self.ns =
                std::mem::replace(&mut self.ns, Namespace::new(snapshots)).with_policies(names);
            self.backups = Some(service);
        }
        self
    }

    /// A policy's status as the mount shows it (pretty JSON, as `GET
    /// /snapfs/backups/{policy}` gives its result).
    fn backup_status(&self, policy: &str) -> FsResult<Vec<u8>> {
        let service = self.backups.as_ref().ok_or(FsError::NotFound)?;
        let status = crate::service::backups::status_now(service)
            .into_iter()
            .find(|s| s.name == policy)
            .ok_or(FsError::NotFound)?;
        let mut text = serde_json::to_vec_pretty(&status).unwrap_or_default();
        text.push(b'\n');
        Ok(text)
    }

    /// Make restores through recover/ wait for a checksum sidecar.
    pub fn with_require_checksum(mut self, require: bool) -> Self {
        self.require_checksum = require;
        self
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        self.inodes
            .lock()
            .unwrap()
            .get(&ino)
            .map(|(node, _)| node.clone())
            .ok_or(FsError::NotFound)
    }

    /// The kernel learns `node` (a lookup, a create): one more lookup to forget.
    fn remember_node(&self, node: &Node) -> u64 {
        let ino = node.ino();
        let mut inodes = self.inodes.lock().unwrap();
        let entry = inodes.entry(ino).or_insert_with(|| (node.clone(), 0));
        entry.0 = node.clone();
        entry.1 = entry.1.saturating_add(1);
        ino
    }

    /// The kernel forgets `nlookup` lookups of `ino`; at none left the node goes
    /// (names come and go: timestamped snapshot names, uploads, collections).
    pub fn forget(&self, ino: u64, nlookup: u64) {
        let mut inodes = self.inodes.lock().unwrap();
        if let Some(entry) = inodes.get_mut(&ino) {
            entry.1 = entry.1.saturating_sub(nlookup);
            if entry.1 == 0 && ino != ROOT_INO {
                inodes.remove(&ino);
            }
        }
    }

    /// Nodes the kernel holds now.
    pub fn known_inodes(&self) -> usize {
        self.inodes.lock().unwrap().len()
    }

    // ---- names ----

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let parent = self.node(parent)?;
        let node = self.child(&parent, name)?;
        self.remember_node(&node);
        self.attr(&node)
    }

    /// Names resolve through the namespace, except inside recover/ directories.
    fn child(&self, parent: &Node, name: &str) -> FsResult<Node> {
        if let Node::Recover(scope) = parent {
            self.ns.check_scope(scope)?;
            return self
                .recover
                .lookup(scope, name)
                .map(|_| Node::RecoverEntry(scope.clone(), name.to_string()))
                .ok_or(FsError::NotFound);
        }
        if let Node::Snapshots(scope) = parent {
            self.ns.check_scope(scope)?;
            self.stored.entry(scope, name)?;
            return Ok(Node::Stored(scope.clone(), name.to_string()));
        }
        if matches!(
            parent,
            Node::Cluster(_) | Node::Generation(..) | Node::GenerationCollection(..)
        ) {
            return self.cluster_dirs()?.child(parent, name);
        }
        self.ns.child(parent, name)
    }

    fn children(&self, node: &Node) -> FsResult<Vec<(String, Node)>> {
        if let Node::Recover(scope) = node {
            self.ns.check_scope(scope)?;
            return Ok(self
                .recover
                .entries(scope)
                .into_iter()
                .map(|(name, _)| (name.clone(), Node::RecoverEntry(scope.clone(), name)))
                .collect());
        }
        if let Node::Snapshots(scope) = node {
            self.ns.check_scope(scope)?;
            return Ok(self
                .stored
                .entries(scope)?
                .iter()
                .map(|(name, _)| (name.clone(), Node::Stored(scope.clone(), name.clone())))
                .collect());
        }
        if matches!(
            node,
            Node::Cluster(_) | Node::Generation(..) | Node::GenerationCollection(..)
        ) {
            return self.cluster_dirs()?.children(node);
        }
        self.ns.children(node)
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Attr> {
        if let Some(fh) = fh
            && let Ok(handle) = self.handles.get(fh)
        {
            match &*handle {
                Handle::Live(live) => {
                    return Ok(file_attr(ino, live.view.size(), live.view.mtime(), true));
                }
                Handle::Bytes { data, mtime } => {
                    return Ok(file_attr(ino, data.len() as u64, *mtime, true));
                }
                Handle::Stored { size, mtime, .. } => {
                    return Ok(file_attr(ino, *size, *mtime, false));
                }
                _ => {}
            }
        }
        self.attr(&self.node(ino)?)
    }

    fn attr(&self, node: &Node) -> FsResult<Attr> {
        let ino = node.ino();
        if node.is_dir() {
            match node {
                Node::Cluster(_) | Node::Generation(..) | Node::GenerationCollection(..) => {
                    self.cluster_dirs()?.check_dir(node)?
                }
                _ => self.ns.check_dir(node)?,
            }
            // Stored-snapshot directories allow rm, collection recover/ directories
            // take writes; the rest is read-only.
            let writable = matches!(node, Node::Snapshots(_) | Node::Recover(_));
            let perm = if writable { 0o755 } else { 0o555 };
            return Ok(Attr {
                ino,
                kind: FileKind::Directory,
                size: 0,
                blocks: 0,
                mtime: self.started,
                perm,
                nlink: 2,
                volatile: false,
                owner: None,
            });
        }
        match node {
            Node::Readme => Ok(Attr {
                volatile: false,
                ..file_attr(ino, texts::README_TEXT.len() as u64, self.started, false)
            }),
            Node::BackupStatus(p) => Ok(file_attr(
                ino,
                self.backup_status(p)?.len() as u64,
                SystemTime::now(),
                true,
            )),
            Node::Metrics => Ok(file_attr(
                ino,
                metrics::render(&self.ns.storage().collection_names()).len() as u64,
                SystemTime::now(),
                true,
            )),
            Node::Info(c) => {
                let collection = self.ns.storage().collection(c)?;
                let text = texts::info_json(self.ns.snapshots(), &collection)?;
                Ok(file_attr(
                    ino,
                    text.len() as u64,
                    collection.last_change(),
                    true,
                ))
            }
            Node::Live(scope) => {
                let state = self.live_state(scope)?;
                Ok(file_attr(ino, state.size, state.mtime, true))
            }
            Node::Manifest(c, id) => {
                let (text, mtime) = self.manifest_json(c, *id)?;
                Ok(file_attr(ino, text.len() as u64, mtime, true))
            }
            Node::LiveChecksum(c) => {
                let state = self.live_state(&Scope::Collection(c.clone()))?;
                Ok(file_attr(
                    ino,
                    checksum_line(c, "").len() as u64 + 64,
                    state.mtime,
                    true,
                ))
            }
            Node::RecoverEntry(scope, name) => {
                let kind = self.recover.lookup(scope, name).ok_or(FsError::NotFound)?;
                let (size, perm) = match &kind {
                    EntryKind::Upload { size } | EntryKind::Sidecar { size } => (*size, 0o644),
                    EntryKind::Error { text } => (text.len() as u64, 0o444),
                };
                Ok(Attr {
                    perm,
                    owner: self.recover.owner(scope, name),
                    ..file_attr(ino, size, SystemTime::now(), true)
                })
            }
            Node::Stored(scope, name) => {
                let entry = self.stored.entry(scope, name)?;
                Ok(file_attr(ino, entry.size(), entry.mtime(), false))
            }
            Node::GenerationFile(c, g, f) => {
                let (text, at) = self.cluster_dirs()?.text(c, g, f)?;
                Ok(file_attr(ino, text.len() as u64, at, false))
            }
            Node::GenerationShard(c, g, x, id) => {
                let (size, at) = self.cluster_dirs()?.shard_attr(c, g, x, *id)?;
                Ok(file_attr(ino, size, at, false))
            }
            _ => Err(FsError::io(format!("no attributes for {node:?}"))),
        }
    }

    /// A shard's partial-snapshot manifest (Qdrant's form) as the file shows it,
    /// and the shard's last change: from the manifest cache while the shard is
    /// unchanged, otherwise from a short freeze.
    fn manifest_json(&self, collection: &str, id: u32) -> FsResult<(Vec<u8>, SystemTime)> {
        let found =
            crate::snapshot::partial::manifests(self.ns.snapshots(), collection, id, false)?;
        let last_change = self
            .ns
            .storage()
            .collection(collection)?
            .shard(id)?
            .last_change();
        let mut text =
            serde_json::to_vec_pretty(&found.versions).map_err(|e| FsError::io(e.to_string()))?;
        text.push(b'\n');
        Ok((text, last_change))
    }

    // ---- directories ----

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(FsError::NotADirectory);
        }
        let parent_ino = ROOT_INO; // `..` is resolved by the kernel; any valid inode will do
        let mut entries = vec![
            DirEntry {
                ino,
                is_dir: true,
                name: ".".into(),
            },
            DirEntry {
                ino: parent_ino,
                is_dir: true,
                name: "..".into(),
            },
        ];
        for (name, child) in self.children(&node)? {
            // A listing gives the kernel no lookup: it looks names up before use.
            entries.push(DirEntry {
                ino: child.ino(),
                is_dir: child.is_dir(),
                name,
            });
        }
        Ok(self.handles.insert(Handle::Dir(entries)))
    }

    /// Entries from `offset` on (offset i = the i-th entry).
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        match &*self.handles.get(fh)? {
            Handle::Dir(entries) => Ok(entries.iter().skip(offset as usize).cloned().collect()),
            _ => Err(FsError::NotADirectory),
        }
    }

    // ---- files ----

    pub fn open(&self, ino: u64, write: bool) -> FsResult<Opened> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(FsError::IsADirectory);
        }
        if write {
            return Err(FsError::ReadOnly(
                "snapshots are written only into recover/ directories",
            ));
        }
        let bytes = |data: Vec<u8>, mtime: SystemTime| Opened {
            fh: self.handles.insert(Handle::Bytes {
                data: data.into(),
                mtime,
            }),
            direct_io: true,
            keep_cache: false,
            backing: None,
        };
        match node {
            Node::Live(scope) => {
                let view = SnapshotView::open(self.ns.snapshots(), scope.clone())?;
                let state = self.remember_state(&scope, &view)?;
                // The key read now is the view's own only while it is frozen; a view
                // shared after a copy aside holds an older state than any key now.
                let key = if view.is_frozen() {
                    state.key
                } else {
                    live::PAST_STATE.to_vec()
                };
                let (cached, keep_cache) = self.enter_cache(ino, view.layout().fingerprint(), key);
                let mut live = LiveRead::new(view, scope);
                live.cached_ino = cached.then_some(ino);
                let fh = self.handles.insert(Handle::Live(Box::new(live)));
                Ok(Opened {
                    fh,
                    direct_io: !cached,
                    keep_cache,
                    backing: None,
                })
            }
            Node::LiveChecksum(c) => {
                let scope = Scope::Collection(c.clone());
                let view = SnapshotView::open(self.ns.snapshots(), scope.clone())?;
                let state = self.remember_state(&scope, &view)?;
                let digest = view.sha256()?;
                Ok(bytes(
                    checksum_line(&c, &hex(&digest)).into_bytes(),
                    state.mtime,
                ))
            }
            Node::Manifest(c, id) => {
                let (text, mtime) = self.manifest_json(&c, id)?;
                Ok(bytes(text, mtime))
            }
            Node::Readme => Ok(bytes(texts::README_TEXT.as_bytes().to_vec(), self.started)),
            Node::RecoverEntry(scope, name) => match self.recover.lookup(&scope, &name) {
                Some(EntryKind::Error { text }) => Ok(bytes(text.into_bytes(), SystemTime::now())),
                Some(_) => Err(FsError::NotPermitted(
                    "uploads and sidecars in recover/ cannot be read back",
                )),
                None => Err(FsError::NotFound),
            },
            Node::BackupStatus(p) => Ok(bytes(self.backup_status(&p)?, SystemTime::now())),
            Node::Metrics => Ok(bytes(
                metrics::render(&self.ns.storage().collection_names()).into_bytes(),
                SystemTime::now(),
            )),
            Node::Info(c) => {
                let collection = self.ns.storage().collection(&c)?;
                Ok(bytes(
                    texts::info_json(self.ns.snapshots(), &collection)?,
                    collection.last_change(),
                ))
            }
            Node::GenerationFile(c, g, f) => {
                let (text, at) = self.cluster_dirs()?.text(&c, &g, &f)?;
                Ok(bytes(text, at))
            }
            Node::GenerationShard(c, g, x, id) => {
                let (opened, at) = self.cluster_dirs()?.open_shard(&c, &g, &x, id)?;
                let backing = opened.reader.file().and_then(|f| f.try_clone().ok());
                Ok(Opened {
                    fh: self.handles.insert(Handle::Stored {
                        reader: opened.reader,
                        size: opened.snapshot.size,
                        mtime: at,
                    }),
                    direct_io: false,
                    keep_cache: false,
                    backing,
                })
            }
            Node::Stored(scope, name) => match self.stored.entry(&scope, &name)? {
                stored::StoredEntry::Checksum { text, mtime } => {
                    Ok(bytes(text.into_bytes(), mtime))
                }
                stored::StoredEntry::Snapshot { .. } => {
                    let opened = self.stored.open(&scope, &name)?;
                    // A plain file is read by the kernel itself (passthrough).
                    let backing = opened.reader.file().and_then(|f| f.try_clone().ok());
                    Ok(Opened {
                        fh: self.handles.insert(Handle::Stored {
                            reader: opened.reader,
                            size: opened.snapshot.size,
                            mtime: opened.snapshot.modified,
                        }),
                        direct_io: false,
                        keep_cache: false,
                        backing,
                    })
                }
            },
            _ => Err(FsError::IsADirectory),
        }
    }

    /// Read up to `buf.len()` bytes at `offset`; returns how many (0 at the end).
    /// `sent` is called with the bytes read (out of `buf`, or in place from a frozen
    /// file's mapping: no copy).
    pub fn read(
        &self,
        fh: u64,
        offset: u64,
        buf: &mut [u8],
        sent: impl FnOnce(&[u8]),
    ) -> FsResult<()> {
        let handle = self.handles.get(fh)?;
        match &*handle {
            Handle::Live(live) => {
                let layout = live.view.layout();
                // Most reads lie in one engine file: the reply goes out of its
                // mapping, one copy fewer than reading it into `buf` first.
                let mut sent = Some(sent);
                let n = match layout.with_slice(offset, buf.len(), |data| {
                    sent.take().unwrap()(data);
                    data.len()
                }) {
                    Some(n) => n,
                    None => {
                        let n = layout.read_at(offset, buf).map_err(FsError::Io)?;
                        sent.take().unwrap()(&buf[..n]);
                        n
                    }
                };
                metrics::bytes_streamed(metrics::Via::Fuse, n as u64);
                if n > 0
                    && offset + n as u64 == layout.size()
                    && !live.finished.swap(true, Ordering::Relaxed)
                {
                    metrics::snapshot_created(scope_id(&live.scope));
                }
                Ok(())
            }
            Handle::Stored { reader, .. } => {
                let n = reader.read_at(offset, buf)?;
                sent(&buf[..n]);
                Ok(())
            }
            Handle::Bytes { data, .. } => {
                let start = (offset as usize).min(data.len());
                let end = (start + buf.len()).min(data.len());
                sent(&data[start..end]);
                Ok(())
            }
            Handle::Dir(_) => Err(FsError::IsADirectory),
            Handle::Upload(_) => Err(FsError::Invalid("an upload is write-only")),
        }
    }

    /// Close `fh` (files and directories alike). A live view ends with its last reader.
    pub fn release(&self, fh: u64) {
        let Some(handle) = self.handles.remove(fh) else {
            return;
        };
        match &*handle {
            Handle::Live(live) => {
                if let Some(ino) = live.cached_ino
                    && let Some(state) = self.cached_states.lock().unwrap().get_mut(&ino)
                {
                    state.open = state.open.saturating_sub(1);
                }
            }
            // A hidden upload is complete and waits for its rename; a visible one
            // was handed on at flush (or, never flushed with data, is abandoned).
            Handle::Upload(upload) if recover::is_hidden(&upload.name) => {
                self.recover.closed_hidden(upload);
            }
            Handle::Upload(upload) if !upload.done.load(Ordering::SeqCst) => {
                if upload.written() == 0 {
                    self.recover.closed_empty(upload);
                } else {
                    self.recover.abandon(upload);
                }
            }
            _ => {}
        }
    }

    // ---- changes ----

    /// `rm`: only stored snapshots (together with their `.checksum`).
    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        let parent = self.node(parent)?;
        if let Node::Recover(scope) = &parent {
            return self.recover.remove(scope, name);
        }
        let node = self.child(&parent, name)?;
        let Node::Stored(scope, name) = node else {
            return Err(FsError::ReadOnly(
                "only stored snapshots can be deleted (collections: use the HTTP API)",
            ));
        };
        self.stored.delete(&scope, &name)?;
        tracing::info!(snapshot = %name, scope = ?scope, "stored snapshot deleted through the mount");
        Ok(())
    }

    /// What a change anywhere in the mount gets: only `rm` of stored snapshots is
    /// allowed; everything else is read-only.
    pub fn refuse_change(&self, parent_or_node: u64) -> FsError {
        match self.node(parent_or_node) {
            Err(err) => err,
            Ok(Node::Recover(_)) => {
                FsError::ReadOnly("recover/ takes snapshot files only: write one, or rm an .error")
            }
            Ok(_) => FsError::ReadOnly("this part of the mount is read-only"),
        }
    }

    pub fn access(&self, ino: u64, mask: AccessMask) -> FsResult<()> {
        let node = self.node(ino)?;
        if mask.write
            && !matches!(
                node,
                Node::Snapshots(_) | Node::Recover(_) | Node::RecoverEntry(..)
            )
        {
            return Err(self.refuse_change(ino));
        }
        Ok(())
    }

    pub fn statfs(&self) -> FsResult<FsStats> {
        let stats = crate::storage::filesystem_stats(&self.snapshots_path)?;
        Ok(FsStats {
            blocks: stats.f_blocks,
            bfree: stats.f_bfree,
            bavail: stats.f_bavail,
            files: stats.f_files,
            ffree: stats.f_ffree,
            bsize: stats.f_bsize as u32,
            namelen: 255,
        })
    }
}

fn file_attr(ino: u64, size: u64, mtime: SystemTime, volatile: bool) -> Attr {
    Attr {
        ino,
        kind: FileKind::File,
        size,
        blocks: size.div_ceil(512),
        mtime: mtime.max(UNIX_EPOCH),
        perm: 0o444,
        nlink: 1,
        volatile,
        owner: None,
    }
}

/// `sha256sum` format: `<hex>  <c>.snapshot\n`.
fn checksum_line(collection: &str, hex: &str) -> String {
    format!("{hex}  {collection}{SNAPSHOT_EXT}\n")
}

/// The collection a snapshot belongs to, for metric labels ("" for full storage).
fn scope_id(scope: &Scope) -> &str {
    match scope {
        Scope::Collection(c) | Scope::Shard(c, _) => c,
        Scope::Full => "",
    }
}

#[cfg(test)]
mod tests;
