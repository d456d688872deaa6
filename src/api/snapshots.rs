//! Snapshot endpoints, Qdrant's paths: stored snapshots of collections, shards and
//! the full storage (create, list, download with `Range`, delete) and the live shard
//! snapshot stream.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::envelope::{ApiError, ApiResult, Timer};
use super::ranges::{ReadAt, Validators, stream_response};
use crate::service::Service;
use crate::service::snapshots::{
    create_snapshot, list_snapshots, live_view, open_snapshot, snapshot_creation, snapshot_details,
    snapshot_removal,
};
use crate::snapshot::checksum::SequentialHasher;
use crate::snapshot::layout::ArchiveLayout;
use crate::snapshot::{Scope, SnapshotView, Snapshots};

#[derive(Debug, Deserialize)]
pub struct WaitParam {
    /// Qdrant's default for snapshot operations: wait.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

async fn create(timer: Timer, app: Arc<Service>, scope: Scope, wait: bool) -> ApiResult {
    if wait {
        return Ok(timer.ok(create_snapshot(&app, scope).await?));
    }
    let work = snapshot_creation(&app, scope)?;
    tokio::task::spawn_blocking(move || {
        if let Err(err) = work() {
            tracing::error!(%err, "background snapshot creation failed");
        }
    });
    Ok(timer.accepted())
}

/// `?details=true` (snapfs): how each was made, as the store recorded it, instead
/// of Qdrant's descriptions (which stay exactly Qdrant's otherwise).
#[derive(Debug, Default, Deserialize)]
pub struct ListParam {
    #[serde(default)]
    details: bool,
}

async fn list(timer: Timer, app: Arc<Service>, scope: Scope, q: ListParam) -> ApiResult {
    if q.details {
        return Ok(timer.ok(snapshot_details(&app, scope).await?));
    }
    Ok(timer.ok(list_snapshots(&app, scope).await?))
}

async fn download(
    app: Arc<Service>,
    scope: Scope,
    name: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let opened = open_snapshot(&app, scope, name).await?;
    let validators = Validators::from_digest(&opened.version, opened.snapshot.modified);
    let reader = opened.reader;
    let read_at: ReadAt = Arc::new(move |offset, buf| reader.read_at(offset, buf));
    let name = &opened.snapshot.name;
    stream_response(
        &headers,
        opened.snapshot.size,
        name,
        &validators,
        read_at,
        None,
    )
}

/// Delete a stored snapshot. The name is resolved first, whatever `wait` says: one
/// that names no stored snapshot is 404 and nothing is touched; with `wait=false`
/// the removal then runs in the background (202, as Qdrant answers).
async fn delete(
    timer: Timer,
    app: Arc<Service>,
    scope: Scope,
    name: String,
    wait: bool,
) -> ApiResult {
    let removal = snapshot_removal(&app, scope, name).await?;
    if wait {
        removal.run().await?;
        return Ok(timer.ok(true));
    }
    removal.run_detached();
    Ok(timer.accepted())
}

// ---- collection snapshots ----

pub async fn collection_create(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(c): Path<String>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Collection(c), q.wait).await
}

pub async fn collection_list(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(c): Path<String>,
    Query(q): Query<ListParam>,
) -> ApiResult {
    list(timer, app, Scope::Collection(c), q).await
}

pub async fn collection_download(
    State(app): State<Arc<Service>>,
    Path((c, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Collection(c), name, headers).await
}

pub async fn collection_delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, name)): Path<(String, String)>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    delete(timer, app, Scope::Collection(c), name, q.wait).await
}

// ---- shard snapshots ----

pub async fn shard_create(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Shard(c, super::shard_id(&id)?), q.wait).await
}

pub async fn shard_list(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<ListParam>,
) -> ApiResult {
    list(timer, app, Scope::Shard(c, super::shard_id(&id)?), q).await
}

pub async fn shard_download(
    State(app): State<Arc<Service>>,
    Path((c, id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Shard(c, super::shard_id(&id)?), name, headers).await
}

pub async fn shard_delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path((c, id, name)): Path<(String, String, String)>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    delete(
        timer,
        app,
        Scope::Shard(c, super::shard_id(&id)?),
        name,
        q.wait,
    )
    .await
}

/// `GET /collections/{c}/shards/{id}/snapshot`: a fresh shard snapshot, streamed
/// straight from the frozen files while the response lasts.
pub async fn shard_stream(
    State(app): State<Arc<Service>>,
    Path((c, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = live_view(&app, Scope::Shard(c.clone(), super::shard_id(&id)?)).await?;
    let name = format!("{c}-shard-{id}.snapshot");
    live_response(&headers, view, &name)
}

/// Stream a live view; a reader that goes from start to end also records the
/// archive's checksum.
pub fn live_response(
    headers: &HeaderMap,
    view: Arc<SnapshotView>,
    name: &str,
) -> Result<Response, ApiError> {
    let layout = view.layout().clone();
    let mtime = view.mtime();
    let snapshots = view.snapshots().clone();
    stream_layout(headers, &snapshots, layout, mtime, view, name, None)
}

/// Stream an archive layout while `keep` (what holds its files frozen) lives; a
/// reader that goes from start to end also records the archive's checksum. `also`
/// sees every chunk sent.
pub fn stream_layout(
    headers: &HeaderMap,
    snapshots: &Arc<Snapshots>,
    layout: Arc<ArchiveLayout>,
    last_modified: std::time::SystemTime,
    keep: Arc<dyn std::any::Any + Send + Sync>,
    name: &str,
    also: Option<super::ranges::OnChunk>,
) -> Result<Response, ApiError> {
    let size = layout.size();
    // The fingerprint names the archive's bytes (the same state, the same bytes).
    let validators = Validators::from_digest(&layout.fingerprint(), last_modified);
    let hasher = Arc::new(std::sync::Mutex::new(SequentialHasher::for_layout(
        snapshots, &layout,
    )));
    let read_layout = layout.clone();
    let read_at: ReadAt = Arc::new(move |offset, buf| read_layout.read_at(offset, buf));
    let on_chunk = Arc::new(move |offset: u64, data: &[u8]| {
        let _held = &keep;
        crate::metrics::bytes_streamed(crate::metrics::Via::Http, data.len() as u64);
        hasher.lock().unwrap().observe(&layout, offset, data);
        if let Some(also) = &also {
            also(offset, data);
        }
    });
    stream_response(headers, size, name, &validators, read_at, Some(on_chunk))
}

// ---- full storage snapshots ----

pub async fn full_create(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Full, q.wait).await
}

pub async fn full_list(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Query(q): Query<ListParam>,
) -> ApiResult {
    list(timer, app, Scope::Full, q).await
}

pub async fn full_download(
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Full, name, headers).await
}

pub async fn full_delete(
    timer: Timer,
    State(app): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    delete(timer, app, Scope::Full, name, q.wait).await
}
