//! A collection's `config.json`, in Qdrant's collection-config schema (`params`,
//! `hnsw_config`, `optimizer_config`, `wal_config`, …) so that it can travel inside
//! Qdrant-compatible snapshots unchanged, plus the mapping to the engine's config.
//!
//! Optional values serialize as `null` rather than disappearing, as Qdrant writes them.

use std::collections::BTreeMap;

use qdrant_edge::EdgeConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{Result, StorageError};

/// Largest dense vector Qdrant accepts.
pub const MAX_VECTOR_SIZE: u64 = 65_536;
/// More shards than this on one node only adds overhead; Qdrant's own limit is higher,
/// but every shard here has its own writer thread and WAL.
pub const MAX_SHARDS: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    Cosine,
    Euclid,
    Dot,
    Manhattan,
}

impl Distance {
    /// Whether a larger score is a better match (similarities) or a worse one (distances).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Distance::Cosine | Distance::Dot)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    pub size: u64,
    pub distance: Distance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivector_config: Option<Value>,
}

/// One unnamed vector (`{"size":8,"distance":"Cosine"}`) or named ones
/// (`{"text":{…},"image":{…}}`). The unnamed vector is the engine's vector `""`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum VectorsConfig {
    Single(Box<VectorParams>),
    Named(BTreeMap<String, VectorParams>),
}

impl<'de> Deserialize<'de> for VectorsConfig {
    // Untagged enums hide the real cause ("did not match any variant"); decide by
    // shape first so an unknown distance is reported as such.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        let is_single = value.as_object().is_some_and(|o| o.contains_key("size"));
        if is_single {
            serde_json::from_value(value)
                .map(|p| VectorsConfig::Single(Box::new(p)))
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(value)
                .map(VectorsConfig::Named)
                .map_err(D::Error::custom)
        }
    }
}

