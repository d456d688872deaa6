//! Writing a generation: the one archive step both ways in share (tags, parent,
//! the check that every entry was stored, the metrics), and the import of a whole
//! archive file (`snapfs repo import`). A create from a live view is in the
//! store's `create`, which prepares its source and calls the same step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{SnapshotFile, StringList};
use rustic_core::{BackupOptions, SnapshotOptions};

use super::generation::Generation;
use super::recipe::{RECIPE_NAME, Recipe};
use super::source::ArchiveSource;
use super::{HOST, RepositoryStore, repo_error};
use crate::snapshot::store::{StoredSnapshot, check_name};
use crate::snapshot::view::{Recorded, Scope};
use crate::storage::{Result, StorageError};

/// What a generation being written is.
pub(super) struct Written<'a> {
    pub(super) scope: &'a Scope,
    pub(super) name: &'a str,
    pub(super) size: u64,
    pub(super) sha256: &'a str,
    pub(super) recorded: Option<&'a Recorded>,
}

impl RepositoryStore {
    /// Archive `source` as generation `written`, on `parent`
    /// (none: everything is chunked), at `time` (default now); a generation that did
    /// not get every file is removed again and the creation fails. The caller holds
    /// the shared lock.
    pub(super) fn write_generation(
        &self,
        written: &Written<'_>,
        source: &ArchiveSource,
        parent: Option<rustic_core::repofile::SnapshotId>,
        time: Option<rustic_core::jiff::Zoned>,
        started: std::time::Instant,
    ) -> Result<StoredSnapshot> {
        let Written {
            scope,
            name,
            size,
            sha256,
            recorded,
        } = *written;
        let failures = source.failures();
        let files = source.files();
        let mut options = SnapshotOptions::default();
        options.host = Some(HOST.into());
        options.time = time;
        let mut snap = SnapshotFile::from_options(&options)
            .map_err(|e| repo_error("describing a generation", e))?;
        for tag in Generation::tags(scope, name, size, sha256, recorded) {
            let list: StringList = tag.parse().map_err(|_| StorageError::internal("a tag"))?;
            snap.add_tags(vec![list]);
        }
        let mut backup = BackupOptions::default();
        backup.no_scan = true;
        match parent {
            Some(parent) => backup.parent_opts.parents = vec![parent.to_hex().to_string()],
            None => backup.parent_opts.force = true,
        }
        let repo = self
            .open_repo()?
            .to_indexed_ids()
            .map_err(|e| repo_error("reading the snapshot repository's index", e))?;
        let saved = repo
            .archive(&backup, source, snap, &[PathBuf::from("/")])
            .map_err(|e| repo_error("writing a generation", e));
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let saved = saved?;
        let processed = saved.summary.as_ref().map(|s| s.total_files_processed);
        if let Some(failure) = failures.first().or_else(|| {
            (processed != Some(files))
                .then(|| format!("{} of {files} entries were stored", processed.unwrap_or(0)))
        }) {
            tracing::warn!(%failure, "a generation was not stored whole: removing it");
            if let Err(e) = repo.delete_snapshots(&[saved.id]) {
                tracing::warn!(error = %e.display_log(), "could not remove the incomplete generation");
            }
            return Err(StorageError::internal(format!(
                "snapshot {name} was not stored: an entry could not be read"
            )));
        }
        if let Some(summary) = &saved.summary {
            let read = summary.total_bytes_processed;
            let added = summary.data_added_packed;
            let took = started.elapsed();
            let id = match scope {
                Scope::Collection(c) | Scope::Shard(c, _) => c.as_str(),
                Scope::Full => "",
            };
            crate::metrics::generation_stored(id, read, added, took);
            tracing::info!(
                snapshot = %name,
                generation = %&saved.id.to_hex()[..8],
                bytes_covered = read,
                new_bytes_stored = added,
                dedup_ratio = format!("{:.1}", read as f64 / added.max(1) as f64),
                files_new = summary.files_new,
                files_changed = summary.files_changed,
                files_unmodified = summary.files_unmodified,
                seconds = format!("{:.3}", took.as_secs_f64()),
                "generation stored"
            );
        }
        Ok(StoredSnapshot {
            name: name.to_string(),
            size,
            modified: SystemTime::from(saved.time.timestamp()),
            checksum: Some(sha256.to_string()),
        })
    }

    /// Take the snapshot archive `file` in as generation `name` of `scope`, whole
    /// (any archive a restore takes: Qdrant's, or snapfs's from another store), so it
    /// reads back byte for byte; its chunks dedup against everything stored. The
    /// archive is checked first (a tar of safe entries; its embedded manifest when it
    /// has one; `checksum` when given). `Ok(None)`: that very archive is there already.
    pub fn import(
        &self,
        scope: &Scope,
        name: &str,
        file: &Path,
        checksum: Option<&str>,
    ) -> Result<Option<StoredSnapshot>> {
        check_name(name).map_err(|_| {
            StorageError::bad_request(format!(
                "{name} is not a snapshot name (<name>.snapshot, no `/`, not hidden)"
            ))
        })?;
        let started = std::time::Instant::now();
        let opened = fs_err::File::open(file)?;
        let report = crate::snapshot::unpack::verify_archive(
            std::io::BufReader::with_capacity(1 << 20, opened),
            checksum,
        )
        .map_err(|e| StorageError::bad_request(format!("{name} is not taken in: {e}")))?;
        let sha256 = report
            .sha256
            .ok_or_else(|| StorageError::internal("an archive taken in was not hashed"))?;
        let _lock = self.lock(false)?;
        let existing = self.generations()?;
        if let Some(there) = existing
            .iter()
            .find(|g| &g.scope == scope && g.name == name)
        {
            return match there.sha256 == sha256 {
                true => Ok(None),
                false => Err(StorageError::AlreadyInProgress(format!(
                    "the repository holds another snapshot named {name} for that scope"
                ))),
            };
        }
        let frozen = Arc::new(crate::snapshot::layout::FrozenFile::open(file)?);
        if frozen.size != report.archive_bytes {
            return Err(StorageError::bad_request(format!(
                "{name} changed while it was read"
            )));
        }
        let recipe = Recipe::whole(name, name, scope, report.archive_bytes, &sha256);
        let recipe = serde_json::to_vec(&recipe)
            .map_err(|e| StorageError::internal_from("writing a recipe", e))?;
        let modified = std::fs::metadata(file)?.modified()?;
        let time = rustic_core::jiff::Timestamp::try_from(modified)
            .ok()
            .map(|t| t.to_zoned(rustic_core::jiff::tz::TimeZone::UTC));
        let source = ArchiveSource::whole(name, frozen, RECIPE_NAME, recipe, Timestamp::now())?;
        let written = Written {
            scope,
            name,
            size: report.archive_bytes,
            sha256: &sha256,
            recorded: None,
        };
        self.write_generation(&written, &source, None, time, started)
            .map(Some)
    }
}
