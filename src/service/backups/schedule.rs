//! The timers: one task per policy and kind of job, waiting for the next due time
//! (with its jitter), noting it in the ledger so a restart can catch up one missed
//! run, and starting the job unless the previous one still runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Backups, claim, run_claimed};
use crate::backup::Policy;
use crate::backup::ledger::Job;
use crate::backup::schedule::{self, from_unix, unix};
use crate::service::Service;

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
