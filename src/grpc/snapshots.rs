//! `qdrant.Snapshots`: stored snapshots of a collection and of the whole storage,
//! through the same functions as REST (`api::snapshots`), so they land where REST's
//! do — the snapshots directory, or S3 when snapshots are stored there. gRPC has no
//! `wait` flag: every call answers once its work is done, as Qdrant's does.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert::snapshots::description;
use super::proto::{self, snapshots_server::Snapshots};
use super::{answer, seconds};
use crate::service::Service;
use crate::service::snapshots::{create_snapshot, delete_snapshot, list_snapshots};
use crate::snapshot::Scope;

pub struct SnapshotsService(pub Arc<Service>);

impl SnapshotsService {
    async fn create(
        &self,
        scope: Scope,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let started = Instant::now();
        answer(
            create_snapshot(&self.0, scope)
                .await
                .map(|d| proto::CreateSnapshotResponse {
                    snapshot_description: Some(description(d)),
                    time: seconds(started),
                }),
        )
    }

    async fn list(&self, scope: Scope) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        let started = Instant::now();
        answer(
            list_snapshots(&self.0, scope)
                .await
                .map(|list| proto::ListSnapshotsResponse {
                    snapshot_descriptions: list.into_iter().map(description).collect(),
                    time: seconds(started),
                }),
        )
    }

    async fn delete(
        &self,
        scope: Scope,
        name: String,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        let started = Instant::now();
        answer(delete_snapshot(&self.0, scope, name).await.map(|()| {
            proto::DeleteSnapshotResponse {
                time: seconds(started),
            }
        }))
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn create(
        &self,
        request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let name = request.into_inner().collection_name;
        SnapshotsService::create(self, Scope::Collection(name)).await
    }

    async fn list(
        &self,
        request: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        let name = request.into_inner().collection_name;
        SnapshotsService::list(self, Scope::Collection(name)).await
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        let request = request.into_inner();
        let scope = Scope::Collection(request.collection_name);
        SnapshotsService::delete(self, scope, request.snapshot_name).await
    }

    async fn create_full(
        &self,
        _request: Request<proto::CreateFullSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        SnapshotsService::create(self, Scope::Full).await
    }

    async fn list_full(
        &self,
        _request: Request<proto::ListFullSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        SnapshotsService::list(self, Scope::Full).await
    }

    async fn delete_full(
        &self,
        request: Request<proto::DeleteFullSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        let name = request.into_inner().snapshot_name;
        SnapshotsService::delete(self, Scope::Full, name).await
    }
}
