//! Restores: where an archive comes from (an `http(s)://` URL, an `s3://` object, a
//! confined `file://` path, a stored snapshot's name, an upload), brought in by one
//! pump ([`crate::snapshot::inflow`]), then checked and switched in by
//! `snapshot::restore`. REST's recover and upload, and the mount's `recover/`
//! directories, restore through here.

use std::sync::Arc;

use super::Service;
use crate::snapshot::inflow::{Body, Source};
use crate::snapshot::intake::Received;
use crate::snapshot::restore::{self, restore_collection};
use crate::snapshot::store::FileReader;
use crate::snapshot::store::s3::S3Config;
use crate::snapshot::{Scope, Snapshots};
use crate::storage::error::with_causes;
use crate::storage::{Result, StorageError};

/// On one node every priority restores the snapshot as it is: `snapshot` (Qdrant's
/// default: the snapshot's data wins), `replica` and `no_sync` (which in a cluster
/// change how peers are synchronised) are accepted with the same effect.
pub fn check_priority(priority: Option<&str>) -> Result<()> {
    match priority {
        None | Some("snapshot" | "replica" | "no_sync") => Ok(()),
        Some(other) => Err(StorageError::bad_request(format!(
            "unknown priority `{other}`: use snapshot, replica or no_sync"
        ))),
    }
}

/// With `storage.require_checksum`, a restore must say which checksum to expect.
pub fn check_checksum(service: &Service, checksum: Option<&str>) -> Result<()> {
    if service.require_checksum && checksum.is_none_or(|c| c.trim().is_empty()) {
        return Err(StorageError::bad_request(
            "a checksum is required for restores (storage.require_checksum): pass the snapshot's SHA-256 as `checksum`",
        ));
    }
    Ok(())
}

/// The scope a restore goes into, checked: a collection's name is valid (it may
/// not exist yet), a shard exists.
pub fn checked_target(service: &Service, scope: &Scope) -> Result<()> {
    if let Scope::Collection(c) | Scope::Shard(c, _) = scope {
        service.storage().check_writable(c)?;
    }
    match scope {
        Scope::Collection(c) => crate::storage::names::validate_collection_name(c),
        Scope::Shard(c, id) => service.storage().collection(c)?.shard(*id).map(|_| ()),
        Scope::Full => Err(StorageError::bad_request(
            "full-storage snapshots are restored with --storage-snapshot",
        )),
    }
}

/// Check and switch in a received archive for `scope`: one rule for every
/// protocol (REST's recover and upload, the mount's `recover/` directories). A
/// collection takes a full collection snapshot; a shard takes a full shard
/// snapshot or a partial one, told apart by content (a partial one is applied).
pub async fn restore_received(
    snapshots: &Arc<Snapshots>,
    scope: Scope,
    received: Received,
    checksum: Option<String>,
) -> Result<()> {
    let storage = snapshots.storage();
    if let Scope::Collection(c) | Scope::Shard(c, _) = &scope {
        storage.check_writable(c)?;
    }
    match &scope {
        Scope::Shard(c, id) => {
            crate::snapshot::recover::restore_or_apply_shard(snapshots, c, *id, received, checksum)
                .await
        }
        Scope::Collection(c) => restore_collection(snapshots, c, received, checksum)
            .await
            .map(|_| ()),
        Scope::Full => Err(StorageError::bad_request(
            "full-storage snapshots are restored with --storage-snapshot",
        )),
    }
}

/// A source for a restore into `scope`, checked against `checksum`: the daemon's
/// stall limit applies, no size is declared (set `size` where the source has one).
pub fn source<'a>(
    service: &Service,
    scope: &Scope,
    body: Body<'a>,
    what: &'static str,
    checksum: Option<String>,
    failed: impl Fn(String) -> StorageError + Send + Sync + 'static,
) -> Source<'a> {
    Source {
        body,
        size: None,
        shown_as: restore::shown_as(scope),
        checksum,
        what,
        stall: Some(service.transfer_stall),
        failed: Box::new(failed),
    }
}

