//! The core's side of restore through `recover/` directories: create, write, the
//! close (flush) or rename that runs the restore, and its `.error` on failure.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::handles::Handle;
use super::namespace::Node;
use super::recover;
use super::{Attr, FsError, FsResult, SnapFs, file_attr};
use crate::service::recover::restore_received;
use crate::snapshot::intake::{ArchiveHash, Received};
use crate::snapshot::store::SNAPSHOT_EXT;
use crate::snapshot::{Scope, restore};
use crate::storage::StorageError;

impl SnapFs {
    /// `create` in a recover/ directory: an upload (or a checksum sidecar) starts,
    /// owned by `creator` (user, group) while it is written.
    pub fn create(&self, parent: u64, name: &str, creator: (u32, u32)) -> FsResult<(Attr, u64)> {
        let node = self.node(parent)?;
        let Node::Recover(scope) = node else {
            return Err(self.refuse_change(parent));
        };
        self.ns.check_scope(&scope)?;
        let snapshots = self.ns.snapshots().clone();
        let upload = self
            .recover
            .create(&scope, name, creator, |shown_as, checksum| {
                restore::begin(&snapshots, shown_as, ArchiveHash::maybe_later(checksum))
            })?;
        let entry = Node::RecoverEntry(scope, name.to_string());
        let ino = self.remember_node(&entry);
        let fh = self.handles.insert(Handle::Upload(Box::new(upload)));
        let attr = Attr {
            perm: 0o644,
            owner: Some(creator),
            ..file_attr(ino, 0, SystemTime::now(), true)
        };
        Ok((attr, fh))
    }

    /// A file in a recover/ directory (whose attributes writers may set freely).
    pub fn is_upload(&self, ino: u64) -> bool {
        matches!(self.node(ino), Ok(Node::RecoverEntry(..)))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        match &*self.handles.get(fh)? {
            Handle::Upload(upload) => self.recover.write(upload, offset, data),
            _ => Err(FsError::ReadOnly("this file is read-only")),
        }
    }

    /// `close` (FUSE flush): a visible upload is complete, so restore it now; the
    /// outcome is what `close` returns.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let Ok(handle) = self.handles.get(fh) else {
            return Ok(());
        };
        let Handle::Upload(upload) = &*handle else {
            return Ok(());
        };
        // dd (and shells) close a duplicate descriptor before writing anything: a
        // close with nothing written is not the end of the upload.
        if recover::is_hidden(&upload.name)
            || upload.written() == 0
            || upload.done.swap(true, Ordering::SeqCst)
        {
            return Ok(());
        }
        self.finish_upload(&upload.scope, &upload.name)
    }

    /// `rename` inside a recover/ directory (rsync's temp file → its real name).
    pub fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) -> FsResult<()> {
        let (Node::Recover(scope), Node::Recover(target)) =
            (self.node(parent)?, self.node(new_parent)?)
        else {
            return Err(self.refuse_change(parent));
        };
        if scope != target {
            return Err(FsError::Invalid("rename across recover/ directories"));
        }
        self.recover.rename(&scope, name, new_name)?;
        if recover::is_hidden(new_name) {
            return Ok(());
        }
        self.finish_upload(&scope, new_name)
    }

    /// Run the restore of the finished upload `name`; record an `.error` on failure.
    /// Blocking: waits for the unpacker, the checks and the switch.
    fn finish_upload(&self, scope: &Scope, name: &str) -> FsResult<()> {
        let Some(ready) = self
            .recover
            .take_finished(scope, name, self.require_checksum)
        else {
            // A sidecar kept for its snapshot, or a snapshot waiting for its sidecar.
            return Ok(());
        };
        // A sidecar may release a waiting snapshot: errors go under the snapshot's name.
        let name = ready.name.as_str();
        let result = ready
            .received
            .and_then(|received| self.restore_upload(scope, name, received, ready.sidecar));
        match result {
            Ok(()) => {
                self.recover.clear_error(scope, name);
                Ok(())
            }
            Err(err) => {
                self.recover
                    .record_error(scope, name, recover::error_text(&err.to_string()));
                Err(recover::restore_error(&err))
            }
        }
    }

    fn restore_upload(
        &self,
        scope: &Scope,
        name: &str,
        received: Received,
        sidecar: Option<String>,
    ) -> Result<(), StorageError> {
        let checksum = sidecar_sum(sidecar)?;
        // recover/ at the top takes `<collection>.snapshot`.
        let scope = match scope {
            Scope::Full => Scope::Collection(
                name.strip_suffix(SNAPSHOT_EXT)
                    .ok_or_else(|| {
                        StorageError::bad_request("name files in recover/ `<collection>.snapshot`")
                    })?
                    .to_string(),
            ),
            other => other.clone(),
        };
        tokio::runtime::Handle::current().block_on(restore_received(
            self.ns.snapshots(),
            scope,
            received,
            checksum,
        ))
    }
}

/// The checksum a sidecar holds, if one was written.
fn sidecar_sum(sidecar: Option<String>) -> Result<Option<String>, StorageError> {
    match sidecar {
        Some(text) => recover::sidecar_checksum(&text).map(Some).ok_or_else(|| {
            StorageError::bad_request(
                "the checksum sidecar holds no SHA-256 (64 hex digits, or a sha256sum line)",
            )
        }),
        None => Ok(None),
    }
}
