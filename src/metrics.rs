//! Process-wide metrics, served by `GET /metrics` and the mount's `metrics` file in
//! the Prometheus (OpenMetrics) text format, written by the Prometheus project's own
//! client library so the exposition is valid for any scraper. Every name and label is
//! a constant here, in one place (docs/METRICS.md lists them); Qdrant's snapshot
//! metrics keep Qdrant's names and their `id` label (the collection).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

// Counter names go without `_total`: the library adds it to the samples.
pub const SNAPSHOT_CREATION_RUNNING: &str = "snapshot_creation_running";
pub const SNAPSHOT_RECOVERY_RUNNING: &str = "snapshot_recovery_running";
pub const SNAPSHOT_CREATED: &str = "snapshot_created";
pub const SNAPSHOT_BYTES_STREAMED: &str = "snapfs_snapshot_bytes_streamed";
pub const SNAPSHOT_FREEZE_SECONDS: &str = "snapfs_snapshot_freeze_seconds";
pub const FUSE_ERRORS: &str = "snapfs_fuse_errors";
pub const FUSE_CACHE_DROPS: &str = "snapfs_fuse_cache_drops";
pub const RESTORE_FAILURES: &str = "snapfs_restore_failures";
pub const PARTIAL_BYTES: &str = "snapfs_partial_snapshot_bytes";
pub const REPOSITORY_BYTES_COVERED: &str = "snapfs_repository_bytes_covered";
pub const REPOSITORY_BYTES_ADDED: &str = "snapfs_repository_bytes_added";
pub const REPOSITORY_GENERATION_SECONDS: &str = "snapfs_repository_generation_seconds";
pub const BACKUP_LAST_SUCCESS: &str = "snapfs_backup_last_success_timestamp_seconds";
pub const BACKUP_LAST_DURATION: &str = "snapfs_backup_last_duration_seconds";
pub const BACKUP_INTERVAL: &str = "snapfs_backup_interval_seconds";
pub const BACKUP_BYTES_ADDED: &str = "snapfs_backup_bytes_added";
pub const BACKUP_FAILURES: &str = "snapfs_backup_failures";
pub const BACKUP_SKIPPED: &str = "snapfs_backup_runs_skipped";
pub const BACKUP_FORGOTTEN: &str = "snapfs_backup_generations_forgotten";
pub const BACKUP_DRILLS: &str = "snapfs_backup_drills";
pub const BACKUP_DRILL_FAILING: &str = "snapfs_backup_drill_failing";
pub const FOLLOW_ROUNDS: &str = "snapfs_follow_rounds";
pub const FOLLOW_LAST_SUCCESS: &str = "snapfs_follow_last_success_timestamp_seconds";
pub const FOLLOW_LAST_DURATION: &str = "snapfs_follow_last_round_seconds";
pub const FOLLOW_BYTES_RECEIVED: &str = "snapfs_follow_bytes_received";
pub const FOLLOW_STALE_SHARDS: &str = "snapfs_follow_stale_shards";

/// How long writing a repository generation took: an unchanged state's in well
/// under a second, a first generation of a large collection in minutes.
const GENERATION_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0];

/// How long freezes lasted: from a stat's few milliseconds to the default limit
/// (60 s) and past it.
const FREEZE_BUCKETS: [f64; 9] = [0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0];

/// `id`: the collection ("" for the full storage), as Qdrant labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Collection {
    id: String,
}

