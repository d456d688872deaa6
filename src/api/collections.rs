//! `/collections[/{name}]`: list, create, inspect, delete.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, State};
use serde_json::json;

use super::AppState;
use super::envelope::{ApiJson, ApiResult, Timer};
use crate::storage::CreateCollection;

pub async fn root(timer: Timer) -> ApiResult {
    // qdrant-client compares `version` with its own; we speak the API of this Qdrant release.
    Ok(timer.ok_raw(json!({
        "title": "snapfs - snapshots of vector collections as files",
        "version": super::QDRANT_API_VERSION,
        "snapfs_version": env!("CARGO_PKG_VERSION"),
    })))
}

pub async fn list(timer: Timer, State(app): State<Arc<AppState>>) -> ApiResult {
    let collections: Vec<_> = app
        .storage
        .collection_names()
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    Ok(timer.ok(json!({"collections": collections})))
}

pub async fn exists(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(timer.ok(json!({"exists": app.storage.collection(&name).is_ok()})))
}

pub async fn create(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<CreateCollection>,
) -> ApiResult {
    let config = request.into_config()?;
    app.storage.create_collection(&name, config).await?;
    Ok(timer.ok(true))
}

pub async fn delete(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(timer.ok(app.storage.delete_collection(&name).await?))
}

pub async fn info(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult {
    let collection = app.storage.collection(&name)?;
    let (stats, payload_schema) = {
        let collection = collection.clone();
        super::blocking(move || Ok((collection.stats()?, collection.payload_schema()?))).await?
    };
    let config = collection.config();
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
            "restore": crate::snapshot::progress::running_restore(&name).map(|r| r.to_json()),
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
