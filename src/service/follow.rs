//! Following Qdrant clusters: rounds that bring every mirror shard up to date with
//! Qdrant's partial snapshot protocol, cluster generations recorded after each
//! round, their retention, and restores of a generation into a Qdrant cluster
//! ([`restore`](super::cluster_restore)).
//!
//! A round, in order: ask every configured node who it is (`GET /cluster`); take the
//! shard layout from one node that is caught up with consensus (the leader, else the
//! node with the highest commit); for each followed collection read its
//! configuration, create or rebuild its mirror, and pull each shard from an Active
//! replica (the previous round's source first), at most `per_node` pulls at once per
//! node, all cancelled at the round's deadline (a pull cut before its apply leaves
//! the shard as it was). Then one generation: the stored shard snapshots (a shard
//! unchanged since the last generation is not stored again: the manifest names the
//! same stored snapshot) and the manifest, written last, so a generation is listed
//! only when everything it names is stored.

mod generations;
mod round;

pub use generations::{forget, manifests, manifests_blocking, read_manifest_blocking, summary};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use super::{Service, run_blocking};
use crate::cluster::config::OnStale;
use crate::cluster::layout::{self, CollectionLayout};
use crate::cluster::manifest::{
    AliasRecord, ClusterManifest, CollectionRecord, FORMAT, MAX_MANIFEST_BYTES, NodeRecord,
    ShardRecord, Skipped,
};
use crate::cluster::{FollowedCluster, qdrant_config};
use crate::snapshot::partial::peer::{Form, Peer, pull};
use crate::snapshot::store::SnapshotStore;
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::names::url_segment;
use crate::storage::{Result, StorageError};

/// The followed clusters, their state and their running rounds.
pub struct Follow {
    clusters: Vec<FollowedCluster>,
    state: Mutex<HashMap<String, ClusterState>>,
    /// Where each cluster's journal of shard snapshots written for a generation not
    /// yet recorded is kept (`<data_dir>/follow-<cluster>.pending.json`).
    data_dir: std::path::PathBuf,
    /// Deleting generations' shard snapshots (forget, retention, the sweep) holds it
    /// exclusively; recording a generation and restoring one hold it shared, so
    /// nothing they name goes under them.
    pub(crate) generations_gc: tokio::sync::RwLock<()>,
}

/// What the daemon knows of a followed cluster between rounds.
#[derive(Default, Clone)]
struct ClusterState {
    running: bool,
    rounds: u64,
    failures: u64,
    last_round: Option<RoundReport>,
    /// (mirror, shard) → the peer it was pulled from last.
    sources: HashMap<(String, u32), u64>,
    /// (mirror, shard) → its record in the last generation, while the mirror shard
    /// has not changed since (a later generation names the same stored snapshot).
    stored: HashMap<(String, u32), ShardRecord>,
}

/// One round, as `snapfs follow status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub started: String,
    pub ended: String,
    pub seconds: f64,
    /// The error that failed the round (no generation then).
    pub error: Option<String>,
    pub generation: Option<String>,
    pub shards: Vec<ShardOutcome>,
    pub skipped: Vec<Skipped>,
    pub nodes: Vec<NodeRecord>,
    /// Bytes of partial archives received.
    pub bytes_received: u64,
    /// Shards already up to date (the source answered 304).
    pub unchanged: usize,
    pub applied: usize,
    pub stale: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardOutcome {
    pub collection: String,
    pub shard_id: u32,
    pub source: Option<u64>,
    /// `unchanged`, `applied` or `stale`.
    pub outcome: &'static str,
    pub bytes: u64,
    /// Why the replicas tried failed (a stale shard's reasons).
    pub failures: Vec<String>,
    /// When the state applied was pulled (an applied shard's).
    pub pulled_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub nodes: Vec<String>,
    pub collections: Vec<String>,
    pub every_secs: Option<f64>,
    pub running: bool,
    pub rounds: u64,
    pub failures: u64,
    pub last_round: Option<RoundReport>,
}

/// A generation, as a listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationSummary {
    pub name: String,
    pub round_started: String,
    pub round_ended: String,
    pub collections: usize,
    pub shards: usize,
    pub stale_shards: usize,
    pub points: u64,
    pub bytes: u64,
}

/// The record group a cluster's generation manifests are kept in.
pub fn record_group(cluster: &str) -> String {
    format!("cluster-{cluster}")
}

impl Follow {
    pub fn new(clusters: &[FollowedCluster], data_dir: &std::path::Path) -> Follow {
        Follow {
            clusters: clusters.to_vec(),
            state: Mutex::default(),
            data_dir: data_dir.to_path_buf(),
            generations_gc: tokio::sync::RwLock::new(()),
        }
    }

