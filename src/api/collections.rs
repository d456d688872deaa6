//! `/collections[/{name}]`: list, create, inspect, delete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, State};
use qdrant_edge::PayloadIndexInfo;
use serde_json::json;

use super::AppState;
use super::envelope::{ApiJson, ApiResult, Timer};
use crate::storage::{CollectionConfig, CollectionStats, CreateCollection, Result};

// ---- what each request does, whatever the protocol ----

/// Create collection `name` from Qdrant's create request (config diffs over Qdrant's
/// defaults; every field checked).
pub async fn create_collection(
    app: &AppState,
    name: &str,
    request: CreateCollection,
) -> Result<()> {
    let config = request.into_config()?;
    app.storage.create_collection(name, config).await
}

/// Delete collection `name`; `false` if there was none.
pub async fn delete_collection(app: &AppState, name: &str) -> Result<bool> {
    app.storage.delete_collection(name).await
}

pub fn collection_names(app: &AppState) -> Vec<String> {
    app.storage.collection_names()
}

pub fn collection_exists(app: &AppState, name: &str) -> bool {
    app.storage.collection(name).is_ok()
}

/// What `GET /collections/{name}` shows: the config, the counts, the payload indexes.
pub struct CollectionOverview {
    pub config: CollectionConfig,
    pub stats: CollectionStats,
    pub payload_schema: BTreeMap<String, PayloadIndexInfo>,
}

pub async fn collection_overview(app: &AppState, name: &str) -> Result<CollectionOverview> {
    let collection = app.storage.collection(name)?;
    let config = collection.config().clone();
    let (stats, payload_schema) =
        super::run_blocking(move || Ok((collection.stats()?, collection.payload_schema()?)))
            .await?;
    Ok(CollectionOverview {
        config,
        stats,
        payload_schema,
    })
}

// ---- REST ----

pub async fn root(timer: Timer) -> ApiResult {
    // qdrant-client compares `version` with its own; we speak the API of this Qdrant release.
    Ok(timer.ok_raw(json!({
        "title": super::SERVER_TITLE,
        "version": super::QDRANT_API_VERSION,
        "snapfs_version": env!("CARGO_PKG_VERSION"),
    })))
}

pub async fn list(timer: Timer, State(app): State<Arc<AppState>>) -> ApiResult {
    let collections: Vec<_> = collection_names(&app)
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
    Ok(timer.ok(json!({"exists": collection_exists(&app, &name)})))
}

pub async fn create(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<CreateCollection>,
) -> ApiResult {
    create_collection(&app, &name, request).await?;
    Ok(timer.ok(true))
}

pub async fn delete(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(timer.ok(delete_collection(&app, &name).await?))
}

pub async fn info(
    timer: Timer,
    State(app): State<Arc<AppState>>,
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