/// The archive a location names, received: downloaded (`http://`, `https://`,
/// `s3://bucket/key`), a confined `file://` path, or a stored snapshot of `scope`;
/// with the checksum it was checked against: `checksum` (the request's), else the
/// checksum stored beside it (an S3 object's `.checksum`, a stored snapshot's).
pub async fn obtain(
    service: &Service,
    scope: &Scope,
    location: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<(Received, Option<String>)> {
    let given = checksum.map(str::to_string);
    match url::Url::parse(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok((
            download(service, scope, location, api_key, checksum).await?,
            given,
        )),
        Ok(url) if url.scheme() == "s3" => {
            s3_location(service, scope, location, &url, api_key, checksum).await
        }
        Ok(url) if url.scheme() == "file" => {
            // As Qdrant, with its words: `file:///abs/path` or
            // `file://localhost/abs/path` only (percent-escapes decoded);
            // `file://name` names a host.
            let host_is_local = matches!(url.host_str(), None | Some("") | Some("localhost"));
            let path = url.to_file_path().ok().filter(|_| host_is_local).ok_or_else(|| {
                StorageError::bad_request(
                    "Bad request: Invalid snapshot URI, file path must be absolute or on localhost",
                )
            })?;
            let file = confined_file(service, &path)?;
            let size = file.metadata()?.len();
            let shown = path.display().to_string();
            let received = source(
                service,
                scope,
                Body::Reader(Arc::new(FileReader(file))),
                "the file",
                given.clone(),
                move |why| StorageError::bad_request(format!("cannot read {shown}: {why}")),
            )
            .sized(Some(size))
            .pump(&service.snapshots)
            .await?;
            Ok((received, given))
        }
        Ok(url) if url.scheme() == "restic" => {
            // A repository generation by its id: the stored snapshot it is.
            let id = url.path().to_string();
            let store = service.store.clone();
            let scope_for = scope.clone();
            let name = tokio::task::spawn_blocking(move || store.name_by_id(&scope_for, &id))
                .await
                .map_err(StorageError::from_cause)??;
            Box::pin(obtain(service, scope, &name, api_key, checksum)).await
        }
        Ok(url) if url.scheme().len() > 1 => Err(StorageError::bad_request(format!(
            "recovery from `{location}` is not available: use http(s)://…, a file:// path inside {} or a stored snapshot's name",
            allowed_list(service)
        ))),
        // No scheme (or a one-letter one, a Windows drive): a stored snapshot's name.
        _ => {
            let opened = super::snapshots::open_snapshot_to_restore(
                service,
                scope.clone(),
                location.to_string(),
            )
            .await?;
            let expected = given.or(opened.snapshot.checksum.clone());
            let shown = opened.shown.clone();
            let received = source(
                service,
                scope,
                Body::Reader(opened.reader),
                "the stored snapshot",
                expected.clone(),
                move |why| StorageError::Peer(format!("cannot read {shown}: {why}")),
            )
            .sized(Some(opened.snapshot.size))
            .pump(&service.snapshots)
            .await?;
            Ok((received, expected))
        }
    }
}

/// `s3://bucket/key`: read with the configured S3 endpoint, region and credentials,
/// or with `api_key` = `ACCESS_KEY:SECRET_KEY`.
async fn s3_location(
    service: &Service,
    scope: &Scope,
    location: &str,
    url: &url::Url,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<(Received, Option<String>)> {
    let config = match &service.s3_recovery {
        Some(config) => config.clone(),
        None => {
            let config = S3Config::default();
            if config.effective_endpoint().is_none() {
                return Err(StorageError::bad_request(format!(
                    "recovery from `{location}` needs S3 settings: set storage.snapshots_config.s3_config (endpoint_url, region, keys) or AWS_ENDPOINT_URL"
                )));
            }
            config
        }
    };
    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        StorageError::bad_request(format!("`{location}` names no bucket: use s3://bucket/key"))
    })?;
    let key = url.path().trim_start_matches('/');
    if key.is_empty() {
        return Err(StorageError::bad_request(format!(
            "`{location}` names no object: use s3://bucket/key"
        )));
    }
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8_lossy()
        .into_owned();
    if api_key.is_none() {
        confine_s3(service, &config, location, bucket, &key)?;
    }
    let (object, sidecar) =
        crate::snapshot::store::s3::open_location(&config, bucket, &key, api_key).await?;
    let expected = checksum.map(str::to_string).or(sidecar);
    let size = object.meta.size;
    let shown = location.to_string();
    let received = source(
        service,
        scope,
        Source::chunks(object.into_stream()),
        "the object",
        expected.clone(),
        move |why| StorageError::Peer(format!("cannot read {shown}: {why}")),
    )
    .sized(Some(size))
    .pump(&service.snapshots)
    .await?;
    Ok((received, expected))
}

