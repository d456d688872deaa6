//! A cluster generation's manifest: what a round recorded of the whole cluster, and
//! the stored shard snapshots that hold its data. It is kept in the snapshot store
//! beside them and read back before a restore or a listing, so everything it names
//! is checked as hostile input: its size, every collection and snapshot name, every
//! checksum and count.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// This manifest format's number.
pub const FORMAT: u32 = 1;
/// The largest manifest read back.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// The most collections one generation may name.
pub const MAX_COLLECTIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterManifest {
    pub format: u32,
    pub cluster: String,
    /// The generation's name: `<cluster>-<YYYY-MM-DD-HH-MM-SS>`.
    pub generation: String,
    /// What the nodes said they run (`GET /`).
    pub qdrant_version: Option<String>,
    /// The round's span (RFC 3339, UTC): each shard is consistent at its own pull,
    /// somewhere in it; nothing is consistent across shards.
    pub round_started: String,
    pub round_ended: String,
    pub nodes: Vec<NodeRecord>,
    pub collections: Vec<CollectionRecord>,
    pub aliases: Vec<AliasRecord>,
    /// Collections of the cluster the round did not follow, and why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub url: String,
    pub peer_id: Option<u64>,
    /// Why the round could not use it, when it could not.
    pub unreachable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionRecord {
    /// The collection's name in the cluster.
    pub name: String,
    /// Its mirror in snapfs.
    pub mirror: String,
    /// The configuration as the cluster answered it (`GET /collections/{c}`, `config`).
    pub config: Value,
    /// Its payload indexes (`payload_schema`).
    pub payload_schema: Value,
    pub shards: Vec<ShardRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    pub shard_id: u32,
    /// The stored shard snapshot of the mirror holding this shard's data.
    pub snapshot: String,
    pub size: u64,
    pub sha256: String,
    /// Exact point count of the stored state.
    pub points: u64,
    /// The peer it was last pulled from and when (RFC 3339).
    pub pulled_from: Option<u64>,
    pub pulled_at: Option<String>,
    /// The peers holding a replica of it in the cluster at the round.
    pub replicas: Vec<u64>,
    /// Why this shard holds an earlier state than the round's, if it does.
    pub stale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRecord {
    pub alias_name: String,
    pub collection_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub collection: String,
    pub reason: String,
}

impl ClusterManifest {
    /// A manifest read back from a store: parsed within its bounds and checked.
    pub fn parse(bytes: &[u8]) -> Result<ClusterManifest, String> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(format!(
                "a cluster manifest is larger than {MAX_MANIFEST_BYTES} bytes"
            ));
        }
        let manifest: ClusterManifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("the cluster manifest does not parse: {e}"))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Every name a manifest gives is one snapfs could have written.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "cluster manifest format {} (this snapfs reads {FORMAT})",
                self.format
            ));
        }
        if self.collections.len() > MAX_COLLECTIONS {
            return Err("the cluster manifest names too many collections".into());
        }
        check_generation_name(&self.cluster, &self.generation)?;
        let name =
            |n: &str| crate::storage::names::validate_collection_name(n).map_err(|e| e.to_string());
        let mut seen = std::collections::HashSet::new();
        for collection in &self.collections {
            name(&collection.name)?;
            name(&collection.mirror)?;
            // A mirror's name is its cluster's and the collection's: a manifest cannot
            // make a forget or a restore reach another collection's stored snapshots.
            if collection.mirror != format!("{}.{}", self.cluster, collection.name) {
                return Err(format!(
                    "collection {}: its mirror is not {}.{}",
                    collection.name, self.cluster, collection.name
                ));
            }
            if !seen.insert(collection.name.as_str()) {
                return Err(format!("collection {} is named twice", collection.name));
            }
            if collection.shards.len() > super::layout::MAX_SHARDS {
                return Err(format!(
                    "collection {} names too many shards",
                    collection.name
                ));
            }
            for (at, shard) in collection.shards.iter().enumerate() {
                if shard.shard_id as usize != at {
                    return Err(format!(
                        "collection {}: the shards are not 0, 1, 2, … in order",
                        collection.name
                    ));
                }
                crate::snapshot::store::check_name(&shard.snapshot).map_err(|e| e.to_string())?;
                let hex =
                    shard.sha256.len() == 64 && shard.sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex {
                    return Err(format!(
                        "collection {} shard {}: the checksum is not a SHA-256",
                        collection.name, shard.shard_id
                    ));
                }
            }
        }
        for alias in &self.aliases {
            name(&alias.alias_name)?;
            name(&alias.collection_name)?;
        }
        Ok(())
    }

    /// Every stored shard snapshot the generation needs, as (mirror, shard, name).
    pub fn snapshots(&self) -> impl Iterator<Item = (&str, u32, &str)> {
        self.collections.iter().flat_map(|c| {
            c.shards
                .iter()
                .map(move |s| (c.mirror.as_str(), s.shard_id, s.snapshot.as_str()))
        })
    }

    /// The shards that hold an earlier state than the round's.
    pub fn stale_shards(&self) -> usize {
        self.collections
            .iter()
            .flat_map(|c| &c.shards)
            .filter(|s| s.stale.is_some())
            .count()
    }
}

