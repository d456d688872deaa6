//! The verification drill: a check of the store's structure (and of one part of
//! its data, a different part each time), then, when the policy asks for it, a
//! restore of each collection's newest stored snapshot into a scratch storage,
//! compared with what was recorded when it was made and searched for sample points.
//! Apart from the other jobs because it is the one that builds a second storage
//! and removes it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::scopes_of;
use crate::backup::Policy;
use crate::backup::ledger::{Job, RunRecord, ScopeOutcome};
use crate::service::{Service, run_blocking};
use crate::snapshot::Scope;
use crate::snapshot::inflow::{Body, Source};
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

pub(super) async fn drill_run(service: &Arc<Service>, policy: &Policy) -> RunRecord {
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
    let sampled = crate::service::points::sample_lookups(restored, DRILL_SAMPLES)?;
    words.push(format!(
        "{sampled} sample points found by their own vectors, each search over all points answering"
    ));
    Ok(words.join(", "))
}
