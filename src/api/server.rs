//! Listeners: the Unix socket (mode 0600, no key: file permissions are the
//! access control) and optional TCP listeners that require the API key — HTTP/1.1
//! for the REST API, HTTP/2 for gRPC (`crate::grpc`) — all on one accept loop
//! with one bounded stop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::envelope::ApiError;

/// Bind the socket so that only the owner can ever connect: it is bound inside a
/// fresh directory only the owner may enter, given mode 0600 there, and only then
/// renamed to its path. (Tightening the process's umask around `bind` would race
/// with threads creating files meanwhile.)
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    let cannot =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot listen on {}: {e}", path.display());
    if path.exists() {
        // The data-dir lock is held, so any socket file here is a crash leftover.
        std::fs::remove_file(path)?;
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile makes the directory with mode 0700.
    let private = tempfile::Builder::new()
        .prefix(".snapfs-socket-")
        .tempdir_in(parent)
        .map_err(|e| cannot(&e))?;
    let bound_at = private.path().join("socket");
    let listener = UnixListener::bind(&bound_at).map_err(|e| cannot(&e))?;
    std::fs::set_permissions(&bound_at, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&bound_at, path).map_err(|e| cannot(&e))?;
    Ok(listener)
}

pub async fn bind_tcp(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// The API key the TCP listeners (HTTP and gRPC) require.
#[derive(Clone)]
pub struct ApiKey(Arc<String>);

/// Why a request's key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No `api-key` header and no `Authorization: Bearer` token.
    Missing,
    /// A key that is not the configured one.
    Wrong,
}

impl KeyRefusal {
    /// What the client is told (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED).
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::Missing => {
                "Must provide an API key (header `api-key`) or an Authorization bearer token"
            }
            KeyRefusal::Wrong => "Invalid API key",
        }
    }
}

impl ApiKey {
    pub fn new(key: String) -> Self {
        ApiKey(Arc::new(key))
    }

    /// Check the key a request presents in `api-key` (or as `Authorization: Bearer
    /// <key>`), compared in constant time. gRPC metadata are these same headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), KeyRefusal> {
        let given = match headers.get("api-key") {
            Some(key) => key.to_str().ok(),
            None => headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ")),
        };
        match given {
            None => Err(KeyRefusal::Missing),
            Some(given) if bool::from(given.as_bytes().ct_eq(self.0.as_bytes())) => Ok(()),
            Some(_) => Err(KeyRefusal::Wrong),
        }
    }
}

/// Wrap `router` so that every request must carry `api-key: <key>` (or
/// `Authorization: Bearer <key>`), compared in constant time.
pub fn require_api_key(router: Router, key: ApiKey) -> Router {
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let checked = key.check(request.headers());
        async move {
            match checked {
                Ok(()) => next.run(request).await,
                Err(refusal) => {
                    let status = match refusal {
                        KeyRefusal::Missing => StatusCode::UNAUTHORIZED,
                        KeyRefusal::Wrong => StatusCode::FORBIDDEN,
                    };
                    ApiError::new(status, refusal.message()).into_response()
                }
            }
        }
    }))
}

/// How a listener's connections ended once it was told to stop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Connections still busy when the grace ran out, cut there.
    pub abandoned: usize,
}

/// Serve `router` over HTTP/1.1 on any listener (Unix or TCP) until `stop`
/// completes. Then no new connection is accepted, idle ones close, and requests in
/// flight get `grace` to finish; whatever still runs after that is cut: its task is
/// dropped, so a handler's staging files go with it and the daemon's stop stays
/// bounded.
///
/// (axum's own `serve` waits for requests in flight without a limit, and its
/// connection tasks cannot be cancelled from outside; hence this loop on hyper.)
pub async fn serve<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Drained
where
    L: axum::serve::Listener,
{
    serve_as(Protocol::Http1, listener, router, stop, grace).await
}

/// [`serve`] over HTTP/2 without TLS (what gRPC clients speak to a plain
/// `host:port`), with the same bounded stop: a GOAWAY first, then the grace.
pub async fn serve_http2<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Drained
where
    L: axum::serve::Listener,
{
    serve_as(Protocol::Http2, listener, router, stop, grace).await
}

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

async fn serve_as<L>(
    protocol: Protocol,
    mut listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Drained
where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut http1 = http1::Builder::new();
    // Slow-loris: a client must finish its request head within hyper's default limit.
    http1.timer(TokioTimer::new());
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            (io, _addr) = listener.accept() => {
                let service = TowerToHyperService::new(
                    router.clone().map_request(|request: Request<Incoming>| request.map(Body::new)),
                );
                let io = TokioIo::new(io);
                match protocol {
                    Protocol::Http1 => {
                        let watched = graceful.watch(http1.serve_connection(io, service));
                        connections.spawn(async move {
                            if let Err(err) = watched.await {
                                tracing::trace!(%err, "connection ended with an error");
                            }
                        });
                    }
                    Protocol::Http2 => {
                        let watched = graceful.watch(http2.serve_connection(io, service));
                        connections.spawn(async move {
                            if let Err(err) = watched.await {
                                tracing::trace!(%err, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listener);
    let mut drained = Drained::default();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        drained.abandoned = connections.len();
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    drained
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[tokio::test]
    async fn the_socket_is_the_owners_only_and_answers_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapfs.sock");
        std::fs::write(&path, b"left by a crash").unwrap();
        let listener = super::bind_unix(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let connect = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        accepted.unwrap();
        connected.unwrap();
        // Only the socket is left: the private directory is gone.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["snapfs.sock"]);
    }
}
