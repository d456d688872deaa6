//! Partial snapshots over HTTP, Qdrant's paths and shapes:
//! `GET …/shards/{id}/snapshot/partial/manifest` (`?format=files` for the content
//! form), `POST …/partial/create` (a manifest in, 304 or an archive out),
//! `POST …/partial/recover` (multipart field `snapshot`) and
//! `POST …/partial/recover_from` (`{peer_url, api_key}`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Service;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use super::recover::receive_upload;
use super::snapshots::stream_layout;
use crate::service::partial::{
    apply_partial, cancel_pull, claim, create_partial as partial_for, manifest as manifests,
    pull_partial,
};
use crate::service::recover::check_priority;
use crate::snapshot::Scope;
use crate::snapshot::partial::ManifestRequest;
use crate::snapshot::partial::apply::Applied;
use crate::snapshot::partial::create::Created;
use crate::snapshot::partial::peer::Form;

#[derive(Debug, Deserialize)]
pub struct ManifestQuery {
    /// `versions` (Qdrant's, the default) or `files` (content hashes).
    #[serde(default)]
    format: Option<String>,
}

/// `GET …/snapshot/partial/manifest`: the shard's manifest now, from a cache while
/// the shard has not changed.
pub async fn manifest(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<ManifestQuery>,
) -> ApiResult {
    let id = super::shard_id(&id)?;
    let content = match q.format.as_deref() {
        None | Some("versions") => false,
        Some("files") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown manifest format `{other}`: use versions (Qdrant's) or files"
            )));
        }
    };
    let found = manifests(&app, c, id, content).await?;
    if content {
        Ok(timer.ok(found.content()))
    } else {
        Ok(timer.ok(&found.versions))
    }
}

/// `POST …/snapshot/partial/create`: 304 when the manifest says the receiver has
/// this state, otherwise the partial archive, streamed from the frozen shard.
pub async fn create_partial(
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = super::shard_id(&id)?;
    let request = ManifestRequest::parse(&body).map_err(ApiError::bad_request)?;
    let created = partial_for(&app, c.clone(), id, request).await?;
    let archive = match created {
        Created::NotModified => return Ok(StatusCode::NOT_MODIFIED.into_response()),
        Created::Archive(archive) => archive,
    };
    let layout = archive.layout.clone();
    let full_size = archive.full_size();
    let name = format!("{c}-shard-{id}-partial.snapshot");
    let mtime = archive.view.mtime();
    let snapshots = archive.view.snapshots().clone();
    let mut response = stream_layout(
        &headers,
        &snapshots,
        layout,
        mtime,
        Arc::new(archive),
        &name,
        Some(Arc::new(|_, data: &[u8]| {
            crate::metrics::partial_bytes(crate::metrics::Direction::Sent, data.len() as u64)
        })),
    )?;
    // What a full snapshot of the same state would be, for "moved vs full".
    if let Ok(value) = full_size.to_string().parse() {
        response.headers_mut().insert("x-snapfs-full-size", value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct RecoverQuery {
    #[serde(default)]
    wait: Option<bool>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
}

/// Qdrant's answer when the shard is busy with another partial recovery.
fn already_in_progress() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "already_in_progress", "time": 0.0})),
    )
        .into_response()
}

fn applied_json(applied: &Applied) -> serde_json::Value {
    json!({
        "form": applied.form,
        "bytes": applied.archive_bytes,
        "files_received": applied.files_received,
        "files_kept": applied.files_kept,
    })
}

/// `POST …/snapshot/partial/recover`: apply an uploaded partial archive.
pub async fn recover_partial(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<RecoverQuery>,
    mut multipart: axum::extract::Multipart,
) -> Result<Response, ApiError> {
    let id = super::shard_id(&id)?;
    check_priority(q.priority.as_deref())?;
    let Some(claim) = claim(&app, &c, id)? else {
        return Ok(already_in_progress());
    };
    let scope = Scope::Shard(c.clone(), id);
    let received = receive_upload(&app, &scope, &mut multipart, q.checksum.as_deref()).await?;
    let work = async move { apply_partial(&app, claim, c, id, received, q.checksum).await };
    if q.wait.unwrap_or(true) {
        let applied = work.await?;
        Ok(timer.ok_with_details(true, applied_json(&applied)))
    } else {
        tokio::spawn(work);
        Ok(timer.accepted())
    }
}

#[derive(Debug, Deserialize)]
pub struct RecoverFrom {
    peer_url: String,
    #[serde(default)]
    api_key: Option<String>,
    /// snapfs's addition: `versions` (Qdrant's form) or `content`; by default the
    /// content form for a snapfs peer, Qdrant's for any other.
    #[serde(default)]
    manifest: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<bool>,
}

/// `POST …/snapshot/partial/recover_from`: pull from a peer. `result` is `true`
/// when something was applied, `false` when the shard had the peer's state.
pub async fn recover_from(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    ApiJson(request): ApiJson<RecoverFrom>,
) -> Result<Response, ApiError> {
    let id = super::shard_id(&id)?;
    let form = match request.manifest.as_deref() {
        None => None,
        Some("versions") => Some(Form::Versions),
        Some("content") => Some(Form::Content),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown manifest form `{other}`: use versions (Qdrant's) or content"
            )));
        }
    };
    tracing::debug!(collection = %c, shard = id, peer = %request.peer_url, "partial pull asked");
    let Some(claim) = claim(&app, &c, id)? else {
        tracing::debug!(collection = %c, shard = id, "partial pull refused: one runs already");
        return Ok(already_in_progress());
    };
    let work = async move {
        pull_partial(&app, claim, c, id, request.peer_url, request.api_key, form).await
    };
    if q.wait.unwrap_or(true) {
        let (pulled, full_size) = work.await?;
        let mut details = pulled
            .applied
            .as_ref()
            .map(applied_json)
            .unwrap_or_else(|| json!({"form": pulled.form, "bytes": 0}));
        details["full_size"] = json!(full_size);
        Ok(timer.ok_with_details(pulled.applied.is_some(), details))
    } else {
        tokio::spawn(async move {
            if let Err(err) = work.await {
                tracing::warn!(%err, "background partial pull failed");
            }
        });
        Ok(timer.accepted())
    }
}

/// `POST …/snapshot/partial/recover_from/cancel` (snapfs's own): cancel the pull
/// of this shard while it is receiving (a `wait=false` pull too); `result` says
/// whether one was. A pull already applying finishes.
pub async fn cancel_recover_from(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = super::shard_id(&id)?;
    Ok(timer.ok(cancel_pull(&app, &c, id)?))
}
