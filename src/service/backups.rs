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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::{Service, run_blocking};
use crate::backup::ledger::{Job, Ledger, PolicyRecord, RunRecord, ScopeOutcome};
use crate::backup::retention::{Candidate, Decision};
use crate::backup::schedule::{self, from_unix, unix};
use crate::backup::{Policy, PolicyFile, retention};
use crate::snapshot::inflow::{Body, Source};
use crate::snapshot::store::SnapshotStore;
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::{Result, Storage, StorageError};

/// Sample points a restore drill looks up by their own vector.
const DRILL_SAMPLES: usize = 5;

/// What a restore drill restores into its scratch storage as: one fixed name, so
/// a drill never shows as a restore of the live collection (its progress and
/// metrics are by collection name).
const DRILL_COLLECTION: &str = "backup-drill";

/// A restore drill's scratch directory: removed when dropped, whatever way the drill
/// ends (a crash leaves it to the next start: `storage::TEMP_LEFTOVERS`).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "a restore drill's scratch could not be removed");
        }
    }
}

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

async fn backup_run(service: &Arc<Service>, policy: &Policy) -> RunRecord {
    let scopes = scopes_of(service.storage(), policy);
    let total = scopes.len();
    let mut record = RunRecord {
        result: "ok".into(),
        ..RunRecord::default()
    };
    for (done, scope) in scopes.iter().enumerate() {
        let collection = scope_label(scope);
        service.backups.set_step(
            &policy.name,
            Job::Backup,
            format!("storing a snapshot of {}", shown(scope)),
            done,
            total,
        );
        let mut outcome = ScopeOutcome {
            collection: collection.clone(),
            ..ScopeOutcome::default()
        };
        let store = service.backups.store_of(&policy.name, service);
        match store_one(service, store, scope.clone()).await {
            Ok((name, added)) => {
                crate::metrics::backup_stored(
                    &policy.name,
                    &collection,
                    unix(SystemTime::now()),
                    added,
                );
                outcome.snapshot = Some(name);
                outcome.bytes_added = added;
                record.bytes_added += added;
            }
            Err(err) => {
                let why = reason(&err);
                tracing::error!(policy = %policy.name, scope = %shown(scope), reason = why, error = %err, "a backup failed");
                crate::metrics::backup_failed(&policy.name, &collection, why);
                outcome.reason = Some(why.to_string());
                outcome.error = Some(err.to_string());
                record.result = "failed".into();
            }
        }
        record.scopes.push(outcome);
    }
    // The retention follows the run unless it has a schedule of its own.
    if policy
        .retention
        .as_ref()
        .is_some_and(|r| r.schedule.is_none())
    {
        service
            .backups
            .set_step(&policy.name, Job::Backup, "retention".into(), total, total);
        // One retention at a time per policy: a manual one running now is left to do it.
        let retention = match claim(
            &service.backups,
            &policy.name,
            Job::Retention,
            "after a run",
        ) {
            Some(claim) => {
                let done = retention_run(service, policy, None).await;
                drop(claim);
                Some(done)
            }
            None => None,
        };
        match retention {
            None => record
                .checks
                .push("retention: left to the one running now".into()),
            Some(done) => match done {
                Ok(kept) => {
                    for scope in kept.scopes {
                        if let Some(outcome) = record
                            .scopes
                            .iter_mut()
                            .find(|o| o.collection == scope.collection)
                        {
                            outcome.forgotten = scope.forgotten;
                        }
                    }
                    record.pruned = kept.pruned;
                    if kept.result != "ok" {
                        record.result = "failed".into();
                        record.checks.extend(kept.checks);
                    }
                }
                Err(err) => {
                    record.result = "failed".into();
                    record.checks.push(format!("retention: {err}"));
                }
            },
        }
    }
    record
}

fn shown(scope: &Scope) -> String {
    match scope {
        Scope::Collection(c) => format!("collection {c}"),
        Scope::Shard(c, id) => format!("shard {id} of {c}"),
        Scope::Full => "the full storage".into(),
    }
}

