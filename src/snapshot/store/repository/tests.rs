//! The repository store's unit tests: the stores' common promises, kept by a local
//! repository, and the refusal of a wrong password.

use std::path::Path;

use super::*;

use crate::storage::Storage;

fn local(path: &Path, password: &str) -> Result<RepositoryStore> {
    RepositoryStore::open(&RepositoryConfig {
        location: Location::Local(path.to_path_buf()),
        password: password.into(),
        cache_dir: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repository_store_keeps_the_stores_promises() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&dir.path().join("storage")).unwrap();
    crate::demo::create_demo_collection(&storage).await.unwrap();
    let store = local(&dir.path().join("repo"), "secret").unwrap();
    let snapshots = crate::snapshot::Snapshots::new(storage.clone());
    super::super::conformance::check_every_scope(&store, &snapshots);
    // A wrong password is a clear refusal, not a new repository.
    match local(&dir.path().join("repo"), "wrong") {
        Err(StorageError::BadRequest(text)) => assert!(text.contains("password"), "{text}"),
        Err(other) => panic!("wrong password: {other}"),
        Ok(_) => panic!("a wrong password opened the repository"),
    }
}
