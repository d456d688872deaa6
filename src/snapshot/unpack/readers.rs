//! The readers the archive is read through: one counts (and may hash) the bytes,
//! one keeps the raw header blocks the `tar` crate reads past without showing
//! them (a sparse entry's map is in them). Both wrap any reader, so the walk stays
//! one sequential pass.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::not_tar;
use crate::snapshot::digest::hex;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::limits::Limits;

/// Counts (and, with a hasher, hashes) everything read through it.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    pub(super) bytes: u64,
}

impl<R> HashingReader<R> {
    pub(super) fn new(inner: R, hash: bool) -> Self {
        HashingReader {
            inner,
            hasher: hash.then(Sha256::new),
            bytes: 0,
        }
    }

    pub(super) fn digest(self) -> Option<String> {
        self.hasher.map(|h| hex(&h.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Records the raw bytes read while it is on: the header blocks of each entry (and
/// the previous entry's padding), whose sparse maps the `tar` crate reads but does
/// not expose.
#[derive(Default)]
pub(super) struct HeaderTap {
    on: bool,
    bytes: Vec<u8>,
}

impl HeaderTap {
    pub(super) fn start(&mut self) {
        self.on = true;
        self.bytes.clear();
    }

    pub(super) fn stop(&mut self) -> Vec<u8> {
        self.on = false;
        std::mem::take(&mut self.bytes)
    }
}

pub(super) struct Tapped<R> {
    pub(super) inner: R,
    pub(super) tap: Rc<RefCell<HeaderTap>>,
}

/// The most header bytes one entry may have (long name, pax records, sparse map
/// extension blocks): 16 MiB holds a map of some 700,000 extents. More is refused
/// instead of being read into memory.
const MAX_HEADER_BYTES: usize = 16 << 20;

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut tap = self.tap.borrow_mut();
        if tap.on {
            if tap.bytes.len() + n > MAX_HEADER_BYTES {
                return Err(io::Error::other(
                    "an entry's headers take more than 16 MiB (no snapshot has names, pax records or sparse maps that large)",
                ));
            }
            tap.bytes.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Read an entry to its end in 1 MiB pieces, handing each to `sink`; stops when
/// `cancel` is set.
pub(super) fn copy_entry(
    entry: &mut impl Read,
    shown: &str,
    limits: &Limits,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        limits.check_cancel()?;
        let n = entry
            .read(&mut buf)
            .map_err(|e| not_tar(&format!("{shown}: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n])?;
    }
}