/// Store a snapshot of `scope` in `store`: its name and the bytes it added to the
/// store (what the store recorded; a plain store's whole archive).
async fn store_one(
    service: &Arc<Service>,
    store: Arc<dyn SnapshotStore>,
    scope: Scope,
) -> Result<(String, u64)> {
    let scope = super::snapshots::checked_scope(service, scope)?;
    let snapshots = service.snapshots.clone();
    run_blocking(move || {
        let view = SnapshotView::open(&snapshots, scope.clone())?;
        let created = store.create(&view)?;
        drop(view);
        crate::metrics::snapshot_created(&scope_label(&scope));
        let added = store
            .details(&scope)
            .ok()
            .and_then(|details| details.into_iter().find(|d| d.name == created.name))
            .map_or(created.size, |d| d.bytes_added);
        Ok((created.name, added))
    })
    .await
}

/// What policy `name`'s retention removes now (`dry_run`: would remove), per scope.
pub async fn forget(
    service: &Arc<Service>,
    name: &str,
    dry_run: bool,
) -> Result<Vec<ScopeRetention>> {
    let policy = service.backups.policy(name)?.clone();
    if policy.retention.is_none() {
        return Err(StorageError::bad_request(format!(
            "backup policy {name} has no retention configured"
        )));
    }
    if dry_run {
        return plan_retention(service, &policy).await;
    }
    let claim = claim(&service.backups, name, Job::Retention, "manual").ok_or_else(|| {
        StorageError::AlreadyInProgress(format!(
            "a retention of backup policy {name} is running already"
        ))
    })?;
    let planned = plan_retention(service, &policy).await?;
    let record = run_claimed(
        service,
        &policy,
        Job::Retention,
        "manual",
        claim,
        Some(planned.clone()),
    )
    .await;
    if record.result != "ok" {
        return Err(StorageError::internal(record.checks.join("; ")));
    }
    Ok(planned)
}

async fn plan_retention(service: &Arc<Service>, policy: &Policy) -> Result<Vec<ScopeRetention>> {
    let Some(rules) = policy.retention.clone() else {
        return Ok(Vec::new());
    };
    let scopes = scopes_of(service.storage(), policy);
    let store = service.backups.store_of(&policy.name, service);
    run_blocking(move || {
        let now = SystemTime::now();
        let mut planned = Vec::new();
        for scope in scopes {
            let listed = store.list(&scope)?;
            let tags: HashMap<String, Vec<String>> = store
                .details(&scope)?
                .into_iter()
                .map(|d| (d.name, d.tags))
                .collect();
            let candidates: Vec<Candidate> = listed
                .into_iter()
                .map(|s| Candidate {
                    tags: tags.get(&s.name).cloned().unwrap_or_default(),
                    name: s.name,
                    time: s.modified,
                })
                .collect();
            let decisions = retention::plan(&candidates, &rules, now)
                .map_err(|why| StorageError::internal(format!("retention: {why}")))?;
            planned.push(ScopeRetention {
                collection: scope_label(&scope),
                decisions,
            });
        }
        Ok(planned)
    })
    .await
}

