//! Cluster generations in the snapshot store: each shard's stored snapshot (reused
//! while the mirror shard is unchanged), the manifests kept as store records, their
//! listing, forgetting (a shard snapshot goes with the last generation naming it)
//! and the cluster's retention.

use super::*;

/// A shard snapshot written for a generation whose manifest is not written yet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    mirror: String,
    shard: u32,
    /// The stored snapshot's name, once the store has picked it.
    name: Option<String>,
    /// When its creation started (seconds since the epoch): before the name is
    /// known, a stored snapshot of the shard made since then is this one.
    since: u64,
}

/// The journal's entries (none when there is no journal, or an unreadable one).
fn read_pending(follow: &Follow, cluster: &str) -> Vec<Pending> {
    crate::storage::read_bounded(&follow.pending_path(cluster), 16 << 20)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Note `entry` in the journal before it is stored: a crash between the store and the
/// manifest leaves its name there.
fn note_pending(follow: &Follow, cluster: &str, entry: Pending) -> Result<()> {
    let mut all = read_pending(follow, cluster);
    all.retain(|p| !(p.mirror == entry.mirror && p.shard == entry.shard && p.name.is_none()));
    all.push(entry);
    let bytes = serde_json::to_vec(&all).map_err(StorageError::from_cause)?;
    Ok(crate::storage::write_atomically(
        &follow.pending_path(cluster),
        &bytes,
    )?)
}

/// The generation's manifest is written: its shard snapshots are no longer pending.
pub(super) fn clear_pending(follow: &Follow, cluster: &str) {
    match std::fs::remove_file(follow.pending_path(cluster)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(cluster, error = %e, "could not clear the follow journal");
        }
        _ => {}
    }
}

