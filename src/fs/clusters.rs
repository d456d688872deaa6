//! `clusters/`: the generations of followed Qdrant clusters, read-only.
//!
//! ```text
//! clusters/<cluster>/<generation>/manifest.json      the generation's manifest
//! clusters/<cluster>/<generation>/SHA256SUMS         `sha256sum -c` lines for the archives
//! clusters/<cluster>/<generation>/<collection>/<shard>.snapshot   a Qdrant shard archive
//! ```
//!
//! The tree is the manifests' (kept as records of the snapshot store); a shard file
//! reads the stored shard snapshot the manifest names. Manifests are read through a
//! short cache (a listing of a repository is a read of every snapshot file).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::error::{FsError, FsResult};
use super::namespace::Node;
use crate::cluster::ClusterManifest;
use crate::service::Service;
use crate::snapshot::store::OpenedSnapshot;

/// The manifest's file name in a generation's directory.
pub const GENERATION_MANIFEST: &str = "manifest.json";
/// The checksums file, in `sha256sum` format.
pub const SUMS: &str = "SHA256SUMS";
const TTL: Duration = Duration::from_secs(2);

type Listing = (Instant, Arc<Vec<ClusterManifest>>);

pub struct ClusterDirs {
    service: Arc<Service>,
    cache: Mutex<HashMap<String, Listing>>,
}

impl ClusterDirs {
    pub fn new(service: Arc<Service>) -> ClusterDirs {
        ClusterDirs {
            service,
            cache: Mutex::default(),
        }
    }

    /// `cluster`'s generations (cached briefly); blocking.
    fn manifests(&self, cluster: &str) -> FsResult<Arc<Vec<ClusterManifest>>> {
        if let Some((at, all)) = self.cache.lock().unwrap().get(cluster)
            && at.elapsed() < TTL
        {
            return Ok(all.clone());
        }
        self.service.follow.cluster(cluster)?;
        let all = Arc::new(crate::service::follow::manifests_blocking(
            &*self.service.store,
            cluster,
        )?);
        self.cache
            .lock()
            .unwrap()
            .insert(cluster.to_string(), (Instant::now(), all.clone()));
        Ok(all)
    }

    fn manifest(&self, cluster: &str, generation: &str) -> FsResult<ClusterManifest> {
        self.manifests(cluster)?
            .iter()
            .find(|m| m.generation == generation)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    /// The entries of a cluster directory.
    pub fn children(&self, node: &Node) -> FsResult<Vec<(String, Node)>> {
        let mut out: Vec<(String, Node)> = match node {
            Node::Cluster(c) => self
                .manifests(c)?
                .iter()
                .map(|m| {
                    (
                        m.generation.clone(),
                        Node::Generation(c.clone(), m.generation.clone()),
                    )
                })
                .collect(),
            Node::Generation(c, g) => {
                let manifest = self.manifest(c, g)?;
                let mut entries = vec![
                    (
                        GENERATION_MANIFEST.to_string(),
                        Node::GenerationFile(c.clone(), g.clone(), GENERATION_MANIFEST.into()),
                    ),
                    (
                        SUMS.to_string(),
                        Node::GenerationFile(c.clone(), g.clone(), SUMS.into()),
                    ),
                ];
                for collection in &manifest.collections {
                    entries.push((
                        collection.name.clone(),
                        Node::GenerationCollection(c.clone(), g.clone(), collection.name.clone()),
                    ));
                }
                entries
            }
            Node::GenerationCollection(c, g, name) => {
                let manifest = self.manifest(c, g)?;
                let collection = manifest
                    .collections
                    .iter()
                    .find(|x| &x.name == name)
                    .ok_or(FsError::NotFound)?;
                collection
                    .shards
                    .iter()
                    .map(|s| {
                        (
                            format!("{}.snapshot", s.shard_id),
                            Node::GenerationShard(c.clone(), g.clone(), name.clone(), s.shard_id),
                        )
                    })
                    .collect()
            }
            _ => return Err(FsError::NotADirectory),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub fn child(&self, parent: &Node, name: &str) -> FsResult<Node> {
        super::namespace::find_child(self.children(parent)?, name)
    }

    /// A generation directory still exists.
    pub fn check_dir(&self, node: &Node) -> FsResult<()> {
        match node {
            Node::Cluster(c) => self.manifests(c).map(|_| ()),
            Node::Generation(c, g) => self.manifest(c, g).map(|_| ()),
            Node::GenerationCollection(c, g, name) => {
                let manifest = self.manifest(c, g)?;
                manifest
                    .collections
                    .iter()
                    .any(|x| &x.name == name)
                    .then_some(())
                    .ok_or(FsError::NotFound)
            }
            _ => Err(FsError::NotADirectory),
        }
    }

    /// When a generation's round ended.
    fn time_of(manifest: &ClusterManifest) -> SystemTime {
        crate::cluster::manifest::generation_time(&manifest.cluster, &manifest.generation)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// A generation's text file (`manifest.json`, `SHA256SUMS`) and its time.
    pub fn text(
        &self,
        cluster: &str,
        generation: &str,
        file: &str,
    ) -> FsResult<(Vec<u8>, SystemTime)> {
        let manifest = self.manifest(cluster, generation)?;
        let at = Self::time_of(&manifest);
        let text = match file {
            GENERATION_MANIFEST => {
                let mut text =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| FsError::io(e.to_string()))?;
                text.push(b'\n');
                text
            }
            SUMS => {
                let mut text = String::new();
                for collection in &manifest.collections {
                    for shard in &collection.shards {
                        text.push_str(&format!(
                            "{}  {}/{}.snapshot\n",
                            shard.sha256, collection.name, shard.shard_id
                        ));
                    }
                }
                text.into_bytes()
            }
            _ => return Err(FsError::NotFound),
        };
        Ok((text, at))
    }

    /// A shard archive's size and time.
    pub fn shard_attr(
        &self,
        cluster: &str,
        generation: &str,
        collection: &str,
        id: u32,
    ) -> FsResult<(u64, SystemTime)> {
        let manifest = self.manifest(cluster, generation)?;
        let shard = manifest
            .collections
            .iter()
            .find(|c| c.name == collection)
            .and_then(|c| c.shards.iter().find(|s| s.shard_id == id))
            .ok_or(FsError::NotFound)?;
        Ok((shard.size, Self::time_of(&manifest)))
    }

    /// The stored shard snapshot a generation names, opened for reading.
    pub fn open_shard(
        &self,
        cluster: &str,
        generation: &str,
        collection: &str,
        id: u32,
    ) -> FsResult<(OpenedSnapshot, SystemTime)> {
        let manifest = self.manifest(cluster, generation)?;
        let record = manifest
            .collections
            .iter()
            .find(|c| c.name == collection)
            .ok_or(FsError::NotFound)?;
        let shard = record
            .shards
            .iter()
            .find(|s| s.shard_id == id)
            .ok_or(FsError::NotFound)?;
        let (scope, name) = crate::service::follow::shard_snapshot_scope(record, shard);
        let opened = self.service.store.open(&scope, &name)?;
        if opened.snapshot.size != shard.size {
            return Err(FsError::io(format!(
                "stored snapshot {name} is not the one generation {generation} recorded"
            )));
        }
        Ok((opened, Self::time_of(&manifest)))
    }
}