/// A generation name: the cluster's name, `-`, and Qdrant's timestamp form
/// (`-N` after it on a clash).
pub fn check_generation_name(cluster: &str, generation: &str) -> Result<(), String> {
    let ok = generation
        .strip_prefix(cluster)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.len() >= 19
                && rest.len() <= 32
                && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{generation:?} is not a generation of cluster {cluster}"
        ))
    }
}

/// When generation `generation` of `cluster` was named (the time in its name, UTC).
pub fn generation_time(cluster: &str, generation: &str) -> Option<std::time::SystemTime> {
    let rest = generation.strip_prefix(cluster)?.strip_prefix('-')?;
    let stamp = rest.get(..19)?;
    let parts: Vec<i64> = stamp
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, d, h, mi, s] = parts[..] else {
        return None;
    };
    let small = |v: i64| i8::try_from(v).ok();
    let at = rustic_core::jiff::civil::DateTime::new(
        i16::try_from(y).ok()?,
        small(mo)?,
        small(d)?,
        small(h)?,
        small(mi)?,
        small(s)?,
        0,
    )
    .ok()?
    .to_zoned(rustic_core::jiff::tz::TimeZone::UTC)
    .ok()?;
    Some(std::time::SystemTime::from(at.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> ClusterManifest {
        ClusterManifest {
            format: FORMAT,
            cluster: "prod".into(),
            generation: "prod-2026-12-07-13-00-00".into(),
            qdrant_version: Some("1.18.3".into()),
            round_started: "2026-12-07T13:00:00Z".into(),
            round_ended: "2026-12-07T13:00:02Z".into(),
            nodes: vec![NodeRecord {
                url: "http://127.0.0.1:6333".into(),
                peer_id: Some(7),
                unreachable: None,
            }],
            collections: vec![CollectionRecord {
                name: "c1".into(),
                mirror: "prod.c1".into(),
                config: json!({"params": {"shard_number": 1}}),
                payload_schema: json!({}),
                shards: vec![ShardRecord {
                    shard_id: 0,
                    snapshot: "prod.c1-shard-0-2026-12-07-13-00-01.snapshot".into(),
                    size: 10,
                    sha256: "a".repeat(64),
                    points: 3,
                    pulled_from: Some(7),
                    pulled_at: Some("2026-12-07T13:00:01Z".into()),
                    replicas: vec![7],
                    stale: None,
                }],
            }],
            aliases: vec![AliasRecord {
                alias_name: "live".into(),
                collection_name: "c1".into(),
            }],
            skipped: vec![],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_hostile_ones_are_refused() {
        let manifest = sample();
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(ClusterManifest::parse(&bytes).unwrap(), manifest);
        let refused = |edit: &dyn Fn(&mut ClusterManifest)| {
            let mut bad = sample();
            edit(&mut bad);
            ClusterManifest::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err()
        };
        refused(&|m| m.collections[0].shards[0].snapshot = "../../etc/passwd".into());
        refused(&|m| m.collections[0].shards[0].snapshot = "x.tar".into());
        refused(&|m| m.collections[0].mirror = "../x".into());
        refused(&|m| m.collections[0].mirror = "other.c1".into());
        refused(&|m| {
            let again = m.collections[0].clone();
            m.collections.push(again)
        });
        refused(&|m| m.collections[0].shards[0].sha256 = "zz".into());
        refused(&|m| m.collections[0].shards[0].shard_id = 3);
        refused(&|m| m.generation = "other-2026-12-07-13-00-00".into());
        refused(&|m| m.format = 2);
        refused(&|m| m.aliases[0].alias_name = ".hidden".into());
        assert!(ClusterManifest::parse(b"{\"format\":1").is_err());
        assert!(ClusterManifest::parse(&vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).is_err());
        assert_eq!(manifest.snapshots().count(), 1);
    }

    #[test]
    fn generation_names_belong_to_their_cluster() {
        assert!(check_generation_name("prod", "prod-2026-12-07-13-00-00").is_ok());
        assert!(check_generation_name("prod", "prod-2026-12-07-13-00-00-1").is_ok());
        assert!(check_generation_name("prod", "prod-x").is_err());
        assert!(check_generation_name("prod", "prod-2026-12-07-13-00-00/..").is_err());
        assert!(check_generation_name("pro", "prod-2026-12-07-13-00-00").is_err());
        let at = generation_time("prod", "prod-2026-12-07-13-00-05-1").unwrap();
        assert_eq!(
            crate::snapshot::names::name_timestamp(at),
            "2026-12-07-13-00-05"
        );
        assert!(generation_time("prod", "prod-2026-13-07-13-00-05").is_none());
    }
}
