//! Points: ids, vectors, payloads and read options in; records and scored points out.
//! The engine's point types are what REST's JSON deserializes into; a gRPC point
//! becomes the same value, so storage checks it the same way.

use std::collections::HashMap;

use qdrant_edge::{
    Payload, PointId, PointStructPersisted, Record, ScoredPoint, SearchParams, VectorInternal,
    VectorPersisted, VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use serde_json::{Value as Json, json};

use super::json::{from_json_object, to_json_object};
use super::{missing, unsupported};
use crate::grpc::proto::{
    self, point_id::PointIdOptions, vector, vector_input, vector_output, vectors, vectors_output,
    with_payload_selector, with_vectors_selector,
};
use crate::service::points::Target;
use crate::storage::{QueryVector, ReadOptions, StorageError};

// ---- ids ----

pub fn point_id(id: proto::PointId) -> Result<PointId, StorageError> {
    match id.point_id_options {
        Some(PointIdOptions::Num(n)) => Ok(PointId::NumId(n)),
        Some(PointIdOptions::Uuid(text)) => uuid::Uuid::parse_str(&text)
            .map(PointId::Uuid)
            .map_err(|_| {
                StorageError::bad_request(format!(
                    "Wrong input: invalid point id {text:?}: expected an unsigned integer or a UUID"
                ))
            }),
        None => Err(StorageError::bad_request(
            "Wrong input: a point id has neither `num` nor `uuid` set",
        )),
    }
}

pub fn required_point_id(id: Option<proto::PointId>) -> Result<PointId, StorageError> {
    point_id(id.ok_or_else(|| missing("the point's `id`"))?)
}

/// A point id in REST's JSON form (for filters).
pub fn point_id_json(id: proto::PointId) -> Result<Json, StorageError> {
    Ok(match point_id(id)? {
        PointId::NumId(n) => json!(n),
        PointId::Uuid(u) => json!(u.to_string()),
    })
}

pub fn point_id_out(id: PointId) -> proto::PointId {
    proto::PointId {
        point_id_options: Some(match id {
            PointId::NumId(n) => PointIdOptions::Num(n),
            PointId::Uuid(u) => PointIdOptions::Uuid(u.to_string()),
        }),
    }
}

// ---- points and vectors in ----

pub fn point(point: proto::PointStruct) -> Result<PointStructPersisted, StorageError> {
    let id = required_point_id(point.id)?;
    let vector = match point.vectors {
        Some(v) if v.vectors_options.is_some() => vectors_in(v)?,
        _ => {
            return Err(StorageError::bad_request(format!(
                "Wrong input: point {id} has no vectors (Expected some vectors)"
            )));
        }
    };
    Ok(PointStructPersisted {
        id,
        vector,
        payload: Some(Payload(to_json_object(point.payload)?)),
    })
}

fn vectors_in(v: proto::Vectors) -> Result<VectorStructPersisted, StorageError> {
    match v.vectors_options {
        None => Ok(VectorStructPersisted::Named(HashMap::new())),
        Some(vectors::VectorsOptions::Vector(v)) => Ok(match vector_in(v)? {
            VectorPersisted::Dense(d) => VectorStructPersisted::Single(d),
            VectorPersisted::MultiDense(m) => VectorStructPersisted::MultiDense(m),
            VectorPersisted::Sparse(_) => {
                return Err(StorageError::bad_request(
                    "Wrong input: a sparse vector needs a name (use named vectors)",
                ));
            }
        }),
        Some(vectors::VectorsOptions::Vectors(named)) => named
            .vectors
            .into_iter()
            .map(|(name, v)| Ok((name, vector_in(v)?)))
            .collect::<Result<_, StorageError>>()
            .map(VectorStructPersisted::Named),
    }
}

/// One vector: the `vector` oneof, or the older flat form (`data`, with `indices`
/// for a sparse vector or `vectors_count` for a multivector).
pub fn vector_in(v: proto::Vector) -> Result<VectorPersisted, StorageError> {
    Ok(match v.vector {
        Some(vector::Vector::Dense(d)) => VectorPersisted::Dense(d.data),
        Some(vector::Vector::Sparse(s)) => VectorPersisted::Sparse(sparse(s.indices, s.values)),
        Some(vector::Vector::MultiDense(m)) => {
            VectorPersisted::MultiDense(m.vectors.into_iter().map(|d| d.data).collect())
        }
        Some(vector::Vector::Document(_)) => return Err(unsupported("Inference (`document`)")),
        Some(vector::Vector::Image(_)) => return Err(unsupported("Inference (`image`)")),
        Some(vector::Vector::Object(_)) => return Err(unsupported("Inference (`object`)")),
        None => flat_vector(v.data, v.indices, v.vectors_count)?,
    })
}

fn flat_vector(
    data: Vec<f32>,
    indices: Option<proto::SparseIndices>,
    vectors_count: Option<u32>,
) -> Result<VectorPersisted, StorageError> {
    match (indices, vectors_count) {
        (Some(_), Some(_)) => Err(StorageError::bad_request(
            "Wrong input: a vector has both sparse `indices` and `vectors_count`",
        )),
        (Some(indices), None) => Ok(VectorPersisted::Sparse(sparse(indices.data, data))),
        (None, Some(count)) => {
            let count = count as usize;
            if count == 0 || data.is_empty() || !data.len().is_multiple_of(count) {
                return Err(StorageError::bad_request(format!(
                    "Wrong input: {} numbers do not split into {count} vectors of one size",
                    data.len()
                )));
            }
            let size = data.len() / count;
            Ok(VectorPersisted::MultiDense(
                data.chunks(size).map(<[f32]>::to_vec).collect(),
            ))
        }
        (None, None) => Ok(VectorPersisted::Dense(data)),
    }
}

fn sparse(indices: Vec<u32>, values: Vec<f32>) -> qdrant_edge::SparseVector {
    qdrant_edge::SparseVector { indices, values }
}

// ---- what a read returns ----

/// The read options of a request; an absent selector takes Qdrant's gRPC default
/// for it (`payload_default`: payload for scroll, none for `Get` and searches;
/// vectors never unless asked).
pub fn read_options(
    with_payload: Option<proto::WithPayloadSelector>,
    with_vectors: Option<proto::WithVectorsSelector>,
    payload_default: bool,
) -> Result<ReadOptions, StorageError> {
    let with_payload = match with_payload.and_then(|s| s.selector_options) {
        None => WithPayloadInterface::Bool(payload_default),
        Some(with_payload_selector::SelectorOptions::Enable(b)) => WithPayloadInterface::Bool(b),
        Some(with_payload_selector::SelectorOptions::Include(s)) => {
            payload_selector(json!({"include": s.fields}))?
        }
        Some(with_payload_selector::SelectorOptions::Exclude(s)) => {
            payload_selector(json!({"exclude": s.fields}))?
        }
    };
    let with_vector = match with_vectors.and_then(|s| s.selector_options) {
        None => WithVector::Bool(false),
        Some(with_vectors_selector::SelectorOptions::Enable(b)) => WithVector::Bool(b),
        Some(with_vectors_selector::SelectorOptions::Include(s)) => {
            serde_json::from_value(json!(s.names)).map_err(|e| {
                StorageError::bad_request(format!("Wrong input: invalid vector names: {e}"))
            })?
        }
    };
    Ok(ReadOptions {
        with_payload,
        with_vector,
    })
}

fn payload_selector(selector: Json) -> Result<WithPayloadInterface, StorageError> {
    serde_json::from_value(selector).map_err(|e| {
        StorageError::bad_request(format!("Wrong input: invalid payload selector: {e}"))
    })
}

// ---- records out ----

pub fn retrieved(record: Record) -> proto::RetrievedPoint {
    proto::RetrievedPoint {
        id: Some(point_id_out(record.id)),
        payload: payload_out(record.payload),
        vectors: record.vector.map(vectors_out),
    }
}

pub fn scored(point: ScoredPoint) -> proto::ScoredPoint {
    proto::ScoredPoint {
        id: Some(point_id_out(point.id)),
        payload: payload_out(point.payload),
        score: point.score,
        version: point.version,
        vectors: point.vector.map(vectors_out),
    }
}

fn payload_out(payload: Option<Payload>) -> HashMap<String, proto::Value> {
    payload.map(|p| from_json_object(p.0)).unwrap_or_default()
}

/// The engine keeps the unnamed vector under the name `""`; it goes out unnamed, as
/// REST shows it.
fn vectors_out(vector: VectorStructInternal) -> proto::VectorsOutput {
    let options = match vector {
        VectorStructInternal::Single(v) => {
            vectors_output::VectorsOptions::Vector(vector_out(VectorInternal::Dense(v)))
        }
        VectorStructInternal::MultiDense(m) => {
            vectors_output::VectorsOptions::Vector(vector_out(VectorInternal::MultiDense(m)))
        }
        VectorStructInternal::Named(mut named) => {
            if named.len() == 1 && named.contains_key("") {
                let v = named.remove("").expect("checked");
                vectors_output::VectorsOptions::Vector(vector_out(v))
            } else {
                vectors_output::VectorsOptions::Vectors(proto::NamedVectorsOutput {
                    vectors: named.into_iter().map(|(k, v)| (k, vector_out(v))).collect(),
                })
            }
        }
    };
    proto::VectorsOutput {
        vectors_options: Some(options),
    }
}

fn vector_out(vector: VectorInternal) -> proto::VectorOutput {
    let vector = match vector {
        VectorInternal::Dense(data) => vector_output::Vector::Dense(proto::DenseVector { data }),
        VectorInternal::Sparse(s) => vector_output::Vector::Sparse(proto::SparseVector {
            values: s.values,
            indices: s.indices,
        }),
        VectorInternal::MultiDense(m) => {
            vector_output::Vector::MultiDense(proto::MultiDenseVector {
                vectors: m
                    .multi_vectors()
                    .map(|v| proto::DenseVector { data: v.to_vec() })
                    .collect(),
            })
        }
    };
    proto::VectorOutput {
        vector: Some(vector),
        ..Default::default()
    }
}

// ---- searches ----

/// What a `Query` looks near: only `nearest` is served; every other kind of query
/// is refused by name.
pub fn query_target(query: proto::Query) -> Result<Target, StorageError> {
    use proto::query::Variant;
    let refused = match query.variant {
        None => return Err(missing("`query` (nearest)")),
        Some(Variant::Nearest(input)) => return vector_input(input),
        Some(Variant::Recommend(_)) => "A `recommend` query",
        Some(Variant::Discover(_)) => "A `discover` query",
        Some(Variant::Context(_)) => "A `context` query",
        Some(Variant::OrderBy(_)) => "An `order_by` query",
        Some(Variant::Fusion(_)) => "A `fusion` query",
        Some(Variant::Sample(_)) => "A `sample` query",
        Some(Variant::Formula(_)) => "A `formula` query",
        Some(Variant::NearestWithMmr(_)) => "A `nearest_with_mmr` query",
        Some(Variant::Rrf(_)) => "An `rrf` query",
        Some(Variant::RelevanceFeedback(_)) => "A `relevance_feedback` query",
    };
    Err(unsupported(refused))
}

fn vector_input(input: proto::VectorInput) -> Result<Target, StorageError> {
    use vector_input::Variant;
    Ok(match input.variant {
        None => return Err(missing("the `nearest` vector")),
        Some(Variant::Id(id)) => Target::Point(point_id(id)?),
        Some(Variant::Dense(d)) => Target::Vector(QueryVector::Dense(d.data)),
        Some(Variant::Sparse(s)) => {
            Target::Vector(QueryVector::Sparse(sparse(s.indices, s.values)))
        }
        Some(Variant::MultiDense(m)) => Target::Vector(QueryVector::Multi(
            m.vectors.into_iter().map(|d| d.data).collect(),
        )),
        Some(Variant::Document(_)) => return Err(unsupported("Inference (`document`)")),
        Some(Variant::Image(_)) => return Err(unsupported("Inference (`image`)")),
        Some(Variant::Object(_)) => return Err(unsupported("Inference (`object`)")),
    })
}

/// The older `Search`: a dense vector, or a sparse one when `sparse_indices` is set.
pub fn search_target(vector: Vec<f32>, sparse_indices: Option<proto::SparseIndices>) -> Target {
    Target::Vector(match sparse_indices {
        Some(indices) => QueryVector::Sparse(sparse(indices.data, vector)),
        None => QueryVector::Dense(vector),
    })
}

/// Search parameters in the engine's form (REST's JSON shape, parsed by the engine's
/// own type).
pub fn search_params(params: proto::SearchParams) -> Result<SearchParams, StorageError> {
    let mut json = json!({});
    if let Some(ef) = params.hnsw_ef {
        json["hnsw_ef"] = json!(ef);
    }
    if let Some(exact) = params.exact {
        json["exact"] = json!(exact);
    }
    if let Some(indexed_only) = params.indexed_only {
        json["indexed_only"] = json!(indexed_only);
    }
    if let Some(q) = params.quantization {
        let mut quantization = json!({});
        for (key, value) in [("ignore", q.ignore), ("rescore", q.rescore)] {
            if let Some(value) = value {
                quantization[key] = json!(value);
            }
        }
        if let Some(oversampling) = q.oversampling {
            quantization["oversampling"] = json!(oversampling);
        }
        json["quantization"] = quantization;
    }
    if let Some(a) = params.acorn {
        let mut acorn = json!({});
        if let Some(enable) = a.enable {
            acorn["enable"] = json!(enable);
        }
        if let Some(max) = a.max_selectivity {
            acorn["max_selectivity"] = json!(max);
        }
        json["acorn"] = acorn;
    }
    serde_json::from_value(json)
        .map_err(|e| StorageError::bad_request(format!("Wrong input: invalid search params: {e}")))
}

pub fn optional_search_params(
    params: Option<proto::SearchParams>,
) -> Result<Option<SearchParams>, StorageError> {
    params
        .filter(|p| *p != proto::SearchParams::default())
        .map(search_params)
        .transpose()
}

// ---- updates ----

/// How an update was answered: applied (`wait`) or durable and acknowledged.
pub fn update_result(wait: bool) -> proto::UpdateResult {
    proto::UpdateResult {
        operation_id: None,
        status: if wait {
            proto::UpdateStatus::Completed
        } else {
            proto::UpdateStatus::Acknowledged
        } as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(data: &[f32]) -> proto::Vector {
        proto::Vector {
            vector: Some(vector::Vector::Dense(proto::DenseVector {
                data: data.to_vec(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn points_become_what_rest_json_becomes() {
        let grpc = proto::PointStruct {
            id: Some(point_id_out(PointId::NumId(3))),
            payload: from_json_object(json!({"n": 3}).as_object().unwrap().clone()),
            vectors: Some(proto::Vectors {
                vectors_options: Some(vectors::VectorsOptions::Vectors(proto::NamedVectors {
                    vectors: HashMap::from([
                        ("text".to_string(), dense(&[0.5, 1.0])),
                        (
                            "sparse".to_string(),
                            proto::Vector {
                                vector: Some(vector::Vector::Sparse(proto::SparseVector {
                                    values: vec![0.25],
                                    indices: vec![7],
                                })),
                                ..Default::default()
                            },
                        ),
                    ]),
                })),
            }),
        };
        let rest: PointStructPersisted = serde_json::from_value(json!({
            "id": 3,
            "vector": {"text": [0.5, 1.0], "sparse": {"indices": [7], "values": [0.25]}},
            "payload": {"n": 3}
        }))
        .unwrap();
        assert_eq!(point(grpc).unwrap(), rest);
    }

    #[test]
    fn the_flat_vector_form_of_older_clients_is_read() {
        let multi = proto::Vector {
            data: vec![1.0, 2.0, 3.0, 4.0],
            vectors_count: Some(2),
            ..Default::default()
        };
        assert!(matches!(
            vector_in(multi).unwrap(),
            VectorPersisted::MultiDense(m) if m == vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        ));
        let uneven = proto::Vector {
            data: vec![1.0, 2.0, 3.0],
            vectors_count: Some(2),
            ..Default::default()
        };
        assert!(vector_in(uneven).is_err());
        let plain = proto::Vector {
            data: vec![1.0],
            ..Default::default()
        };
        assert!(matches!(vector_in(plain).unwrap(), VectorPersisted::Dense(d) if d == [1.0]));
    }

    #[test]
    fn queries_other_than_nearest_are_refused_by_name() {
        let recommend = proto::Query {
            variant: Some(proto::query::Variant::Recommend(vec![])),
        };
        let err = query_target(recommend).err().unwrap().to_string();
        assert!(err.contains("`recommend`"), "{err}");
        let by_id = proto::Query {
            variant: Some(proto::query::Variant::Nearest(proto::VectorInput {
                variant: Some(vector_input::Variant::Id(point_id_out(PointId::NumId(4)))),
            })),
        };
        assert!(matches!(
            query_target(by_id).unwrap(),
            Target::Point(PointId::NumId(4))
        ));
    }
}
