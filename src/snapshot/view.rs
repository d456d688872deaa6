//! A snapshot view: the frozen collections a snapshot covers plus the archive layout
//! over their files. Opening one freezes (flush, stop applying updates); dropping the
//! last reference thaws. Readers of the same scope share a live view, and so one freeze.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Snapshots;
use super::archive::{add_collection_files, add_manifest, add_shard, payload_index_json};
use super::layout::{ArchiveBuilder, ArchiveLayout};
use super::partial::VersionManifest;
use crate::storage::{CollectionFreeze, Result, Storage, StorageError};

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Collection(String),
    Shard(String, u32),
    Full,
}

/// An I/O error that says a file was not found.
fn vanished_file(err: &StorageError) -> bool {
    match err {
        StorageError::Internal {
            source: Some(cause),
            ..
        } => cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        _ => false,
    }
}

/// What a collection snapshot's state held when it was made ([`SnapshotView::recorded`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub points: u64,
    pub config_sha256: String,
}

/// The SHA-256 (hex) of a collection configuration's JSON: equal for equal
/// configurations, whichever copy of the collection holds them.
pub fn config_digest(config: &crate::storage::CollectionConfig) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(config).unwrap_or_default();
    super::digest::hex(&sha2::Sha256::digest(&json))
}

pub struct SnapshotView {
    /// The layer's state the view was opened in (its checksums, digests).
    snapshots: Arc<Snapshots>,
    scope: Scope,
    layout: Arc<ArchiveLayout>,
    mtime: SystemTime,
    /// Of a shard view: the engine's version manifest of the frozen state and the
    /// shard's change number (what partial snapshots are cut from).
    shard_state: Option<ShardState>,
    opened: Instant,
    /// Held while the view reads the shards' own files; dropping them thaws the
    /// shards. Emptied early when the freeze outlives its limit and the files are
    /// copied aside.
    freezes: Mutex<Vec<CollectionFreeze>>,
    /// The collections and shard objects the view's state is of (kept past the
    /// freeze, to tell whether it is still the current objects' state).
    covers: Vec<(
        Arc<crate::storage::Collection>,
        Vec<Arc<crate::storage::shard::Shard>>,
    )>,
    /// Copied aside early for a newer snapshot of another scope (not at the freeze
    /// limit): readers of this scope still share it while it is open.
    shared_after_copy: std::sync::atomic::AtomicBool,
    _running: crate::metrics::CreationRunning,
}

/// What a shard view knows of its frozen shard beyond its files.
pub struct ShardState {
    pub versions: VersionManifest,
    pub change: u64,
}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        if !self.freezes.get_mut().unwrap().is_empty() {
            crate::metrics::freeze_ended(self.opened.elapsed());
        }
    }
}

/// The views alive and their openers' turns (part of [`Snapshots`]).
#[derive(Default)]
pub struct LiveViews {
    /// Every view alive, by scope (more than one when a newer state came while an
    /// older view was still read).
    alive: Mutex<HashMap<Scope, Vec<Weak<SnapshotView>>>>,
    /// Per scope, the lock its openers take turns on (entries stay for scopes ever
    /// opened: a handful per collection).
    turns: Mutex<HashMap<Scope, Arc<Mutex<()>>>>,
}

impl LiveViews {
    fn turn(&self, scope: &Scope) -> Arc<Mutex<()>> {
        self.turns
            .lock()
            .unwrap()
            .entry(scope.clone())
            .or_default()
            .clone()
    }