/// A backup policy, and the collection a series is of (`""`: the full storage).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyCollection {
    policy: String,
    collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterResult {
    cluster: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyJob {
    policy: String,
    job: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyFailure {
    policy: String,
    collection: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabel {
    policy: String,
    collection: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillResult {
    policy: String,
    collection: String,
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabel {
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabel {
    errno: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Where snapshot bytes left the daemon.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Http,
    Fuse,
}

impl Via {
    const ALL: [Via; 2] = [Via::Http, Via::Fuse];

    fn label(self) -> ViaLabel {
        let via = match self {
            Via::Http => "http",
            Via::Fuse => "fuse",
        };
        ViaLabel { via }
    }
}

/// Which way partial-snapshot bytes went.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Partial archives served to receivers.
    Sent,
    /// Partial archives applied here.
    Received,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::Sent, Direction::Received];

    fn label(self) -> DirectionLabel {
        let direction = match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        DirectionLabel { direction }
    }
}

/// Why a restore (or partial apply) was refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The bytes are not the ones the checksum names.
    Checksum,
    /// Not enough room on disk.
    Space,
    /// The archive or request is not a valid snapshot (unsafe entries included).
    Invalid,
    /// Anything else: an I/O error, a peer, the engine.
    Internal,
}

impl FailureReason {
    const ALL: [FailureReason; 4] = [
        FailureReason::Checksum,
        FailureReason::Space,
        FailureReason::Invalid,
        FailureReason::Internal,
    ];

    fn label(self) -> ReasonLabel {
        let reason = match self {
            FailureReason::Checksum => "checksum",
            FailureReason::Space => "space",
            FailureReason::Invalid => "invalid",
            FailureReason::Internal => "internal",
        };
        ReasonLabel { reason }
    }
}

struct Metrics {
    registry: Registry,
    creation_running: Family<Collection, Gauge>,
    recovery_running: Family<Collection, Gauge>,
    created: Family<Collection, Counter>,
    streamed: Family<ViaLabel, Counter>,
    freeze: Histogram,
    fuse_errors: Family<ErrnoLabel, Counter>,
    fuse_cache_drops: Counter,
    restore_failures: Family<ReasonLabel, Counter>,
    partial_bytes: Family<DirectionLabel, Counter>,
    repository_read: Family<Collection, Counter>,
    repository_added: Family<Collection, Counter>,
    repository_seconds: Histogram,
    backup_last_success: Family<PolicyCollection, Gauge<f64, std::sync::atomic::AtomicU64>>,
    backup_last_duration: Family<PolicyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    backup_interval: Family<PolicyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    backup_bytes_added: Family<PolicyCollection, Counter>,
    backup_failures: Family<PolicyFailure, Counter>,
    backup_skipped: Family<PolicyJob, Counter>,
    backup_forgotten: Family<PolicyCollection, Counter>,
    backup_drills: Family<DrillResult, Counter>,
    backup_drill_failing: Family<DrillLabel, Gauge>,
    follow_rounds: Family<ClusterResult, Counter>,
    follow_last_success: Family<ClusterLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    follow_last_duration: Family<ClusterLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    follow_bytes: Family<ClusterLabel, Counter>,
    follow_stale: Family<ClusterLabel, Gauge>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut m = Metrics {
            registry: Registry::default(),
            creation_running: Family::default(),
            recovery_running: Family::default(),
            created: Family::default(),
            streamed: Family::default(),
            freeze: Histogram::new(FREEZE_BUCKETS),
            fuse_errors: Family::default(),
            fuse_cache_drops: Counter::default(),
            restore_failures: Family::default(),
            partial_bytes: Family::default(),
            repository_read: Family::default(),
            repository_added: Family::default(),
            repository_seconds: Histogram::new(GENERATION_BUCKETS),
            backup_last_success: Family::default(),
            backup_last_duration: Family::default(),
            backup_interval: Family::default(),
            backup_bytes_added: Family::default(),
            backup_failures: Family::default(),
            backup_skipped: Family::default(),
            backup_forgotten: Family::default(),
            backup_drills: Family::default(),
            backup_drill_failing: Family::default(),
            follow_rounds: Family::default(),
            follow_last_success: Family::default(),
            follow_last_duration: Family::default(),
            follow_bytes: Family::default(),
            follow_stale: Family::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            SNAPSHOT_CREATION_RUNNING,
            "Snapshots being produced now (open live views, partial archives), by collection (id)",
            m.creation_running.clone(),
        );
        registry.register(
            SNAPSHOT_RECOVERY_RUNNING,
            "Snapshot restores and partial applies running now, by collection (id)",
            m.recovery_running.clone(),
        );
        registry.register(
            SNAPSHOT_CREATED,
            "Snapshots produced whole (stored, or read to their end), by collection (id)",
            m.created.clone(),
        );
        registry.register(
            SNAPSHOT_BYTES_STREAMED,
            "Snapshot bytes sent to readers, by path (via)",
            m.streamed.clone(),
        );
        registry.register(
            SNAPSHOT_FREEZE_SECONDS,
            "How long shards stayed frozen for a snapshot",
            m.freeze.clone(),
        );
        registry.register(
            RESTORE_FAILURES,
            "Restores and partial applies refused or failed, by reason",
            m.restore_failures.clone(),
        );
        registry.register(
            FUSE_ERRORS,
            "FUSE operations answered with an error, by errno",
            m.fuse_errors.clone(),
        );
        registry.register(
            FUSE_CACHE_DROPS,
            "Live files whose cached pages were dropped as soon as their state moved on",
            m.fuse_cache_drops.clone(),
        );
        registry.register(
            PARTIAL_BYTES,
            "Bytes of partial snapshots sent to receivers and applied here, by direction",
            m.partial_bytes.clone(),
        );
        registry.register(
            REPOSITORY_BYTES_COVERED,
            "Archive bytes a repository generation covered (stored or found unchanged), by collection (id)",
            m.repository_read.clone(),
        );
        registry.register(
            REPOSITORY_BYTES_ADDED,
            "Bytes repository generations added to the repository (new chunks, compressed and encrypted), by collection (id)",
            m.repository_added.clone(),
        );
        registry.register(
            REPOSITORY_GENERATION_SECONDS,
            "How long writing a repository generation took",
            m.repository_seconds.clone(),
        );
        registry.register(
            BACKUP_LAST_SUCCESS,
            "When a backup policy last stored a snapshot of a collection (collection \"\": the full storage), in seconds since the epoch",
            m.backup_last_success.clone(),
        );
        registry.register(
            BACKUP_LAST_DURATION,
            "How long a backup policy's last run took",
            m.backup_last_duration.clone(),
        );
        registry.register(
            BACKUP_INTERVAL,
            "A backup policy's nominal interval between runs (its interval, or the gap between its cron schedule's next two matches)",
            m.backup_interval.clone(),
        );
        registry.register(
            BACKUP_BYTES_ADDED,
            "Bytes a backup policy's snapshots added to the store, by policy and collection",
            m.backup_bytes_added.clone(),
        );
        registry.register(
            BACKUP_FAILURES,
            "Backups of a collection that failed, by policy, collection and reason",
            m.backup_failures.clone(),
        );
        registry.register(
            BACKUP_SKIPPED,
            "Scheduled jobs not started because the policy's previous one was still running, by policy and job",
            m.backup_skipped.clone(),
        );
        registry.register(
            BACKUP_FORGOTTEN,
            "Stored snapshots a policy's retention removed, by policy and collection",
            m.backup_forgotten.clone(),
        );
        registry.register(
            BACKUP_DRILLS,
            "Verification drills, by policy, collection (\"\": the whole repository), kind (check, restore) and result",
            m.backup_drills.clone(),
        );
        registry.register(
            BACKUP_DRILL_FAILING,
            "1 while the last drill of this kind failed, by policy, collection and kind",
            m.backup_drill_failing.clone(),
        );
        registry.register(
            FOLLOW_ROUNDS,
            "Rounds over a followed Qdrant cluster, by cluster and result (ok, failed)",
            m.follow_rounds.clone(),
        );
        registry.register(
            FOLLOW_LAST_SUCCESS,
            "When a round over a followed cluster last recorded a generation, in seconds since the epoch",
            m.follow_last_success.clone(),
        );
        registry.register(
            FOLLOW_LAST_DURATION,
            "How long the last round over a followed cluster took",
            m.follow_last_duration.clone(),
        );
        registry.register(
            FOLLOW_BYTES_RECEIVED,
            "Bytes of partial snapshots pulled from a followed cluster's nodes",
            m.follow_bytes.clone(),
        );
        registry.register(
            FOLLOW_STALE_SHARDS,
            "Shards of a followed cluster that the last round could not pull from any Active replica (they keep an earlier state)",
            m.follow_stale.clone(),
        );
        // Series with fixed labels show from the start, at zero.
        for via in Via::ALL {
            let _ = m.streamed.get_or_create(&via.label());
        }
        for direction in Direction::ALL {
            let _ = m.partial_bytes.get_or_create(&direction.label());
        }
        for reason in FailureReason::ALL {
            let _ = m.restore_failures.get_or_create(&reason.label());
        }
        m
    })
}

fn collection(id: &str) -> Collection {
    Collection { id: id.to_string() }
}

/// A snapshot of collection `id` ("" for the full storage) is being produced for as
/// long as the guard lives.
pub struct CreationRunning(Collection);

impl CreationRunning {
    pub fn start(id: &str) -> Self {
        let label = collection(id);
        metrics().creation_running.get_or_create(&label).inc();
        CreationRunning(label)
    }
}

impl Drop for CreationRunning {
    fn drop(&mut self) {
        metrics().creation_running.get_or_create(&self.0).dec();
    }
}

/// A restore (or partial apply) of collection `id` runs for as long as the guard lives.
pub struct RecoveryRunning(Collection);

impl RecoveryRunning {
    pub fn start(id: &str) -> Self {
        let label = collection(id);
        metrics().recovery_running.get_or_create(&label).inc();
        RecoveryRunning(label)
    }
}

impl Drop for RecoveryRunning {
    fn drop(&mut self) {
        metrics().recovery_running.get_or_create(&self.0).dec();
    }
}

/// A restore was refused or failed.
pub fn restore_failed(reason: FailureReason) {
    metrics()
        .restore_failures
        .get_or_create(&reason.label())
        .inc();
}

/// A snapshot of collection `id` was produced whole (stored, or read to its end).
pub fn snapshot_created(id: &str) {
    metrics().created.get_or_create(&collection(id)).inc();
}

pub fn bytes_streamed(via: Via, bytes: u64) {
    metrics().streamed.get_or_create(&via.label()).inc_by(bytes);
}

pub fn partial_bytes(direction: Direction, bytes: u64) {
    metrics()
        .partial_bytes
        .get_or_create(&direction.label())
        .inc_by(bytes);
}

/// A repository generation of collection `id` ("" for the full storage) was stored:
/// `read` archive bytes covered, `added` bytes new in the repository.
pub fn generation_stored(id: &str, read: u64, added: u64, took: Duration) {
    let m = metrics();
    m.repository_read
        .get_or_create(&collection(id))
        .inc_by(read);
    m.repository_added
        .get_or_create(&collection(id))
        .inc_by(added);
    m.repository_seconds.observe(took.as_secs_f64());
}

fn policy_collection(policy: &str, collection: &str) -> PolicyCollection {
    PolicyCollection {
        policy: policy.to_string(),
        collection: collection.to_string(),
    }
}

/// A backup policy is configured, with its nominal interval: its series show from
/// the start.
pub fn backup_policy(policy: &str, interval: Duration) {
    let label = PolicyLabel {
        policy: policy.to_string(),
    };
    metrics()
        .backup_interval
        .get_or_create(&label)
        .set(interval.as_secs_f64());
    let _ = metrics().backup_last_duration.get_or_create(&label);
}

/// A policy stored a snapshot of `collection` at `at` (seconds since the epoch).
pub fn backup_stored(policy: &str, collection: &str, at: f64, bytes_added: u64) {
    let m = metrics();
    let label = policy_collection(policy, collection);
    m.backup_last_success.get_or_create(&label).set(at);
    m.backup_bytes_added
        .get_or_create(&label)
        .inc_by(bytes_added);
}

/// A policy's backup of `collection` failed.
pub fn backup_failed(policy: &str, collection: &str, reason: &'static str) {
    metrics()
        .backup_failures
        .get_or_create(&PolicyFailure {
            policy: policy.to_string(),
            collection: collection.to_string(),
            reason,
        })
        .inc();
}

/// A policy's run ended after `took`.
pub fn backup_ran(policy: &str, took: Duration) {
    metrics()
        .backup_last_duration
        .get_or_create(&PolicyLabel {
            policy: policy.to_string(),
        })
        .set(took.as_secs_f64());
}

/// A round over followed cluster `cluster` ended.
pub fn follow_round(cluster: &str, ok: bool, seconds: f64, bytes: u64, stale: usize) {
    let m = metrics();
    let label = ClusterLabel {
        cluster: cluster.to_string(),
    };
    m.follow_rounds
        .get_or_create(&ClusterResult {
            cluster: cluster.to_string(),
            result: if ok { "ok" } else { "failed" },
        })
        .inc();
    m.follow_last_duration.get_or_create(&label).set(seconds);
    m.follow_bytes.get_or_create(&label).inc_by(bytes);
    m.follow_stale.get_or_create(&label).set(stale as i64);
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        m.follow_last_success.get_or_create(&label).set(now);
    }
}

