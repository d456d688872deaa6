//! Snapshot endpoints, Qdrant's paths: stored snapshots of collections, shards and
//! the full storage (create, list, download with `Range`, delete) and the live shard
//! snapshot stream.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::envelope::{ApiError, ApiResult, Timer};
use super::ranges::{ReadAt, Validators, stream_response};
use super::{AppState, blocking, run_blocking};
use crate::snapshot::checksum::SequentialHasher;
use crate::snapshot::layout::ArchiveLayout;
use crate::snapshot::names::validate_snapshot_name;
use crate::snapshot::stored::SnapshotDescription;
use crate::snapshot::{Scope, SnapshotView, stored};
use crate::storage::Result;

#[derive(Debug, Deserialize)]
pub struct WaitParam {
    /// Qdrant's default for snapshot operations: wait.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

// ---- what each request does, whatever the protocol ----

/// Check the scope exists (collection, shard) before touching its snapshots.
fn checked_scope(app: &AppState, scope: Scope) -> Result<Scope> {
    match &scope {
        Scope::Collection(c) => {
            app.storage.collection(c)?;
        }
        Scope::Shard(c, id) => {
            app.storage.collection(c)?.shard(*id)?;
        }
        Scope::Full => {}
    }
    Ok(scope)
}

/// The creation of a stored snapshot of `scope`, checked and ready to run on a
/// blocking thread: into `snapshots_path`, or streamed into S3 when snapshots are
/// stored there. The caller waits for it or lets it run in the background.
pub fn snapshot_creation(
    app: &Arc<AppState>,
    scope: Scope,
) -> Result<impl FnOnce() -> Result<SnapshotDescription> + Send + 'static> {
    let scope = checked_scope(app, scope)?;
    let app = app.clone();
    Ok(move || match &app.s3 {
        // Streamed into a multipart upload (src/snapshot/s3.rs).
        Some(s3) => s3.create(&app.storage, scope),
        None => stored::create(&app.storage, &app.snapshots_path, &app.temp_path, scope),
    })
}

/// Create a stored snapshot of `scope` and wait for it.
pub async fn create_snapshot(app: &Arc<AppState>, scope: Scope) -> Result<SnapshotDescription> {
    run_blocking(snapshot_creation(app, scope)?).await
}

/// The stored snapshots of `scope`, wherever they are stored.
pub async fn list_snapshots(app: &AppState, scope: Scope) -> Result<Vec<SnapshotDescription>> {
    let scope = checked_scope(app, scope)?;
    if let Some(s3) = &app.s3 {
        return s3.list(&scope).await;
    }
    let snapshots_path = app.snapshots_path.clone();
    run_blocking(move || stored::list(&snapshots_path, &scope)).await
}

/// A stored snapshot found by name, ready to be removed (with its checksum file).
pub enum SnapshotRemoval {
    Local(PathBuf),
    S3 {
        s3: Arc<crate::snapshot::s3::S3Snapshots>,
        key: object_store::path::Path,
    },
}

/// Resolve `name` in `scope`'s stored snapshots: one that names none is
/// `NotFound`, and nothing is touched.
pub async fn snapshot_removal(
    app: &AppState,
    scope: Scope,
    name: String,
) -> Result<SnapshotRemoval> {
    validate_snapshot_name(&name)?;
    let scope = checked_scope(app, scope)?;
    if let Some(s3) = app.s3.clone() {
        let (key, _) = s3.head(&scope, &name).await?;
        return Ok(SnapshotRemoval::S3 { s3, key });
    }
    let snapshots_path = app.snapshots_path.clone();
    let path = run_blocking(move || stored::stored_path(&snapshots_path, &scope, &name)).await?;
    Ok(SnapshotRemoval::Local(path))
}

impl SnapshotRemoval {
    pub async fn run(self) -> Result<()> {
        match self {
            SnapshotRemoval::Local(path) => run_blocking(move || stored::remove(&path)).await,
            SnapshotRemoval::S3 { s3, key } => s3.delete(&key).await,
        }
    }

    /// Remove it in the background; a failure is logged.
    pub fn run_detached(self) {
        tokio::spawn(async move {
            let what = match &self {
                SnapshotRemoval::Local(path) => path.display().to_string(),
                SnapshotRemoval::S3 { key, .. } => key.to_string(),
            };
            if let Err(err) = self.run().await {
                tracing::error!(%err, snapshot = %what, "background snapshot deletion failed");
            }
        });
    }
}

/// Delete stored snapshot `name` of `scope` and wait for it.
pub async fn delete_snapshot(app: &AppState, scope: Scope, name: String) -> Result<()> {
    snapshot_removal(app, scope, name).await?.run().await
}

// ---- REST ----

