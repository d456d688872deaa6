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

/// A dense vector's parameters, as Qdrant's `VectorParams`. The nested settings are
/// kept as Qdrant wrote them (so `config.json` round-trips byte for byte) and checked
/// by the engine's own types in [`CollectionConfig::edge_config`]. Unknown fields are
/// refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorParams {
    pub size: u64,
    pub distance: Distance,
    /// A diff over the collection's `hnsw_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    /// `float32` (default), `float16` or `uint8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<Value>,
    /// `{"comparator": "max_sim"}`: each point holds a list of vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivector_config: Option<Value>,
}

/// A sparse vector's parameters, as Qdrant's `SparseVectorParams`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseVectorParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<SparseIndexParams>,
    /// `idf` (inverse document frequency) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modifier: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseIndexParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_scan_threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<Value>,
}

/// Qdrant's `sharding_method`: `auto` (points routed by id) is what snapfs does;
/// `custom` (user-defined shard keys) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardingMethod {
    Auto,
    Custom,
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
    pub sparse_vectors: Option<BTreeMap<String, SparseVectorParams>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding_method: Option<ShardingMethod>,
    /// Read fan-out in a cluster; kept as given (one node reads every shard itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_fan_out_factor: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Qdrant 1.16+: vectors stored inside the HNSW graph file; kept as given (the
    /// engine decides its own storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_storage: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// Free-form user data (Qdrant's collection `metadata`), stored and shown as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
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
/// sections are partial diffs over Qdrant's defaults. Fields Qdrant has but snapfs
/// cannot honour are refused by name (see [`CreateCollection::into_config`]); fields
/// Qdrant does not have are refused by serde.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub vectors: Option<VectorsConfig>,
    pub shard_number: Option<u32>,
    pub sharding_method: Option<ShardingMethod>,
    pub replication_factor: Option<u32>,
    pub write_consistency_factor: Option<u32>,
    pub on_disk_payload: Option<bool>,
    pub hnsw_config: Option<Value>,
    pub optimizers_config: Option<Value>,
    pub wal_config: Option<Value>,
    pub quantization_config: Option<Value>,
    pub sparse_vectors: Option<BTreeMap<String, SparseVectorParams>>,
    pub metadata: Option<Value>,
    pub strict_mode_config: Option<Value>,
    pub init_from: Option<Value>,
}

