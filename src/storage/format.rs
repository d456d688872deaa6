//! The storage directory's format stamp, `<storage_path>/format.json`: the layout
//! version of what is on disk (the collections' files, the engine's shards, the
//! pending logs), and which snapfs wrote it first and opened it last.
//!
//! An upgrade keeps the data directory: a newer snapfs opens an older format (and
//! migrates it, when a format change ever needs that, before anything else reads
//! the directory). A downgrade is refused before anything is touched, because an
//! older engine could misread files it does not know. A directory from before
//! the stamp existed is format 1, the only one so far. docs/OPERATIONS.md,
//! "Upgrades", says the same for users.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Result, StorageError};

/// The layout this build reads and writes. Bump it with any change an older
/// snapfs could misread (a new engine version included), and add the migration.
pub const STORAGE_FORMAT: u32 = 1;
pub const STAMP_FILE: &str = "format.json";
/// The engine whose files the shards are; informative (the format number decides).
const ENGINE: &str = "qdrant-edge 0.9.0";
/// A stamp is about 150 bytes: anything far larger is not one.
const MAX_STAMP: u64 = 4096;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Stamp {
    format: u32,
    engine: String,
    created_by: String,
    last_opened_by: String,
}

/// Refuse a directory of a newer format, then record this snapfs as the last to
/// open it (creating the stamp for a new or pre-stamp directory).
pub fn check_and_stamp(storage_path: &Path) -> Result<()> {
    let path = storage_path.join(STAMP_FILE);
    let this = env!("CARGO_PKG_VERSION").to_string();
    let created_by = match super::read_bounded(&path, MAX_STAMP) {
        Ok(bytes) => {
            let stamp: Stamp = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::internal_from(
                    format!(
                        "{} is not a snapfs format stamp (move it aside to have it rewritten)",
                        path.display()
                    ),
                    e,
                )
            })?;
            if stamp.format > STORAGE_FORMAT {
                return Err(StorageError::internal(format!(
                    "{} holds storage format {} (last opened by snapfs {:?}); this snapfs {this} reads up to format {STORAGE_FORMAT}: run that snapfs or a newer one, or restore its snapshots into a fresh data directory",
                    storage_path.display(),
                    stamp.format,
                    stamp.last_opened_by
                )));
            }
            if stamp.last_opened_by == this && stamp.format == STORAGE_FORMAT {
                return Ok(());
            }
            if stamp.last_opened_by != this {
                tracing::info!(from = ?stamp.last_opened_by, to = %this, format = STORAGE_FORMAT, "the data directory was last opened by another snapfs version");
            }
            stamp.created_by
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => this.clone(),
        Err(e) => return Err(e.into()),
    };
    let stamp = Stamp {
        format: STORAGE_FORMAT,
        engine: ENGINE.into(),
        created_by,
        last_opened_by: this,
    };
    let text = serde_json::to_vec_pretty(&stamp).map_err(StorageError::from_cause)?;
    super::write_atomically(&path, &text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        check_and_stamp(dir.path()).unwrap();
        let written: Stamp =
            serde_json::from_slice(&std::fs::read(dir.path().join(STAMP_FILE)).unwrap()).unwrap();
        assert_eq!(written.format, STORAGE_FORMAT);
        assert_eq!(written.last_opened_by, env!("CARGO_PKG_VERSION"));

        let newer =
            r#"{"format": 99, "engine": "x", "created_by": "9.0.0", "last_opened_by": "9.1.0"}"#;
        std::fs::write(dir.path().join(STAMP_FILE), newer).unwrap();
        let err = check_and_stamp(dir.path()).unwrap_err().to_string();
        assert!(err.contains("format 99") && err.contains("9.1.0"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(STAMP_FILE)).unwrap(),
            newer
        );
    }

    #[test]
    fn an_older_version_of_the_same_format_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let older = r#"{"format": 1, "engine": "qdrant-edge 0.9.0", "created_by": "0.0.1", "last_opened_by": "0.0.2"}"#;
        std::fs::write(dir.path().join(STAMP_FILE), older).unwrap();
        check_and_stamp(dir.path()).unwrap();
        let written: Stamp =
            serde_json::from_slice(&std::fs::read(dir.path().join(STAMP_FILE)).unwrap()).unwrap();
        assert_eq!(written.created_by, "0.0.1");
        assert_eq!(written.last_opened_by, env!("CARGO_PKG_VERSION"));
    }

    /// Not a stamp (garbage, or far too large to be one): refused, left as it was.
    #[test]
    fn what_is_not_a_stamp_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STAMP_FILE);
        for content in [b"not json".to_vec(), vec![b' '; MAX_STAMP as usize + 1]] {
            std::fs::write(&path, &content).unwrap();
            assert!(check_and_stamp(dir.path()).is_err());
            assert_eq!(std::fs::read(&path).unwrap(), content);
        }
    }
}
