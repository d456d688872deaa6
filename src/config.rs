//! Daemon configuration: defaults, then a YAML file with Qdrant's key names, then
//! `SNAPFS__SECTION__KEY` environment variables, then command-line flags; each
//! layer wins over the ones before it. See docs/CONFIGURATION.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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

/// A backup policy's own `store:`: `storage.snapshots_config`'s keys, plus
/// `snapshots_path` for a local store (required there: no default beside the
/// daemon's own).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PolicyStoreSection {
    #[serde(deserialize_with = "lenient_string")]
    snapshots_storage: Option<String>,
    #[serde(deserialize_with = "lenient_path")]
    snapshots_path: Option<PathBuf>,
    s3_config: Option<S3Section>,
    repository: Option<RepositorySection>,
}

fn policy_store(
    section: &crate::backup::policy::StoreSection,
) -> anyhow::Result<crate::snapshot::store::StoreChoice> {
    use crate::snapshot::store::StoreChoice;
    let json = serde_json::to_value(&section.0)?;
    let spec: PolicyStoreSection = serde_json::from_value(json)?;
    let s3 = spec.s3_config.map(S3Section::resolve);
    Ok(match spec.snapshots_storage.as_deref() {
        Some("repository") => StoreChoice {
            repository: Some(spec.repository.unwrap_or_default().resolve(s3)?),
            ..StoreChoice::default()
        },
        Some("s3") => {
            let s3 = s3.unwrap_or_default();
            if s3.bucket.is_none() && std::env::var("AWS_BUCKET").is_err() {
                bail!("snapshots_storage is s3 but s3_config.bucket is not set");
            }
            StoreChoice {
                s3: Some(s3),
                ..StoreChoice::default()
            }
        }
        Some("local") | None => StoreChoice {
            snapshots_path: spec
                .snapshots_path
                .ok_or_else(|| anyhow::anyhow!("a local store needs snapshots_path"))?,
            ..StoreChoice::default()
        },
        Some(other) => bail!("snapshots_storage must be local, s3 or repository, got {other:?}"),
    })
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

/// The file/env layers, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigLayers {
    #[serde(deserialize_with = "null_as_default")]
    snapfs: SnapfsSection,
    #[serde(deserialize_with = "null_as_default")]
    storage: StorageSection,
    #[serde(deserialize_with = "null_as_default")]
    service: ServiceSection,
    /// Qdrant's log level key, accepted so a Qdrant config file loads; snapfs uses `SNAPFS_LOG`.
    log_level: Option<String>,
    /// Backup policies: read from the file's text by [`crate::backup::PolicyFile`]
    /// (so its errors name lines), only let through here.
    backups: Option<serde::de::IgnoredAny>,
    /// Followed Qdrant clusters: read from the file's text by
    /// [`crate::cluster::FollowFile`], only let through here.
    follow: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SnapfsSection {
    #[serde(deserialize_with = "lenient_path")]
    data_dir: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_bool")]
    demo: Option<bool>,
    #[serde(deserialize_with = "lenient_path")]
    mount: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_bool")]
    allow_other: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    group: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    shutdown_grace_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StorageSection {
    #[serde(deserialize_with = "lenient_path")]
    storage_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_path")]
    snapshots_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_path")]
    temp_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_number")]
    snapshot_max_freeze_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    transfer_stall_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    max_restore_bytes: Option<u64>,
    #[serde(deserialize_with = "lenient_bool")]
    require_checksum: Option<bool>,
    #[serde(deserialize_with = "path_list")]
    recover_dirs: Option<Vec<PathBuf>>,
    snapshots_config: SnapshotsConfigSection,
    #[serde(deserialize_with = "string_list")]
    fetch_allow: Option<Vec<String>>,
    #[serde(deserialize_with = "string_list")]
    fetch_deny: Option<Vec<String>>,
    #[serde(deserialize_with = "lenient_number")]
    fetch_header_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    fetch_total_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    fetch_json_max_bytes: Option<usize>,
    #[serde(deserialize_with = "string_list")]
    fetch_s3_buckets: Option<Vec<String>>,
}

/// Qdrant's `storage.snapshots_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SnapshotsConfigSection {
    #[serde(deserialize_with = "lenient_string")]
    snapshots_storage: Option<String>,
    s3_config: Option<S3Section>,
    repository: Option<RepositorySection>,
}

/// `storage.snapshots_config.repository` (ours): the restic repository that keeps
/// stored snapshots when `snapshots_storage` is `repository`. Its `Debug` hides the
/// password.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RepositorySection {
    #[serde(deserialize_with = "lenient_string")]
    location: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    password: Option<String>,
    #[serde(deserialize_with = "lenient_path")]
    password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    #[serde(deserialize_with = "lenient_string")]
    password_env: Option<String>,
    #[serde(deserialize_with = "lenient_path")]
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RepositorySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositorySection")
            .field("location", &self.location)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish_non_exhaustive()
    }
}

