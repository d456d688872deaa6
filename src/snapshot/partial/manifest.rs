//! The two forms of a shard's partial-snapshot manifest, and the rules that pick
//! what a partial archive carries.
//!
//! - [`VersionManifest`]: Qdrant's `SnapshotManifest`, as `GET …/partial/manifest`
//!   answers it and qdrant-edge's `snapshot_manifest()` returns it: per segment, its
//!   version and every file's version (`null`: the segment's). No hashes: a file is
//!   sent when the receiver lacks it or its version is newer ([`files_to_send`]).
//! - [`ContentManifest`]: every file of the shard archive with its size and SHA-256
//!   (the paths and digests of `snapfs-manifest.json`). A file is sent when its
//!   content differs, whatever the versions say: what a snapfs peer uses.
//!
//! A request body is told apart by shape ([`ManifestRequest::parse`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::snapshot::digest::{BLOCK, BlockSig, parse_blocks};

/// Qdrant's version-based manifest of a shard, keyed by segment id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionManifest {
    pub segments: BTreeMap<String, SegmentVersions>,
}

/// One segment's entry: its version and its files' versions (`None`: the segment's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentVersions {
    pub segment_id: String,
    pub segment_version: u64,
    pub file_versions: BTreeMap<String, Option<u64>>,
}

impl SegmentVersions {
    /// The version of `file` (its own, or the segment's), `None` if not listed.
    pub fn file_version(&self, file: &str) -> Option<u64> {
        self.file_versions
            .get(file)
            .map(|version| version.unwrap_or(self.segment_version))
    }
}

