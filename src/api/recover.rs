//! Restores over HTTP, Qdrant's paths and shapes: `PUT …/snapshots/recover`
//! (`{location, priority, checksum, api_key}`; a location is an `http(s)://` URL, a
//! `file://` path inside an allowed directory, or the name of a stored snapshot) and
//! `POST …/snapshots/upload` (multipart field `snapshot`), for a collection and for
//! one of its shards. Every source is streamed into a restore intake, which unpacks
//! the archive while it arrives; then `snapshot::restore` checks and switches it.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::snapshot::intake::{Intake, Received};
use crate::snapshot::restore::{self, restore_collection, restore_shard};
use crate::snapshot::{Scope, stored};
use crate::storage::error::with_causes;

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
    let id = super::shard_id(&id)?;
    app.storage.collection(&c)?.shard(id)?;
    recover(timer, app, Scope::Shard(c, id), q.wait, request).await
}

/// `POST /collections/{c}/snapshots/upload` (multipart, field `snapshot`): the file is
/// unpacked while it arrives (never held in memory), then restored like any other.
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
    let id = super::shard_id(&id)?;
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
    let (received, checksum) = obtain(
        &app,
        &scope,
        &request.location,
        request.api_key.as_deref(),
        request.checksum.as_deref(),
    )
    .await?;
    run(timer, &app, scope, received, checksum, wait).await
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
    let received = receive_upload(&app, &scope, &mut multipart, q.checksum.as_deref()).await?;
    run(timer, &app, scope, received, q.checksum, q.wait).await
}

/// Check and switch in a received archive for `scope`, now or, without `wait`, in
/// the background (202).
async fn run(
    timer: Timer,
    app: &AppState,
    scope: Scope,
    received: Received,
    checksum: Option<String>,
    wait: bool,
) -> ApiResult {
    let storage = app.storage.clone();
    let work = async move {
        match &scope {
            Scope::Shard(c, id) => restore_shard(&storage, c, *id, received, checksum).await,
            Scope::Collection(c) => restore_collection(&storage, c, received, checksum).await,
            Scope::Full => Err(crate::storage::StorageError::internal(
                "full-storage snapshots are restored with --storage-snapshot",
            )),
        }
    };
    if wait {
        work.await?;
        Ok(timer.ok(true))
    } else {
        tokio::spawn(work);
        Ok(timer.accepted())
    }
}

/// The archive a location names, received: downloaded (`http://`, `https://`,
/// `s3://bucket/key`), a confined `file://` path, or a stored snapshot of `scope`
/// (in S3 with `snapshots_storage: s3`); with the checksum it is checked against:
/// `checksum` (the request's), else an S3 object's `.checksum` beside it.
async fn obtain(
    app: &AppState,
    scope: &Scope,
    location: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<(Received, Option<String>), ApiError> {
    let path = match url::Url::parse(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            return Ok((
                download(app, scope, location, api_key, checksum).await?,
                checksum.map(str::to_string),
            ));
        }
        Ok(url) if url.scheme() == "s3" => {
            return s3_location(app, scope, location, &url, api_key, checksum).await;
        }
        Ok(url) if url.scheme() == "file" => {
            // As Qdrant, with its words: `file:///abs/path` or
            // `file://localhost/abs/path` only (percent-escapes decoded);
            // `file://name` names a host.
            let host_is_local = matches!(url.host_str(), None | Some("") | Some("localhost"));
            let path = url.to_file_path().ok().filter(|_| host_is_local).ok_or_else(|| {
                ApiError::bad_request(
                    "Bad request: Invalid snapshot URI, file path must be absolute or on localhost",
                )
            })?;
            confined_file(app, &path)?
        }
        Ok(url) if url.scheme().len() > 1 => {
            return Err(ApiError::bad_request(format!(
                "recovery from `{location}` is not available: use http(s)://…, a file:// path inside {} or a stored snapshot's name",
                allowed_list(app)
            )));
        }
        // No scheme (or a one-letter one, a Windows drive): a stored snapshot's name.
        _ => match &app.s3 {
            Some(s3) => {
                let (object, sidecar) = s3.open_stream(scope, location).await?;
                let shown = format!("s3://{}/{}", s3.bucket(), object.meta.location);
                let expected = checksum.map(str::to_string).or(sidecar);
                return Ok((
                    receive_object(app, scope, &shown, object, expected.as_deref()).await?,
                    expected,
                ));
            }
            None => stored::stored_path(&app.snapshots_path, scope, location)?,
        },
    };
    Ok((
        restore::receive_file(
            &app.storage,
            &path,
            restore::shown_as(scope),
            checksum.map(str::to_string),
        )
        .await?,
        checksum.map(str::to_string),
    ))
}

