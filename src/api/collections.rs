//! `/collections[/{name}]`: list, create, inspect, delete.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, State};
use serde_json::json;

use super::Service;
use super::envelope::{ApiJson, ApiResult, Timer};
use crate::service::collections::{
    CollectionOverview, collection_exists, collection_names, collection_overview,
    create_collection, delete_collection,
};
use crate::service::{QDRANT_API_VERSION, SERVER_TITLE};
use crate::storage::CreateCollection;

pub async fn root(timer: Timer) -> ApiResult {
    // qdrant-client compares `version` with its own; we speak the API of this Qdrant release.
    Ok(timer.ok_raw(json!({
        "title": SERVER_TITLE,
        "version": QDRANT_API_VERSION,
        "snapfs_version": env!("CARGO_PKG_VERSION"),
    })))
}

pub async fn list(timer: Timer, State(app): State<Arc<Service>>) -> ApiResult {
    let collections: Vec<_> = collection_names(&app)
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    Ok(timer.ok(json!({"collections": collections})))
}

pub async fn exists(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(timer.ok(json!({"exists": collection_exists(&app, &name)})))
}

pub async fn create(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<CreateCollection>,
) -> ApiResult {
    create_collection(&app, &name, request).await?;
    Ok(timer.ok(true))
}

pub async fn delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(timer.ok(delete_collection(&app, &name).await?))
}

pub async fn info(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
) -> ApiResult {
    let CollectionOverview {
        config,
        stats,
        payload_schema,
    } = collection_overview(&app, &name).await?;
    let config = &config;
    let last_change = stats
        .last_change
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    Ok(timer.ok(json!({
        // Qdrant's meaning: green = idle, yellow = optimizing. A freeze is reported below.
        "status": if stats.optimizing_shards > 0 { "yellow" } else { "green" },
        "optimizer_status": "ok",
        "indexed_vectors_count": stats.indexed_vectors_count,
        "points_count": stats.points_count,
        "segments_count": stats.segments_count,
        "config": shown_config(config),
        "payload_schema": payload_schema,
        "snapfs": {
            "shards": config.shard_count(),
            "frozen_shards": stats.frozen_shards,
            "optimizing_shards": stats.optimizing_shards,
            "pending_updates": stats.pending_updates,
            "last_change_unix": last_change,
            "restore": crate::snapshot::progress::running_restore(&app.snapshots, &name).map(|r| r.to_json()),
        },
    })))
}

/// The config as Qdrant's `GET /collections/{name}` shows it: `config.json` without
/// the storage-only `uuid`.
fn shown_config(config: &crate::storage::CollectionConfig) -> serde_json::Value {
    let mut shown = serde_json::to_value(config).expect("plain data");
    if let Some(map) = shown.as_object_mut() {
        map.remove("uuid");
    }
    shown
}
