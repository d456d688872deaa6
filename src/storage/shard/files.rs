//! The files around the engine's: the `<id>.clock` beside each shard (its last
//! change and whether the stop was clean), the engine's JSON rewritten with sorted
//! keys so one state is always the same bytes, and the cheap signature that tells
//! whether a load changed anything. Plain file work with no shard state, kept
//! apart from the writer and the freeze.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::TRACKER_JOURNAL;
use crate::storage::error::{Result, StorageError};

pub(super) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ShardClock {
    pub(super) last_change_ns: u64,
    pub(super) clean: bool,
}

/// Give a restored shard (at rest, not open) the last-change time of the snapshot
/// it came from, in whole seconds as archives carry it: a snapshot of the restored
/// state then has the same headers, byte for byte, as the archive restored.
pub fn write_restored_clock(clock_path: &Path, last_change_secs: u64) -> Result<()> {
    write_clock(
        clock_path,
        ShardClock {
            last_change_ns: last_change_secs.saturating_mul(1_000_000_000),
            clean: true,
        },
    )
}

pub(super) fn read_clock(path: &Path) -> Option<ShardClock> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(super) fn write_clock(path: &Path, clock: ShardClock) -> Result<()> {
    let temp = path.with_extension("clock.tmp");
    let bytes = serde_json::to_vec(&clock).map_err(StorageError::from_cause)?;
    fs_err::write(&temp, bytes)?;
    fs_err::rename(&temp, path)?;
    Ok(())
}

/// The engine's own config file in a shard directory (its name is private to the engine).
pub const ENGINE_CONFIG_FILE: &str = "edge_config.json";

/// The engine writes its JSON metadata (`edge_config.json` at every load, each
/// segment's `segment.json` at every flush) with its maps — vector names — in hash
/// order: the same state would give other bytes each time, so a snapshot of an
/// unchanged shard would differ and a load would count as a change. Written again
/// with keys sorted, the same state is always the same bytes. Called only where the
/// engine cannot be writing them: before and after a load, and after our own flushes
/// and optimizations (under the maintenance gate).
pub fn settle_engine_json(shard_dir: &Path) -> Result<()> {
    settle_json_file(&shard_dir.join(ENGINE_CONFIG_FILE))?;
    if let Ok(segments) = std::fs::read_dir(shard_dir.join("segments")) {
        for segment in segments.flatten() {
            settle_json_file(&segment.path().join(SEGMENT_STATE_FILE))?;
        }
    }
    Ok(())
}

/// The segment state file the engine writes in each segment directory.
const SEGMENT_STATE_FILE: &str = "segment.json";

fn settle_json_file(path: &Path) -> Result<()> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    let Ok(bytes) = crate::storage::read_bounded(path, crate::storage::MAX_JSON_FILE) else {
        return Ok(());
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    let settled = serde_json::to_vec(&sorted(value)).expect("plain data");
    if settled != bytes {
        // Replaced by rename, as the engine writes it: never half a file.
        let temp = path.with_extension("json.settling");
        fs_err::write(&temp, &settled)?;
        fs_err::rename(&temp, path)?;
    }
    Ok(())
}

/// What identifies a shard directory's content cheaply: every file's relative path
/// and size, and the content of small files (configs, versions). Timestamps are left
/// out: the engine rewrites unchanged configs at load. Payload trackers' journals
/// are left out as archives leave them out: the engine removes them at every load
/// after a flush, which changes nothing a snapshot holds.
pub(super) fn files_signature(dir: &Path) -> Vec<(PathBuf, u64, Option<Vec<u8>>)> {
    /// Files up to this size are compared by content.
    const SMALL: u64 = 64 * 1024;
    let tracker_journal = std::ffi::OsStr::new(TRACKER_JOURNAL);
    let mut out: Vec<_> = crate::storage::regular_files(dir)
        .into_iter()
        .filter(|(path, _)| path.file_name() != Some(tracker_journal))
        .map(|(path, len)| {
            let content = (len <= SMALL).then(|| std::fs::read(&path).unwrap_or_default());
            (
                path.strip_prefix(dir).unwrap_or(&path).to_path_buf(),
                len,
                content,
            )
        })
        .collect();
    out.sort();
    out
}
