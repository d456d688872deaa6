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
use axum::http::HeaderMap;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tower::ServiceExt;

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

/// How a listener's connections ended once it was told to stop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Connections still busy when the grace ran out, cut there.
    pub abandoned: usize,
}

/// The rules of a TCP listener, which anyone who can reach its port may connect to
/// (the Unix socket has none: its mode is its access control).
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Connections held open at once; more are closed as soon as they are accepted
    /// (`service.max_connections`).
    pub max_connections: usize,
    /// A connection that has not made a request with the API key this long after it
    /// was accepted is closed, handshake or not (`service.connection_auth_timeout_secs`).
    pub auth_deadline: Duration,
    /// HTTP/2: calls one connection may have open at once
    /// (`service.grpc_max_concurrent_streams`).
    pub max_streams: u32,
}

/// HTTP/1: a client must send a request's head within this (hyper's default, set
/// here so that it stays): slow-loris.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2: a connection silent this long is pinged, and closed when the ping is not
/// answered within `KEEP_ALIVE_TIMEOUT`: dead peers do not hold their place.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A listener at its connection cap says so in the log at most this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Put into every request of a TCP connection; the API-key check marks it when a
/// request brings the right key, which lifts the connection's deadline.
#[derive(Clone)]
pub struct ConnectionAuth(Arc<tokio::sync::watch::Sender<bool>>);

impl ConnectionAuth {
    /// The request that carries this came with the right key.
    pub fn mark(request: &Request) {
        if let Some(auth) = request.extensions().get::<ConnectionAuth>() {
            auth.0.send_replace(true);
        }
    }
}

/// Serve `router` over HTTP/1.1 on the Unix socket until `stop` completes. Then no
/// new connection is accepted, idle ones close, and requests in flight get `grace`
/// to finish; whatever still runs after that is cut: its task is dropped, so a
/// handler's staging files go with it and the daemon's stop stays bounded.
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
    serve_as(Protocol::Http1, listener, router, stop, grace, None).await
}

/// [`serve`] on a TCP listener, within `limits`.
pub async fn serve_tcp<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: TcpLimits,
) -> Drained
where
    L: axum::serve::Listener,
{
    serve_as(Protocol::Http1, listener, router, stop, grace, Some(limits)).await
}

/// [`serve_tcp`] over HTTP/2 without TLS (what gRPC clients speak to a plain
/// `host:port`), with the same bounded stop: a GOAWAY first, then the grace.
pub async fn serve_http2<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: TcpLimits,
) -> Drained
where
    L: axum::serve::Listener,
{
    serve_as(Protocol::Http2, listener, router, stop, grace, Some(limits)).await
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
    limits: Option<TcpLimits>,
) -> Drained
where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    if let Some(limits) = &limits {
        http2.max_concurrent_streams(limits.max_streams);
    }
    let slots = limits
        .as_ref()
        .map(|l| Arc::new(tokio::sync::Semaphore::new(l.max_connections)));
    let mut refused_since_warning = 0u64;
    let mut last_warning: Option<tokio::time::Instant> = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            (io, _addr) = listener.accept() => {
                // At the cap, the connection is closed at once (the client sees it
                // end before any answer): its descriptor is not kept.
                let slot = match &slots {
                    Some(slots) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => Some(slot),
                        Err(_) => {
                            drop(io);
                            refused_since_warning += 1;
                            if last_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                                tracing::warn!(
                                    refused = refused_since_warning,
                                    "connections refused: the listener holds service.max_connections already"
                                );
                                last_warning = Some(tokio::time::Instant::now());
                                refused_since_warning = 0;
                            }
                            continue;
                        }
                    },
                    None => None,
                };
                let (auth, deadline) = match &limits {
                    Some(limits) => {
                        let (marker, watcher) = tokio::sync::watch::channel(false);
                        (Some(ConnectionAuth(Arc::new(marker))), Some((limits.auth_deadline, watcher)))
                    }
                    None => (None, None),
                };
                let service = TowerToHyperService::new(router.clone().map_request(
                    move |request: Request<Incoming>| {
                        let mut request = request.map(Body::new);
                        if let Some(auth) = &auth {
                            request.extensions_mut().insert(auth.clone());
                        }
                        request
                    },
                ));
                let io = TokioIo::new(io);
                match protocol {
                    Protocol::Http1 => {
                        let watched = graceful.watch(http1.serve_connection(io, service));
                        connections.spawn(run_connection(watched, deadline, slot));
                    }
                    Protocol::Http2 => {
                        let watched = graceful.watch(http2.serve_connection(io, service));
                        connections.spawn(run_connection(watched, deadline, slot));
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

/// Serve one connection; with a `deadline`, end it (drop it: the socket closes) if
/// no request with the API key has come by then. `slot` is its place under the
/// listener's cap, given back when it ends.
async fn run_connection<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    deadline: Option<(Duration, tokio::sync::watch::Receiver<bool>)>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let _slot = slot;
    let served = async {
        if let Err(err) = connection.await {
            tracing::trace!(%err, "connection ended with an error");
        }
    };
    let Some((deadline, mut authenticated)) = deadline else {
        return served.await;
    };
    let expired = async {
        // (The watch's guard is dropped at once: it must not live across an await.)
        let in_time = tokio::time::timeout(deadline, async {
            let _ = authenticated.wait_for(|done| *done).await;
        })
        .await
        .is_ok();
        if in_time {
            // Authenticated (or the connection is ending): no deadline any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = served => {}
        () = expired => tracing::debug!(
            ?deadline,
            "closed a TCP connection that made no request with the API key in time"
        ),
    }
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
