//! `/collections/{name}/points…`: Qdrant's point shapes in, Qdrant's shapes out.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use qdrant_edge::{
    Filter, Payload, PointId, PointStructPersisted, ScoredPoint, SearchParams, VectorInternal,
    VectorPersisted, VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Service;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::service::points::{
    DEFAULT_LIMIT, NearestRequest, ORDER_BY_REFUSED, PREFETCH_REFUSED, PointsSelection,
    ScrollRequest, Target, count_points, delete_points, nearest_points, retrieve_points,
    scroll_points, upsert_points,
};
use crate::storage::{QueryVector, ReadOptions, StorageError};

#[derive(Debug, Default, Deserialize)]
pub struct WaitParam {
    /// Qdrant's default: answer once the update is durable, not once it is applied.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Deserialize)]
pub struct UpsertBody {
    points: Option<Vec<PointStructPersisted>>,
    batch: Option<BatchBody>,
}

/// Qdrant's column-oriented batch: `ids`, `vectors` (a list, or lists per name), `payloads`.
#[derive(Debug, Deserialize)]
pub struct BatchBody {
    ids: Vec<PointId>,
    vectors: BatchVectors,
    #[serde(default)]
    payloads: Option<Vec<Option<Payload>>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BatchVectors {
    /// One dense vector (or one multivector) per point.
    Single(Vec<VectorStructPersisted>),
    /// Per name, one vector per point: dense, sparse or multi.
    Named(std::collections::HashMap<String, Vec<VectorPersisted>>),
}

impl UpsertBody {
    fn into_points(self) -> Result<Vec<PointStructPersisted>, ApiError> {
        match (self.points, self.batch) {
            (Some(points), None) => Ok(points),
            (None, Some(batch)) => batch.into_points(),
            _ => Err(ApiError::bad_request(
                "Format error in JSON body: expected exactly one of `points` or `batch`",
            )),
        }
    }
}

impl BatchBody {
    fn into_points(self) -> Result<Vec<PointStructPersisted>, ApiError> {
        let n = self.ids.len();
        let mismatch = |what: &str, len: usize| {
            ApiError::bad_request(format!("Wrong input: batch has {n} ids but {len} {what}"))
        };
        let vectors: Vec<VectorStructPersisted> = match self.vectors {
            BatchVectors::Single(list) => {
                if list.len() != n {
                    return Err(mismatch("vectors", list.len()));
                }
                if list
                    .iter()
                    .any(|v| matches!(v, VectorStructPersisted::Named(_)))
                {
                    return Err(ApiError::bad_request(
                        "Format error in JSON body: a batch's `vectors` is a list of vectors, or lists per name",
                    ));
                }
                list
            }
            BatchVectors::Named(by_name) => {
                let mut per_point = vec![std::collections::HashMap::new(); n];
                for (name, list) in by_name {
                    if list.len() != n {
                        return Err(mismatch(&format!("vectors named `{name}`"), list.len()));
                    }
                    for (slot, v) in per_point.iter_mut().zip(list) {
                        slot.insert(name.clone(), v);
                    }
                }
                per_point
                    .into_iter()
                    .map(VectorStructPersisted::Named)
                    .collect()
            }
        };
        let payloads = match self.payloads {
            Some(p) if p.len() != n => return Err(mismatch("payloads", p.len())),
            Some(p) => p,
            None => vec![None; n],
        };
        Ok(self
            .ids
            .into_iter()
            .zip(vectors)
            .zip(payloads)
            .map(|((id, vector), payload)| PointStructPersisted {
                id,
                vector,
                payload,
            })
            .collect())
    }
}

pub fn update_answer(timer: &Timer, wait: bool) -> ApiResult {
    let status = if wait { "completed" } else { "acknowledged" };
    Ok(timer.ok(json!({"operation_id": null, "status": status})))
}

pub async fn upsert(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(params): Query<WaitParam>,
    ApiJson(body): ApiJson<UpsertBody>,
) -> ApiResult {
    app.storage().collection(&name)?;
    let points = body.into_points()?;
    upsert_points(&app, &name, points, params.wait).await?;
    update_answer(&timer, params.wait)
}

#[derive(Debug, Deserialize)]
pub struct DeleteBody {
    points: Option<Vec<PointId>>,
    filter: Option<Filter>,
}

pub async fn delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(params): Query<WaitParam>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> ApiResult {
    app.storage().collection(&name)?;
    let selection = match (body.points, body.filter) {
        (Some(ids), None) => PointsSelection::Ids(ids),
        (None, Some(filter)) => PointsSelection::Filter(filter),
        _ => {
            return Err(ApiError::bad_request(
                "Format error in JSON body: expected exactly one of `points` or `filter`",
            ));
        }
    };
    delete_points(&app, &name, selection, params.wait).await?;
    update_answer(&timer, params.wait)
}

fn read_options(
    with_payload: Option<WithPayloadInterface>,
    with_vector: Option<WithVector>,
    payload_default: bool,
) -> ReadOptions {
    ReadOptions {
        with_payload: with_payload.unwrap_or(WithPayloadInterface::Bool(payload_default)),
        with_vector: with_vector.unwrap_or(WithVector::Bool(false)),
    }
}

#[derive(Debug, Deserialize)]
pub struct RetrieveBody {
    ids: Vec<PointId>,
    with_payload: Option<WithPayloadInterface>,
    with_vector: Option<WithVector>,
}

pub async fn retrieve(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RetrieveBody>,
) -> ApiResult {
    let read = read_options(body.with_payload, body.with_vector, true);
    let records = retrieve_points(&app, &name, body.ids, read).await?;
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| record_json(r.id, r.payload, r.vector))
        .collect();
    Ok(timer.ok(records))
}

pub async fn get_point(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    app.storage().collection(&name)?;
    let point_id = parse_point_id(&id)?;
    let read = ReadOptions {
        with_payload: WithPayloadInterface::Bool(true),
        with_vector: WithVector::Bool(true),
    };
    let records = retrieve_points(&app, &name, vec![point_id], read).await?;
    let record = records
        .into_iter()
        .next()
        .ok_or(StorageError::PointNotFound(id))?;
    Ok(timer.ok(record_json(record.id, record.payload, record.vector)))
}

fn parse_point_id(text: &str) -> Result<PointId, ApiError> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(PointId::NumId(n));
    }
    uuid::Uuid::parse_str(text).map(PointId::Uuid).map_err(|_| {
        ApiError::bad_request(format!(
            "Wrong input: invalid point id {text:?}: expected an unsigned integer or a UUID"
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct ScrollBody {
    offset: Option<PointId>,
    limit: Option<usize>,
    filter: Option<Filter>,
    with_payload: Option<WithPayloadInterface>,
    with_vector: Option<WithVector>,
    order_by: Option<Value>,
}

pub async fn scroll(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ScrollBody>,
) -> ApiResult {
    if body.order_by.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request(ORDER_BY_REFUSED));
    }
    let request = ScrollRequest {
        offset: body.offset,
        limit: body.limit.unwrap_or(DEFAULT_LIMIT),
        filter: body.filter,
        read: read_options(body.with_payload, body.with_vector, true),
    };
    let page = scroll_points(&app, &name, request).await?;
    let points: Vec<Value> = page
        .points
        .into_iter()
        .map(|r| record_json(r.id, r.payload, r.vector))
        .collect();
    Ok(timer.ok(json!({"points": points, "next_page_offset": page.next_page_offset})))
}

#[derive(Debug, Deserialize)]
pub struct CountBody {
    filter: Option<Filter>,
}

pub async fn count(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CountBody>,
) -> ApiResult {
    let count = count_points(&app, &name, body.filter).await?;
    Ok(timer.ok(json!({"count": count})))
}

#[derive(Debug, Deserialize)]
pub struct QueryBody {
    query: Option<Value>,
    #[serde(default)]
    using: Option<String>,
    filter: Option<Filter>,
    limit: Option<usize>,
    offset: Option<usize>,
    with_payload: Option<WithPayloadInterface>,
    with_vector: Option<WithVector>,
    score_threshold: Option<f32>,
    params: Option<SearchParams>,
    prefetch: Option<Value>,
}

fn parse_target(query: Value) -> Result<Target, ApiError> {
    match query {
        Value::Object(mut map) if map.contains_key("nearest") => {
            parse_target(map.remove("nearest").unwrap())
        }
        Value::Object(map) if map.contains_key("indices") => {
            serde_json::from_value(Value::Object(map))
                .map(|v| Target::Vector(QueryVector::Sparse(v)))
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "Wrong input: a sparse query vector is {{\"indices\": [...], \"values\": [...]}}: {e}"
                    ))
                })
        }
        Value::Array(items) if items.first().is_some_and(Value::is_array) => {
            serde_json::from_value(Value::Array(items))
                .map(|v| Target::Vector(QueryVector::Multi(v)))
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "Wrong input: a multivector query is a list of lists of numbers: {e}"
                    ))
                })
        }
        Value::Array(_) => serde_json::from_value(query)
            .map(|v| Target::Vector(QueryVector::Dense(v)))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "Wrong input: query vector must be a list of numbers: {e}"
                ))
            }),
        Value::Number(_) | Value::String(_) => serde_json::from_value(query)
            .map(Target::Point)
            .map_err(|e| {
                ApiError::bad_request(format!("Wrong input: invalid point id in query: {e}"))
            }),
        other => Err(ApiError::bad_request(format!(
            "Wrong input: snapfs answers nearest-neighbour queries (a dense, sparse or multi vector, {{\"nearest\": …}} or a point id), got {other}"
        ))),
    }
}

