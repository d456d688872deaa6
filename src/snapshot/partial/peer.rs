//! Pulling a partial snapshot of a shard from a peer: another snapfs (content form)
//! or a Qdrant server (Qdrant's form), as Qdrant's `partial/recover_from` does.
//!
//! The local shard is frozen first, so the manifest sent describes its files until
//! the new state is switched in (updates meanwhile are acknowledged and applied
//! afterwards). The peer's answer streams into a restore intake (no copy of the
//! archive is kept); a transfer that stalls longer than the inactivity limit fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use serde_json::Value;

use super::apply::{Applied, apply};
use super::manifest::{ContentManifest, VersionManifest};
use super::manifests_of;
use crate::fetch::FetchPolicy;
use crate::snapshot::Snapshots;
use crate::snapshot::inflow::{Source, pump};
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::collection::CollectionFreeze;
use crate::storage::{CollectionConfig, Result, StorageError};

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `None`: the peer answered 304, this shard has its state already.
    pub applied: Option<Applied>,
    /// `content` (a snapfs peer) or `versions` (Qdrant's form).
    pub form: &'static str,
}

/// The most characters of a peer's own error text an error repeats.
const MAX_PEER_TEXT: usize = 300;

/// How a pull reaches its peer and what it sends.
#[derive(Clone, Copy)]
pub struct PullFrom<'a> {
    pub peer_url: &'a str,
    pub api_key: Option<&'a str>,
    /// The collection's name on the peer (a mirror's source has another name).
    pub remote: &'a str,
    /// The manifest form (default: content for a snapfs peer, versions for any other).
    pub form: Option<Form>,
    /// The caller compared the peer's collection configuration already (a follow
    /// round does, once for all shards; Qdrant cannot describe a collection while one
    /// of its shards is unreachable, though the others can be pulled).
    pub config_checked: bool,
}

/// Which manifest a pull sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Qdrant's version form (what a Qdrant server understands).
    Versions,
    /// snapfs's content form.
    Content,
}

/// Pull shard `id` of `collection` from the snapfs or Qdrant server at `peer_url`
/// (where the collection is named `remote`: the same name, or the cluster's name of
/// a mirror), with the manifest form `form` (by default: content for a snapfs peer, versions for
/// any other); a transfer that receives nothing for `inactivity` fails.
///
/// The peer is reached only where `fetch` allows (`storage.fetch_allow` /
/// `fetch_deny`, checked on the resolved addresses); each answer's headers must
/// come within `storage.fetch_header_secs` (the shard is frozen meanwhile), its
/// JSON answers are read up to `storage.fetch_json_max_bytes`, and everything up
/// to the apply must be done within `storage.fetch_total_secs`. Until the apply
/// starts the pull can be cancelled ([`cancel_pull`], [`cancel_all_pulls`]): the
/// freeze and the staged files go, the shard is as it was.
pub async fn pull(
    snapshots: &Arc<Snapshots>,
    collection: &str,
    id: u32,
    from: PullFrom<'_>,
    inactivity: Duration,
    fetch: &Arc<FetchPolicy>,
) -> Result<Pulled> {
    let peer_url = from.peer_url;
    let local = snapshots.storage().collection(collection)?;
    local.shard(id)?;
    let config = local.config().clone();
    drop(local);
    let registered = Registered::new(snapshots, collection, id);
    let total = fetch.total_timeout;
    let transfer = transfer(snapshots, collection, id, &config, from, inactivity, fetch);
    let fetched = tokio::select! {
        outcome = tokio::time::timeout(total, transfer) => outcome.map_err(|_| {
            StorageError::Peer(format!(
                "the pull from {peer_url} took longer than {} s (storage.fetch_total_secs): given up, the shard is unchanged",
                total.as_secs_f64()
            ))
        })??,
        () = registered.token.cancelled() => {
            return Err(StorageError::Peer(format!(
                "the pull of shard {id} of `{collection}` from {peer_url} was cancelled: the shard is unchanged"
            )));
        }
    };
    // From here the apply runs to its end: it is not cancelled halfway.
    drop(registered);
    let (form, applied) = match fetched {
        Fetched::InSync { form } => (form, None),
        Fetched::Archive {
            form,
            received,
            frozen,
        } => (
            form,
            Some(apply(snapshots, collection, id, received, None, Some(frozen)).await?),
        ),
    };
    Ok(Pulled { applied, form })
}

