//! Stored snapshots in S3 (`storage.snapshots_config.snapshots_storage: s3`): the
//! same operations as [`super::stored`], with objects instead of files, laid out as
//! Qdrant lays them out: `<prefix>/<c>/<name>`, `<prefix>/<c>/shards/<id>/<name>`,
//! `<prefix>/<full-snapshot-name>`, each beside `<name>.checksum` (64 hex).
//!
//! Creation streams the archive from the frozen view straight into a multipart
//! upload — no temporary file — hashing on the way: parts of `part_size` bytes, at
//! most `parts_in_flight` of them held (being read or being sent) at a time, so
//! memory stays at `part_size × parts_in_flight` whatever the archive's size. The
//! checksum object is written before the upload is completed, so a listed snapshot
//! (a `.snapshot` object exists only once its upload completed) always has its
//! checksum. On any failure the multipart upload is aborted and the view dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, GetOptions, MultipartUpload, ObjectStore, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};

use super::digest::hex;
use super::names::{creation_time, name_timestamp, validate_snapshot_name};
use super::s3_reader::ObjectReader;
use super::stored::{CHECKSUM_EXT, SNAPSHOT_EXT, SnapshotDescription};
use super::view::{Scope, SnapshotView};
use crate::storage::error::with_causes;
use crate::storage::{Result, Storage, StorageError};

/// Bytes per part of a multipart upload (S3 needs at least 5 MiB but for the last).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Parts read or being sent at once: memory is bounded by
/// `DEFAULT_PART_SIZE × DEFAULT_PARTS_IN_FLIGHT` = 32 MiB per creation.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;
/// Region used when neither the configuration nor `AWS_REGION` names one.
const DEFAULT_REGION: &str = "us-east-1";

/// `storage.snapshots_config.s3_config`. Its `Debug` hides the keys.
#[derive(Clone, PartialEq)]
pub struct S3Config {
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub endpoint_url: Option<String>,
    /// Object keys start with `<prefix>/` (none when empty).
    pub prefix: String,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: None,
            region: None,
            access_key: None,
            secret_key: None,
            endpoint_url: None,
            prefix: String::new(),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &hidden(&self.access_key))
            .field("secret_key", &hidden(&self.secret_key))
            .field("endpoint_url", &self.endpoint_url)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .finish()
    }
}

impl S3Config {
    /// The endpoint in effect: the configuration's, else `AWS_ENDPOINT_URL` /
    /// `AWS_ENDPOINT` (as `object_store` reads them).
    pub fn effective_endpoint(&self) -> Option<String> {
        self.endpoint_url.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|k| std::env::var(k).ok())
                .filter(|v| !v.is_empty())
        })
    }

    /// A client for `bucket`, with the configured credentials or `credentials`
    /// (ACCESS, SECRET) instead; `AWS_*` variables fill in what is not configured.
    fn client(
        &self,
        bucket: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Arc<dyn ObjectStore>> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let region = self.region.clone().or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|k| std::env::var(k).ok())
        });
        builder = builder.with_region(region.unwrap_or_else(|| DEFAULT_REGION.to_string()));
        if let Some(endpoint) = self.effective_endpoint() {
            // Plain http only when the endpoint says so explicitly.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        match credentials {
            Some((access, secret)) => {
                builder = builder
                    .with_access_key_id(access)
                    .with_secret_access_key(secret)
            }
            None => {
                if let Some(access) = &self.access_key {
                    builder = builder.with_access_key_id(access);
                }
                if let Some(secret) = &self.secret_key {
                    builder = builder.with_secret_access_key(secret);
                }
            }
        }
        // A dead endpoint fails within seconds, not the default three minutes.
        builder = builder.with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        });
        let store = builder.build().map_err(|e| {
            StorageError::bad_request(format!(
                "the S3 snapshot storage is not usable: {}",
                with_causes(&e)
            ))
        })?;
        Ok(Arc::new(store))
    }
}

/// A stored snapshot object as listed.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
    /// The checksum object's text, if there is one.
    pub checksum: Option<String>,
}

