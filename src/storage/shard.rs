//! One shard: a Qdrant Edge shard plus the single writer thread that owns all
//! changes to its files, and the freeze that lets a snapshot read those files while
//! the shard keeps accepting updates.
//!
//! Why a writer thread: the freeze needs one place where "stop applying" is a
//! point in the order of updates. Updates and freeze/thaw commands travel the same
//! FIFO channel, so every update lands either before the freeze (in the engine, and
//! flushed into the frozen files) or after it (in the pending log, applied at thaw).
//! Reads never go through the writer: they use the engine directly and keep
//! answering from the frozen state.
//!
//! Background flush and optimization (see [`Shard::maintain`]) take the shard's
//! maintenance gate and skip frozen shards, and a freeze takes the same gate before
//! its flush, so an optimization in flight finishes before the files are captured.
//!
//! This file holds the [`Shard`] and its shared state; the writer thread's loop is
//! in `writer`, and the files kept beside the engine's (the `<id>.clock`) and the
//! settling of the engine's own JSON in `files`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qdrant_edge::{EdgeConfig, EdgeShard};
use tokio::sync::oneshot;

use super::error::{Result, StorageError};
use super::ops::ShardOp;
use super::pending_log::PendingLog;

mod files;
mod writer;

pub use files::{ENGINE_CONFIG_FILE, settle_engine_json, write_restored_clock};
use files::{ShardClock, files_signature, now_nanos, read_clock, write_clock};
use writer::{Command, apply_pending, writer_loop};

/// Sent back to whoever submitted an update: when it is durable (`wait=false`) or
/// applied and visible to reads (`wait=true`).
pub type Ack = oneshot::Sender<Result<()>>;

/// One entry per pending-log record: who waits for it to be applied (`None`: the
/// caller was answered when it was logged).
pub type Waiting = VecDeque<Option<Ack>>;

/// The engine's repair journal beside a payload tracker (`tracker.dat`): removed
/// by the engine at every load after a flush, so archives and signatures leave it out.
pub const TRACKER_JOURNAL: &str = "tracker_journal.dat";
/// The payload tracker the journal belongs to.
pub const TRACKER: &str = "tracker.dat";

/// A process-wide sequence every change of every shard takes a number from, so a
/// shard's change number identifies its state: it moves with every change and is
/// never reused, not even by another shard object opened on the same directory.
static CHANGES: AtomicU64 = AtomicU64::new(1);
/// How many changes were announced (each after its shard stored its new number),
/// and a condvar woken at each: see [`ChangeListener`].
static ANNOUNCED: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
/// How many [`ChangeListener`]s live; with none (no mount), a change announces
/// nothing and costs one atomic load more.
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

fn next_change() -> u64 {
    CHANGES.fetch_add(1, Ordering::SeqCst)
}

/// Wake whoever waits for changes; called once the shard's new number is stored, so
/// a waiter woken reads it.
fn announce_change() {
    if LISTENERS.load(Ordering::SeqCst) == 0 {
        return;
    }
    let mut announced = ANNOUNCED.0.lock().unwrap_or_else(PoisonError::into_inner);
    *announced += 1;
    ANNOUNCED.1.notify_all();
}

/// Hears of every change to any shard while it lives (changes are announced only
/// while some listener lives). A shard object made new (a load, a switch) announces
/// nothing: a listener's wait limit covers it.
pub struct ChangeListener(());

impl ChangeListener {
    pub fn new() -> Self {
        LISTENERS.fetch_add(1, Ordering::SeqCst);
        ChangeListener(())
    }