/// What the network part of a pull brought.
enum Fetched {
    /// The peer answered 304.
    InSync { form: &'static str },
    /// A partial archive, received, and the freeze taken before the manifest was made.
    Archive {
        form: &'static str,
        received: crate::snapshot::intake::Received,
        frozen: CollectionFreeze,
    },
}

/// Ask the peer and receive its answer (everything of a pull but the apply).
async fn transfer(
    snapshots: &Arc<Snapshots>,
    collection: &str,
    id: u32,
    config: &CollectionConfig,
    from: PullFrom<'_>,
    inactivity: Duration,
    fetch: &Arc<FetchPolicy>,
) -> Result<Fetched> {
    let PullFrom {
        peer_url,
        api_key,
        remote,
        form,
        config_checked,
    } = from;
    let peer = Peer::new(peer_url, api_key, fetch)?;
    let snapfs = peer.is_snapfs().await?;
    let form = form.unwrap_or(if snapfs {
        Form::Content
    } else {
        Form::Versions
    });
    if !config_checked {
        peer.check_collection(remote, config).await?;
    }
    // Frozen from here to the switch: the manifest sent stays true.
    let (frozen, view) = {
        let snapshots = snapshots.clone();
        let name = collection.to_string();
        tokio::task::spawn_blocking(move || -> Result<_> {
            // The view first (a fresh cut), then a freeze of our own that joins it,
            // so the state stays put even if the view is copied aside at its limit.
            let view = SnapshotView::open(&snapshots, Scope::Shard(name.clone(), id))?;
            let frozen = snapshots.storage().collection(&name)?.join_freeze(&[id])?;
            Ok((frozen, view))
        })
        .await
        .map_err(StorageError::from_cause)??
    };
    let (form, body) = if form == Form::Content {
        let view = view.clone();
        let shard_dir = frozen.shards()[0].path().to_path_buf();
        let manifest: ContentManifest = tokio::task::spawn_blocking(move || {
            manifests_of(&view, true).map(|m| {
                let mut manifest = m.content().cloned().unwrap_or_default();
                // Files our load rewrote count as the sender's (see `loaded`).
                super::loaded::as_received(view.snapshots(), &shard_dir, &mut manifest);
                manifest
            })
        })
        .await
        .map_err(StorageError::from_cause)??;
        ("content", serde_json::to_vec(&manifest))
    } else {
        let versions: VersionManifest = view
            .shard_state()
            .map(|s| s.versions.clone())
            .unwrap_or_default();
        ("versions", serde_json::to_vec(&versions))
    };
    drop(view);
    let body = body.map_err(StorageError::from_cause)?;
    let path = format!(
        "/collections/{}/shards/{id}/snapshot/partial/create",
        crate::storage::names::url_segment(remote)
    );
    let Some(response) = peer.post(&path, body).await? else {
        return Ok(Fetched::InSync { form });
    };
    let base = peer.base.clone();
    let size = response.content_length();
    let chunks = futures_util::stream::unfold(response, |mut response| async move {
        response
            .chunk()
            .await
            .transpose()
            .map(|chunk| (chunk, response))
    });
    let source = Source {
        body: Source::chunks(chunks),
        size,
        shown_as: Some((collection.to_string(), format!("shard {id} (partial)"))),
        checksum: None,
        what: "the peer's answer",
        stall: Some(inactivity),
        failed: Box::new(move |why| StorageError::Peer(format!("the transfer from {base}: {why}"))),
    };
    let received = pump(snapshots, source).await?;
    Ok(Fetched::Archive {
        form,
        received,
        frozen,
    })
}

/// Pulls under way (before their apply), by shard, each with its serial number
/// and its cancellation (part of [`Snapshots`]).
#[derive(Default)]
pub struct Pulls {
    table: Mutex<HashMap<(String, u32), (u64, CancellationToken)>>,
    serial: AtomicU64,
}

/// A pull's entry in [`Pulls`], removed when it is dropped.
struct Registered {
    snapshots: Arc<Snapshots>,
    key: (String, u32),
    serial: u64,
    token: CancellationToken,
}

impl Registered {
    fn new(snapshots: &Arc<Snapshots>, collection: &str, id: u32) -> Registered {
        let key = (collection.to_string(), id);
        let serial = snapshots.pulls.serial.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        snapshots
            .pulls
            .table
            .lock()
            .unwrap()
            .insert(key.clone(), (serial, token.clone()));
        Registered {
            snapshots: snapshots.clone(),
            key,
            serial,
            token,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut pulls = self.snapshots.pulls.table.lock().unwrap();
        if pulls.get(&self.key).is_some_and(|(s, _)| *s == self.serial) {
            pulls.remove(&self.key);
        }
    }
}

/// Cancel the pull of shard `id` of `collection`, if one is receiving (one that is
/// applying already finishes). Returns whether there was one.
pub fn cancel_pull(snapshots: &Snapshots, collection: &str, id: u32) -> bool {
    let pulls = snapshots.pulls.table.lock().unwrap();
    match pulls.get(&(collection.to_string(), id)) {
        Some((_, token)) => {
            token.cancel();
            true
        }
        None => false,
    }
}

/// Cancel every pull still receiving (at shutdown).
pub fn cancel_all_pulls(snapshots: &Snapshots) {
    for (_, token) in snapshots.pulls.table.lock().unwrap().values() {
        token.cancel();
    }
}

/// The size a full shard snapshot of the current state has (what a pull's answer
/// compares its bytes with; a follow round has no use for it and does not ask).
pub async fn full_size(snapshots: &Arc<Snapshots>, collection: &str, id: u32) -> Result<u64> {
    let snapshots = snapshots.clone();
    let scope = Scope::Shard(collection.to_string(), id);
    tokio::task::spawn_blocking(move || SnapshotView::open(&snapshots, scope).map(|v| v.size()))
        .await
        .map_err(StorageError::from_cause)?
}

/// A peer (a snapfs or a Qdrant node): its base URL and key. Every answer is
/// bounded: headers within `storage.fetch_header_secs`, JSON up to
/// `storage.fetch_json_max_bytes`; refusals are told in words, never echoing more
/// than the peer's own error text.
pub struct Peer {
    base: String,
    api_key: Option<String>,
    client: reqwest::Client,
    fetch: Arc<FetchPolicy>,
}

impl Peer {
    /// The base URL, as given (no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` as JSON: `None` for a 404.
    pub async fn get_json(&self, what: &str, path: &str) -> Result<Option<Value>> {
        self.call_json(what, reqwest::Method::GET, path, None).await
    }

