//! The record of what each policy did, kept in `<data_dir>/backups.json` across
//! restarts: the due time of the last job of each kind (what a catch-up after
//! downtime is decided from), the last run's outcome per collection, counts of runs,
//! failures and skipped runs, drill results, and which part of the repository the
//! next data check reads. Written whole to a temporary file, synced, then renamed
//! over the old one, so a crash leaves the old record or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The most the ledger file may be read at (it holds a few KiB per policy).
const MAX_LEDGER_BYTES: u64 = 16 << 20;

/// What kind of job a schedule starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Backup,
    Retention,
    Drill,
}

impl Job {
    pub fn label(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Retention => "retention",
            Job::Drill => "drill",
        }
    }
}

/// How one collection (or the full storage, `""`) fared in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScopeOutcome {
    /// The collection; empty for the full-storage snapshot.
    pub collection: String,
    /// The stored snapshot made, when it was.
    pub snapshot: Option<String>,
    pub bytes_added: u64,
    /// Why it failed (a short reason: `missing_collection`, `locked`, `store`,
    /// `internal`), and in words.
    pub reason: Option<String>,
    pub error: Option<String>,
    /// Generations the retention removed after it.
    pub forgotten: Vec<String>,
}

/// One job's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    pub job: Option<Job>,
    /// `schedule`, `catch-up` or `manual`.
    pub trigger: String,
    pub started: f64,
    pub finished: f64,
    pub seconds: f64,
    /// `ok` or `failed` (some part failed; the others are still done).
    pub result: String,
    pub bytes_added: u64,
    pub scopes: Vec<ScopeOutcome>,
    /// Drills: what was checked, in words (one line per check).
    pub checks: Vec<String>,
    /// Retention: whether the repository was pruned, and what that freed.
    pub pruned: Option<String>,
}

/// A policy's record. Fields a ledger lacks (an older one) read as empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRecord {
    /// The due time of the last job of each kind that was started (seconds).
    pub last_due: BTreeMap<Job, f64>,
    /// The last job of each kind.
    pub last: BTreeMap<Job, RunRecord>,
    /// When a backup last succeeded, per collection (`""`: the full storage).
    pub last_success: BTreeMap<String, f64>,
    pub runs: u64,
    pub failures: u64,
    /// Runs not started because the previous one was still going.
    pub skipped: u64,
    pub drills_passed: u64,
    pub drills_failed: u64,
    /// The next part of the pack files a data check reads (`k` of `k/n`, from 1).
    pub next_read_part: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    pub policies: BTreeMap<String, PolicyRecord>,
}

impl Ledger {
    /// `<data_dir>/backups.json`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("backups.json")
    }

    /// The ledger at `path`; empty when there is none. One that does not parse is
    /// set aside (`.corrupt`) with a warning: schedules then start afresh.
    pub fn load(path: &Path) -> Ledger {
        let bytes = match crate::storage::read_bounded(path, MAX_LEDGER_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ledger::default(),
            Err(e) => {
                tracing::warn!(error = %e, "the backup ledger cannot be read: starting afresh");
                return Ledger::default();
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(ledger) => ledger,
            Err(e) => {
                tracing::warn!(error = %e, "the backup ledger does not parse: set aside, starting afresh");
                let _ = std::fs::rename(path, path.with_extension("json.corrupt"));
                Ledger::default()
            }
        }
    }

    /// Write it at `path`: a temporary file, synced, renamed over the old one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::storage::write_atomically(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_survives_a_save_and_a_bad_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = Ledger::path(dir.path());
        assert!(Ledger::load(&path).policies.is_empty());
        let mut ledger = Ledger::default();
        let record = ledger.policies.entry("p".into()).or_default();
        record.last_due.insert(Job::Backup, 1_765_000_000.0);
        record.runs = 3;
        ledger.save(&path).unwrap();
        let again = Ledger::load(&path);
        assert_eq!(again.policies["p"].runs, 3);
        assert_eq!(again.policies["p"].last_due[&Job::Backup], 1_765_000_000.0);
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(Ledger::load(&path).policies.is_empty());
        assert!(path.with_extension("json.corrupt").exists());
    }
}