/// The S3 backend of stored snapshots.
pub struct S3Snapshots {
    store: Arc<dyn ObjectStore>,
    pub config: S3Config,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for S3Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Snapshots")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Snapshots {
    pub fn new(config: &S3Config) -> Result<S3Snapshots> {
        let bucket = config
            .bucket
            .clone()
            .or_else(|| std::env::var("AWS_BUCKET").ok())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                StorageError::bad_request(
                    "storage.snapshots_config.s3_config.bucket is required for snapshots_storage: s3",
                )
            })?;
        if config.part_size == 0 || config.parts_in_flight == 0 {
            return Err(StorageError::bad_request(
                "s3_config.part_size_bytes and parts_in_flight must be at least 1",
            ));
        }
        Ok(S3Snapshots {
            store: config.client(&bucket, None)?,
            config: config.clone(),
            bucket,
            prefix: config.prefix.trim_matches('/').to_string(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key "directory" of `scope` (no trailing slash; empty at the top).
    fn dir(&self, scope: &Scope) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.prefix.is_empty() {
            parts.push(self.prefix.clone());
        }
        match scope {
            Scope::Collection(c) => parts.push(c.clone()),
            Scope::Shard(c, id) => {
                parts.push(c.clone());
                parts.push("shards".into());
                parts.push(id.to_string());
            }
            Scope::Full => {}
        }
        parts.join("/")
    }

    fn key(&self, scope: &Scope, name: &str) -> Key {
        let dir = self.dir(scope);
        if dir.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{dir}/{name}"))
        }
    }

    fn failed(&self, what: &str, err: object_store::Error) -> StorageError {
        s3_failure(&self.bucket, what, err)
    }

    /// Stored snapshots of `scope`: the `.snapshot` objects directly at its level.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<SnapshotDescription>> {
        Ok(self
            .list_objects(scope)
            .await?
            .into_iter()
            .map(|object| SnapshotDescription {
                name: object.name,
                creation_time: Some(creation_time(object.modified)),
                size: object.size,
                checksum: object.checksum,
            })
            .collect())
    }

    /// [`Self::list`] with the objects' times as times, sorted by name.
    pub async fn list_objects(&self, scope: &Scope) -> Result<Vec<StoredObject>> {
        let dir = self.dir(scope);
        let prefix = (!dir.is_empty()).then(|| Key::from(dir.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| self.failed("list snapshots", e))?;
        let snapshots = listing.objects.into_iter().filter_map(|object| {
            let name = object.location.filename()?.to_string();
            (name.ends_with(SNAPSHOT_EXT) && !name.starts_with('.')).then_some((name, object))
        });
        // The checksum objects are read 16 at a time.
        use futures_util::{StreamExt, TryStreamExt};
        let mut out: Vec<StoredObject> = futures_util::stream::iter(snapshots)
            .map(|(name, object)| async move {
                let checksum = self.checksum_of(scope, &name).await?;
                Ok::<_, StorageError>(StoredObject {
                    name,
                    size: object.size,
                    modified: object.last_modified.into(),
                    checksum,
                })
            })
            .buffered(16)
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The checksum object beside stored snapshot `name`, if there is one.
    pub async fn checksum_of(&self, scope: &Scope, name: &str) -> Result<Option<String>> {
        let key = self.key(scope, &format!("{name}{CHECKSUM_EXT}"));
        read_checksum(&*self.store, &self.bucket, &key).await
    }

    /// The key and size of stored snapshot `name` of `scope`, which must exist.
    pub async fn head(&self, scope: &Scope, name: &str) -> Result<(Key, object_store::ObjectMeta)> {
        validate_snapshot_name(name)?;
        let not_found = || StorageError::NotFound(format!("Snapshot {name} not found"));
        if !name.ends_with(SNAPSHOT_EXT) {
            return Err(not_found());
        }
        let key = self.key(scope, name);
        match self.store.head(&key).await {
            Ok(meta) => Ok((key, meta)),
            Err(object_store::Error::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(self.failed("look up a snapshot", e)),
        }
    }

    /// A reader of the `size` bytes of `key` that reads ahead while it goes
    /// forward: chunks of `part_size`, `parts_in_flight` of them ahead. Call from
    /// within the runtime; its reads block.
    pub fn reader(&self, key: Key, size: u64) -> ObjectReader {
        ObjectReader::new(
            self.store.clone(),
            key,
            size,
            self.config.part_size,
            self.config.parts_in_flight,
            tokio::runtime::Handle::current(),
        )
    }

    /// Delete stored snapshot `name` (found by [`Self::head`]), then its checksum.
    pub async fn delete(&self, key: &Key) -> Result<()> {
        let checksum = Key::from(format!("{key}{CHECKSUM_EXT}"));
        for k in [key, &checksum] {
            match self.store.delete(k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("delete a snapshot", e)),
            }
        }
        Ok(())
    }

    /// A stored snapshot of `scope`, streamed: (size, chunks).
    pub async fn open_stream(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<(object_store::GetResult, Option<String>)> {
        let (key, _) = self.head(scope, name).await?;
        let result = self.store.get(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                StorageError::NotFound(format!("Snapshot {name} not found"))
            }
            e => self.failed("read a snapshot", e),
        })?;
        let checksum = self.checksum_of(scope, name).await?;
        Ok((result, checksum))
    }

    /// Create a stored snapshot of `scope` in S3. Blocking: run it on a blocking
    /// thread of the runtime (it reads the frozen files and waits for the uploads).
    pub fn create(&self, storage: &Storage, scope: Scope) -> Result<SnapshotDescription> {
        let runtime = tokio::runtime::Handle::current();
        let view = SnapshotView::open(storage, scope.clone())?;
        let base = name_base(&scope, SystemTime::now());
        let (name, key) = runtime.block_on(self.reserve(&scope, &base))?;
        let result = runtime.block_on(self.upload(&view, &key));
        release(&key);
        drop(view);
        let (size, checksum) = result?;
        crate::metrics::snapshot_created(match &scope {
            Scope::Collection(c) | Scope::Shard(c, _) => c,
            Scope::Full => "",
        });
        Ok(SnapshotDescription {
            name,
            creation_time: Some(creation_time(SystemTime::now())),
            size,
            checksum: Some(checksum),
        })
    }

    /// Pick `<base>.snapshot`, or `-1`, `-2`, … when one exists or is being written.
    ///
    /// A name is taken by creating its checksum object (empty until the upload
    /// writes the digest) with a conditional create (`If-None-Match: *`): of two
    /// daemons writing to one bucket at the same second, one gets the name and the
    /// other the next, where a lookup then a write would let both take it. (The
    /// multipart upload itself cannot be completed conditionally through
    /// object_store.) A store that does not support conditional creates falls back
    /// to the lookup. The snapshot's own key is looked up too: one written without
    /// a checksum object still takes its name.
    async fn reserve(&self, scope: &Scope, base: &str) -> Result<(String, Key)> {
        for n in 0.. {
            let name = if n == 0 {
                format!("{base}{SNAPSHOT_EXT}")
            } else {
                format!("{base}-{n}{SNAPSHOT_EXT}")
            };
            let key = self.key(scope, &name);
            let exists = match self.store.head(&key).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(self.failed("look up a snapshot name", e)),
            };
            if exists || !reserved().lock().unwrap().insert(key.to_string()) {
                continue;
            }
            let checksum_key = Key::from(format!("{key}{CHECKSUM_EXT}"));
            let taken = self
                .store
                .put_opts(
                    &checksum_key,
                    PutPayload::new(),
                    object_store::PutMode::Create.into(),
                )
                .await;
            match taken {
                Ok(_) => return Ok((name, key)),
                Err(object_store::Error::AlreadyExists { .. }) => release(&key),
                Err(object_store::Error::NotImplemented) => {
                    let exists = match self.store.head(&checksum_key).await {
                        Ok(_) => true,
                        Err(object_store::Error::NotFound { .. }) => false,
                        Err(e) => {
                            release(&key);
                            return Err(self.failed("look up a snapshot name", e));
                        }
                    };
                    if !exists {
                        return Ok((name, key));
                    }
                    release(&key);
                }
                Err(e) => {
                    release(&key);
                    return Err(self.failed("reserve a snapshot name", e));
                }
            }
        }
        unreachable!()
    }

    /// Stream the view's archive into a multipart upload of `key`, hashing; write
    /// the checksum object (until then the empty one that reserved the name);
    /// complete. On failure nothing is left: the upload is aborted and the
    /// checksum object removed.
    async fn upload(&self, view: &SnapshotView, key: &Key) -> Result<(u64, String)> {
        let checksum_key = Key::from(format!("{key}{CHECKSUM_EXT}"));
        let mut upload = match self.store.put_multipart(key).await {
            Ok(upload) => upload,
            Err(e) => {
                let _ = self.store.delete(&checksum_key).await;
                return Err(self.failed("start the upload", e));
            }
        };
        let _active = ActiveUpload::enter();
        let stopping = stopping().clone();
        let outcome: Result<String> = tokio::select! {
            outcome = self.send_and_complete(view, upload.as_mut(), &checksum_key) => outcome,
            () = stopping.cancelled() => Err(StorageError::ShuttingDown),
        };
        match outcome {
            Ok(digest) => Ok((view.layout().size(), digest)),
            Err(err) => {
                let _ = self.store.delete(&checksum_key).await;
                match upload.abort().await {
                    Ok(()) => {
                        tracing::warn!(key = %key, %err, "snapshot upload to S3 failed; the multipart upload was aborted")
                    }
                    Err(abort) => {
                        tracing::error!(key = %key, %err, abort = %with_causes(&abort), "snapshot upload to S3 failed and its multipart upload could not be aborted (a lifecycle rule will have to remove it)")
                    }
                }
                Err(err)
            }
        }
    }

    /// Send the parts, write the checksum object, complete the upload.
    async fn send_and_complete(
        &self,
        view: &SnapshotView,
        upload: &mut dyn MultipartUpload,
        checksum_key: &Key,
    ) -> Result<String> {
        let digest = hex(&self.send_parts(view, upload).await?);
        self.store
            .put(checksum_key, PutPayload::from(Bytes::from(digest.clone())))
            .await
            .map_err(|e| self.failed("write the checksum", e))?;
        upload
            .complete()
            .await
            .map_err(|e| self.failed("complete the upload", e))?;
        Ok(digest)
    }

    /// Read the archive part by part (blocking reads: this runs on a blocking
    /// thread) while at most `parts_in_flight` parts are held.
    async fn send_parts(
        &self,
        view: &SnapshotView,
        upload: &mut dyn MultipartUpload,
    ) -> Result<[u8; 32]> {
        let layout = view.layout();
        let size = layout.size();
        let mut hasher = Sha256::new();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut offset = 0u64;
        let joined =
            |r: std::result::Result<object_store::Result<()>, tokio::task::JoinError>| match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(self.failed("upload a part", e)),
                Err(e) => Err(StorageError::internal(format!(
                    "an upload task failed: {e}"
                ))),
            };
        while offset < size {
            while in_flight.len() >= self.config.parts_in_flight {
                if let Some(r) = in_flight.join_next().await {
                    joined(r)?;
                }
            }
            let len = (size - offset).min(self.config.part_size as u64) as usize;
            let mut part = vec![0u8; len];
            let mut done = 0;
            while done < len {
                let n = layout.read_at(offset + done as u64, &mut part[done..])?;
                if n == 0 {
                    return Err(StorageError::internal("snapshot ended before its size"));
                }
                done += n;
            }
            hasher.update(&part);
            offset += len as u64;
            in_flight.spawn(upload.put_part(PutPayload::from(Bytes::from(part))));
        }
        while let Some(r) = in_flight.join_next().await {
            joined(r)?;
        }
        let digest: [u8; 32] = hasher.finalize().into();
        super::checksum::remember(layout, digest);
        Ok(digest)
    }
}

