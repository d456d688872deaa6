//! Restores over HTTP, Qdrant's paths and shapes: `PUT …/snapshots/recover`
//! (`{location, priority, checksum, api_key}`; a location is an `http(s)://` URL, a
//! `file://` path inside an allowed directory, or the name of a stored snapshot) and
//! `POST …/snapshots/upload` (multipart field `snapshot`), for a collection and for
//! one of its shards. Every source is streamed into a restore intake, which unpacks
//! the archive while it arrives; then `snapshot::restore` checks and switches it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::envelope::{ApiError, ApiJson, ApiResult, Timer};
use crate::snapshot::error::unquoted;
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
            let file = confined_file(app, &path)?;
            return Ok((
                restore::receive_opened(
                    &app.storage,
                    file,
                    restore::shown_as(scope),
                    checksum.map(str::to_string),
                )
                .await?,
                checksum.map(str::to_string),
            ));
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
    if api_key.is_none() {
        confine_s3(app, &config, location, bucket, &key)?;
    }
    let (object, sidecar) =
        crate::snapshot::s3::open_location(&config, bucket, &key, api_key).await?;
    let expected = checksum.map(str::to_string).or(sidecar);
    Ok((
        receive_object(app, scope, location, object, expected.as_deref()).await?,
        expected,
    ))
}

/// With the daemon's own credentials an `s3://` location may name only the
/// configured bucket under the configured prefix, or an entry of
/// `storage.fetch_s3_buckets` (`bucket` or `bucket/prefix`); a request that brings
/// its own credentials (`api_key`) reaches what those credentials reach.
fn confine_s3(
    app: &AppState,
    config: &crate::snapshot::s3::S3Config,
    location: &str,
    bucket: &str,
    key: &str,
) -> Result<(), ApiError> {
    // `..` and empty parts never name another prefix.
    let key_ok = !key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..");
    let under = |allowed_bucket: &str, prefix: &str| {
        let prefix = prefix.trim_matches('/');
        key_ok
            && allowed_bucket == bucket
            && (prefix.is_empty() || key.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')))
    };
    let configured = config
        .bucket
        .clone()
        .or_else(|| std::env::var("AWS_BUCKET").ok())
        .filter(|b| !b.is_empty());
    let allowed = configured
        .as_deref()
        .is_some_and(|b| under(b, &config.prefix))
        || app.fetch.s3_buckets.iter().any(|entry| {
            let (b, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            under(b, prefix)
        });
    if allowed {
        return Ok(());
    }
    let configured = match configured {
        Some(b) if config.prefix.is_empty() => format!("s3://{b}/…"),
        Some(b) => format!("s3://{b}/{}/…", config.prefix),
        None => "no bucket".to_string(),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "recovery from `{location}` with the daemon's S3 credentials is refused: they may read only the configured bucket and prefix ({configured}) and storage.fetch_s3_buckets; pass the bucket's own credentials as api_key (ACCESS_KEY:SECRET_KEY) or list it in storage.fetch_s3_buckets"
        ),
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
            Some(Ok(bytes)) => intake
                .push(bytes)
                .await
                .map_err(|e| unquoted("the object", e))?,
            Some(Err(e)) => return Err(failed(with_causes(&e))),
        }
    }
    Ok(finish(intake)
        .await
        .map_err(|e| unquoted("the object", e))?)
}

