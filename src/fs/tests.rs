//! The filesystem core without a kernel.

use super::*;
use crate::storage::Storage;

fn settle(storage: &Storage, name: &str) {
    let collection = storage.collection(name).unwrap();
    while collection.stats().unwrap().optimizing_shards > 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn read_all(fs: &SnapFs, fh: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 100_000];
    loop {
        let mut got = 0;
        fs.read(fh, out.len() as u64, &mut buf, |data| {
            got = data.len();
            out.extend_from_slice(data);
        })
        .unwrap();
        if got == 0 {
            return out;
        }
    }
}

/// The core without a kernel: a live file's attributes match the bytes its
/// handle reads, hold still while nothing changes, and move after an update.
#[tokio::test(flavor = "multi_thread")]
async fn live_file_attributes_match_reads_and_follow_changes() {
    let temp = tempfile::tempdir().unwrap();
    let storage = Storage::open(&temp.path().join("storage")).unwrap();
    crate::demo::create_demo_collection(&storage).await.unwrap();
    let fs = Arc::new(SnapFs::new(
        crate::snapshot::Snapshots::new(storage.clone()),
        temp.path().join("snapshots"),
        local_store(&temp),
    ));
    let core = fs.clone();
    let settled = storage.clone();
    let (ino, before) = tokio::task::spawn_blocking(move || {
        settle(&settled, "demo");
        let live = core.lookup(ROOT_INO, namespace::LIVE).unwrap();
        assert_eq!(live.kind, FileKind::Directory);
        let attr = core.lookup(live.ino, "demo.snapshot").unwrap();
        assert_eq!(
            core.getattr(attr.ino, None).unwrap(),
            attr,
            "unchanged state, same attributes"
        );
        let opened = core.open(attr.ino, false).unwrap();
        assert!(
            !opened.direct_io && !opened.keep_cache,
            "the first state takes the cache"
        );
        assert_eq!(
            core.getattr(attr.ino, Some(opened.fh)).unwrap().size,
            attr.size
        );
        let bytes = read_all(&core, opened.fh);
        assert_eq!(bytes.len() as u64, attr.size);
        core.release(opened.fh);
        assert!(matches!(
            core.read(opened.fh, 0, &mut [0u8; 8], |_| {}),
            Err(FsError::BadHandle)
        ));
        assert!(matches!(
            core.open(attr.ino, true),
            Err(FsError::ReadOnly(_))
        ));
        assert_eq!(
            core.unlink(live.ino, "demo.snapshot")
                .unwrap_err()
                .errno()
                .0,
            libc::EROFS
        );
        assert!(matches!(
            core.lookup(live.ino, "nope.snapshot"),
            Err(FsError::NotFound)
        ));
        (attr.ino, attr)
    })
    .await
    .unwrap();

    let point = serde_json::json!([{"id": 999_999, "vector": vec![0.5f32; 64]}]);
    let collection = storage.collection("demo").unwrap();
    collection
        .upsert(serde_json::from_value(point).unwrap(), true)
        .await
        .unwrap();
    let after = tokio::task::spawn_blocking(move || fs.getattr(ino, None).unwrap())
        .await
        .unwrap();
    assert!(after.mtime > before.mtime, "an update moves the mtime");
    storage.shutdown();
}

/// Only one state at a time reads through a live file's page cache.
#[test]
fn page_cache_is_shared_only_by_one_state() {
    let temp = tempfile::tempdir().unwrap();
    let storage = Storage::open(&temp.path().join("storage")).unwrap();
    let fs = SnapFs::new(
        crate::snapshot::Snapshots::new(storage.clone()),
        temp.path().join("snapshots"),
        local_store(&temp),
    );
    let (s1, s2) = ([1u8; 32], [2u8; 32]);
    assert_eq!(
        fs.enter_cache(7, s1, vec![]),
        (true, false),
        "new state: cached, old pages dropped"
    );
    assert_eq!(
        fs.enter_cache(7, s1, vec![]),
        (true, true),
        "same state: keep the cache"
    );
    assert_eq!(
        fs.enter_cache(7, s2, vec![]),
        (false, false),
        "other state while s1 is open: direct"
    );
    assert_eq!(
        fs.enter_cache(8, s2, vec![]),
        (true, false),
        "another file is independent"
    );
    fs.cached_states.lock().unwrap().get_mut(&7).unwrap().open = 0;
    assert_eq!(
        fs.enter_cache(7, s2, vec![]),
        (true, false),
        "s1 closed: s2 takes the cache over"
    );
    assert_eq!(fs.enter_cache(7, s1, vec![]), (false, false));
    // The dropper forgets an idle state whose file the kernel forgot (no such node
    // here) without asking to drop pages it no longer has, and leaves one a handle
    // still reads.
    fs.cached_states.lock().unwrap().get_mut(&8).unwrap().open = 0;
    assert_eq!(fs.take_stale_caches(), Vec::<u64>::new());
    assert!(!fs.cached_states.lock().unwrap().contains_key(&8));
    assert_eq!(fs.take_stale_caches(), Vec::<u64>::new());
    assert!(fs.cached_states.lock().unwrap().contains_key(&7));
    storage.shutdown();
}

/// Nodes the kernel forgets leave the inode table: names that come and go
/// (timestamped snapshots, uploads) do not make it grow without bound.
#[tokio::test(flavor = "multi_thread")]
async fn forgotten_inodes_leave_the_table() {
    let temp = tempfile::tempdir().unwrap();
    let storage = Storage::open(&temp.path().join("storage")).unwrap();
    let fs = Arc::new(SnapFs::new(
        crate::snapshot::Snapshots::new(storage),
        temp.path().join("snapshots"),
        local_store(&temp),
    ));
    let core = fs.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(core.known_inodes(), 1, "the root");
        let mut looked_up = Vec::new();
        for _ in 0..3 {
            for name in [namespace::LIVE, namespace::COLLECTIONS, namespace::README] {
                looked_up.push(core.lookup(ROOT_INO, name).unwrap().ino);
            }
        }
        assert_eq!(core.known_inodes(), 4);
        // A listing alone gives the kernel nothing to forget.
        let dir = core.opendir(ROOT_INO).unwrap();
        core.release(dir);
        assert_eq!(core.known_inodes(), 4);
        for ino in &looked_up[..3] {
            core.forget(*ino, 2);
        }
        assert_eq!(core.known_inodes(), 4, "one lookup of each is still held");
        for ino in &looked_up[..3] {
            core.forget(*ino, 1);
        }
        assert_eq!(core.known_inodes(), 1);
        core.forget(ROOT_INO, 1_000);
        assert_eq!(core.known_inodes(), 1, "the root stays");
        assert!(core.getattr(ROOT_INO, None).is_ok());
    })
    .await
    .unwrap();
}

/// The local store in `temp`'s `snapshots` directory.
fn local_store(temp: &tempfile::TempDir) -> Arc<dyn crate::snapshot::store::SnapshotStore> {
    Arc::new(
        crate::snapshot::store::local::LocalStore::open(
            &temp.path().join("snapshots"),
            &temp.path().join("tmp"),
        )
        .unwrap(),
    )
}
