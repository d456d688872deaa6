//! Restores over HTTP, Qdrant's paths and shapes: `PUT …/snapshots/recover`
//! (`{location, priority, checksum, api_key}`; a location is an `http(s)://` URL, a
//! `file://` path inside an allowed directory, or the name of a stored snapshot) and
//! `POST …/snapshots/upload` (multipart field `snapshot`), for a collection and for
//! one of its shards. Every source is streamed into a restore intake, which unpacks
//! the archive while it arrives; then `snapshot::restore` checks and switches it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::service::Service;
use crate::service::recover::{
    check_checksum, check_priority, checked_target, obtain, restore_received, source,
};
use crate::snapshot::Scope;
use crate::snapshot::inflow::{self, Source};
use crate::snapshot::intake::Received;
use crate::storage::StorageError;

/// Qdrant's `SnapshotRecover` / `ShardSnapshotRecover`. Fields it does not use are
/// ignored, as Qdrant's own parsing ignores them (its tests send `"wait": "true"`
/// in the body); the ones it uses are checked by type and value.
#[derive(Debug, Deserialize)]
pub struct RecoverRequest {
    location: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    /// Sent as the `api-key` header when `location` is an `http://` URL.
    #[serde(default)]
    api_key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RecoverQuery {
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    #[serde(default = "yes")]
    wait: bool,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    priority: Option<String>,
}

pub async fn collection_recover(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(c): Path<String>,
    Query(q): Query<RecoverQuery>,
    ApiJson(request): ApiJson<RecoverRequest>,
) -> ApiResult {
    recover(timer, app, Scope::Collection(c), q.wait, request).await
}

/// `PUT /collections/{c}/shards/{id}/snapshots/recover`.
pub async fn shard_recover(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<RecoverQuery>,
    ApiJson(request): ApiJson<RecoverRequest>,
) -> ApiResult {
    let id = super::shard_id(&id)?;
    recover(timer, app, Scope::Shard(c, id), q.wait, request).await
}

/// `POST /collections/{c}/snapshots/upload` (multipart, field `snapshot`): the file is
/// unpacked while it arrives (never held in memory), then restored like any other.
pub async fn collection_upload(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(c): Path<String>,
    Query(q): Query<UploadQuery>,
    multipart: axum::extract::Multipart,
) -> ApiResult {
    upload(timer, app, Scope::Collection(c), q, multipart).await
}

/// `POST /collections/{c}/shards/{id}/snapshots/upload`.
pub async fn shard_upload(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    multipart: axum::extract::Multipart,
) -> ApiResult {
    let id = super::shard_id(&id)?;
    upload(timer, app, Scope::Shard(c, id), q, multipart).await
}

async fn recover(
    timer: Timer,
    app: Arc<Service>,
    scope: Scope,
    wait: bool,
    request: RecoverRequest,
) -> ApiResult {
    checked_target(&app, &scope)?;
    check_priority(request.priority.as_deref())?;
    check_checksum(&app, request.checksum.as_deref())?;
    let (received, checksum) = obtain(
        &app,
        &scope,
        &request.location,
        request.api_key.as_deref(),
        request.checksum.as_deref(),
    )
    .await?;
    run(timer, app, scope, received, checksum, wait).await
}

async fn upload(
    timer: Timer,
    app: Arc<Service>,
    scope: Scope,
    q: UploadQuery,
    mut multipart: axum::extract::Multipart,
) -> ApiResult {
    checked_target(&app, &scope)?;
    check_priority(q.priority.as_deref())?;
    check_checksum(&app, q.checksum.as_deref())?;
    let received = receive_upload(&app, &scope, &mut multipart, q.checksum.as_deref()).await?;
    run(timer, app, scope, received, q.checksum, q.wait).await
}

/// Check and switch in a received archive for `scope`, now or, without `wait`, in
/// the background (202).
async fn run(
    timer: Timer,
    app: Arc<Service>,
    scope: Scope,
    received: Received,
    checksum: Option<String>,
    wait: bool,
) -> ApiResult {
    if wait {
        restore_received(&app.snapshots, scope, received, checksum).await?;
        Ok(timer.ok(true))
    } else {
        tokio::spawn(
            async move { restore_received(&app.snapshots, scope, received, checksum).await },
        );
        Ok(timer.accepted())
    }
}

/// The multipart field `snapshot`, streamed into a restore.
pub(crate) async fn receive_upload(
    app: &Service,
    scope: &Scope,
    multipart: &mut axum::extract::Multipart,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("unreadable multipart upload: {e}"))
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if field.name() != Some("snapshot") {
            continue;
        }
        // An upload waits for its client, however slow: no stall limit.
        let source = Source {
            stall: None,
            ..source(
                app,
                scope,
                Source::chunks(field),
                "the upload",
                checksum.map(str::to_string),
                |why| StorageError::bad_request(format!("unreadable multipart upload: {why}")),
            )
        };
        return Ok(inflow::pump(&app.snapshots, source).await?);
    }
    Err(ApiError::bad_request(
        "the upload has no `snapshot` field (multipart/form-data, field name `snapshot`)",
    ))
}
