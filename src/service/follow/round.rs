//! One round over a followed cluster: meet the nodes, read the layouts, keep the
//! mirrors in shape, pull every shard from an Active replica under the per-node
//! limit and the round's deadline, then record the generation.

use super::generations::{apply_retention, free_generation_name, store_shard};
use super::*;

pub(super) async fn round(
    service: &Arc<Service>,
    config: &FollowedCluster,
    started: SystemTime,
    report: &mut RoundReport,
) -> Result<()> {
    super::generations::sweep_pending(service, &config.name).await?;
    if service.follow.snapshot_of(&config.name).sources.is_empty() {
        super::generations::seed_sources(service, &config.name).await;
    }
    let nodes = meet_nodes(service, config, report).await?;
    // The view of a node caught up with consensus: the leader's, else the highest commit.
    let leader = nodes.iter().find_map(|n| n.leader);
    let trusted = nodes
        .iter()
        .find(|n| Some(n.peer_id) == leader)
        .or_else(|| nodes.iter().max_by_key(|n| n.commit))
        .expect("meet_nodes gives one node at least");
    let by_peer: HashMap<u64, Arc<Peer>> =
        nodes.iter().map(|n| (n.peer_id, n.peer.clone())).collect();
    // Asked in this order: a node that stops answering mid-round hands over to the next.
    let ask = Ask {
        order: std::iter::once(trusted.peer.clone())
            .chain(
                nodes
                    .iter()
                    .filter(|n| n.peer_id != trusted.peer_id)
                    .map(|n| n.peer.clone()),
            )
            .collect(),
    };
    let reachable: HashSet<u64> = by_peer.keys().copied().collect();
    let version = ask
        .get("asking the node's version", "/")
        .await?
        .and_then(|v| {
            v["version"]
                .as_str()
                .map(|s| s.chars().take(64).collect::<String>())
        });
    let names = collections_to_follow(&ask, config).await?;
    let aliases = aliases_of(&ask, &names).await?;

    // What each followed collection is and where its shards are.
    let mut followed: Vec<(String, Value, Value, CollectionLayout)> = Vec::new();
    // Qdrant answers `GET /collections/{c}` only when every shard can be read: with a
    // shard's only replica down it fails, while the other shards can still be pulled.
    // The configuration then comes from the latest generation.
    let mut latest: Option<Option<ClusterManifest>> = None;
    for name in &names {
        let path = format!("/collections/{}", url_segment(name));
        let info = match ask.get("reading a collection", &path).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                report.skipped.push(Skipped {
                    collection: name.clone(),
                    reason: "not in the cluster".into(),
                });
                continue;
            }
            Err(e) => {
                if latest.is_none() {
                    latest = Some(super::manifests(service, &config.name).await?.pop());
                }
                let recorded = latest
                    .as_ref()
                    .and_then(|m| m.as_ref())
                    .and_then(|m| m.collections.iter().find(|c| &c.name == name));
                let Some(recorded) = recorded else {
                    return Err(e);
                };
                tracing::warn!(
                    cluster = %config.name, collection = %name, error = %e,
                    "the cluster cannot describe the collection now: its configuration is taken from the latest generation"
                );
                serde_json::json!({"result": {
                    "config": recorded.config, "payload_schema": recorded.payload_schema}})
            }
        };
        let cluster_path = format!("{path}/cluster");
        let Some(placement) = ask
            .get("reading a collection's shard layout", &cluster_path)
            .await?
        else {
            report.skipped.push(Skipped {
                collection: name.clone(),
                reason: "deleted during the round".into(),
            });
            continue;
        };
        let garbage = |why: String| {
            StorageError::Peer(format!(
                "the node at {} answered an unusable layout for `{name}`: {why}",
                ask.order[0].base()
            ))
        };
        let layout = layout::parse_layout(&placement["result"]).map_err(garbage)?;
        let config_value = info["result"]["config"].clone();
        let shard_number = config_value["params"]["shard_number"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| garbage("no shard_number".into()))?;
        if let Some(why) = layout::why_not_followed(&layout, shard_number) {
            report.skipped.push(Skipped {
                collection: name.clone(),
                reason: why,
            });
            continue;
        }
        let schema = info["result"]["payload_schema"].clone();
        followed.push((name.clone(), config_value, schema, layout));
    }

    // Mirrors: created with the cluster's configuration, rebuilt when its data
    // shape (vectors, sparse vectors, shard count) changed.
    // A collection that cannot be mirrored is skipped with the reason; the others go on.
    let mut mirrored = Vec::new();
    for entry in followed {
        match ensure_mirror(service, config, &entry.0, &entry.1).await {
            Ok(()) => mirrored.push(entry),
            Err(e) => {
                tracing::warn!(cluster = %config.name, collection = %entry.0, error = %e, "not followed this round");
                report.skipped.push(Skipped {
                    collection: entry.0.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    let followed = mirrored;
    drop_vanished_mirrors(service, config, &names, report).await;

    // The pulls.
    let previous = service.follow.snapshot_of(&config.name);
    let semaphores: HashMap<u64, Arc<Semaphore>> = reachable
        .iter()
        .map(|p| (*p, Arc::new(Semaphore::new(config.per_node))))
        .collect();
    let deadline = tokio::time::Instant::now() + config.round_deadline;
    let mut tasks = tokio::task::JoinSet::new();
    for (name, _, _, layout) in &followed {
        for shard in &layout.shards {
            let mirror = config.mirror_of(name);
            let key = (mirror.clone(), shard.shard_id);
            let order = layout::sources(shard, previous.sources.get(&key).copied(), &reachable);
            let candidates: Vec<(u64, Arc<Peer>, Arc<Semaphore>)> = order
                .into_iter()
                .map(|p| (p, by_peer[&p].clone(), semaphores[&p].clone()))
                .collect();
            let service = service.clone();
            let remote = name.clone();
            let id = shard.shard_id;
            let round = RoundPulls {
                cluster: config.name.clone(),
                api_key: config.api_key.clone(),
                deadline,
            };
            tasks.spawn(async move {
                pull_shard(&service, &round, &mirror, &remote, id, candidates).await
            });
        }
    }
    let mut outcomes = Vec::new();
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(joined) => outcomes.push(joined.map_err(StorageError::from_cause)?),
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(cluster = %config.name, "the round's deadline passed: cancelling the pulls still receiving");
                for (name, _, _, layout) in &followed {
                    for shard in &layout.shards {
                        crate::snapshot::partial::peer::cancel_pull(&service.snapshots, &config.mirror_of(name), shard.shard_id);
                    }
                }
                while let Some(joined) = tasks.join_next().await {
                    outcomes.push(joined.map_err(StorageError::from_cause)?);
                }
                break;
            }
        }
    }
    outcomes.sort_by(|a, b| (&a.collection, a.shard_id).cmp(&(&b.collection, b.shard_id)));
    for outcome in &outcomes {
        match outcome.outcome {
            "unchanged" => report.unchanged += 1,
            "applied" => report.applied += 1,
            _ => report.stale += 1,
        }
        report.bytes_received += outcome.bytes;
    }
    report.shards = outcomes.clone();
    {
        let mut state = service.follow.state.lock().unwrap();
        let entry = state.entry(config.name.clone()).or_default();
        for outcome in &outcomes {
            let key = (config.mirror_of(&outcome.collection), outcome.shard_id);
            if let Some(source) = outcome.source {
                entry.sources.insert(key.clone(), source);
            }
            if outcome.outcome == "applied" {
                entry.stored.remove(&key);
            }
        }
    }
    if report.stale > 0 && config.on_stale == OnStale::Fail {
        let stale: Vec<String> = outcomes
            .iter()
            .filter(|o| o.outcome == "stale")
            .map(|o| format!("`{}` shard {}", o.collection, o.shard_id))
            .collect();
        return Err(StorageError::Peer(format!(
            "no Active replica could give {} (on_stale: fail): no generation recorded",
            stale.join(", ")
        )));
    }

    // The generation (nothing it names is forgotten meanwhile).
    let gc = service.follow.generations_gc.read().await;
    let ended = SystemTime::now();
    let store = service.store.clone();
    let mut collections = Vec::new();
    let sources = service.follow.snapshot_of(&config.name).sources;
    for (name, config_value, schema, layout) in &followed {
        let mirror = config.mirror_of(name);
        let mut shards = Vec::new();
        for shard in &layout.shards {
            let outcome = outcomes
                .iter()
                .find(|o| &o.collection == name && o.shard_id == shard.shard_id);
            let record = store_shard(service, &store, config, &mirror, shard.shard_id).await?;
            let stale = outcome.filter(|o| o.outcome == "stale").map(|o| {
                format!(
                    "no Active replica could give it this round: {}",
                    o.failures.join("; ")
                )
            });
            let pulled_from = sources.get(&(mirror.clone(), shard.shard_id)).copied();
            let pulled_at = outcome
                .and_then(|o| o.pulled_at.clone())
                .or_else(|| record.pulled_at.clone());
            shards.push(ShardRecord {
                pulled_from,
                pulled_at,
                replicas: shard.replicas.iter().map(|r| r.peer_id).collect(),
                stale,
                ..record
            });
        }
        collections.push(CollectionRecord {
            name: name.clone(),
            mirror,
            config: config_value.clone(),
            payload_schema: schema.clone(),
            shards,
        });
    }
    // A collection skipped this round but still in the cluster (resharding, a layout
    // or a configuration it cannot take now) keeps its previous state in the
    // generation, every shard marked stale with the reason.
    let carried: Vec<&Skipped> = report
        .skipped
        .iter()
        .filter(|s| s.reason != "not in the cluster")
        .collect();
    if !carried.is_empty() {
        if latest.is_none() {
            latest = Some(super::manifests(service, &config.name).await?.pop());
        }
        if let Some(previous) = latest.as_ref().and_then(|m| m.as_ref()) {
            for skipped in carried {
                if let Some(record) = previous
                    .collections
                    .iter()
                    .find(|c| c.name == skipped.collection)
                {
                    let mut record = record.clone();
                    for shard in &mut record.shards {
                        shard.stale = Some(format!("not followed this round: {}", skipped.reason));
                    }
                    collections.push(record);
                }
            }
        }
    }
    collections.sort_by(|a, b| a.name.cmp(&b.name));
    let generation = free_generation_name(&store, &config.name, ended).await?;
    let manifest = ClusterManifest {
        format: FORMAT,
        cluster: config.name.clone(),
        generation: generation.clone(),
        qdrant_version: version,
        round_started: rfc3339(started),
        round_ended: rfc3339(ended),
        nodes: report.nodes.clone(),
        collections,
        aliases,
        skipped: report.skipped.clone(),
    };
    manifest.check().map_err(StorageError::internal)?;
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StorageError::internal_from("writing a cluster manifest", e))?;
    if bytes.len() as u64 > crate::cluster::manifest::MAX_MANIFEST_BYTES {
        return Err(StorageError::internal(format!(
            "the cluster manifest would be {} bytes, more than a manifest may have ({}): no generation recorded",
            bytes.len(),
            crate::cluster::manifest::MAX_MANIFEST_BYTES
        )));
    }
    let group = record_group(&config.name);
    crate::storage::crash_point("follow-before-manifest");
    {
        let store = store.clone();
        let generation = generation.clone();
        run_blocking(move || store.put_record(&group, &generation, &bytes)).await?;
    }
    super::generations::clear_pending(&service.follow, &config.name);
    {
        let mut state = service.follow.state.lock().unwrap();
        let entry = state.entry(config.name.clone()).or_default();
        entry.stored = manifest
            .collections
            .iter()
            .flat_map(|c| {
                c.shards
                    .iter()
                    .map(|s| ((c.mirror.clone(), s.shard_id), s.clone()))
            })
            .collect();
    }
    drop(gc);
    report.generation = Some(generation);
    if let Some(retention) = &config.retention
        && let Err(e) = apply_retention(service, config, retention).await
    {
        tracing::warn!(cluster = %config.name, error = %e, "the cluster retention failed");
    }
    Ok(())
}

