//! Restoring a cluster generation into a Qdrant cluster (the one it came from, or a
//! fresh one with enough nodes): every check first, then the writes.
//!
//! Checks, before anything is written: the manifest reads and every stored shard
//! snapshot it names is there; every given node answers and the nodes given are all
//! the cluster's peers (a shard can only be uploaded through the REST port of the
//! node that should hold it); there are at least as many nodes as the largest
//! replication factor; a collection that exists already has the recorded vectors
//! and shard count. Then, per collection: create it with the recorded configuration
//! where missing, its payload indexes, upload each shard's archive to every node
//! to one node holding a replica (`priority=snapshot`, the recorded SHA-256 checked
//! by Qdrant; Qdrant re-syncs the other replicas from it), then the aliases; wait until every replica is Active and no transfer runs, and
//! compare each replica's exact point count with the manifest.
//!
//! Qdrant checks nothing about a shard snapshot's fit (a shard of 4-dimensional
//! vectors uploads into an 8-dimensional collection, shard 0's data into shard 1):
//! the shard ids and the configuration are snapfs's to get right, and are taken
//! from the manifest only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::follow::{POLL, read_manifest_blocking};
use super::{Service, run_blocking};
use crate::cluster::layout;
use crate::cluster::manifest::ClusterManifest;
use crate::cluster::qdrant_config;
use crate::snapshot::Scope;
use crate::snapshot::partial::peer::Peer;
use crate::storage::names::url_segment;
use crate::storage::{Result, StorageError};

/// How long a restore waits for the target's replicas to settle (Active, no
/// transfers) after the uploads.
const SETTLE: Duration = Duration::from_secs(300);

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The target cluster's nodes (REST base URLs): all of its peers.
    pub nodes: Vec<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// List what would be done, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl std::fmt::Debug for RestoreRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("nodes", &self.nodes)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub cluster: String,
    pub generation: String,
    pub dry_run: bool,
    /// What was done (or, in a dry run, would be), in order.
    pub steps: Vec<String>,
    pub verified: Vec<ShardCheck>,
    /// Every replica holds the recorded point count.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardCheck {
    pub collection: String,
    pub shard_id: u32,
    pub expected: u64,
    /// (peer, exact count of its replica).
    pub replicas: Vec<(u64, u64)>,
    pub ok: bool,
}

/// A target node, as it answered.
struct Target {
    peer: Arc<Peer>,
    peer_id: u64,
}

