//! The status of every policy as the adapters show it: the ledger's record, the
//! jobs running and due, and the generations kept now. Read only; nothing here
//! changes a job.

use std::collections::HashMap;
use std::sync::Arc;

use super::{PolicyStatus, scope_label, scopes_of};
use crate::backup::ledger::Job;
use crate::backup::schedule::unix;
use crate::service::{Service, run_blocking};
use crate::storage::Result;

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