/// `s3://bucket/key`: read with the configured S3 endpoint, region and credentials,
/// or with `api_key` = `ACCESS_KEY:SECRET_KEY`.
async fn s3_location(
    app: &AppState,
    scope: &Scope,
    location: &str,
    url: &url::Url,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<(Received, Option<String>), ApiError> {
    let config = match &app.s3_recovery {
        Some(config) => config.clone(),
        None => {
            let config = crate::snapshot::s3::S3Config::default();
            if config.effective_endpoint().is_none() {
                return Err(ApiError::bad_request(format!(
                    "recovery from `{location}` needs S3 settings: set storage.snapshots_config.s3_config (endpoint_url, region, keys) or AWS_ENDPOINT_URL"
                )));
            }
            config
        }
    };
    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!("`{location}` names no bucket: use s3://bucket/key"))
    })?;
    let key = url.path().trim_start_matches('/');
    if key.is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{location}` names no object: use s3://bucket/key"
        )));
    }
    let key = percent_decode(key);
    let (object, sidecar) =
        crate::snapshot::s3::open_location(&config, bucket, &key, api_key).await?;
    let expected = checksum.map(str::to_string).or(sidecar);
    Ok((
        receive_object(app, scope, location, object, expected.as_deref()).await?,
        expected,
    ))
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_string())
}

/// Stream an S3 object's body into an intake, in one pass; a transfer that
/// receives nothing for `storage.transfer_stall_secs` is given up.
async fn receive_object(
    app: &AppState,
    scope: &Scope,
    shown: &str,
    object: object_store::GetResult,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    use futures_util::StreamExt;
    let failed = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot read {shown}: {why}"),
        )
    };
    let mut intake = begin(app, scope, checksum).await?;
    intake.expect_size(object.meta.size)?;
    let mut body = object.into_stream();
    let stall = app.transfer_stall;
    loop {
        let chunk = tokio::time::timeout(stall, body.next())
            .await
            .map_err(|_| {
                failed(format!(
                    "the transfer stalled: nothing arrived for {} s (storage.transfer_stall_secs)",
                    stall.as_secs_f64()
                ))
            })?;
        match chunk {
            None => break,
            Some(Ok(bytes)) => intake.push(bytes).await?,
            Some(Err(e)) => return Err(failed(with_causes(&e))),
        }
    }
    finish(intake).await
}

/// A `file://` path, which must lie inside a directory snapshots may be recovered
/// from (`storage.recover_dirs`, by default the snapshots directory), symlinks
/// resolved; anything else is 403. As in Qdrant, a path that does not exist is
/// 400 first (both answers only `stat`: nothing outside is opened).
fn confined_file(app: &AppState, path: &std::path::Path) -> Result<PathBuf, ApiError> {
    if !path.exists() {
        return Err(ApiError::bad_request(format!(
            "Bad request: Snapshot file {path:?} does not exist"
        )));
    }
    let resolved = std::fs::canonicalize(path).map_err(|e| {
        ApiError::bad_request(format!(
            "Bad request: Failed to resolve snapshot path {path:?}: {e}"
        ))
    })?;
    let inside = app
        .recover_dirs
        .iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .any(|dir| resolved.starts_with(&dir));
    if !inside {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden: Snapshot file path must be inside the snapshots directory or storage.recover_dirs ({}): {} is outside them",
                allowed_list(app),
                path.display(),
            ),
        ));
    }
    if !resolved.is_file() {
        return Err(ApiError::bad_request(format!(
            "Bad request: {} is not a file",
            path.display()
        )));
    }
    Ok(resolved)
}

