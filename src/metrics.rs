//! Process-wide counters in Prometheus text format, served by `GET /metrics` and the
//! mount's `metrics` file. Plain atomics and a few small maps: a daemon this size
//! needs no registry library, and every name is a constant here, in one place.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub const SNAPSHOT_CREATION_RUNNING: &str = "snapshot_creation_running";
pub const SNAPSHOT_RECOVERY_RUNNING: &str = "snapshot_recovery_running";
pub const SNAPSHOT_CREATED_TOTAL: &str = "snapshot_created_total";
pub const SNAPSHOT_BYTES_STREAMED_TOTAL: &str = "snapfs_snapshot_bytes_streamed_total";
pub const SNAPSHOT_FREEZE_SECONDS: &str = "snapfs_snapshot_freeze_seconds";
pub const FUSE_ERRORS_TOTAL: &str = "snapfs_fuse_errors_total";
pub const RESTORE_FAILURES_TOTAL: &str = "snapfs_restore_failures_total";
pub const PARTIAL_BYTES_TOTAL: &str = "snapfs_partial_snapshot_bytes_total";

/// Where snapshot bytes left the daemon.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Http,
    Fuse,
}

/// Which way partial-snapshot bytes went.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Partial archives served to receivers.
    Sent,
    /// Partial archives applied here.
    Received,
}

