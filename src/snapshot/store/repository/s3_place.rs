//! A repository in an S3 bucket, under a prefix, through object_store (the client
//! the S3 store uses: SigV4, retries, path-style requests to S3-compatible servers).
//! restic's layout is the same as on disk (`<prefix>/config`, `<prefix>/data/ab/…`);
//! a file is one PUT, whole or absent, as S3 writes objects.
//!
//! rustic_core calls a backend from its own threads and blocks on it; each call here
//! waits for its request on the daemon's runtime (never called from an async task).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

use super::place::Place;
use crate::snapshot::store::s3::S3Config;

pub struct S3Place {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Handle,
}

impl S3Place {
    /// The bucket and prefix `config` names (credentials, endpoint and region as the S3
    /// store takes them). Call from within the runtime its requests use.
    pub fn new(config: &S3Config) -> crate::storage::Result<S3Place> {
        let (bucket, store) = config.bucket_client()?;
        Ok(S3Place {
            store,
            bucket,
            prefix: config.prefix.trim_matches('/').to_string(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn key(&self, path: &str) -> Key {
        let path = path.trim_matches('/');
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => Key::from(path),
            (false, true) => Key::from(self.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{path}", self.prefix)),
        }
    }

    fn failed(&self, what: &str, err: object_store::Error) -> io::Error {
        let kind = match err {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        let text = crate::snapshot::store::s3::s3_failure(&self.bucket, what, err).to_string();
        io::Error::new(kind, text)
    }
}

impl Place for S3Place {
    fn location(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    fn list(&self, dir: &str, deep: bool) -> io::Result<Vec<(String, u64)>> {
        let base = self.key(dir);
        let strip = format!("{}/", base.as_ref());
        let relative = |key: &Key| key.as_ref().strip_prefix(&strip).map(str::to_string);
        self.runtime.block_on(async {
            let mut out = Vec::new();
            if deep {
                let mut listing = self.store.list(Some(&base));
                while let Some(meta) = listing
                    .try_next()
                    .await
                    .map_err(|e| self.failed("listing", e))?
                {
                    if let Some(name) = relative(&meta.location) {
                        out.push((name, meta.size));
                    }
                }
            } else {
                let listing = self
                    .store
                    .list_with_delimiter(Some(&base))
                    .await
                    .map_err(|e| self.failed("listing", e))?;
                for meta in listing.objects {
                    if let Some(name) = relative(&meta.location) {
                        out.push((name, meta.size));
                    }
                }
            }
            Ok(out)
        })
    }

    fn read(&self, path: &str, range: Option<(u64, u64)>) -> io::Result<Bytes> {
        let key = self.key(path);
        self.runtime.block_on(async {
            match range {
                Some((offset, len)) => self
                    .store
                    .get_range(&key, offset..offset + len)
                    .await
                    .map_err(|e| self.failed("reading", e)),
                None => {
                    let got = self
                        .store
                        .get(&key)
                        .await
                        .map_err(|e| self.failed("reading", e))?;
                    got.bytes().await.map_err(|e| self.failed("reading", e))
                }
            }
        })
    }

    fn write(&self, path: &str, data: &[Bytes]) -> io::Result<()> {
        let key = self.key(path);
        let payload: PutPayload = data.iter().cloned().collect();
        self.runtime.block_on(async {
            self.store
                .put(&key, payload)
                .await
                .map(|_| ())
                .map_err(|e| self.failed("writing", e))
        })
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let key = self.key(path);
        self.runtime.block_on(async {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed("removing", e)),
            }
        })
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let key = self.key(path);
        self.runtime.block_on(async {
            match self.store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.failed("looking up", e)),
            }
        })
    }

    fn prepare(&self) -> io::Result<()> {
        // The bucket must exist: a listing of the prefix says so (or why not).
        let base = self.key("");
        self.runtime.block_on(async {
            self.store
                .list_with_delimiter(Some(&base))
                .await
                .map(|_| ())
                .map_err(|e| self.failed("opening the repository", e))
        })
    }
}
