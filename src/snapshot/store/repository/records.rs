//! Records (small JSON documents the store keeps for others, such as a followed
//! cluster's manifests): each is a restic snapshot of one file, told apart from
//! generations by its own tag, so the restic CLI lists and keeps them like any
//! other snapshot.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{SnapshotFile, StringList};
use rustic_core::{BackupOptions, SnapshotOptions, TreeId};

use super::source::ArchiveSource;
use super::{HOST, RepositoryStore, repo_error};
use crate::storage::{Result, StorageError};

/// A record's restic snapshot carries this tag (not [`super::TAG`]: it is no generation).
const RECORD_TAG: &str = "snapfs-record";

/// A record, as its tags name it.
pub(super) struct RecordSnapshot {
    pub(super) id: rustic_core::repofile::SnapshotId,
    pub(super) tree: TreeId,
    group: String,
    pub(super) name: String,
}

impl RecordSnapshot {
    fn of(snap: &SnapshotFile) -> Option<RecordSnapshot> {
        if !snap.tags.iter().any(|t| t == RECORD_TAG) {
            return None;
        }
        let tag = |key: &str| {
            snap.tags
                .iter()
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        };
        Some(RecordSnapshot {
            id: snap.id,
            tree: snap.tree,
            group: tag("group")?,
            name: tag("record")?,
        })
    }
}

impl RepositoryStore {
    pub(super) fn records(&self, group: &str) -> Result<Vec<RecordSnapshot>> {
        let snaps = self
            .open_repo()?
            .get_all_snapshots()
            .map_err(|e| repo_error("listing the snapshot repository", e))?;
        Ok(snaps
            .iter()
            .filter_map(RecordSnapshot::of)
            .filter(|r| r.group == group)
            .collect())
    }

    /// Write record `name` of `group` as a restic snapshot of one file, `<name>.json`;
    /// the records it replaces are removed after it is written. The caller holds the
    /// shared lock.
    pub(super) fn write_record(&self, group: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let file = format!("{name}.json");
        let source = ArchiveSource::single(&file, bytes.to_vec(), Timestamp::now());
        let mut options = SnapshotOptions::default();
        options.host = Some(HOST.into());
        let mut snap = SnapshotFile::from_options(&options)
            .map_err(|e| repo_error("describing a record", e))?;
        for tag in [
            RECORD_TAG.to_string(),
            format!("group={group}"),
            format!("record={name}"),
        ] {
            let list: StringList = tag.parse().map_err(|_| StorageError::internal("a tag"))?;
            snap.add_tags(vec![list]);
        }
        let mut backup = BackupOptions::default();
        backup.no_scan = true;
        backup.parent_opts.force = true;
        let older = self.records(group)?;
        let repo = self
            .open_repo()?
            .to_indexed_ids()
            .map_err(|e| repo_error("reading the snapshot repository's index", e))?;
        let saved = repo
            .archive(&backup, &source, snap, &[PathBuf::from("/")])
            .map_err(|e| repo_error("writing a record", e));
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let saved = saved?;
        let stored = saved.summary.as_ref().map(|s| s.total_files_processed);
        if stored != Some(1) || source.failures().first().is_some() {
            let _ = repo.delete_snapshots(&[saved.id]);
            return Err(StorageError::internal(format!(
                "{group} record {name} was not stored"
            )));
        }
        let replaced: Vec<_> = older
            .iter()
            .filter(|r| r.name == name && r.id != saved.id)
            .map(|r| r.id)
            .collect();
        if !replaced.is_empty() {
            repo.delete_snapshots(&replaced)
                .map_err(|e| repo_error("removing a replaced record", e))?;
        }
        Ok(())
    }
}
