//! restic's lock protocol, which rustic_core leaves out and a repository shared with
//! the restic CLI needs: a writer holds a shared lock, `prune` an exclusive one, and
//! each side refuses to start against the other's. Without it a `restic prune` run
//! beside a generation being written would delete the new packs that no index names
//! yet.
//!
//! A lock is a file `locks/<id>`: JSON (`time`, `exclusive`, `hostname`, `username`,
//! `pid`, `uid`, `gid`) encrypted like every repository file (AES-256-CTR +
//! Poly1305-AES under the master key; `id` the SHA-256 of the ciphertext). As restic
//! does: a lock older than 30 minutes, or one of this host whose process is gone, is
//! stale and ignored; a held lock is renewed every 5 minutes; after writing its own
//! lock a locker looks again and backs off if it now collides.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::Aead;

type Nonce = aes256ctr_poly1305aes::aead::Nonce<Aes256CtrPoly1305Aes>;
use bytes::Bytes;
use rand::RngCore;
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::MasterKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::place::Place;

const DIR: &str = "locks";
/// restic's: a lock not renewed for this long is stale.
const STALE: Duration = Duration::from_secs(30 * 60);
/// restic's: how often a held lock is renewed.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// How long to wait before looking again after writing a lock (restic waits 200 ms).
const SETTLE: Duration = Duration::from_millis(200);
/// A lock file is some hundred bytes; one larger is not read (nor believed).
const MAX_LOCK_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockFile {
    time: String,
    exclusive: bool,
    hostname: String,
    #[serde(default)]
    username: String,
    pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    gid: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The repository's key as the AEAD takes it: encryption key, then Poly1305's k and r.
#[derive(Clone)]
pub struct LockKey([u8; 64]);

impl LockKey {
    pub fn new(key: &MasterKey) -> Option<LockKey> {
        let mut bytes = [0u8; 64];
        if key.encrypt.len() != 32 || key.mac.k.len() != 16 || key.mac.r.len() != 16 {
            return None;
        }
        bytes[..32].copy_from_slice(&key.encrypt);
        bytes[32..48].copy_from_slice(&key.mac.k);
        bytes[48..].copy_from_slice(&key.mac.r);
        Some(LockKey(bytes))
    }

    fn cipher(&self) -> Aes256CtrPoly1305Aes {
        Aes256CtrPoly1305Aes::new(aes256ctr_poly1305aes::Key::from_slice(&self.0))
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plain)
            .expect("encryption of a small buffer cannot fail");
        [&nonce[..], &sealed].concat()
    }

    fn open(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 32 {
            return None;
        }
        self.cipher()
            .decrypt(Nonce::from_slice(&data[..16]), &data[16..])
            .ok()
    }
}

/// Who holds a lock, in words (for the error that refuses to start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder(pub String);

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else holds a lock this one cannot share.
    Held(Holder),
    Io(std::io::Error),
}

impl From<std::io::Error> for LockError {
    fn from(e: std::io::Error) -> Self {
        LockError::Io(e)
    }
}

/// A held lock; renewed in the background, removed when dropped.
pub struct Lock {
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
    current: Arc<Mutex<String>>,
    place: Arc<dyn Place>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        let path = self.current.lock().unwrap().clone();
        if let Err(e) = self.place.remove(&path) {
            tracing::warn!(error = %e, "could not remove the repository lock");
        }
    }
}

