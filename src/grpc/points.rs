//! `qdrant.Points`: upsert, delete, get, count, scroll, and nearest-neighbour
//! search (`Query` and the older `Search`) — through the same functions as REST
//! (`api::points`), so a request means the same over both protocols.
//!
//! Each request is first checked for what snapfs does not serve (custom shard keys,
//! update filters, insert-only or update-only upserts, ordering a scroll, multi-stage
//! or non-nearest queries): those are refused, never ignored. Read-consistency and
//! write-ordering settings are accepted: one node reads what it acknowledged, in
//! order.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert::filter::optional_filter;
use super::convert::points::{
    optional_search_params, point, point_id, point_id_out, query_target, read_options, retrieved,
    scored, search_target, update_result,
};
use super::convert::{filter, known_enum, missing, refuse_if_set, unsupported};
use super::proto::{self, points_selector::PointsSelectorOneOf, points_server::Points};
use super::{answer, seconds};
use crate::service::Service;
use crate::service::points::{
    DEFAULT_LIMIT, NearestRequest, ORDER_BY_REFUSED, PREFETCH_REFUSED, PointsSelection,
    ScrollRequest, count_points, delete_points, nearest_points, retrieve_points, scroll_points,
    upsert_points,
};
use crate::storage::StorageError;

pub struct PointsService(pub Arc<Service>);

const SHARD_KEYS_REFUSED: &str = "`shard_key_selector` (collections here are sharded by id)";

