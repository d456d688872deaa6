//! Cluster generations in the snapshot store: each shard's stored snapshot (reused
//! while the mirror shard is unchanged), the manifests kept as store records, their
//! listing, forgetting (a shard snapshot goes with the last generation naming it)
//! and the cluster's retention.

use super::*;

/// The stored snapshot of mirror shard `id` for this generation: the last
/// generation's, when the shard has not changed since; otherwise a new one.
pub(super) async fn store_shard(
    service: &Service,
    store: &Arc<dyn SnapshotStore>,
    config: &FollowedCluster,
    mirror: &str,
    id: u32,
) -> Result<ShardRecord> {
    let key = (mirror.to_string(), id);
    if let Some(record) = service.follow.snapshot_of(&config.name).stored.get(&key) {
        let scope = Scope::Shard(mirror.to_string(), id);
        let (store2, name) = (store.clone(), record.snapshot.clone());
        if run_blocking(move || store2.stat(&scope, &name))
            .await
            .is_ok()
        {
            return Ok(record.clone());
        }
    }
    let storage = service.storage.clone();
    let store = store.clone();
    let mirror_name = mirror.to_string();
    let (stored, points) = run_blocking(move || {
        let view = SnapshotView::open(&storage, Scope::Shard(mirror_name.clone(), id))?;
        let points = storage.collection(&mirror_name)?.count_shard(id)? as u64;
        let stored = store.create(&view)?;
        Ok((stored, points))
    })
    .await?;
    Ok(ShardRecord {
        shard_id: id,
        sha256: stored.checksum.clone().unwrap_or_default(),
        snapshot: stored.name,
        size: stored.size,
        points,
        pulled_from: None,
        pulled_at: Some(rfc3339(SystemTime::now())),
        replicas: Vec::new(),
        stale: None,
    })
}

/// `<cluster>-<time>`, or `-1`, `-2`, … when a generation has that name.
pub(super) async fn free_generation_name(
    store: &Arc<dyn SnapshotStore>,
    cluster: &str,
    at: SystemTime,
) -> Result<String> {
    let group = record_group(cluster);
    let store = store.clone();
    let existing = run_blocking(move || store.list_records(&group)).await?;
    let base = format!("{cluster}-{}", crate::snapshot::names::name_timestamp(at));
    Ok((0u32..)
        .map(|n| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|name| !existing.contains(name))
        .expect("a free name"))
}

/// The manifests of `cluster`'s generations, oldest first (unreadable ones are
/// skipped with a warning).
pub async fn manifests(service: &Service, cluster: &str) -> Result<Vec<ClusterManifest>> {
    service.follow.cluster(cluster)?;
    let store = service.store.clone();
    let group = record_group(cluster);
    let cluster = cluster.to_string();
    run_blocking(move || {
        let mut out = Vec::new();
        for name in store.list_records(&group)? {
            match read_manifest_blocking(&*store, &cluster, &name) {
                Ok(manifest) => out.push(manifest),
                Err(e) => tracing::warn!(generation = %name, error = %e, "an unreadable cluster manifest is skipped"),
            }
        }
        out.sort_by(|a, b| a.round_ended.cmp(&b.round_ended).then(a.generation.cmp(&b.generation)));
        Ok(out)
    })
    .await
}

/// Generation `name` of `cluster`, read and checked.
pub fn read_manifest_blocking(
    store: &dyn SnapshotStore,
    cluster: &str,
    name: &str,
) -> Result<ClusterManifest> {
    crate::cluster::manifest::check_generation_name(cluster, name).map_err(|_| {
        StorageError::NotFound(format!("cluster {cluster} has no generation {name}"))
    })?;
    let bytes = store.get_record(&record_group(cluster), name, MAX_MANIFEST_BYTES)?;
    let manifest = ClusterManifest::parse(&bytes).map_err(|why| {
        StorageError::internal(format!("generation {name} of cluster {cluster}: {why}"))
    })?;
    if manifest.cluster != cluster || manifest.generation != name {
        return Err(StorageError::internal(format!(
            "generation {name} of cluster {cluster}: its manifest names another generation"
        )));
    }
    Ok(manifest)
}

pub fn summary(manifest: &ClusterManifest) -> GenerationSummary {
    let shards = manifest.collections.iter().flat_map(|c| &c.shards);
    GenerationSummary {
        name: manifest.generation.clone(),
        round_started: manifest.round_started.clone(),
        round_ended: manifest.round_ended.clone(),
        collections: manifest.collections.len(),
        shards: shards.clone().count(),
        stale_shards: manifest.stale_shards(),
        points: shards.clone().map(|s| s.points).sum(),
        bytes: shards.map(|s| s.size).sum(),
    }
}

/// Forget generation `name` of `cluster`: its manifest, then the stored shard
/// snapshots no remaining generation names.
pub async fn forget(service: &Service, cluster: &str, names: &[String]) -> Result<usize> {
    let all = manifests(service, cluster).await?;
    let (gone, kept): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|m| names.contains(&m.generation));
    if gone.is_empty() {
        return Ok(0);
    }
    let still_named: HashSet<(String, u32, String)> = kept
        .iter()
        .flat_map(|m| {
            m.snapshots()
                .map(|(c, s, n)| (c.to_string(), s, n.to_string()))
        })
        .collect();
    // The last generation's records are reused by the next one.
    let last_stored: HashSet<String> = service
        .follow
        .snapshot_of(cluster)
        .stored
        .values()
        .map(|r| r.snapshot.clone())
        .collect();
    let store = service.store.clone();
    let group = record_group(cluster);
    let count = gone.len();
    run_blocking(move || {
        for manifest in &gone {
            store.delete_record(&group, &manifest.generation)?;
            for (mirror, shard, name) in manifest.snapshots() {
                let key = (mirror.to_string(), shard, name.to_string());
                if still_named.contains(&key) || last_stored.contains(name) {
                    continue;
                }
                match store.delete(&Scope::Shard(mirror.to_string(), shard), name) {
                    Ok(()) | Err(StorageError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(count)
}

/// The cluster's retention over its generations (restic's rules), then a prune of
/// the store when the retention says so.
pub(super) async fn apply_retention(
    service: &Service,
    config: &FollowedCluster,
    retention: &crate::backup::policy::Retention,
) -> Result<()> {
    let all = manifests(service, &config.name).await?;
    let mut candidates: Vec<crate::backup::retention::Candidate> = all
        .iter()
        .filter_map(|m| {
            Some(crate::backup::retention::Candidate {
                name: m.generation.clone(),
                time: crate::cluster::manifest::generation_time(&config.name, &m.generation)?,
                tags: Vec::new(),
            })
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.time));
    let decisions = crate::backup::retention::plan(&candidates, retention, SystemTime::now())
        .map_err(StorageError::internal)?;
    let forgotten: Vec<String> = decisions
        .into_iter()
        .filter(|d| !d.keep)
        .map(|d| d.name)
        .collect();
    if forgotten.is_empty() {
        return Ok(());
    }
    let count = forget(service, &config.name, &forgotten).await?;
    tracing::info!(cluster = %config.name, forgotten = count, "cluster generations forgotten by the retention");
    if retention.prune {
        let store = service.store.clone();
        run_blocking(move || store.prune()).await?;
    }
    Ok(())
}
