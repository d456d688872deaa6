//! The SHA-256 of a whole archive: computed while an HTTP reader streams it from
//! start to end (no second pass), or by one full read when asked; remembered per
//! archive fingerprint, so the same state is never hashed twice, and a hash under
//! way is waited for, not repeated. The mount does not hash what `cp` reads: a
//! `.sha256` costs one pass when asked, and a copy nobody verifies costs none (on
//! a 2-core machine a hash beside the copy made it 20% slower).

use std::collections::HashMap;
use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::Snapshots;
use super::layout::ArchiveLayout;

/// Archive states remembered; each is 64 bytes.
const CACHE_ENTRIES: usize = 10_000;
/// Read size for a full hashing pass.
const CHUNK: usize = 1 << 20;

/// The checksums known, by archive fingerprint, and the hashes under way (part of
/// [`super::Snapshots`]).
pub struct Checksums {
    known: Mutex<lru::LruCache<[u8; 32], [u8; 32]>>,
    underway: Mutex<HashMap<[u8; 32], Arc<Underway>>>,
}

impl Default for Checksums {
    fn default() -> Self {
        Checksums {
            known: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).unwrap(),
            )),
            underway: Mutex::default(),
        }
    }
}

impl Checksums {
    pub fn known_sha256(&self, layout: &ArchiveLayout) -> Option<[u8; 32]> {
        self.known
            .lock()
            .unwrap()
            .get(&layout.fingerprint())
            .copied()
    }

    /// Record the checksum of `layout`'s bytes, computed by whoever read them all.
    pub fn remember(&self, layout: &ArchiveLayout, digest: [u8; 32]) {
        self.remember_fingerprint(layout.fingerprint(), digest);
    }

    fn remember_fingerprint(&self, fingerprint: [u8; 32], digest: [u8; 32]) {
        self.known.lock().unwrap().put(fingerprint, digest);
    }

    /// The archive's SHA-256: from the cache, from a hash already under way (waited
    /// for), or by reading it once.
    pub fn archive_sha256(&self, layout: &ArchiveLayout) -> io::Result<[u8; 32]> {
        loop {
            match self.claim(layout) {
                Claim::Known(digest) => return Ok(digest),
                Claim::Ours(claimed) => {
                    let digest = hash_layout(layout)?;
                    claimed.done(digest);
                    return Ok(digest);
                }
                // Given up (its read failed): try again, maybe hashing ourselves.
                Claim::Theirs(underway) => {
                    if let Some(digest) = underway.wait() {
                        return Ok(digest);
                    }
                }
            }
        }
    }

    fn claim(&self, layout: &ArchiveLayout) -> Claim<'_> {
        let fingerprint = layout.fingerprint();
        let mut map = self.underway.lock().unwrap();
        // Checked under the map's lock: a finished hash is in the cache before it
        // leaves the map.
        if let Some(digest) = self.known_sha256(layout) {
            return Claim::Known(digest);
        }
        if let Some(theirs) = map.get(&fingerprint) {
            return Claim::Theirs(theirs.clone());
        }
        let underway = Arc::new(Underway::default());
        map.insert(fingerprint, underway.clone());
        Claim::Ours(Claimed {
            checksums: self,
            fingerprint,
            underway,
            digest: None,
        })
    }
}

/// Read `layout` once, start to end, and hash it.
fn hash_layout(layout: &ArchiveLayout) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < layout.size() {
        let n = layout.read_at(offset, &mut buf)?;
        if n == 0 {
            return Err(io::Error::other("archive ended before its size"));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize().into())
}

/// One hash under way: its outcome, once there (`Some(None)`: given up).
#[derive(Default)]
struct Underway {
    outcome: Mutex<Option<Option<[u8; 32]>>>,
    ended: Condvar,
}

impl Underway {
    fn wait(&self) -> Option<[u8; 32]> {
        let mut outcome = self.outcome.lock().unwrap();
        loop {
            if let Some(result) = *outcome {
                return result;
            }
            outcome = self.ended.wait(outcome).unwrap();
        }
    }
}

enum Claim<'a> {
    Known([u8; 32]),
    /// Nobody hashes this archive: the caller does, and must report through this.
    Ours(Claimed<'a>),
    /// Someone else does: wait for them.
    Theirs(Arc<Underway>),
}