impl PointsService {
    async fn upsert(
        &self,
        request: proto::UpsertPoints,
    ) -> Result<proto::PointsOperationResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        refuse_if_set(&request.update_filter, "`update_filter`")?;
        if let Some(mode) = request.update_mode {
            match known_enum(mode, "update mode")? {
                proto::UpdateMode::Upsert => {}
                proto::UpdateMode::InsertOnly => {
                    return Err(unsupported("`update_mode` InsertOnly"));
                }
                proto::UpdateMode::UpdateOnly => {
                    return Err(unsupported("`update_mode` UpdateOnly"));
                }
            }
        }
        // An unknown collection is reported before anything about the points, as REST does.
        self.0.storage().collection(&request.collection_name)?;
        let points = request
            .points
            .into_iter()
            .map(point)
            .collect::<Result<Vec<_>, _>>()?;
        let wait = request.wait.unwrap_or(false);
        upsert_points(&self.0, &request.collection_name, points, wait).await?;
        Ok(proto::PointsOperationResponse {
            result: Some(update_result(wait)),
            time: seconds(started),
        })
    }

    async fn delete(
        &self,
        request: proto::DeletePoints,
    ) -> Result<proto::PointsOperationResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        self.0.storage().collection(&request.collection_name)?;
        let selection = match request.points.and_then(|p| p.points_selector_one_of) {
            None => return Err(missing("`points` (ids or a filter)")),
            Some(PointsSelectorOneOf::Points(list)) => PointsSelection::Ids(
                list.ids
                    .into_iter()
                    .map(point_id)
                    .collect::<Result<_, _>>()?,
            ),
            Some(PointsSelectorOneOf::Filter(f)) => PointsSelection::Filter(filter::filter(f)?),
        };
        let wait = request.wait.unwrap_or(false);
        delete_points(&self.0, &request.collection_name, selection, wait).await?;
        Ok(proto::PointsOperationResponse {
            result: Some(update_result(wait)),
            time: seconds(started),
        })
    }

    async fn get(&self, request: proto::GetPoints) -> Result<proto::GetResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        let ids = request
            .ids
            .into_iter()
            .map(point_id)
            .collect::<Result<_, _>>()?;
        // Qdrant's gRPC `Get` sends no payload unless asked (REST's retrieve does).
        let read = read_options(request.with_payload, request.with_vectors, false)?;
        let records = retrieve_points(&self.0, &request.collection_name, ids, read).await?;
        Ok(proto::GetResponse {
            result: records.into_iter().map(retrieved).collect(),
            time: seconds(started),
        })
    }

    async fn scroll(
        &self,
        request: proto::ScrollPoints,
    ) -> Result<proto::ScrollResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        if request.order_by.is_some() {
            return Err(StorageError::bad_request(ORDER_BY_REFUSED));
        }
        let scroll = ScrollRequest {
            offset: request.offset.map(point_id).transpose()?,
            limit: request.limit.map_or(DEFAULT_LIMIT, |l| l as usize),
            filter: optional_filter(request.filter)?,
            read: read_options(request.with_payload, request.with_vectors, true)?,
        };
        let page = scroll_points(&self.0, &request.collection_name, scroll).await?;
        Ok(proto::ScrollResponse {
            next_page_offset: page.next_page_offset.map(point_id_out),
            result: page.points.into_iter().map(retrieved).collect(),
            time: seconds(started),
        })
    }

    async fn count(
        &self,
        request: proto::CountPoints,
    ) -> Result<proto::CountResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        // `exact` needs nothing: counts here are always exact.
        let filter = optional_filter(request.filter)?;
        let count = count_points(&self.0, &request.collection_name, filter).await?;
        Ok(proto::CountResponse {
            result: Some(proto::CountResult {
                count: count as u64,
            }),
            time: seconds(started),
        })
    }

    async fn query(
        &self,
        request: proto::QueryPoints,
    ) -> Result<proto::QueryResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        refuse_if_set(&request.lookup_from, "`lookup_from`")?;
        if !request.prefetch.is_empty() {
            return Err(StorageError::bad_request(PREFETCH_REFUSED));
        }
        self.0.storage().collection(&request.collection_name)?;
        let target = query_target(request.query.ok_or_else(|| missing("`query`"))?)?;
        let nearest = NearestRequest {
            target,
            using: request.using.unwrap_or_default(),
            filter: optional_filter(request.filter)?,
            limit: request.limit.map_or(DEFAULT_LIMIT, |l| l as usize),
            offset: request.offset.unwrap_or(0) as usize,
            score_threshold: request.score_threshold,
            params: optional_search_params(request.params)?,
            read: read_options(request.with_payload, request.with_vectors, false)?,
        };
        let found = nearest_points(&self.0, &request.collection_name, nearest).await?;
        Ok(proto::QueryResponse {
            result: found.into_iter().map(scored).collect(),
            time: seconds(started),
        })
    }

    async fn search(
        &self,
        request: proto::SearchPoints,
    ) -> Result<proto::SearchResponse, StorageError> {
        let started = Instant::now();
        refuse_if_set(&request.shard_key_selector, SHARD_KEYS_REFUSED)?;
        // `limit: 0` is refused by the query itself, as for `Query` and REST.
        self.0.storage().collection(&request.collection_name)?;
        let nearest = NearestRequest {
            target: search_target(request.vector, request.sparse_indices),
            using: request.vector_name.unwrap_or_default(),
            filter: optional_filter(request.filter)?,
            limit: request.limit as usize,
            offset: request.offset.unwrap_or(0) as usize,
            score_threshold: request.score_threshold,
            params: optional_search_params(request.params)?,
            read: read_options(request.with_payload, request.with_vectors, false)?,
        };
        let found = nearest_points(&self.0, &request.collection_name, nearest).await?;
        Ok(proto::SearchResponse {
            result: found.into_iter().map(scored).collect(),
            time: seconds(started),
        })
    }
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        request: Request<proto::UpsertPoints>,
    ) -> Result<Response<proto::PointsOperationResponse>, Status> {
        answer(PointsService::upsert(self, request.into_inner()).await)
    }

    async fn delete(
        &self,
        request: Request<proto::DeletePoints>,
    ) -> Result<Response<proto::PointsOperationResponse>, Status> {
        answer(PointsService::delete(self, request.into_inner()).await)
    }

    async fn get(
        &self,
        request: Request<proto::GetPoints>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        answer(PointsService::get(self, request.into_inner()).await)
    }

    async fn search(
        &self,
        request: Request<proto::SearchPoints>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        answer(PointsService::search(self, request.into_inner()).await)
    }

    async fn scroll(
        &self,
        request: Request<proto::ScrollPoints>,
    ) -> Result<Response<proto::ScrollResponse>, Status> {
        answer(PointsService::scroll(self, request.into_inner()).await)
    }

    async fn count(
        &self,
        request: Request<proto::CountPoints>,
    ) -> Result<Response<proto::CountResponse>, Status> {
        answer(PointsService::count(self, request.into_inner()).await)
    }

    async fn query(
        &self,
        request: Request<proto::QueryPoints>,
    ) -> Result<Response<proto::QueryResponse>, Status> {
        answer(PointsService::query(self, request.into_inner()).await)
    }
}
