//! Daemon configuration: defaults, then a YAML file with Qdrant's key names, then
//! `SNAPFS__SECTION__KEY` environment variables, then command-line flags; each
//! layer wins over the ones before it. See docs/CONFIGURATION.md.
//!
//! This file holds what the rest of the daemon sees: [`Config`], [`Flags`],
//! [`load`] and the defaults. How the lower layers are read and merged is in
//! `layers`, the YAML sections in `sections`, and the serde helpers that let
//! environment strings fill typed keys in `lenient`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

mod layers;
mod lenient;
mod sections;
#[cfg(test)]
mod tests;

use layers::{ConfigLayers, apply_flags, overlay_env, read_yaml};
use sections::policy_store;

/// Qdrant's default request size limit.
pub const DEFAULT_MAX_REQUEST_SIZE_MB: usize = 32;
pub const ENV_PREFIX: &str = "SNAPFS__";
/// How long a snapshot may keep shards frozen before its remaining files are copied
/// aside: long enough for a local copy of a large collection, short enough that
/// `wait=true` writers are not held for minutes by a slow reader.
pub const DEFAULT_SNAPSHOT_MAX_FREEZE_SECS: f64 = 60.0;
/// How long a download from another server (a partial pull, a recovery from a URL)
/// may receive nothing before it is given up: far above any pause of a healthy
/// peer, short enough that a dead one does not pin a restore for long.
pub const DEFAULT_TRANSFER_STALL_SECS: f64 = 60.0;
/// How long a stop waits for requests in flight before it cuts them: inside the
/// 90 s a service manager usually allows, leaving time for the final flush.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 30.0;
/// Connections one TCP listener (REST or gRPC) holds open at once; more are closed
/// as soon as they are accepted, so no client can take every file descriptor.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// How long a TCP connection may stay open without one request that brings the API
/// key: an idle or unauthenticated client does not keep its place for long.
pub const DEFAULT_CONNECTION_AUTH_TIMEOUT_SECS: f64 = 30.0;
/// gRPC calls one HTTP/2 connection may have open at once (hyper's default is 200).
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 32;
/// gRPC calls being served at once over all connections; more wait for a turn.
pub const DEFAULT_GRPC_MAX_CONCURRENT_CALLS: usize = 64;