pub async fn query(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QueryBody>,
) -> ApiResult {
    if body.prefetch.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request(PREFETCH_REFUSED));
    }
    app.storage().collection(&name)?;
    let target = parse_target(
        body.query
            .ok_or_else(|| ApiError::bad_request("Wrong input: `query` is required"))?,
    )?;
    let request = NearestRequest {
        target,
        using: body.using.unwrap_or_default(),
        filter: body.filter,
        limit: body.limit.unwrap_or(DEFAULT_LIMIT),
        offset: body.offset.unwrap_or(0),
        score_threshold: body.score_threshold,
        params: body.params,
        read: read_options(body.with_payload, body.with_vector, false),
    };
    let points = nearest_points(&app, &name, request).await?;
    let points: Vec<Value> = points.into_iter().map(scored_json).collect();
    Ok(timer.ok(json!({"points": points})))
}

/// A dense vector as Qdrant prints it: each f32 in its shortest form (`0.520808`),
/// not widened to f64 digits (`0.5208079814910889`).
fn dense_json(v: &[f32]) -> Value {
    Value::Array(
        v.iter()
            .map(|x| {
                x.to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            })
            .collect(),
    )
}

fn vector_json(vector: VectorInternal) -> Value {
    match vector {
        VectorInternal::Dense(v) => dense_json(&v),
        VectorInternal::Sparse(s) => json!({"indices": s.indices, "values": s.values}),
        VectorInternal::MultiDense(m) => Value::Array(m.multi_vectors().map(dense_json).collect()),
    }
}

