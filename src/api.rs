//! The control API: HTTP/1.1 with Qdrant's paths, request shapes and envelope, so
//! that Qdrant's own clients work against snapfs. Served on the Unix socket and,
//! optionally, on TCP behind an API key (see [`server`]).
//!
//! Handlers are thin: parse, call the service (`crate::service`, where what a
//! request does lives, shared with gRPC and the mount), wrap the answer. Status
//! codes come from one place, [`envelope::ApiError`].

pub mod auth;
pub mod backups;
pub mod clusters;
pub mod collections;
pub mod envelope;
pub mod indexes;
pub mod partial;
pub mod points;
pub mod ranges;
pub mod recover;
pub mod snapshots;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{delete, get, post, put};

use crate::service::{Service, run_blocking};
use crate::storage::Result;
use envelope::ApiError;

/// A shard id from a path segment.
pub fn shard_id(text: &str) -> Result<u32, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("shard id must be a number, got `{text}`")))
}

/// Run blocking storage work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    run_blocking(work).await.map_err(ApiError::from)
}

pub fn router(state: Arc<Service>, max_request_bytes: usize) -> Router {
    let routes = Router::new()
        .route("/", get(collections::root))
        .route(
            "/metrics",
            get(|State(state): State<Arc<Service>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        crate::metrics::CONTENT_TYPE,
                    )],
                    crate::metrics::render(&state.storage().collection_names()),
                )
            }),
        )
        .route("/snapfs/backups", get(backups::status))
        .route("/snapfs/backups/{policy}", get(backups::policy_status))
        .route("/snapfs/backups/{policy}/run", post(backups::run))
        .route("/snapfs/backups/{policy}/forget", post(backups::forget))
        .route("/snapfs/clusters", get(clusters::status))
        .route("/snapfs/clusters/{cluster}/round", post(clusters::round))
        .route(
            "/snapfs/clusters/{cluster}/generations",
            get(clusters::generations),
        )
        .route(
            "/snapfs/clusters/{cluster}/generations/{generation}",
            get(clusters::generation).delete(clusters::forget),
        )
        .route(
            "/snapfs/clusters/{cluster}/generations/{generation}/restore",
            post(clusters::restore),
        )
        .route("/collections", get(collections::list))
        .route(
            "/collections/{name}",
            get(collections::info)
                .put(collections::create)
                .delete(collections::delete),
        )
        .route("/collections/{name}/exists", get(collections::exists))
        .route("/collections/{name}/index", put(indexes::create))
        .route("/collections/{name}/index/{field}", delete(indexes::delete))
        .route(
            "/collections/{name}/points",
            put(points::upsert).post(points::retrieve),
        )
        .route("/collections/{name}/points/delete", post(points::delete))
        .route("/collections/{name}/points/scroll", post(points::scroll))
        .route("/collections/{name}/points/count", post(points::count))
        .route("/collections/{name}/points/query", post(points::query))
        .route("/collections/{name}/points/{id}", get(points::get_point))
        .route(
            "/collections/{name}/snapshots",
            get(snapshots::collection_list).post(snapshots::collection_create),
        )
        .route(
            "/collections/{name}/snapshots/recover",
            put(recover::collection_recover),
        )
        .route(
            "/collections/{name}/snapshots/upload",
            // Uploads are streamed to disk: no request-size limit applies.
            post(recover::collection_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/snapshots/{snapshot}",
            get(snapshots::collection_download).delete(snapshots::collection_delete),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot",
            get(snapshots::shard_stream),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots",
            get(snapshots::shard_list).post(snapshots::shard_create),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/recover",
            put(recover::shard_recover),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/upload",
            post(recover::shard_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot/partial/manifest",
            get(partial::manifest),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot/partial/create",
            post(partial::create_partial),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot/partial/recover",
            // Uploads are streamed into the restore: no request-size limit applies.
            post(partial::recover_partial).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot/partial/recover_from",
            post(partial::recover_from),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot/partial/recover_from/cancel",
            post(partial::cancel_recover_from),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/{snapshot}",
            get(snapshots::shard_download).delete(snapshots::shard_delete),
        )
        .route(
            "/snapshots",
            get(snapshots::full_list).post(snapshots::full_create),
        )
        .route(
            "/snapshots/{snapshot}",
            get(snapshots::full_download).delete(snapshots::full_delete),
        )
        .fallback(|| async { ApiError::not_found("Not found: no such API path") })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(axum::Extension(envelope::BodyLimit(max_request_bytes)))
        .with_state(state);
    // Routing sees the path with runs of slashes merged: Qdrant's peers ask for
    // `{peer_url}/collections/…`, and a peer URL ending in `/` doubles the slash.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_request(merge_slashes))
}

async fn merge_slashes(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    if uri.path().contains("//") {
        let mut path = String::with_capacity(uri.path().len());
        for c in uri.path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        let path_and_query = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(merged) = path_and_query.parse() {
            parts.path_and_query = Some(merged);
            if let Ok(merged) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = merged;
            }
        }
    }
    request
}
