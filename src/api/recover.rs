//! Restores over HTTP, Qdrant's paths and shapes: `PUT …/snapshots/recover`
//! (`{location, priority, checksum, api_key}`; a location is an `http://` URL, a
//! `file://` path inside an allowed directory — the snapshots directory — or the name
//! of a stored snapshot) and `POST …/snapshots/upload` (multipart field `snapshot`),
//! for a collection and for one of its shards. Both bring the archive to a file and
//! hand it to `snapshot::restore`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::snapshot::restore::{restore_collection, restore_shard, upload_path};
use crate::snapshot::{Scope, stored};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// On one node every priority restores the snapshot as it is: `snapshot` (Qdrant's
/// default: the snapshot's data wins), `replica` and `no_sync` (which in a cluster
/// change how peers are synchronised) are accepted with the same effect.
pub fn check_priority(priority: Option<&str>) -> Result<(), ApiError> {
    match priority {
        None | Some("snapshot" | "replica" | "no_sync") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown priority `{other}`: use snapshot, replica or no_sync"
        ))),
    }
}

/// With `storage.require_checksum`, a restore must say which checksum to expect.
fn check_checksum(app: &AppState, checksum: Option<&str>) -> Result<(), ApiError> {
    if app.require_checksum && checksum.is_none_or(|c| c.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "a checksum is required for restores (storage.require_checksum): pass the snapshot's SHA-256 as `checksum`",
        ));
    }
    Ok(())
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
    State(app): State<Arc<AppState>>,
    Path(c): Path<String>,
    Query(q): Query<RecoverQuery>,
    ApiJson(request): ApiJson<RecoverRequest>,
) -> ApiResult {
    crate::storage::names::validate_collection_name(&c)?;
    recover(timer, app, Scope::Collection(c), q.wait, request).await
}

/// `PUT /collections/{c}/shards/{id}/snapshots/recover`.
pub async fn shard_recover(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<RecoverQuery>,
    ApiJson(request): ApiJson<RecoverRequest>,
) -> ApiResult {
    let scope = Scope::Shard(c, shard_number(&id)?);
    recover(timer, app, scope, q.wait, request).await
}

/// `POST /collections/{c}/snapshots/upload` (multipart, field `snapshot`): the file is
/// streamed to `temp_path` (never held in memory), then restored like any other.
pub async fn collection_upload(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path(c): Path<String>,
    Query(q): Query<UploadQuery>,
    multipart: axum::extract::Multipart,
) -> ApiResult {
    crate::storage::names::validate_collection_name(&c)?;
    upload(timer, app, Scope::Collection(c), q, multipart).await
}

/// `POST /collections/{c}/shards/{id}/snapshots/upload`.
pub async fn shard_upload(
    timer: Timer,
    State(app): State<Arc<AppState>>,
    Path((c, id)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    multipart: axum::extract::Multipart,
) -> ApiResult {
    let id = shard_number(&id)?;
    app.storage.collection(&c)?.shard(id)?;
    upload(timer, app, Scope::Shard(c, id), q, multipart).await
}

async fn recover(
    timer: Timer,
    app: Arc<AppState>,
    scope: Scope,
    wait: bool,
    request: RecoverRequest,
) -> ApiResult {
    check_priority(request.priority.as_deref())?;
    check_checksum(&app, request.checksum.as_deref())?;
    let (archive, temporary) =
        obtain(&app, &scope, &request.location, request.api_key.as_deref()).await?;
    run(
        timer,
        &app,
        scope,
        archive,
        temporary,
        request.checksum,
        wait,
    )
    .await
}

async fn upload(
    timer: Timer,
    app: Arc<AppState>,
    scope: Scope,
    q: UploadQuery,
    mut multipart: axum::extract::Multipart,
) -> ApiResult {
    check_priority(q.priority.as_deref())?;
    check_checksum(&app, q.checksum.as_deref())?;
    let path = upload_path(&app.temp_path);
    if let Err(err) = receive_snapshot(&mut multipart, &path).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(err);
    }
    run(timer, &app, scope, path, true, q.checksum, q.wait).await
}

