//! The two ways a partial archive and the live shard make the new state: Qdrant's
//! (versions: keep our segments the archive still lists, take what it carries) and
//! snapfs's (content: exactly the manifest's files, each from the archive or, with
//! the same digest, from us). Both stage into the new shard directory only.

use super::*;

/// Qdrant's merge: keep our segments the archive still lists (minus files it no
/// longer lists), take every file it carries, take its WAL and clocks. Tracker
/// journals of kept segments go: they repair torn writes of the tracker they were
/// written with, which the archive may replace.
pub(super) fn merge_versions(
    staged: &mut Staged,
    live_dir: &Path,
    ours: &VersionManifest,
    incoming: &Path,
    theirs: &VersionManifest,
) -> Result<()> {
    if !incoming.join("wal").is_dir() {
        return Err(
            SnapshotError::invalid("invalid partial snapshot: it has no wal/ directory").into(),
        );
    }
    // The shard's own files beside its data (edge_config.json, …).
    for entry in fs_err::read_dir(live_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !CLOCK_FILES.contains(&name.as_str()) {
            staged.keep(&entry.path(), &name)?;
        }
    }
    for (id, segment) in &ours.segments {
        let Some(new) = theirs.segments.get(id) else {
            continue; // gone in the new state
        };
        for (path, relative) in files_under(&live_dir.join("segments").join(id)) {
            let listed_by_us = segment.file_versions.contains_key(&relative);
            let dropped = listed_by_us && new.file_version(&relative).is_none();
            let journal = relative.ends_with(TRACKER_JOURNAL)
                && segment
                    .file_versions
                    .contains_key(&relative.replace(TRACKER_JOURNAL, TRACKER));
            let replaced = incoming.join("segments").join(id).join(&relative).is_file();
            if dropped || journal || replaced || relative == SEGMENT_MANIFEST {
                continue;
            }
            staged.keep(&path, &format!("segments/{id}/{relative}"))?;
        }
    }
    // The archive's segment files over ours.
    for id in theirs.segments.keys() {
        for (path, relative) in files_under(&incoming.join("segments").join(id)) {
            if relative == SEGMENT_MANIFEST {
                continue;
            }
            staged.take(&path, &format!("segments/{id}/{relative}"))?;
        }
    }
    staged.take(&incoming.join("wal"), "wal")?;
    for clock in CLOCK_FILES {
        let path = incoming.join(clock);
        if path.is_file() {
            staged.take(&path, clock)?;
        }
    }
    // Every file the new state lists is there now, from the archive or from us.
    for (id, segment) in &theirs.segments {
        let dir = staged.dir.join("segments").join(id);
        for file in segment
            .file_versions
            .keys()
            .map(String::as_str)
            .chain(["segment.json", "version.info"])
        {
            if !dir.join(file).is_file() {
                return Err(SnapshotError::invalid(format!(
                    "the partial snapshot does not fit this shard: segment {id} needs {file}, which neither the archive nor this shard has (was it made against another state? take the manifest again)"
                )).into());
            }
        }
    }
    Ok(())
}

/// Every regular file under `dir`, with its path relative to `dir`.
pub(super) fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    crate::storage::regular_files(dir)
        .into_iter()
        .filter_map(|(path, _)| {
            let relative = path.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            Some((path, relative))
        })
        .collect()
}

/// snapfs's merge: the new state is exactly the manifest's files; each comes from
/// the archive or, with the same digest, from us.
pub(super) fn merge_content(
    staged: &mut Staged,
    live_dir: &Path,
    incoming: &Path,
    target: &[TargetFile],
) -> Result<()> {
    let mut mismatched = Vec::new();
    let live = LiveFiles::list(live_dir);
    // Checked (from the digest cache) and kept per file.
    for file in target {
        let relative = shard_path(&file.path);
        let arrived = incoming.join(&relative);
        let ours = live.path_of(&file.path);
        if let Some(copies) = &file.copies {
            match &ours {
                // Ours is the new version already.
                Some(ours)
                    if digest_of(&staged.snapshots, ours).as_deref()
                        == Some(file.sha256.as_str()) =>
                {
                    staged.keep(ours, &relative)?;
                }
                _ => staged.assemble(&live, &arrived, &relative, file, copies)?,
            }
            continue;
        }
        if arrived.is_file() {
            staged.take(&arrived, &relative)?;
            continue;
        }
        // Ours, or what the engine's load made of it (see `super::loaded`).
        let Some(ours) = ours.filter(|ours| {
            super::super::loaded::holds(&staged.snapshots, live_dir, ours, &file.path, &file.sha256)
        }) else {
            mismatched.push(file.path.clone());
            continue;
        };
        staged.keep(&ours, &relative)?;
    }
    if let Some(first) = mismatched.first() {
        return Err(SnapshotError::invalid(format!(
            "the partial snapshot does not fit this shard: {} file(s) it keeps from the receiver differ here or are missing (first: {first}); it was made against another state: take the manifest again",
            mismatched.len()
        )).into());
    }
    Ok(())
}

/// The highest operation any of the shard's segments holds (`version` in each
/// `segment.json`).
pub(super) fn max_segment_version(shard_dir: &Path) -> Result<u64> {
    let mut max = 0;
    for entry in fs_err::read_dir(shard_dir.join("segments"))? {
        let path = entry?.path().join("segment.json");
        let segment: serde_json::Value =
            crate::storage::read_bounded(&path, crate::storage::MAX_JSON_FILE)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| {
                    SnapshotError::invalid(format!(
                        "the new state's segment has no readable segment.json ({})",
                        path.display()
                    ))
                })?;
        max = max.max(segment["version"].as_u64().unwrap_or(0));
    }
    Ok(max)
}