impl RepositorySection {
    /// The repository's settings with its password read: from `password`, the file
    /// `password_file`, the variable `password_env`, or else restic's own
    /// `RESTIC_PASSWORD` / `RESTIC_PASSWORD_FILE`. Never from the command line.
    fn resolve(
        self,
        s3: Option<crate::snapshot::store::s3::S3Config>,
    ) -> anyhow::Result<crate::snapshot::store::repository::RepositoryConfig> {
        use crate::snapshot::store::repository::{Location, RepositoryConfig};
        let set = |v: Option<String>| v.filter(|v| !v.is_empty());
        let Some(location) = set(self.location) else {
            bail!("storage.snapshots_config.repository.location is not set");
        };
        let location = match location.strip_prefix("s3:") {
            Some(rest) => {
                let rest = rest.trim_start_matches("//").trim_matches('/');
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let mut s3 = s3.unwrap_or_default();
                if !bucket.is_empty() {
                    s3.bucket = Some(bucket.to_string());
                }
                if s3.bucket.is_none() && std::env::var("AWS_BUCKET").is_err() {
                    bail!(
                        "storage.snapshots_config.repository.location: s3:<bucket>/<prefix> names no bucket"
                    );
                }
                s3.prefix = prefix.to_string();
                Location::S3(s3)
            }
            None => Location::Local(PathBuf::from(location)),
        };
        let from_file = |path: &std::path::Path| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "the repository's password file cannot be read: {}",
                    e.kind()
                )
            })?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let password = if let Some(p) = set(self.password) {
            p
        } else if let Some(path) = self.password_file {
            from_file(&path)?
        } else if let Some(name) = set(self.password_env) {
            env(&name).ok_or_else(|| {
                anyhow::anyhow!("the repository's password variable {name} is not set")
            })?
        } else if let Some(p) = env("RESTIC_PASSWORD") {
            p
        } else if let Some(path) = env("RESTIC_PASSWORD_FILE") {
            from_file(std::path::Path::new(&path))?
        } else {
            bail!(
                "storage.snapshots_config.repository needs a password: password_file, password_env or password (or RESTIC_PASSWORD_FILE / RESTIC_PASSWORD)"
            );
        };
        if password.is_empty() {
            bail!("the repository's password is empty");
        }
        Ok(RepositoryConfig {
            location,
            password,
            cache_dir: self.cache_dir,
        })
    }
}

/// Qdrant's `storage.snapshots_config.s3_config`, plus `prefix`, `part_size_bytes`
/// and `parts_in_flight` (ours). Its `Debug` hides the keys.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct S3Section {
    #[serde(deserialize_with = "lenient_string")]
    bucket: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    region: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    access_key: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    secret_key: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    endpoint_url: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    prefix: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    part_size_bytes: Option<usize>,
    #[serde(deserialize_with = "lenient_number")]
    parts_in_flight: Option<usize>,
}