/// A scheduled job was skipped: the previous one still ran.
pub fn backup_skipped(policy: &str, job: &'static str) {
    metrics()
        .backup_skipped
        .get_or_create(&PolicyJob {
            policy: policy.to_string(),
            job,
        })
        .inc();
}

/// A retention removed `count` stored snapshots of `collection`.
pub fn generations_forgotten(policy: &str, collection: &str, count: u64) {
    metrics()
        .backup_forgotten
        .get_or_create(&policy_collection(policy, collection))
        .inc_by(count);
}

/// A drill of `kind` (`check`, `restore`) ended.
pub fn drill_ended(policy: &str, collection: &str, kind: &'static str, passed: bool) {
    let m = metrics();
    m.backup_drills
        .get_or_create(&DrillResult {
            policy: policy.to_string(),
            collection: collection.to_string(),
            kind,
            result: if passed { "passed" } else { "failed" },
        })
        .inc();
    m.backup_drill_failing
        .get_or_create(&DrillLabel {
            policy: policy.to_string(),
            collection: collection.to_string(),
            kind,
        })
        .set(i64::from(!passed));
}

/// A freeze ended after `held`.
pub fn freeze_ended(held: Duration) {
    metrics().freeze.observe(held.as_secs_f64());
}

/// A FUSE operation answered with an error.
pub fn fuse_error(errno: &'static str) {
    metrics()
        .fuse_errors
        .get_or_create(&ErrnoLabel { errno })
        .inc();
}