/// Restore `archive` into `scope` (removing it afterwards when `temporary`), now or,
/// without `wait`, in the background (202).
async fn run(
    timer: Timer,
    app: &AppState,
    scope: Scope,
    archive: PathBuf,
    temporary: bool,
    checksum: Option<String>,
    wait: bool,
) -> ApiResult {
    let storage = app.storage.clone();
    let work = async move {
        let result = match &scope {
            Scope::Shard(c, id) => restore_shard(&storage, c, *id, &archive, checksum).await,
            Scope::Collection(c) => restore_collection(&storage, c, &archive, checksum).await,
            Scope::Full => Err(crate::storage::StorageError::internal(
                "full-storage snapshots are restored with --storage-snapshot",
            )),
        };
        if temporary {
            let _ = tokio::fs::remove_file(&archive).await;
        }
        result
    };
    if wait {
        work.await?;
        Ok(timer.ok(true))
    } else {
        tokio::spawn(work);
        Ok(timer.accepted(true))
    }
}

/// The file a location names: fetched into `temp_path` (`http://`; the bool says it
/// is temporary), a confined `file://` path, or a stored snapshot of `scope`.
async fn obtain(
    app: &AppState,
    scope: &Scope,
    location: &str,
    api_key: Option<&str>,
) -> Result<(PathBuf, bool), ApiError> {
    if location.starts_with("http://") {
        let path = upload_path(&app.temp_path);
        if let Err(err) = fetch(location, api_key, &path).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err);
        }
        return Ok((path, true));
    }
    if let Some(path) = location.strip_prefix("file://") {
        return confined_file(app, path).map(|p| (p, false));
    }
    if location.contains("://") {
        return Err(ApiError::bad_request(format!(
            "recovery from `{location}` is not available: use http://…, a file:// path inside {} or a stored snapshot's name (https:// is not supported yet)",
            app.snapshots_path.display()
        )));
    }
    Ok((
        stored::stored_path(&app.snapshots_path, scope, location)?,
        false,
    ))
}

/// A `file://` path, which must lie inside a directory snapshots may be recovered
/// from (the snapshots directory); anything else is 403.
fn confined_file(app: &AppState, path: &str) -> Result<PathBuf, ApiError> {
    let resolved = std::fs::canonicalize(path)
        .map_err(|e| ApiError::bad_request(format!("cannot read {path}: {e}")))?;
    let inside = app
        .snapshots_path
        .canonicalize()
        .is_ok_and(|dir| resolved.starts_with(&dir));
    if !inside {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{path} is outside the directories snapshots may be recovered from ({})",
                app.snapshots_path.display()
            ),
        ));
    }
    if !resolved.is_file() {
        return Err(ApiError::bad_request(format!("{path} is not a file")));
    }
    Ok(resolved)
}

async fn receive_snapshot(
    multipart: &mut axum::extract::Multipart,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("unreadable multipart upload: {e}"))
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        if field.name() != Some("snapshot") {
            continue;
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
        }
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
        }
        file.flush()
            .await
            .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the upload has no `snapshot` field (multipart/form-data, field name `snapshot`)",
    ))
}

fn shard_number(text: &str) -> Result<u32, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("shard id must be a number, got `{text}`")))
}

/// Download an `http://` URL into `dest`, streamed; `api_key` goes in the `api-key`
/// header (a Qdrant peer's). Redirects are not followed.
async fn fetch(url: &str, api_key: Option<&str>, dest: &std::path::Path) -> Result<(), ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let failed = |why: String| ApiError::bad_request(format!("cannot fetch {url}: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|e| failed(format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| failed("no host".into()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", format!("{host}:{port}"));
    if let Some(key) = api_key {
        request = request.header("api-key", key);
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status().as_u16())));
    }
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .await
                .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| ApiError::from(crate::storage::StorageError::from(e)))?;
    Ok(())
}