fn allowed_list(app: &AppState) -> String {
    app.recover_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new intake for a restore into `scope` (its staging directory is made on a
/// blocking thread); `checksum` is the archive's, when the request gave it.
async fn begin(app: &AppState, scope: &Scope, checksum: Option<&str>) -> Result<Intake, ApiError> {
    let storage = app.storage.clone();
    let shown_as = restore::shown_as(scope);
    let checksum = checksum.map(str::to_string);
    Ok(
        tokio::task::spawn_blocking(move || restore::begin(&storage, shown_as, checksum))
            .await
            .map_err(|e| ApiError::from(crate::storage::StorageError::internal(e.to_string())))??,
    )
}

/// Every byte is in: wait for the intake's workers off the async threads.
async fn finish(intake: Intake) -> Result<Received, ApiError> {
    Ok(tokio::task::spawn_blocking(move || intake.finish())
        .await
        .map_err(|e| ApiError::from(crate::storage::StorageError::internal(e.to_string())))??)
}

/// The multipart field `snapshot`, streamed into an intake.
pub(crate) async fn receive_upload(
    app: &AppState,
    scope: &Scope,
    multipart: &mut axum::extract::Multipart,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("unreadable multipart upload: {e}"))
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        if field.name() != Some("snapshot") {
            continue;
        }
        let mut intake = begin(app, scope, checksum).await?;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            intake.push(chunk).await?;
        }
        return finish(intake).await;
    }
    Err(ApiError::bad_request(
        "the upload has no `snapshot` field (multipart/form-data, field name `snapshot`)",
    ))
}

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Download an `http(s)://` URL into an intake, streamed. `api_key` goes in the
/// `api-key` header (a Qdrant peer's) to the URL's own origin only: redirects are
/// followed by hand, and one to another scheme, host or port goes without it. A
/// transfer that receives nothing for `storage.transfer_stall_secs` is given up.
async fn download(
    app: &AppState,
    scope: &Scope,
    url: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    let failed = |why: String| ApiError::bad_request(format!("cannot fetch {url}: {why}"));
    let origin = reqwest::Url::parse(url).map_err(|e| failed(e.to_string()))?;
    let mut at = origin.clone();
    let mut response = None;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = http_client().get(at.clone());
        let home = at.origin() == origin.origin();
        if let Some(key) = api_key.filter(|_| home) {
            request = request.header("api-key", key);
        }
        let answer = request.send().await.map_err(|e| failed(with_causes(&e)))?;
        if !answer.status().is_redirection() {
            response = Some(answer);
            break;
        }
        let location = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                failed(format!(
                    "HTTP {} without a location",
                    answer.status().as_u16()
                ))
            })?;
        at = at
            .join(location)
            .map_err(|e| failed(format!("bad redirect {location:?}: {e}")))?;
        if at.origin() != origin.origin() && api_key.is_some() {
            tracing::info!(from = %origin, to = %at, "recovery redirected to another origin: the api key stays behind");
        }
    }
    let mut response =
        response.ok_or_else(|| failed(format!("more than {MAX_REDIRECTS} redirects")))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status().as_u16())));
    }
    let mut intake = begin(app, scope, checksum).await?;
    if let Some(length) = response.content_length() {
        intake.expect_size(length)?;
    }
    let stall = app.transfer_stall;
    loop {
        let chunk = tokio::time::timeout(stall, response.chunk())
            .await
            .map_err(|_| {
                failed(format!(
                    "the transfer stalled: nothing arrived for {} s (storage.transfer_stall_secs)",
                    stall.as_secs_f64()
                ))
            })?
            .map_err(|e| failed(with_causes(&e)))?;
        let Some(chunk) = chunk else { break };
        intake.push(chunk).await?;
    }
    finish(intake).await
}

/// One client for every download: TLS checked against the system's roots (and
/// `SSL_CERT_FILE`), connections reused.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("snapfs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            // Followed by hand (see `download`): the key must not follow to others.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client's settings are valid")
    })
}