/// Restore generation `generation` of followed cluster `cluster` into the Qdrant
/// cluster whose nodes `request` names.
pub async fn restore(
    service: &Arc<Service>,
    cluster: &str,
    generation: &str,
    request: RestoreRequest,
) -> Result<RestoreReport> {
    service.follow.cluster(cluster)?;
    // Nothing the generation names is forgotten while it is restored.
    let _gc = service.follow.generations_gc.read().await;
    let store = service.store.clone();
    let manifest = {
        let (store, cluster, generation) =
            (store.clone(), cluster.to_string(), generation.to_string());
        run_blocking(move || {
            let manifest = read_manifest_blocking(&*store, &cluster, &generation)?;
            // Every stored shard snapshot it names is there, before anything is written.
            for (mirror, shard, name) in manifest.snapshots() {
                store
                    .stat(&Scope::Shard(mirror.to_string(), shard), name)
                    .map_err(|e| match e {
                        StorageError::NotFound(_) => StorageError::NotFound(format!(
                            "generation {generation} is incomplete: stored snapshot {name} of `{mirror}` shard {shard} is gone"
                        )),
                        other => other,
                    })?;
            }
            Ok(manifest)
        })
        .await?
    };
    let mut report = RestoreReport {
        cluster: cluster.to_string(),
        generation: generation.to_string(),
        dry_run: request.dry_run,
        steps: Vec::new(),
        verified: Vec::new(),
        ok: false,
    };
    let targets = meet_targets(service, &request).await?;
    check_fits(&manifest, &targets).await?;
    let first = targets
        .values()
        .next()
        .expect("one node at least")
        .peer
        .clone();

    for collection in &manifest.collections {
        let name = &collection.name;
        let path = format!("/collections/{}", url_segment(name));
        let exists = first
            .get_json("reading a collection", &path)
            .await?
            .is_some();
        if !exists {
            report.steps.push(format!(
                "create collection `{name}` ({} shards, replication factor {})",
                collection.config["params"]["shard_number"],
                collection.config["params"]["replication_factor"]
                    .as_u64()
                    .unwrap_or(1)
            ));
            if !request.dry_run {
                let body = qdrant_config::create_body(&collection.config);
                first
                    .call_json(
                        "creating a collection",
                        reqwest::Method::PUT,
                        &path,
                        Some(&body),
                    )
                    .await?;
                wait_settled(&first, name, None).await?;
            }
        }
        for (field, schema) in collection.payload_schema.as_object().into_iter().flatten() {
            let field_schema = match schema.get("params").filter(|p| !p.is_null()) {
                Some(params) => params.clone(),
                None => schema["data_type"].clone(),
            };
            report.steps.push(format!(
                "create payload index `{field}` ({field_schema}) on `{name}`"
            ));
            if !request.dry_run {
                first
                    .call_json(
                        "creating a payload index",
                        reqwest::Method::PUT,
                        &format!("{path}/index?wait=true"),
                        Some(&json!({"field_name": field, "field_schema": field_schema})),
                    )
                    .await?;
            }
        }
        // Where each shard's replicas are (in a dry run of a collection still to be
        // created: not known yet).
        let placement = if exists || !request.dry_run {
            let answer = first
                .get_json(
                    "reading a collection's shard layout",
                    &format!("{path}/cluster"),
                )
                .await?
                .unwrap_or(Value::Null);
            Some(layout::parse_layout(&answer["result"]).map_err(|why| {
                StorageError::Peer(format!("the target's layout of `{name}`: {why}"))
            })?)
        } else {
            None
        };
        for shard in &collection.shards {
            let holders: Vec<u64> = placement
                .as_ref()
                .and_then(|p| p.shards.iter().find(|s| s.shard_id == shard.shard_id))
                .map(|s| s.replicas.iter().map(|r| r.peer_id).collect())
                .unwrap_or_default();
            report.steps.push(format!(
                "upload shard {} of `{name}` ({} points, {} bytes, sha256 {}) to {}, Qdrant re-syncs its other replicas",
                shard.shard_id,
                shard.points,
                shard.size,
                &shard.sha256[..12],
                match holders.first() {
                    None => "a node Qdrant places a replica on".to_string(),
                    Some(first) => format!("peer {first}"),
                }
            ));
            if request.dry_run {
                continue;
            }
            // One holder takes the archive with priority `snapshot`; Qdrant marks
            // the other replicas Dead and re-syncs them from it by itself (what its
            // documentation recommends for a migration). Uploading to every holder
            // makes each upload mark the others Dead in turn: transfers chase each
            // other.
            let Some(holder) = holders.first() else {
                return Err(StorageError::Peer(format!(
                    "the target lists no replica of shard {} of `{name}`",
                    shard.shard_id
                )));
            };
            let target = targets.get(holder).ok_or_else(|| {
                StorageError::Peer(format!(
                    "peer {holder} holds shard {} of `{name}` but was not given as a node",
                    shard.shard_id
                ))
            })?;
            upload_shard(service, &target.peer, collection, shard).await?;
        }
    }
    if !manifest.aliases.is_empty() {
        let existing = first
            .get_json("listing aliases", "/aliases")
            .await?
            .unwrap_or(Value::Null);
        let points_to: HashMap<String, String> = existing["result"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["alias_name"].as_str()?.to_string(),
                    a["collection_name"].as_str()?.to_string(),
                ))
            })
            .collect();
        for alias in &manifest.aliases {
            if points_to.get(&alias.alias_name) == Some(&alias.collection_name) {
                continue;
            }
            report.steps.push(format!(
                "alias `{}` → `{}`",
                alias.alias_name, alias.collection_name
            ));
            if request.dry_run {
                continue;
            }
            let mut actions = Vec::new();
            if points_to.contains_key(&alias.alias_name) {
                actions.push(json!({"delete_alias": {"alias_name": alias.alias_name}}));
            }
            actions.push(json!({"create_alias": {
                "collection_name": alias.collection_name, "alias_name": alias.alias_name}}));
            first
                .call_json(
                    "creating an alias",
                    reqwest::Method::POST,
                    "/collections/aliases",
                    Some(&json!({"actions": actions})),
                )
                .await?;
        }
    }
    if request.dry_run {
        report.ok = true;
        return Ok(report);
    }
    for collection in &manifest.collections {
        wait_settled(&first, &collection.name, Some(SETTLE)).await?;
        report.verified.extend(verify(&targets, collection).await?);
    }
    report.ok = report.verified.iter().all(|c| c.ok);
    tracing::info!(
        cluster,
        generation,
        ok = report.ok,
        shards = report.verified.len(),
        "cluster generation restored"
    );
    Ok(report)
}