#[derive(Default)]
struct Registry {
    partial_sent: AtomicU64,
    partial_received: AtomicU64,
    creation_running: AtomicI64,
    recovery_running: AtomicI64,
    created: Mutex<BTreeMap<String, u64>>,
    streamed_http: AtomicU64,
    streamed_fuse: AtomicU64,
    freeze_count: AtomicU64,
    freeze_nanos: AtomicU64,
    freeze_max_nanos: AtomicU64,
    fuse_errors: Mutex<BTreeMap<&'static str, u64>>,
    restore_failures: Mutex<BTreeMap<&'static str, u64>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A snapshot is being produced (a live view exists) for as long as the guard lives.
pub struct CreationRunning(());

impl CreationRunning {
    pub fn start() -> Self {
        registry().creation_running.fetch_add(1, Ordering::Relaxed);
        CreationRunning(())
    }
}

impl Drop for CreationRunning {
    fn drop(&mut self) {
        registry().creation_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A restore is running for as long as the guard lives.
pub struct RecoveryRunning(());

impl RecoveryRunning {
    pub fn start() -> Self {
        registry().recovery_running.fetch_add(1, Ordering::Relaxed);
        RecoveryRunning(())
    }
}

impl Drop for RecoveryRunning {
    fn drop(&mut self) {
        registry().recovery_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A restore was refused or failed, by reason (checksum, space, invalid, internal).
pub fn restore_failed(reason: &'static str) {
    *registry()
        .restore_failures
        .lock()
        .unwrap()
        .entry(reason)
        .or_default() += 1;
}

/// A snapshot of collection `id` was produced whole (stored, or read to its end).
pub fn snapshot_created(id: &str) {
    *registry()
        .created
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default() += 1;
}

pub fn bytes_streamed(via: Via, bytes: u64) {
    let counter = match via {
        Via::Http => &registry().streamed_http,
        Via::Fuse => &registry().streamed_fuse,
    };
    counter.fetch_add(bytes, Ordering::Relaxed);
}

pub fn partial_bytes(direction: Direction, bytes: u64) {
    let counter = match direction {
        Direction::Sent => &registry().partial_sent,
        Direction::Received => &registry().partial_received,
    };
    counter.fetch_add(bytes, Ordering::Relaxed);
}

/// A freeze ended after `held`.
pub fn freeze_ended(held: Duration) {
    let nanos = held.as_nanos() as u64;
    let r = registry();
    r.freeze_count.fetch_add(1, Ordering::Relaxed);
    r.freeze_nanos.fetch_add(nanos, Ordering::Relaxed);
    r.freeze_max_nanos.fetch_max(nanos, Ordering::Relaxed);
}

/// A FUSE operation answered with an error.
pub fn fuse_error(errno_name: &'static str) {
    *registry()
        .fuse_errors
        .lock()
        .unwrap()
        .entry(errno_name)
        .or_default() += 1;
}

/// Everything, in Prometheus text exposition format.
pub fn render() -> String {
    let r = registry();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    metric(
        SNAPSHOT_CREATION_RUNNING,
        "gauge",
        "Snapshots being produced now (open live views).",
    );
    metric(
        SNAPSHOT_RECOVERY_RUNNING,
        "gauge",
        "Snapshot restores running now.",
    );
    metric(
        SNAPSHOT_CREATED_TOTAL,
        "counter",
        "Snapshots produced whole, by collection (id).",
    );
    metric(
        SNAPSHOT_BYTES_STREAMED_TOTAL,
        "counter",
        "Snapshot bytes sent to readers, by path (via).",
    );
    metric(
        SNAPSHOT_FREEZE_SECONDS,
        "summary",
        "How long shards stayed frozen for a snapshot.",
    );
    metric(
        PARTIAL_BYTES_TOTAL,
        "counter",
        "Bytes of partial snapshots sent to receivers and applied here, by direction.",
    );
    metric(
        RESTORE_FAILURES_TOTAL,
        "counter",
        "Restores refused or failed, by reason.",
    );
    metric(
        FUSE_ERRORS_TOTAL,
        "counter",
        "FUSE operations answered with an error, by errno.",
    );
    let _ = writeln!(
        out,
        "{SNAPSHOT_CREATION_RUNNING} {}",
        r.creation_running.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "{SNAPSHOT_RECOVERY_RUNNING} {}",
        r.recovery_running.load(Ordering::Relaxed)
    );
    for (id, n) in r.created.lock().unwrap().iter() {
        let _ = writeln!(out, "{SNAPSHOT_CREATED_TOTAL}{{id=\"{}\"}} {n}", escape(id));
    }
    for (via, counter) in [("http", &r.streamed_http), ("fuse", &r.streamed_fuse)] {
        let _ = writeln!(
            out,
            "{SNAPSHOT_BYTES_STREAMED_TOTAL}{{via=\"{via}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    let secs = |nanos: u64| nanos as f64 / 1e9;
    let _ = writeln!(
        out,
        "{SNAPSHOT_FREEZE_SECONDS}_count {}\n{SNAPSHOT_FREEZE_SECONDS}_sum {}\n{SNAPSHOT_FREEZE_SECONDS}_max {}",
        r.freeze_count.load(Ordering::Relaxed),
        secs(r.freeze_nanos.load(Ordering::Relaxed)),
        secs(r.freeze_max_nanos.load(Ordering::Relaxed)),
    );
    for (direction, counter) in [("sent", &r.partial_sent), ("received", &r.partial_received)] {
        let _ = writeln!(
            out,
            "{PARTIAL_BYTES_TOTAL}{{direction=\"{direction}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    for (reason, n) in r.restore_failures.lock().unwrap().iter() {
        let _ = writeln!(out, "{RESTORE_FAILURES_TOTAL}{{reason=\"{reason}\"}} {n}");
    }
    for (errno, n) in r.fuse_errors.lock().unwrap().iter() {
        let _ = writeln!(out, "{FUSE_ERRORS_TOTAL}{{errno=\"{errno}\"}} {n}");
    }
    out
}

/// Label values are collection names: escape what the text format reserves.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_labels() {
        snapshot_created("metrics-test\"x");
        bytes_streamed(Via::Fuse, 10);
        let text = render();
        assert!(text.contains("snapshot_created_total{id=\"metrics-test\\\"x\"} 1"));
        assert!(text.contains("# TYPE snapshot_creation_running gauge"));
        let fuse: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("snapfs_snapshot_bytes_streamed_total{via=\"fuse\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(fuse >= 10);
    }
}
