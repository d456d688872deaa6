//! `qdrant.Qdrant/HealthCheck`: the server's title and the Qdrant API version it
//! speaks, the same document as REST's `GET /` (clients compare the version with
//! their own).

use tonic::{Request, Response, Status};

use super::proto::{HealthCheckReply, HealthCheckRequest, qdrant_server::Qdrant};
use crate::service::{QDRANT_API_VERSION, SERVER_TITLE};

pub struct HealthService;

#[tonic::async_trait]
impl Qdrant for HealthService {
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckReply>, Status> {
        Ok(Response::new(HealthCheckReply {
            title: SERVER_TITLE.to_string(),
            version: QDRANT_API_VERSION.to_string(),
            commit: None,
        }))
    }
}