impl CreateCollection {
    pub fn into_config(self) -> Result<CollectionConfig> {
        if self
            .strict_mode_config
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(StorageError::bad_request(
                "`strict_mode_config` is not supported by snapfs: it would not be enforced",
            ));
        }
        if self.init_from.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(StorageError::bad_request(
                "`init_from` is not supported by snapfs (Qdrant deprecated it): restore a snapshot instead",
            ));
        }
        let sparse = self.sparse_vectors.filter(|s| !s.is_empty());
        let vectors = match (self.vectors, &sparse) {
            (Some(vectors), _) => vectors,
            (None, Some(_)) => VectorsConfig::Named(BTreeMap::new()),
            (None, None) => {
                return Err(StorageError::bad_request(
                    "`vectors` is required: e.g. {\"size\": 128, \"distance\": \"Cosine\"} (or `sparse_vectors`)",
                ));
            }
        };
        let mut config = default_sections();
        merge_section(&mut config, "hnsw_config", self.hnsw_config)?;
        merge_section(&mut config, "optimizer_config", self.optimizers_config)?;
        merge_section(&mut config, "wal_config", self.wal_config)?;
        if let Some(q) = self.quantization_config {
            config["quantization_config"] = q;
        }
        if let Some(metadata) = self.metadata.filter(|m| !m.is_null()) {
            config["metadata"] = metadata;
        }
        config["params"] = json!({
            "vectors": vectors,
            "shard_number": self.shard_number.unwrap_or(1),
            "replication_factor": self.replication_factor.unwrap_or(1),
            "write_consistency_factor": self.write_consistency_factor.unwrap_or(1),
            "on_disk_payload": self.on_disk_payload.unwrap_or(true),
        });
        if let Some(sparse) = sparse {
            config["params"]["sparse_vectors"] = json!(sparse);
        }
        if let Some(method) = self.sharding_method {
            config["params"]["sharding_method"] = json!(method);
        }
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
        if self.params.sharding_method == Some(ShardingMethod::Custom) {
            return Err(StorageError::bad_request(
                "sharding_method `custom` is not supported by snapfs: points are routed to shards by id (`auto`)",
            ));
        }
        let vectors = self.params.vectors.by_name();
        if vectors.is_empty() && self.sparse_vectors().is_empty() {
            return Err(StorageError::bad_request(
                "at least one vector (dense or sparse) must be configured",
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
        }
        for name in self.sparse_vectors().keys() {
            if name.is_empty() {
                return Err(StorageError::bad_request("a sparse vector needs a name"));
            }
            if self.params.vectors.get(name).is_some() {
                return Err(StorageError::bad_request(format!(
                    "`{name}` is both a dense and a sparse vector: names must be unique"
                )));
            }
        }
        if self.wal_config.wal_capacity_mb == 0 {
            return Err(StorageError::bad_request(
                "wal_capacity_mb must be at least 1",
            ));
        }
        // The engine's own types check every nested setting (datatypes, quantization,
        // multivector comparators, modifiers) and name what they refuse.
        self.edge_config()?;
        Ok(())
    }

    pub fn shard_count(&self) -> u32 {
        self.params.shard_number
    }

    /// The sparse vectors, by name (none: empty).
    pub fn sparse_vectors(&self) -> BTreeMap<String, SparseVectorParams> {
        self.params.sparse_vectors.clone().unwrap_or_default()
    }

    /// The engine configuration every shard of this collection is created and loaded with.
    pub fn edge_config(&self) -> Result<EdgeConfig> {
        let hnsw = serde_json::to_value(&self.hnsw_config).expect("plain data");
        let mut vectors = serde_json::Map::new();
        for (name, params) in self.params.vectors.by_name() {
            let label = if name.is_empty() { "the vector" } else { name };
            let mut v = json!({"size": params.size, "distance": params.distance});
            if let Some(on_disk) = params.on_disk {
                v["on_disk"] = json!(on_disk);
            }
            for (key, value) in [
                ("datatype", &params.datatype),
                ("multivector_config", &params.multivector_config),
                ("quantization_config", &params.quantization_config),
            ] {
                if let Some(value) = value.as_ref().filter(|v| !v.is_null()) {
                    v[key] = value.clone();
                }
            }
            if let Some(diff) = params.hnsw_config.as_ref().filter(|v| !v.is_null()) {
                let Value::Object(diff) = diff else {
                    return Err(StorageError::bad_request(format!(
                        "`hnsw_config` of {label} must be an object"
                    )));
                };
                let mut merged = hnsw.clone();
                for (key, value) in diff {
                    merged[key] = value.clone();
                }
                // Checked against the collection-level fields (unknown keys named).
                serde_json::from_value::<HnswConfig>(merged.clone()).map_err(|e| {
                    StorageError::bad_request(format!("`hnsw_config` of {label}: {e}"))
                })?;
                v["hnsw_config"] = merged;
            }
            serde_json::from_value::<qdrant_edge::EdgeVectorParams>(v.clone())
                .map_err(|e| StorageError::bad_request(format!("vector {label}: {e}")))?;
            vectors.insert(name.to_string(), v);
        }
        let mut sparse_vectors = serde_json::Map::new();
        for (name, params) in self.sparse_vectors() {
            let index = params.index.unwrap_or_default();
            let mut v = json!({});
            if let Some(threshold) = index.full_scan_threshold {
                v["full_scan_threshold"] = json!(threshold);
            }
            if let Some(on_disk) = index.on_disk {
                v["on_disk"] = json!(on_disk);
            }
            if let Some(datatype) = index.datatype.filter(|d| !d.is_null()) {
                v["datatype"] = datatype;
            }
            if let Some(modifier) = params.modifier.filter(|m| !m.is_null()) {
                v["modifier"] = modifier;
            }
            serde_json::from_value::<qdrant_edge::EdgeSparseVectorParams>(v.clone())
                .map_err(|e| StorageError::bad_request(format!("sparse vector {name}: {e}")))?;
            sparse_vectors.insert(name, v);
        }
        let opt = &self.optimizer_config;
        let wal = &self.wal_config;
        let edge = json!({
            "on_disk_payload": self.params.on_disk_payload,
            "vectors": vectors,
            "sparse_vectors": sparse_vectors,
            "hnsw_config": hnsw,
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
    fn takes_what_qdrant_collections_hold() {
        let config = create(json!({
            "vectors": {
                "dense": {"size": 8, "distance": "Cosine", "datatype": "float16",
                          "quantization_config": {"scalar": {"type": "int8", "always_ram": true}},
                          "hnsw_config": {"m": 8}},
                "colbert": {"size": 4, "distance": "Dot", "multivector_config": {"comparator": "max_sim"}},
                "bytes": {"size": 4, "distance": "Euclid", "datatype": "uint8", "on_disk": true,
                          "quantization_config": {"binary": {"always_ram": false}}}
            },
            "sparse_vectors": {"text": {"modifier": "idf", "index": {"on_disk": true}}},
            "sharding_method": "auto",
            "metadata": {"team": "search"}
        }))
        .unwrap();
        let edge = config.edge_config().unwrap();
        assert_eq!(edge.vectors.len(), 3);
        assert_eq!(edge.sparse_vectors.len(), 1);
        // The per-vector HNSW diff is merged over the collection's.
        assert_eq!(edge.vectors["dense"].hnsw_config.as_ref().unwrap().m, 8);
        assert_eq!(
            edge.vectors["dense"]
                .hnsw_config
                .as_ref()
                .unwrap()
                .ef_construct,
            100
        );
        // Only sparse vectors is a collection too.
        create(json!({"sparse_vectors": {"text": {}}})).unwrap();
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
                json!({"vectors": {"size": 4, "distance": "Dot", "colour": "blue"}}),
                "unknown field `colour`",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot"}, "sharding_method": "custom"}),
                "sharding_method `custom`",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot"}, "strict_mode_config": {"enabled": true}}),
                "strict_mode_config",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot"}, "hnsw_config": {"mm": 3}}),
                "unknown field `mm`",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot", "datatype": "float64"}}),
                "float64",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot", "multivector_config": {"comparator": "min_sim"}}}),
                "min_sim",
            ),
            (
                json!({"sparse_vectors": {"s": {"modifier": "bm42"}}}),
                "bm42",
            ),
            (
                json!({"sparse_vectors": {"s": {"index": {"on_disk": true, "fast": 1}}}}),
                "unknown field `fast`",
            ),
            (
                json!({"vectors": {"s": {"size": 4, "distance": "Dot"}}, "sparse_vectors": {"s": {}}}),
                "both a dense and a sparse vector",
            ),
            (
                json!({"vectors": {"size": 4, "distance": "Dot"}, "payload_things": 1}),
                "unknown field `payload_things`",
            ),
        ];
        for (body, expected) in cases {
            let err = create(body.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