impl VersionManifest {
    /// Qdrant's consistency rules: each entry is keyed by its own id, names plain
    /// relative paths, and no file is newer than its segment.
    pub fn validate(&self) -> Result<(), String> {
        for (id, segment) in &self.segments {
            if *id != segment.segment_id {
                return Err(format!(
                    "segment {id} holds the manifest of segment {}",
                    segment.segment_id
                ));
            }
            check_segment_id(id)?;
            for (file, version) in &segment.file_versions {
                check_relative(file)
                    .map_err(|why| format!("segment {id}, file {file:?}: {why}"))?;
                let version = version.unwrap_or(segment.segment_version);
                if version > segment.segment_version {
                    return Err(format!(
                        "file {id}/{file} is newer than its segment ({version} > {})",
                        segment.segment_version
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The files of `current` a receiver whose segment is `known` (`None`: it has no
/// such segment) needs: those it does not list, those newer than its version, and
/// those at version 0 on both sides (Qdrant cannot tell an empty segment from one
/// with operation 0 applied, so it always sends them).
pub fn files_to_send(
    known: Option<&SegmentVersions>,
    current: &SegmentVersions,
) -> BTreeSet<String> {
    let mut send = BTreeSet::new();
    for file in current.file_versions.keys() {
        let now = current
            .file_version(file)
            .unwrap_or(current.segment_version);
        let needed = match known.and_then(|k| k.file_version(file)) {
            None => true,
            Some(theirs) => theirs < now || (theirs == 0 && now == 0),
        };
        if needed {
            send.insert(file.clone());
        }
    }
    send
}

/// Content form: every file of a shard archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentManifest {
    /// The block size of the entries' `blocks` (snapfs's [`BLOCK`]); absent when no
    /// entry has blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    pub files: Vec<ContentEntry>,
}

/// A file of a shard archive: its path in the archive, SHA-256 (lowercase hex) and
/// logical size; for files of more than one block, every block's hash (16 hex
/// digits of rolling checksum and 16 of hash, or `.` for a block of zeros,
/// concatenated), so a sender can find the receiver's blocks in what it sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentEntry {
    pub path: String,
    pub hash: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<String>,
}

impl ContentEntry {
    /// The block signatures, one per block (`None`: the entry lists none, or the
    /// list is not well formed).
    pub fn block_sigs(&self) -> Option<Vec<BlockSig>> {
        parse_blocks(self.blocks.as_deref()?)
    }
}

impl ContentManifest {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(size) = self.block_size
            && size != BLOCK
        {
            return Err(format!(
                "block_size must be {BLOCK} (snapfs's block), got {size}"
            ));
        }
        let mut seen = BTreeSet::new();
        for entry in &self.files {
            check_relative(&entry.path).map_err(|why| format!("file {:?}: {why}", entry.path))?;
            if !(entry.hash.len() == 64 && entry.hash.bytes().all(|b| b.is_ascii_hexdigit())) {
                return Err(format!(
                    "file {:?}: `hash` must be a SHA-256 (64 hex digits)",
                    entry.path
                ));
            }
            if let Some(blocks) = &entry.blocks {
                if self.block_size.is_none() {
                    return Err(format!(
                        "file {:?} lists blocks but the manifest has no block_size",
                        entry.path
                    ));
                }
                let want = entry.size.div_ceil(BLOCK) as usize;
                if parse_blocks(blocks).is_none_or(|tokens| tokens.len() != want) {
                    return Err(format!(
                        "file {:?}: `blocks` must hold {want} block signatures (24 hex digits, or `.` for zeros)",
                        entry.path
                    ));
                }
            }
            if !seen.insert(entry.path.as_str()) {
                return Err(format!("file {:?} is listed twice", entry.path));
            }
        }
        Ok(())
    }

    /// Entries by path.
    pub fn by_path(&self) -> BTreeMap<&str, &ContentEntry> {
        self.files.iter().map(|e| (e.path.as_str(), e)).collect()
    }
}

/// A `partial/create` request body.
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestRequest {
    Versions(VersionManifest),
    Content(ContentManifest),
}

impl ManifestRequest {
    /// `{"files": [...]}` is the content form; any other object is Qdrant's (`{}`:
    /// the receiver has nothing, send everything).
    pub fn parse(body: &[u8]) -> Result<ManifestRequest, String> {
        let text = if body.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            body
        };
        let value: Value =
            serde_json::from_slice(text).map_err(|e| format!("the manifest is not JSON: {e}"))?;
        let Value::Object(object) = &value else {
            return Err("the manifest must be a JSON object".into());
        };
        if object.get("files").is_some_and(Value::is_array) {
            let manifest: ContentManifest = serde_json::from_value(value)
                .map_err(|e| format!("not a content manifest ({{\"files\": [{{\"path\", \"hash\", \"size\"}}]}}): {e}"))?;
            manifest.validate()?;
            return Ok(ManifestRequest::Content(manifest));
        }
        let manifest: VersionManifest = serde_json::from_value(value).map_err(|e| {
            format!("not a snapshot manifest ({{\"<segment id>\": {{\"segment_id\", \"segment_version\", \"file_versions\"}}}}): {e}")
        })?;
        manifest
            .validate()
            .map_err(|why| format!("invalid snapshot manifest: {why}"))?;
        Ok(ManifestRequest::Versions(manifest))
    }
}

/// A segment id names a directory: a plain name.
fn check_segment_id(id: &str) -> Result<(), String> {
    let plain = !id.is_empty()
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(format!("segment id {id:?} is not a plain name"))
    }
}

fn check_relative(path: &str) -> Result<(), String> {
    super::super::unpack::check_plain_relative(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn segment(version: u64, files: &[(&str, Option<u64>)]) -> SegmentVersions {
        SegmentVersions {
            segment_id: "s".into(),
            segment_version: version,
            file_versions: files.iter().map(|(f, v)| (f.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn files_to_send_follows_the_version_rule() {
        let current = segment(
            5,
            &[("a", Some(3)), ("b", None), ("c", Some(0)), ("d", Some(2))],
        );
        // Unknown segment: everything.
        assert_eq!(files_to_send(None, &current).len(), 4);
        let known = segment(4, &[("a", Some(3)), ("b", None), ("c", Some(0))]);
        let send = files_to_send(Some(&known), &current);
        // a: same version; b: 4 < 5; c: 0 on both sides; d: unknown.
        assert_eq!(
            send,
            ["b", "c", "d"].into_iter().map(String::from).collect()
        );
        let same = segment(
            5,
            &[("a", Some(3)), ("b", None), ("c", Some(1)), ("d", Some(2))],
        );
        // c is 1 there, 0 here: not newer, not both 0.
        assert!(files_to_send(Some(&same), &current).is_empty());
    }

    #[test]
    fn requests_are_told_apart_by_shape() {
        assert_eq!(
            ManifestRequest::parse(b"").unwrap(),
            ManifestRequest::Versions(VersionManifest::default())
        );
        let fixture = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/qdrant-1.18.3/partial/base.manifest.json"),
        )
        .unwrap();
        let ManifestRequest::Versions(versions) = ManifestRequest::parse(&fixture).unwrap() else {
            panic!("Qdrant's manifest is the version form")
        };
        assert_eq!(versions.segments.len(), 2);
        // Round trip: the same JSON value as Qdrant wrote.
        let original: Value = serde_json::from_slice(&fixture).unwrap();
        assert_eq!(serde_json::to_value(&versions).unwrap(), original);
        let content = json!({"files": [{"path": "wal/open-1", "hash": "a".repeat(64), "size": 3}]});
        let with_blocks = json!({"block_size": BLOCK, "files": [{"path": "w", "hash": "a".repeat(64), "size": BLOCK + 1, "blocks": format!("{}.", "0".repeat(24))}]});
        assert!(ManifestRequest::parse(with_blocks.to_string().as_bytes()).is_ok());
        assert!(matches!(
            ManifestRequest::parse(content.to_string().as_bytes()).unwrap(),
            ManifestRequest::Content(_)
        ));
    }

    #[test]
    fn bad_manifests_are_refused_with_the_cause() {
        let cases = [
            (json!([1, 2]), "JSON object"),
            (
                json!({"x": {"segment_id": "y", "segment_version": 1, "file_versions": {}}}),
                "holds the manifest of segment",
            ),
            (
                json!({"x": {"segment_id": "x", "segment_version": 1, "file_versions": {"f": 2}}}),
                "newer than its segment",
            ),
            (
                json!({"x": {"segment_id": "x", "segment_version": 1, "file_versions": {"../f": 1}}}),
                "`..`",
            ),
            (
                json!({"..": {"segment_id": "..", "segment_version": 1, "file_versions": {}}}),
                "plain name",
            ),
            (
                json!({"x": {"segment_version": 1}}),
                "not a snapshot manifest",
            ),
            (
                json!({"files": [{"path": "/etc/passwd", "hash": "a".repeat(64), "size": 1}]}),
                "absolute",
            ),
            (
                json!({"files": [{"path": "a", "hash": "xyz", "size": 1}]}),
                "SHA-256",
            ),
            (
                json!({"files": [{"path": "a", "hash": "a".repeat(64), "size": 1}, {"path": "a", "hash": "b".repeat(64), "size": 1}]}),
                "twice",
            ),
        ];
        for (body, expected) in cases {
            let err = ManifestRequest::parse(body.to_string().as_bytes()).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        assert!(
            ManifestRequest::parse(b"{not json")
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