/// Apply the retention (`plan`: the decisions made already, else made now): delete
/// what it does not keep, then prune.
async fn retention_run(
    service: &Arc<Service>,
    policy: &Policy,
    plan: Option<Vec<ScopeRetention>>,
) -> Result<RunRecord> {
    let planned = match plan {
        Some(plan) => plan,
        None => plan_retention(service, policy).await?,
    };
    let mut record = RunRecord {
        result: "ok".into(),
        ..RunRecord::default()
    };
    let mut removed_any = false;
    for scope_plan in planned {
        let scope = if scope_plan.collection.is_empty() {
            Scope::Full
        } else {
            Scope::Collection(scope_plan.collection.clone())
        };
        let mut outcome = ScopeOutcome {
            collection: scope_plan.collection.clone(),
            ..ScopeOutcome::default()
        };
        for decision in scope_plan.decisions.iter().filter(|d| !d.keep) {
            let store = service.backups.store_of(&policy.name, service);
            let (scope, name) = (scope.clone(), decision.name.clone());
            match run_blocking(move || store.delete(&scope, &name)).await {
                Ok(()) => outcome.forgotten.push(decision.name.clone()),
                Err(err) => {
                    crate::metrics::backup_failed(
                        &policy.name,
                        &scope_plan.collection,
                        "retention",
                    );
                    record.result = "failed".into();
                    record
                        .checks
                        .push(format!("removing {}: {err}", decision.name));
                }
            }
        }
        if !outcome.forgotten.is_empty() {
            removed_any = true;
            crate::metrics::generations_forgotten(
                &policy.name,
                &outcome.collection,
                outcome.forgotten.len() as u64,
            );
            tracing::info!(policy = %policy.name, collection = %outcome.collection, removed = ?outcome.forgotten, "retention removed stored snapshots");
        }
        record.scopes.push(outcome);
    }
    let prune = policy.retention.as_ref().is_some_and(|r| r.prune);
    if prune && removed_any {
        let store = service.backups.store_of(&policy.name, service);
        match run_blocking(move || store.prune()).await {
            Ok(pruned) => record.pruned = pruned,
            Err(err) => {
                crate::metrics::backup_failed(&policy.name, "", "prune");
                record.result = "failed".into();
                record.checks.push(format!("prune: {err}"));
            }
        }
    }
    Ok(record)
}

async fn drill_run(service: &Arc<Service>, policy: &Policy) -> RunRecord {
    let mut record = RunRecord {
        result: "ok".into(),
        ..RunRecord::default()
    };
    let Some(drills) = policy.drills.clone() else {
        return record;
    };
    let backups = service.backups.clone();
    // The structure, and one part of the data.
    let parts = drills.read_data_parts;
    let part = if parts > 0 {
        let next = backups.policy_record(&policy.name).next_read_part;
        Some((next.clamp(1, parts), parts))
    } else {
        None
    };
    backups.set_step(&policy.name, Job::Drill, "checking the store".into(), 0, 1);
    let store = backups.store_of(&policy.name, service);
    let clock = Instant::now();
    let checked = run_blocking(move || store.check(part)).await;
    let took = format!("{:.3} s", clock.elapsed().as_secs_f64());
    let checked_ran = matches!(checked, Ok(Some(_)));
    let passed = match checked {
        Ok(None) => {
            record
                .checks
                .push("check: the store has no structure to check beyond its files".into());
            None
        }
        Ok(Some(problems)) if problems.is_empty() => {
            record.checks.push(match part {
                Some((k, n)) => format!("check: structure and data part {k}/{n} whole ({took})"),
                None => format!("check: structure whole ({took})"),
            });
            Some(true)
        }
        Ok(Some(problems)) => {
            record
                .checks
                .extend(problems.iter().map(|p| format!("check: {p}")));
            Some(false)
        }
        Err(err) => {
            record.checks.push(format!("check: {err}"));
            Some(false)
        }
    };
    if let Some(passed) = passed {
        crate::metrics::drill_ended(&policy.name, "", "check", passed);
        if !passed {
            record.result = "failed".into();
        }
    }
    // The part moves on once it was read (not after a refusal, a lock say).
    if let (Some((k, n)), Some(_)) = (part, passed.filter(|_| checked_ran)) {
        backups.record(|ledger| {
            ledger
                .policies
                .entry(policy.name.clone())
                .or_default()
                .next_read_part = k % n + 1;
        });
    }
    if drills.restore {
        let scopes: Vec<Scope> = scopes_of(service.storage(), policy)
            .into_iter()
            .filter(|s| matches!(s, Scope::Collection(_)))
            .collect();
        let total = scopes.len();
        for (done, scope) in scopes.into_iter().enumerate() {
            let Scope::Collection(collection) = &scope else {
                continue;
            };
            backups.set_step(
                &policy.name,
                Job::Drill,
                format!("restore drill of {collection}"),
                done,
                total,
            );
            let clock = Instant::now();
            let result = restore_drill(service, &policy.name, collection).await;
            let took = format!("{:.3} s", clock.elapsed().as_secs_f64());
            let passed = result.is_ok();
            crate::metrics::drill_ended(&policy.name, collection, "restore", passed);
            let mut outcome = ScopeOutcome {
                collection: collection.clone(),
                ..ScopeOutcome::default()
            };
            match result {
                Ok((name, words)) => {
                    outcome.snapshot = Some(name);
                    record
                        .checks
                        .push(format!("restore {collection}: {words} ({took})"));
                }
                Err(err) => {
                    tracing::error!(policy = %policy.name, %collection, error = %err, "a restore drill failed");
                    outcome.reason = Some("drill".into());
                    outcome.error = Some(err.to_string());
                    record
                        .checks
                        .push(format!("restore {collection}: FAILED: {err}"));
                    record.result = "failed".into();
                }
            }
            record.scopes.push(outcome);
        }
    }
    if record.result != "ok" {
        tracing::error!(policy = %policy.name, checks = ?record.checks, "a verification drill failed");
    }
    record
}