    /// `method path` with an optional JSON body: the JSON answer, `None` for a 404.
    pub async fn call_json(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(StorageError::from_cause)?;
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        let response = self.send(request).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.refusal(what, response).await);
        }
        self.json_of(what, response).await.map(Some)
    }

    /// `POST path` with a multipart form of one file field `snapshot`, its `size`
    /// bytes streamed from `chunks`; the whole upload may take `limit`.
    pub async fn upload_snapshot<S>(
        &self,
        what: &str,
        path: &str,
        chunks: S,
        size: u64,
        limit: Duration,
    ) -> Result<Value>
    where
        S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    {
        use futures_util::StreamExt;
        let boundary = format!("snapfs-{}", uuid::Uuid::new_v4().simple());
        let head = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"snapshot\"; filename=\"shard.snapshot\"\r\ncontent-type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let length = head.len() as u64 + size + tail.len() as u64;
        let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) })
            .chain(chunks)
            .chain(futures_util::stream::once(async move {
                Ok(bytes::Bytes::from(tail))
            }));
        let request = self
            .request(reqwest::Method::POST, path)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(body));
        let response = tokio::time::timeout(limit, request.send())
            .await
            .map_err(|_| {
                StorageError::Peer(format!(
                    "{what}: the upload to {} took longer than {} s",
                    self.base,
                    limit.as_secs_f64()
                ))
            })?
            .map_err(|e| {
                StorageError::Peer(format!(
                    "{what}: cannot upload to {}: {}",
                    self.base,
                    crate::storage::error::with_causes(&e)
                ))
            })?;
        if !response.status().is_success() {
            return Err(self.refusal(what, response).await);
        }
        self.json_of(what, response).await
    }

    pub fn new(url: &str, api_key: Option<&str>, fetch: &Arc<FetchPolicy>) -> Result<Peer> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            StorageError::bad_request(format!("peer_url {url:?} is not a URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StorageError::bad_request(format!(
                "peer_url must be http:// or https://, got {url:?}"
            )));
        }
        // An IP literal is never resolved: checked here; a name when it is resolved.
        fetch
            .check_url(&parsed)
            .map_err(|why| StorageError::bad_request(format!("peer_url {url}: {why}")))?;
        // The key goes to the peer named, never to where it redirects: the
        // client follows no redirect. A pull makes three requests: no connection
        // is worth keeping.
        let client = fetch
            .client_with(|builder| builder.pool_max_idle_per_host(0))
            .map_err(StorageError::from_cause)?;
        Ok(Peer {
            base: url.trim_end_matches('/').to_string(),
            api_key: api_key.map(str::to_string),
            client,
            fetch: fetch.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("api-key", key);
        }
        request
    }

    /// Send, waiting at most `storage.fetch_header_secs` for the answer's headers.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let limit = self.fetch.header_timeout;
        tokio::time::timeout(limit, request.send())
            .await
            .map_err(|_| {
                StorageError::Peer(format!(
                    "the peer at {} sent no answer within {} s (storage.fetch_header_secs)",
                    self.base,
                    limit.as_secs_f64()
                ))
            })?
            .map_err(|e| match crate::fetch::refusal_in(&e) {
                Some(why) => StorageError::bad_request(format!("peer_url {}: {why}", self.base)),
                None => StorageError::Peer(format!(
                    "cannot reach the peer at {}: {}",
                    self.base,
                    crate::storage::error::with_causes(&e)
                )),
            })
    }

    /// A JSON answer, read up to `storage.fetch_json_max_bytes` (`null` if it is
    /// none); a longer one is refused.
    async fn json_of(&self, what: &str, mut response: reqwest::Response) -> Result<Value> {
        let limit = self.fetch.json_max_bytes;
        let too_long = || {
            StorageError::Peer(format!(
                "{what}: the peer at {} sent a JSON answer longer than {limit} bytes (storage.fetch_json_max_bytes): refused",
                self.base
            ))
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                StorageError::Peer(format!(
                    "{what}: the answer of the peer at {} broke off: {}",
                    self.base,
                    crate::storage::error::with_causes(&e)
                ))
            })?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > limit {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// A failed answer, in words.
    async fn refusal(&self, what: &str, response: reqwest::Response) -> StorageError {
        let status = response.status();
        let body: Value = self.json_of(what, response).await.unwrap_or(Value::Null);
        // The peer's own error text, cut short and on one line: it goes into logs,
        // statuses and manifests.
        let said = body["status"]["error"]
            .as_str()
            .map(|s| {
                let line: String = s
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(MAX_PEER_TEXT)
                    .collect();
                let cut = if s.chars().count() > MAX_PEER_TEXT {
                    "…"
                } else {
                    ""
                };
                format!(": {line}{cut}")
            })
            .unwrap_or_default();
        let why = match status.as_u16() {
            401 => "refused: it needs an API key (none was given, or a wrong one)".to_string(),
            403 => "refused the API key".to_string(),
            code => format!("answered HTTP {code}"),
        };
        StorageError::Peer(format!("{what}: the peer at {} {why}{said}", self.base))
    }

    /// snapfs says so in its root document (`snapfs_version`).
    async fn is_snapfs(&self) -> Result<bool> {
        let response = self.send(self.request(reqwest::Method::GET, "/")).await?;
        if !response.status().is_success() {
            return Err(self.refusal("asking what the peer is", response).await);
        }
        let root: Value = self.json_of("asking what the peer is", response).await?;
        Ok(root.get("snapfs_version").is_some())
    }

    /// The peer's collection must hold the same vectors as ours.
    async fn check_collection(&self, collection: &str, ours: &CollectionConfig) -> Result<()> {
        let path = format!(
            "/collections/{}",
            crate::storage::names::url_segment(collection)
        );
        let response = self.send(self.request(reqwest::Method::GET, &path)).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(StorageError::Peer(format!(
                "the peer at {} has no collection `{collection}`",
                self.base
            )));
        }
        if !response.status().is_success() {
            return Err(self
                .refusal("reading the peer's collection", response)
                .await);
        }
        let info: Value = self
            .json_of("reading the peer's collection", response)
            .await?;
        let theirs = vectors_of(&info["result"]["config"]["params"]["vectors"]);
        let mine = vectors_of(&serde_json::to_value(&ours.params.vectors).unwrap_or(Value::Null));
        if theirs != mine {
            return Err(StorageError::bad_request(format!(
                "the peer's collection `{collection}` has other vectors ({}) than this one ({}): it cannot be mirrored here",
                describe(&theirs),
                describe(&mine)
            )));
        }
        let shards = info["result"]["config"]["params"]["shard_number"].as_u64();
        if shards.is_some_and(|n| n != u64::from(ours.shard_count())) {
            return Err(StorageError::bad_request(format!(
                "the peer's collection `{collection}` has {} shards, this one {}: shards would hold other points",
                shards.unwrap_or(0),
                ours.shard_count()
            )));
        }
        Ok(())
    }

    /// POST a manifest to `path`: the response to stream, or `None` for 304.
    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Option<reqwest::Response>> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body);
        let response = self.send(request).await?;
        match response.status().as_u16() {
            304 => Ok(None),
            200..=299 => Ok(Some(response)),
            _ => Err(self
                .refusal("asking the peer for a partial snapshot", response)
                .await),
        }
    }
}

/// Vector name → (size, distance), from either shape of a `vectors` config.
fn vectors_of(vectors: &Value) -> Vec<(String, u64, String)> {
    let one = |name: &str, v: &Value| {
        (
            name.to_string(),
            v["size"].as_u64().unwrap_or(0),
            v["distance"].as_str().unwrap_or_default().to_string(),
        )
    };
    match vectors.as_object() {
        Some(map) if map.contains_key("size") => vec![one("", vectors)],
        Some(map) => {
            let mut all: Vec<_> = map.iter().map(|(name, v)| one(name, v)).collect();
            all.sort();
            all
        }
        None => Vec::new(),
    }
}

fn describe(vectors: &[(String, u64, String)]) -> String {
    vectors
        .iter()
        .map(|(name, size, distance)| {
            let name = if name.is_empty() { "unnamed" } else { name };
            format!("{name}: {size} {distance}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