/// With the daemon's own credentials an `s3://` location may name only the
/// configured bucket under the configured prefix, or an entry of
/// `storage.fetch_s3_buckets` (`bucket` or `bucket/prefix`); a request that brings
/// its own credentials (`api_key`) reaches what those credentials reach.
fn confine_s3(
    service: &Service,
    config: &S3Config,
    location: &str,
    bucket: &str,
    key: &str,
) -> Result<()> {
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
        || service.fetch.s3_buckets.iter().any(|entry| {
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
    Err(StorageError::Forbidden(format!(
        "recovery from `{location}` with the daemon's S3 credentials is refused: they may read only the configured bucket and prefix ({configured}) and storage.fetch_s3_buckets; pass the bucket's own credentials as api_key (ACCESS_KEY:SECRET_KEY) or list it in storage.fetch_s3_buckets"
    )))
}

/// A `file://` path, opened: it must lie inside a directory snapshots may be
/// recovered from (`storage.recover_dirs`, by default the snapshots directory).
/// Anything outside is 403 before anything is looked up, whether it exists or not
/// (Qdrant answers 400 for a missing file first, which tells which files exist).
/// Inside, the file is opened beneath its directory without following any symlink
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one `O_NOFOLLOW`
/// step at a time where the kernel lacks it), then checked to be a regular file
/// on the opened descriptor: nothing swapped in after a check is read.
fn confined_file(service: &Service, path: &std::path::Path) -> Result<std::fs::File> {
    use std::path::Component;
    let forbidden = |why: &str| {
        StorageError::Forbidden(format!(
            "Forbidden: Snapshot file path must be inside the snapshots directory or storage.recover_dirs ({}): {} is outside them{why}",
            allowed_list(service),
            path.display(),
        ))
    };
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    // The allowed directory the path lies in, as configured or with its own
    // symlinks resolved (the directory itself may be reached through one).
    let inside = plain
        .then(|| {
            service.recover_dirs.iter().find_map(|dir| {
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
        Some(libc::ENOENT) => StorageError::bad_request(format!(
            "Bad request: Snapshot file {path:?} does not exist"
        )),
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => {
            forbidden(" (symlinks are not followed)")
        }
        _ => StorageError::bad_request(format!(
            "Bad request: cannot open {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
        )),
    })?;
    let meta = file.metadata().map_err(|e| {
        StorageError::bad_request(format!("Bad request: cannot read {}: {e}", path.display()))
    })?;
    if !meta.file_type().is_file() {
        return Err(StorageError::bad_request(format!(
            "Bad request: {} is not a file",
            path.display()
        )));
    }
    Ok(file)
}

fn allowed_list(service: &Service) -> String {
    service
        .recover_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    service: &Service,
    scope: &Scope,
    url: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<Received> {
    let total = service.fetch.total_timeout;
    tokio::time::timeout(
        total,
        download_within(service, scope, url, api_key, checksum),
    )
    .await
    .unwrap_or_else(|_| {
        Err(StorageError::bad_request(format!(
            "cannot fetch {url}: it took longer than {} s (storage.fetch_total_secs)",
            total.as_secs_f64()
        )))
    })
}

async fn download_within(
    service: &Service,
    scope: &Scope,
    url: &str,
    api_key: Option<&str>,
    checksum: Option<&str>,
) -> Result<Received> {
    let failed = |why: String| StorageError::bad_request(format!("cannot fetch {url}: {why}"));
    let refused =
        |why: crate::fetch::Refused| StorageError::Forbidden(format!("cannot fetch {url}: {why}"));
    let origin = reqwest::Url::parse(url).map_err(|e| failed(e.to_string()))?;
    let client = service.fetch.client().map_err(StorageError::from_cause)?;
    let header_timeout = service.fetch.header_timeout;
    let mut at = origin.clone();
    let mut response = None;
    for _ in 0..=MAX_REDIRECTS {
        // Before any connection: an IP literal is never resolved, so it is checked here.
        service.fetch.check_url(&at).map_err(refused)?;
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
    let response =
        response.ok_or_else(|| failed(format!("more than {MAX_REDIRECTS} redirects")))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status().as_u16())));
    }
    let size = response.content_length();
    let shown = url.to_string();
    source(
        service,
        scope,
        Source::chunks(futures_util::stream::unfold(
            response,
            |mut response| async move {
                response
                    .chunk()
                    .await
                    .transpose()
                    .map(|chunk| (chunk, response))
            },
        )),
        "what was fetched",
        checksum.map(str::to_string),
        move |why| StorageError::bad_request(format!("cannot fetch {shown}: {why}")),
    )
    .sized(size)
    .pump(&service.snapshots)
    .await
}
