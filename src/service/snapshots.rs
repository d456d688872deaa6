//! Snapshots: stored ones (create, list, open, delete — in whichever store is
//! configured, see [`crate::snapshot::store`]) and live views, for REST and gRPC.

use std::sync::Arc;

use super::{Service, run_blocking};
use crate::snapshot::store::{OpenedSnapshot, SnapshotDescription};
use crate::snapshot::{Scope, SnapshotView};
use crate::storage::Result;

/// Check the scope exists (collection, shard) before touching its snapshots.
pub fn checked_scope(service: &Service, scope: Scope) -> Result<Scope> {
    match &scope {
        Scope::Collection(c) => {
            service.storage().collection(c)?;
        }
        Scope::Shard(c, id) => {
            service.storage().collection(c)?.shard(*id)?;
        }
        Scope::Full => {}
    }
    Ok(scope)
}

/// The creation of a stored snapshot of `scope`, checked and ready to run on a
/// blocking thread. The caller waits for it or lets it run in the background.
pub fn snapshot_creation(
    service: &Arc<Service>,
    scope: Scope,
) -> Result<impl FnOnce() -> Result<SnapshotDescription> + Send + 'static> {
    let scope = checked_scope(service, scope)?;
    let service = service.clone();
    Ok(move || {
        let view = SnapshotView::open(&service.snapshots, scope.clone())?;
        let created = service.store.create(&view)?;
        drop(view);
        crate::metrics::snapshot_created(match &scope {
            Scope::Collection(c) | Scope::Shard(c, _) => c,
            Scope::Full => "",
        });
        Ok(created.description())
    })
}

/// Create a stored snapshot of `scope` and wait for it.
pub async fn create_snapshot(service: &Arc<Service>, scope: Scope) -> Result<SnapshotDescription> {
    run_blocking(snapshot_creation(service, scope)?).await
}

/// The stored snapshots of `scope`.
pub async fn list_snapshots(
    service: &Arc<Service>,
    scope: Scope,
) -> Result<Vec<SnapshotDescription>> {
    let scope = checked_scope(service, scope)?;
    let store = service.store.clone();
    run_blocking(move || {
        Ok(store
            .list(&scope)?
            .iter()
            .map(|s| s.description())
            .collect())
    })
    .await
}

/// Stored snapshot `name` of `scope`, opened for reading.
pub async fn open_snapshot(
    service: &Service,
    scope: Scope,
    name: String,
) -> Result<OpenedSnapshot> {
    let scope = checked_scope(service, scope)?;
    let store = service.store.clone();
    run_blocking(move || store.open(&scope, &name)).await
}

/// How the stored snapshots of `scope` were made (empty where the store does not
/// record it).
pub async fn snapshot_details(
    service: &Arc<Service>,
    scope: Scope,
) -> Result<Vec<crate::snapshot::store::StoredDetails>> {
    let scope = checked_scope(service, scope)?;
    let store = service.store.clone();
    run_blocking(move || store.details(&scope)).await
}

/// Stored snapshot `name` of `scope`, opened to be restored: a collection's may be
/// restored when the collection is gone (the store keeps its snapshots, and a
/// restore makes it again); a shard's needs its collection.
pub async fn open_snapshot_to_restore(
    service: &Service,
    scope: Scope,
    name: String,
) -> Result<OpenedSnapshot> {
    if !matches!(scope, Scope::Collection(_)) {
        return open_snapshot(service, scope, name).await;
    }
    let store = service.store.clone();
    run_blocking(move || store.open(&scope, &name)).await
}

/// A removal of stored snapshot `name` of `scope`, resolved: one that names none
/// is `NotFound` here, and nothing is touched.
pub struct SnapshotRemoval {
    service: Arc<Service>,
    scope: Scope,
    name: String,
}

pub async fn snapshot_removal(
    service: &Arc<Service>,
    scope: Scope,
    name: String,
) -> Result<SnapshotRemoval> {
    let scope = checked_scope(service, scope)?;
    let store = service.store.clone();
    let (looked_up, name) = run_blocking(move || {
        store.stat(&scope, &name)?;
        Ok((scope, name))
    })
    .await?;
    Ok(SnapshotRemoval {
        service: service.clone(),
        scope: looked_up,
        name,
    })
}

impl SnapshotRemoval {
    pub async fn run(self) -> Result<()> {
        let store = self.service.store.clone();
        run_blocking(move || store.delete(&self.scope, &self.name)).await
    }

    /// Remove it in the background; a failure is logged.
    pub fn run_detached(self) {
        tokio::spawn(async move {
            let name = self.name.clone();
            if let Err(err) = self.run().await {
                tracing::error!(%err, snapshot = %name, "background snapshot deletion failed");
            }
        });
    }
}

/// Delete stored snapshot `name` of `scope` and wait for it.
pub async fn delete_snapshot(service: &Arc<Service>, scope: Scope, name: String) -> Result<()> {
    snapshot_removal(service, scope, name).await?.run().await
}

/// A fresh live view of `scope` (a short freeze and flush), held while it is read.
pub async fn live_view(service: &Arc<Service>, scope: Scope) -> Result<Arc<SnapshotView>> {
    let scope = checked_scope(service, scope)?;
    let snapshots = service.snapshots.clone();
    run_blocking(move || SnapshotView::open(&snapshots, scope)).await
}