async fn create(timer: Timer, app: Arc<AppState>, scope: Scope, wait: bool) -> ApiResult {
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

async fn list(timer: Timer, app: Arc<AppState>, scope: Scope) -> ApiResult {
    Ok(timer.ok(list_snapshots(&app, scope).await?))
}

async fn download(
    app: Arc<AppState>,
    scope: Scope,
    name: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_snapshot_name(&name)?;
    let scope = checked_scope(&app, scope)?;
    if let Some(s3) = &app.s3 {
        return s3_download(s3.clone(), scope, name, headers).await;
    }
    let file = Arc::new(stored::open_stored(&app.snapshots_path, &scope, &name)?);
    let meta = file
        .metadata()
        .map_err(crate::storage::StorageError::from)?;
    let size = meta.len();
    let validators = {
        use sha2::Digest;
        use std::os::unix::fs::MetadataExt;
        // A stored snapshot never changes in place: its identity names its bytes.
        let identity = [
            meta.dev(),
            meta.ino(),
            size,
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
        ];
        let digest = sha2::Sha256::digest(identity.map(u64::to_le_bytes).concat());
        Validators::from_digest(&digest, meta.modified().unwrap_or(std::time::UNIX_EPOCH))
    };
    let read_at: ReadAt = Arc::new(move |offset, buf| {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    });
    stream_response(&headers, size, &name, &validators, read_at, None)
}

/// A stored snapshot in S3, streamed with ranged GETs read ahead (see
/// [`crate::snapshot::s3_reader`]); a `Range` request reads from its start.
async fn s3_download(
    s3: Arc<crate::snapshot::s3::S3Snapshots>,
    scope: Scope,
    name: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, meta) = s3.head(&scope, &name).await?;
    let last_modified: std::time::SystemTime = meta.last_modified.into();
    let validators = {
        use sha2::Digest;
        // The object's identity (key, size, ETag, time) names its bytes.
        let identity = format!(
            "{key}\n{}\n{}\n{}",
            meta.size,
            meta.e_tag.as_deref().unwrap_or(""),
            meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
        );
        Validators::from_digest(&sha2::Sha256::digest(identity.as_bytes()), last_modified)
    };
    let reader = s3.reader(key, meta.size);
    let read_at: ReadAt = Arc::new(move |offset, buf| reader.read_at(offset, buf));
    stream_response(&headers, meta.size, &name, &validators, read_at, None)
}

/// Delete a stored snapshot. The name is resolved first, whatever `wait` says: one
/// that names no stored snapshot is 404 and nothing is touched; with `wait=false`
/// the removal then runs in the background (202, as Qdrant answers).
async fn delete(
    timer: Timer,
    app: Arc<AppState>,
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
    State(app): State<Arc<AppState>>,
    Path(c): Path<String>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Collection(c), q.wait).await
}

pub async fn collection_list(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(c): Path<String>,
) -> ApiResult {
    list(timer, app, Scope::Collection(c)).await
}

pub async fn collection_download(
    State(app): State<Arc<AppState>>,
    Path((c, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Collection(c), name, headers).await
}

pub async fn collection_delete(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path((c, name)): Path<(String, String)>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    delete(timer, app, Scope::Collection(c), name, q.wait).await
}

// ---- shard snapshots ----

pub async fn shard_create(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Shard(c, super::shard_id(&id)?), q.wait).await
}

pub async fn shard_list(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path((c, id)): Path<(String, String)>,
) -> ApiResult {
    list(timer, app, Scope::Shard(c, super::shard_id(&id)?)).await
}

pub async fn shard_download(
    State(app): State<Arc<AppState>>,
    Path((c, id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Shard(c, super::shard_id(&id)?), name, headers).await
}

pub async fn shard_delete(
    timer: Timer,
    State(app): State<Arc<AppState>>,
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
    State(app): State<Arc<AppState>>,
    Path((c, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = checked_scope(&app, Scope::Shard(c.clone(), super::shard_id(&id)?))?;
    let storage = app.storage.clone();
    let view = blocking(move || SnapshotView::open(&storage, scope)).await?;
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
    stream_layout(headers, layout, mtime, view, name, None)
}

/// Stream an archive layout while `keep` (what holds its files frozen) lives; a
/// reader that goes from start to end also records the archive's checksum. `also`
/// sees every chunk sent.
pub fn stream_layout(
    headers: &HeaderMap,
    layout: Arc<ArchiveLayout>,
    last_modified: std::time::SystemTime,
    keep: Arc<dyn std::any::Any + Send + Sync>,
    name: &str,
    also: Option<super::ranges::OnChunk>,
) -> Result<Response, ApiError> {
    let size = layout.size();
    // The fingerprint names the archive's bytes (the same state, the same bytes).
    let validators = Validators::from_digest(&layout.fingerprint(), last_modified);
    let hasher = Arc::new(std::sync::Mutex::new(SequentialHasher::for_layout(&layout)));
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
    State(app): State<Arc<AppState>>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    create(timer, app, Scope::Full, q.wait).await
}

pub async fn full_list(timer: Timer, State(app): State<Arc<AppState>>) -> ApiResult {
    list(timer, app, Scope::Full).await
}

pub async fn full_download(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(app, Scope::Full, name, headers).await
}

pub async fn full_delete(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<WaitParam>,
) -> ApiResult {
    delete(timer, app, Scope::Full, name, q.wait).await
}