/// Restore the newest stored snapshot of `collection` into a scratch storage, open
/// it, compare it with what was recorded when it was made, and look up sample
/// points by their own vectors. The scratch is removed whatever happens.
async fn restore_drill(
    service: &Arc<Service>,
    policy: &str,
    collection: &str,
) -> Result<(String, String)> {
    let scope = Scope::Collection(collection.to_string());
    let store = service.backups.store_of(policy, service);
    let looked = scope.clone();
    let (newest, details) = run_blocking(move || {
        let newest = store
            .list(&looked)?
            .into_iter()
            .max_by_key(|s| s.modified)
            .ok_or_else(|| StorageError::NotFound("no stored snapshot to drill".into()))?;
        let details = store
            .details(&looked)?
            .into_iter()
            .find(|d| d.name == newest.name);
        let opened = store.open(&looked, &newest.name)?;
        Ok((opened, details))
    })
    .await?;
    let name = newest.snapshot.name.clone();
    let scratch = Scratch(service.backups.scratch.join(format!(
        "{}{policy}-{}",
        crate::storage::DRILL_SCRATCH_PREFIX,
        rand::random::<u32>()
    )));
    let result = drill_in(&scratch.0, newest, details.as_ref()).await;
    tokio::task::spawn_blocking(move || drop(scratch))
        .await
        .map_err(StorageError::from_cause)?;
    result.map(|words| (name, words))
}

async fn drill_in(
    scratch: &std::path::Path,
    opened: crate::snapshot::store::OpenedSnapshot,
    details: Option<&crate::snapshot::store::StoredDetails>,
) -> Result<String> {
    let storage_dir = scratch.join("storage");
    let temp_dir = scratch.join("tmp");
    let storage = {
        let (storage_dir, temp_dir) = (storage_dir.clone(), temp_dir.clone());
        run_blocking(move || {
            std::fs::create_dir_all(&temp_dir)?;
            let storage = Storage::open(&storage_dir)?;
            storage.stage_restores_in(&temp_dir)?;
            Ok(storage)
        })
        .await?
    };
    // The drill's own snapshot state: nothing it does shows in the daemon's.
    let snapshots = crate::snapshot::Snapshots::new(storage.clone());
    let result = async {
        let shown = opened.shown.clone();
        let checksum = opened.snapshot.checksum.clone();
        let received = Source {
            body: Body::Reader(opened.reader),
            size: Some(opened.snapshot.size),
            shown_as: None,
            checksum: checksum.clone(),
            what: "the stored snapshot",
            stall: None,
            failed: Box::new(move |why| {
                StorageError::internal(format!("cannot read {shown}: {why}"))
            }),
        }
        .pump(&snapshots)
        .await?;
        crate::snapshot::restore::restore_collection(
            &snapshots,
            DRILL_COLLECTION,
            received,
            checksum,
        )
        .await?;
        let restored = storage.collection(DRILL_COLLECTION)?;
        let details = details.cloned();
        run_blocking(move || compare_and_query(&restored, details)).await
    }
    .await;
    let closing = storage.clone();
    let _ = tokio::task::spawn_blocking(move || closing.shutdown()).await;
    result
}