    fn pending_path(&self, cluster: &str) -> std::path::PathBuf {
        self.data_dir.join(format!("follow-{cluster}.pending.json"))
    }

    pub fn clusters(&self) -> &[FollowedCluster] {
        &self.clusters
    }

    pub fn cluster(&self, name: &str) -> Result<&FollowedCluster> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| StorageError::NotFound(format!("no followed cluster is named {name}")))
    }

    /// Take the cluster's one round; `false` when one runs.
    fn claim(&self, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        let entry = state.entry(name.to_string()).or_default();
        !std::mem::replace(&mut entry.running, true)
    }

    fn release(&self, name: &str) {
        if let Some(entry) = self.state.lock().unwrap().get_mut(name) {
            entry.running = false;
        }
    }

    fn snapshot_of(&self, name: &str) -> ClusterState {
        self.state
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Every followed cluster's status.
pub fn status(service: &Service) -> Vec<ClusterStatus> {
    service
        .follow
        .clusters()
        .iter()
        .map(|c| {
            let state = service.follow.snapshot_of(&c.name);
            ClusterStatus {
                name: c.name.clone(),
                nodes: c.nodes.clone(),
                collections: c.collections.clone(),
                every_secs: c.every.map(|d| d.as_secs_f64()),
                running: state.running,
                rounds: state.rounds,
                failures: state.failures,
                last_round: state.last_round,
            }
        })
        .collect()
}

/// The current time as RFC 3339 (UTC, seconds).
fn rfc3339(at: SystemTime) -> String {
    format!("{}Z", crate::snapshot::names::creation_time(at))
}

/// A round's node: its client and what it said of itself.
struct NodeSeen {
    peer: Arc<Peer>,
    peer_id: u64,
    commit: u64,
    leader: Option<u64>,
}

/// Run one round of `cluster` now and record its generation. A second round of the
/// same cluster while one runs is refused (`AlreadyInProgress`).
pub async fn run_round(service: &Arc<Service>, cluster: &str) -> Result<RoundReport> {
    let config = service.follow.cluster(cluster)?.clone();
    if !service.follow.claim(cluster) {
        return Err(StorageError::AlreadyInProgress(format!(
            "a round of cluster {cluster} is running"
        )));
    }
    struct Release<'a>(&'a Follow, &'a str);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.release(self.1);
        }
    }
    let _release = Release(&service.follow, cluster);
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    let mut report = RoundReport {
        started: rfc3339(started),
        ended: String::new(),
        seconds: 0.0,
        error: None,
        generation: None,
        shards: Vec::new(),
        skipped: Vec::new(),
        nodes: Vec::new(),
        bytes_received: 0,
        unchanged: 0,
        applied: 0,
        stale: 0,
    };
    let outcome = round::round(service, &config, started, &mut report).await;
    report.ended = rfc3339(SystemTime::now());
    report.seconds = clock.elapsed().as_secs_f64();
    let ok = outcome.is_ok();
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
    }
    crate::metrics::follow_round(
        cluster,
        ok,
        report.seconds,
        report.bytes_received,
        report.stale,
    );
    {
        let mut state = service.follow.state.lock().unwrap();
        let entry = state.entry(cluster.to_string()).or_default();
        entry.rounds += 1;
        entry.failures += u64::from(!ok);
        entry.last_round = Some(report.clone());
    }
    match outcome {
        Ok(()) => {
            tracing::info!(
                cluster,
                generation = report.generation.as_deref().unwrap_or(""),
                applied = report.applied,
                unchanged = report.unchanged,
                stale = report.stale,
                bytes_received = report.bytes_received,
                seconds = format!("{:.3}", report.seconds),
                "cluster round done"
            );
            Ok(report)
        }
        Err(e) => {
            tracing::warn!(cluster, error = %e, "cluster round failed");
            Err(e)
        }
    }
}

/// Start every cluster's rounds (those with `every`); they end when `stop` turns true.
pub fn start_rounds(service: &Arc<Service>, stop: watch::Receiver<bool>) {
    for cluster in service.follow.clusters().to_vec() {
        let Some(every) = cluster.every else { continue };
        let service = service.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let _ = run_round(&service, &cluster.name).await;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
            }
        });
    }
}

/// A generation's stored shard snapshot, for reading (the mount, a restore).
pub fn shard_snapshot_scope(record: &CollectionRecord, shard: &ShardRecord) -> (Scope, String) {
    (
        Scope::Shard(record.mirror.clone(), shard.shard_id),
        shard.snapshot.clone(),
    )
}

/// How long to wait between checks while a restore waits on the cluster.
pub const POLL: Duration = Duration::from_millis(250);