/// The engine keeps the unnamed vector under the name `""`; Qdrant shows it as a plain list.
fn vectors_json(vector: VectorStructInternal) -> Value {
    match vector {
        VectorStructInternal::Single(v) => dense_json(&v),
        VectorStructInternal::MultiDense(m) => vector_json(VectorInternal::MultiDense(m)),
        VectorStructInternal::Named(mut named) => {
            if named.len() == 1 && named.contains_key("") {
                return vector_json(named.remove("").unwrap());
            }
            let map: Map<String, Value> = named
                .into_iter()
                .map(|(k, v)| (k, vector_json(v)))
                .collect();
            Value::Object(map)
        }
    }
}

fn record_json(
    id: PointId,
    payload: Option<Payload>,
    vector: Option<VectorStructInternal>,
) -> Value {
    json!({
        "id": id,
        "payload": payload.map(|p| Value::Object(p.0.into_iter().collect())),
        "vector": vector.map(vectors_json),
    })
}

fn scored_json(point: ScoredPoint) -> Value {
    let mut value = record_json(point.id, point.payload, point.vector);
    value["version"] = json!(point.version);
    value["score"] = json!(point.score);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_becomes_points_in_order() {
        let n = 5000;
        let body: BatchBody = serde_json::from_value(json!({
            "ids": (0..n).collect::<Vec<u64>>(),
            "vectors": (0..n).map(|i| vec![i as f32, 1.0]).collect::<Vec<_>>(),
            "payloads": (0..n).map(|i| json!({"i": i})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let points = body.into_points().unwrap();
        assert_eq!(points.len(), n as usize);
        for (i, point) in points.iter().enumerate() {
            assert_eq!(point.id, PointId::NumId(i as u64));
            let VectorStructPersisted::Single(v) = &point.vector else {
                panic!("a single vector")
            };
            assert_eq!(v[0], i as f32, "point {i} has its own vector");
            assert_eq!(point.payload.as_ref().unwrap().0["i"], json!(i));
        }
    }
}