impl VectorsConfig {
    /// Vectors by engine name (`""` for the unnamed one).
    pub fn by_name(&self) -> Vec<(&str, &VectorParams)> {
        match self {
            VectorsConfig::Single(params) => vec![("", params.as_ref())],
            VectorsConfig::Named(map) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&VectorParams> {
        match self {
            VectorsConfig::Single(params) => name.is_empty().then_some(params.as_ref()),
            VectorsConfig::Named(map) => map.get(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionParams {
    pub vectors: VectorsConfig,
    #[serde(default = "one")]
    pub shard_number: u32,
    #[serde(default = "one")]
    pub replication_factor: u32,
    #[serde(default = "one")]
    pub write_consistency_factor: u32,
    #[serde(default = "yes")]
    pub on_disk_payload: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_vectors: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    pub m: usize,
    pub ef_construct: usize,
    pub full_scan_threshold: usize,
    #[serde(default)]
    pub max_indexing_threads: usize,
    #[serde(default)]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_m: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizersConfig {
    pub deleted_threshold: f64,
    pub vacuum_min_vector_number: usize,
    pub default_segment_number: usize,
    #[serde(default)]
    pub max_segment_size: Option<usize>,
    #[serde(default)]
    pub memmap_threshold: Option<usize>,
    #[serde(default)]
    pub indexing_threshold: Option<usize>,
    pub flush_interval_sec: u64,
    #[serde(default)]
    pub max_optimization_threads: Option<usize>,
    #[serde(default)]
    pub prevent_unoptimized: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalConfig {
    pub wal_capacity_mb: usize,
    pub wal_segments_ahead: usize,
    #[serde(default = "one_usize")]
    pub wal_retain_closed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub params: CollectionParams,
    pub hnsw_config: HnswConfig,
    pub optimizer_config: OptimizersConfig,
    pub wal_config: WalConfig,
    #[serde(default)]
    pub quantization_config: Option<Value>,
    #[serde(default)]
    pub uuid: Option<String>,
}

fn one() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// Qdrant's defaults for the parts a create request may leave out.
fn default_sections() -> Value {
    json!({
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                        "max_indexing_threads": 0, "on_disk": false},
        "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                             "default_segment_number": 0, "max_segment_size": null,
                             "memmap_threshold": null, "indexing_threshold": 10000,
                             "flush_interval_sec": 5, "max_optimization_threads": null,
                             "prevent_unoptimized": null},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
        "quantization_config": null,
        "uuid": null
    })
}

/// The body of `PUT /collections/{name}` (Qdrant's `CreateCollection`). The config
/// sections are partial diffs over Qdrant's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateCollection {
    pub vectors: Option<VectorsConfig>,
    pub shard_number: Option<u32>,
    pub replication_factor: Option<u32>,
    pub write_consistency_factor: Option<u32>,
    pub on_disk_payload: Option<bool>,
    pub hnsw_config: Option<Value>,
    pub optimizers_config: Option<Value>,
    pub wal_config: Option<Value>,
    pub quantization_config: Option<Value>,
    pub sparse_vectors: Option<Value>,
}

impl CreateCollection {
    pub fn into_config(self) -> Result<CollectionConfig> {
        let vectors = self.vectors.ok_or_else(|| {
            StorageError::bad_request(
                "`vectors` is required: e.g. {\"size\": 128, \"distance\": \"Cosine\"}",
            )
        })?;
        if self.sparse_vectors.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(StorageError::bad_request(
                "sparse vectors are not supported by snapfs yet",
            ));
        }
        let mut config = default_sections();
        merge_section(&mut config, "hnsw_config", self.hnsw_config)?;
        merge_section(&mut config, "optimizer_config", self.optimizers_config)?;
        merge_section(&mut config, "wal_config", self.wal_config)?;
        if let Some(q) = self.quantization_config {
            config["quantization_config"] = q;
        }
        config["params"] = json!({
            "vectors": vectors,
            "shard_number": self.shard_number.unwrap_or(1),
            "replication_factor": self.replication_factor.unwrap_or(1),
            "write_consistency_factor": self.write_consistency_factor.unwrap_or(1),
            "on_disk_payload": self.on_disk_payload.unwrap_or(true),
        });
        let config: CollectionConfig = serde_json::from_value(config)
            .map_err(|e| StorageError::bad_request(format!("Invalid collection config: {e}")))?;
        config.validate()?;
        Ok(config)
    }
}

fn merge_section(config: &mut Value, key: &str, diff: Option<Value>) -> Result<()> {
    let Some(diff) = diff else { return Ok(()) };
    if diff.is_null() {
        return Ok(());
    }
    let Value::Object(diff) = diff else {
        return Err(StorageError::bad_request(format!(
            "`{key}` must be an object"
        )));
    };
    let section = config[key]
        .as_object_mut()
        .expect("default sections are objects");
    for (k, v) in diff {
        section.insert(k, v);
    }
    Ok(())
}

impl CollectionConfig {
    pub fn validate(&self) -> Result<()> {
        let shards = self.params.shard_number;
        if shards == 0 || shards > MAX_SHARDS {
            return Err(StorageError::bad_request(format!(
                "shard_number must be between 1 and {MAX_SHARDS}, got {shards}"
            )));
        }
        let vectors = self.params.vectors.by_name();
        if vectors.is_empty() {
            return Err(StorageError::bad_request(
                "at least one vector must be configured",
            ));
        }
        for (name, params) in vectors {
            let label = if name.is_empty() {
                "the vector".to_string()
            } else {
                format!("vector `{name}`")
            };
            if params.size == 0 || params.size > MAX_VECTOR_SIZE {
                return Err(StorageError::bad_request(format!(
                    "size of {label} must be between 1 and {MAX_VECTOR_SIZE}, got {}",
                    params.size
                )));
            }
            if params
                .multivector_config
                .as_ref()
                .is_some_and(|v| !v.is_null())
            {
                return Err(StorageError::bad_request(
                    "multivectors are not supported by snapfs yet",
                ));
            }
        }
        if self.wal_config.wal_capacity_mb == 0 {
            return Err(StorageError::bad_request(
                "wal_capacity_mb must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn shard_count(&self) -> u32 {
        self.params.shard_number
    }

    /// The engine configuration every shard of this collection is created and loaded with.
    pub fn edge_config(&self) -> Result<EdgeConfig> {
        let mut vectors = serde_json::Map::new();
        for (name, params) in self.params.vectors.by_name() {
            let mut v = json!({"size": params.size, "distance": params.distance});
            if let Some(on_disk) = params.on_disk {
                v["on_disk"] = json!(on_disk);
            }
            vectors.insert(name.to_string(), v);
        }
        let hnsw = &self.hnsw_config;
        let opt = &self.optimizer_config;
        let wal = &self.wal_config;
        let edge = json!({
            "on_disk_payload": self.params.on_disk_payload,
            "vectors": vectors,
            "hnsw_config": {
                "m": hnsw.m, "ef_construct": hnsw.ef_construct,
                "full_scan_threshold": hnsw.full_scan_threshold,
                "max_indexing_threads": hnsw.max_indexing_threads,
                "on_disk": hnsw.on_disk, "payload_m": hnsw.payload_m,
            },
            "quantization_config": self.quantization_config,
            "optimizers": {
                "deleted_threshold": opt.deleted_threshold,
                "vacuum_min_vector_number": opt.vacuum_min_vector_number,
                "default_segment_number": opt.default_segment_number,
                "max_segment_size": opt.max_segment_size,
                "indexing_threshold": opt.indexing_threshold,
                "prevent_unoptimized": opt.prevent_unoptimized,
            },
            "wal_options": {
                "segment_capacity": wal.wal_capacity_mb * 1024 * 1024,
                "segment_queue_len": wal.wal_segments_ahead,
                "retain_closed": wal.wal_retain_closed.max(1),
            },
        });
        serde_json::from_value(edge).map_err(|e| {
            StorageError::bad_request(format!("collection config not usable by the engine: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: Value) -> Result<CollectionConfig> {
        let req: CreateCollection =
            serde_json::from_value(body).map_err(|e| StorageError::bad_request(e.to_string()))?;
        req.into_config()
    }

    #[test]
    fn reads_qdrant_written_config() {
        let qdrant = r#"{"params":{"vectors":{"image":{"size":8,"distance":"Euclid"},"text":{"size":16,"distance":"Dot"}},"shard_number":3,"replication_factor":1,"write_consistency_factor":1,"on_disk_payload":true},"hnsw_config":{"m":16,"ef_construct":100,"full_scan_threshold":10000,"max_indexing_threads":0,"on_disk":false},"optimizer_config":{"deleted_threshold":0.2,"vacuum_min_vector_number":1000,"default_segment_number":0,"max_segment_size":null,"memmap_threshold":null,"indexing_threshold":10000,"flush_interval_sec":5,"max_optimization_threads":null,"prevent_unoptimized":null},"wal_config":{"wal_capacity_mb":1,"wal_segments_ahead":0,"wal_retain_closed":1},"quantization_config":null,"uuid":null}"#;
        let config: CollectionConfig = serde_json::from_str(qdrant).unwrap();
        assert_eq!(config.shard_count(), 3);
        assert_eq!(config.params.vectors.get("text").unwrap().size, 16);
        // Round trip keeps Qdrant's bytes.
        assert_eq!(serde_json::to_string(&config).unwrap(), qdrant);
        config.edge_config().unwrap();
    }

    #[test]
    fn create_applies_defaults_and_diffs() {
        let config = create(json!({"vectors": {"size": 4, "distance": "Cosine"},
                                    "hnsw_config": {"m": 32}, "wal_config": {"wal_capacity_mb": 1}}))
            .unwrap();
        assert_eq!(config.hnsw_config.m, 32);
        assert_eq!(config.hnsw_config.ef_construct, 100);
        assert_eq!(config.wal_config.wal_capacity_mb, 1);
        assert_eq!(config.shard_count(), 1);
        let edge = config.edge_config().unwrap();
        assert_eq!(edge.vectors[""].size, 4);
    }

    #[test]
    fn rejects_bad_configs_with_the_cause() {
        let cases = [
            (
                json!({"vectors": {"size": 4, "distance": "Cosinus"}}),
                "unknown variant",
            ),
            (
                json!({"vectors": {"size": 0, "distance": "Dot"}}),
                "between 1 and",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 0}),
                "shard_number",
            ),
            (json!({}), "`vectors` is required"),
            (
                json!({"vectors": {"a": {"size": 4, "distance": "Dot"}}, "sparse_vectors": {"s": {}}}),
                "sparse",
            ),
        ];
        for (body, expected) in cases {
            let err = create(body.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
