//! The service: what snapfs does, whatever the protocol. REST (`crate::api`), gRPC
//! (`crate::grpc`), the mount (`crate::fs`) and the command line are adapters: they
//! translate a request, call a function here, and translate the answer; they never
//! import each other. (Qdrant is built so: `src/actix` and `src/tonic` both call
//! `src/common`.)
//!
//! - [`Service`]: the shared state (storage, the snapshot store, restore settings);
//! - [`collections`], [`points`], [`snapshots`], [`recover`], [`partial`]: the
//!   operations, taking
//!   the engine's and the snapshot layer's types and returning `StorageError`s;
//! - [`listen`]: the listeners (Unix socket, TCP with an API key, HTTP/1.1 and
//!   HTTP/2 on one accept loop) that REST and gRPC are served on;
//! - [`remote`]: what a remote client is told of an error;
//! - [`backups`]: backup policies at work (schedules, runs, retention, drills);
//! - [`follow`] and [`cluster_restore`]: following Qdrant clusters into mirrors and
//!   cluster generations, and restoring a generation into a Qdrant cluster.

pub mod backups;
pub mod cluster_restore;
pub mod collections;
pub mod follow;
pub mod listen;
pub mod partial;
pub mod points;
pub mod recover;
pub mod remote;
pub mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;

use crate::snapshot::Snapshots;
use crate::snapshot::store::SnapshotStore;
use crate::storage::{Result, Storage, StorageError};

/// The Qdrant release whose APIs (and snapshot format) snapfs follows.
pub const QDRANT_API_VERSION: &str = "1.18.3";

/// The server's name in Qdrant's version document (`GET /`, gRPC `HealthCheck`).
pub const SERVER_TITLE: &str = "snapfs - snapshots of vector collections as files";

pub struct Service {
    /// The snapshot layer's state, and through it the storage.
    pub snapshots: Arc<Snapshots>,
    /// Where stored snapshots are kept (chosen once at start).
    pub store: Arc<dyn SnapshotStore>,
    /// Directories `file://` locations may point into (`storage.recover_dirs`).
    pub recover_dirs: Vec<PathBuf>,
    /// Restores must name a checksum (`storage.require_checksum`).
    pub require_checksum: bool,
    /// A download that receives nothing this long is given up.
    pub transfer_stall: std::time::Duration,
    /// S3 settings for `s3://` recovery locations (endpoint, region, credentials),
    /// when configured.
    pub s3_recovery: Option<crate::snapshot::store::s3::S3Config>,
    /// Where downloads and peer pulls may go, and their deadlines (`storage.fetch_*`).
    pub fetch: Arc<crate::fetch::FetchPolicy>,
    /// The backup policies, their record and their running jobs.
    pub backups: Arc<backups::Backups>,
    /// The followed Qdrant clusters and their rounds.
    pub follow: Arc<follow::Follow>,
}

impl Service {
    pub fn storage(&self) -> &Arc<Storage> {
        self.snapshots.storage()
    }
}

/// Run blocking storage work off the async threads.
pub async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::internal_from("worker failed", e))?
}
