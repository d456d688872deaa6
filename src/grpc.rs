//! The gRPC API: Qdrant's gRPC services — `Qdrant` (health), `Collections`,
//! `Points`, `Snapshots` — on their own TCP listener (`--grpc`, Qdrant's port 6334),
//! so code written for Qdrant with `prefer_grpc=True` runs unchanged.
//!
//! Why it is built so:
//! - **One behaviour, two protocols.** This layer only translates: protobuf in →
//!   the types the REST layer takes ([`convert`]), then the same protocol-neutral
//!   functions REST calls (`service::points::upsert_points`, `service::snapshots::create_snapshot`,
//!   …), then the answer back to protobuf. No storage or snapshot logic lives here.
//!   Errors become statuses in one place ([`status`]), as `api::envelope` does for HTTP.
//! - **Our own definitions.** `proto/qdrant/*.proto` state the part of Qdrant's API
//!   snapfs serves, with Qdrant's package, service, method and message names and field
//!   numbers, so the bytes on the wire are Qdrant's. `build.rs` compiles them with
//!   protox (no system `protoc`).
//! - **Nothing silently dropped.** A field snapfs does not serve is either declared
//!   and refused when set, or unknown to our definitions and refused by the codec
//!   ([`codec`]); either way the client gets `INVALID_ARGUMENT` naming it.
//! - **The listeners' rules.** The HTTP/2 connections run on the same accept loop as
//!   the REST listeners (`service::listen::serve_http2`: the same bounded stop), behind
//!   the same API-key check (`service::listen::ApiKey`) and the same limits
//!   (`service::listen::TcpLimits`: connections, a deadline for the first call with the
//!   key, HTTP/2 streams and keep-alive); calls in flight are counted over all
//!   connections ([`router`]). gRPC is not offered on the Unix
//!   socket: the socket speaks HTTP/1.1 to the CLI and `curl`, Qdrant's clients reach
//!   gRPC by `host:port` only, and sharing would put protocol sniffing in front of
//!   every socket request for no client that could use it.

pub mod codec;
pub mod collections;
pub mod convert;
pub mod health;
pub mod points;
pub mod snapshots;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use tracing::Instrument;

use crate::service::Service;
use crate::service::listen::{self as server, ApiKey, ConnectionAuth, Drained, TcpLimits};
use crate::storage::StorageError;

/// Messages, services and clients generated from `proto/qdrant/*.proto` by `build.rs`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("qdrant");
}

/// The largest `HealthCheck` request taken (after decompression). The request is
/// empty; the call needs no key, so it must cost nothing to anyone who can connect.
const HEALTH_MAX_REQUEST_BYTES: usize = 1024;

/// Qdrant's gRPC services as an HTTP router. Requests may be as large as REST
/// bodies (`max_request_bytes`, `service.max_request_size_mb`) except the open
/// health check's; answers are not limited. At most `max_calls` calls are served at
/// once; more wait for a turn (`service.grpc_max_concurrent_calls`).
pub fn router(state: Arc<Service>, max_request_bytes: usize, max_calls: usize) -> axum::Router {
    use proto::collections_server::CollectionsServer;
    use proto::points_server::PointsServer;
    use proto::qdrant_server::QdrantServer;
    use proto::snapshots_server::SnapshotsServer;
    // Every service: gzip both ways, as Qdrant's server takes it (qdrant-client's
    // `grpc_compression`). The limit applies to the decompressed message, and tonic
    // stops decompressing at it. Health keeps gzip too: a client compressing its
    // channel names gzip on every call, and tonic refuses a call whose encoding is
    // not enabled, even an empty one.
    macro_rules! configured {
        ($server:expr, $limit:expr) => {
            $server
                .max_decoding_message_size($limit)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        };
    }
    let routes = tonic::service::Routes::new(configured!(
        QdrantServer::new(health::HealthService),
        HEALTH_MAX_REQUEST_BYTES
    ))
    .add_service(configured!(
        CollectionsServer::new(collections::CollectionsService(state.clone())),
        max_request_bytes
    ))
    .add_service(configured!(
        PointsServer::new(points::PointsService(state.clone())),
        max_request_bytes
    ))
    .add_service(configured!(
        SnapshotsServer::new(snapshots::SnapshotsService(state)),
        max_request_bytes
    ));
    // One count of calls for every service and connection: each may hold a decoded
    // message of up to `max_request_bytes`. The open health check is not counted (it
    // holds 1 KiB at most), so callers without the key cannot take the turns.
    let turns = Arc::new(tokio::sync::Semaphore::new(max_calls));
    routes
        .prepare()
        .into_axum_router()
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let turns = turns.clone();
            async move {
                if request.uri().path() == OPEN_METHOD {
                    return next.run(request).await;
                }
                let Ok(_turn) = turns.acquire_owned().await else {
                    unreachable!("the semaphore is never closed")
                };
                next.run(request).await
            }
        }))
        .layer(middleware::from_fn(trace_call))
}

/// The health check needs no key (as in Qdrant: probes and clients' version checks
/// run before they know one); it says nothing but the title and version.
const OPEN_METHOD: &str = "/qdrant.Qdrant/HealthCheck";

/// Every other call must present the API key as `api-key` metadata or
/// `authorization: Bearer <key>`: missing is UNAUTHENTICATED, wrong is
/// PERMISSION_DENIED. The check is the REST listener's ([`ApiKey::check`]).
pub fn require_api_key(router: axum::Router, key: ApiKey) -> axum::Router {
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let checked = if request.uri().path() == OPEN_METHOD {
            Ok(false)
        } else {
            key.check(request.headers()).map(|()| true)
        };
        async move {
            match checked {
                Ok(authenticated) => {
                    if authenticated {
                        ConnectionAuth::mark(&request);
                    }
                    next.run(request).await
                }
                Err(refusal) => {
                    tracing::debug!(method = %request.uri().path(), ?refusal, "gRPC call refused");
                    status::from_key_refusal(refusal).into_http()
                }
            }
        }
    }))
}

/// Serve `router` (with [`require_api_key`]) on `listener` within `limits` until
/// `stop`; then the bounded stop of every listener (see `service::listen::serve`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: TcpLimits,
) -> Drained {
    server::serve_http2(listener, router, stop, grace, limits).await
}

async fn trace_call(request: Request, next: Next) -> axum::response::Response {
    let span = tracing::debug_span!("grpc", method = %request.uri().path());
    next.run(request).instrument(span).await
}

/// A handler's result as tonic wants it.
fn answer<T>(result: Result<T, StorageError>) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(status::from_storage)
}

/// Qdrant's `time` field: seconds spent.
fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}