/// Ask every node who it is; the ones that answer (one at least).
pub(super) async fn meet_nodes(
    service: &Service,
    config: &FollowedCluster,
    report: &mut RoundReport,
) -> Result<Vec<NodeSeen>> {
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    let asks = config.nodes.iter().map(|url| async move {
        let peer = Peer::new(url, config.api_key.as_deref(), &service.fetch)?;
        let answer = peer
            .get_json("asking the node about its cluster", "/cluster")
            .await?
            .ok_or_else(|| StorageError::Peer(format!("the node at {url} has no /cluster: is it Qdrant?")))?;
        let result = &answer["result"];
        if result["status"].as_str() != Some("enabled") {
            return Err(StorageError::Peer(format!(
                "the node at {url} does not run in cluster mode (its /cluster status is not `enabled`)"
            )));
        }
        let peer_id = result["peer_id"]
            .as_u64()
            .ok_or_else(|| StorageError::Peer(format!("the node at {url} gave no peer_id")))?;
        Ok(NodeSeen {
            peer: Arc::new(peer),
            peer_id,
            commit: result["raft_info"]["commit"].as_u64().unwrap_or(0),
            leader: result["raft_info"]["leader"].as_u64(),
        })
    });
    let answers = futures_util::future::join_all(asks).await;
    for (url, answer) in config.nodes.iter().zip(answers) {
        match answer {
            Ok(node) => {
                report.nodes.push(NodeRecord {
                    url: url.clone(),
                    peer_id: Some(node.peer_id),
                    unreachable: None,
                });
                if seen.iter().any(|n: &NodeSeen| n.peer_id == node.peer_id) {
                    return Err(StorageError::bad_request(format!(
                        "cluster {}: two configured URLs reach the same node (peer {})",
                        config.name, node.peer_id
                    )));
                }
                seen.push(node);
            }
            Err(e) => {
                tracing::warn!(cluster = %config.name, node = %url, error = %e, "a node did not answer");
                report.nodes.push(NodeRecord {
                    url: url.clone(),
                    peer_id: None,
                    unreachable: Some(e.to_string()),
                });
                errors.push(e.to_string());
            }
        }
    }
    if seen.is_empty() {
        return Err(StorageError::Peer(format!(
            "no node of cluster {} answered: {}",
            config.name,
            errors.join("; ")
        )));
    }
    Ok(seen)
}

