//! The mount's namespace: which nodes exist (docs/SEMANTICS.md, "The mount"), their names, their paths
//! and inode numbers. Nothing here reads snapshot bytes; listings follow the storage
//! and the snapshots directory as they are at the moment of asking.

use std::hash::Hasher;
use std::sync::Arc;

use super::error::{FsError, FsResult};
use crate::snapshot::store::SNAPSHOT_EXT;
use crate::snapshot::{Scope, Snapshots};
use crate::storage::Storage;

pub const ROOT_INO: u64 = 1;
pub const README: &str = "README.txt";
pub const METRICS: &str = "metrics";
pub const STORAGE_SNAPSHOT: &str = "storage.snapshot";
pub const LIVE: &str = "live";
pub const RECOVER: &str = "recover";
pub const SNAPSHOTS: &str = "snapshots";
pub const COLLECTIONS: &str = "collections";
pub const INFO: &str = "info.json";
pub const SHARDS: &str = "shards";
/// `collections/<c>/shards/<id>/manifest.json`: the shard's partial-snapshot manifest.
pub const MANIFEST: &str = "manifest.json";
/// `live/<c>.snapshot.sha256`: the live snapshot's checksum in `sha256sum` format.
pub const SHA256_EXT: &str = ".sha256";
/// `backups/<policy>.json`: a backup policy's status (only with policies configured).
pub const BACKUPS: &str = "backups";
/// `clusters/<cluster>/<generation>/…`: followed clusters' generations (only with
/// clusters configured; see `fs::clusters`).
pub const CLUSTERS: &str = "clusters";

/// Every kind of node in the mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Readme,
    Metrics,
    LiveDir,
    /// A live snapshot file: `storage.snapshot` (Full), `live/<c>.snapshot`
    /// (Collection), `collections/<c>/shards/<id>/<c>-shard-<id>.snapshot` (Shard).
    Live(Scope),
    /// `live/<c>.snapshot.sha256`.
    LiveChecksum(String),
    /// A `recover/` directory: the top-level one (Full: takes `<c>.snapshot`), a
    /// collection's, or a shard's.
    Recover(Scope),
    /// A file in a `recover/` directory (an upload, a sidecar, an `.error`).
    RecoverEntry(Scope, String),
    /// A stored-snapshots directory and the files in it (`.snapshot`, `.checksum`).
    Snapshots(Scope),
    Stored(Scope, String),
    Collections,
    Collection(String),
    Info(String),
    Shards(String),
    Shard(String, u32),
    /// `collections/<c>/shards/<id>/manifest.json`.
    Manifest(String, u32),
    /// `backups/` and `backups/<policy>.json`.
    Backups,
    BackupStatus(String),
    /// `clusters/`, `clusters/<cluster>/`, `clusters/<cluster>/<generation>/`, a
    /// generation's text file (`manifest.json`, `SHA256SUMS`), a collection's
    /// directory in it and a shard archive (`<shard>.snapshot`).
    Clusters,
    Cluster(String),
    Generation(String, String),
    GenerationFile(String, String, String),
    GenerationCollection(String, String, String),
    GenerationShard(String, String, String, u32),
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Node::Root
                | Node::LiveDir
                | Node::Recover(_)
                | Node::Snapshots(_)
                | Node::Collections
                | Node::Collection(_)
                | Node::Shards(_)
                | Node::Shard(..)
                | Node::Backups
                | Node::Clusters
                | Node::Cluster(_)
                | Node::Generation(..)
                | Node::GenerationCollection(..)
        )
    }

    /// The path inside the mount, without a leading slash ("" for the root).
    pub fn path(&self) -> String {
        let collection = |c: &str| format!("{COLLECTIONS}/{c}");
        let shard = |c: &str, id: u32| format!("{COLLECTIONS}/{c}/{SHARDS}/{id}");
        let scope_path = |scope: &Scope| match scope {
            Scope::Full => String::new(),
            Scope::Collection(c) => collection(c),
            Scope::Shard(c, id) => shard(c, *id),
        };
        let join = |dir: String, name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        match self {
            Node::Root => String::new(),
            Node::Readme => README.into(),
            Node::Metrics => METRICS.into(),
            Node::LiveDir => LIVE.into(),
            Node::Live(Scope::Full) => STORAGE_SNAPSHOT.into(),
            Node::Live(Scope::Collection(c)) => format!("{LIVE}/{c}{SNAPSHOT_EXT}"),
            Node::Live(Scope::Shard(c, id)) => join(shard(c, *id), &live_shard_name(c, *id)),
            Node::LiveChecksum(c) => format!("{LIVE}/{c}{SNAPSHOT_EXT}{SHA256_EXT}"),
            Node::Recover(scope) => join(scope_path(scope), RECOVER),
            Node::RecoverEntry(scope, name) => join(join(scope_path(scope), RECOVER), name),
            Node::Snapshots(scope) => join(scope_path(scope), SNAPSHOTS),
            Node::Stored(scope, name) => join(join(scope_path(scope), SNAPSHOTS), name),
            Node::Collections => COLLECTIONS.into(),
            Node::Collection(c) => collection(c),
            Node::Info(c) => join(collection(c), INFO),
            Node::Shards(c) => join(collection(c), SHARDS),
            Node::Shard(c, id) => shard(c, *id),
            Node::Manifest(c, id) => join(shard(c, *id), MANIFEST),
            Node::Backups => BACKUPS.into(),
            Node::BackupStatus(p) => format!("{BACKUPS}/{p}.json"),
            Node::Clusters => CLUSTERS.into(),
            Node::Cluster(c) => format!("{CLUSTERS}/{c}"),
            Node::Generation(c, g) => format!("{CLUSTERS}/{c}/{g}"),
            Node::GenerationFile(c, g, f) => format!("{CLUSTERS}/{c}/{g}/{f}"),
            Node::GenerationCollection(c, g, x) => format!("{CLUSTERS}/{c}/{g}/{x}"),
            Node::GenerationShard(c, g, x, id) => {
                format!("{CLUSTERS}/{c}/{g}/{x}/{id}{SNAPSHOT_EXT}")
            }
        }
    }

    /// A stable inode number from the node's path (the same across restarts), never
    /// 0 (invalid) or 1 (the root).
    pub fn ino(&self) -> u64 {
        if *self == Node::Root {
            return ROOT_INO;
        }
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0x736e_6170, 0x6673);
        hasher.write(self.path().as_bytes());
        hasher.finish().max(ROOT_INO + 1)
    }
}

