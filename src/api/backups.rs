//! `/snapfs/backups…` (snapfs's own paths; Qdrant has no backup policies): the
//! policies' status, a run now (with progress in the status while it goes), and a
//! retention's plan or its application.
//!
//! - `GET /snapfs/backups`, `GET /snapfs/backups/{policy}`: status;
//! - `POST /snapfs/backups/{policy}/run?job=backup|retention|drill&wait=true`;
//! - `POST /snapfs/backups/{policy}/forget?dry_run=true`.
//!
//! A status names where snapshots go and what failed, in the daemon's words: a
//! client on a TCP listener gets the daemon's directories by their config keys.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::Service;
use super::envelope::{ApiError, ApiResult, Timer};
use crate::backup::ledger::Job;
use crate::service::backups::{forget as forget_now, run_now, status as all_status};

pub async fn status(timer: Timer, State(app): State<Arc<Service>>) -> ApiResult {
    Ok(timer.ok_hiding_paths(all_status(&app).await?))
}

pub async fn policy_status(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(policy): Path<String>,
) -> ApiResult {
    let one = all_status(&app)
        .await?
        .into_iter()
        .find(|s| s.name == policy)
        .ok_or_else(|| ApiError::not_found(format!("no backup policy {policy}")))?;
    Ok(timer.ok_hiding_paths(one))
}

#[derive(Debug, Deserialize)]
pub struct RunParams {
    #[serde(default = "backup")]
    job: Job,
    #[serde(default)]
    wait: bool,
}

fn backup() -> Job {
    Job::Backup
}

pub async fn run(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(policy): Path<String>,
    Query(params): Query<RunParams>,
) -> ApiResult {
    let task = run_now(&app, &policy, params.job)?;
    if !params.wait {
        return Ok(timer.accepted());
    }
    let record = task
        .await
        .map_err(|e| ApiError::from(crate::storage::StorageError::from_cause(e)))?;
    Ok(timer.ok_hiding_paths(record))
}

#[derive(Debug, Deserialize)]
pub struct ForgetParams {
    #[serde(default)]
    dry_run: bool,
}

pub async fn forget(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(policy): Path<String>,
    Query(params): Query<ForgetParams>,
) -> ApiResult {
    Ok(timer.ok_hiding_paths(forget_now(&app, &policy, params.dry_run).await?))
}