impl std::fmt::Debug for S3Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Section")
            .field("bucket", &self.bucket)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl S3Section {
    fn resolve(self) -> crate::snapshot::store::s3::S3Config {
        use crate::snapshot::store::s3::{DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, S3Config};
        let set = |v: Option<String>| v.filter(|v| !v.is_empty());
        S3Config {
            bucket: set(self.bucket),
            region: set(self.region),
            access_key: set(self.access_key),
            secret_key: set(self.secret_key),
            endpoint_url: set(self.endpoint_url),
            prefix: self
                .prefix
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
            part_size: self.part_size_bytes.unwrap_or(DEFAULT_PART_SIZE),
            parts_in_flight: self.parts_in_flight.unwrap_or(DEFAULT_PARTS_IN_FLIGHT),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServiceSection {
    #[serde(deserialize_with = "lenient_path")]
    unix_socket: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_string")]
    host: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    http_port: Option<u16>,
    /// Qdrant's key for its gRPC port (Qdrant's default is 6334; snapfs's is off).
    #[serde(deserialize_with = "lenient_number")]
    grpc_port: Option<u16>,
    /// `--grpc ADDR`: host and port together, whatever `host` says.
    #[serde(skip)]
    grpc_flag: Option<SocketAddr>,
    #[serde(deserialize_with = "lenient_string")]
    api_key: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    max_request_size_mb: Option<usize>,
    #[serde(deserialize_with = "lenient_bool")]
    allow_non_loopback: Option<bool>,
    #[serde(deserialize_with = "lenient_number")]
    max_connections: Option<usize>,
    #[serde(deserialize_with = "lenient_number")]
    connection_auth_timeout_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    grpc_max_concurrent_streams: Option<u32>,
    #[serde(deserialize_with = "lenient_number")]
    grpc_max_concurrent_calls: Option<usize>,
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

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let value = serde_json::to_value(yaml)?;
    Ok(if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    })
}

/// `SNAPFS__SERVICE__API_KEY=x` sets `service.api_key`. Values are read as YAML
/// scalars, so `8080` is a number and `true` a boolean.
fn overlay_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (key, raw) in env {
        let Some(path) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("environment variable {key}: expected {ENV_PREFIX}SECTION__KEY");
        }
        let value = serde_yaml::from_str::<serde_yaml::Value>(&raw)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .filter(|v| !v.is_object() && !v.is_array())
            .unwrap_or(Value::String(raw));
        let mut node = &mut *tree;
        for part in &parts[..parts.len() - 1] {
            if !node.is_object() {
                *node = Value::Object(Default::default());
            }
            node = node
                .as_object_mut()
                .unwrap()
                .entry(part.clone())
                .or_insert_with(|| Value::Object(Default::default()));
        }
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        node.as_object_mut()
            .unwrap()
            .insert(parts[parts.len() - 1].clone(), value);
    }
    Ok(())
}

fn apply_flags(layers: &mut ConfigLayers, flags: &Flags) {
    if let Some(dir) = &flags.data_dir {
        layers.snapfs.data_dir = Some(dir.clone());
    }
    if let Some(socket) = &flags.socket {
        layers.service.unix_socket = Some(socket.clone());
    }
    if let Some(addr) = flags.http {
        layers.service.host = Some(addr.ip().to_string());
        layers.service.http_port = Some(addr.port());
    }
    if let Some(addr) = flags.grpc {
        layers.service.grpc_flag = Some(addr);
    }
    if let Some(key) = &flags.api_key {
        layers.service.api_key = Some(key.clone());
    }
    if flags.allow_non_loopback {
        layers.service.allow_non_loopback = Some(true);
    }
    if flags.demo {
        layers.snapfs.demo = Some(true);
    }
    if let Some(mount) = &flags.mount {
        layers.snapfs.mount = Some(mount.clone());
    }
    if flags.allow_other {
        layers.snapfs.allow_other = Some(true);
    }
    if let Some(group) = &flags.group {
        layers.snapfs.group = Some(group.clone());
    }
}

