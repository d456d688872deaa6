//! Updates accepted while a shard is frozen wait here, durably, until the thaw.
//!
//! A frozen shard's files must not change (a snapshot is streaming them), so an
//! update cannot go to the engine's WAL inside the shard directory. It is appended
//! to this log beside the shard instead, acknowledged, and applied in order when the
//! shard thaws; the log is then emptied. On start-up a non-empty log is applied
//! after the engine replayed its own WAL.
//!
//! Durability is the engine WAL's: a `write(2)` into the page cache, which survives
//! a `kill -9` of the daemon (not a power cut before the kernel writes back).
//! Replaying the whole log a second time after a crash in the middle of a replay is
//! harmless: every logged operation sets a point's whole state (upsert, delete), so
//! re-running the same sequence ends in the same state.
//!
//! Record: `u32 LE length`, `u32 LE crc32(payload)`, JSON payload. A torn tail (crash
//! in the middle of an append, never acknowledged) is detected and cut off.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::ops::ShardOp;

const HEADER_LEN: usize = 8;

pub struct PendingLog {
    path: PathBuf,
    file: File,
    records: usize,
}

impl PendingLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut log = PendingLog {
            path: path.to_path_buf(),
            file,
            records: 0,
        };
        let (records, valid_len) = log.scan()?;
        let len = log.file.metadata()?.len();
        if valid_len < len {
            tracing::warn!(path = %path.display(), valid_len, len, "cutting a torn tail off the pending log");
            log.file.set_len(valid_len)?;
        }
        log.records = records;
        Ok(log)
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn len(&self) -> usize {
        self.records
    }

    pub fn append(&mut self, op: &ShardOp) -> Result<()> {
        let payload = serde_json::to_vec(op).map_err(StorageError::from_cause)?;
        let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        // One write of the whole record: a crash leaves it whole or torn, never interleaved.
        self.file.write_all(&record)?;
        self.records += 1;
        Ok(())
    }

    /// Every logged operation, in order.
    pub fn read_all(&self) -> Result<Vec<ShardOp>> {
        let mut ops = Vec::with_capacity(self.records);
        self.for_each_record(|payload| {
            let op = serde_json::from_slice(payload).map_err(|e| {
                StorageError::internal_from(format!("pending log {}", self.path.display()), e)
            })?;
            ops.push(op);
            Ok(())
        })?;
        Ok(ops)
    }

    /// Empty the log once its operations are in the engine's own WAL.
    pub fn clear(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.records = 0;
        Ok(())
    }

    fn scan(&self) -> Result<(usize, u64)> {
        let mut count = 0;
        let valid = self.for_each_record(|_| {
            count += 1;
            Ok(())
        })?;
        Ok((count, valid))
    }

    /// Calls `visit` on each whole record; returns the length of the valid prefix.
    fn for_each_record(&self, mut visit: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        let mut valid = 0u64;
        let mut header = [0u8; HEADER_LEN];
        let mut payload = Vec::new();
        loop {
            if !read_exact_or_eof(&mut reader, &mut header)? {
                return Ok(valid);
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
            payload.resize(len, 0);
            if !read_exact_or_eof(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
                return Ok(valid);
            }
            visit(&payload)?;
            valid += (HEADER_LEN + len) as u64;
        }
    }
}

/// `read_exact` that reports a short read at the end as `false` instead of an error.
fn read_exact_or_eof(reader: &mut impl Read, buf: &mut [u8]) -> Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdrant_edge::PointId;

    #[test]
    fn survives_reopen_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.pending");
        let mut log = PendingLog::open(&path).unwrap();
        log.append(&ShardOp::Delete(vec![PointId::NumId(1)]))
            .unwrap();
        log.append(&ShardOp::Delete(vec![PointId::NumId(2)]))
            .unwrap();
        drop(log);
        // A torn third record: header promises more bytes than follow.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);

        let mut log = PendingLog::open(&path).unwrap();
        assert_eq!(log.len(), 2);
        let ops = log.read_all().unwrap();
        assert!(matches!(&ops[1], ShardOp::Delete(ids) if ids == &vec![PointId::NumId(2)]));
        log.append(&ShardOp::Delete(vec![PointId::NumId(3)]))
            .unwrap();
        assert_eq!(PendingLog::open(&path).unwrap().len(), 3);
        log.clear().unwrap();
        assert!(PendingLog::open(&path).unwrap().is_empty());
    }

    #[test]
    fn corrupt_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.pending");
        let mut log = PendingLog::open(&path).unwrap();
        log.append(&ShardOp::Delete(vec![PointId::NumId(1)]))
            .unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(PendingLog::open(&path).unwrap().is_empty());
    }
}