    /// How many changes were announced so far: read before looking at the shards,
    /// then handed to [`Self::wait`].
    pub fn so_far(&self) -> u64 {
        *ANNOUNCED.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Return once a change was announced after `seen`, or after `limit`.
    pub fn wait(&self, seen: u64, limit: Duration) {
        let announced = ANNOUNCED.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *announced == seen {
            let _ = ANNOUNCED.1.wait_timeout(announced, limit);
        }
    }
}

impl Default for ChangeListener {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        LISTENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bookkeeping shared by the writer, the maintenance thread and readers.
struct ShardState {
    /// Active freezes. Written only by the writer thread.
    frozen: AtomicUsize,
    /// Updates waiting in the pending log.
    pending: AtomicUsize,
    /// An optimization is running (index building, merging).
    optimizing: AtomicBool,
    dirty_since_flush: AtomicBool,
    /// Not flushed by us since the engine loaded (what the load replayed may sit in
    /// memory only); cleared by the first flush, which is no change of its own.
    unflushed_since_load: AtomicBool,
    dirty_since_optimize: AtomicBool,
    /// Unix nanoseconds of the last change to the shard's files.
    last_change_nanos: AtomicU64,
    /// The number of the last change (see [`CHANGES`]).
    change: AtomicU64,
    /// Switched out: background maintenance leaves it alone.
    retired: AtomicBool,
    /// Held by background maintenance while it works and by a freeze while it flushes.
    gate: Mutex<MaintenanceClock>,
}

struct MaintenanceClock {
    last_flush: Instant,
}

impl ShardState {
    fn touch(&self) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        // Strictly increasing: a clock step back never moves the last change back,
        // and two changes never share a value (the mount keys cached sizes on it).
        let _ = self
            .last_change_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| {
                Some(nanos.max(prev + 1))
            });
        self.change.store(next_change(), Ordering::SeqCst);
        announce_change();
    }

    fn mark_applied(&self) {
        self.dirty_since_flush.store(true, Ordering::SeqCst);
        self.dirty_since_optimize.store(true, Ordering::SeqCst);
        self.touch();
    }
}

/// What the files a load rewrites (a WAL replayed, a journal compacted) mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A shard that lived here before: a rewrite is a change (of now).
    Reopen,
    /// A restored shard's first load, where it will live: the rewrite is part of
    /// the restored state, whose last change stays the archive's (its `<id>.clock`).
    Restore,
}