/// A `file://` path, opened: it must lie inside a directory snapshots may be
/// recovered from (`storage.recover_dirs`, by default the snapshots directory).
/// Anything outside is 403 before anything is looked up, whether it exists or not
/// (Qdrant answers 400 for a missing file first, which tells which files exist).
/// Inside, the file is opened beneath its directory without following any symlink
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one `O_NOFOLLOW`
/// step at a time where the kernel lacks it), then checked to be a regular file
/// on the opened descriptor: nothing swapped in after a check is read.
fn confined_file(app: &AppState, path: &std::path::Path) -> Result<std::fs::File, ApiError> {
    use std::path::Component;
    let forbidden = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden: Snapshot file path must be inside the snapshots directory or storage.recover_dirs ({}): {} is outside them{why}",
                allowed_list(app),
                path.display(),
            ),
        )
    };
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    // The allowed directory the path lies in, as configured or with its own
    // symlinks resolved (the directory itself may be reached through one).
    let inside = plain
        .then(|| {
            app.recover_dirs.iter().find_map(|dir| {
                let canonical = dir.canonicalize().ok()?;
                [dir.as_path(), canonical.as_path()]
                    .into_iter()
                    .find_map(|d| path.strip_prefix(d).ok())
                    .filter(|rest| !rest.as_os_str().is_empty())
                    .map(|rest| (canonical.clone(), rest.to_path_buf()))
            })
        })
        .flatten();
    let Some((dir, rest)) = inside else {
        return Err(forbidden(""));
    };
    let file = crate::storage::open_beneath(&dir, &rest).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ApiError::bad_request(format!(
            "Bad request: Snapshot file {path:?} does not exist"
        )),
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => {
            forbidden(" (symlinks are not followed)")
        }
        _ => ApiError::bad_request(format!(
            "Bad request: cannot open {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
        )),
    })?;
    let meta = file.metadata().map_err(|e| {
        ApiError::bad_request(format!("Bad request: cannot read {}: {e}", path.display()))
    })?;
    if !meta.file_type().is_file() {
        return Err(ApiError::bad_request(format!(
            "Bad request: {} is not a file",
            path.display()
        )));
    }
    Ok(file)
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
async fn finish(intake: Intake) -> Result<Received, crate::storage::StorageError> {
    tokio::task::spawn_blocking(move || intake.finish())
        .await
        .map_err(|e| crate::storage::StorageError::internal(e.to_string()))?
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
        return Ok(finish(intake).await?);
    }
    Err(ApiError::bad_request(
        "the upload has no `snapshot` field (multipart/form-data, field name `snapshot`)",
    ))
}

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Download an `http(s)://` URL into an intake, streamed, within
/// `storage.fetch_total_secs`. Every request (the first and each redirect's) goes
/// only where `storage.fetch_allow` / `fetch_deny` allow, checked on the addresses
/// really connected to (see [`crate::fetch`]); its headers must come within
/// `storage.fetch_header_secs`. `api_key` goes in the `api-key` header (a Qdrant
/// peer's) to the URL's own origin only: redirects are followed by hand, and one to
/// another scheme, host or port goes without it. A transfer that receives nothing
/// for `storage.transfer_stall_secs` is given up.
async fn download(
    app: &AppState,
    scope: &Scope,
    url: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    let total = app.fetch.total_timeout;
    tokio::time::timeout(total, download_within(app, scope, url, api_key, checksum))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::bad_request(format!(
                "cannot fetch {url}: it took longer than {} s (storage.fetch_total_secs)",
                total.as_secs_f64()
            )))
        })
}

async fn download_within(
    app: &AppState,
    scope: &Scope,
    url: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<Received, ApiError> {
    let failed = |why: String| ApiError::bad_request(format!("cannot fetch {url}: {why}"));
    let refused = |why: crate::fetch::Refused| {
        ApiError::new(StatusCode::FORBIDDEN, format!("cannot fetch {url}: {why}"))
    };
    let origin = reqwest::Url::parse(url).map_err(|e| failed(e.to_string()))?;
    let client = app
        .fetch
        .client()
        .map_err(|e| ApiError::from(crate::storage::StorageError::internal(e.to_string())))?;
    let header_timeout = app.fetch.header_timeout;
    let mut at = origin.clone();
    let mut response = None;
    for _ in 0..=MAX_REDIRECTS {
        // Before any connection: an IP literal is never resolved, so it is checked here.
        app.fetch.check_url(&at).map_err(refused)?;
        let mut request = client.get(at.clone());
        let home = at.origin() == origin.origin();
        if let Some(key) = api_key.filter(|_| home) {
            request = request.header("api-key", key);
        }
        let answer = tokio::time::timeout(header_timeout, request.send())
            .await
            .map_err(|_| {
                failed(format!(
                    "{at} sent no response headers within {} s (storage.fetch_header_secs)",
                    header_timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| match crate::fetch::refusal_in(&e) {
                Some(why) => refused(why),
                None => failed(with_causes(&e)),
            })?;
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
        intake
            .push(chunk)
            .await
            .map_err(|e| unquoted("what was fetched", e))?;
    }
    Ok(finish(intake)
        .await
        .map_err(|e| unquoted("what was fetched", e))?)
}
