//! Reads: retrieve, scroll, count, nearest and stats, each over
//! the shards a request touches (blocking: call from a blocking thread).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use qdrant_edge::{
    CountRequest, Filter, NamedQuery, PayloadIndexInfo, PointId, QueryEnum, QueryRequest, Record,
    RetrieveRequest, ScoredPoint, ScoringQuery, ScrollRequest, VectorInternal,
    WithPayloadInterface, WithVector,
};

use super::Collection;
use super::checks::{VectorKind, check_filter, check_limit};
use crate::storage::error::{Result, StorageError};
use crate::storage::shard::Shard;

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

impl Collection {
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

    /// The exact number of points in shard `id`.
    pub fn count_shard(&self, id: u32) -> Result<usize> {
        let request = CountRequest {
            filter: None,
            exact: true,
        };
        self.read_shard(id, |shard| {
            shard
                .engine()?
                .count(request)
                .map_err(StorageError::from_engine)
        })
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
pub(super) fn add_payload_schema(
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