impl ConfigLayers {
    fn resolve(self) -> anyhow::Result<Config> {
        let data_dir = self
            .snapfs
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./snapfs-data"));
        let host = self.service.host.as_deref();
        let http = listen_address(host, self.service.http_port, "http_port")?;
        let grpc = match self.service.grpc_flag {
            Some(addr) => Some(addr),
            None => listen_address(host, self.service.grpc_port, "grpc_port")?,
        };
        let api_key = self.service.api_key.filter(|k| !k.is_empty());
        let fetch = self.storage.fetch_policy()?;
        let snapshots_config = self.storage.snapshots_config;
        let s3_section = snapshots_config.s3_config.map(S3Section::resolve);
        let repository = match snapshots_config.snapshots_storage.as_deref() {
            Some("repository") => Some(
                snapshots_config
                    .repository
                    .clone()
                    .unwrap_or_default()
                    .resolve(s3_section.clone())?,
            ),
            _ => None,
        };
        let s3 = match snapshots_config.snapshots_storage.as_deref() {
            None | Some("local") | Some("repository") => None,
            Some("s3") => {
                let s3 = s3_section.clone().unwrap_or_default();
                if s3.bucket.is_none() && std::env::var("AWS_BUCKET").is_err() {
                    bail!(
                        "storage.snapshots_config.snapshots_storage is s3 but s3_config.bucket is not set"
                    );
                }
                if s3.part_size == 0 || s3.parts_in_flight == 0 {
                    bail!(
                        "storage.snapshots_config.s3_config: part_size_bytes and parts_in_flight must be at least 1"
                    );
                }
                Some(s3)
            }
            Some(other) => bail!(
                "storage.snapshots_config.snapshots_storage must be local, s3 or repository, got {other:?}"
            ),
        };
        let config = Config {
            fetch,
            repository,
            s3_recovery: s3.clone().or(s3_section),
            s3,
            storage_path: self
                .storage
                .storage_path
                .unwrap_or_else(|| data_dir.join("storage")),
            snapshots_path: self
                .storage
                .snapshots_path
                .unwrap_or_else(|| data_dir.join("snapshots")),
            temp_path: self
                .storage
                .temp_path
                .unwrap_or_else(|| data_dir.join("tmp")),
            socket: self
                .service
                .unix_socket
                .unwrap_or_else(|| data_dir.join("snapfs.sock")),
            http,
            grpc,
            api_key,
            allow_non_loopback: self.service.allow_non_loopback.unwrap_or(false),
            max_request_size_mb: self
                .service
                .max_request_size_mb
                .unwrap_or(DEFAULT_MAX_REQUEST_SIZE_MB),
            max_connections: self
                .service
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            connection_auth_timeout: positive_secs(
                "service.connection_auth_timeout_secs",
                self.service.connection_auth_timeout_secs,
                DEFAULT_CONNECTION_AUTH_TIMEOUT_SECS,
            )?,
            grpc_max_concurrent_streams: self
                .service
                .grpc_max_concurrent_streams
                .unwrap_or(DEFAULT_GRPC_MAX_CONCURRENT_STREAMS),
            grpc_max_concurrent_calls: self
                .service
                .grpc_max_concurrent_calls
                .unwrap_or(DEFAULT_GRPC_MAX_CONCURRENT_CALLS),
            snapshot_max_freeze: positive_secs(
                "storage.snapshot_max_freeze_secs",
                self.storage.snapshot_max_freeze_secs,
                DEFAULT_SNAPSHOT_MAX_FREEZE_SECS,
            )?,
            transfer_stall: positive_secs(
                "storage.transfer_stall_secs",
                self.storage.transfer_stall_secs,
                DEFAULT_TRANSFER_STALL_SECS,
            )?,
            shutdown_grace: positive_secs(
                "snapfs.shutdown_grace_secs",
                self.snapfs.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE_SECS,
            )?,
            demo: self.snapfs.demo.unwrap_or(false),
            mount: self.snapfs.mount.filter(|p| !p.as_os_str().is_empty()),
            allow_other: self.snapfs.allow_other.unwrap_or(false),
            group: self.snapfs.group.filter(|g| !g.is_empty()),
            max_restore_bytes: match self.storage.max_restore_bytes {
                Some(0) => {
                    bail!("storage.max_restore_bytes must be at least 1 (unset it for the default)")
                }
                bytes => bytes,
            },
            require_checksum: self.storage.require_checksum.unwrap_or(false),
            recover_dirs: self.storage.recover_dirs.unwrap_or_default(),
            storage_snapshot: None,
            force: false,
            backups: Default::default(),
            follow: Default::default(),
            backup_lines: Default::default(),
            policy_stores: Default::default(),
            data_dir,
        };
        config.validate()?;
        Ok(config)
    }
}