/// The collections a round follows: the configured names, or every collection.
/// The cluster's nodes in the order they are asked about metadata (collections,
/// configurations, layouts, aliases).
struct Ask {
    order: Vec<Arc<Peer>>,
}

impl Ask {
    /// The first answer: a node that cannot be reached or fails is followed by the
    /// next; a 404 is an answer. All failing: the first node's error.
    async fn get(&self, what: &str, path: &str) -> Result<Option<Value>> {
        let mut first = None;
        for peer in &self.order {
            match peer.get_json(what, path).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    tracing::debug!(node = %peer.base(), error = %e, "{what}: asking the next node");
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| StorageError::Peer("no node to ask".into())))
    }

    fn base(&self) -> &str {
        self.order[0].base()
    }
}

async fn collections_to_follow(peer: &Ask, config: &FollowedCluster) -> Result<Vec<String>> {
    let mut names: Vec<String> = config
        .collections
        .iter()
        .filter(|c| *c != "*")
        .cloned()
        .collect();
    if config.follows_all() {
        let listed = peer
            .get("listing the cluster's collections", "/collections")
            .await?
            .unwrap_or(Value::Null);
        let items = listed["result"]["collections"].as_array().ok_or_else(|| {
            StorageError::Peer(format!("the node at {} listed no collections", peer.base()))
        })?;
        if items.len() > crate::cluster::manifest::MAX_COLLECTIONS {
            return Err(StorageError::Peer(
                "the cluster lists too many collections".into(),
            ));
        }
        for item in items {
            let name = item["name"].as_str().unwrap_or_default();
            if crate::storage::names::validate_collection_name(name).is_ok()
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The cluster's aliases of the followed collections.
async fn aliases_of(peer: &Ask, followed: &[String]) -> Result<Vec<AliasRecord>> {
    let answer = peer
        .get("listing the cluster's aliases", "/aliases")
        .await?
        .unwrap_or(Value::Null);
    let mut out = Vec::new();
    for alias in answer["result"]["aliases"].as_array().into_iter().flatten() {
        let (Some(alias_name), Some(collection)) = (
            alias["alias_name"].as_str(),
            alias["collection_name"].as_str(),
        ) else {
            continue;
        };
        let valid = |n: &str| crate::storage::names::validate_collection_name(n).is_ok();
        if valid(alias_name) && valid(collection) && followed.iter().any(|f| f == collection) {
            out.push(AliasRecord {
                alias_name: alias_name.to_string(),
                collection_name: collection.to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
    Ok(out)
}

/// The mirror of `name` exists with the cluster's data shape: created when missing,
/// rebuilt (deleted, created empty, pulled whole) when the shape changed.
async fn ensure_mirror(
    service: &Service,
    config: &FollowedCluster,
    name: &str,
    cluster_config: &Value,
) -> Result<()> {
    let mirror = config.mirror_of(name);
    let wanted = qdrant_config::data_shape(cluster_config);
    if let Ok(existing) = service.storage().collection(&mirror) {
        if !is_mirror_of(&existing, &config.name) {
            return Err(StorageError::bad_request(format!(
                "a collection named `{mirror}` exists and is no mirror of cluster {}: rename or delete it to follow `{name}`",
                config.name
            )));
        }
        let have = qdrant_config::data_shape(
            &serde_json::to_value(existing.config()).unwrap_or(Value::Null),
        );
        if have == wanted {
            return Ok(());
        }
        tracing::warn!(
            cluster = %config.name, collection = name, mirror = %mirror,
            before = %have, now = %wanted,
            "the collection's vectors or shard count changed in the cluster: its mirror is rebuilt (earlier generations keep the old state)"
        );
        drop(existing);
        service.storage().delete_collection(&mirror).await?;
        let mut state = service.follow.state.lock().unwrap();
        if let Some(entry) = state.get_mut(&config.name) {
            entry.sources.retain(|(m, _), _| m != &mirror);
            entry.stored.retain(|(m, _), _| m != &mirror);
        }
    }
    let request = qdrant_config::mirror_request(cluster_config).map_err(|why| {
        StorageError::Peer(format!(
            "collection `{name}` of cluster {} cannot be mirrored: {why}",
            config.name
        ))
    })?;
    let mut collection_config = request.into_config().map_err(|e| {
        StorageError::Peer(format!(
            "collection `{name}` of cluster {} cannot be mirrored: {e}",
            config.name
        ))
    })?;
    // Marked, so that only the follower's own mirrors are ever rebuilt or removed.
    let mut metadata = match collection_config.metadata.take() {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    metadata.insert(MIRROR_MARK.into(), Value::String(config.name.clone()));
    collection_config.metadata = Some(Value::Object(metadata));
    service
        .storage()
        .create_collection(&mirror, collection_config)
        .await?;
    tracing::info!(cluster = %config.name, collection = name, mirror = %mirror, "mirror created");
    Ok(())
}

/// The metadata key that marks a mirror, with its cluster's name.
const MIRROR_MARK: &str = "snapfs_mirror_of";

fn is_mirror_of(collection: &crate::storage::Collection, cluster: &str) -> bool {
    collection
        .config()
        .metadata
        .as_ref()
        .and_then(|m| m.get(MIRROR_MARK))
        .and_then(Value::as_str)
        == Some(cluster)
}

/// Mirrors of collections the cluster no longer has are removed (the generations
/// that hold them stay, under the retention).
async fn drop_vanished_mirrors(
    service: &Service,
    config: &FollowedCluster,
    present: &[String],
    report: &mut RoundReport,
) {
    let gone = report
        .skipped
        .iter()
        .filter(|s| s.reason == "not in the cluster")
        .map(|s| s.collection.clone());
    let unlisted = service
        .storage()
        .collection_names()
        .into_iter()
        .filter_map(|m| config.source_of(&m).map(str::to_string))
        .filter(|source| config.follows_all() && !present.contains(source));
    let vanished: HashSet<String> = gone.chain(unlisted).collect();
    for source in vanished {
        let mirror = config.mirror_of(&source);
        match service.storage().collection(&mirror) {
            Ok(existing) if is_mirror_of(&existing, &config.name) => {}
            _ => continue,
        }
        {
            let mut state = service.follow.state.lock().unwrap();
            if let Some(entry) = state.get_mut(&config.name) {
                entry.sources.retain(|(m, _), _| m != &mirror);
                entry.stored.retain(|(m, _), _| m != &mirror);
            }
        }
        match service.storage().delete_collection(&mirror).await {
            Ok(_) => tracing::warn!(
                cluster = %config.name, collection = %source, mirror = %mirror,
                "the collection is gone from the cluster: its mirror is removed (earlier generations keep it)"
            ),
            Err(e) => {
                tracing::warn!(mirror = %mirror, error = %e, "could not remove a vanished collection's mirror")
            }
        }
    }
}

/// Pull one shard from the first candidate that gives it.
/// What every pull of a round shares.
#[derive(Clone)]
struct RoundPulls {
    cluster: String,
    api_key: Option<String>,
    deadline: tokio::time::Instant,
}

async fn pull_shard(
    service: &Service,
    round: &RoundPulls,
    mirror: &str,
    remote: &str,
    id: u32,
    candidates: Vec<(u64, Arc<Peer>, Arc<Semaphore>)>,
) -> ShardOutcome {
    let RoundPulls {
        cluster,
        api_key,
        deadline,
    } = round;
    let (cluster, deadline) = (cluster.as_str(), *deadline);
    let mut outcome = ShardOutcome {
        collection: remote.to_string(),
        shard_id: id,
        source: None,
        outcome: "stale",
        bytes: 0,
        failures: Vec::new(),
        pulled_at: None,
    };
    if candidates.is_empty() {
        outcome
            .failures
            .push("no reachable node holds an Active replica".into());
    }
    // The shard may change from here: its last stored snapshot no longer stands for
    // it unless the pull finds it unchanged (a round cut short leaves it dropped, so
    // the next generation stores the shard anew).
    let key = (mirror.to_string(), id);
    let last_stored = service
        .follow
        .state
        .lock()
        .unwrap()
        .get_mut(cluster)
        .and_then(|entry| entry.stored.remove(&key));
    for (peer_id, peer, permits) in candidates {
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, permits.acquire()).await else {
            outcome
                .failures
                .push("the round's deadline passed before a pull could start".into());
            break;
        };
        if tokio::time::Instant::now() >= deadline {
            outcome
                .failures
                .push("the round's deadline passed before a pull could start".into());
            break;
        }
        let from = crate::snapshot::partial::peer::PullFrom {
            peer_url: peer.base(),
            api_key: api_key.as_deref(),
            remote,
            form: Some(Form::Versions),
            config_checked: true,
        };
        let pulled = pull(
            &service.snapshots,
            mirror,
            id,
            from,
            service.transfer_stall,
            &service.fetch,
        )
        .await;
        match pulled {
            Ok(pulled) => {
                outcome.source = Some(peer_id);
                match pulled.applied {
                    Some(applied) => {
                        outcome.outcome = "applied";
                        outcome.bytes = applied.archive_bytes;
                        outcome.pulled_at = Some(rfc3339(SystemTime::now()));
                    }
                    None => {
                        outcome.outcome = "unchanged";
                        if let Some(record) = last_stored {
                            let mut state = service.follow.state.lock().unwrap();
                            if let Some(entry) = state.get_mut(cluster) {
                                entry.stored.insert(key, record);
                            }
                        }
                    }
                }
                return outcome;
            }
            Err(e) => {
                tracing::warn!(mirror, shard = id, peer = peer_id, error = %e, "a pull failed: trying the next Active replica");
                outcome.failures.push(format!("peer {peer_id}: {e}"));
            }
        }
    }
    outcome
}
