//! A restore's intake: the archive's bytes arrive in order (from a FUSE writer, an
//! HTTP body, a download or a file) and are unpacked into a staging directory while
//! they arrive — one pass, nothing written twice, no copy of the archive kept.
//!
//! Two worker threads share the work so that two cores can: one hashes the whole
//! stream (the checksum a user compares), the other walks the tar and writes each
//! file ([`super::unpack::unpack_entries`]), hashing it for the embedded
//! manifest's digests unless the archive's checksum was given before the first
//! byte: then that checksum, checked here at the end, vouches for every file, and
//! each byte is hashed once instead of twice. Both workers get the same
//! reference-counted chunks; the queues are bounded, so memory stays a few MiB at
//! any archive size and a slow disk slows the sender instead of filling memory.
//! When the unpacker refuses the archive, the next push says why at once.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::SnapshotError;
use super::Snapshots;
use super::digest::hex;
use super::limits::{DEFAULT_LOGICAL_BYTES, Limits, Reservation};
use super::progress::Running;
use super::unpack::{FileDigests, VerifyReport, check_checksum, unpack_entries};
use crate::storage::{Result, StorageError};

/// Bytes handed to the workers at a time.
const CHUNK: usize = 1 << 20;
/// Chunks queued per worker.
const QUEUE: usize = 4;

/// What the whole archive's SHA-256 is for, decided before its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveHash {
    /// Checked against this checksum when the last byte is in; the embedded
    /// manifest's per-file digests are then not computed (the one check covers them).
    Expected(String),
    /// Computed and reported: a checksum may still come (a sidecar written into
    /// `recover/` after the snapshot).
    Reported,
    /// Not computed: no checksum was given and none can come (an upload or a download
    /// without one). It would check nothing; a snapfs archive's files are still
    /// checked against its embedded manifest. Qdrant hashes nothing then either.
    Skipped,
}

impl ArchiveHash {
    /// For a source whose checksum, if any, is known now (every source but the mount).
    pub fn known_now(checksum: Option<String>) -> ArchiveHash {
        checksum.map_or(ArchiveHash::Skipped, ArchiveHash::Expected)
    }

    /// For an upload into `recover/`, whose sidecar may come after it.
    pub fn maybe_later(checksum: Option<String>) -> ArchiveHash {
        checksum.map_or(ArchiveHash::Reported, ArchiveHash::Expected)
    }
}

/// Start receiving an archive for a restore into a new staging directory on the
/// collections' file system (so the switch is a rename), shown in `info.json` as
/// a restore of `shown_as` (collection, what); `hash` says whether the whole
/// archive is hashed and checked (see [`Intake::start`]).
pub fn begin(
    snapshots: &Arc<Snapshots>,
    shown_as: Option<(String, String)>,
    hash: ArchiveHash,
) -> Result<Intake> {
    let storage = snapshots.storage();
    Intake::start(
        snapshots,
        storage.restore_staging_dir(),
        shown_as,
        hash,
        storage.max_restore_bytes(),
        &storage.restore_ledger(),
    )
}

/// An archive being received and unpacked into a staging directory.
pub struct Intake {
    unpack_tx: Option<mpsc::Sender<Bytes>>,
    /// `None` when the archive is not hashed ([`ArchiveHash::Skipped`]).
    hash_tx: Option<mpsc::Sender<Bytes>>,
    unpacker: Option<JoinHandle<std::result::Result<VerifyReport, SnapshotError>>>,
    hasher: Option<JoinHandle<String>>,
    pending: BytesMut,
    /// Bytes received so far (shown in `info.json` while the restore runs).
    received: Arc<AtomicU64>,
    started: std::time::Instant,
    staging: Option<PathBuf>,
    /// Why the unpacker stopped early, once known.
    failed: Option<SnapshotError>,
    /// The archive's SHA-256 as given before its first byte, checked at the end.
    expected: Option<String>,
    /// Stops the unpacker at its next MiB when the intake is abandoned.
    cancel: Arc<AtomicBool>,
    /// Counts this restore in `snapshot_recovery_running` while its bytes arrive.
    _running: crate::metrics::RecoveryRunning,
    /// Shows it in its collection's `info.json`, when the collection is known.
    _shown: Option<Running>,
}

