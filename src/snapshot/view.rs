//! A snapshot view: the frozen collections a snapshot covers plus the archive layout
//! over their files. Opening one freezes (flush, stop applying updates); dropping the
//! last reference thaws. Readers of the same scope share a live view, and so one freeze.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::archive::{add_collection_files, add_manifest, add_shard};
use super::layout::{ArchiveBuilder, ArchiveLayout};
use crate::storage::{Collection, CollectionFreeze, Result, Storage, StorageError};

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Collection(String),
    Shard(String, u32),
    Full,
}

pub struct SnapshotView {
    scope: Scope,
    layout: Arc<ArchiveLayout>,
    mtime: SystemTime,
    /// Held for the life of the view; dropping them thaws the shards.
    _freezes: Vec<CollectionFreeze>,
}

fn live_views() -> &'static Mutex<HashMap<Scope, Weak<SnapshotView>>> {
    static VIEWS: OnceLock<Mutex<HashMap<Scope, Weak<SnapshotView>>>> = OnceLock::new();
    VIEWS.get_or_init(Default::default)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl SnapshotView {
    /// Open (or join) the view of `scope`. Blocking: flushes and reads directories.
    pub fn open(storage: &Storage, scope: Scope) -> Result<Arc<SnapshotView>> {
        let existing = live_views()
            .lock()
            .unwrap()
            .get(&scope)
            .and_then(Weak::upgrade);
        // Join it if it still covers the same collection objects (none was deleted or
        // re-created since).
        if let Some(view) = existing.filter(|v| v.still_current(storage)) {
            return Ok(view);
        }
        // Built without the registry lock: freezing may wait for an optimization.
        let view = Arc::new(Self::build(storage, scope.clone())?);
        let mut views = live_views().lock().unwrap();
        views.retain(|_, weak| weak.strong_count() > 0);
        views.insert(scope, Arc::downgrade(&view));
        Ok(view)
    }

    fn still_current(&self, storage: &Storage) -> bool {
        self._freezes.iter().all(|f| {
            storage
                .collection(f.collection().name())
                .is_ok_and(|c| Arc::ptr_eq(&c, f.collection()))
        })
    }

    fn build(storage: &Storage, scope: Scope) -> Result<SnapshotView> {
        let io = |e: std::io::Error| {
            StorageError::internal(format!("building the snapshot failed: {e}"))
        };
        let peer = storage.peer_id();
        match &scope {
            Scope::Collection(name) => {
                let freeze = storage.collection(name)?.freeze()?;
                let (layout, mtime) = collection_layout(freeze.collection(), peer).map_err(io)?;
                Ok(SnapshotView {
                    scope,
                    layout: Arc::new(layout),
                    mtime,
                    _freezes: vec![freeze],
                })
            }
            Scope::Shard(name, id) => {
                let collection = storage.collection(name)?;
                let shard_dir = collection.shard(*id)?.path().to_path_buf();
                let freeze = collection.freeze()?;
                let mtime = freeze.collection().shard(*id)?.last_change();
                let mut builder = ArchiveBuilder::new(unix_seconds(mtime));
                add_shard(&mut builder, "", &shard_dir, peer).map_err(io)?;
                add_manifest(&mut builder).map_err(io)?;
                let layout = builder.finish().map_err(io)?;
                Ok(SnapshotView {
                    scope,
                    layout: Arc::new(layout),
                    mtime,
                    _freezes: vec![freeze],
                })
            }
            Scope::Full => {
                let mut freezes = Vec::new();
                let mut nested = Vec::new();
                let mut mtime = UNIX_EPOCH;
                for name in storage.collection_names() {
                    let Ok(collection) = storage.collection(&name) else {
                        continue;
                    };
                    let freeze = collection.freeze()?;
                    let (layout, changed) =
                        collection_layout(freeze.collection(), peer).map_err(io)?;
                    mtime = mtime.max(changed);
                    nested.push((name, Arc::new(layout)));
                    freezes.push(freeze);
                }
                let mut builder = ArchiveBuilder::new(unix_seconds(mtime));
                let mut mapping = serde_json::Map::new();
                for (name, layout) in nested {
                    let file = format!("{name}.snapshot");
                    builder.nested(&file, layout);
                    mapping.insert(name, file.into());
                }
                let config =
                    serde_json::json!({"collections_mapping": mapping, "collections_aliases": {}});
                builder.bytes(
                    "config.json",
                    serde_json::to_vec(&config)
                        .map_err(|e| StorageError::internal(e.to_string()))?,
                );
                add_manifest(&mut builder).map_err(io)?;
                let layout = builder.finish().map_err(io)?;
                Ok(SnapshotView {
                    scope,
                    layout: Arc::new(layout),
                    mtime,
                    _freezes: freezes,
                })
            }
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn layout(&self) -> &Arc<ArchiveLayout> {
        &self.layout
    }

    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    /// The state's last change: every header's mtime, and the live file's mtime.
    pub fn mtime(&self) -> SystemTime {
        self.mtime
    }
}

/// A collection archive: shard directories, collection files, manifest.
fn collection_layout(
    collection: &Arc<Collection>,
    peer: u64,
) -> std::io::Result<(ArchiveLayout, SystemTime)> {
    let mtime = collection.last_change();
    let mut builder = ArchiveBuilder::new(unix_seconds(mtime));
    for shard in collection.shards() {
        add_shard(
            &mut builder,
            &format!("{}/", shard.id()),
            shard.path(),
            peer,
        )?;
    }
    let config = std::fs::read(
        collection
            .dir()
            .join(crate::storage::collection::CONFIG_FILE),
    )?;
    add_collection_files(&mut builder, config);
    add_manifest(&mut builder)?;
    Ok((builder.finish()?, mtime))
}