pub struct Shard {
    id: u32,
    /// `<id>.clock` beside the shard: last change and whether the stop was clean.
    clock_path: PathBuf,
    path: PathBuf,
    /// `None` once closed ([`Shard::close`]): the engine flushes by path when it is
    /// dropped, so it must be gone before another shard takes the path.
    engine: RwLock<Option<Arc<EdgeShard>>>,
    state: Arc<ShardState>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Shard {
    /// Create a new, empty shard at `path`.
    pub fn create(id: u32, path: &Path, pending_path: &Path, config: EdgeConfig) -> Result<Self> {
        let engine = EdgeShard::new(path, config).map_err(StorageError::from_engine)?;
        Self::start(id, path, pending_path, engine, true, Waiting::new())
    }

    /// Load an existing shard: the engine replays its WAL, then updates left in the
    /// pending log (acknowledged during a freeze, not applied before a stop) are applied.
    pub fn open(id: u32, path: &Path, pending_path: &Path, config: EdgeConfig) -> Result<Self> {
        Self::open_after(id, path, pending_path, config, Waiting::new(), Load::Reopen)
    }

    /// [`Shard::open`] in place of a shard that handed over `waiting` (see
    /// [`Shard::hand_over`]): the pending log's records are applied here and their
    /// callers answered. `load` says what the load's own rewrites mean.
    pub fn open_after(
        id: u32,
        path: &Path,
        pending_path: &Path,
        config: EdgeConfig,
        waiting: Waiting,
        load: Load,
    ) -> Result<Self> {
        settle_engine_json(path)?;
        // Loading may rewrite files (WAL replay, journal compaction): that is a change,
        // unless the load is a restore's own (then nothing is compared).
        let before = (load == Load::Reopen).then(|| files_signature(path));
        let engine = EdgeShard::load(path, Some(config)).map_err(|e| {
            StorageError::internal_from(format!("cannot load shard {}", path.display()), e)
        })?;
        settle_engine_json(path)?;
        let changed = before.is_some_and(|before| before != files_signature(path));
        Self::start(id, path, pending_path, engine, changed, waiting)
    }

    fn start(
        id: u32,
        path: &Path,
        pending_path: &Path,
        engine: EdgeShard,
        changed: bool,
        mut waiting: Waiting,
    ) -> Result<Self> {
        let engine = Arc::new(engine);
        let state = Arc::new(ShardState {
            frozen: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            optimizing: AtomicBool::new(false),
            dirty_since_flush: AtomicBool::new(false),
            unflushed_since_load: AtomicBool::new(true),
            dirty_since_optimize: AtomicBool::new(false),
            last_change_nanos: AtomicU64::new(0),
            change: AtomicU64::new(next_change()),
            retired: AtomicBool::new(false),
            gate: Mutex::new(MaintenanceClock {
                last_flush: Instant::now(),
            }),
        });
        // The last change survives a clean stop; after a crash it is "now" (the engine
        // may have replayed updates), so a changed state never keeps an old time.
        let clock_path = pending_path.with_extension("clock");
        let last_change = match read_clock(&clock_path) {
            Some(ShardClock {
                last_change_ns,
                clean: true,
            }) if !changed => last_change_ns,
            _ => now_nanos(),
        };
        state.last_change_nanos.store(last_change, Ordering::SeqCst);
        write_clock(
            &clock_path,
            ShardClock {
                last_change_ns: last_change,
                clean: false,
            },
        )?;
        let mut log = PendingLog::open(pending_path)?;
        if !log.is_empty() {
            tracing::info!(
                shard = id,
                updates = log.len(),
                "applying updates left in the pending log"
            );
            apply_pending(&engine, &state, &mut log, &mut waiting)?;
        }
        // Whoever still waits has nothing left to wait for (an empty log).
        for ack in waiting.into_iter().flatten() {
            let _ = ack.send(Ok(()));
        }
        let (tx, rx) = mpsc::channel();
        let writer = {
            let engine = engine.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name(format!("shard-{id}-writer"))
                .spawn(move || writer_loop(engine, state, log, rx))?
        };
        Ok(Shard {
            id,
            clock_path,
            path: path.to_path_buf(),
            engine: RwLock::new(Some(engine)),
            state,
            commands: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine, for reads. Never write through it: the writer owns changes.
    pub fn engine(&self) -> Result<Arc<EdgeShard>> {
        self.engine
            .read()
            .unwrap()
            .clone()
            .ok_or(StorageError::ShuttingDown)
    }

    /// Stop the writer and close the engine now (it flushes as it closes), even if
    /// views of this shard still hold the `Shard`: its files may then be moved and
    /// its path taken by another shard. Idempotent.
    pub fn close(&self) {
        self.retire();
        self.shutdown();
        let engine = {
            let _gate = self.state.gate.lock().unwrap();
            self.engine.write().unwrap().take()
        };
        if let Some(engine) = engine
            && Arc::strong_count(&engine) > 1
        {
            tracing::warn!(shard = self.id, path = %self.path.display(), "the engine is still in use as it closes");
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.freezes() > 0
    }

    /// Freezes holding the shard now.
    pub fn freezes(&self) -> usize {
        self.state.frozen.load(Ordering::SeqCst)
    }

    /// An optimization is running, or changes since the last one wait for it.
    pub fn is_optimizing(&self) -> bool {
        self.state.optimizing.load(Ordering::SeqCst)
            || self.state.dirty_since_optimize.load(Ordering::SeqCst)
    }

    pub fn pending_updates(&self) -> usize {
        self.state.pending.load(Ordering::SeqCst)
    }

    pub fn last_change(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.state.last_change_nanos.load(Ordering::SeqCst))
    }

    /// The number of the state's last change: different for every state of every
    /// shard object (see [`CHANGES`]); what caches of a state's size or manifest key on.
    pub fn change_number(&self) -> u64 {
        self.state.change.load(Ordering::SeqCst)
    }

    fn send(&self, command: Command) -> Result<()> {
        let commands = self.commands.lock().unwrap();
        let sender = commands.as_ref().ok_or(StorageError::ShuttingDown)?;
        sender.send(command).map_err(|_| StorageError::ShuttingDown)
    }

    /// Queue an update; the returned receiver answers per `wait`.
    pub fn submit(&self, op: ShardOp, wait: bool) -> Result<oneshot::Receiver<Result<()>>> {
        let (ack, answer) = oneshot::channel();
        self.send(Command::Update { op, wait, ack })?;
        Ok(answer)
    }

    /// First half of a freeze: place the cut in the update order. Updates queued
    /// before it are applied first; the receiver fires once the writer reached it.
    pub fn freeze_cut(&self) -> Result<mpsc::Receiver<bool>> {
        let (cut, reached) = mpsc::sync_channel(1);
        self.send(Command::Freeze { cut })?;
        Ok(reached)
    }

    /// Second half of a freeze: wait out a running optimization and flush, so the
    /// shard's files hold exactly the state at the cut and stay unchanged until thaw.
    pub fn settle_frozen(&self) -> Result<()> {
        let mut clock = self.state.gate.lock().unwrap();
        debug_assert!(self.is_frozen());
        // Only flush what needs it: the engine rewrites metadata files (atomically,
        // through temp files) even when clean, and a second freeze of a shard that is
        // already frozen must not touch the files another view is laying out.
        let dirty = self.state.dirty_since_flush.load(Ordering::SeqCst);
        if dirty || self.state.unflushed_since_load.load(Ordering::SeqCst) {
            let started = Instant::now();
            self.engine()?.flush().map_err(StorageError::from_engine)?;
            settle_engine_json(&self.path)?;
            tracing::debug!(
                shard = self.id,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "flushed for a freeze"
            );
            self.state
                .unflushed_since_load
                .store(false, Ordering::SeqCst);
            clock.last_flush = Instant::now();
        }
        // Frozen: no update lands between the load above and this swap.
        if self.state.dirty_since_flush.swap(false, Ordering::SeqCst) {
            self.state.touch();
        }
        Ok(())
    }

    /// End one freeze; the last one applies what the pending log collected.
    pub fn thaw(&self) {
        if self.send(Command::Thaw).is_err() {
            tracing::debug!(shard = self.id, "thaw after shutdown ignored");
        }
    }

    /// Background upkeep, called periodically: flush applied updates once
    /// `flush_interval` has passed, and optimize after changes. Never on a frozen shard.
    pub fn maintain(&self, flush_interval: Duration) -> Result<()> {
        let mut clock = self.state.gate.lock().unwrap();
        if self.is_frozen() || self.state.retired.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self
            .state
            .dirty_since_optimize
            .swap(false, Ordering::SeqCst)
        {
            self.state.optimizing.store(true, Ordering::SeqCst);
            let optimized = self.engine()?.optimize();
            self.state.optimizing.store(false, Ordering::SeqCst);
            let optimized = optimized.map_err(StorageError::from_engine)?;
            settle_engine_json(&self.path)?;
            if optimized {
                tracing::debug!(shard = self.id, path = %self.path.display(), "optimized");
                self.state.dirty_since_flush.store(true, Ordering::SeqCst);
                self.state.touch();
            }
        }
        if clock.last_flush.elapsed() >= flush_interval
            && self.state.dirty_since_flush.swap(false, Ordering::SeqCst)
        {
            self.engine()?.flush().map_err(StorageError::from_engine)?;
            settle_engine_json(&self.path)?;
            self.state
                .unflushed_since_load
                .store(false, Ordering::SeqCst);
            self.state.touch();
            clock.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Stop the writer after the updates queued before this call and hand over who
    /// waits for the pending log's records, for the shard that will apply that log
    /// ([`Shard::open_after`]). Background maintenance leaves this shard alone from
    /// now on (a running optimization is waited for).
    pub fn hand_over(&self) -> Waiting {
        self.retire();
        let Some(sender) = self.commands.lock().unwrap().take() else {
            return Waiting::new();
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let waiting = match sender.send(Command::Handover { waiting: tx }) {
            Ok(()) => rx.recv().unwrap_or_default(),
            Err(_) => Waiting::new(),
        };
        if let Some(writer) = self.writer.lock().unwrap().take() {
            let _ = writer.join();
        }
        waiting
    }

    /// No more background maintenance (this shard is being switched out); waits for
    /// one that runs.
    pub fn retire(&self) {
        let _gate = self.state.gate.lock().unwrap();
        self.state.retired.store(true, Ordering::SeqCst);
    }

    /// Stop the writer after the updates already queued. Idempotent.
    pub fn shutdown(&self) {
        if let Some(sender) = self.commands.lock().unwrap().take() {
            let _ = sender.send(Command::Shutdown);
        }
        if let Some(writer) = self.writer.lock().unwrap().take() {
            let _ = writer.join();
        }
    }

    /// Flush the engine (WAL and segments) after the writer stopped, and record a
    /// clean stop with the last change time. A frozen shard is left as it is (its
    /// pending updates are applied at the next start).
    pub fn flush_at_shutdown(&self) -> Result<()> {
        let _clock = self.state.gate.lock().unwrap();
        if self.is_frozen() {
            return Ok(());
        }
        self.engine()?.flush().map_err(StorageError::from_engine)?;
        settle_engine_json(&self.path)?;
        let last_change_ns = self.state.last_change_nanos.load(Ordering::SeqCst);
        write_clock(
            &self.clock_path,
            ShardClock {
                last_change_ns,
                clean: true,
            },
        )?;
        Ok(())
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.shutdown();
    }
}