/// A fully received and unpacked archive: its staging directory (removed when this
/// is dropped, unless a restore moved it into place) and what the unpacking found.
pub struct Received {
    staging: PathBuf,
    pub report: VerifyReport,
    /// From the first byte's arrival (the intake's start) to the last one unpacked.
    pub took: std::time::Duration,
}

impl Received {
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Check the archive against `expected`, a checksum that came after its first
    /// byte (a sidecar): refused unless they match, or when the archive was not
    /// hashed (received as [`ArchiveHash::Skipped`]: then none was to come).
    pub fn check_checksum(&self, expected: &str) -> std::result::Result<(), SnapshotError> {
        match &self.report.sha256 {
            Some(actual) => check_checksum(expected, actual),
            None => Err(SnapshotError::invalid(
                "the archive was received without hashing it, so a checksum given now cannot be checked: give the checksum with the archive",
            )),
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        remove_staging(&self.staging);
    }
}

impl Intake {
    /// Start receiving into `staging` (created here; it must not exist), refusing
    /// the archive once its entries declare more bytes than the file system holding
    /// `staging` has free. `shown_as` (collection, what) makes the restore visible in
    /// that collection's `info.json` while the bytes arrive. `hash`: the archive's
    /// SHA-256 when known now, checked by [`Intake::finish`] (it spares hashing each
    /// file on its own), or whether to compute it at all. `max_logical` bounds the logical bytes the
    /// archive's files may describe (`storage.max_restore_bytes`; `None`:
    /// [`DEFAULT_LOGICAL_BYTES`]). `ledger`: the disk bytes the storage's restores
    /// have declared (see [`Reservation`]).
    pub fn start(
        snapshots: &Arc<Snapshots>,
        staging: PathBuf,
        shown_as: Option<(String, String)>,
        hash: ArchiveHash,
        max_logical: Option<u64>,
        ledger: &Arc<AtomicU64>,
    ) -> Result<Intake> {
        fs_err::create_dir(&staging)?;
        let free = match free_space(&staging) {
            Ok(free) => free,
            Err(err) => {
                remove_staging(&staging);
                return Err(err.into());
            }
        };
        let received = Arc::new(AtomicU64::new(0));
        let (unpack_tx, unpack_rx) = mpsc::channel::<Bytes>(QUEUE);
        let dest = staging.clone();
        let file_digests = match hash {
            ArchiveHash::Expected(_) => FileDigests::CoveredByArchiveChecksum,
            ArchiveHash::Reported | ArchiveHash::Skipped => FileDigests::Check,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            space: Some(free),
            logical: max_logical.unwrap_or(DEFAULT_LOGICAL_BYTES),
            cancel: cancel.clone(),
            reservation: Some(Arc::new(Reservation::new(ledger))),
        };
        let unpacker = std::thread::Builder::new()
            .name("restore-unpack".into())
            .spawn(move || unpack_from(unpack_rx, &dest, &limits, file_digests))?;
        let (hash_tx, hasher) = match hash {
            ArchiveHash::Skipped => (None, None),
            ArchiveHash::Expected(_) | ArchiveHash::Reported => {
                let (hash_tx, hash_rx) = mpsc::channel::<Bytes>(QUEUE);
                let hasher = std::thread::Builder::new()
                    .name("restore-hash".into())
                    .spawn(move || hash_all(hash_rx))?;
                (Some(hash_tx), Some(hasher))
            }
        };
        let expected = match hash {
            ArchiveHash::Expected(expected) => Some(expected),
            ArchiveHash::Reported | ArchiveHash::Skipped => None,
        };
        Ok(Intake {
            unpack_tx: Some(unpack_tx),
            hash_tx,
            unpacker: Some(unpacker),
            hasher,
            pending: BytesMut::new(),
            received: received.clone(),
            started: std::time::Instant::now(),
            staging: Some(staging),
            failed: None,
            expected,
            cancel,
            _running: crate::metrics::RecoveryRunning::start(
                shown_as
                    .as_ref()
                    .map_or("", |(collection, _)| collection.as_str()),
            ),
            _shown: shown_as.map(|(collection, of)| {
                Running::start(snapshots, &collection, of, "receiving", received)
            }),
        })
    }