/// The restored collection against what was recorded, and sample lookups.
fn compare_and_query(
    restored: &crate::storage::Collection,
    details: Option<crate::snapshot::store::StoredDetails>,
) -> Result<String> {
    let points = restored.count(None)? as u64;
    let config = crate::snapshot::view::config_digest(restored.config());
    let mut words = vec![format!("{points} points")];
    let recorded = details.as_ref().is_some_and(|d| d.points.is_some());
    if !recorded {
        words.push("no point count or configuration recorded to compare with".into());
    }
    if let Some(details) = &details {
        if let Some(recorded) = details.points {
            if recorded != points {
                return Err(StorageError::internal(format!(
                    "the restore holds {points} points, the snapshot recorded {recorded}"
                )));
            }
            words.push("as recorded".into());
        }
        if let Some(recorded) = &details.config_sha256 {
            if recorded != &config {
                return Err(StorageError::internal(
                    "the restored configuration differs from the one recorded",
                ));
            }
            words.push("configuration as recorded".into());
        }
    }
    let sampled = super::points::sample_lookups(restored, DRILL_SAMPLES)?;
    words.push(format!(
        "{sampled} sample points found by their own vectors, each search over all points answering"
    ));
    Ok(words.join(", "))
}

/// The status of every policy.
pub async fn status(service: &Arc<Service>) -> Result<Vec<PolicyStatus>> {
    let service = service.clone();
    run_blocking(move || Ok(status_now(&service))).await
}

/// [`status`], on a blocking thread (the mount's).
pub fn status_now(service: &Service) -> Vec<PolicyStatus> {
    let backups = &service.backups;
    let mut all = Vec::new();
    for policy in backups.policies() {
        let record = backups.policy_record(&policy.name);
        let store = backups.store_of(&policy.name, service);
        let mut generations = HashMap::new();
        for scope in scopes_of(service.storage(), policy) {
            if let Ok(listed) = store.list(&scope) {
                generations.insert(scope_label(&scope), listed.len());
            }
        }
        let next = backups
            .next
            .lock()
            .unwrap()
            .iter()
            .filter(|((name, _), _)| name == &policy.name)
            .map(|((_, job), at)| (job.label().to_string(), unix(*at)))
            .collect();
        let running = backups
            .running
            .lock()
            .unwrap()
            .iter()
            .filter(|((name, _), _)| name == &policy.name)
            .map(|(_, p)| p.clone())
            .collect();
        all.push(PolicyStatus {
            name: policy.name.clone(),
            collections: policy.collections.clone(),
            full_storage: policy.full_storage,
            schedule: describe(&policy.schedule),
            store: store.location(),
            next,
            running,
            last_run: record.last.get(&Job::Backup).cloned(),
            last_retention: record.last.get(&Job::Retention).cloned(),
            last_drill: record.last.get(&Job::Drill).cloned(),
            last_success: record.last_success.clone().into_iter().collect(),
            runs: record.runs,
            failures: record.failures,
            skipped: record.skipped,
            drills_passed: record.drills_passed,
            drills_failed: record.drills_failed,
            generations,
        });
    }
    all
}

fn describe(schedule: &crate::backup::policy::Schedule) -> String {
    let mut parts = Vec::new();
    if let Some(cron) = &schedule.cron {
        parts.push(format!("cron {} (UTC)", cron.text));
    }
    if let Some(every) = schedule.every {
        parts.push(format!("every {}s", every.as_secs()));
    }
    if !schedule.jitter.is_zero() {
        parts.push(format!("jitter up to {}s", schedule.jitter.as_secs()));
    }
    parts.join(", ")
}

