//! Where a collection's shards live in a Qdrant cluster, read from a node's
//! `GET /collections/{c}/cluster`, and which replica a round pulls each shard from.
//!
//! A node answers from its own point of view: its replicas in `local_shards`, every
//! other replica in `remote_shards`; the union is the whole placement. Qdrant's
//! partial snapshot endpoints serve any local replica, whatever its state, so the
//! rule "pull only from an Active replica" is kept here. Manifests are per replica
//! (the replicas of a shard do not share segment ids), so a shard is pulled from the
//! replica it came from last time while that one is Active: another one would resend
//! the whole shard.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

/// The most shards one collection's layout may name (Qdrant caps shard_number far
/// below; anything above is a broken or hostile answer).
pub const MAX_SHARDS: usize = 4096;
/// The most replicas one shard may list.
pub const MAX_REPLICAS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub peer_id: u64,
    /// Qdrant's replica state, as it spells it (`Active`, `Dead`, `Partial`, …).
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlacement {
    pub shard_id: u32,
    pub replicas: Vec<Replica>,
    /// A shard transfer into or out of it is under way.
    pub in_transfer: bool,
}

impl ShardPlacement {
    /// The peers holding an Active replica (Qdrant's source of truth for reads).
    pub fn active(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|r| r.state == "Active")
            .map(|r| r.peer_id)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionLayout {
    /// The answering node's peer id.
    pub peer_id: u64,
    pub shards: Vec<ShardPlacement>,
    /// Resharding is under way (shard ids and point routing are changing).
    pub resharding: bool,
    /// Some replica carries a shard key (custom sharding).
    pub custom_keys: bool,
}

/// Read a `/collections/{c}/cluster` answer (its `result`), bounded.
pub fn parse_layout(result: &Value) -> Result<CollectionLayout, String> {
    let peer_id = result["peer_id"]
        .as_u64()
        .ok_or("the cluster answer has no peer_id")?;
    let mut shards: BTreeMap<u32, ShardPlacement> = BTreeMap::new();
    let mut custom_keys = false;
    let mut add = |entry: &Value, peer: u64| -> Result<(), String> {
        let shard_id = entry["shard_id"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or("a shard entry has no shard_id")?;
        let state = entry["state"]
            .as_str()
            .filter(|s| s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphabetic()))
            .ok_or("a shard entry has no state")?;
        custom_keys |= entry.get("shard_key").is_some_and(|k| !k.is_null());
        if shards.len() >= MAX_SHARDS && !shards.contains_key(&shard_id) {
            return Err(format!("the layout names more than {MAX_SHARDS} shards"));
        }
        let placement = shards.entry(shard_id).or_insert_with(|| ShardPlacement {
            shard_id,
            replicas: Vec::new(),
            in_transfer: false,
        });
        if placement.replicas.len() >= MAX_REPLICAS {
            return Err(format!(
                "shard {shard_id} lists more than {MAX_REPLICAS} replicas"
            ));
        }
        placement.replicas.push(Replica {
            peer_id: peer,
            state: state.to_string(),
        });
        Ok(())
    };
    let list = |key: &str| -> Result<Vec<Value>, String> {
        match &result[key] {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) if items.len() <= MAX_SHARDS * 4 => Ok(items.clone()),
            _ => Err(format!("`{key}` is not a list of shards")),
        }
    };
    for entry in list("local_shards")? {
        add(&entry, peer_id)?;
    }
    for entry in list("remote_shards")? {
        let peer = entry["peer_id"]
            .as_u64()
            .ok_or("a remote shard entry has no peer_id")?;
        add(&entry, peer)?;
    }
    for transfer in list("shard_transfers")? {
        if let Some(id) = transfer["shard_id"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            && let Some(placement) = shards.get_mut(&id)
        {
            placement.in_transfer = true;
        }
    }
    let resharding = result["resharding_operations"]
        .as_array()
        .is_some_and(|ops| !ops.is_empty());
    Ok(CollectionLayout {
        peer_id,
        shards: shards.into_values().collect(),
        resharding,
        custom_keys,
    })
}

/// Whether a round follows a collection with this layout and `shard_number`, or why not.
pub fn why_not_followed(layout: &CollectionLayout, shard_number: u32) -> Option<String> {
    if layout.custom_keys {
        return Some(
            "custom sharding (shard keys) is not followed: its shard ids do not map onto a mirror's shards"
                .into(),
        );
    }
    if layout.resharding {
        return Some(
            "resharding is under way: the collection keeps its previous state until it ends".into(),
        );
    }
    let ids: Vec<u32> = layout.shards.iter().map(|s| s.shard_id).collect();
    let expected: Vec<u32> = (0..shard_number).collect();
    if ids != expected {
        return Some(format!(
            "the layout names shards {ids:?}, the configuration {shard_number} shards: not followed this round"
        ));
    }
    None
}

/// The peers to pull a shard from, in order: its Active replicas on reachable nodes,
/// the previous round's source first (its manifest matches ours), then by peer id.
pub fn sources(
    shard: &ShardPlacement,
    previous: Option<u64>,
    reachable: &HashSet<u64>,
) -> Vec<u64> {
    let mut peers: Vec<u64> = shard
        .active()
        .into_iter()
        .filter(|p| reachable.contains(p))
        .collect();
    peers.sort_unstable();
    peers.dedup();
    if let Some(previous) = previous
        && let Some(at) = peers.iter().position(|p| *p == previous)
    {
        peers.remove(at);
        peers.insert(0, previous);
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({
            "peer_id": 10, "shard_count": 3,
            "local_shards": [{"shard_id": 0, "points_count": 91, "state": "Active"},
                             {"shard_id": 2, "points_count": 111, "state": "Dead"}],
            "remote_shards": [{"shard_id": 0, "peer_id": 20, "state": "Active"},
                              {"shard_id": 1, "peer_id": 20, "state": "Active"},
                              {"shard_id": 1, "peer_id": 30, "state": "Partial"},
                              {"shard_id": 2, "peer_id": 30, "state": "Active"}],
            "shard_transfers": [{"shard_id": 1, "from": 20, "to": 30, "sync": true, "method": "snapshot"}]
        })
    }

    #[test]
    fn the_union_of_local_and_remote_is_the_placement() {
        let layout = parse_layout(&answer()).unwrap();
        assert_eq!(layout.peer_id, 10);
        assert_eq!(layout.shards.len(), 3);
        assert_eq!(layout.shards[0].active(), [10, 20]);
        assert_eq!(layout.shards[1].active(), [20]);
        assert!(layout.shards[1].in_transfer);
        assert_eq!(
            layout.shards[2].active(),
            [30],
            "a Dead replica is no source"
        );
        assert_eq!(why_not_followed(&layout, 3), None);
        assert!(why_not_followed(&layout, 4).is_some());
    }

    #[test]
    fn sources_are_active_reachable_and_the_previous_one_first() {
        let layout = parse_layout(&answer()).unwrap();
        let all: HashSet<u64> = [10, 20, 30].into();
        assert_eq!(sources(&layout.shards[0], Some(20), &all), [20, 10]);
        assert_eq!(sources(&layout.shards[0], None, &all), [10, 20]);
        assert_eq!(sources(&layout.shards[0], Some(30), &all), [10, 20]);
        let without_10: HashSet<u64> = [20, 30].into();
        assert_eq!(sources(&layout.shards[0], Some(10), &without_10), [20]);
        assert!(sources(&layout.shards[2], None, &without_10).len() == 1);
        let only_10: HashSet<u64> = [10].into();
        assert!(sources(&layout.shards[2], None, &only_10).is_empty());
    }

    #[test]
    fn custom_sharding_resharding_and_garbage_are_told_apart() {
        let mut custom = answer();
        custom["local_shards"][0]["shard_key"] = json!("eu");
        let layout = parse_layout(&custom).unwrap();
        assert!(
            why_not_followed(&layout, 3)
                .unwrap()
                .contains("custom sharding")
        );
        let mut resharding = answer();
        resharding["resharding_operations"] =
            json!([{"direction": "up", "shard_id": 3, "peer_id": 10}]);
        let layout = parse_layout(&resharding).unwrap();
        assert!(why_not_followed(&layout, 3).unwrap().contains("resharding"));
        assert!(parse_layout(&json!({"local_shards": []})).is_err());
        assert!(parse_layout(&json!({"peer_id": 1, "local_shards": "x"})).is_err());
        assert!(
            parse_layout(
                &json!({"peer_id": 1, "local_shards": [{"shard_id": 0, "state": "A\nctive"}]})
            )
            .is_err()
        );
        let many: Vec<Value> = (0..5000)
            .map(|i| json!({"shard_id": i, "state": "Active"}))
            .collect();
        assert!(parse_layout(&json!({"peer_id": 1, "local_shards": many})).is_err());
    }
}
