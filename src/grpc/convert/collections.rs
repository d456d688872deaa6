//! Collections: a create request → REST's create body (the same checks, the same
//! defaults), and a collection's config and counts → `CollectionInfo`.
//!
//! The config keeps its nested settings (per-vector HNSW diffs, quantization,
//! datatypes) in Qdrant's JSON form, so both directions go through that form.

use std::collections::HashMap;

use qdrant_edge::PayloadSchemaType;
use serde_json::{Map, Value as Json, json};

use super::json::{from_json, to_json_object};
use super::{known_enum, refuse_if_set, unsupported};
use crate::grpc::proto::{
    self, binary_quantization_query_encoding as query_encoding, max_optimization_threads,
    quantization_config::Quantization, vectors_config,
};
use crate::service::collections::CollectionOverview;
use crate::storage::collection_config::{
    CollectionConfig, Distance, ShardingMethod, SparseVectorParams, VectorParams, VectorsConfig,
};
use crate::storage::{CreateCollection, StorageError};

// ---- create ----

/// The REST body this create request means; unknown or refused parts are errors.
pub fn create_request(request: proto::CreateCollection) -> Result<CreateCollection, StorageError> {
    refuse_if_set(
        &request.strict_mode_config,
        "`strict_mode_config` (it would not be enforced)",
    )?;
    let mut body = Map::new();
    if let Some(vectors) = request.vectors_config {
        body.insert("vectors".into(), vectors_json(vectors)?);
    }
    if let Some(sparse) = request.sparse_vectors_config {
        body.insert("sparse_vectors".into(), sparse_vectors_json(sparse)?);
    }
    for (key, value) in [
        ("shard_number", request.shard_number),
        ("replication_factor", request.replication_factor),
        ("write_consistency_factor", request.write_consistency_factor),
    ] {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    if let Some(on_disk) = request.on_disk_payload {
        body.insert("on_disk_payload".into(), json!(on_disk));
    }
    if let Some(method) = request.sharding_method {
        let method = match known_enum(method, "sharding method")? {
            proto::ShardingMethod::Auto => "auto",
            proto::ShardingMethod::Custom => "custom",
        };
        body.insert("sharding_method".into(), json!(method));
    }
    if let Some(hnsw) = request.hnsw_config {
        body.insert("hnsw_config".into(), hnsw_json(hnsw));
    }
    if let Some(wal) = request.wal_config {
        body.insert("wal_config".into(), wal_json(wal));
    }
    if let Some(optimizers) = request.optimizers_config {
        body.insert("optimizers_config".into(), optimizers_json(optimizers)?);
    }
    if let Some(quantization) = request.quantization_config {
        body.insert(
            "quantization_config".into(),
            quantization_json(quantization)?,
        );
    }
    if !request.metadata.is_empty() {
        body.insert(
            "metadata".into(),
            Json::Object(to_json_object(request.metadata)?),
        );
    }
    serde_json::from_value(Json::Object(body))
        .map_err(|e| StorageError::bad_request(format!("Invalid collection config: {e}")))
}

fn vectors_json(vectors: proto::VectorsConfig) -> Result<Json, StorageError> {
    match vectors.config {
        None => Err(StorageError::bad_request(
            "Wrong input: `vectors_config` has neither `params` nor `params_map` set",
        )),
        Some(vectors_config::Config::Params(params)) => vector_params_json(params),
        Some(vectors_config::Config::ParamsMap(map)) => map
            .map
            .into_iter()
            .map(|(name, params)| Ok((name, vector_params_json(params)?)))
            .collect::<Result<Map<_, _>, StorageError>>()
            .map(Json::Object),
    }
}

fn vector_params_json(params: proto::VectorParams) -> Result<Json, StorageError> {
    let distance = match known_enum(params.distance, "distance")? {
        proto::Distance::UnknownDistance => {
            return Err(StorageError::bad_request(
                "Wrong input: a vector needs a distance (Cosine, Euclid, Dot or Manhattan)",
            ));
        }
        proto::Distance::Cosine => "Cosine",
        proto::Distance::Euclid => "Euclid",
        proto::Distance::Dot => "Dot",
        proto::Distance::Manhattan => "Manhattan",
    };
    let mut out = json!({"size": params.size, "distance": distance});
    if let Some(hnsw) = params.hnsw_config {
        out["hnsw_config"] = hnsw_json(hnsw);
    }
    if let Some(quantization) = params.quantization_config {
        out["quantization_config"] = quantization_json(quantization)?;
    }
    if let Some(on_disk) = params.on_disk {
        out["on_disk"] = json!(on_disk);
    }
    if let Some(datatype) = datatype_json(params.datatype)? {
        out["datatype"] = datatype;
    }
    if let Some(multi) = params.multivector_config {
        let proto::MultiVectorComparator::MaxSim = known_enum(multi.comparator, "comparator")?;
        out["multivector_config"] = json!({"comparator": "max_sim"});
    }
    Ok(out)
}

fn datatype_json(datatype: Option<i32>) -> Result<Option<Json>, StorageError> {
    let Some(datatype) = datatype else {
        return Ok(None);
    };
    Ok(match known_enum(datatype, "datatype")? {
        proto::Datatype::Default => None,
        proto::Datatype::Float32 => Some(json!("float32")),
        proto::Datatype::Uint8 => Some(json!("uint8")),
        proto::Datatype::Float16 => Some(json!("float16")),
        proto::Datatype::Turbo4 => return Err(unsupported("The `Turbo4` datatype")),
    })
}

fn sparse_vectors_json(sparse: proto::SparseVectorConfig) -> Result<Json, StorageError> {
    let mut out = Map::new();
    for (name, params) in sparse.map {
        let mut vector = json!({});
        if let Some(index) = params.index {
            let mut index_json = json!({});
            if let Some(threshold) = index.full_scan_threshold {
                index_json["full_scan_threshold"] = json!(threshold);
            }
            if let Some(on_disk) = index.on_disk {
                index_json["on_disk"] = json!(on_disk);
            }
            if let Some(datatype) = datatype_json(index.datatype)? {
                index_json["datatype"] = datatype;
            }
            vector["index"] = index_json;
        }
        if let Some(modifier) = params.modifier {
            vector["modifier"] = json!(match known_enum(modifier, "modifier")? {
                proto::Modifier::None => "none",
                proto::Modifier::Idf => "idf",
            });
        }
        out.insert(name, vector);
    }
    Ok(Json::Object(out))
}

/// The fields of a diff that are set.
fn set_fields<const N: usize>(fields: [(&str, Option<Json>); N]) -> Json {
    Json::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

fn hnsw_json(h: proto::HnswConfigDiff) -> Json {
    set_fields([
        ("m", h.m.map(Json::from)),
        ("ef_construct", h.ef_construct.map(Json::from)),
        ("full_scan_threshold", h.full_scan_threshold.map(Json::from)),
        (
            "max_indexing_threads",
            h.max_indexing_threads.map(Json::from),
        ),
        ("on_disk", h.on_disk.map(Json::from)),
        ("payload_m", h.payload_m.map(Json::from)),
        ("inline_storage", h.inline_storage.map(Json::from)),
    ])
}

fn wal_json(w: proto::WalConfigDiff) -> Json {
    set_fields([
        ("wal_capacity_mb", w.wal_capacity_mb.map(Json::from)),
        ("wal_segments_ahead", w.wal_segments_ahead.map(Json::from)),
        ("wal_retain_closed", w.wal_retain_closed.map(Json::from)),
    ])
}

fn optimizers_json(o: proto::OptimizersConfigDiff) -> Result<Json, StorageError> {
    // `Auto` is "no fixed number", which the config keeps as null.
    let threads = match o.max_optimization_threads.and_then(|t| t.variant) {
        Some(max_optimization_threads::Variant::Value(n)) => Some(json!(n)),
        Some(max_optimization_threads::Variant::Setting(s)) => {
            let max_optimization_threads::Setting::Auto = known_enum(s, "threads setting")?;
            Some(Json::Null)
        }
        None => o.deprecated_max_optimization_threads.map(Json::from),
    };
    let deleted_threshold = match o.deleted_threshold {
        Some(t) => Some(
            serde_json::Number::from_f64(t)
                .map(Json::Number)
                .ok_or_else(|| {
                    StorageError::bad_request(
                        "Wrong input: `deleted_threshold` must be a finite number",
                    )
                })?,
        ),
        None => None,
    };
    Ok(set_fields([
        ("deleted_threshold", deleted_threshold),
        (
            "vacuum_min_vector_number",
            o.vacuum_min_vector_number.map(Json::from),
        ),
        (
            "default_segment_number",
            o.default_segment_number.map(Json::from),
        ),
        ("max_segment_size", o.max_segment_size.map(Json::from)),
        ("memmap_threshold", o.memmap_threshold.map(Json::from)),
        ("indexing_threshold", o.indexing_threshold.map(Json::from)),
        ("flush_interval_sec", o.flush_interval_sec.map(Json::from)),
        ("max_optimization_threads", threads),
        ("prevent_unoptimized", o.prevent_unoptimized.map(Json::from)),
    ]))
}

fn quantization_json(q: proto::QuantizationConfig) -> Result<Json, StorageError> {
    Ok(match q.quantization {
        None => {
            return Err(StorageError::bad_request(
                "Wrong input: `quantization_config` has no kind set",
            ));
        }
        Some(Quantization::Scalar(s)) => {
            match known_enum(s.r#type, "quantization type")? {
                proto::QuantizationType::Int8 => {}
                proto::QuantizationType::UnknownQuantization => {
                    return Err(StorageError::bad_request(
                        "Wrong input: scalar quantization needs a `type` (Int8)",
                    ));
                }
            }
            let mut scalar = set_fields([
                ("quantile", s.quantile.map(Json::from)),
                ("always_ram", s.always_ram.map(Json::from)),
            ]);
            scalar["type"] = json!("int8");
            json!({"scalar": scalar})
        }
        Some(Quantization::Product(p)) => {
            let compression = match known_enum(p.compression, "compression ratio")? {
                proto::CompressionRatio::X4 => "x4",
                proto::CompressionRatio::X8 => "x8",
                proto::CompressionRatio::X16 => "x16",
                proto::CompressionRatio::X32 => "x32",
                proto::CompressionRatio::X64 => "x64",
            };
            let mut product = set_fields([("always_ram", p.always_ram.map(Json::from))]);
            product["compression"] = json!(compression);
            json!({"product": product})
        }
        Some(Quantization::Binary(b)) => {
            let encoding = match b.encoding {
                None => None,
                Some(e) => Some(json!(match known_enum(e, "binary encoding")? {
                    proto::BinaryQuantizationEncoding::OneBit => "one_bit",
                    proto::BinaryQuantizationEncoding::TwoBits => "two_bits",
                    proto::BinaryQuantizationEncoding::OneAndHalfBits => "one_and_half_bits",
                })),
            };
            let query_encoding = match b.query_encoding.and_then(|q| q.variant) {
                None => None,
                Some(query_encoding::Variant::Setting(s)) => {
                    Some(json!(match known_enum(s, "query encoding")? {
                        query_encoding::Setting::Default => "default",
                        query_encoding::Setting::Binary => "binary",
                        query_encoding::Setting::Scalar4Bits => "scalar4bits",
                        query_encoding::Setting::Scalar8Bits => "scalar8bits",
                    }))
                }
            };
            json!({"binary": set_fields([
                ("always_ram", b.always_ram.map(Json::from)),
                ("encoding", encoding),
                ("query_encoding", query_encoding),
            ])})
        }
        Some(Quantization::Turboquant(_)) => return Err(unsupported("TurboQuant quantization")),
    })
}

// ---- a collection as it is ----

pub fn collection_info(overview: CollectionOverview) -> proto::CollectionInfo {
    let CollectionOverview {
        config,
        stats,
        payload_schema,
    } = overview;
    let status = if stats.optimizing_shards > 0 {
        proto::CollectionStatus::Yellow
    } else {
        proto::CollectionStatus::Green
    };
    proto::CollectionInfo {
        status: status as i32,
        optimizer_status: Some(proto::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: stats.segments_count as u64,
        config: Some(collection_config(config)),
        payload_schema: payload_schema
            .into_iter()
            .map(|(field, info)| {
                let data_type = match info.data_type {
                    PayloadSchemaType::Keyword => proto::PayloadSchemaType::Keyword,
                    PayloadSchemaType::Integer => proto::PayloadSchemaType::Integer,
                    PayloadSchemaType::Float => proto::PayloadSchemaType::Float,
                    PayloadSchemaType::Geo => proto::PayloadSchemaType::Geo,
                    PayloadSchemaType::Text => proto::PayloadSchemaType::Text,
                    PayloadSchemaType::Bool => proto::PayloadSchemaType::Bool,
                    PayloadSchemaType::Datetime => proto::PayloadSchemaType::Datetime,
                    PayloadSchemaType::Uuid => proto::PayloadSchemaType::Uuid,
                };
                let info = proto::PayloadSchemaInfo {
                    data_type: data_type as i32,
                    points: Some(info.points as u64),
                };
                (field, info)
            })
            .collect(),
        points_count: Some(stats.points_count as u64),
        indexed_vectors_count: Some(stats.indexed_vectors_count as u64),
        update_queue: Some(proto::UpdateQueueInfo {
            length: stats.pending_updates as u64,
        }),
    }
}

fn collection_config(config: CollectionConfig) -> proto::CollectionConfig {
    let params = &config.params;
    let hnsw = &config.hnsw_config;
    let opt = &config.optimizer_config;
    let wal = &config.wal_config;
    proto::CollectionConfig {
        params: Some(proto::CollectionParams {
            shard_number: params.shard_number,
            on_disk_payload: params.on_disk_payload,
            vectors_config: vectors_out(&params.vectors),
            replication_factor: Some(params.replication_factor),
            write_consistency_factor: Some(params.write_consistency_factor),
            read_fan_out_factor: params.read_fan_out_factor,
            sharding_method: params.sharding_method.map(|m| match m {
                ShardingMethod::Auto => proto::ShardingMethod::Auto as i32,
                ShardingMethod::Custom => proto::ShardingMethod::Custom as i32,
            }),
            sparse_vectors_config: params.sparse_vectors.as_ref().map(|sparse| {
                proto::SparseVectorConfig {
                    map: sparse
                        .iter()
                        .map(|(name, p)| (name.clone(), sparse_params_out(p)))
                        .collect(),
                }
            }),
        }),
        hnsw_config: Some(proto::HnswConfigDiff {
            m: Some(hnsw.m as u64),
            ef_construct: Some(hnsw.ef_construct as u64),
            full_scan_threshold: Some(hnsw.full_scan_threshold as u64),
            max_indexing_threads: Some(hnsw.max_indexing_threads as u64),
            on_disk: hnsw.on_disk,
            payload_m: hnsw.payload_m.map(|m| m as u64),
            inline_storage: hnsw.inline_storage,
        }),
        optimizer_config: Some(proto::OptimizersConfigDiff {
            deleted_threshold: Some(opt.deleted_threshold),
            vacuum_min_vector_number: Some(opt.vacuum_min_vector_number as u64),
            default_segment_number: Some(opt.default_segment_number as u64),
            max_segment_size: opt.max_segment_size.map(|n| n as u64),
            memmap_threshold: opt.memmap_threshold.map(|n| n as u64),
            indexing_threshold: opt.indexing_threshold.map(|n| n as u64),
            flush_interval_sec: Some(opt.flush_interval_sec),
            deprecated_max_optimization_threads: None,
            max_optimization_threads: Some(proto::MaxOptimizationThreads {
                variant: Some(match opt.max_optimization_threads {
                    Some(n) => max_optimization_threads::Variant::Value(n as u64),
                    None => max_optimization_threads::Variant::Setting(
                        max_optimization_threads::Setting::Auto as i32,
                    ),
                }),
            }),
            prevent_unoptimized: opt.prevent_unoptimized,
        }),
        wal_config: Some(proto::WalConfigDiff {
            wal_capacity_mb: Some(wal.wal_capacity_mb as u64),
            wal_segments_ahead: Some(wal.wal_segments_ahead as u64),
            wal_retain_closed: Some(wal.wal_retain_closed as u64),
        }),
        quantization_config: config
            .quantization_config
            .as_ref()
            .and_then(quantization_out),
        metadata: match &config.metadata {
            Some(Json::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), from_json(v.clone())))
                .collect(),
            _ => HashMap::new(),
        },
    }
}

fn vectors_out(vectors: &VectorsConfig) -> Option<proto::VectorsConfig> {
    let config = match vectors {
        VectorsConfig::Single(params) => vectors_config::Config::Params(vector_params_out(params)),
        VectorsConfig::Named(map) if map.is_empty() => return None,
        VectorsConfig::Named(map) => vectors_config::Config::ParamsMap(proto::VectorParamsMap {
            map: map
                .iter()
                .map(|(name, p)| (name.clone(), vector_params_out(p)))
                .collect(),
        }),
    };
    Some(proto::VectorsConfig {
        config: Some(config),
    })
}

fn vector_params_out(params: &VectorParams) -> proto::VectorParams {
    let distance = match params.distance {
        Distance::Cosine => proto::Distance::Cosine,
        Distance::Euclid => proto::Distance::Euclid,
        Distance::Dot => proto::Distance::Dot,
        Distance::Manhattan => proto::Distance::Manhattan,
    };
    proto::VectorParams {
        size: params.size,
        distance: distance as i32,
        hnsw_config: params.hnsw_config.as_ref().and_then(hnsw_diff_out),
        quantization_config: params
            .quantization_config
            .as_ref()
            .and_then(quantization_out),
        on_disk: params.on_disk,
        datatype: params.datatype.as_ref().and_then(datatype_out),
        multivector_config: params
            .multivector_config
            .as_ref()
            .filter(|m| !m.is_null())
            .map(|_| proto::MultiVectorConfig {
                comparator: proto::MultiVectorComparator::MaxSim as i32,
            }),
    }
}

fn sparse_params_out(params: &SparseVectorParams) -> proto::SparseVectorParams {
    proto::SparseVectorParams {
        index: params.index.as_ref().map(|index| proto::SparseIndexConfig {
            full_scan_threshold: index.full_scan_threshold.map(|n| n as u64),
            on_disk: index.on_disk,
            datatype: index.datatype.as_ref().and_then(datatype_out),
        }),
        modifier: params
            .modifier
            .as_ref()
            .and_then(Json::as_str)
            .map(|m| match m {
                "idf" => proto::Modifier::Idf as i32,
                _ => proto::Modifier::None as i32,
            }),
    }
}

fn datatype_out(datatype: &Json) -> Option<i32> {
    Some(match datatype.as_str()? {
        "float32" => proto::Datatype::Float32 as i32,
        "uint8" => proto::Datatype::Uint8 as i32,
        "float16" => proto::Datatype::Float16 as i32,
        _ => return None,
    })
}

fn hnsw_diff_out(diff: &Json) -> Option<proto::HnswConfigDiff> {
    let u = |key: &str| diff.get(key).and_then(Json::as_u64);
    let b = |key: &str| diff.get(key).and_then(Json::as_bool);
    diff.is_object().then(|| proto::HnswConfigDiff {
        m: u("m"),
        ef_construct: u("ef_construct"),
        full_scan_threshold: u("full_scan_threshold"),
        max_indexing_threads: u("max_indexing_threads"),
        on_disk: b("on_disk"),
        payload_m: u("payload_m"),
        inline_storage: b("inline_storage"),
    })
}

/// Quantization as Qdrant's JSON keeps it → our message (the kinds served here).
fn quantization_out(q: &Json) -> Option<proto::QuantizationConfig> {
    let b = |v: &Json, key: &str| v.get(key).and_then(Json::as_bool);
    let quantization = if let Some(s) = q.get("scalar") {
        Quantization::Scalar(proto::ScalarQuantization {
            r#type: proto::QuantizationType::Int8 as i32,
            quantile: s.get("quantile").and_then(Json::as_f64).map(|f| f as f32),
            always_ram: b(s, "always_ram"),
        })
    } else if let Some(p) = q.get("product") {
        let compression = match p.get("compression").and_then(Json::as_str)? {
            "x4" => proto::CompressionRatio::X4,
            "x8" => proto::CompressionRatio::X8,
            "x16" => proto::CompressionRatio::X16,
            "x32" => proto::CompressionRatio::X32,
            "x64" => proto::CompressionRatio::X64,
            _ => return None,
        };
        Quantization::Product(proto::ProductQuantization {
            compression: compression as i32,
            always_ram: b(p, "always_ram"),
        })
    } else if let Some(bin) = q.get("binary") {
        let encoding = bin.get("encoding").and_then(Json::as_str).and_then(|e| {
            Some(match e {
                "one_bit" => proto::BinaryQuantizationEncoding::OneBit,
                "two_bits" => proto::BinaryQuantizationEncoding::TwoBits,
                "one_and_half_bits" => proto::BinaryQuantizationEncoding::OneAndHalfBits,
                _ => return None,
            } as i32)
        });
        let query_encoding = bin
            .get("query_encoding")
            .and_then(Json::as_str)
            .and_then(|e| {
                let setting = match e {
                    "default" => query_encoding::Setting::Default,
                    "binary" => query_encoding::Setting::Binary,
                    "scalar4bits" => query_encoding::Setting::Scalar4Bits,
                    "scalar8bits" => query_encoding::Setting::Scalar8Bits,
                    _ => return None,
                };
                Some(proto::BinaryQuantizationQueryEncoding {
                    variant: Some(query_encoding::Variant::Setting(setting as i32)),
                })
            });
        Quantization::Binary(proto::BinaryQuantization {
            always_ram: b(bin, "always_ram"),
            encoding,
            query_encoding,
        })
    } else {
        return None;
    };
    Some(proto::QuantizationConfig {
        quantization: Some(quantization),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(body: Json) -> CollectionConfig {
        serde_json::from_value::<CreateCollection>(body)
            .unwrap()
            .into_config()
            .unwrap()
    }

    #[test]
    fn a_create_request_makes_the_config_its_rest_body_makes() {
        let grpc = proto::CreateCollection {
            collection_name: "c".into(),
            vectors_config: Some(proto::VectorsConfig {
                config: Some(vectors_config::Config::ParamsMap(proto::VectorParamsMap {
                    map: HashMap::from([
                        (
                            "text".to_string(),
                            proto::VectorParams {
                                size: 8,
                                distance: proto::Distance::Cosine as i32,
                                datatype: Some(proto::Datatype::Float16 as i32),
                                quantization_config: Some(proto::QuantizationConfig {
                                    quantization: Some(Quantization::Scalar(
                                        proto::ScalarQuantization {
                                            r#type: proto::QuantizationType::Int8 as i32,
                                            quantile: None,
                                            always_ram: Some(true),
                                        },
                                    )),
                                }),
                                ..Default::default()
                            },
                        ),
                        (
                            "colbert".to_string(),
                            proto::VectorParams {
                                size: 4,
                                distance: proto::Distance::Dot as i32,
                                multivector_config: Some(proto::MultiVectorConfig::default()),
                                hnsw_config: Some(proto::HnswConfigDiff {
                                    m: Some(8),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ),
                    ]),
                })),
            }),
            sparse_vectors_config: Some(proto::SparseVectorConfig {
                map: HashMap::from([(
                    "words".to_string(),
                    proto::SparseVectorParams {
                        modifier: Some(proto::Modifier::Idf as i32),
                        index: None,
                    },
                )]),
            }),
            shard_number: Some(3),
            wal_config: Some(proto::WalConfigDiff {
                wal_capacity_mb: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let config = create_request(grpc).unwrap().into_config().unwrap();
        let expected = rest(json!({
            "vectors": {
                "text": {"size": 8, "distance": "Cosine", "datatype": "float16",
                         "quantization_config": {"scalar": {"type": "int8", "always_ram": true}}},
                "colbert": {"size": 4, "distance": "Dot",
                            "multivector_config": {"comparator": "max_sim"}, "hnsw_config": {"m": 8}}
            },
            "sparse_vectors": {"words": {"modifier": "idf"}},
            "shard_number": 3,
            "wal_config": {"wal_capacity_mb": 1}
        }));
        assert_eq!(config, expected);

        // And back: the info shows what was created.
        let shown = collection_config(config);
        let params = shown.params.unwrap();
        assert_eq!(params.shard_number, 3);
        let Some(vectors_config::Config::ParamsMap(map)) = params.vectors_config.unwrap().config
        else {
            panic!("named vectors")
        };
        assert_eq!(
            map.map["text"].datatype,
            Some(proto::Datatype::Float16 as i32)
        );
        assert!(map.map["colbert"].multivector_config.is_some());
        assert_eq!(map.map["colbert"].hnsw_config.as_ref().unwrap().m, Some(8));
        assert!(matches!(
            map.map["text"]
                .quantization_config
                .as_ref()
                .unwrap()
                .quantization,
            Some(Quantization::Scalar(_))
        ));
        assert_eq!(shown.wal_config.unwrap().wal_capacity_mb, Some(1));
    }

    #[test]
    fn what_snapfs_cannot_honour_is_refused() {
        let strict = proto::CreateCollection {
            strict_mode_config: Some(vec![8, 1]),
            ..Default::default()
        };
        assert!(
            create_request(strict)
                .unwrap_err()
                .to_string()
                .contains("strict_mode_config")
        );
        let no_distance = proto::CreateCollection {
            vectors_config: Some(proto::VectorsConfig {
                config: Some(vectors_config::Config::Params(proto::VectorParams {
                    size: 4,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        assert!(
            create_request(no_distance)
                .unwrap_err()
                .to_string()
                .contains("distance")
        );
    }
}
