//! The S3 store (`storage.snapshots_config.snapshots_storage: s3`): the same
//! operations as [`super::local`], with objects instead of files, laid out as
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
//!
//! The store also reads `s3://bucket/key` locations for restores ([`open_location`]),
//! with the same client settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, GetOptions, MultipartUpload, ObjectStore, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};

use super::s3_reader::ObjectReader;
use super::{
    CHECKSUM_EXT, NameReservations, OpenedSnapshot, SNAPSHOT_EXT, SnapshotStore, StoredReader,
    StoredSnapshot, check_name, name_base, not_found,
};
use crate::snapshot::digest::hex;
use crate::snapshot::view::{Scope, SnapshotView};
use crate::storage::error::with_causes;
use crate::storage::{Result, StorageError};

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

    /// The bucket this configuration names (or `AWS_BUCKET`) and a client for it.
    pub(crate) fn bucket_client(&self) -> Result<(String, Arc<dyn ObjectStore>)> {
        let bucket = self
            .bucket
            .clone()
            .or_else(|| std::env::var("AWS_BUCKET").ok())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| StorageError::bad_request("no S3 bucket is configured"))?;
        let client = self.client(&bucket, None)?;
        Ok((bucket, client))
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

/// The S3 store of stored snapshots.
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    config: S3Config,
    bucket: String,
    prefix: String,
    /// The runtime the store's requests run on (its methods block on them).
    runtime: tokio::runtime::Handle,
    names: NameReservations,
    /// Cancelled when the daemon stops: uploads still running then are aborted.
    stopping: tokio_util::sync::CancellationToken,
    /// Uploads running (counted while their multipart upload is open).
    uploads: Arc<AtomicUsize>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Store {
    /// The store `config` names. Call from within the runtime its requests use.
    pub fn new(config: &S3Config) -> Result<S3Store> {
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
        Ok(S3Store {
            store: config.client(&bucket, None)?,
            config: config.clone(),
            bucket,
            prefix: config.prefix.trim_matches('/').to_string(),
            runtime: tokio::runtime::Handle::current(),
            names: NameReservations::default(),
            stopping: Default::default(),
            uploads: Default::default(),
        })
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

    /// Records live under `.records/<group>/<name>.json` (never a collection's key).
    fn record_key(&self, group: &str, name: &str) -> Result<Key> {
        super::check_record_name(group)?;
        super::check_record_name(name)?;
        Ok(self.key(&Scope::Full, &format!(".records/{group}/{name}.json")))
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

    /// Wait for `work` on the store's runtime (from a blocking thread).
    fn block_on<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// The `.snapshot` objects directly at `scope`'s level, sorted by name, each
    /// with its checksum object's text (read 16 at a time).
    async fn list_objects(&self, scope: &Scope) -> Result<Vec<StoredSnapshot>> {
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
        use futures_util::{StreamExt, TryStreamExt};
        let mut out: Vec<StoredSnapshot> = futures_util::stream::iter(snapshots)
            .map(|(name, object)| async move {
                let checksum = self.checksum_of(scope, &name).await?;
                Ok::<_, StorageError>(StoredSnapshot {
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
    async fn checksum_of(&self, scope: &Scope, name: &str) -> Result<Option<String>> {
        let key = self.key(scope, &format!("{name}{CHECKSUM_EXT}"));
        read_checksum(&*self.store, &self.bucket, &key).await
    }

    /// The key and metadata of stored snapshot `name` of `scope`, which must exist.
    async fn head(&self, scope: &Scope, name: &str) -> Result<(Key, object_store::ObjectMeta)> {
        check_name(name)?;
        let key = self.key(scope, name);
        match self.store.head(&key).await {
            Ok(meta) => Ok((key, meta)),
            Err(object_store::Error::NotFound { .. }) => Err(not_found(name)),
            Err(e) => Err(self.failed("look up a snapshot", e)),
        }
    }

    /// Take `name` in `scope` for a new snapshot, if it is free in the bucket.
    ///
    /// A name is taken by creating its checksum object (empty until the upload
    /// writes the digest) with a conditional create (`If-None-Match: *`): of two
    /// daemons writing to one bucket at the same second, one gets the name and the
    /// other the next, where a lookup then a write would let both take it. (The
    /// multipart upload itself cannot be completed conditionally through
    /// object_store.) A store that does not support conditional creates falls back
    /// to the lookup. The snapshot's own key is looked up too: one written without
    /// a checksum object still takes its name.
    async fn take_name(&self, scope: &Scope, name: &str) -> Result<bool> {
        let key = self.key(scope, name);
        match self.store.head(&key).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.failed("look up a snapshot name", e)),
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
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented) => {
                match self.store.head(&checksum_key).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(self.failed("look up a snapshot name", e)),
                }
            }
            Err(e) => Err(self.failed("reserve a snapshot name", e)),
        }
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
        let _active = ActiveUpload::enter(&self.uploads);
        let outcome: Result<String> = tokio::select! {
            outcome = self.send_and_complete(view, upload.as_mut(), &checksum_key) => outcome,
            () = self.stopping.cancelled() => Err(StorageError::ShuttingDown),
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
                Err(e) => Err(StorageError::internal_from("an upload task failed", e)),
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
        view.snapshots().checksums().remember(layout, digest);
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
pub(crate) fn s3_failure(bucket: &str, what: &str, err: object_store::Error) -> StorageError {
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

/// Counts an upload while its multipart upload is open.
struct ActiveUpload(Arc<AtomicUsize>);

impl ActiveUpload {
    fn enter(count: &Arc<AtomicUsize>) -> ActiveUpload {
        count.fetch_add(1, Ordering::SeqCst);
        ActiveUpload(count.clone())
    }
}

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SnapshotStore for S3Store {
    fn location(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            prefix => format!("s3://{}/{prefix}", self.bucket),
        }
    }

    fn list(&self, scope: &Scope) -> Result<Vec<StoredSnapshot>> {
        self.block_on(self.list_objects(scope))
    }

    fn stat(&self, scope: &Scope, name: &str) -> Result<StoredSnapshot> {
        self.block_on(async {
            let (_, meta) = self.head(scope, name).await?;
            Ok(StoredSnapshot {
                name: name.to_string(),
                size: meta.size,
                modified: meta.last_modified.into(),
                checksum: self.checksum_of(scope, name).await?,
            })
        })
    }

    /// Read with ranged GETs, read ahead while a reader goes forward (see
    /// [`super::s3_reader`]).
    fn open(&self, scope: &Scope, name: &str) -> Result<OpenedSnapshot> {
        let (key, meta, checksum) = self.block_on(async {
            let (key, meta) = self.head(scope, name).await?;
            let checksum = self.checksum_of(scope, name).await?;
            Ok::<_, StorageError>((key, meta, checksum))
        })?;
        // The object's identity (key, size, ETag, time) names its bytes.
        let identity = format!(
            "{key}\n{}\n{}\n{}",
            meta.size,
            meta.e_tag.as_deref().unwrap_or(""),
            meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
        );
        let reader = ObjectReader::new(
            self.store.clone(),
            key.clone(),
            meta.size,
            self.config.part_size,
            self.config.parts_in_flight,
            self.runtime.clone(),
        );
        Ok(OpenedSnapshot {
            snapshot: StoredSnapshot {
                name: name.to_string(),
                size: meta.size,
                modified: meta.last_modified.into(),
                checksum,
            },
            version: Sha256::digest(identity.as_bytes()).into(),
            shown: format!("s3://{}/{key}", self.bucket),
            reader: Arc::new(reader),
        })
    }

    /// Streamed into a multipart upload, no temporary file (see the module note).
    fn create(&self, view: &SnapshotView) -> Result<StoredSnapshot> {
        let scope = view.scope();
        let base = name_base(scope, SystemTime::now());
        let reserved = self.names.reserve(scope, &base, |name| {
            self.block_on(self.take_name(scope, name))
        })?;
        let key = self.key(scope, &reserved.name);
        let (size, checksum) = self.block_on(self.upload(view, &key))?;
        Ok(StoredSnapshot {
            name: reserved.name.clone(),
            size,
            modified: SystemTime::now(),
            checksum: Some(checksum),
        })
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<()> {
        self.block_on(async {
            let (key, _) = self.head(scope, name).await?;
            let checksum = Key::from(format!("{key}{CHECKSUM_EXT}"));
            for k in [&key, &checksum] {
                match self.store.delete(k).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.failed("delete a snapshot", e)),
                }
            }
            Ok(())
        })
    }

    fn put_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let key = self.record_key(group, name)?;
        let payload = object_store::PutPayload::from(Bytes::copy_from_slice(bytes));
        self.block_on(self.store.put(&key, payload))
            .map(|_| ())
            .map_err(|e| self.failed("write a record", e))
    }

    fn get_record(&self, group: &str, name: &str, limit: u64) -> Result<Vec<u8>> {
        let key = self.record_key(group, name)?;
        self.block_on(async {
            let meta = match self.store.head(&key).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(super::record_not_found(group, name));
                }
                Err(e) => return Err(self.failed("read a record", e)),
            };
            if meta.size > limit {
                return Err(StorageError::internal(format!(
                    "{group} record {name} is {} bytes, more than {limit}",
                    meta.size
                )));
            }
            let got = self
                .store
                .get_range(&key, 0..meta.size)
                .await
                .map_err(|e| self.failed("read a record", e))?;
            Ok(got.to_vec())
        })
    }

    fn list_records(&self, group: &str) -> Result<Vec<String>> {
        super::check_record_name(group)?;
        let dir = self.key(&Scope::Full, &format!(".records/{group}"));
        let listing = self
            .block_on(self.store.list_with_delimiter(Some(&dir)))
            .map_err(|e| self.failed("list records", e))?;
        let mut names: Vec<String> = listing
            .objects
            .iter()
            .filter_map(|o| {
                o.location
                    .filename()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .filter(|n| super::check_record_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_record(&self, group: &str, name: &str) -> Result<()> {
        let key = self.record_key(group, name)?;
        match self.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete a record", e)),
        }
    }

    /// A listing is a LIST request and a GET per checksum: kept for 2 s.
    fn listing_ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Every snapshot upload still running stops and aborts its multipart upload
    /// (no parts left in the bucket); waits for them up to `limit`. Later creations
    /// fail at once.
    fn stop(&self, limit: Duration) {
        self.stopping.cancel();
        let deadline = std::time::Instant::now() + limit;
        while self.uploads.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                tracing::error!(
                    uploads = self.uploads.load(Ordering::SeqCst),
                    "snapshot uploads to S3 still running at exit: their multipart uploads stay open (a lifecycle rule will have to remove them)"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl StoredReader for ObjectReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        ObjectReader::read_at(self, offset, buf)
    }
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
