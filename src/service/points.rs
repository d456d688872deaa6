//! Points: upsert, delete, retrieve, scroll, count, nearest — the operations REST
//! and gRPC both translate to.

use qdrant_edge::{
    Filter, PointId, PointStructPersisted, Record, ScoredPoint, SearchParams, VectorInternal,
    VectorStructInternal, WithPayloadInterface, WithVector,
};

use super::{Service, run_blocking};
use crate::storage::{NearestQuery, QueryVector, ReadOptions, ScrollPage, StorageError};

/// Qdrant's default page size for scroll and query.
pub const DEFAULT_LIMIT: usize = 10;

/// Refused by both protocols: ordering a scroll by a payload field.
pub const ORDER_BY_REFUSED: &str = "`order_by` is not supported by snapfs yet";
/// Refused by both protocols: multi-stage (prefetch) queries.
pub const PREFETCH_REFUSED: &str = "`prefetch` is not supported by snapfs yet";

/// Which points a delete removes.
pub enum PointsSelection {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// Upsert `points` into `collection`; with `wait`, answer once they are applied.
pub async fn upsert_points(
    app: &Service,
    collection: &str,
    points: Vec<PointStructPersisted>,
    wait: bool,
) -> Result<(), StorageError> {
    app.storage().check_writable(collection)?;
    app.storage()
        .collection(collection)?
        .upsert(points, wait)
        .await
}

pub async fn delete_points(
    app: &Service,
    collection: &str,
    selection: PointsSelection,
    wait: bool,
) -> Result<(), StorageError> {
    app.storage().check_writable(collection)?;
    let collection = app.storage().collection(collection)?;
    match selection {
        PointsSelection::Ids(ids) => collection.delete(ids, wait).await,
        PointsSelection::Filter(filter) => collection.delete_by_filter(filter, wait).await,
    }
}

pub async fn retrieve_points(
    app: &Service,
    collection: &str,
    ids: Vec<PointId>,
    read: ReadOptions,
) -> Result<Vec<Record>, StorageError> {
    let collection = app.storage().collection(collection)?;
    run_blocking(move || collection.retrieve(&ids, &read)).await
}

/// A page of a scroll: points by id from `offset`, at most `limit`.
pub struct ScrollRequest {
    pub offset: Option<PointId>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub read: ReadOptions,
}

pub async fn scroll_points(
    app: &Service,
    collection: &str,
    request: ScrollRequest,
) -> Result<ScrollPage, StorageError> {
    let collection = app.storage().collection(collection)?;
    run_blocking(move || {
        collection.scroll(request.offset, request.limit, request.filter, &request.read)
    })
    .await
}

pub async fn count_points(
    app: &Service,
    collection: &str,
    filter: Option<Filter>,
) -> Result<usize, StorageError> {
    let collection = app.storage().collection(collection)?;
    run_blocking(move || collection.count(filter)).await
}

/// What to look near: a vector, or the vector of a stored point.
pub enum Target {
    Vector(QueryVector),
    Point(PointId),
}

/// A nearest-neighbour search, as REST's query and gRPC's query and search give it.
pub struct NearestRequest {
    pub target: Target,
    /// The vector to search (`""`: the unnamed one).
    pub using: String,
    pub filter: Option<Filter>,
    pub limit: usize,
    pub offset: usize,
    pub score_threshold: Option<f32>,
    pub params: Option<SearchParams>,
    pub read: ReadOptions,
}

pub async fn nearest_points(
    app: &Service,
    collection: &str,
    request: NearestRequest,
) -> Result<Vec<ScoredPoint>, StorageError> {
    let collection = app.storage().collection(collection)?;
    let NearestRequest {
        target,
        using,
        filter,
        limit,
        offset,
        score_threshold,
        params,
        read,
    } = request;
    run_blocking(move || {
        let (vector, exclude) = match target {
            Target::Vector(v) => (v, None),
            Target::Point(id) => (stored_vector(&collection, id, &using)?, Some(id)),
        };
        // Querying by a point's id finds other points, as Qdrant does: the point is
        // left out by the search itself, so `offset` pages do not overlap.
        let filter = match exclude {
            Some(id) => Some(without_point(filter, id)?),
            None => filter,
        };
        collection.query(NearestQuery {
            vector,
            using,
            filter,
            limit,
            offset,
            score_threshold,
            params,
            read,
        })
    })
    .await
}

fn stored_vector(
    collection: &crate::storage::Collection,
    id: PointId,
    using: &str,
) -> Result<QueryVector, StorageError> {
    let read = ReadOptions {
        with_payload: WithPayloadInterface::Bool(false),
        with_vector: WithVector::Bool(true),
    };
    let record = collection
        .retrieve(&[id], &read)?
        .into_iter()
        .next()
        .ok_or_else(|| StorageError::PointNotFound(id.to_string()))?;
    let vector = match record.vector {
        Some(VectorStructInternal::Single(v)) if using.is_empty() => Some(VectorInternal::Dense(v)),
        Some(VectorStructInternal::MultiDense(m)) if using.is_empty() => {
            Some(VectorInternal::MultiDense(m))
        }
        Some(VectorStructInternal::Named(mut named)) => named.remove(using),
        _ => None,
    };
    match vector {
        Some(VectorInternal::Dense(v)) => Ok(QueryVector::Dense(v)),
        Some(VectorInternal::Sparse(s)) => Ok(QueryVector::Sparse(s)),
        Some(VectorInternal::MultiDense(m)) => Ok(QueryVector::Multi(
            m.multi_vectors().map(|v| v.to_vec()).collect(),
        )),
        None => Err(StorageError::bad_request(format!(
            "Wrong input: point {id} has no vector {using:?}"
        ))),
    }
}

/// `filter` (if any) and "not point `id`".
fn without_point(filter: Option<Filter>, id: PointId) -> Result<Filter, StorageError> {
    let mut combined = serde_json::json!({"must_not": [{"has_id": [id]}]});
    if let Some(filter) = filter {
        combined["must"] = serde_json::json!([filter]);
    }
    serde_json::from_value(combined)
        .map_err(|e| StorageError::internal_from("combining the query's filter", e))
}

/// Look up the first `samples` points of `collection` by their own vectors (the
/// first named one where there are names), each search limited to that point:
/// every one must be found. How a restore drill proves the restored indexes answer.
/// The number looked up (fewer for a smaller collection).
pub fn sample_lookups(
    collection: &crate::storage::Collection,
    samples: usize,
) -> Result<usize, StorageError> {
    let read = ReadOptions {
        with_payload: WithPayloadInterface::Bool(false),
        with_vector: WithVector::Bool(true),
    };
    let page = collection.scroll(None, samples.max(1), None, &read)?;
    let total = collection.count(None)?;
    let wanted = samples.max(1).min(total);
    let near = |vector: QueryVector, using: &str, filter: Option<Filter>, limit: usize| {
        collection.query(NearestQuery {
            vector,
            using: using.to_string(),
            filter,
            limit,
            offset: 0,
            score_threshold: None,
            params: None,
            read: ReadOptions {
                with_payload: WithPayloadInterface::Bool(false),
                with_vector: WithVector::Bool(false),
            },
        })
    };
    for record in &page.points {
        let using = match &record.vector {
            Some(VectorStructInternal::Named(named)) => match named.keys().min() {
                Some(name) => name.to_string(),
                None => continue,
            },
            Some(_) => String::new(),
            // A point without vectors has nothing to be found by.
            None => continue,
        };
        let vector = stored_vector(collection, record.id, &using)?;
        let only: Filter =
            serde_json::from_value(serde_json::json!({"must": [{"has_id": [record.id]}]}))
                .map_err(|e| StorageError::internal_from("a sample lookup's filter", e))?;
        let found = near(vector.clone(), &using, Some(only), 1)?;
        if found.first().map(|p| p.id) != Some(record.id) {
            return Err(StorageError::internal(format!(
                "point {} is not found by its own vector {using:?}",
                record.id
            )));
        }
        // And a search over every point answers, as many as asked or all there are.
        let all = near(vector, &using, None, wanted)?;
        if all.len() != wanted || all.iter().any(|p| !p.score.is_finite()) {
            return Err(StorageError::internal(format!(
                "a search near point {} over the whole collection gave {} of {wanted} results",
                record.id,
                all.len()
            )));
        }
    }
    Ok(page.points.len())
}
