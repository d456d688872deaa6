//! The walk's tests on hand-made archives: sparse and nested entries charged
//! and written as holes, a manifest too large refused, limits shared between
//! restores, cancelling.

use super::*;
use crate::snapshot::tar_header::{Kind, entry_headers};

/// A GNU sparse entry of `real_size` logical bytes whose only data is `data` at
/// offset 0.
fn sparse_entry(path: &str, real_size: u64, data: &[u8]) -> Vec<u8> {
    let stored = data.len() as u64;
    let map = [(0, stored), (real_size, 0)];
    let kind = Kind::Sparse {
        real_size,
        stored,
        map: &map,
    };
    let mut out = entry_headers(path, &kind, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + (padded(stored) - stored) as usize, 0);
    out
}

fn file_entry(path: &str, data: &[u8]) -> Vec<u8> {
    let size = data.len() as u64;
    let mut out = entry_headers(path, &Kind::File { size }, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + (padded(size) - size) as usize, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn limits(logical: u64) -> Limits {
    Limits {
        space: Some(1 << 30),
        logical,
        ..Limits::unbounded_space()
    }
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_sparse_manifest_of_a_terabyte_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = archive(&[sparse_entry(MANIFEST_NAME, 1 << 40, &[b'{'; 512])]);
    assert!(bytes.len() < 4096, "a tiny archive: {}", bytes.len());
    let err = unpack_entries(
        &bytes[..],
        Some(dir.path()),
        &limits(u64::MAX),
        FileDigests::Check,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("must be a plain file of at most"),
        "{err}"
    );
    // A plain manifest over the cap is refused as well.
    let big = archive(&[file_entry(
        MANIFEST_NAME,
        &vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize],
    )]);
    let err = unpack_entries(&big[..], None, &limits(u64::MAX), FileDigests::Check).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    assert!(peak_rss() < 1 << 30, "peak RSS {}", peak_rss());
}

#[test]
fn sparse_entries_are_charged_their_logical_size() {
    // 2^62 logical bytes: years of producing zeros, refused at its header.
    let huge = archive(&[sparse_entry("0/x", 1 << 62, &[1u8; 512])]);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = unpack_entries(
        &huge[..],
        Some(dir.path()),
        &Limits::unbounded_space(),
        FileDigests::Check,
    )
    .unwrap_err();
    assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
    assert!(err.to_string().contains("max_restore_bytes"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // Within the budget it unpacks, holes kept.
    let small = archive(&[sparse_entry("0/y", 64 << 20, &[1u8; 512])]);
    let report = unpack_entries(
        &small[..],
        Some(dir.path()),
        &limits(128 << 20),
        FileDigests::Check,
    )
    .unwrap();
    assert_eq!(report.logical_bytes, 64 << 20);
    let meta = std::fs::metadata(dir.path().join("0/y")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 < 1 << 20);
    // Two such entries exceed a budget that holds one.
    let two = archive(&[
        sparse_entry("1/a", 64 << 20, &[1u8; 512]),
        sparse_entry("1/b", 64 << 20, &[1u8; 512]),
    ]);
    let err = unpack_entries(&two[..], None, &limits(100 << 20), FileDigests::Check).unwrap_err();
    assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
}

#[test]
fn a_nested_sparse_entry_is_charged_and_lands_as_holes() {
    let nested = |logical: u64| {
        let inner = archive(&[sparse_entry("snapshot/files/big", logical, &[7u8; 512])]);
        archive(&[file_entry("0/segments/abc.tar", &inner)])
    };
    // 10 TB declared inside a 5 KB archive: refused, nothing written dense.
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_entries(
        &nested(10 << 40)[..],
        Some(dir.path()),
        &Limits::unbounded_space(),
        FileDigests::Check,
    )
    .unwrap_err();
    assert!(matches!(err, SnapshotError::OverBudget { .. }), "{err}");
    // 256 MiB within the budget: the zeros it is read as become holes.
    let dir = tempfile::tempdir().unwrap();
    unpack_entries(
        &nested(256 << 20)[..],
        Some(dir.path()),
        &limits(1 << 30),
        FileDigests::Check,
    )
    .unwrap();
    let path = dir.path().join("0/segments/abc/big");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 256 << 20);
    assert!(
        meta.blocks() * 512 <= 64 << 10,
        "{} bytes on disk",
        meta.blocks() * 512
    );
}

#[test]
fn restores_at_the_same_time_each_see_what_the_others_declared() {
    use crate::snapshot::limits::Reservation;
    use std::sync::Arc;
    let ledger = Arc::default();
    let bytes = archive(&[file_entry("0/a", &[1u8; 4096])]);
    let with = |reservation: &Arc<Reservation>| Limits {
        space: Some(64 << 10),
        reservation: Some(reservation.clone()),
        ..Limits::unbounded_space()
    };
    let mine = Arc::new(Reservation::new(&ledger));
    unpack_entries(&bytes[..], None, &with(&mine), FileDigests::Check).unwrap();
    // Another restore, started before this one's next archive, declares all but
    // a block of the room: no room for a file and its data block.
    let second = Arc::new(Reservation::new(&ledger));
    let other = Reservation::new(&ledger);
    other.add((64 << 10) - 4096);
    let err = unpack_entries(&bytes[..], None, &with(&second), FileDigests::Check).unwrap_err();
    assert!(
        matches!(err, SnapshotError::NoSpace { free: 4096, .. }),
        "{err}"
    );
    // What was declared before a restore started is out of its measured space.
    let third = Arc::new(Reservation::new(&ledger));
    unpack_entries(&bytes[..], None, &with(&third), FileDigests::Check).unwrap();
}

#[test]
fn a_cancelled_unpacking_stops_at_once() {
    use std::sync::atomic::Ordering;
    // 64 GiB of zeros to produce and hash: minutes, unless stopped midway.
    let bytes = archive(&[sparse_entry("0/x", 64 << 30, &[1u8; 512])]);
    let limits = Limits::unbounded_space();
    let cancel = limits.cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        cancel.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let err = unpack_entries(&bytes[..], None, &limits, FileDigests::Check).unwrap_err();
    stopper.join().unwrap();
    assert!(matches!(err, SnapshotError::Cancelled), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
