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
    CountRequest, EdgeConfig, Filter, JsonPath, NamedQuery, PayloadFieldSchema, PayloadIndexInfo,
    PointId, PointStructPersisted, QueryEnum, QueryRequest, Record, RetrieveRequest, ScoredPoint,
    ScoringQuery, ScrollRequest, VectorInternal, VectorPersisted, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};

use super::collection_config::CollectionConfig;
use super::error::{Result, StorageError};
use super::ops::ShardOp;
use super::router::ShardRouter;
use super::shard::Shard;

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

/// What a read returns with each point.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub with_payload: WithPayloadInterface,
    pub with_vector: WithVector,
}

pub struct NearestQuery {
    /// Dense, sparse or a list of vectors (a multivector), for the vector `using`.
    pub vector: QueryVector,
    pub using: String,
    pub filter: Option<Filter>,
    pub limit: usize,
    pub offset: usize,
    pub score_threshold: Option<f32>,
    /// How the engine searches (beam size, exact search, quantization), as given.
    pub params: Option<qdrant_edge::SearchParams>,
    pub read: ReadOptions,
}

/// What a nearest-neighbour query looks near.
#[derive(Debug, Clone)]
pub enum QueryVector {
    Dense(Vec<f32>),
    Sparse(qdrant_edge::SparseVector),
    Multi(Vec<Vec<f32>>),
}

pub struct ScrollPage {
    pub points: Vec<Record>,
    pub next_page_offset: Option<PointId>,
}