/// Every given node, by peer id; all must answer, and together be the whole cluster.
async fn meet_targets(
    service: &Service,
    request: &RestoreRequest,
) -> Result<BTreeMap<u64, Target>> {
    if request.nodes.is_empty() {
        return Err(StorageError::bad_request(
            "give the target cluster's nodes (their REST URLs)",
        ));
    }
    let mut targets = BTreeMap::new();
    let mut peers_known = 0usize;
    for url in &request.nodes {
        let peer = Peer::new(url, request.api_key.as_deref(), &service.fetch)?;
        let answer = peer
            .get_json("asking the target node about its cluster", "/cluster")
            .await?
            .ok_or_else(|| {
                StorageError::Peer(format!("the node at {url} has no /cluster: is it Qdrant?"))
            })?;
        let result = &answer["result"];
        if result["status"].as_str() != Some("enabled") {
            return Err(StorageError::bad_request(format!(
                "the node at {url} does not run in cluster mode: restore a cluster generation into a Qdrant cluster"
            )));
        }
        let peer_id = result["peer_id"]
            .as_u64()
            .ok_or_else(|| StorageError::Peer(format!("the node at {url} gave no peer_id")))?;
        peers_known = peers_known.max(result["peers"].as_object().map_or(0, |p| p.len()));
        if targets
            .insert(
                peer_id,
                Target {
                    peer: Arc::new(peer),
                    peer_id,
                },
            )
            .is_some()
        {
            return Err(StorageError::bad_request(format!(
                "two of the given URLs reach the same node (peer {peer_id})"
            )));
        }
    }
    if peers_known > targets.len() {
        return Err(StorageError::bad_request(format!(
            "the target cluster has {peers_known} nodes, {} were given: give every node's REST URL (a shard is uploaded to the node that holds it)",
            targets.len()
        )));
    }
    Ok(targets)
}

/// The generation fits the target: enough nodes for every replication factor, and
/// collections that exist have the recorded vectors and shard count.
async fn check_fits(manifest: &ClusterManifest, targets: &BTreeMap<u64, Target>) -> Result<()> {
    let first = &targets.values().next().expect("one node").peer;
    for collection in &manifest.collections {
        let factor = collection.config["params"]["replication_factor"]
            .as_u64()
            .unwrap_or(1);
        if factor as usize > targets.len() {
            return Err(StorageError::bad_request(format!(
                "collection `{}` has replication factor {factor}: the target cluster has {} nodes, too few; nothing was written",
                collection.name,
                targets.len()
            )));
        }
        let path = format!("/collections/{}", url_segment(&collection.name));
        if let Some(info) = first.get_json("reading a collection", &path).await? {
            let have = qdrant_config::data_shape(&info["result"]["config"]);
            let want = qdrant_config::data_shape(&collection.config);
            if have != want {
                return Err(StorageError::bad_request(format!(
                    "collection `{}` exists in the target with other vectors or shards ({have}) than the generation's ({want}): delete it or restore elsewhere; nothing was written",
                    collection.name
                )));
            }
        }
    }
    Ok(())
}

