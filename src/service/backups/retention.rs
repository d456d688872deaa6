//! The retention: which stored snapshots a policy's rules keep (planned from the
//! store's listing and tags), the deletion of the others, then the store's prune.
//! One file because a manual forget plans first and applies exactly that plan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{ScopeRetention, claim, run_claimed, scope_label, scopes_of};
use crate::backup::Policy;
use crate::backup::ledger::{Job, RunRecord, ScopeOutcome};
use crate::backup::retention::{self, Candidate};
use crate::service::{Service, run_blocking};
use crate::snapshot::Scope;
use crate::storage::{Result, StorageError};

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
pub(super) async fn retention_run(
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