    fn all(&self) -> Vec<Arc<SnapshotView>> {
        self.alive
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl SnapshotView {
    /// Open (or join) the view of `scope`. Blocking: flushes and reads directories.
    /// Openers of one scope take turns, so two at once share one view (and so one
    /// freeze) instead of building two.
    pub fn open(snapshots: &Arc<Snapshots>, scope: Scope) -> Result<Arc<SnapshotView>> {
        let storage = snapshots.storage();
        let turn = snapshots.views.turn(&scope);
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        let existing: Vec<Arc<SnapshotView>> = snapshots
            .views
            .alive
            .lock()
            .unwrap()
            .get(&scope)
            .map(|views| views.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        // Join one that still covers the same collection and shard objects (none was
        // deleted, re-created or switched since).
        if let Some(view) = existing.into_iter().find(|v| v.still_current(storage)) {
            return Ok(view);
        }
        // Built without the registry lock: freezing may wait for an optimization.
        let started = Instant::now();
        let view = Arc::new(Self::build_fresh(snapshots, &scope)?);
        tracing::debug!(
            ?scope,
            size = view.size(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "view built"
        );
        let mut views = snapshots.views.alive.lock().unwrap();
        for list in views.values_mut() {
            list.retain(|weak| weak.strong_count() > 0);
        }
        views.retain(|_, list| !list.is_empty());
        views.entry(scope).or_default().push(Arc::downgrade(&view));
        Ok(view)
    }

    /// Still frozen (or copied aside early for another scope's snapshot), over the
    /// same collection and shard objects (none was deleted, re-created or switched
    /// since): a new reader may join it.
    fn still_current(&self, storage: &Storage) -> bool {
        let frozen = !self.freezes.lock().unwrap().is_empty();
        let shared = self
            .shared_after_copy
            .load(std::sync::atomic::Ordering::SeqCst);
        (frozen || shared)
            && !self.covers.is_empty()
            && self.covers.iter().all(|(collection, shards)| {
                storage
                    .collection(collection.name())
                    .is_ok_and(|c| Arc::ptr_eq(&c, collection))
                    && shards.iter().all(|shard| {
                        collection
                            .shard(shard.id())
                            .is_ok_and(|now| Arc::ptr_eq(&now, shard))
                    })
            })
    }

    pub fn is_frozen(&self) -> bool {
        !self.freezes.lock().unwrap().is_empty()
    }

    /// End the freeze early: copy the frozen files aside into `temp_path` (data
    /// extents only), read from the copies from now on, and thaw the shards.
    pub fn copy_aside_and_thaw(&self, temp_path: &std::path::Path) -> std::io::Result<()> {
        let mut freezes = self.freezes.lock().unwrap();
        if freezes.is_empty() {
            return Ok(());
        }
        fs_err::create_dir_all(temp_path)?;
        self.layout.copy_aside(temp_path)?;
        freezes.clear();
        crate::metrics::freeze_ended(self.opened.elapsed());
        Ok(())
    }

    /// [`Self::build`], ending older views' freezes that cannot join this cut (a
    /// shard they hold frozen has taken updates since): they are copied aside, as at
    /// the freeze limit, so every snapshot is one state holding every update
    /// acknowledged before it.
    fn build_fresh(snapshots: &Arc<Snapshots>, scope: &Scope) -> Result<SnapshotView> {
        const ATTEMPTS: usize = 50;
        let storage = snapshots.storage();
        let mut attempt = 0;
        loop {
            match Self::build(snapshots, scope.clone()) {
                Err(StorageError::StaleFreeze { collection, shards }) if attempt < ATTEMPTS => {
                    attempt += 1;
                    let temp_path = storage.temp_path();
                    for view in snapshots.views.all() {
                        if view.holds_frozen(&collection, &shards) {
                            // Its readers go on with the copies, and new readers of
                            // its scope still share it: one scope, one state.
                            view.shared_after_copy
                                .store(true, std::sync::atomic::Ordering::SeqCst);
                            view.copy_aside_and_thaw(&temp_path).map_err(|e| {
                                StorageError::internal_from(
                                    "ending an older snapshot's freeze failed",
                                    e,
                                )
                            })?;
                            tracing::debug!(scope = ?view.scope, "older freeze ended for a new snapshot");
                        }
                    }
                    // A thaw is applied by the shard's writer: give it a moment.
                    std::thread::sleep(Duration::from_millis(2 * attempt as u64));
                }
                // A shard closed under the build by a switch (a restore, an apply)
                // while the daemon runs on: the collection holds its successor now.
                Err(StorageError::ShuttingDown) if attempt < ATTEMPTS && !storage.is_stopping() => {
                    attempt += 1;
                    tracing::debug!(?scope, "a shard closed under a view build: building again");
                    std::thread::sleep(Duration::from_millis(2 * attempt as u64));
                }
                // A file gone while the shards were laid out: garbage the engine
                // removes when its last reader lets go of it (a segment an
                // optimization replaced), never a file of the frozen state.
                Err(ref err) if attempt < ATTEMPTS && vanished_file(err) => {
                    attempt += 1;
                    tracing::debug!(?scope, %err, "a file went under a view build: building again");
                    std::thread::sleep(Duration::from_millis(2 * attempt as u64));
                }
                other => return other,
            }
        }
    }

    /// Still frozen, holding shard `shards` of `collection`.
    fn holds_frozen(&self, collection: &str, shards: &[u32]) -> bool {
        self.freezes.lock().unwrap().iter().any(|freeze| {
            freeze.collection().name() == collection
                && freeze.shards().iter().any(|s| shards.contains(&s.id()))
        })
    }

    fn build(snapshots: &Arc<Snapshots>, scope: Scope) -> Result<SnapshotView> {
        let storage = snapshots.storage();
        let io = |e: std::io::Error| StorageError::internal_from("building the snapshot failed", e);
        let peer = storage.peer_id();
        match &scope {
            Scope::Collection(name) => {
                let freeze = storage.collection(name)?.freeze()?;
                let built = collection_layout(snapshots, &freeze, peer)
                    .map_err(io)
                    .map_err(|e| freeze.switched_meanwhile(e))?;
                Ok(SnapshotView::new(
                    snapshots,
                    scope,
                    built,
                    vec![freeze],
                    None,
                ))
            }
            Scope::Shard(name, id) => {
                let collection = storage.collection(name)?;
                let freeze = collection.freeze_shards(&[*id])?;
                let shard = &freeze.shards()[0];
                let shard_dir = shard.path().to_path_buf();
                let mtime = shard.last_change();
                let state = ShardState {
                    versions: super::partial::engine_manifest(shard)
                        .map_err(|e| freeze.switched_meanwhile(e))?,
                    change: shard.change_number(),
                };
                let mut builder = ArchiveBuilder::new(unix_seconds(mtime));
                builder.state(&[state.change]);
                add_shard(&mut builder, "", &shard_dir, peer).map_err(io)?;
                add_manifest(&mut builder, snapshots).map_err(io)?;
                let built = (builder.finish().map_err(io)?, mtime);
                Ok(SnapshotView::new(
                    snapshots,
                    scope,
                    built,
                    vec![freeze],
                    Some(state),
                ))
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
                    let (layout, changed) = collection_layout(snapshots, &freeze, peer)
                        .map_err(io)
                        .map_err(|e| freeze.switched_meanwhile(e))?;
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
                    serde_json::to_vec(&config).map_err(StorageError::from_cause)?,
                );
                add_manifest(&mut builder, snapshots).map_err(io)?;
                let built = (builder.finish().map_err(io)?, mtime);
                Ok(SnapshotView::new(snapshots, scope, built, freezes, None))
            }
        }
    }

    /// A view of `scope` over the archive `built` (its layout and the state's last
    /// change), holding `freezes`.
    fn new(
        snapshots: &Arc<Snapshots>,
        scope: Scope,
        (layout, mtime): (ArchiveLayout, SystemTime),
        freezes: Vec<CollectionFreeze>,
        shard_state: Option<ShardState>,
    ) -> Self {
        let _running = crate::metrics::CreationRunning::start(match &scope {
            Scope::Collection(c) | Scope::Shard(c, _) => c,
            Scope::Full => "",
        });
        let covers = freezes
            .iter()
            .map(|f| (f.collection().clone(), f.shards().to_vec()))
            .collect();
        SnapshotView {
            snapshots: snapshots.clone(),
            scope,
            layout: Arc::new(layout),
            mtime,
            shard_state,
            opened: Instant::now(),
            freezes: Mutex::new(freezes),
            covers,
            shared_after_copy: std::sync::atomic::AtomicBool::new(false),
            _running,
        }
    }

    pub fn layout(&self) -> &Arc<ArchiveLayout> {
        &self.layout
    }

    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// The archive's SHA-256 (computed once per state, [`super::checksum`]).
    pub fn sha256(&self) -> std::io::Result<[u8; 32]> {
        self.snapshots.checksums.archive_sha256(&self.layout)
    }

    /// What a collection view's state holds, for a stored snapshot to record: its
    /// point count and the digest of its configuration. Counted while the view still
    /// holds its freeze (reads then answer from the frozen state); `None` for other
    /// scopes, or once the freeze has ended.
    pub fn recorded(&self) -> Option<Recorded> {
        let Scope::Collection(_) = &self.scope else {
            return None;
        };
        let freezes = self.freezes.lock().unwrap();
        let collection = freezes.first()?.collection();
        let points = collection.count(None).ok()? as u64;
        Some(Recorded {
            points,
            config_sha256: config_digest(collection.config()),
        })
    }

    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    /// The state's last change: every header's mtime, and the live file's mtime.
    pub fn mtime(&self) -> SystemTime {
        self.mtime
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// A shard view's version manifest and change number.
    pub fn shard_state(&self) -> Option<&ShardState> {
        self.shard_state.as_ref()
    }
}

/// A collection archive of the frozen shards: shard directories, collection files,
/// manifest.
fn collection_layout(
    snapshots: &Arc<Snapshots>,
    freeze: &CollectionFreeze,
    peer: u64,
) -> std::io::Result<(ArchiveLayout, SystemTime)> {
    let collection = freeze.collection();
    let mtime = freeze
        .shards()
        .iter()
        .map(|shard| shard.last_change())
        .max()
        .unwrap_or(UNIX_EPOCH);
    let mut builder = ArchiveBuilder::new(unix_seconds(mtime));
    let numbers: Vec<u64> = freeze.shards().iter().map(|s| s.change_number()).collect();
    builder.state(&numbers);
    for shard in freeze.shards() {
        add_shard(
            &mut builder,
            &format!("{}/", shard.id()),
            shard.path(),
            peer,
        )?;
    }
    let config = fs_err::read(
        collection
            .dir()
            .join(crate::storage::collection::CONFIG_FILE),
    )?;
    let schema = crate::storage::collection::payload_schema_of(freeze.shards())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    add_collection_files(&mut builder, config, payload_index_json(&schema));
    add_manifest(&mut builder, snapshots)?;
    Ok((builder.finish()?, mtime))
}

/// Ends freezes that outlive `limit`: their remaining files are copied into
/// `temp_path` and the shards thaw, so writers are never held back for long by a
/// slow reader. Runs as long as `snapshots` (the daemon's) lives.
pub fn start_freeze_watchdog(
    snapshots: &Arc<Snapshots>,
    temp_path: PathBuf,
    limit: Duration,
) -> std::io::Result<()> {
    let snapshots = Arc::downgrade(snapshots);
    // Check often enough to honour short limits closely.
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    std::thread::Builder::new().name("freeze-watchdog".into()).spawn(move || {
        loop {
            std::thread::sleep(tick);
            // Ends with the daemon's snapshot state.
            let Some(snapshots) = snapshots.upgrade() else {
                return;
            };
            for view in snapshots.views.all() {
                if view.is_frozen() && view.opened.elapsed() > limit {
                    let started = Instant::now();
                    match view.copy_aside_and_thaw(&temp_path) {
                        Ok(()) => tracing::warn!(
                            scope = ?view.scope, limit_secs = limit.as_secs_f64(), copy_ms = started.elapsed().as_millis() as u64,
                            "snapshot read outlived the freeze limit: its files were copied aside and the shards thawed"
                        ),
                        Err(err) => tracing::error!(scope = ?view.scope, %err, "copying a frozen snapshot aside failed; the freeze stays"),
                    }
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Openers of one scope at the same moment share one view and one freeze.
    #[tokio::test(flavor = "multi_thread")]
    async fn simultaneous_opens_share_one_view() {
        let temp = tempfile::tempdir().unwrap();
        let storage = Storage::open(&temp.path().join("storage")).unwrap();
        crate::demo::create_demo_collection(&storage).await.unwrap();
        let snapshots = Snapshots::new(storage.clone());
        let scope = Scope::Shard("demo".into(), 0);
        let views: Vec<Arc<SnapshotView>> = std::thread::scope(|threads| {
            let opening: Vec<_> = (0..8)
                .map(|_| threads.spawn(|| SnapshotView::open(&snapshots, scope.clone()).unwrap()))
                .collect();
            opening.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(views.iter().all(|v| Arc::ptr_eq(v, &views[0])), "one view");
        let shard = storage.collection("demo").unwrap().shard(0).unwrap();
        assert_eq!(shard.freezes(), 1, "one freeze");
        drop(views);
        for _ in 0..100 {
            if shard.freezes() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the shard did not thaw");
    }
}
