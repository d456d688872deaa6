//! Listeners: the Unix socket (mode 0600, no key: file permissions are the
//! access control) and an optional TCP listener that requires the API key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};

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

/// Serve `router` on any listener (Unix or TCP) until `shutdown` completes, then
/// finish the requests in flight.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