/// The largest checksum object read (64 hex digits, maybe a file name after
/// them, as `sha256sum` writes): a bigger one is refused before it is read.
pub const MAX_CHECKSUM_OBJECT: u64 = 1024;

/// The 64-hex checksum object at `key`, if there is one: its size is looked up
/// first and at most [`MAX_CHECKSUM_OBJECT`] bytes are asked for, so an object
/// of any size costs no more memory than that.
async fn read_checksum(store: &dyn ObjectStore, bucket: &str, key: &Key) -> Result<Option<String>> {
    let meta = match store.head(key).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(s3_failure(bucket, "look up a checksum", e)),
    };
    if meta.size > MAX_CHECKSUM_OBJECT {
        return Err(StorageError::bad_request(format!(
            "the checksum object s3://{bucket}/{key} is {} bytes, more than a checksum ({MAX_CHECKSUM_OBJECT} at most): remove or rewrite it",
            meta.size
        )));
    }
    if meta.size == 0 {
        return Ok(Some(String::new()));
    }
    let options = GetOptions {
        range: Some(object_store::GetRange::Bounded(
            0..meta.size.min(MAX_CHECKSUM_OBJECT),
        )),
        ..GetOptions::default()
    };
    let bytes = match store.get_opts(key, options).await {
        Ok(result) => result
            .bytes()
            .await
            .map_err(|e| s3_failure(bucket, "read a checksum", e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(s3_failure(bucket, "read a checksum", e)),
    };
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string()))
}