    /// Refuse up front an archive whose announced size (a Content-Length, a file's
    /// length) cannot fit.
    pub fn expect_size(&self, size: u64) -> Result<()> {
        let staging = self.staging.as_deref().expect("intake in use");
        let free = free_space(staging)?;
        if size > free {
            return Err(SnapshotError::TooLarge { size, free }.into());
        }
        Ok(())
    }

    /// Take the next bytes (blocking; not from async code).
    pub fn push_blocking(&mut self, data: &[u8]) -> Result<()> {
        self.check_failed()?;
        self.count(data.len());
        self.gather(data);
        if self.pending.len() >= CHUNK {
            let chunk = self.pending.split().freeze();
            self.send_blocking(chunk)?;
        }
        Ok(())
    }

    /// Take the next bytes (from async code: waits without blocking a thread).
    pub async fn push(&mut self, data: Bytes) -> Result<()> {
        self.check_failed()?;
        self.count(data.len());
        let chunk = if self.pending.is_empty() && data.len() >= CHUNK / 4 {
            data
        } else {
            self.gather(&data);
            if self.pending.len() < CHUNK {
                return Ok(());
            }
            self.pending.split().freeze()
        };
        let (hash_tx, unpack_tx) = self.senders();
        // The hasher never stops early; the unpacker does when it refuses the archive.
        if let Some(hash_tx) = hash_tx {
            let _ = hash_tx.send(chunk.clone()).await;
        }
        if unpack_tx.send(chunk).await.is_err() {
            return Err(self.unpacker_failure());
        }
        Ok(())
    }

    /// Every byte is in: wait for the workers and return the unpacked archive with
    /// its SHA-256, checked against the one given at the start (blocking). On
    /// failure the staging directory is gone.
    pub fn finish(mut self) -> Result<Received> {
        self.check_failed()?;
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.send_blocking(chunk)?;
        }
        self.hash_tx = None;
        self.unpack_tx = None;
        let unpacked = self.join_unpacker();
        let sha256 =
            match self.hasher.take() {
                Some(hasher) => Some(hasher.join().map_err(|_| {
                    StorageError::internal("the restore's hashing thread panicked")
                })?),
                None => None,
            };
        let received = self.received();
        let mut report =
            unpacked.map_err(|e| refused(SnapshotError::from_unpacking(e, received).into()))?;
        if let (Some(expected), Some(actual)) = (&self.expected, &sha256) {
            check_checksum(expected, actual).map_err(|e| refused(e.into()))?;
        }
        report.sha256 = sha256;
        report.archive_bytes = received;
        let staging = self.staging.take().expect("intake in use");
        Ok(Received {
            staging,
            report,
            took: self.started.elapsed(),
        })
    }

    /// Add to the chunk being gathered (room for a whole chunk is made at once).
    fn gather(&mut self, data: &[u8]) {
        if self.pending.is_empty() {
            self.pending.reserve(CHUNK.max(data.len()));
        }
        self.pending.extend_from_slice(data);
    }

    fn count(&mut self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn senders(&self) -> (Option<mpsc::Sender<Bytes>>, mpsc::Sender<Bytes>) {
        (
            self.hash_tx.clone(),
            self.unpack_tx.clone().expect("intake in use"),
        )
    }

    fn send_blocking(&mut self, chunk: Bytes) -> Result<()> {
        let (hash_tx, unpack_tx) = self.senders();
        if let Some(hash_tx) = hash_tx {
            let _ = hash_tx.blocking_send(chunk.clone());
        }
        if unpack_tx.blocking_send(chunk).is_err() {
            return Err(self.unpacker_failure());
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(refusal) => Err(refusal.duplicate().into()),
            None => Ok(()),
        }
    }

    /// The unpacker stopped taking bytes: it refused the archive. Say why.
    fn unpacker_failure(&mut self) -> StorageError {
        let err = match self.join_unpacker() {
            Err(err) => SnapshotError::from_unpacking(err, self.received()),
            Ok(_) => SnapshotError::Io(io::Error::other("the archive's unpacker stopped early")),
        };
        self.failed = Some(err.duplicate());
        refused(err.into())
    }

    fn join_unpacker(&mut self) -> std::result::Result<VerifyReport, SnapshotError> {
        match self.unpacker.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(SnapshotError::Io(io::Error::other(
                    "the restore's unpacking thread panicked",
                )))
            }),
            None => Err(SnapshotError::Io(io::Error::other("already stopped"))),
        }
    }
}