pub struct CollectionStats {
    pub points_count: usize,
    pub segments_count: usize,
    pub indexed_vectors_count: usize,
    pub pending_updates: usize,
    pub frozen_shards: usize,
    pub optimizing_shards: usize,
    pub last_change: SystemTime,
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
        let bytes = super::read_bounded(&dir.join(CONFIG_FILE), super::MAX_JSON_FILE)?;
        let config: CollectionConfig = serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::internal_from(format!("{}: invalid config.json", dir.display()), e)
        })?;
        config.validate()?;
        Self::assemble(dir, name, config, Shard::open)
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

    /// Reject what the engine would reject later: vector names, kinds and sizes.
    fn check_point(&self, point: &PointStructPersisted) -> Result<()> {
        match &point.vector {
            VectorStructPersisted::Single(v) => self.check_vector("", VectorKind::Dense(v.len())),
            VectorStructPersisted::MultiDense(m) => self.check_vector("", VectorKind::Multi(m)),
            VectorStructPersisted::Named(named) => {
                for (name, vector) in named {
                    let kind = match vector {
                        VectorPersisted::Dense(v) => VectorKind::Dense(v.len()),
                        VectorPersisted::MultiDense(m) => VectorKind::Multi(m),
                        VectorPersisted::Sparse(sparse) => {
                            if sparse.indices.len() != sparse.values.len() {
                                return Err(StorageError::bad_request(format!(
                                    "Wrong input: sparse vector `{name}` has {} indices and {} values",
                                    sparse.indices.len(),
                                    sparse.values.len()
                                )));
                            }
                            let unique: std::collections::HashSet<_> =
                                sparse.indices.iter().collect();
                            if unique.len() != sparse.indices.len() {
                                return Err(StorageError::bad_request(format!(
                                    "Wrong input: sparse vector `{name}` repeats an index"
                                )));
                            }
                            VectorKind::Sparse
                        }
                    };
                    self.check_vector(name, kind)?;
                }
                Ok(())
            }
        }
    }

    /// One vector of a point against the collection's config for its name.
    fn check_vector(&self, name: &str, kind: VectorKind<'_>) -> Result<()> {
        let sparse = self.config.sparse_vectors();
        if let VectorKind::Sparse = kind {
            if !sparse.contains_key(name) {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: Not existing vector name error: {name} (not a sparse vector of this collection)"
                )));
            }
            return Ok(());
        }
        let Some(params) = self.config.params.vectors.get(name) else {
            let hint = if sparse.contains_key(name) {
                " (a sparse vector: give it as {\"indices\": [...], \"values\": [...]})".to_string()
            } else if name.is_empty() {
                format!(
                    "(unnamed vector); this collection has named vectors: {}",
                    self.vector_names()
                )
            } else {
                String::new()
            };
            return Err(StorageError::bad_request(format!(
                "Wrong input: Not existing vector name error: {name}{hint}"
            )));
        };
        let label = if name.is_empty() { "the vector" } else { name };
        let is_multi = params
            .multivector_config
            .as_ref()
            .is_some_and(|m| !m.is_null());
        let lengths: Vec<usize> = match kind {
            VectorKind::Dense(_) if is_multi => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: {label} is a multivector: give a list of vectors"
                )));
            }
            VectorKind::Multi(_) if !is_multi => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: {label} takes one vector, not a list of vectors"
                )));
            }
            VectorKind::Multi([]) => {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: multivector {label} must hold at least one vector"
                )));
            }
            VectorKind::Dense(len) => vec![len],
            VectorKind::Multi(m) => m.iter().map(|v| v.len()).collect(),
            VectorKind::Sparse => unreachable!("handled above"),
        };
        if let Some(len) = lengths.into_iter().find(|len| *len != params.size as usize) {
            return Err(StorageError::bad_request(format!(
                "Wrong input: Vector dimension error: expected dim: {}, got {len}",
                params.size
            )));
        }
        Ok(())
    }

    fn vector_names(&self) -> String {
        self.config
            .params
            .vectors
            .by_name()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ---- reads (blocking: call from a blocking thread) ----

    pub fn retrieve(&self, ids: &[PointId], read: &ReadOptions) -> Result<Vec<Record>> {
        let mut by_shard: BTreeMap<u32, Vec<PointId>> = BTreeMap::new();
        for id in ids {
            by_shard
                .entry(self.router.shard_for(id))
                .or_default()
                .push(*id);
        }
        let mut records = Vec::new();
        for (shard, point_ids) in by_shard {
            let request = RetrieveRequest {
                point_ids,
                with_payload: Some(read.with_payload.clone()),
                with_vector: Some(read.with_vector.clone()),
            };
            records.extend(self.read_shard(shard, |shard| {
                shard
                    .engine()?
                    .retrieve(request)
                    .map_err(StorageError::from_engine)
            })?);
        }
        // Answer in the order asked, as Qdrant does.
        let order: BTreeMap<PointId, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        records.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        Ok(records)
    }

    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<Filter>,
        read: &ReadOptions,
    ) -> Result<ScrollPage> {
        check_limit(limit)?;
        check_filter(filter.as_ref())?;
        let mut points = Vec::new();
        for id in 0..self.shard_count() {
            let request = ScrollRequest {
                offset,
                limit: Some(limit.saturating_add(1)),
                filter: filter.clone(),
                with_payload: Some(read.with_payload.clone()),
                with_vector: read.with_vector.clone(),
                order_by: None,
            };
            let (page, _) = self.read_shard(id, |shard| {
                shard
                    .engine()?
                    .scroll(request)
                    .map_err(StorageError::from_engine)
            })?;
            points.extend(page);
        }
        points.sort_by_key(|r| r.id);
        let next_page_offset = points.get(limit).map(|r| r.id);
        points.truncate(limit);
        Ok(ScrollPage {
            points,
            next_page_offset,
        })
    }

    pub fn count(&self, filter: Option<Filter>) -> Result<usize> {
        check_filter(filter.as_ref())?;
        let mut total = 0;
        for id in 0..self.shard_count() {
            let request = CountRequest {
                filter: filter.clone(),
                exact: true,
            };
            total += self.read_shard(id, |shard| {
                shard
                    .engine()?
                    .count(request)
                    .map_err(StorageError::from_engine)
            })?;
        }
        Ok(total)
    }

    pub fn query(&self, query: NearestQuery) -> Result<Vec<ScoredPoint>> {
        check_limit(query.limit)?;
        check_filter(query.filter.as_ref())?;
        // Each shard answers its best `limit + offset`; the merge skips `offset`.
        let per_shard = query.limit.checked_add(query.offset).ok_or_else(|| {
            StorageError::bad_request("Validation error: limit + offset is too large")
        })?;
        let (vector, higher_is_better) = self.query_vector(&query.using, query.vector)?;
        let using = (!query.using.is_empty()).then(|| query.using.clone());
        let mut scored = Vec::new();
        for id in 0..self.shard_count() {
            let mut request = QueryRequest::new(per_shard);
            request.query = Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: vector.clone(),
                using: using.clone(),
            })));
            request.filter = query.filter.clone();
            request.score_threshold = query.score_threshold;
            request.params = query.params.clone();
            request.with_payload = query.read.with_payload.clone();
            request.with_vector = query.read.with_vector.clone();
            scored.extend(self.read_shard(id, |shard| {
                shard
                    .engine()?
                    .query(request)
                    .map_err(StorageError::from_engine)
            })?);
        }
        scored.sort_by(|a, b| {
            let order = a.score.total_cmp(&b.score);
            if higher_is_better {
                order.reverse()
            } else {
                order
            }
        });
        Ok(scored
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .collect())
    }

    /// The engine's form of a query vector for `using`, checked against its config,
    /// and whether a higher score is a better match.
    fn query_vector(&self, using: &str, vector: QueryVector) -> Result<(VectorInternal, bool)> {
        let label = if using.is_empty() {
            "(unnamed vector)"
        } else {
            using
        };
        if let QueryVector::Sparse(sparse) = vector {
            self.check_vector(using, VectorKind::Sparse)?;
            if sparse.indices.len() != sparse.values.len() {
                return Err(StorageError::bad_request(
                    "Wrong input: a sparse query needs as many values as indices",
                ));
            }
            // Sparse scores are dot products: higher is better.
            return Ok((VectorInternal::Sparse(sparse), true));
        }
        let params = self.config.params.vectors.get(using).ok_or_else(|| {
            let sparse = self.config.sparse_vectors();
            let hint = if sparse.contains_key(using) {
                " (a sparse vector: query it with {\"indices\": [...], \"values\": [...]})"
            } else {
                ""
            };
            StorageError::bad_request(format!(
                "Wrong input: Not existing vector name error: {label}{hint}"
            ))
        })?;
        let is_multi = params
            .multivector_config
            .as_ref()
            .is_some_and(|m| !m.is_null());
        let vectors = match vector {
            // A single vector against a multivector field is a list of one, as in Qdrant.
            QueryVector::Dense(v) if is_multi => vec![v],
            QueryVector::Dense(v) => {
                self.check_vector(using, VectorKind::Dense(v.len()))?;
                return Ok((VectorInternal::Dense(v), params.distance.higher_is_better()));
            }
            QueryVector::Multi(m) => m,
            QueryVector::Sparse(_) => unreachable!("handled above"),
        };
        self.check_vector(using, VectorKind::Multi(&vectors))?;
        let multi = qdrant_edge::TypedMultiDenseVector::try_from_matrix(vectors)
            .map_err(StorageError::from_engine)?;
        Ok((
            VectorInternal::MultiDense(multi),
            params.distance.higher_is_better(),
        ))
    }

    pub fn stats(&self) -> Result<CollectionStats> {
        let mut stats = CollectionStats {
            points_count: 0,
            segments_count: 0,
            indexed_vectors_count: 0,
            pending_updates: 0,
            frozen_shards: 0,
            optimizing_shards: 0,
            last_change: SystemTime::UNIX_EPOCH,
        };
        for id in 0..self.shard_count() {
            let shard = self.slot(id)?.read();
            let info = shard.engine()?.info().map_err(StorageError::from_engine)?;
            stats.points_count += info.points_count;
            stats.segments_count += info.segments_count;
            stats.indexed_vectors_count += info.indexed_vectors_count;
            stats.pending_updates += shard.pending_updates();
            stats.frozen_shards += usize::from(shard.is_frozen());
            stats.optimizing_shards += usize::from(shard.is_optimizing());
            stats.last_change = stats.last_change.max(shard.last_change());
        }
        Ok(stats)
    }

    // ---- freeze ----

    /// Freeze every shard at one cut in the update order and flush, so the files
    /// hold one consistent state until the returned guard is dropped.
    /// Blocking: call from a blocking thread.
    pub fn freeze(self: &Arc<Self>) -> Result<CollectionFreeze> {
        let all: Vec<u32> = (0..self.shard_count()).collect();
        self.freeze_shards(&all)
    }

    /// Freeze only `ids` (a shard snapshot), at one cut in the update order. A shard
    /// still frozen by an older view that updates have passed since cannot join this
    /// cut (its files hold an older state than the other shards' would): the freeze
    /// is undone and [`StorageError::StaleFreeze`] names those shards, so the caller
    /// can end the older freezes and try again.
    pub fn freeze_shards(self: &Arc<Self>, ids: &[u32]) -> Result<CollectionFreeze> {
        self.freeze_at_cut(ids, false)
    }

    /// Freeze `ids`, joining freezes already in place whatever state they hold: for
    /// work that only needs the files to stay put (a partial apply stages from them
    /// and keeps the pending log), or that holds a view's freeze a little longer.
    pub fn join_freeze(self: &Arc<Self>, ids: &[u32]) -> Result<CollectionFreeze> {
        self.freeze_at_cut(ids, true)
    }

    fn freeze_at_cut(self: &Arc<Self>, ids: &[u32], join_any: bool) -> Result<CollectionFreeze> {
        let mut guard = CollectionFreeze {
            collection: self.clone(),
            shards: Vec::new(),
        };
        let cuts = {
            let _exclusive = self.dispatch.write().unwrap();
            let mut cuts = Vec::new();
            for id in ids {
                let shard = self.shard(*id)?;
                cuts.push(shard.freeze_cut()?);
                // From here on the guard owns this shard's freeze: an error below still thaws.
                guard.shards.push(shard);
            }
            cuts
        };
        // This cut holds every update acknowledged before it only if no shard
        // joined a freeze that updates have passed since.
        let mut lagging = Vec::new();
        for (cut, id) in cuts.into_iter().zip(ids) {
            if cut.recv().map_err(|_| StorageError::ShuttingDown)? {
                lagging.push(*id);
            }
        }
        if !lagging.is_empty() && !join_any {
            return Err(StorageError::StaleFreeze {
                collection: self.name.clone(),
                shards: lagging,
            });
        }
        crate::storage::pause_point("freeze-cut-placed");
        for shard in &guard.shards {
            shard
                .settle_frozen()
                .map_err(|err| guard.switched_meanwhile(err))?;
        }
        Ok(guard)
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

/// A frozen collection; dropping it thaws every shard it froze.
pub struct CollectionFreeze {
    collection: Arc<Collection>,
    /// The frozen shards (the very objects: a shard switched meanwhile is not these).
    shards: Vec<Arc<Shard>>,
}

impl CollectionFreeze {
    pub fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }

    /// The frozen shards, in the order asked.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// `err`, met while using the frozen shards, unless one of them was switched
    /// (restored) meanwhile — its engine closed with it: then not a failure but a
    /// stale freeze, which the caller places again.
    pub fn switched_meanwhile(&self, err: StorageError) -> StorageError {
        if self.is_current() {
            err
        } else {
            StorageError::StaleFreeze {
                collection: self.collection.name().to_string(),
                shards: Vec::new(),
            }
        }
    }

    /// The collection still serves (a restore did not replace it) and every frozen
    /// shard still serves its slot (none was switched since).
    pub fn is_current(&self) -> bool {
        !self
            .collection
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)
            && self.shards.iter().all(|shard| {
                self.collection
                    .shard(shard.id())
                    .is_ok_and(|now| Arc::ptr_eq(&now, shard))
            })
    }
}