/// The right and duty to hash one archive; dropped without [`Claimed::done`], the
/// hash is given up and whoever waits tries again.
struct Claimed<'a> {
    checksums: &'a Checksums,
    fingerprint: [u8; 32],
    underway: Arc<Underway>,
    digest: Option<[u8; 32]>,
}

impl Claimed<'_> {
    fn done(mut self, digest: [u8; 32]) {
        self.digest = Some(digest);
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        // Remembered before the claim goes, so a new asker finds it in the cache.
        if let Some(digest) = self.digest {
            self.checksums
                .remember_fingerprint(self.fingerprint, digest);
        }
        self.checksums
            .underway
            .lock()
            .unwrap()
            .remove(&self.fingerprint);
        *self.underway.outcome.lock().unwrap() = Some(self.digest);
        self.underway.ended.notify_all();
    }
}

/// Follows one reader: as long as its reads are sequential from offset 0, the bytes
/// feed a hasher, and reaching the end records the archive's checksum. Kernel
/// readahead may re-read a little behind; such reads are ignored, a jump ahead stops
/// the hashing for this reader.
pub struct SequentialHasher {
    snapshots: Arc<Snapshots>,
    next: u64,
    hasher: Option<Sha256>,
}

impl SequentialHasher {
    /// A hasher for a reader of `layout`; idle when the checksum is known already.
    pub fn for_layout(snapshots: &Arc<Snapshots>, layout: &ArchiveLayout) -> Self {
        let hasher = snapshots
            .checksums
            .known_sha256(layout)
            .is_none()
            .then(Sha256::new);
        SequentialHasher {
            snapshots: snapshots.clone(),
            next: 0,
            hasher,
        }
    }

    pub fn observe(&mut self, layout: &ArchiveLayout, offset: u64, data: &[u8]) {
        let Some(hasher) = self.hasher.as_mut() else {
            return;
        };
        let end = offset + data.len() as u64;
        if offset > self.next {
            self.hasher = None;
            return;
        }
        if end <= self.next {
            return;
        }
        let fresh = &data[(self.next - offset) as usize..];
        hasher.update(fresh);
        self.next = end;
        if self.next == layout.size() {
            let digest: [u8; 32] = self.hasher.take().unwrap().finalize().into();
            self.snapshots.checksums.remember(layout, digest);
        }
    }
}

/// The checksum in a sidecar: bare hex, or a `sha256sum` line (`<hex>  <name>`).
pub fn sidecar_checksum(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::layout::ArchiveBuilder;

    /// An archive of one file of `len` bytes of `seed` (a distinct state per seed),
    /// and the SHA-256 of all its bytes, read through the layout.
    fn archive(seed: u8, len: usize) -> (Arc<ArchiveLayout>, [u8; 32]) {
        let mut builder = ArchiveBuilder::new(1_700_000_000 + seed as u64);
        builder.bytes("data", vec![seed; len]);
        let layout = Arc::new(builder.finish().unwrap());
        let mut all = vec![0u8; layout.size() as usize];
        assert_eq!(layout.read_at(0, &mut all).unwrap(), all.len());
        (layout.clone(), Sha256::digest(&all).into())
    }

    #[test]
    fn askers_of_one_state_share_one_hash() {
        let (layout, expected) = archive(1, 64 << 20);
        // The first asker claims the hash; the others wait for it.
        let checksums = Arc::new(Checksums::default());
        let Claim::Ours(claimed) = checksums.claim(&layout) else {
            panic!("nobody hashes this state yet")
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (layout, checksums) = (layout.clone(), checksums.clone());
                std::thread::spawn(move || checksums.archive_sha256(&layout).unwrap())
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(matches!(checksums.claim(&layout), Claim::Theirs(_)));
        let digest = hash_layout(&layout).unwrap();
        claimed.done(digest);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), expected);
        }
        assert!(matches!(checksums.claim(&layout), Claim::Known(d) if d == expected));
    }

    #[test]
    fn a_hash_given_up_is_done_by_the_next_asker() {
        let (layout, expected) = archive(2, 1 << 20);
        let checksums = Arc::new(Checksums::default());
        let Claim::Ours(claimed) = checksums.claim(&layout) else {
            panic!("nobody hashes this state yet")
        };
        let waiter = {
            let (layout, checksums) = (layout.clone(), checksums.clone());
            std::thread::spawn(move || checksums.archive_sha256(&layout).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(claimed);
        assert_eq!(waiter.join().unwrap(), expected);
        assert_eq!(checksums.known_sha256(&layout), Some(expected));
    }
}