/// An S3 failure in words: 404 for a missing object, 502 for the rest (the object
/// store failed or refused; a missing bucket of the configured storage is a fault
/// of the setup, so 502 too). Never includes credentials.
fn s3_failure(bucket: &str, what: &str, err: object_store::Error) -> StorageError {
    // object_store's text already carries its causes (status, S3's error body).
    let text = err.to_string();
    if text.contains("NoSuchBucket") {
        return StorageError::Peer(format!(
            "S3 bucket `{bucket}` does not exist ({what}): {text}"
        ));
    }
    match err {
        object_store::Error::NotFound { .. } => StorageError::NotFound(format!(
            "not found in S3 bucket `{bucket}` ({what}): {text}"
        )),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StorageError::Peer(format!(
            "S3 refused access to bucket `{bucket}` ({what}): check the access key and secret key: {text}"
        )),
        _ => StorageError::Peer(format!("S3 failed ({what}, bucket `{bucket}`): {text}")),
    }
}

fn name_base(scope: &Scope, now: SystemTime) -> String {
    let ts = name_timestamp(now);
    match scope {
        Scope::Collection(c) => format!("{c}-{ts}"),
        Scope::Shard(c, id) => format!("{c}-shard-{id}-{ts}"),
        Scope::Full => format!("full-snapshot-{ts}"),
    }
}

