//! The layers under the flags: the YAML file and the `SNAPFS__` environment
//! variables are merged as one JSON tree (so both reach the same serde structs and
//! the same key checks), the flags are laid over the result, and `resolve` turns
//! it into a [`Config`] with its defaults filled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::lenient::null_as_default;
use super::sections::{S3Section, ServiceSection, SnapfsSection, StorageSection};
use super::{
    Config, DEFAULT_CONNECTION_AUTH_TIMEOUT_SECS, DEFAULT_GRPC_MAX_CONCURRENT_CALLS,
    DEFAULT_GRPC_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_SIZE_MB,
    DEFAULT_SHUTDOWN_GRACE_SECS, DEFAULT_SNAPSHOT_MAX_FREEZE_SECS, DEFAULT_TRANSFER_STALL_SECS,
    ENV_PREFIX, Flags, positive_secs,
};

/// The file/env layers, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ConfigLayers {
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

pub(super) fn read_yaml(path: &Path) -> anyhow::Result<Value> {
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
pub(super) fn overlay_env(
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

pub(super) fn apply_flags(layers: &mut ConfigLayers, flags: &Flags) {
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
    pub(super) fn resolve(self) -> anyhow::Result<Config> {
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