/// Remove the shard snapshots a round cut short stored for a generation it never
/// recorded (no manifest names them), then clear the journal. Run at a round's start.
pub(super) async fn sweep_pending(service: &Service, cluster: &str) -> Result<()> {
    let pending = read_pending(&service.follow, cluster);
    if pending.is_empty() {
        return Ok(());
    }
    let _gc = service.follow.generations_gc.write().await;
    let (readable, unreadable) = manifests_for_deleting(service, cluster).await?;
    if !unreadable.is_empty() {
        return Err(StorageError::internal(format!(
            "generations {unreadable:?} of cluster {cluster} cannot be read: the shard snapshots a cut round left are kept until they can"
        )));
    }
    let named: HashSet<String> = readable
        .iter()
        .flat_map(|m| m.snapshots().map(|(_, _, n)| n.to_string()))
        .collect();
    let store = service.store.clone();
    let removed = run_blocking(move || {
        let mut removed = 0;
        for entry in pending {
            let scope = Scope::Shard(entry.mirror, entry.shard);
            let names = match entry.name {
                Some(name) => vec![name],
                None => {
                    let since = std::time::UNIX_EPOCH + Duration::from_secs(entry.since);
                    store
                        .list(&scope)?
                        .into_iter()
                        .filter(|s| s.modified >= since)
                        .map(|s| s.name)
                        .collect()
                }
            };
            for name in names {
                if named.contains(&name) {
                    continue;
                }
                match store.delete(&scope, &name) {
                    Ok(()) => removed += 1,
                    Err(StorageError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    })
    .await?;
    if removed > 0 {
        tracing::warn!(
            cluster,
            removed,
            "removed shard snapshots of a round that recorded no generation"
        );
    }
    clear_pending(&service.follow, cluster);
    Ok(())
}

/// The sources of the latest generation (after a restart: pulled from the same
/// replicas again, their manifests match the mirror's).
pub(super) async fn seed_sources(service: &Service, cluster: &str) {
    let Ok(all) = manifests(service, cluster).await else {
        return;
    };
    let Some(latest) = all.last() else { return };
    let mut state = service.follow.state.lock().unwrap();
    let entry = state.entry(cluster.to_string()).or_default();
    for collection in &latest.collections {
        for shard in &collection.shards {
            if let Some(peer) = shard.pulled_from {
                entry
                    .sources
                    .entry((collection.mirror.clone(), shard.shard_id))
                    .or_insert(peer);
            }
        }
    }
}

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
    let snapshots = service.snapshots.clone();
    let store = store.clone();
    let mirror_name = mirror.to_string();
    let follow = service.follow.clone();
    let cluster = config.name.clone();
    let (stored, points) = run_blocking(move || {
        let view = SnapshotView::open(&snapshots, Scope::Shard(mirror_name.clone(), id))?;
        let points = snapshots
            .storage()
            .collection(&mirror_name)?
            .count_shard(id)? as u64;
        // Noted before it is written (the store picks the name), and again with its name.
        let since = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_sub(1);
        let mut entry = Pending {
            mirror: mirror_name,
            shard: id,
            name: None,
            since,
        };
        note_pending(&follow, &cluster, entry.clone())?;
        let stored = store.create(&view)?;
        entry.name = Some(stored.name.clone());
        note_pending(&follow, &cluster, entry)?;
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
    let cluster = cluster.to_string();
    run_blocking(move || manifests_blocking(&*store, &cluster)).await
}

/// Every generation for a path that deletes stored snapshots: the readable manifests
/// and the names of the unreadable ones (whose snapshots cannot be told, so nothing
/// is deleted on their behalf unless they are themselves forgotten).
async fn manifests_for_deleting(
    service: &Service,
    cluster: &str,
) -> Result<(Vec<ClusterManifest>, Vec<String>)> {
    let store = service.store.clone();
    let cluster = cluster.to_string();
    run_blocking(move || {
        let mut readable = Vec::new();
        let mut unreadable = Vec::new();
        for name in store.list_records(&record_group(&cluster))? {
            match read_manifest_blocking(&*store, &cluster, &name) {
                Ok(manifest) => readable.push(manifest),
                Err(_) => unreadable.push(name),
            }
        }
        Ok((readable, unreadable))
    })
    .await
}

/// [`manifests`], from a blocking thread (the mount's).
pub fn manifests_blocking(
    store: &dyn SnapshotStore,
    cluster: &str,
) -> Result<Vec<ClusterManifest>> {
    let mut out = Vec::new();
    for name in store.list_records(&record_group(cluster))? {
        match read_manifest_blocking(store, cluster, &name) {
            Ok(manifest) => out.push(manifest),
            Err(e) => {
                tracing::warn!(generation = %name, error = %e, "an unreadable cluster manifest is skipped")
            }
        }
    }
    out.sort_by(|a, b| {
        a.round_ended
            .cmp(&b.round_ended)
            .then(a.generation.cmp(&b.generation))
    });
    Ok(out)
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
    service.follow.cluster(cluster)?;
    let _gc = service.follow.generations_gc.write().await;
    let (all, unreadable) = manifests_for_deleting(service, cluster).await?;
    // An unreadable generation that is itself forgotten goes (its record only).
    let (forgotten_unreadable, other_unreadable): (Vec<String>, Vec<String>) =
        unreadable.into_iter().partition(|n| names.contains(n));
    if !other_unreadable.is_empty() {
        return Err(StorageError::internal(format!(
            "generations {other_unreadable:?} of cluster {cluster} cannot be read, so what they name cannot be told: nothing forgotten (forget those first)"
        )));
    }
    for name in &forgotten_unreadable {
        let (store, group, record) = (service.store.clone(), record_group(cluster), name.clone());
        run_blocking(move || store.delete_record(&group, &record)).await?;
        tracing::warn!(cluster, generation = %name, "an unreadable generation forgotten: the shard snapshots it named are left in the store");
    }
    let (gone, kept): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|m| names.contains(&m.generation));
    if gone.is_empty() {
        return Ok(forgotten_unreadable.len());
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
    let count = gone.len() + forgotten_unreadable.len();
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