/// Cancelled when the daemon stops: uploads still running then are aborted.
fn stopping() -> &'static tokio_util::sync::CancellationToken {
    static STOPPING: OnceLock<tokio_util::sync::CancellationToken> = OnceLock::new();
    STOPPING.get_or_init(Default::default)
}

/// Uploads running (counted while their multipart upload is open).
static ACTIVE_UPLOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct ActiveUpload;

impl ActiveUpload {
    fn enter() -> ActiveUpload {
        ACTIVE_UPLOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ActiveUpload
    }
}

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        ACTIVE_UPLOADS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// At shutdown, once requests had their grace: every snapshot upload still
/// running stops and aborts its multipart upload (no parts left in the bucket);
/// waits for them up to `limit`. Later creations fail at once.
pub async fn abort_uploads(limit: Duration) {
    stopping().cancel();
    let deadline = tokio::time::Instant::now() + limit;
    while ACTIVE_UPLOADS.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                uploads = ACTIVE_UPLOADS.load(std::sync::atomic::Ordering::SeqCst),
                "snapshot uploads to S3 still running at exit: their multipart uploads stay open (a lifecycle rule will have to remove them)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keys being written right now.
fn reserved() -> &'static Mutex<HashSet<String>> {
    static RESERVED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RESERVED.get_or_init(Default::default)
}

fn release(key: &Key) {
    reserved().lock().unwrap().remove(&key.to_string());
}

/// An object named by an `s3://bucket/key` location, opened for a restore:
/// credentials from the configuration, or `api_key` = `ACCESS:SECRET` (a client made
/// for this request; endpoint and region from the configuration). Returns the
/// streamed object and the checksum object beside it, if any.
pub async fn open_location(
    config: &S3Config,
    bucket: &str,
    key: &str,
    api_key: Option<&str>,
) -> Result<(object_store::GetResult, Option<String>)> {
    let credentials = match api_key {
        None => None,
        Some(text) => Some(text.split_once(':').ok_or_else(|| {
            StorageError::bad_request(
                "for an s3:// location, api_key must be `ACCESS_KEY:SECRET_KEY`",
            )
        })?),
    };
    let store = config.client(bucket, credentials)?;
    let key = Key::parse(key).map_err(|e| {
        StorageError::bad_request(format!(
            "s3://{bucket}/{key} is not a valid object key: {e}"
        ))
    })?;
    let result =
        store
            .get_opts(&key, GetOptions::default())
            .await
            .map_err(
                |e| match s3_failure(bucket, &format!("read s3://{bucket}/{key}"), e) {
                    // A location naming a bucket that does not exist names nothing: 404.
                    StorageError::Peer(text) if text.contains("does not exist") => {
                        StorageError::NotFound(text)
                    }
                    other => other,
                },
            )?;
    let checksum_key = Key::from(format!("{key}{CHECKSUM_EXT}"));
    // An unreadable sidecar is no sidecar (the credentials may reach the archive
    // only); an oversized one is refused.
    let checksum = match read_checksum(&*store, bucket, &checksum_key).await {
        Ok(checksum) => checksum,
        Err(err @ StorageError::BadRequest(_)) => return Err(err),
        Err(_) => None,
    };
    Ok((result, checksum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_keys() {
        let config = S3Config {
            access_key: Some("AKIAEXAMPLE".into()),
            secret_key: Some("very-secret".into()),
            ..S3Config::default()
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("very-secret") && !text.contains("AKIAEXAMPLE"),
            "{text}"
        );
        assert!(text.contains("<hidden>"));
    }
}