impl StorageSection {
    /// `storage.fetch_*`: unset keys keep their defaults; a set `fetch_deny`
    /// replaces the default list (`[]` allows link-local too).
    fn fetch_policy(&self) -> anyhow::Result<crate::fetch::FetchPolicy> {
        use crate::fetch::{FetchPolicy, parse_rules};
        let defaults = FetchPolicy::default();
        let rules = |key: &str, items: &Option<Vec<String>>, default: Vec<crate::fetch::Rule>| {
            match items {
                Some(items) => parse_rules(key, items).map_err(anyhow::Error::msg),
                None => Ok(default),
            }
        };
        let json_max_bytes = self.fetch_json_max_bytes.unwrap_or(defaults.json_max_bytes);
        if json_max_bytes == 0 {
            bail!("storage.fetch_json_max_bytes must be at least 1");
        }
        Ok(FetchPolicy {
            allow: rules("storage.fetch_allow", &self.fetch_allow, defaults.allow)?,
            deny: rules("storage.fetch_deny", &self.fetch_deny, defaults.deny)?,
            header_timeout: positive_secs(
                "storage.fetch_header_secs",
                self.fetch_header_secs,
                crate::fetch::DEFAULT_HEADER_SECS,
            )?,
            total_timeout: positive_secs(
                "storage.fetch_total_secs",
                self.fetch_total_secs,
                crate::fetch::DEFAULT_TOTAL_SECS,
            )?,
            json_max_bytes,
            s3_buckets: self
                .fetch_s3_buckets
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|b| b.trim().trim_matches('/').to_string())
                .filter(|b| !b.is_empty())
                .collect(),
        })
    }
}

/// `host:port` for a listener whose port is set (host defaults to loopback).
fn listen_address(
    host: Option<&str>,
    port: Option<u16>,
    port_key: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(port) = port else { return Ok(None) };
    let host = host.unwrap_or("127.0.0.1");
    let addr = format!("{host}:{port}");
    let parsed = addr
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| {
            format!("service.host/{port_key}: {addr} is not an IP address and port")
        })?;
    Ok(Some(parsed))
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

fn scalar_to_string(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A section left empty (`service:` with only comments under it) is YAML's null:
/// the same as no section.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(scalar_to_string(Value::deserialize(d)?))
}

fn lenient_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(scalar_to_string(Value::deserialize(d)?).map(PathBuf::from))
}

/// A list of paths: a YAML list, or one string of `:`-separated paths (as an
/// environment variable gives it).
fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                scalar_to_string(item)
                    .map(PathBuf::from)
                    .ok_or_else(|| D::Error::custom("expected a list of paths"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Ok(scalar_to_string(other).map(|text| {
            text.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })),
    }
}

/// A list of strings: a YAML list, or one comma-separated string (as an
/// environment variable gives it; an empty string is an empty list).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                scalar_to_string(item).ok_or_else(|| D::Error::custom("expected a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Ok(scalar_to_string(other).map(|text| {
            if text.trim() == "[]" {
                return Vec::new();
            }
            text.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })),
    }
}

