#![no_main]
//! The partial-snapshot manifests (`snapshot::partial::manifest`): the body of a
//! `partial/create` request, parsed by `ManifestRequest::parse` into Qdrant's version
//! form (`VersionManifest`) or snapfs's content form (`ContentManifest`).
//!
//! Input: one body, or two joined by a NUL byte (which no JSON text holds). Checks,
//! besides never panicking:
//! - what parses is valid (`validate()` is `Ok`: `parse` promises it) and survives a
//!   round trip (serialized and parsed again, the same manifest, same form);
//! - version form: `files_to_send` picks only files of the current segment, all of
//!   them for a receiver without the segment, and against itself exactly the files
//!   at version 0 (Qdrant's rule); between two parsed manifests, for every segment;
//! - content form: `by_path` has one entry per file (paths are unique), and every
//!   entry with `blocks` has `block_sigs()` of one signature per `BLOCK` of its size.

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use snapfs::snapshot::digest::BLOCK;
use snapfs::snapshot::partial::manifest::{
    ContentManifest, ManifestRequest, VersionManifest, files_to_send,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let first = parts.next().map(check);
    let second = parts.next().map(check);
    if let (
        Some(Some(ManifestRequest::Versions(known))),
        Some(Some(ManifestRequest::Versions(current))),
    ) = (&first, &second)
    {
        between(known, current);
    }
});

fn check(body: &[u8]) -> Option<ManifestRequest> {
    let request = ManifestRequest::parse(body).ok()?;
    match &request {
        ManifestRequest::Versions(v) => versions(v),
        ManifestRequest::Content(c) => content(c),
    }
    Some(request)
}

fn versions(manifest: &VersionManifest) {
    manifest
        .validate()
        .expect("parse returned an invalid manifest");
    let json = serde_json::to_vec(manifest).unwrap();
    assert_eq!(
        ManifestRequest::parse(&json),
        Ok(ManifestRequest::Versions(manifest.clone())),
        "round trip of {}",
        String::from_utf8_lossy(&json)
    );
    for segment in manifest.segments.values() {
        let files: BTreeSet<String> = segment.file_versions.keys().cloned().collect();
        assert_eq!(files_to_send(None, segment), files);
        let zero: BTreeSet<String> = files
            .iter()
            .filter(|f| segment.file_version(f) == Some(0))
            .cloned()
            .collect();
        assert_eq!(files_to_send(Some(segment), segment), zero);
    }
    between(manifest, manifest);
}

/// What a receiver at `known` needs of `current`, segment by segment.
fn between(known: &VersionManifest, current: &VersionManifest) {
    for (id, segment) in &current.segments {
        let theirs = known.segments.get(id);
        for file in files_to_send(theirs, segment) {
            let now = segment
                .file_version(&file)
                .expect("a file to send that the segment does not list");
            if let Some(then) = theirs.and_then(|t| t.file_version(&file)) {
                assert!(
                    then < now || (then == 0 && now == 0),
                    "{file}: {then} -> {now}"
                );
            }
        }
    }
}

fn content(manifest: &ContentManifest) {
    manifest
        .validate()
        .expect("parse returned an invalid manifest");
    let json = serde_json::to_vec(manifest).unwrap();
    assert_eq!(
        ManifestRequest::parse(&json),
        Ok(ManifestRequest::Content(manifest.clone())),
        "round trip of {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(manifest.by_path().len(), manifest.files.len());
    for entry in &manifest.files {
        if entry.blocks.is_some() {
            let sigs = entry
                .block_sigs()
                .expect("validated blocks that do not parse");
            assert_eq!(
                sigs.len() as u64,
                entry.size.div_ceil(BLOCK),
                "{}",
                entry.path
            );
        }
    }
}
