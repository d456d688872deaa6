//! A collection: its Qdrant-schema config, its shards (one directory and one
//! writer each) and the router that sends every point to its shard.
//!
//! Updates are checked against the config *before* they are queued, because a
//! queued update may be acknowledged before it is applied (during a freeze) and
//! must not fail afterwards. A batch is dispatched to all its shards under the
//! collection's dispatch lock, and a collection freeze places its cut in every shard
//! under the same lock, so a snapshot never holds half of a batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use qdrant_edge::{
    EdgeConfig, Filter, JsonPath, PayloadFieldSchema, PayloadIndexInfo, PointId,
    PointStructPersisted,
};

use super::collection_config::CollectionConfig;
use super::error::{Result, StorageError};
use super::ops::ShardOp;
use super::router::ShardRouter;
use super::shard::{Load, Shard, Waiting};

mod checks;
mod freeze;
mod reads;

use checks::check_filter;
use reads::add_payload_schema;

pub use freeze::CollectionFreeze;
pub use reads::{
    CollectionStats, NearestQuery, QueryVector, ReadOptions, ScrollPage, payload_schema_of,
};

pub const CONFIG_FILE: &str = "config.json";

pub struct Collection {
    name: String,
    dir: PathBuf,
    config: CollectionConfig,
    shards: Vec<ShardSlot>,
    router: ShardRouter,
    /// Shared by update dispatch, exclusive for a freeze's cut and a shard switch.
    dispatch: RwLock<()>,
    /// Shut down: closed for good (the daemon stops, or a restore replaced it).
    closed: std::sync::atomic::AtomicBool,
}

/// Where shard `id` lives: the shard serving it now. A read holds the slot's read
/// guard while it asks the engine; a switch (a restore or a partial apply of that
/// shard) takes the write guard, so reads wait for the switch instead of failing,
/// and never read a closed engine.
struct ShardSlot(RwLock<Arc<Shard>>);

impl ShardSlot {
    fn read(&self) -> RwLockReadGuard<'_, Arc<Shard>> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Arc<Shard>> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn shard_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(id.to_string())
}

/// Updates acknowledged during a freeze wait here; outside the shard directory,
/// whose files the snapshot is reading.
fn pending_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.pending"))
}

impl Collection {
    /// Create the collection's files in `dir` (which must not exist yet).
    pub fn create(dir: &Path, name: &str, config: CollectionConfig) -> Result<Self> {
        config.validate()?;
        config.edge_config()?; // fail before touching the disk
        fs_err::create_dir_all(dir)?;
        let json = serde_json::to_vec(&config).map_err(StorageError::from_cause)?;
        fs_err::write(dir.join(CONFIG_FILE), json)?;
        Self::assemble(dir, name, config, Shard::create)
    }

    pub fn open(dir: &Path, name: &str) -> Result<Self> {
        Self::assemble(dir, name, read_config(dir)?, Shard::open)
    }

    /// Open a restored collection where it will live, for the first time: each
    /// shard loaded as a restore's ([`Load::Restore`]: the archive's state time stays).
    pub fn open_restored(dir: &Path, name: &str) -> Result<Self> {
        Self::assemble(dir, name, read_config(dir)?, |id, path, pending, edge| {
            Shard::open_after(id, path, pending, edge, Waiting::new(), Load::Restore)
        })
    }

