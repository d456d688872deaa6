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

/// Bind the socket so that only the owner can ever connect: the umask is
/// tightened around `bind` (no window with a wider mode), then the mode is fixed.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        // The data-dir lock is held, so any socket file here is a crash leftover.
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes this process's file-creation mask; it has no memory effects.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener =
        bound.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
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