/// The kernel's cached pages of a live file whose state moved on were dropped.
pub fn fuse_cache_dropped() {
    metrics().fuse_cache_drops.inc();
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything, in the OpenMetrics text format (which Prometheus scrapes). Each of
/// `collections` has its per-collection series, at zero if nothing happened to it
/// yet (a family without series would not show at all).
pub fn render<S: AsRef<str>>(collections: &[S]) -> String {
    let m = metrics();
    for name in collections {
        let label = collection(name.as_ref());
        let _ = m.creation_running.get_or_create(&label);
        let _ = m.recovery_running.get_or_create(&label);
        let _ = m.created.get_or_create(&label);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &metrics().registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_their_labels() {
        snapshot_created("metrics-test\"x");
        bytes_streamed(Via::Fuse, 10);
        let running = CreationRunning::start("metrics-test");
        let text = render(&["metrics-test-idle"]);
        assert!(
            text.contains("snapshot_created_total{id=\"metrics-test\\\"x\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE snapshot_creation_running gauge"));
        assert!(
            text.contains("snapshot_creation_running{id=\"metrics-test\"} 1"),
            "{text}"
        );
        // A collection nothing happened to yet has its series at zero.
        for family in ["snapshot_creation_running", "snapshot_recovery_running"] {
            assert!(
                text.contains(&format!("{family}{{id=\"metrics-test-idle\"}} 0")),
                "{text}"
            );
        }
        assert!(text.contains("snapshot_created_total{id=\"metrics-test-idle\"} 0"));
        assert!(text.contains("snapfs_restore_failures_total{reason=\"space\"} 0"));
        drop(running);
        let none: [&str; 0] = [];
        assert!(render(&none).contains("snapshot_creation_running{id=\"metrics-test\"} 0"));
        let fuse: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("snapfs_snapshot_bytes_streamed_total{via=\"fuse\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(fuse >= 10);
        assert!(text.ends_with("# EOF\n"));
    }
}
