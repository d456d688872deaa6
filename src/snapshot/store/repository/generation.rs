//! A generation as its restic tags describe it: the tags written on one and read
//! back (scope, name, size, SHA-256, what the state held), and the listing of the
//! repository's generations from them. Listing reads tags only, never a tree, so
//! it stays cheap however large the snapshots are.

use std::collections::HashMap;
use std::time::SystemTime;

use rustic_core::TreeId;
use rustic_core::repofile::SnapshotFile;

use super::{RepositoryStore, TAG, repo_error};
use crate::snapshot::store::{StoredDetails, StoredSnapshot, check_name, not_found};
use crate::snapshot::view::{Recorded, Scope};
use crate::storage::Result;
use crate::storage::names::url_segment;

/// One generation, as its tags describe it.
#[derive(Debug, Clone)]
pub(super) struct Generation {
    pub(super) id: rustic_core::repofile::SnapshotId,
    pub(super) tree: TreeId,
    pub(super) scope: Scope,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) time: SystemTime,
    summary: Option<rustic_core::repofile::SnapshotSummary>,
    /// What the state held (`points=`, `config=` tags; collection scopes).
    points: Option<u64>,
    config_sha256: Option<String>,
    tags: Vec<String>,
}

impl Generation {
    pub(super) fn stored(&self) -> StoredSnapshot {
        StoredSnapshot {
            name: self.name.clone(),
            size: self.size,
            modified: self.time,
            checksum: Some(self.sha256.clone()),
        }
    }

    /// From a restic snapshot's tags; `None` for one snapfs did not write.
    fn of(snap: &SnapshotFile) -> Option<Generation> {
        let mut tags: HashMap<&str, &str> = HashMap::new();
        let mut ours = false;
        for tag in snap.tags.iter() {
            match tag.split_once('=') {
                Some((key, value)) => {
                    tags.insert(key, value);
                }
                None => ours |= tag == TAG,
            }
        }
        if !ours {
            return None;
        }
        let decode = |v: &str| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        };
        let scope = match *tags.get("scope")? {
            "collection" => Scope::Collection(decode(tags.get("collection")?)?),
            "shard" => Scope::Shard(
                decode(tags.get("collection")?)?,
                tags.get("shard")?.parse().ok()?,
            ),
            "full" => Scope::Full,
            _ => return None,
        };
        let sha256 = tags.get("sha256")?.to_string();
        if sha256.len() != 64 {
            return None;
        }
        Some(Generation {
            id: snap.id,
            tree: snap.tree,
            scope,
            name: decode(tags.get("name")?)?,
            size: tags.get("size")?.parse().ok()?,
            sha256,
            time: SystemTime::from(snap.time.timestamp()),
            summary: snap.summary.clone(),
            points: tags.get("points").and_then(|v| v.parse().ok()),
            config_sha256: tags
                .get("config")
                .filter(|v| v.len() == 64)
                .map(|v| v.to_string()),
            tags: snap.tags.iter().cloned().collect(),
        })
    }

    pub(super) fn details(&self) -> StoredDetails {
        let summary = self.summary.clone().unwrap_or_default();
        StoredDetails {
            name: self.name.clone(),
            id: self.id.to_hex().to_string(),
            bytes_covered: summary.total_bytes_processed,
            bytes_added: summary.data_added_packed,
            files_new: summary.files_new,
            files_changed: summary.files_changed,
            files_unmodified: summary.files_unmodified,
            seconds: summary.total_duration,
            points: self.points,
            config_sha256: self.config_sha256.clone(),
            tags: self.tags.clone(),
        }
    }

    pub(super) fn tags(
        scope: &Scope,
        name: &str,
        size: u64,
        sha256: &str,
        recorded: Option<&Recorded>,
    ) -> Vec<String> {
        let mut tags = vec![TAG.to_string()];
        match scope {
            Scope::Collection(c) => {
                tags.push("scope=collection".into());
                tags.push(format!("collection={}", url_segment(c)));
            }
            Scope::Shard(c, id) => {
                tags.push("scope=shard".into());
                tags.push(format!("collection={}", url_segment(c)));
                tags.push(format!("shard={id}"));
            }
            Scope::Full => tags.push("scope=full".into()),
        }
        tags.push(format!("name={}", url_segment(name)));
        tags.push(format!("size={size}"));
        tags.push(format!("sha256={sha256}"));
        if let Some(recorded) = recorded {
            tags.push(format!("points={}", recorded.points));
            tags.push(format!("config={}", recorded.config_sha256));
        }
        tags
    }
}

impl RepositoryStore {
    pub(super) fn generations(&self) -> Result<Vec<Generation>> {
        let snaps = self
            .open_repo()?
            .get_all_snapshots()
            .map_err(|e| repo_error("listing the snapshot repository", e))?;
        Ok(snaps.iter().filter_map(Generation::of).collect())
    }

    /// The generations of `scope`, sorted by name.
    pub(super) fn generations_of(&self, scope: &Scope) -> Result<Vec<Generation>> {
        let mut of: Vec<Generation> = self
            .generations()?
            .into_iter()
            .filter(|g| &g.scope == scope)
            .collect();
        of.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(of)
    }

    pub(super) fn find(&self, scope: &Scope, name: &str) -> Result<Generation> {
        check_name(name)?;
        self.generations()?
            .into_iter()
            .find(|g| &g.scope == scope && g.name == name)
            .ok_or_else(|| not_found(name))
    }
}
