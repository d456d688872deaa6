//! The checks every [`SnapshotStore`] must pass, shared by the stores' tests (the
//! local store's unit test, the S3 store's test against a real S3 server), as
//! object_store tests its backends: one behaviour, whatever keeps the bytes.
//!
//! [`check`] panics on the first broken promise. It writes and removes snapshots of
//! `scope` only, and leaves the store as it found it.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{SnapshotStore, StoredSnapshot};
use crate::snapshot::Snapshots;
use crate::snapshot::digest::hex;
use crate::snapshot::view::{Scope, SnapshotView};
use crate::storage::StorageError;

/// Run the checks on `store` with snapshots of `scope` (which must exist in
/// `snapshots`' storage, and have no stored snapshots yet). Blocking.
pub fn check(store: &dyn SnapshotStore, snapshots: &Arc<Snapshots>, scope: Scope) {
    assert_eq!(
        names(store, &scope),
        Vec::<String>::new(),
        "a fresh scope lists nothing"
    );

    // Create: complete, with its checksum, listed.
    let view = SnapshotView::open(snapshots, scope.clone()).expect("open a view");
    let expected = read_all_layout(&view);
    let first = store.create(&view).expect("create");
    drop(view);
    assert!(first.name.ends_with(".snapshot"), "{first:?}");
    assert_eq!(
        first.size,
        expected.len() as u64,
        "size of what was created"
    );
    let digest = hex(&Sha256::digest(&expected));
    assert_eq!(first.checksum.as_deref(), Some(digest.as_str()), "checksum");
    assert_eq!(names(store, &scope), std::slice::from_ref(&first.name));

    // Stat and list agree with create.
    let stat = store.stat(&scope, &first.name).expect("stat");
    assert_eq!((stat.size, &stat.checksum), (first.size, &first.checksum));
    let listed = store.list(&scope).expect("list");
    assert_eq!(
        (listed[0].size, &listed[0].checksum),
        (first.size, &first.checksum)
    );

    // Open: the very bytes, whole and by offset; a version that names them.
    let opened = store.open(&scope, &first.name).expect("open");
    assert_eq!(opened.snapshot.size, first.size);
    assert_eq!(
        read_all(&*opened.reader, first.size),
        expected,
        "read whole"
    );
    let middle = first.size / 2;
    let mut buf = vec![0u8; 1000];
    let n = opened
        .reader
        .read_at(middle, &mut buf)
        .expect("read in the middle");
    let end = (middle as usize + n).min(expected.len());
    assert_eq!(
        &buf[..n],
        &expected[middle as usize..end],
        "read at an offset"
    );
    assert_eq!(
        opened
            .reader
            .read_at(first.size, &mut buf)
            .expect("read at the end"),
        0
    );
    let again = store.open(&scope, &first.name).expect("open again");
    assert_eq!(opened.version, again.version, "one snapshot, one version");

    // A second creation in the same second gets a name of its own.
    let view = SnapshotView::open(snapshots, scope.clone()).expect("open a view");
    let second = store.create(&view).expect("create a second");
    drop(view);
    assert_ne!(first.name, second.name);
    let mut both = vec![first.name.clone(), second.name.clone()];
    both.sort();
    assert_eq!(names(store, &scope), both, "listed by name");

    // Names that name no stored snapshot: not found (or refused), nothing touched.
    for bad in [
        "missing.snapshot".to_string(),
        format!("{}.checksum", first.name),
        format!(".{}", first.name),
        format!("../{}", first.name),
        "a/b.snapshot".to_string(),
    ] {
        for result in [
            store.stat(&scope, &bad).map(|_| ()),
            store.open(&scope, &bad).map(|_| ()),
            store.delete(&scope, &bad),
        ] {
            assert!(
                matches!(
                    result,
                    Err(StorageError::NotFound(_) | StorageError::BadRequest(_))
                ),
                "{bad}: {result:?}"
            );
        }
    }
    assert_eq!(names(store, &scope), both, "bad names touched nothing");

    // Delete: gone, with its checksum; a second delete is not found.
    for snapshot in [&first, &second] {
        store.delete(&scope, &snapshot.name).expect("delete");
        assert!(matches!(
            store.stat(&scope, &snapshot.name),
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            store.delete(&scope, &snapshot.name),
            Err(StorageError::NotFound(_))
        ));
    }
    assert_eq!(names(store, &scope), Vec::<String>::new(), "all gone");
}

/// [`check`] for each kind of scope, on the demo collection (`demo`, its shard 0,
/// the full storage), which `snapshots`' storage must hold.
pub fn check_every_scope(store: &dyn SnapshotStore, snapshots: &Arc<Snapshots>) {
    for scope in [
        Scope::Collection("demo".into()),
        Scope::Shard("demo".into(), 0),
        Scope::Full,
    ] {
        check(store, snapshots, scope);
    }
    check_records(store);
}

/// Records: written whole, replaced by name, listed per group, bounded on reading,
/// hostile names refused, removed (a second removal is no error).
pub fn check_records(store: &dyn SnapshotStore) {
    assert_eq!(
        store.list_records("conformance").expect("list records"),
        Vec::<String>::new()
    );
    store
        .put_record("conformance", "b-1", b"{\"v\":1}")
        .expect("put");
    store.put_record("conformance", "a-1", b"{}").expect("put");
    store
        .put_record("conformance", "b-1", b"{\"v\":2}")
        .expect("replace");
    store
        .put_record("other", "b-1", b"{\"v\":3}")
        .expect("put in another group");
    assert_eq!(store.list_records("conformance").unwrap(), ["a-1", "b-1"]);
    assert_eq!(
        store.get_record("conformance", "b-1", 1024).unwrap(),
        b"{\"v\":2}"
    );
    assert!(
        store.get_record("conformance", "b-1", 3).is_err(),
        "bounded"
    );
    assert!(matches!(
        store.get_record("conformance", "c-1", 1024),
        Err(StorageError::NotFound(_))
    ));
    for bad in ["../x", ".hidden", "a/b", ""] {
        assert!(
            store.put_record("conformance", bad, b"{}").is_err(),
            "{bad:?}"
        );
        assert!(store.get_record(bad, "a-1", 1024).is_err(), "{bad:?}");
    }
    for (group, name) in [
        ("conformance", "a-1"),
        ("conformance", "b-1"),
        ("other", "b-1"),
    ] {
        store.delete_record(group, name).expect("delete a record");
        store
            .delete_record(group, name)
            .expect("a second delete is no error");
    }
    assert_eq!(
        store.list_records("conformance").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.list_records("other").unwrap(), Vec::<String>::new());
}

fn names(store: &dyn SnapshotStore, scope: &Scope) -> Vec<String> {
    let listed: Vec<StoredSnapshot> = store.list(scope).expect("list");
    listed.into_iter().map(|s| s.name).collect()
}

fn read_all_layout(view: &SnapshotView) -> Vec<u8> {
    let mut out = vec![0u8; view.size() as usize];
    let mut done = 0;
    while done < out.len() {
        let n = view
            .layout()
            .read_at(done as u64, &mut out[done..])
            .expect("read the view");
        assert!(n > 0, "the view ended before its size");
        done += n;
    }
    out
}

fn read_all(reader: &dyn super::StoredReader, size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    let mut done = 0;
    while done < out.len() {
        let n = reader.read_at(done as u64, &mut out[done..]).expect("read");
        assert!(n > 0, "the stored snapshot ended before its size");
        done += n;
    }
    out
}