/// Entry `name` among a directory's `children` (a name with `/`, or none, is none).
pub fn find_child(children: Vec<(String, Node)>, name: &str) -> FsResult<Node> {
    if name.contains('/') || name.is_empty() {
        return Err(FsError::NotFound);
    }
    children
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, node)| node)
        .ok_or(FsError::NotFound)
}

pub fn live_shard_name(collection: &str, id: u32) -> String {
    format!("{collection}-shard-{id}{SNAPSHOT_EXT}")
}

/// Resolves names to nodes and lists directories against the current storage.
pub struct Namespace {
    snapshots: Arc<Snapshots>,
    /// The backup policies' names (fixed at start).
    policies: Vec<String>,
    /// The followed clusters' names (fixed at start).
    clusters: Vec<String>,
}

impl Namespace {
    pub fn new(snapshots: Arc<Snapshots>) -> Self {
        Namespace {
            snapshots,
            policies: Vec::new(),
            clusters: Vec::new(),
        }
    }

    /// Show `clusters/` with a directory per followed cluster.
    pub fn with_clusters(mut self, clusters: Vec<String>) -> Self {
        self.clusters = clusters;
        self
    }

    /// Show `backups/` with a status file per policy.
    pub fn with_policies(mut self, policies: Vec<String>) -> Self {
        self.policies = policies;
        self
    }

