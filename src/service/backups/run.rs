//! The backup run: a stored snapshot of each of a policy's scopes, made from a live
//! view, then the retention when it has no schedule of its own. Kept apart from
//! the claim and the ledger, which every kind of job shares.

use std::sync::Arc;
use std::time::SystemTime;

use super::retention::retention_run;
use super::{claim, reason, scope_label, scopes_of};
use crate::backup::Policy;
use crate::backup::ledger::{Job, RunRecord, ScopeOutcome};
use crate::backup::schedule::unix;
use crate::service::{Service, run_blocking};
use crate::snapshot::store::SnapshotStore;
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::Result;

pub(super) async fn backup_run(service: &Arc<Service>, policy: &Policy) -> RunRecord {
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
    let scope = crate::service::snapshots::checked_scope(service, scope)?;
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