/// The policy's nominal interval, for alert rules: the longest gap between its next
/// 50 due times (a weekday cron expression's weekend included), plus its jitter.
fn nominal_interval(schedule: &crate::backup::policy::Schedule) -> Duration {
    let mut at = schedule::next_due(schedule, SystemTime::now());
    let mut longest = Duration::ZERO;
    for _ in 0..50 {
        let next = schedule::next_due(schedule, at);
        longest = longest.max(next.duration_since(at).unwrap_or_default());
        at = next;
    }
    longest + schedule.jitter
}

/// Start every policy's schedules; they end when `stop` turns true.
pub fn start_schedules(service: &Arc<Service>, stop: watch::Receiver<bool>) {
    for policy in service.backups.policies().to_vec() {
        crate::metrics::backup_policy(&policy.name, nominal_interval(&policy.schedule));
        // The last successes before the restart: an alert on their age holds across it.
        for (collection, at) in service.backups.policy_record(&policy.name).last_success {
            crate::metrics::backup_stored(&policy.name, &collection, at, 0);
        }
        let mut jobs = vec![(Job::Backup, policy.schedule.clone())];
        if let Some(own) = policy.retention.as_ref().and_then(|r| r.schedule.clone()) {
            jobs.push((Job::Retention, own));
        }
        if let Some(drills) = &policy.drills {
            jobs.push((Job::Drill, drills.schedule.clone()));
        }
        for (job, schedule) in jobs {
            let service = service.clone();
            let policy = policy.clone();
            let stop = stop.clone();
            tokio::spawn(async move { schedule_loop(service, policy, job, schedule, stop).await });
        }
    }
}

/// Record `at` as the due time of `policy`'s `job` (what the catch-up decides from).
fn note_due(backups: &Backups, policy: &str, job: Job, at: SystemTime) {
    backups.record(|ledger| {
        ledger
            .policies
            .entry(policy.to_string())
            .or_default()
            .last_due
            .insert(job, unix(at));
    });
}

async fn schedule_loop(
    service: Arc<Service>,
    policy: Policy,
    job: Job,
    schedule: crate::backup::policy::Schedule,
    mut stop: watch::Receiver<bool>,
) {
    let backups = service.backups.clone();
    let key = (policy.name.clone(), job);
    let last_due = backups
        .policy_record(&policy.name)
        .last_due
        .get(&job)
        .and_then(|s| from_unix(*s));
    if last_due.is_none() {
        // The schedule's anchor: a daemon restarted more often than the interval
        // still runs once an interval has passed since this first start.
        note_due(&backups, &policy.name, job, SystemTime::now());
    }
    let (mut due, mut catch_up) = schedule::first_due(&schedule, last_due, SystemTime::now());
    if catch_up {
        tracing::info!(policy = %policy.name, job = job.label(), "a run was missed while the daemon was down: one catch-up run now");
    }
    loop {
        let at = due
            + if catch_up {
                Duration::ZERO
            } else {
                schedule::jitter(&schedule)
            };
        backups.next.lock().unwrap().insert(key.clone(), at);
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let trigger = if catch_up { "catch-up" } else { "schedule" };
        note_due(&backups, &policy.name, job, due);
        match claim(&backups, &policy.name, job, trigger) {
            Some(claim) => {
                let (service, policy) = (service.clone(), policy.clone());
                tokio::spawn(async move {
                    run_claimed(&service, &policy, job, trigger, claim, None).await;
                });
            }
            None => {
                tracing::warn!(policy = %policy.name, job = job.label(), "the previous job still runs: this one is skipped");
                crate::metrics::backup_skipped(&policy.name, job.label());
                backups.record(|ledger| {
                    let entry = ledger.policies.entry(policy.name.clone()).or_default();
                    entry.skipped = entry.skipped.saturating_add(1);
                });
            }
        }
        (due, catch_up) = schedule::following(&schedule, due, SystemTime::now());
    }
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
