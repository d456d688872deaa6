//! Listeners: the Unix socket (mode 0600, no key: file permissions are the
//! access control) and an optional TCP listener that requires the API key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// Wrap `router` so that every request must carry `api-key: <key>` (or
/// `Authorization: Bearer <key>`), compared in constant time.
pub fn require_api_key(router: Router, key: String) -> Router {
    let key = Arc::new(key);
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let key = key.clone();
        async move {
            match presented_key(&request) {
                None => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Must provide an API key (header `api-key`) or an Authorization bearer token",
                )
                .into_response(),
                Some(given) if bool::from(given.as_bytes().ct_eq(key.as_bytes())) => {
                    next.run(request).await
                }
                Some(_) => ApiError::new(StatusCode::FORBIDDEN, "Invalid API key").into_response(),
            }
        }
    }))
}

fn presented_key(request: &Request) -> Option<String> {
    let headers = request.headers();
    if let Some(key) = headers.get("api-key") {
        return key.to_str().ok().map(str::to_string);
    }
    let bearer = headers.get("authorization")?.to_str().ok()?;
    bearer.strip_prefix("Bearer ").map(str::to_string)
}

/// How a listener's connections ended once it was told to stop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Connections still busy when the grace ran out, cut there.
    pub abandoned: usize,
}

/// Serve `router` on any listener (Unix or TCP) until `stop` completes. Then no
/// new connection is accepted, idle ones close, and requests in flight get `grace`
/// to finish; whatever still runs after that is cut: its task is dropped, so a
/// handler's staging files go with it and the daemon's stop stays bounded.
///
/// (axum's own `serve` waits for requests in flight without a limit, and its
/// connection tasks cannot be cancelled from outside; hence this loop on hyper.)
pub async fn serve<L>(
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
    let mut builder = http1::Builder::new();
    // Slow-loris: a client must finish its request head within hyper's default limit.
    builder.timer(TokioTimer::new());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            (io, _addr) = listener.accept() => {
                let service = TowerToHyperService::new(
                    router.clone().map_request(|request: Request<Incoming>| request.map(Body::new)),
                );
                let connection = builder.serve_connection(TokioIo::new(io), service);
                let watched = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(err) = watched.await {
                        tracing::trace!(%err, "connection ended with an error");
                    }
                });
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
