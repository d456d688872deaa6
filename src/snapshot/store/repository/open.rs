//! Where the repository is (the configuration's `repository:` section, as read) and
//! opening it: reaching its place, opening it with the password or creating it
//! when there is none yet, and clearing this host's stale locks. Apart from the
//! store's work because it runs once, at start.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rustic_core::{
    ConfigOptions, Credentials, KeyOptions, Repository, RepositoryBackends, RepositoryOptions,
};

use super::lock::{self, LockKey};
use super::place::{Backend, LocalPlace, Place};
use super::{RepositoryStore, repo_error, s3_place};
use crate::snapshot::store::NameReservations;
use crate::storage::{Result, StorageError};

/// Where the repository is and how to open it.
#[derive(Clone, PartialEq)]
pub struct RepositoryConfig {
    pub location: Location,
    /// The repository's password, already read from where the configuration says.
    pub password: String,
    /// rustic_core's local cache of snapshot and index files (none when unset).
    pub cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RepositoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryConfig")
            .field("location", &self.location)
            .field("password", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    /// A bucket and prefix (`s3:<bucket>/<prefix>`), with the S3 store's endpoint,
    /// region and credentials.
    S3(crate::snapshot::store::s3::S3Config),
}

impl RepositoryStore {
    /// Open the repository `config` names, creating it (with the configured
    /// password) when its location holds none yet.
    pub fn open(config: &RepositoryConfig) -> Result<RepositoryStore> {
        let place: Arc<dyn Place> = match &config.location {
            Location::Local(path) => Arc::new(LocalPlace::new(path)),
            Location::S3(s3) => Arc::new(s3_place::S3Place::new(s3)?),
        };
        let backends = RepositoryBackends::new(Arc::new(Backend::new(place.clone())), None);
        let mut options = RepositoryOptions::default();
        match &config.cache_dir {
            Some(dir) => options.cache_dir = Some(dir.clone()),
            None => options.no_cache = true,
        }
        let repo = Repository::new(&options, &backends)
            .map_err(|e| repo_error("opening the snapshot repository", e))?;
        let exists = place.exists("config").map_err(|e| {
            StorageError::bad_request(format!(
                "the snapshot repository at {} cannot be reached: {e}",
                place.location()
            ))
        })?;
        let credentials = Credentials::password(&config.password);
        let opened = if exists {
            repo.open(&credentials).map_err(|e| {
                if e.is_incorrect_password() {
                    StorageError::bad_request(format!(
                        "the snapshot repository at {} does not open with the configured password",
                        place.location()
                    ))
                } else {
                    repo_error("opening the snapshot repository", e)
                }
            })?
        } else {
            tracing::info!(location = %place.location(), "no snapshot repository there yet: creating one");
            place.prepare().map_err(|e| {
                StorageError::bad_request(format!(
                    "the snapshot repository at {} cannot be created: {e}",
                    place.location()
                ))
            })?;
            repo.init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| repo_error("creating the snapshot repository", e))?
        };
        let key = opened.key();
        let lock_key = LockKey::new(&key)
            .ok_or_else(|| StorageError::internal("the repository key has an unexpected shape"))?;
        match lock::remove_stale(&*place, &lock_key) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "stale repository locks of this host removed"),
            Err(e) => tracing::warn!(error = %e, "could not look for stale repository locks"),
        }
        tracing::info!(location = %place.location(), "stored snapshots go to a restic repository");
        Ok(RepositoryStore {
            place,
            backends,
            options,
            key,
            lock_key,
            names: NameReservations::default(),
            epoch: AtomicU64::new(0),
            indexed: Mutex::new(None),
            gc: std::sync::RwLock::new(()),
            readers: Arc::default(),
        })
    }
}
