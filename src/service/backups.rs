//! Backup policies at work: the schedules that start jobs, the jobs themselves
//! (a backup run, a retention, a drill), and the status the adapters show.
//!
//! One job of each kind per policy runs at a time: a scheduled one that comes due
//! while the previous is still going is skipped and counted, a manual one is refused
//! (409). Every job ends in the ledger (`crate::backup::ledger`), which is what the
//! status shows and what a restart decides its catch-up from. A failure is never only
//! a log line: it is in the status, in the metrics (`snapfs_backup_failures_total`,
//! `snapfs_backup_drill_failing`) and in the ledger.
//!
//! The jobs use the store through the same calls as REST and the mount: a backup is
//! a stored snapshot made from a live view, a retention deletes stored snapshots
//! and then asks the store to prune, a restore drill pumps a stored snapshot into a
//! scratch storage through the ordinary restore path.
//!
//! This file holds [`Backups`], the claim that keeps one job of a kind per policy,
//! and the running and recording of a job; each kind of job is in its own file
//! (`run`, `retention`, `drill`), as are the timers (`schedule`) and the status
//! (`status`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::Service;
use crate::backup::ledger::{Job, Ledger, PolicyRecord, RunRecord};
use crate::backup::retention::Decision;
use crate::backup::schedule::unix;
use crate::backup::{Policy, PolicyFile};
use crate::snapshot::Scope;
use crate::snapshot::store::SnapshotStore;
use crate::storage::{Result, Storage, StorageError};

mod drill;
mod retention;
mod run;
mod schedule;
mod status;

use drill::drill_run;
pub use retention::forget;
use retention::retention_run;
use run::backup_run;
pub use schedule::start_schedules;
pub use status::{status, status_now};

/// The policies, their record, and the jobs running now.
pub struct Backups {
    policies: Vec<Policy>,
    ledger_path: PathBuf,
    ledger: Mutex<Ledger>,
    running: Mutex<HashMap<(String, Job), Progress>>,
    next: Mutex<HashMap<(String, Job), SystemTime>>,
    /// Where restore drills make their scratch storage.
    scratch: PathBuf,
    /// The policies with a store of their own (`store:`); the others use the daemon's.
    stores: HashMap<String, Arc<dyn SnapshotStore>>,
}

/// A job under way, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub job: Job,
    pub trigger: String,
    pub started: f64,
    /// What it does now, in words.
    pub step: String,
    pub done: usize,
    pub total: usize,
}

/// A policy's status: `snapfs backup status`, `GET /snapfs/backups`, the mount's
/// `backups/<policy>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub collections: Vec<String>,
    pub full_storage: bool,
    pub schedule: String,
    /// Where its snapshots go (the daemon's store, or its own).
    pub store: String,
    /// When each kind of job is due next (seconds since the epoch).
    pub next: HashMap<String, f64>,
    pub running: Vec<Progress>,
    pub last_run: Option<RunRecord>,
    pub last_retention: Option<RunRecord>,
    pub last_drill: Option<RunRecord>,
    pub last_success: HashMap<String, f64>,
    pub runs: u64,
    pub failures: u64,
    pub skipped: u64,
    pub drills_passed: u64,
    pub drills_failed: u64,
    /// Stored snapshots kept now, per collection (`""`: the full storage).
    pub generations: HashMap<String, usize>,
}

/// What a retention did or would do to one scope.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeRetention {
    pub collection: String,
    pub decisions: Vec<Decision>,
}

fn scope_label(scope: &Scope) -> String {
    match scope {
        Scope::Collection(c) | Scope::Shard(c, _) => c.clone(),
        Scope::Full => String::new(),
    }
}

/// A short reason for a failure, for the metrics' `reason` label.
fn reason(err: &StorageError) -> &'static str {
    match err {
        StorageError::NotFound(_) => "missing_collection",
        StorageError::AlreadyInProgress(_) => "locked",
        StorageError::ShuttingDown => "stopping",
        StorageError::BadRequest(_) => "refused",
        _ => "internal",
    }
}

impl Backups {
    /// The policies of `file`, with the ledger at `data_dir`; `stores`: the stores of
    /// the policies that have their own.
    pub fn new(
        file: &PolicyFile,
        data_dir: &std::path::Path,
        temp_path: &std::path::Path,
        stores: HashMap<String, Arc<dyn SnapshotStore>>,
    ) -> Backups {
        let ledger_path = Ledger::path(data_dir);
        let ledger = if file.policies.is_empty() {
            Ledger::default()
        } else {
            Ledger::load(&ledger_path)
        };
        Backups {
            policies: file.policies.clone(),
            ledger_path,
            ledger: Mutex::new(ledger),
            running: Mutex::new(HashMap::new()),
            next: Mutex::new(HashMap::new()),
            scratch: temp_path.to_path_buf(),
            stores,
        }
    }

    /// Where policy `name` keeps its snapshots: its own store, or the daemon's.
    fn store_of(&self, name: &str, service: &Service) -> Arc<dyn SnapshotStore> {
        self.stores
            .get(name)
            .cloned()
            .unwrap_or_else(|| service.store.clone())
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    fn policy(&self, name: &str) -> Result<&Policy> {
        self.policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| StorageError::NotFound(format!("no backup policy {name}")))
    }

    /// Change the ledger and write it; a write failure is logged (the record in
    /// memory stays right, the next change writes it again).
    fn record(&self, change: impl FnOnce(&mut Ledger)) {
        let mut ledger = self.ledger.lock().unwrap();
        change(&mut ledger);
        if let Err(e) = ledger.save(&self.ledger_path) {
            tracing::warn!(error = %e, "the backup ledger could not be written");
        }
    }