/// Upload one shard's stored archive to one node (`priority=snapshot`, checksum
/// checked by Qdrant).
async fn upload_shard(
    service: &Service,
    peer: &Peer,
    collection: &crate::cluster::manifest::CollectionRecord,
    shard: &crate::cluster::manifest::ShardRecord,
) -> Result<()> {
    let (scope, name) = super::follow::shard_snapshot_scope(collection, shard);
    let store = service.store.clone();
    let opened = run_blocking(move || store.open(&scope, &name)).await?;
    if opened.snapshot.size != shard.size {
        return Err(StorageError::internal(format!(
            "stored snapshot {} is {} bytes, the manifest says {}",
            shard.snapshot, opened.snapshot.size, shard.size
        )));
    }
    let reader = opened.reader.clone();
    let size = shard.size;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut offset = 0u64;
        while offset < size {
            let mut buf = vec![0u8; (size - offset).min(1 << 20) as usize];
            let chunk = match reader.read_at(offset, &mut buf) {
                Ok(0) => Err(std::io::Error::other("the stored snapshot ended early")),
                Ok(n) => {
                    buf.truncate(n);
                    offset += n as u64;
                    Ok(bytes::Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let path = format!(
        "/collections/{}/shards/{}/snapshots/upload?priority=snapshot&wait=true&checksum={}",
        url_segment(&collection.name),
        shard.shard_id,
        shard.sha256
    );
    peer.upload_snapshot(
        &format!(
            "uploading shard {} of `{}`",
            shard.shard_id, collection.name
        ),
        &path,
        chunks,
        size,
        service.fetch.total_timeout,
    )
    .await?;
    Ok(())
}

/// Wait until every replica of `collection` is Active and no transfer runs.
async fn wait_settled(peer: &Peer, collection: &str, limit: Option<Duration>) -> Result<()> {
    let limit = limit.unwrap_or(Duration::from_secs(60));
    let started = Instant::now();
    let path = format!("/collections/{}/cluster", url_segment(collection));
    let mut seen = String::new();
    loop {
        let answer = peer
            .get_json("reading a collection's shard layout", &path)
            .await?
            .unwrap_or(Value::Null);
        if let Ok(layout) = layout::parse_layout(&answer["result"]) {
            seen = layout
                .shards
                .iter()
                .map(|s| {
                    let states: Vec<String> = s
                        .replicas
                        .iter()
                        .map(|r| format!("{}:{}", r.peer_id, r.state))
                        .collect();
                    format!(
                        "shard {} [{}]{}",
                        s.shard_id,
                        states.join(" "),
                        if s.in_transfer { " in transfer" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let settled = !layout.shards.is_empty()
                && layout
                    .shards
                    .iter()
                    .all(|s| !s.in_transfer && s.replicas.iter().all(|r| r.state == "Active"));
            if settled {
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            return Err(StorageError::Peer(format!(
                "the replicas of `{collection}` did not all become Active within {} s (last seen: {seen})",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each replica's exact count against the manifest.
async fn verify(
    targets: &BTreeMap<u64, Target>,
    collection: &crate::cluster::manifest::CollectionRecord,
) -> Result<Vec<ShardCheck>> {
    let first = &targets.values().next().expect("one node").peer;
    let path = format!("/collections/{}/cluster", url_segment(&collection.name));
    let answer = first
        .get_json("reading a collection's shard layout", &path)
        .await?
        .unwrap_or(Value::Null);
    let layout = layout::parse_layout(&answer["result"]).map_err(|why| {
        StorageError::Peer(format!(
            "the target's layout of `{}`: {why}",
            collection.name
        ))
    })?;
    let mut checks = Vec::new();
    for shard in &collection.shards {
        let mut check = ShardCheck {
            collection: collection.name.clone(),
            shard_id: shard.shard_id,
            expected: shard.points,
            replicas: Vec::new(),
            ok: false,
        };
        let holders = layout
            .shards
            .iter()
            .find(|s| s.shard_id == shard.shard_id)
            .map(|s| s.replicas.clone())
            .unwrap_or_default();
        for replica in holders {
            let Some(target) = targets.get(&replica.peer_id) else {
                continue;
            };
            let counted = target
                .peer
                .call_json(
                    "counting a replica's points",
                    reqwest::Method::POST,
                    &format!(
                        "/collections/{}/shards/{}/points/count",
                        url_segment(&collection.name),
                        shard.shard_id
                    ),
                    Some(&json!({"exact": true})),
                )
                .await?
                .unwrap_or(Value::Null);
            check.replicas.push((
                target.peer_id,
                counted["result"]["count"].as_u64().unwrap_or(u64::MAX),
            ));
        }
        check.ok =
            !check.replicas.is_empty() && check.replicas.iter().all(|(_, n)| *n == shard.points);
        checks.push(check);
    }
    Ok(checks)
}
