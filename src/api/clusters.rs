//! `/snapfs/clusters…` (snapfs's own paths: Qdrant has no such thing): the followed
//! Qdrant clusters, a round now, their generations, and a restore of one into a
//! Qdrant cluster.
//!
//! - `GET /snapfs/clusters`: status of every followed cluster;
//! - `POST /snapfs/clusters/{cluster}/round?wait=true`: a round now;
//! - `GET /snapfs/clusters/{cluster}/generations`: the generations, oldest first;
//! - `GET|DELETE /snapfs/clusters/{cluster}/generations/{generation}`: its manifest,
//!   or forget it;
//! - `POST /snapfs/clusters/{cluster}/generations/{generation}/restore` with
//!   `{"nodes": [...], "api_key": …, "dry_run": …}`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::Service;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::service::cluster_restore::{RestoreRequest, restore as restore_now};
use crate::service::follow::{self, forget as forget_now, manifests, run_round, summary};

pub async fn status(timer: Timer, State(app): State<Arc<Service>>) -> ApiResult {
    Ok(timer.ok_hiding_paths(follow::status(&app)))
}

#[derive(Debug, Deserialize)]
pub struct RoundParams {
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

pub async fn round(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(cluster): Path<String>,
    Query(params): Query<RoundParams>,
) -> ApiResult {
    app.follow.cluster(&cluster)?;
    // The round runs as a task of its own: a client that goes away does not cut it.
    let task = {
        let app = app.clone();
        tokio::spawn(async move { run_round(&app, &cluster).await })
    };
    if !params.wait {
        return Ok(timer.accepted());
    }
    let report = task
        .await
        .map_err(|e| ApiError::from(crate::storage::StorageError::from_cause(e)))??;
    Ok(timer.ok_hiding_paths(report))
}

pub async fn generations(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(cluster): Path<String>,
) -> ApiResult {
    let all: Vec<_> = manifests(&app, &cluster)
        .await?
        .iter()
        .map(summary)
        .collect();
    Ok(timer.ok(all))
}

pub async fn generation(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((cluster, generation)): Path<(String, String)>,
) -> ApiResult {
    let manifest = manifests(&app, &cluster)
        .await?
        .into_iter()
        .find(|m| m.generation == generation)
        .ok_or_else(|| {
            ApiError::not_found(format!("cluster {cluster} has no generation {generation}"))
        })?;
    Ok(timer.ok(manifest))
}

pub async fn forget(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((cluster, generation)): Path<(String, String)>,
) -> ApiResult {
    let forgotten = forget_now(&app, &cluster, std::slice::from_ref(&generation)).await?;
    if forgotten == 0 {
        return Err(ApiError::not_found(format!(
            "cluster {cluster} has no generation {generation}"
        )));
    }
    Ok(timer.ok(true))
}

pub async fn restore(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((cluster, generation)): Path<(String, String)>,
    ApiJson(request): ApiJson<RestoreRequest>,
) -> ApiResult {
    Ok(timer.ok_hiding_paths(restore_now(&app, &cluster, &generation, request).await?))
}