    /// Create or open (`make_shard`) every shard, then the collection around them.
    fn assemble(
        dir: &Path,
        name: &str,
        config: CollectionConfig,
        make_shard: fn(u32, &Path, &Path, EdgeConfig) -> Result<Shard>,
    ) -> Result<Self> {
        let edge = config.edge_config()?;
        let shards = (0..config.shard_count())
            .map(|id| {
                make_shard(
                    id,
                    &shard_dir(dir, id),
                    &pending_path(dir, id),
                    edge.clone(),
                )
                .map(|shard| ShardSlot(RwLock::new(Arc::new(shard))))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Collection {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            router: ShardRouter::new(config.shard_count()),
            config,
            shards,
            dispatch: RwLock::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    /// The shards serving now, by id.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards.iter().map(|slot| slot.read().clone()).collect()
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The last change to any of the collection's files.
    pub fn last_change(&self) -> SystemTime {
        self.shards()
            .iter()
            .map(|shard| shard.last_change())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Shard `id` as it serves now.
    pub fn shard(&self, id: u32) -> Result<Arc<Shard>> {
        Ok(self.slot(id)?.read().clone())
    }

    fn slot(&self, id: u32) -> Result<&ShardSlot> {
        self.shards.get(id as usize).ok_or_else(|| {
            StorageError::NotFound(format!(
                "Shard {id} of collection `{}` not found",
                self.name
            ))
        })
    }

    /// Hold off updates and new freezes of this collection while the guard lives (a
    /// shard switch).
    pub(crate) fn pause_dispatch(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.dispatch
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shard `id`'s slot, exclusively: no read runs on the shard while it is held.
    pub(crate) fn shard_slot_mut(&self, id: u32) -> Result<RwLockWriteGuard<'_, Arc<Shard>>> {
        Ok(self.slot(id)?.write())
    }

    /// Shard `id`'s directory and pending log.
    pub(crate) fn shard_files(&self, id: u32) -> (PathBuf, PathBuf) {
        (shard_dir(&self.dir, id), pending_path(&self.dir, id))
    }

    /// Run a read on shard `id`, holding it so a switch waits for the read to end.
    fn read_shard<T>(&self, id: u32, read: impl FnOnce(&Shard) -> Result<T>) -> Result<T> {
        let shard = self.slot(id)?.read();
        read(&shard)
    }

    pub fn shard_for(&self, id: &PointId) -> u32 {
        self.router.shard_for(id)
    }
    // ---- updates ----

    pub async fn upsert(&self, points: Vec<PointStructPersisted>, wait: bool) -> Result<()> {
        for point in &points {
            self.check_point(point)?;
        }
        let mut by_shard: BTreeMap<u32, Vec<PointStructPersisted>> = BTreeMap::new();
        for point in points {
            by_shard
                .entry(self.router.shard_for(&point.id))
                .or_default()
                .push(point);
        }
        self.dispatch(
            by_shard
                .into_iter()
                .map(|(s, p)| (s, ShardOp::Upsert(p)))
                .collect(),
            wait,
        )
        .await
    }

    pub async fn delete(&self, ids: Vec<PointId>, wait: bool) -> Result<()> {
        let mut by_shard: BTreeMap<u32, Vec<PointId>> = BTreeMap::new();
        for id in ids {
            by_shard
                .entry(self.router.shard_for(&id))
                .or_default()
                .push(id);
        }
        self.dispatch(
            by_shard
                .into_iter()
                .map(|(s, ids)| (s, ShardOp::Delete(ids)))
                .collect(),
            wait,
        )
        .await
    }

    pub async fn delete_by_filter(&self, filter: Filter, wait: bool) -> Result<()> {
        check_filter(Some(&filter))?;
        let ops = (0..self.shard_count())
            .map(|id| (id, ShardOp::DeleteByFilter(filter.clone())))
            .collect();
        self.dispatch(ops, wait).await
    }

    /// Index payload field `field` on every shard (Qdrant's `PUT …/index`).
    pub async fn create_index(
        &self,
        field: JsonPath,
        schema: PayloadFieldSchema,
        wait: bool,
    ) -> Result<()> {
        let schema = schema.normalized();
        schema
            .validate_for_field(&field)
            .map_err(|e| StorageError::bad_request(format!("Wrong input: {e}")))?;
        let ops = (0..self.shard_count())
            .map(|id| {
                let op = ShardOp::CreateIndex {
                    field_name: field.clone(),
                    field_schema: Box::new(schema.clone()),
                };
                (id, op)
            })
            .collect();
        self.dispatch(ops, wait).await
    }

    /// Drop the index of payload field `field` on every shard.
    pub async fn delete_index(&self, field: JsonPath, wait: bool) -> Result<()> {
        let ops = (0..self.shard_count())
            .map(|id| (id, ShardOp::DeleteIndex(field.clone())))
            .collect();
        self.dispatch(ops, wait).await
    }

    /// The indexed payload fields, as Qdrant's `payload_schema` shows them: per field
    /// its type, parameters and the points indexed, summed over the shards.
    pub fn payload_schema(&self) -> Result<BTreeMap<String, PayloadIndexInfo>> {
        let mut schema = BTreeMap::new();
        for id in 0..self.shard_count() {
            self.read_shard(id, |shard| add_payload_schema(&mut schema, shard))?;
        }
        Ok(schema)
    }

    async fn dispatch(&self, ops: Vec<(u32, ShardOp)>, wait: bool) -> Result<()> {
        let answers = {
            let _batch = self.dispatch.read().unwrap();
            ops.into_iter()
                .map(|(shard, op)| self.slot(shard)?.read().submit(op, wait))
                .collect::<Result<Vec<_>>>()?
        };
        for answer in answers {
            answer.await.map_err(|_| StorageError::ShuttingDown)??;
        }
        Ok(())
    }

    /// Stop every writer, flush, and close every engine: the collection's files
    /// may be moved or removed afterwards, even while views still hold it.
    pub fn shutdown(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let shards = self.shards();
        for shard in &shards {
            shard.shutdown();
        }
        for shard in &shards {
            if let Err(err) = shard.flush_at_shutdown() {
                tracing::error!(collection = %self.name, shard = shard.id(), %err, "flush at shutdown failed");
            }
            shard.close();
        }
    }
}

/// A collection directory's `config.json`, bounded and validated.
fn read_config(dir: &Path) -> Result<CollectionConfig> {
    let bytes = super::read_bounded(&dir.join(CONFIG_FILE), super::MAX_JSON_FILE)?;
    let config: CollectionConfig = serde_json::from_slice(&bytes).map_err(|e| {
        StorageError::internal_from(format!("{}: invalid config.json", dir.display()), e)
    })?;
    config.validate()?;
    Ok(config)
}