impl Drop for CollectionFreeze {
    /// Thaws every shard at one point in the update order, as the freeze cut them:
    /// a freeze placed meanwhile cuts all of them before or all after.
    fn drop(&mut self) {
        let _exclusive = self
            .collection
            .dispatch
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for shard in &self.shards {
            shard.thaw();
        }
    }
}

/// What a point gives for one vector name.
enum VectorKind<'a> {
    Dense(usize),
    Multi(&'a [Vec<f32>]),
    Sparse,
}

/// A filter the engine would misread is refused, as Qdrant refuses it: a field
/// condition with nothing but a key (under `must_not` it would match every point), a
/// nested condition without its filter, … (the engine's own validation rules).
fn check_filter(filter: Option<&Filter>) -> Result<()> {
    use validator::Validate;
    match filter.map(Validate::validate) {
        Some(Err(errors)) => Err(StorageError::bad_request(format!(
            "Validation error in filter: {errors}"
        ))),
        _ => Ok(()),
    }
}

/// A page of no points is refused (Qdrant: `limit` must be at least 1); a scroll
/// asking for none would answer a next page that never advances.
fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(StorageError::bad_request(
            "Validation error: limit must be at least 1",
        ));
    }
    Ok(())
}

/// [`Collection::payload_schema`] over the given shard objects (a freeze's: the
/// state it holds, even if a shard was switched meanwhile).
pub fn payload_schema_of(shards: &[Arc<Shard>]) -> Result<BTreeMap<String, PayloadIndexInfo>> {
    let mut schema = BTreeMap::new();
    for shard in shards {
        add_payload_schema(&mut schema, shard)?;
    }
    Ok(schema)
}

/// Add `shard`'s indexed fields to `schema`, summing the points indexed.
fn add_payload_schema(
    schema: &mut BTreeMap<String, PayloadIndexInfo>,
    shard: &Shard,
) -> Result<()> {
    let info = shard.engine()?.info().map_err(StorageError::from_engine)?;
    for (field, index) in info.payload_schema {
        match schema.get_mut(&field.to_string()) {
            Some(known) => known.points += index.points,
            None => {
                schema.insert(field.to_string(), index);
            }
        }
    }
    Ok(())
}