impl Drop for Intake {
    /// Abandoned (or failed): stop the workers and remove what was unpacked. A
    /// refused archive's unpacker has already stopped, and is cleaned up at once.
    /// One still running is told to stop and is waited for on a thread of its own:
    /// a drop may run on an async worker, which must never block on a thread that
    /// may be in the middle of a large entry.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.hash_tx = None;
        self.unpack_tx = None;
        let unpacker = self.unpacker.take();
        let hasher = self.hasher.take();
        let staging = self.staging.take();
        if unpacker.is_none() && hasher.is_none() && staging.is_none() {
            return;
        }
        let stopped = unpacker.as_ref().is_none_or(|handle| handle.is_finished());
        let cleanup = move || {
            if let Some(handle) = unpacker {
                let _ = handle.join();
            }
            if let Some(handle) = hasher {
                let _ = handle.join();
            }
            if let Some(staging) = staging {
                remove_staging(&staging);
            }
        };
        if stopped {
            // The hasher ends as soon as it has hashed the few chunks queued.
            cleanup();
            return;
        }
        if let Err(err) = std::thread::Builder::new()
            .name("restore-cleanup".into())
            .spawn(cleanup)
        {
            tracing::warn!(%err, "could not start a thread to clean up an abandoned restore");
        }
    }
}

/// The unpacker thread: the archive from the queue into `dest`; then it drains
/// what follows the archive's end (padding, up to [`MAX_TRAILING`]), so the sender
/// never stalls.
fn unpack_from(
    rx: mpsc::Receiver<Bytes>,
    dest: &Path,
    limits: &Limits,
    file_digests: FileDigests,
) -> std::result::Result<VerifyReport, SnapshotError> {
    let mut reader = QueueReader {
        rx,
        current: Bytes::new(),
    };
    let report = unpack_entries(&mut reader, Some(dest), limits, file_digests)?;
    let trailing = io::copy(&mut (&mut reader).take(MAX_TRAILING + 1), &mut io::sink())?;
    if trailing > MAX_TRAILING {
        return Err(SnapshotError::NotTar(format!(
            "more than {MAX_TRAILING} bytes follow the archive's end-of-archive marker"
        )));
    }
    Ok(report)
}

/// What may follow an archive's end-of-archive marker: tar writers pad to their
/// record size (GNU tar 10 KiB by default, up to a few MiB with a large blocking
/// factor). More is not an archive being padded but a sender that does not stop.
const MAX_TRAILING: u64 = 8 << 20;

/// The hashing thread: SHA-256 and length of everything queued.
fn hash_all(mut rx: mpsc::Receiver<Bytes>) -> String {
    let mut hasher = Sha256::new();
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}

/// Reads the queued chunks as one stream; the queue's end is the stream's end.
struct QueueReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for QueueReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A refusal while receiving: logged and counted like one at the switch.
fn refused(err: StorageError) -> StorageError {
    super::progress::count_refusal(&err);
    tracing::warn!(%err, "restore refused while the archive arrived");
    err
}

/// Free bytes on the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let stats = crate::storage::filesystem_stats(dir)?;
    Ok(stats.f_bavail * stats.f_frsize)
}

fn remove_staging(staging: &Path) {
    if let Err(err) = fs_err::remove_dir_all(staging)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %staging.display(), %err, "could not remove a restore's staging directory");
    }
}