    pub fn storage(&self) -> &Arc<Storage> {
        self.snapshots.storage()
    }

    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// The entries of directory `node`, sorted by name.
    pub fn children(&self, node: &Node) -> FsResult<Vec<(String, Node)>> {
        let mut out: Vec<(String, Node)> = match node {
            Node::Root => {
                let mut root = vec![
                    (README.into(), Node::Readme),
                    (METRICS.into(), Node::Metrics),
                    (STORAGE_SNAPSHOT.into(), Node::Live(Scope::Full)),
                    (LIVE.into(), Node::LiveDir),
                    (RECOVER.into(), Node::Recover(Scope::Full)),
                    (SNAPSHOTS.into(), Node::Snapshots(Scope::Full)),
                    (COLLECTIONS.into(), Node::Collections),
                ];
                if !self.policies.is_empty() {
                    root.push((BACKUPS.into(), Node::Backups));
                }
                if !self.clusters.is_empty() {
                    root.push((CLUSTERS.into(), Node::Clusters));
                }
                root
            }
            Node::Clusters => self
                .clusters
                .iter()
                .map(|c| (c.clone(), Node::Cluster(c.clone())))
                .collect(),
            Node::Backups => self
                .policies
                .iter()
                .map(|p| (format!("{p}.json"), Node::BackupStatus(p.clone())))
                .collect(),
            Node::LiveDir => self
                .storage()
                .collection_names()
                .into_iter()
                .flat_map(|c| {
                    [
                        (
                            format!("{c}{SNAPSHOT_EXT}"),
                            Node::Live(Scope::Collection(c.clone())),
                        ),
                        (
                            format!("{c}{SNAPSHOT_EXT}{SHA256_EXT}"),
                            Node::LiveChecksum(c),
                        ),
                    ]
                })
                .collect(),
            // What is in a recover/ directory is the core's (see `fs::recover`), and
            // what is in a snapshots/ directory the store's (see `fs::stored`).
            Node::Recover(scope) | Node::Snapshots(scope) => {
                self.check_scope(scope)?;
                Vec::new()
            }
            Node::Collections => self
                .storage()
                .collection_names()
                .into_iter()
                .map(|c| (c.clone(), Node::Collection(c)))
                .collect(),
            Node::Collection(c) => {
                self.check_scope(&Scope::Collection(c.clone()))?;
                let scope = Scope::Collection(c.clone());
                vec![
                    (INFO.into(), Node::Info(c.clone())),
                    (SNAPSHOTS.into(), Node::Snapshots(scope.clone())),
                    (RECOVER.into(), Node::Recover(scope)),
                    (SHARDS.into(), Node::Shards(c.clone())),
                ]
            }
            Node::Shards(c) => self
                .storage()
                .collection(c)?
                .shards()
                .iter()
                .map(|s| (s.id().to_string(), Node::Shard(c.clone(), s.id())))
                .collect(),
            Node::Shard(c, id) => {
                let scope = Scope::Shard(c.clone(), *id);
                self.check_scope(&scope)?;
                vec![
                    (live_shard_name(c, *id), Node::Live(scope.clone())),
                    (MANIFEST.into(), Node::Manifest(c.clone(), *id)),
                    (SNAPSHOTS.into(), Node::Snapshots(scope.clone())),
                    (RECOVER.into(), Node::Recover(scope)),
                ]
            }
            _ => return Err(FsError::NotADirectory),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The entry `name` of directory `parent`.
    pub fn child(&self, parent: &Node, name: &str) -> FsResult<Node> {
        find_child(self.children(parent)?, name)
    }

    /// Directory `node` still exists (without listing it: `stat` asks this often).
    pub fn check_dir(&self, node: &Node) -> FsResult<()> {
        match node {
            Node::Root | Node::LiveDir | Node::Collections | Node::Backups | Node::Clusters => {
                Ok(())
            }
            Node::Recover(scope) | Node::Snapshots(scope) => self.check_scope(scope),
            Node::Collection(c) | Node::Shards(c) => {
                self.check_scope(&Scope::Collection(c.clone()))
            }
            Node::Shard(c, id) => self.check_scope(&Scope::Shard(c.clone(), *id)),
            _ => Err(FsError::NotADirectory),
        }
    }

    /// The collection (and shard) a scope names still exist.
    pub fn check_scope(&self, scope: &Scope) -> FsResult<()> {
        match scope {
            Scope::Full => Ok(()),
            Scope::Collection(c) => self.storage().collection(c).map(|_| ()).map_err(Into::into),
            Scope::Shard(c, id) => self
                .storage()
                .collection(c)?
                .shard(*id)
                .map(|_| ())
                .map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let c = || "docs".to_string();
        let table = [
            (Node::Root, ""),
            (Node::Live(Scope::Full), "storage.snapshot"),
            (Node::Live(Scope::Collection(c())), "live/docs.snapshot"),
            (Node::LiveChecksum(c()), "live/docs.snapshot.sha256"),
            (
                Node::Live(Scope::Shard(c(), 2)),
                "collections/docs/shards/2/docs-shard-2.snapshot",
            ),
            (Node::Recover(Scope::Full), "recover"),
            (
                Node::Recover(Scope::Collection(c())),
                "collections/docs/recover",
            ),
            (
                Node::Snapshots(Scope::Shard(c(), 0)),
                "collections/docs/shards/0/snapshots",
            ),
            (
                Node::Stored(Scope::Full, "full-snapshot-x.snapshot".into()),
                "snapshots/full-snapshot-x.snapshot",
            ),
            (Node::Info(c()), "collections/docs/info.json"),
            (
                Node::Manifest(c(), 1),
                "collections/docs/shards/1/manifest.json",
            ),
        ];
        for (node, path) in table {
            assert_eq!(node.path(), path, "{node:?}");
        }
    }

    #[test]
    fn inodes_are_stable_and_distinct() {
        let a = Node::Live(Scope::Collection("a".into()));
        let b = Node::Live(Scope::Collection("b".into()));
        assert_eq!(a.ino(), Node::Live(Scope::Collection("a".into())).ino());
        assert_ne!(a.ino(), b.ino());
        assert!(a.ino() > ROOT_INO);
        assert_eq!(Node::Root.ino(), ROOT_INO);
    }
}