fn this_host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn process_exists(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

fn write_lock(place: &dyn Place, key: &LockKey, exclusive: bool) -> std::io::Result<String> {
    let lock = LockFile {
        time: Timestamp::now().to_string(),
        exclusive,
        hostname: this_host(),
        username: "snapfs".into(),
        pid: std::process::id() as i64,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
    };
    let sealed = key.seal(&serde_json::to_vec(&lock).expect("a lock serializes"));
    let id = crate::snapshot::digest::hex(&Sha256::digest(&sealed));
    let path = format!("{DIR}/{id}");
    place.write(&path, &[Bytes::from(sealed)])?;
    Ok(path)
}

/// The lock files there, each with what it says: `None` for one that is not a lock
/// of this repository (larger than a lock is, another key, damaged).
fn read_locks(
    place: &dyn Place,
    key: &LockKey,
) -> std::io::Result<Vec<(String, Option<LockFile>)>> {
    let mut out = Vec::new();
    for (name, size) in place.list(DIR, false)? {
        let path = format!("{DIR}/{name}");
        let lock = if size > MAX_LOCK_BYTES {
            None
        } else {
            let data = match place.read(&path, None) {
                Ok(data) => data,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            key.open(&data)
                .and_then(|plain| serde_json::from_slice::<LockFile>(&plain).ok())
        };
        out.push((path, lock));
    }
    Ok(out)
}

/// restic's rule: not renewed for 30 minutes (or no readable time), or of this host
/// and its process gone.
fn is_stale(lock: &LockFile, host: &str) -> bool {
    let too_old = lock.time.parse::<Timestamp>().map_or(true, |t| {
        Timestamp::now().duration_since(t).unsigned_abs() > STALE
    });
    too_old || (lock.hostname == host && !process_exists(lock.pid))
}

/// The live locks other than `own`: (exclusive, who).
fn others(
    place: &dyn Place,
    key: &LockKey,
    own: Option<&str>,
) -> std::io::Result<Vec<(bool, Holder)>> {
    let host = this_host();
    let mut out = Vec::new();
    for (path, lock) in read_locks(place, key)? {
        match lock {
            _ if Some(path.as_str()) == own => {}
            // Not one of this repository's locks: restic refuses to go on then; so
            // does this.
            None => out.push((true, Holder("an unreadable lock file".into()))),
            Some(lock) if !is_stale(&lock, &host) => {
                let kind = if lock.exclusive { "an exclusive" } else { "a" };
                out.push((
                    lock.exclusive,
                    Holder(format!(
                        "{kind} lock of PID {} on host {} since {}",
                        lock.pid, lock.hostname, lock.time
                    )),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// Remove the stale locks (a process of this host gone without removing its lock, or
/// a lock not renewed for 30 minutes), as `restic unlock` does: restic 0.14 does not
/// start under one, even a stale one. Returns how many were removed.
pub fn remove_stale(place: &dyn Place, key: &LockKey) -> std::io::Result<usize> {
    let host = this_host();
    let mut removed = 0;
    for (path, lock) in read_locks(place, key)? {
        if lock.is_some_and(|lock| is_stale(&lock, &host)) {
            place.remove(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Remove the locks this very process holds (its jobs are cut by a stop): the
/// process exits next, and restic 0.14 would not start under them. Returns how many.
pub fn remove_own(place: &dyn Place, key: &LockKey) -> std::io::Result<usize> {
    let (host, pid) = (this_host(), std::process::id() as i64);
    let mut removed = 0;
    for (path, lock) in read_locks(place, key)? {
        if lock.is_some_and(|lock| lock.hostname == host && lock.pid == pid) {
            place.remove(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn conflict(others: &[(bool, Holder)], exclusive: bool) -> Option<Holder> {
    others
        .iter()
        .find(|(theirs, _)| exclusive || *theirs)
        .map(|(_, who)| who.clone())
}

/// Take a shared (`exclusive` false: writing generations) or exclusive (forget,
/// prune) lock of the repository at `place`.
pub fn acquire(place: Arc<dyn Place>, key: &LockKey, exclusive: bool) -> Result<Lock, LockError> {
    if let Some(who) = conflict(&others(&*place, key, None)?, exclusive) {
        return Err(LockError::Held(who));
    }
    let path = write_lock(&*place, key, exclusive)?;
    std::thread::sleep(SETTLE);
    match others(&*place, key, Some(&path)) {
        Ok(found) => {
            if let Some(who) = conflict(&found, exclusive) {
                let _ = place.remove(&path);
                return Err(LockError::Held(who));
            }
        }
        Err(e) => {
            let _ = place.remove(&path);
            return Err(e.into());
        }
    }
    let current = Arc::new(Mutex::new(path));
    let (stop, stopped) = mpsc::channel::<()>();
    let renewer = {
        let (place, key, current) = (place.clone(), key.clone(), current.clone());
        std::thread::Builder::new()
            .name("repo-lock".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(RENEW) {
                    match write_lock(&*place, &key, exclusive) {
                        Ok(new) => {
                            let old = std::mem::replace(&mut *current.lock().unwrap(), new);
                            let _ = place.remove(&old);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not renew the repository lock"),
                    }
                }
            })?
    };
    Ok(Lock {
        stop: Some(stop),
        renewer: Some(renewer),
        current,
        place,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::store::repository::place::LocalPlace;

    fn key() -> LockKey {
        LockKey::new(&MasterKey::new()).unwrap()
    }

    #[test]
    fn shared_locks_share_and_exclusive_ones_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let place: Arc<dyn Place> = Arc::new(LocalPlace::new(dir.path()));
        let key = key();
        let a = acquire(place.clone(), &key, false).unwrap();
        let b = acquire(place.clone(), &key, false).unwrap();
        match acquire(place.clone(), &key, true) {
            Err(LockError::Held(Holder(who))) => {
                assert!(
                    who.contains(&format!("PID {}", std::process::id())),
                    "{who}"
                )
            }
            _ => panic!("an exclusive lock was taken beside shared ones"),
        }
        drop((a, b));
        assert!(
            place.list(DIR, false).unwrap().is_empty(),
            "locks removed on drop"
        );
        let x = acquire(place.clone(), &key, true).unwrap();
        assert!(matches!(
            acquire(place.clone(), &key, false),
            Err(LockError::Held(_))
        ));
        drop(x);
        // A lock of this host whose process is gone is stale.
        let mut stale = serde_json::to_value(LockFile {
            time: Timestamp::now().to_string(),
            exclusive: true,
            hostname: this_host(),
            username: String::new(),
            pid: i32::MAX as i64,
            uid: 0,
            gid: 0,
        })
        .unwrap();
        stale["pid"] = (i32::MAX as i64).into();
        let sealed = key.seal(&serde_json::to_vec(&stale).unwrap());
        place.write("locks/aa", &[Bytes::from(sealed)]).unwrap();
        drop(acquire(place.clone(), &key, true).unwrap());
        assert_eq!(
            remove_stale(&*place, &key).unwrap(),
            1,
            "the dead process's lock"
        );
        assert!(place.list(DIR, false).unwrap().is_empty());
        // One larger than any lock is not read, and not ignored either.
        place
            .write("locks/cc", &[Bytes::from(vec![0u8; 70 * 1024])])
            .unwrap();
        assert!(matches!(
            acquire(place.clone(), &key, false),
            Err(LockError::Held(Holder(who))) if who == "an unreadable lock file"
        ));
        place.remove("locks/cc").unwrap();
        // One this key cannot read is not ignored.
        place
            .write("locks/bb", &[Bytes::from_static(&[7u8; 80])])
            .unwrap();
        assert!(matches!(
            acquire(place, &key, false),
            Err(LockError::Held(Holder(who))) if who == "an unreadable lock file"
        ));
    }
}
