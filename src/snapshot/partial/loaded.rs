//! What the engine's load makes of a state a content-form apply switched in, so
//! that pulls between snapfs peers converge.
//!
//! Loading a shard is not read-only: the engine repairs what it finds on the way
//! (for one, a point deleted in an appendable segment keeps the delete's operation
//! number as its version, and every load rewrites that version to "deleted" in
//! `mutable_id_tracker.versions`). The sender never reloads, so its file keeps the
//! old bytes while the receiver's, right after the apply, holds other ones: compared
//! by content they differ, the next pull sends the file again, the load rewrites it
//! again, and the pulls never answer 304.
//!
//! So, right after a new state opened and before anything else wrote it, every file
//! the load rewrote is remembered with the digest the sender gave it ([`after_open`]).
//! While the file still holds exactly what the load made, the manifest a pull sends
//! names it by the sender's digest ([`as_received`]), and an apply accepts our
//! file where the sender's is expected ([`holds`]): loading the sender's file gives
//! ours. Any later change to the file (an update, an optimization) gives it another
//! digest, and the file is then compared by content again. Kept in memory: after a
//! restart the first pull moves those files once more, and records them again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::ContentManifest;
use super::apply::{Partial, digest_of};
use super::shard_path;
use crate::snapshot::Snapshots;
use crate::snapshot::unpack::TargetFile;
use crate::storage::switch::AfterOpen;

/// A file the load rewrote: its digest and size now, and the sender's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rewritten {
    now: (String, u64),
    sent: (String, u64),
}

/// Shard directory → archive path → what its load rewrote (part of [`Snapshots`]).
#[derive(Default)]
pub struct Rewrites(Mutex<HashMap<PathBuf, HashMap<String, Rewritten>>>);

/// What to run once the new state staged at `staged_dir` for `partial` has been
/// opened where it belongs ([`ShardReplacement::opened`]): take note of the files
/// the load rewrote. Their sizes and modification times are taken now, so that only
/// those the load wrote are read again. Blocking (a `stat` per file).
pub fn after_open(snapshots: &Arc<Snapshots>, staged_dir: &Path, partial: &Partial) -> AfterOpen {
    let target = match partial {
        Partial::Content(target) => target.clone(),
        // Compared by versions, which a load does not change for the receiver.
        Partial::Versions(_) => Vec::new(),
    };
    let before: HashMap<String, Stamp> = target
        .iter()
        .filter_map(|f| {
            Some((
                f.path.clone(),
                stamp(&staged_dir.join(shard_path(&f.path)))?,
            ))
        })
        .collect();
    let snapshots = snapshots.clone();
    Box::new(move |shard_dir: &Path, updates_applied: bool| {
        record(&snapshots, shard_dir, &target, &before, updates_applied)
    })
}

/// A file's size and modification time (ns).
type Stamp = (u64, i128);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    Some((meta.len(), mtime))
}

/// The new state at `shard_dir` has just been opened by the engine and nothing
/// else has written it: remember which files of `target` (the sender's state,
/// every file checked against its digest while staged, when they had the stamps
/// `before`) the load rewrote. `updates_applied`: updates acknowledged during the
/// apply were applied on it already, so its files are not the load's alone and
/// nothing is remembered.
fn record(
    snapshots: &Snapshots,
    shard_dir: &Path,
    target: &[TargetFile],
    before: &HashMap<String, Stamp>,
    updates_applied: bool,
) {
    let mut found = HashMap::new();
    if !updates_applied {
        for file in target {
            let path = shard_dir.join(shard_path(&file.path));
            let now = stamp(&path);
            if now.is_some() && now.as_ref() == before.get(&file.path) {
                continue; // not written since it was checked
            }
            let (Some((size, _)), Some(digest)) = (now, digest_of(snapshots, &path)) else {
                continue; // gone at the load: sent again next time
            };
            if digest != file.sha256 {
                found.insert(
                    file.path.clone(),
                    Rewritten {
                        now: (digest, size),
                        sent: (file.sha256.clone(), file.size),
                    },
                );
            }
        }
    }
    if !found.is_empty() {
        tracing::debug!(
            shard = %shard_dir.display(),
            files = ?found.keys().collect::<Vec<_>>(),
            "the engine's load rewrote files of the applied state"
        );
    }
    let mut all = snapshots.rewrites.0.lock().unwrap();
    if found.is_empty() {
        all.remove(shard_dir);
    } else {
        all.insert(shard_dir.to_path_buf(), found);
    }
}

/// `manifest` (of the shard at `shard_dir`) as the sender of its last applied
/// state describes it: a file that still holds what the load made of the sender's
/// is listed with the sender's digest and size. Its block signatures stay ours
/// (they say where a sender finds our bytes), or go when the sizes differ.
pub fn as_received(snapshots: &Snapshots, shard_dir: &Path, manifest: &mut ContentManifest) {
    let all = snapshots.rewrites.0.lock().unwrap();
    let Some(rewritten) = all.get(shard_dir) else {
        return;
    };
    for entry in &mut manifest.files {
        let Some(file) = rewritten.get(&entry.path) else {
            continue;
        };
        if (entry.hash.as_str(), entry.size) != (file.now.0.as_str(), file.now.1) {
            continue; // changed since the load
        }
        if file.sent.1 != entry.size {
            entry.blocks = None;
        }
        entry.hash = file.sent.0.clone();
        entry.size = file.sent.1;
    }
}