/// A duration given in seconds (`default` when unset), which must be positive.
fn positive_secs(
    key: &str,
    value: Option<f64>,
    default: f64,
) -> anyhow::Result<std::time::Duration> {
    let secs = value.unwrap_or(default);
    if !(secs > 0.0 && secs.is_finite()) {
        bail!("{key} must be a positive number of seconds, got {secs}");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub storage_path: PathBuf,
    pub snapshots_path: PathBuf,
    pub temp_path: PathBuf,
    pub socket: PathBuf,
    pub http: Option<SocketAddr>,
    /// The gRPC listener (`service.grpc_port`, `--grpc`); none if unset.
    pub grpc: Option<SocketAddr>,
    pub api_key: Option<String>,
    pub allow_non_loopback: bool,
    pub max_request_size_mb: usize,
    /// Connections each TCP listener holds open at once (`service.max_connections`).
    pub max_connections: usize,
    /// A TCP connection without an authenticated request this long after it was
    /// accepted is closed (`service.connection_auth_timeout_secs`).
    pub connection_auth_timeout: std::time::Duration,
    /// Calls open at once on one gRPC connection (`service.grpc_max_concurrent_streams`).
    pub grpc_max_concurrent_streams: u32,
    /// gRPC calls served at once in all (`service.grpc_max_concurrent_calls`).
    pub grpc_max_concurrent_calls: usize,
    pub snapshot_max_freeze: std::time::Duration,
    /// A download that receives nothing this long is given up
    /// (`storage.transfer_stall_secs`).
    pub transfer_stall: std::time::Duration,
    /// On SIGTERM/SIGINT, requests in flight get this long to finish before they are
    /// cut (`snapfs.shutdown_grace_secs`).
    pub shutdown_grace: std::time::Duration,
    pub demo: bool,
    /// Where to mount the filesystem (`snapfs.mount`, `--mount`); no mount if unset.
    pub mount: Option<PathBuf>,
    /// Let users other than the daemon's reach the mount (`snapfs.allow_other`,
    /// `--allow-other`); the kernel then checks the modes the mount shows.
    pub allow_other: bool,
    /// The group whose members share the owner's rights on the mount (with
    /// `allow_other`) and may connect to the control socket (`snapfs.group`).
    pub group: Option<String>,
    /// The logical bytes one restore may unpack (`storage.max_restore_bytes`);
    /// `None`: eight times the free space, at least 64 GiB.
    pub max_restore_bytes: Option<u64>,
    /// Restores need a checksum: recover/ waits for the sidecar, HTTP needs `checksum`.
    pub require_checksum: bool,
    /// Directories `file://` recovery may read from, besides the snapshots directory.
    pub recover_dirs: Vec<PathBuf>,
    /// A full-storage snapshot to restore at start (`--storage-snapshot`, flag only).
    pub storage_snapshot: Option<PathBuf>,
    /// Let `storage_snapshot` replace collections that exist (`--force`).
    pub force: bool,
    /// Where stored snapshots go: `None` is the local snapshots directory,
    /// `Some` an S3 bucket (`storage.snapshots_config.snapshots_storage: s3`).
    pub s3: Option<crate::snapshot::store::s3::S3Config>,
    /// `Some` when stored snapshots are generations in a restic repository
    /// (`snapshots_storage: repository`).
    pub repository: Option<crate::snapshot::store::repository::RepositoryConfig>,
    /// The S3 settings, also when snapshots are stored locally: `s3://` recovery
    /// locations use their endpoint, region and credentials.
    pub s3_recovery: Option<crate::snapshot::store::s3::S3Config>,
    /// Where downloads may go and how long they may take (`storage.fetch_*`).
    pub fetch: crate::fetch::FetchPolicy,
    /// The backup policies (`backups.policies`, the file only), and the line each
    /// policy's name is on, for refusals made at start.
    pub backups: crate::backup::PolicyFile,
    pub backup_lines: std::collections::HashMap<String, usize>,
    /// The Qdrant clusters followed (`follow.clusters`, the file only).
    pub follow: crate::cluster::FollowFile,
    /// The stores of the policies that name their own (`store:`), by policy.
    pub policy_stores: std::collections::HashMap<String, crate::snapshot::store::StoreChoice>,
}

impl Default for Config {
    fn default() -> Self {
        ConfigLayers::default().resolve().expect("defaults resolve")
    }
}

impl Config {
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_size_mb * 1024 * 1024
    }

    /// The daemon's own snapshot store.
    pub fn store_choice(&self) -> crate::snapshot::store::StoreChoice {
        crate::snapshot::store::StoreChoice {
            snapshots_path: self.snapshots_path.clone(),
            s3: self.s3.clone(),
            repository: self.repository.clone(),
        }
    }
}

/// Command-line flags of `snapfs serve` (highest precedence), parsed by clap
/// straight into this struct. `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Directory holding storage/, snapshots/, tmp/ and the socket.
    #[arg(long, help_heading = "Storage")]
    pub data_dir: Option<PathBuf>,
    /// YAML configuration file (Qdrant's key names).
    #[arg(long = "config", help_heading = "Storage")]
    pub config_file: Option<PathBuf>,
    /// Create a `demo` collection with random points when there are no collections.
    #[arg(long, help_heading = "Storage")]
    pub demo: bool,
    /// Restore every collection of a full-storage snapshot before serving.
    #[arg(long, value_name = "FILE", help_heading = "Storage")]
    pub storage_snapshot: Option<PathBuf>,
    /// With --storage-snapshot: replace collections that already exist.
    #[arg(long, requires = "storage_snapshot", help_heading = "Storage")]
    pub force: bool,
    /// Mount the filesystem at DIR (created if missing; unmounted on exit).
    #[arg(long, value_name = "DIR", help_heading = "Mount")]
    pub mount: Option<PathBuf>,
    /// Let other users reach the mount, as its modes allow (the group's members:
    /// the owner's rights; everyone else: nothing). Needs root or `user_allow_other`
    /// in /etc/fuse.conf.
    #[arg(long, help_heading = "Mount")]
    pub allow_other: bool,
    /// The group sharing the mount (with --allow-other) and the control socket.
    #[arg(long, value_name = "NAME", help_heading = "Mount")]
    pub group: Option<String>,
    /// Control socket path [default: <data-dir>/snapfs.sock].
    #[arg(long, help_heading = "Listeners")]
    pub socket: Option<PathBuf>,
    /// Also serve the API on TCP at ADDR (e.g. 127.0.0.1:6333); needs an API key.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners")]
    pub http: Option<SocketAddr>,
    /// Also serve Qdrant's gRPC API on TCP at ADDR (Qdrant's port: 127.0.0.1:6334);
    /// needs an API key.
    #[arg(long, value_name = "ADDR", help_heading = "Listeners")]
    pub grpc: Option<SocketAddr>,
    /// API key required on TCP, HTTP and gRPC (header or metadata `api-key`).
    #[arg(
        long,
        env = "SNAPFS_API_KEY",
        hide_env_values = true,
        help_heading = "Listeners"
    )]
    pub api_key: Option<String>,
    /// Allow --http and --grpc on an address other than loopback.
    #[arg(long, help_heading = "Listeners")]
    pub allow_non_loopback: bool,
}