    fn policy_record(&self, name: &str) -> PolicyRecord {
        self.ledger
            .lock()
            .unwrap()
            .policies
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn set_step(&self, policy: &str, job: Job, step: String, done: usize, total: usize) {
        if let Some(progress) = self
            .running
            .lock()
            .unwrap()
            .get_mut(&(policy.to_string(), job))
        {
            progress.step = step;
            progress.done = done;
            progress.total = total;
        }
    }
}

/// A job claimed for one policy: released (and so the next may start) when dropped.
struct Claim {
    backups: Arc<Backups>,
    key: (String, Job),
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.backups.running.lock().unwrap().remove(&self.key);
    }
}

fn claim(backups: &Arc<Backups>, policy: &str, job: Job, trigger: &str) -> Option<Claim> {
    let key = (policy.to_string(), job);
    let mut running = backups.running.lock().unwrap();
    if running.contains_key(&key) {
        return None;
    }
    running.insert(
        key.clone(),
        Progress {
            job,
            trigger: trigger.to_string(),
            started: unix(SystemTime::now()),
            step: "starting".into(),
            done: 0,
            total: 0,
        },
    );
    Some(Claim {
        backups: backups.clone(),
        key,
    })
}

/// Start job `job` of policy `name` now (`snapfs backup run`, REST): refused with
/// 409 while one of its kind runs. The returned task ends with the job's record.
pub fn run_now(
    service: &Arc<Service>,
    name: &str,
    job: Job,
) -> Result<tokio::task::JoinHandle<RunRecord>> {
    let backups = service.backups.clone();
    let policy = backups.policy(name)?.clone();
    if job == Job::Drill && policy.drills.is_none() {
        return Err(StorageError::bad_request(format!(
            "backup policy {name} has no drills configured"
        )));
    }
    if job == Job::Retention && policy.retention.is_none() {
        return Err(StorageError::bad_request(format!(
            "backup policy {name} has no retention configured"
        )));
    }
    let claim = claim(&backups, name, job, "manual").ok_or_else(|| {
        StorageError::AlreadyInProgress(format!(
            "a {} of backup policy {name} is running already",
            job.label()
        ))
    })?;
    let service = service.clone();
    Ok(tokio::spawn(async move {
        run_claimed(&service, &policy, job, "manual", claim, None).await
    }))
}

/// Run a claimed job to its end and record it. `plan`: a retention's decisions made
/// already (a manual forget answers with exactly what it applied).
async fn run_claimed(
    service: &Arc<Service>,
    policy: &Policy,
    job: Job,
    trigger: &str,
    claim: Claim,
    plan: Option<Vec<ScopeRetention>>,
) -> RunRecord {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut record = match job {
        Job::Backup => backup_run(service, policy).await,
        Job::Retention => retention_run(service, policy, plan)
            .await
            .unwrap_or_else(|err| failed_record(&err)),
        Job::Drill => drill_run(service, policy).await,
    };
    record.job = Some(job);
    record.trigger = trigger.to_string();
    record.started = unix(started);
    record.finished = unix(SystemTime::now());
    record.seconds = clock.elapsed().as_secs_f64();
    let failed = record.result != "ok";
    if job == Job::Backup {
        crate::metrics::backup_ran(&policy.name, clock.elapsed());
    }
    tracing::info!(
        policy = %policy.name,
        job = job.label(),
        trigger,
        result = %record.result,
        seconds = format!("{:.3}", record.seconds),
        bytes_added = record.bytes_added,
        "backup job ended"
    );
    let backups = service.backups.clone();
    let kept = record.clone();
    backups.record(|ledger| {
        let entry = ledger.policies.entry(policy.name.clone()).or_default();
        match job {
            Job::Backup => {
                entry.runs = entry.runs.saturating_add(1);
                entry.failures = entry.failures.saturating_add(u64::from(failed));
                for scope in &kept.scopes {
                    if scope.snapshot.is_some() && scope.reason.is_none() {
                        entry
                            .last_success
                            .insert(scope.collection.clone(), kept.finished);
                    }
                }
            }
            Job::Drill if failed => entry.drills_failed = entry.drills_failed.saturating_add(1),
            Job::Drill => entry.drills_passed = entry.drills_passed.saturating_add(1),
            Job::Retention => {}
        }
        entry.last.insert(job, kept);
    });
    drop(claim);
    record
}

fn failed_record(err: &StorageError) -> RunRecord {
    RunRecord {
        result: "failed".into(),
        checks: vec![err.to_string()],
        ..RunRecord::default()
    }
}

/// The scopes a policy backs up now: its collections (`*`: every one there is),
/// then the full storage.
fn scopes_of(storage: &Storage, policy: &Policy) -> Vec<Scope> {
    let mut names: Vec<String> = Vec::new();
    for name in &policy.collections {
        if name == "*" {
            names.extend(storage.collection_names());
        } else {
            names.push(name.clone());
        }
    }
    names.sort();
    names.dedup();
    let mut scopes: Vec<Scope> = names.into_iter().map(Scope::Collection).collect();
    if policy.full_storage {
        scopes.push(Scope::Full);
    }
    scopes
}

/// Refuse, at start, a policy naming a collection that does not exist: the
/// policy's line in the configuration file is named.
pub fn check_policies(
    storage: &Storage,
    file: &PolicyFile,
    lines: &HashMap<String, usize>,
) -> std::result::Result<(), String> {
    for policy in &file.policies {
        for name in &policy.collections {
            if name != "*" && storage.collection(name).is_err() {
                let line = lines
                    .get(&policy.name)
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                return Err(format!(
                    "backup policy {}{line}: collection {name} does not exist",
                    policy.name
                ));
            }
        }
    }
    Ok(())
}