fn lenient_number<'de, D: Deserializer<'de>, T: std::str::FromStr>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match scalar_to_string(Value::deserialize(d)?) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got {s:?}"))),
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    lenient_number(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_derive_from_data_dir() {
        let config = load(
            &Flags {
                data_dir: Some("/d".into()),
                ..Flags::default()
            },
            vec![],
        )
        .unwrap();
        assert_eq!(config.storage_path, PathBuf::from("/d/storage"));
        assert_eq!(config.snapshots_path, PathBuf::from("/d/snapshots"));
        assert_eq!(config.temp_path, PathBuf::from("/d/tmp"));
        assert_eq!(config.socket, PathBuf::from("/d/snapfs.sock"));
        assert_eq!(config.http, None);
        assert_eq!(config.max_request_size_mb, 32);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "storage:\n  storage_path: /file/storage\n  temp_path: /file/tmp\n  snapshots_path: /file/snaps\nservice:\n  api_key: from-file\n  http_port: 7000\n",
        )
        .unwrap();
        let flags = Flags {
            config_file: Some(file),
            api_key: Some("from-flag".into()),
            ..Flags::default()
        };
        let config = load(
            &flags,
            env(&[
                ("SNAPFS__STORAGE__TEMP_PATH", "/env/tmp"),
                ("SNAPFS__STORAGE__SNAPSHOTS_PATH", "/env/snaps"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.storage_path, PathBuf::from("/file/storage"));
        assert_eq!(config.temp_path, PathBuf::from("/env/tmp"));
        assert_eq!(config.snapshots_path, PathBuf::from("/env/snaps"));
        assert_eq!(config.api_key.as_deref(), Some("from-flag"));
        assert_eq!(config.http, Some("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn the_packaged_config_loads_with_its_empty_sections() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, include_str!("../packaging/config.yaml")).unwrap();
        let flags = Flags {
            config_file: Some(file),
            ..Flags::default()
        };
        let config = load(&flags, vec![]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/snapfs"));
        assert_eq!(config.mount, Some(PathBuf::from("/mnt/snapfs")));
        assert!(config.allow_other);
        assert_eq!(config.group.as_deref(), Some("snapfs"));
        assert_eq!(config.http, None);
        // The flags alone say the same.
        let flags = Flags {
            allow_other: true,
            group: Some("ops".into()),
            ..Flags::default()
        };
        let config = load(&flags, vec![]).unwrap();
        assert!(config.allow_other);
        assert_eq!(config.group.as_deref(), Some("ops"));
    }

    #[test]
    fn numeric_env_values_fit_string_keys() {
        let config = load(
            &Flags::default(),
            env(&[
                ("SNAPFS__SERVICE__API_KEY", "12345"),
                ("SNAPFS__SERVICE__HTTP_PORT", "6333"),
            ]),
        )
        .unwrap();
        assert_eq!(config.api_key.as_deref(), Some("12345"));
        assert_eq!(config.http.unwrap().port(), 6333);
    }

    #[test]
    fn listener_limits_have_defaults_and_keys_and_refuse_zero() {
        let config = load(&Flags::default(), vec![]).unwrap();
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.grpc_max_concurrent_streams, 32);
        assert_eq!(config.grpc_max_concurrent_calls, 64);
        assert_eq!(config.connection_auth_timeout.as_secs(), 30);
        let config = load(
            &Flags::default(),
            env(&[
                ("SNAPFS__SERVICE__MAX_CONNECTIONS", "8"),
                ("SNAPFS__SERVICE__CONNECTION_AUTH_TIMEOUT_SECS", "2.5"),
                ("SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_STREAMS", "4"),
                ("SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_CALLS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.max_connections, 8);
        assert_eq!(config.connection_auth_timeout.as_millis(), 2500);
        assert_eq!(config.grpc_max_concurrent_streams, 4);
        assert_eq!(config.grpc_max_concurrent_calls, 3);
        for key in [
            "SNAPFS__SERVICE__MAX_CONNECTIONS",
            "SNAPFS__SERVICE__CONNECTION_AUTH_TIMEOUT_SECS",
            "SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_STREAMS",
            "SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_CALLS",
        ] {
            let err = load(&Flags::default(), env(&[(key, "0")])).unwrap_err();
            assert!(format!("{err:#}").contains("service."), "{key}: {err:#}");
        }
    }

    #[test]
    fn rejects_unsafe_or_wrong_settings() {
        let no_key = Flags {
            http: Some("127.0.0.1:6333".parse().unwrap()),
            ..Flags::default()
        };
        assert!(
            load(&no_key, vec![])
                .unwrap_err()
                .to_string()
                .contains("needs an API key")
        );
        let remote = Flags {
            http: Some("0.0.0.0:6333".parse().unwrap()),
            api_key: Some("k".into()),
            ..Flags::default()
        };
        assert!(
            load(&remote, vec![])
                .unwrap_err()
                .to_string()
                .contains("not a loopback")
        );
        assert!(load(&Flags::default(), env(&[("SNAPFS__STORAGE__BOGUS", "1")])).is_err());
        assert!(
            load(
                &Flags::default(),
                env(&[("SNAPFS__SERVICE__HTTP_PORT", "many")])
            )
            .is_err()
        );
        for bad in ["0", "-5", "never"] {
            let err = load(
                &Flags::default(),
                env(&[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", bad)]),
            )
            .unwrap_err();
            assert!(
                format!("{err:#}").contains("snapshot_max_freeze_secs")
                    || format!("{err:#}").contains("expected a number"),
                "{bad}: {err:#}"
            );
        }
        let ok = load(
            &Flags::default(),
            env(&[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", "2.5")]),
        )
        .unwrap();
        assert_eq!(
            ok.snapshot_max_freeze,
            std::time::Duration::from_millis(2500)
        );
    }

    #[test]
    fn the_grpc_listener_follows_the_tcp_rules() {
        let with_key = |grpc: Option<&str>| Flags {
            grpc: grpc.map(|a| a.parse().unwrap()),
            api_key: Some("k".into()),
            ..Flags::default()
        };
        // Qdrant's key, on the shared host (loopback by default).
        let config = load(
            &with_key(None),
            env(&[("SNAPFS__SERVICE__GRPC_PORT", "6334")]),
        )
        .unwrap();
        assert_eq!(config.grpc, Some("127.0.0.1:6334".parse().unwrap()));
        assert_eq!(config.http, None);
        // The flag wins over the key.
        let config = load(
            &with_key(Some("127.0.0.1:7334")),
            env(&[("SNAPFS__SERVICE__GRPC_PORT", "6334")]),
        )
        .unwrap();
        assert_eq!(config.grpc, Some("127.0.0.1:7334".parse().unwrap()));
        // No key, a non-loopback address, a port shared with HTTP: refused.
        let no_key = Flags {
            grpc: Some("127.0.0.1:6334".parse().unwrap()),
            ..Flags::default()
        };
        let err = load(&no_key, vec![]).unwrap_err().to_string();
        assert!(
            err.contains("gRPC listener") && err.contains("needs an API key"),
            "{err}"
        );
        let err = load(&with_key(Some("0.0.0.0:6334")), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback"), "{err}");
        let allowed = Flags {
            allow_non_loopback: true,
            ..with_key(Some("0.0.0.0:6334"))
        };
        assert_eq!(
            load(&allowed, vec![]).unwrap().grpc,
            Some("0.0.0.0:6334".parse().unwrap())
        );
        let clash = Flags {
            http: Some("127.0.0.1:6334".parse().unwrap()),
            ..with_key(Some("127.0.0.1:6334"))
        };
        assert!(
            load(&clash, vec![])
                .unwrap_err()
                .to_string()
                .contains("cannot share")
        );
    }

    #[test]
    fn fetch_keys() {
        let config = load(&Flags::default(), vec![]).unwrap();
        assert_eq!(config.fetch, crate::fetch::FetchPolicy::default());
        let config = load(
            &Flags::default(),
            env(&[
                (
                    "SNAPFS__STORAGE__FETCH_DENY",
                    "127.0.0.0/8, bad.example.com",
                ),
                ("SNAPFS__STORAGE__FETCH_ALLOW", "10.0.0.0/8"),
                ("SNAPFS__STORAGE__FETCH_HEADER_SECS", "2"),
                ("SNAPFS__STORAGE__FETCH_S3_BUCKETS", "/other/pre/"),
            ]),
        )
        .unwrap();
        assert_eq!(config.fetch.deny.len(), 2);
        assert_eq!(config.fetch.allow.len(), 1);
        assert_eq!(
            config.fetch.header_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(config.fetch.s3_buckets, vec!["other/pre".to_string()]);
        // An empty deny list allows link-local too.
        let config = load(
            &Flags::default(),
            env(&[("SNAPFS__STORAGE__FETCH_DENY", "[]")]),
        )
        .unwrap();
        assert!(config.fetch.deny.is_empty());
        for (key, bad) in [
            ("SNAPFS__STORAGE__FETCH_DENY", "not a host!"),
            ("SNAPFS__STORAGE__FETCH_TOTAL_SECS", "0"),
            ("SNAPFS__STORAGE__FETCH_JSON_MAX_BYTES", "0"),
        ] {
            let err = load(&Flags::default(), env(&[(key, bad)])).unwrap_err();
            assert!(
                format!("{err:#}").contains("fetch_"),
                "{key}={bad}: {err:#}"
            );
        }
    }

    #[test]
    fn repository_storage_keys_read_the_password_and_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let repo_at = |location: &str, extra: &[(&str, &str)]| {
            let mut vars = vec![
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
                    "repository",
                ),
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION",
                    location,
                ),
            ];
            vars.extend_from_slice(extra);
            load(&Flags::default(), env(&vars))
        };
        let repo = |extra: &[(&str, &str)]| repo_at("/srv/repo", extra);
        let path = file.display().to_string();
        let config = repo(&[(
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE",
            &path,
        )])
        .unwrap();
        let repository = config.repository.clone().unwrap();
        assert_eq!(repository.password, "from-file", "the newline is dropped");
        assert_eq!(
            repository.location,
            crate::snapshot::store::repository::Location::Local("/srv/repo".into())
        );
        assert!(config.s3.is_none());
        assert!(!format!("{config:?}").contains("from-file"));
        // An s3: location takes the bucket and prefix from it, the rest from s3_config.
        let config = repo_at(
            "s3:bucket/a/b",
            &[
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD",
                    "inline",
                ),
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL",
                    "http://127.0.0.1:9",
                ),
            ],
        )
        .unwrap();
        match config.repository.unwrap().location {
            crate::snapshot::store::repository::Location::S3(s3) => {
                assert_eq!(s3.bucket.as_deref(), Some("bucket"));
                assert_eq!(s3.prefix, "a/b");
                assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
            }
            other => panic!("{other:?}"),
        }
        // No password anywhere: refused, saying where one may come from.
        if std::env::var("RESTIC_PASSWORD").is_err()
            && std::env::var("RESTIC_PASSWORD_FILE").is_err()
        {
            let err = repo(&[]).unwrap_err();
            assert!(format!("{err:#}").contains("needs a password"), "{err:#}");
        }
        let err = repo(&[(
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_ENV",
            "SNAPFS_NO_SUCH_VARIABLE",
        )])
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("SNAPFS_NO_SUCH_VARIABLE"),
            "{err:#}"
        );
    }

    #[test]
    fn s3_snapshot_storage_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "storage:\n  snapshots_config:\n    snapshots_storage: s3\n    s3_config:\n      bucket: b\n      region: eu-west-1\n      access_key: AKIAFILE\n      secret_key: from-file\n      endpoint_url: http://127.0.0.1:9000\n",
        )
        .unwrap();
        let flags = Flags {
            config_file: Some(file),
            ..Flags::default()
        };
        let config = load(
            &flags,
            env(&[
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY",
                    "from-env",
                ),
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PREFIX",
                    "/backups/",
                ),
                (
                    "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
                    "2",
                ),
            ]),
        )
        .unwrap();
        let s3 = config.s3.clone().unwrap();
        assert_eq!(s3.bucket.as_deref(), Some("b"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.secret_key.as_deref(), Some("from-env"));
        assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.prefix, "backups");
        assert_eq!(s3.parts_in_flight, 2);
        assert_eq!(s3.part_size, crate::snapshot::store::s3::DEFAULT_PART_SIZE);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("from-env") && !shown.contains("AKIAFILE"),
            "{shown}"
        );

        // local is the default; an unknown backend or key is refused.
        assert!(load(&Flags::default(), vec![]).unwrap().s3.is_none());
        let err = load(
            &Flags::default(),
            env(&[(
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
                "gcs",
            )]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("local, s3 or repository"),
            "{err:#}"
        );
        assert!(
            load(
                &Flags::default(),
                env(&[("SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUKET", "x")])
            )
            .is_err()
        );
    }

    /// The serve flags are parsed by clap straight into [`Flags`]: every flag lands
    /// in its field, `--config` in `config_file`, and clap's own rules hold.
    #[test]
    fn serve_flags_parse_into_the_config_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            flags: Flags,
        }
        let parsed = Serve::try_parse_from([
            "serve",
            "--config",
            "/etc/snapfs.yaml",
            "--data-dir",
            "/d",
            "--http",
            "127.0.0.1:6333",
            "--grpc",
            "127.0.0.1:6334",
            "--api-key",
            "k",
            "--allow-non-loopback",
            "--demo",
            "--mount",
            "/m",
            "--storage-snapshot",
            "/s.snapshot",
            "--force",
            "--socket",
            "/d/s.sock",
        ])
        .unwrap()
        .flags;
        assert_eq!(parsed.config_file, Some(PathBuf::from("/etc/snapfs.yaml")));
        assert_eq!(parsed.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(parsed.http, Some("127.0.0.1:6333".parse().unwrap()));
        assert_eq!(parsed.grpc, Some("127.0.0.1:6334".parse().unwrap()));
        assert_eq!(parsed.api_key.as_deref(), Some("k"));
        assert!(parsed.allow_non_loopback && parsed.demo && parsed.force);
        assert_eq!(parsed.mount, Some(PathBuf::from("/m")));
        assert_eq!(parsed.storage_snapshot, Some(PathBuf::from("/s.snapshot")));
        assert_eq!(parsed.socket, Some(PathBuf::from("/d/s.sock")));
        // --force needs --storage-snapshot.
        assert!(Serve::try_parse_from(["serve", "--force"]).is_err());
        // Parsed flags reach the configuration.
        let config = load(&parsed, vec![]).unwrap_err();
        assert!(config.to_string().contains("/etc/snapfs.yaml"), "{config}");
    }
}
