//! Bringing an archive in, from wherever it comes: every restore source (an upload,
//! an `http(s)://` download, an `s3://` object, a peer's partial snapshot, a
//! `file://` path, a stored snapshot) is a [`Source`], and one pump moves it into a
//! restore [`Intake`], which unpacks it while it arrives.
//!
//! A source is either a stream of chunks (the network: each chunk awaited within
//! the stall limit) or something read by offset (a file, a stored snapshot: read on
//! a blocking thread). Either way the size it declares is checked before the first
//! byte is believed, the intake's refusal never quotes the bytes received (see
//! [`crate::snapshot::error::unquoted`]), and a failure of the source itself is put in the
//! source's own words ([`Source::failed`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Snapshots;
use super::intake::{ArchiveHash, Intake, Received};
use super::restore;
use super::store::StoredReader;
use crate::storage::error::with_causes;
use crate::storage::{Result, StorageError};

/// A stream of chunks, or its failure in words.
pub type Chunks<'a> = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, String>> + Send + 'a>>;

/// Where an archive comes from, and how it is read.
pub enum Body<'a> {
    /// Chunks as they arrive (a network transfer).
    Stream(Chunks<'a>),
    /// Bytes by offset (a file, a stored snapshot), read from 0 to `size`.
    Reader(Arc<dyn StoredReader>),
}

pub struct Source<'a> {
    pub body: Body<'a>,
    /// The size it declares, if any (checked against the restore's limits first).
    pub size: Option<u64>,
    /// How the restore shows in `info.json` (see [`restore::shown_as`]).
    pub shown_as: Option<(String, String)>,
    /// The archive's expected SHA-256, when known before the first byte.
    pub checksum: Option<String>,
    /// What the bytes are called in a refusal ("what was fetched", "the upload").
    pub what: &'static str,
    /// A chunk that does not come within this long fails the transfer.
    pub stall: Option<Duration>,
    /// A failure of the source itself (a broken transfer, a stall), in its words.
    pub failed: Box<dyn Fn(String) -> StorageError + Send + Sync>,
}

impl Source<'_> {
    /// The same source, declaring `size` bytes.
    pub fn sized(self, size: Option<u64>) -> Self {
        Source { size, ..self }
    }

    /// Move it into a new intake and wait until every byte is in ([`pump`]).
    pub async fn pump(self, snapshots: &Arc<Snapshots>) -> Result<Received> {
        pump(snapshots, self).await
    }

    /// Chunks from a stream of `Result<Bytes, E>` (reqwest, object_store, multipart…).
    pub fn chunks<'a, S, E>(stream: S) -> Body<'a>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'a,
        E: std::error::Error + 'static,
    {
        Body::Stream(Box::pin(stream.map(|r| r.map_err(|e| with_causes(&e)))))
    }
}

/// Move `source` into a new intake and wait until every byte is in.
pub async fn pump(snapshots: &Arc<Snapshots>, source: Source<'_>) -> Result<Received> {
    let Source {
        body,
        size,
        shown_as,
        checksum,
        what,
        stall,
        failed,
    } = source;
    let refused = |e| crate::snapshot::error::unquoted(what, e);
    match body {
        Body::Reader(reader) => {
            let snapshots = snapshots.clone();
            let size = size.ok_or_else(|| StorageError::internal("a reader source has a size"))?;
            tokio::task::spawn_blocking(move || {
                let mut intake =
                    restore::begin(&snapshots, shown_as, ArchiveHash::known_now(checksum))?;
                intake.expect_size(size)?;
                match read_into(&mut intake, &*reader, size) {
                    Ok(()) => intake.finish(),
                    Err(ReadFailed::Source(e)) => Err(failed(e.to_string())),
                    Err(ReadFailed::Intake(e)) => Err(e),
                }
            })
            .await
            .map_err(|e| StorageError::internal_from("restore reader", e))?
            .map_err(refused)
        }
        Body::Stream(mut chunks) => {
            let mut intake = begin(snapshots, shown_as, checksum).await?;
            if let Some(size) = size {
                intake.expect_size(size)?;
            }
            loop {
                let next = match stall {
                    Some(stall) => tokio::time::timeout(stall, chunks.next()).await.map_err(|_| {
                        failed(format!(
                            "the transfer stalled: nothing arrived for {} s (storage.transfer_stall_secs)",
                            stall.as_secs_f64()
                        ))
                    })?,
                    None => chunks.next().await,
                };
                match next {
                    None => break,
                    Some(Ok(chunk)) => intake.push(chunk).await.map_err(refused)?,
                    Some(Err(why)) => return Err(failed(why)),
                }
            }
            tokio::task::spawn_blocking(move || intake.finish())
                .await
                .map_err(|e| StorageError::internal_from("restore intake", e))?
                .map_err(refused)
        }
    }
}

/// A new intake (its staging directory made on a blocking thread).
async fn begin(
    snapshots: &Arc<Snapshots>,
    shown_as: Option<(String, String)>,
    checksum: Option<String>,
) -> Result<Intake> {
    let snapshots = snapshots.clone();
    tokio::task::spawn_blocking(move || {
        restore::begin(&snapshots, shown_as, ArchiveHash::known_now(checksum))
    })
    .await
    .map_err(|e| StorageError::internal_from("restore intake", e))?
}

/// Read `size` bytes of `reader` in order into `intake`. An I/O error of the
/// reader is the source's; the intake's refusals pass through as they are.
fn read_into(intake: &mut Intake, reader: &dyn StoredReader, size: u64) -> Result<(), ReadFailed> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size {
        let want = buf.len().min((size - offset) as usize);
        let n = reader
            .read_at(offset, &mut buf[..want])
            .map_err(ReadFailed::Source)?;
        if n == 0 {
            return Err(ReadFailed::Source(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it ended before its size",
            )));
        }
        intake
            .push_blocking(&buf[..n])
            .map_err(ReadFailed::Intake)?;
        offset += n as u64;
    }
    Ok(())
}

enum ReadFailed {
    Source(std::io::Error),
    Intake(StorageError),
}