/// Whether our `file` (the shard's own file for `archive_path`, found among its
/// files by the caller) holds the content `sha256`, or what the load made of it
/// (then loading it again keeps it).
/// Blocking (hashes the file, from the digest cache when unchanged).
pub fn holds(
    snapshots: &Snapshots,
    shard_dir: &Path,
    file: &Path,
    archive_path: &str,
    sha256: &str,
) -> bool {
    let Some(ours) = digest_of(snapshots, file) else {
        return false;
    };
    if ours == sha256 {
        return true;
    }
    let all = snapshots.rewrites.0.lock().unwrap();
    all.get(shard_dir)
        .and_then(|rewritten| rewritten.get(archive_path))
        .is_some_and(|file| file.sent.0 == sha256 && file.now.0 == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::partial::ContentEntry;

    fn sha(bytes: &[u8]) -> String {
        use crate::snapshot::digest::{bytes_sha256, hex};
        hex(&bytes_sha256(bytes))
    }

    #[test]
    fn a_file_the_load_rewrote_is_described_as_sent_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::Storage::open(&dir.path().join("storage")).unwrap();
        let snapshots = Snapshots::new(storage);
        let shard = &dir.path().join("shard");
        std::fs::create_dir_all(shard.join("segments/s")).unwrap();
        // The sender's bytes; the load left other ones (same size) in one file.
        let (sent, loaded) = (b"version 2".to_vec(), b"version 0".to_vec());
        std::fs::write(shard.join("segments/s/versions"), &loaded).unwrap();
        std::fs::write(shard.join("segments/s/kept"), b"same").unwrap();
        let target = [
            TargetFile {
                path: "segments/s/files/versions".into(),
                size: sent.len() as u64,
                sha256: sha(&sent),
                copies: None,
            },
            TargetFile {
                path: "segments/s/files/kept".into(),
                size: 4,
                sha256: sha(b"same"),
                copies: None,
            },
        ];
        // Staged as sent; the load then wrote one file.
        std::fs::write(shard.join("segments/s/versions"), &sent).unwrap();
        let opened = after_open(&snapshots, shard, &Partial::Content(target.to_vec()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(shard.join("segments/s/versions"), &loaded).unwrap();
        opened(shard, false);
        let entry = |path: &str, bytes: &[u8]| ContentEntry {
            path: path.into(),
            hash: sha(bytes),
            size: bytes.len() as u64,
            blocks: None,
        };
        let mut manifest = ContentManifest {
            block_size: None,
            files: vec![
                entry("segments/s/files/versions", &loaded),
                entry("segments/s/files/kept", b"same"),
            ],
        };
        as_received(&snapshots, shard, &mut manifest);
        assert_eq!(manifest.files[0].hash, sha(&sent), "named as the sender's");
        assert_eq!(manifest.files[1].hash, sha(b"same"));
        assert!(holds(
            &snapshots,
            shard,
            &shard.join("segments/s/versions"),
            "segments/s/files/versions",
            &sha(&sent)
        ));
        assert!(holds(
            &snapshots,
            shard,
            &shard.join("segments/s/versions"),
            "segments/s/files/versions",
            &sha(&loaded)
        ));
        assert!(!holds(
            &snapshots,
            shard,
            &shard.join("segments/s/versions"),
            "segments/s/files/versions",
            &sha(b"other")
        ));
        assert!(!holds(
            &snapshots,
            shard,
            &shard.join("segments/s/kept"),
            "segments/s/files/kept",
            &sha(&sent)
        ));

        // Changed since the load: compared by content again.
        let changed = b"version 7".to_vec();
        std::fs::write(shard.join("segments/s/versions"), &changed).unwrap();
        let mut manifest = ContentManifest {
            block_size: None,
            files: vec![entry("segments/s/files/versions", &changed)],
        };
        as_received(&snapshots, shard, &mut manifest);
        assert_eq!(manifest.files[0].hash, sha(&changed));
        assert!(!holds(
            &snapshots,
            shard,
            &shard.join("segments/s/versions"),
            "segments/s/files/versions",
            &sha(&sent)
        ));

        // A state with updates applied on top remembers nothing.
        std::fs::write(shard.join("segments/s/versions"), &sent).unwrap();
        let opened = after_open(&snapshots, shard, &Partial::Content(target.to_vec()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(shard.join("segments/s/versions"), &loaded).unwrap();
        opened(shard, true);
        assert!(!holds(
            &snapshots,
            shard,
            &shard.join("segments/s/versions"),
            "segments/s/files/versions",
            &sha(&sent)
        ));
    }
}
