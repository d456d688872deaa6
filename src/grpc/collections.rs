//! `qdrant.Collections`: create, inspect, list, delete, exists — through the same
//! functions as REST (`api::collections`).

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert::collections::{collection_info, create_request};
use super::proto::{self, collections_server::Collections};
use super::{answer, seconds};
use crate::service::Service;
use crate::service::collections::{
    collection_exists, collection_names, collection_overview, create_collection, delete_collection,
};

pub struct CollectionsService(pub Arc<Service>);

#[tonic::async_trait]
impl Collections for CollectionsService {
    async fn get(
        &self,
        request: Request<proto::GetCollectionInfoRequest>,
    ) -> Result<Response<proto::GetCollectionInfoResponse>, Status> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        answer(collection_overview(&self.0, &name).await.map(|overview| {
            proto::GetCollectionInfoResponse {
                result: Some(collection_info(overview)),
                time: seconds(started),
            }
        }))
    }

    async fn list(
        &self,
        _request: Request<proto::ListCollectionsRequest>,
    ) -> Result<Response<proto::ListCollectionsResponse>, Status> {
        let started = Instant::now();
        let collections = collection_names(&self.0)
            .into_iter()
            .map(|name| proto::CollectionDescription { name })
            .collect();
        Ok(Response::new(proto::ListCollectionsResponse {
            collections,
            time: seconds(started),
        }))
    }

    async fn create(
        &self,
        request: Request<proto::CreateCollection>,
    ) -> Result<Response<proto::CollectionOperationResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let name = request.collection_name.clone();
        let created = async {
            let body = create_request(request)?;
            create_collection(&self.0, &name, body).await
        };
        answer(created.await.map(|()| proto::CollectionOperationResponse {
            result: true,
            time: seconds(started),
        }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteCollection>,
    ) -> Result<Response<proto::CollectionOperationResponse>, Status> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        answer(delete_collection(&self.0, &name).await.map(|deleted| {
            proto::CollectionOperationResponse {
                result: deleted,
                time: seconds(started),
            }
        }))
    }

    async fn collection_exists(
        &self,
        request: Request<proto::CollectionExistsRequest>,
    ) -> Result<Response<proto::CollectionExistsResponse>, Status> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        Ok(Response::new(proto::CollectionExistsResponse {
            result: Some(proto::CollectionExists {
                exists: collection_exists(&self.0, &name),
            }),
            time: seconds(started),
        }))
    }
}