/// Load the configuration from the optional YAML file, the given environment and the flags.
pub fn load(
    flags: &Flags,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Config> {
    let mut tree = match &flags.config_file {
        Some(path) => read_yaml(path)?,
        None => Value::Object(Default::default()),
    };
    overlay_env(&mut tree, env)?;
    let mut layers: ConfigLayers = serde_json::from_value(tree).context("invalid configuration")?;
    apply_flags(&mut layers, flags);
    let mut config = layers.resolve()?;
    if let Some(path) = &flags.config_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        config.backups = crate::backup::PolicyFile::from_yaml(&text)
            .map_err(|why| anyhow::anyhow!("config file {}: backups: {why}", path.display()))?;
        config.follow = crate::cluster::FollowFile::from_yaml(&text)
            .map_err(|why| anyhow::anyhow!("config file {}: follow: {why}", path.display()))?;
        config.backup_lines = config
            .backups
            .policies
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    crate::backup::policy::line_of_policy(&text, &p.name)?,
                ))
            })
            .collect();
        for policy in &config.backups.policies {
            if let Some(section) = &policy.store {
                let line = config
                    .backup_lines
                    .get(&policy.name)
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                let choice = policy_store(section).with_context(|| {
                    format!(
                        "config file {}: backup policy {}{line}: store",
                        path.display(),
                        policy.name
                    )
                })?;
                config.policy_stores.insert(policy.name.clone(), choice);
            }
        }
    }
    config.storage_snapshot = flags.storage_snapshot.clone();
    config.force = flags.force;
    Ok(config)
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        // The same rule for both TCP listeners: a key, and loopback unless allowed.
        for (what, addr) in [("TCP listener", self.http), ("gRPC listener", self.grpc)] {
            let Some(addr) = addr else { continue };
            if self.api_key.is_none() {
                bail!(
                    "the {what} ({addr}) needs an API key: pass --api-key, set SNAPFS_API_KEY or service.api_key"
                );
            }
            if !addr.ip().is_loopback() && !self.allow_non_loopback {
                bail!(
                    "refusing to listen on {addr}, which is not a loopback address; pass --allow-non-loopback if you mean it"
                );
            }
        }
        if self.http.is_some() && self.http == self.grpc {
            bail!(
                "the HTTP and gRPC listeners cannot share {}: give them different ports",
                self.grpc.unwrap()
            );
        }
        if self.max_request_size_mb == 0 {
            bail!("service.max_request_size_mb must be at least 1");
        }
        for (key, value) in [
            ("service.max_connections", self.max_connections),
            (
                "service.grpc_max_concurrent_streams",
                self.grpc_max_concurrent_streams as usize,
            ),
            (
                "service.grpc_max_concurrent_calls",
                self.grpc_max_concurrent_calls,
            ),
        ] {
            if value == 0 {
                bail!("{key} must be at least 1");
            }
        }
        Ok(())
    }
}
