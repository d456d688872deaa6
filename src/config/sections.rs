//! The sections of the YAML file (and of the `SNAPFS__` variables), as serde
//! reads them: every key optional and given Qdrant's name, so a Qdrant config file
//! loads, and unknown keys refused, so a typo is not silently ignored. The S3 and
//! repository sections turn themselves into their stores' settings, and their
//! `Debug` leaves out the secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

use super::lenient::{
    lenient_bool, lenient_number, lenient_path, lenient_string, path_list, string_list,
};
use super::positive_secs;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct SnapfsSection {
    #[serde(deserialize_with = "lenient_path")]
    pub(super) data_dir: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_bool")]
    pub(super) demo: Option<bool>,
    #[serde(deserialize_with = "lenient_path")]
    pub(super) mount: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_bool")]
    pub(super) allow_other: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub(super) group: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) shutdown_grace_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct StorageSection {
    #[serde(deserialize_with = "lenient_path")]
    pub(super) storage_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_path")]
    pub(super) snapshots_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_path")]
    pub(super) temp_path: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) snapshot_max_freeze_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) transfer_stall_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) max_restore_bytes: Option<u64>,
    #[serde(deserialize_with = "lenient_bool")]
    pub(super) require_checksum: Option<bool>,
    #[serde(deserialize_with = "path_list")]
    pub(super) recover_dirs: Option<Vec<PathBuf>>,
    pub(super) snapshots_config: SnapshotsConfigSection,
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
pub(super) struct SnapshotsConfigSection {
    #[serde(deserialize_with = "lenient_string")]
    pub(super) snapshots_storage: Option<String>,
    pub(super) s3_config: Option<S3Section>,
    pub(super) repository: Option<RepositorySection>,
}

/// `storage.snapshots_config.repository` (ours): the restic repository that keeps
/// stored snapshots when `snapshots_storage` is `repository`. Its `Debug` hides the
/// password.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RepositorySection {
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
    pub(super) fn resolve(
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
pub(super) struct S3Section {
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
    pub(super) fn resolve(self) -> crate::snapshot::store::s3::S3Config {
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
pub(super) struct ServiceSection {
    #[serde(deserialize_with = "lenient_path")]
    pub(super) unix_socket: Option<PathBuf>,
    #[serde(deserialize_with = "lenient_string")]
    pub(super) host: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) http_port: Option<u16>,
    /// Qdrant's key for its gRPC port (Qdrant's default is 6334; snapfs's is off).
    #[serde(deserialize_with = "lenient_number")]
    pub(super) grpc_port: Option<u16>,
    /// `--grpc ADDR`: host and port together, whatever `host` says.
    #[serde(skip)]
    pub(super) grpc_flag: Option<SocketAddr>,
    #[serde(deserialize_with = "lenient_string")]
    pub(super) api_key: Option<String>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) max_request_size_mb: Option<usize>,
    #[serde(deserialize_with = "lenient_bool")]
    pub(super) allow_non_loopback: Option<bool>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) max_connections: Option<usize>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) connection_auth_timeout_secs: Option<f64>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) grpc_max_concurrent_streams: Option<u32>,
    #[serde(deserialize_with = "lenient_number")]
    pub(super) grpc_max_concurrent_calls: Option<usize>,
}

impl StorageSection {
    /// `storage.fetch_*`: unset keys keep their defaults; a set `fetch_deny`
    /// replaces the default list (`[]` allows link-local too).
    pub(super) fn fetch_policy(&self) -> anyhow::Result<crate::fetch::FetchPolicy> {
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

pub(super) fn policy_store(
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
