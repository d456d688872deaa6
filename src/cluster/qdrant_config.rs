//! A collection's configuration as a Qdrant node answers it (`GET /collections/{c}`,
//! `result.config`), turned into the create request that makes the same collection:
//! in a snapfs mirror, or in a Qdrant cluster at restore. The two shapes differ
//! (GET nests vectors and shard fields under `params` and says `optimizer_config`,
//! create wants them at the top and says `optimizers_config`).

use serde_json::{Map, Value, json};

use crate::storage::CreateCollection;

/// The create body Qdrant takes for the configuration `config` (GET's `config`).
pub fn create_body(config: &Value) -> Value {
    let mut body = Map::new();
    let params = &config["params"];
    for key in [
        "vectors",
        "shard_number",
        "replication_factor",
        "write_consistency_factor",
        "on_disk_payload",
        "sparse_vectors",
        "sharding_method",
    ] {
        if let Some(value) = params.get(key).filter(|v| !v.is_null()) {
            body.insert(key.to_string(), value.clone());
        }
    }
    for (from, to) in [
        ("hnsw_config", "hnsw_config"),
        ("optimizer_config", "optimizers_config"),
        ("wal_config", "wal_config"),
        ("quantization_config", "quantization_config"),
        ("strict_mode_config", "strict_mode_config"),
        ("metadata", "metadata"),
    ] {
        if let Some(value) = config.get(from).filter(|v| !v.is_null()) {
            body.insert(to.to_string(), value.clone());
        }
    }
    Value::Object(body)
}

/// The request that creates a snapfs mirror of a collection configured so. What
/// one node cannot enforce and does not change the data (strict mode: the mirror
/// takes no writes anyway) is left out.
pub fn mirror_request(config: &Value) -> Result<CreateCollection, String> {
    let mut body = create_body(config);
    if let Some(map) = body.as_object_mut() {
        map.remove("strict_mode_config");
    }
    serde_json::from_value(body).map_err(|e| format!("the collection's configuration: {e}"))
}

/// What must match for a mirror to take a cluster shard's data: the vectors (names,
/// sizes, distances, multivectors), the sparse vectors and the shard count.
pub fn data_shape(config: &Value) -> Value {
    let params = &config["params"];
    let vectors = match &params["vectors"] {
        Value::Object(map) if map.contains_key("size") => {
            json!({"": vector_shape(&params["vectors"])})
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, v)| (name.clone(), vector_shape(v)))
                .collect(),
        ),
        _ => json!({}),
    };
    let sparse: Vec<&String> = params["sparse_vectors"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    json!({
        "vectors": vectors,
        "sparse_vectors": sparse,
        "shard_number": params["shard_number"].as_u64().unwrap_or(1),
    })
}

fn vector_shape(v: &Value) -> Value {
    json!({
        "size": v["size"],
        "distance": v["distance"],
        "multivector": v.get("multivector_config").is_some_and(|m| !m.is_null()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qdrant_config() -> Value {
        json!({
            "params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 3,
                       "replication_factor": 2, "write_consistency_factor": 1, "on_disk_payload": true,
                       "sparse_vectors": {"text": {"modifier": "idf"}}},
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0, "on_disk": false},
            "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 0,
                                 "max_segment_size": null, "memmap_threshold": null, "indexing_threshold": 10000,
                                 "flush_interval_sec": 5, "max_optimization_threads": null, "prevent_unoptimized": null},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
            "quantization_config": null,
            "strict_mode_config": {"enabled": false}
        })
    }

    #[test]
    fn a_get_config_becomes_the_create_body_and_a_mirror_config() {
        let body = create_body(&qdrant_config());
        assert_eq!(body["shard_number"], 3);
        assert_eq!(body["optimizers_config"]["flush_interval_sec"], 5);
        assert!(body.get("optimizer_config").is_none());
        assert!(
            body.get("quantization_config").is_none(),
            "null sections are left out"
        );
        let config = mirror_request(&qdrant_config())
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.shard_count(), 3);
        assert_eq!(config.params.replication_factor, 2);
        assert!(config.sparse_vectors().contains_key("text"));
    }

    #[test]
    fn the_data_shape_sees_vectors_sparse_vectors_and_shards_only() {
        let before = qdrant_config();
        let mut hnsw = before.clone();
        hnsw["hnsw_config"]["m"] = json!(32);
        assert_eq!(data_shape(&before), data_shape(&hnsw));
        let mut size = before.clone();
        size["params"]["vectors"]["size"] = json!(8);
        assert_ne!(data_shape(&before), data_shape(&size));
        let mut shards = before.clone();
        shards["params"]["shard_number"] = json!(4);
        assert_ne!(data_shape(&before), data_shape(&shards));
        let mut sparse = before;
        sparse["params"]["sparse_vectors"] = json!({});
        assert_ne!(data_shape(&sparse), data_shape(&qdrant_config()));
    }
}
