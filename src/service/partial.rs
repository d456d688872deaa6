//! Partial snapshots of one shard: its manifest, a partial archive for a peer's
//! manifest, applying one, pulling one from a peer (Qdrant's protocol, both ways).
//! A shard takes one partial recovery at a time ([`claim`]): a second is told
//! `None` at once, before anything is received.

use std::sync::Arc;

use super::{Service, run_blocking};
use crate::snapshot::intake::Received;
use crate::snapshot::partial::apply::{Applied, ShardClaim, apply};
use crate::snapshot::partial::create::{Created, create};
use crate::snapshot::partial::peer::{Form, PullFrom, Pulled, pull};
use crate::snapshot::partial::{ManifestRequest, ShardManifests, manifests};
use crate::storage::Result;

/// The manifests of shard `id` of `collection` now (the content form too when
/// `content`), from a cache while the shard has not changed.
pub async fn manifest(
    service: &Service,
    collection: String,
    id: u32,
    content: bool,
) -> Result<Arc<ShardManifests>> {
    let snapshots = service.snapshots.clone();
    run_blocking(move || manifests(&snapshots, &collection, id, content)).await
}

/// What the receiver with `request`'s manifest lacks of shard `id`: nothing
/// (`NotModified`), or a partial archive ready to stream from the frozen shard.
pub async fn create_partial(
    service: &Service,
    collection: String,
    id: u32,
    request: ManifestRequest,
) -> Result<Created> {
    service.storage().collection(&collection)?.shard(id)?;
    let snapshots = service.snapshots.clone();
    run_blocking(move || create(&snapshots, &collection, id, &request)).await
}

/// The shard's one partial recovery, if none runs: `None` when one does.
pub fn claim(service: &Service, collection: &str, id: u32) -> Result<Option<ShardClaim>> {
    service.storage().check_writable(collection)?;
    service.storage().collection(collection)?.shard(id)?;
    Ok(ShardClaim::try_take(service.storage(), collection, id))
}

/// Apply a received partial archive to shard `id`, under its claim.
pub async fn apply_partial(
    service: &Service,
    claim: ShardClaim,
    collection: String,
    id: u32,
    received: Received,
    checksum: Option<String>,
) -> Result<Applied> {
    let _claim = claim;
    apply(
        &service.snapshots,
        &collection,
        id,
        received,
        checksum,
        None,
    )
    .await
}

/// Pull shard `id` from the peer at `peer_url` (what it lacks only) and apply it,
/// under its claim; the daemon's fetch policy and stall limit apply. Also the size a
/// full shard snapshot of the state now here has, to set the bytes moved against.
pub async fn pull_partial(
    service: &Service,
    claim: ShardClaim,
    collection: String,
    id: u32,
    peer_url: String,
    api_key: Option<String>,
    form: Option<Form>,
) -> Result<(Pulled, u64)> {
    let _claim = claim;
    let from = PullFrom {
        peer_url: &peer_url,
        api_key: api_key.as_deref(),
        remote: &collection,
        form,
        config_checked: false,
    };
    let pulled = pull(
        &service.snapshots,
        &collection,
        id,
        from,
        service.transfer_stall,
        &service.fetch,
    )
    .await?;
    let full_size =
        crate::snapshot::partial::peer::full_size(&service.snapshots, &collection, id).await?;
    Ok((pulled, full_size))
}

/// Cancel the pull of shard `id` while it is receiving; whether one was.
pub fn cancel_pull(service: &Service, collection: &str, id: u32) -> Result<bool> {
    service.storage().collection(collection)?.shard(id)?;
    let cancelled = crate::snapshot::partial::peer::cancel_pull(&service.snapshots, collection, id);
    if cancelled {
        tracing::info!(collection, shard = id, "partial pull cancelled");
    }
    Ok(cancelled)
}
