//! The REST API's TCP listener rules, as axum layers: the API key on every request,
//! and error texts for remote clients (see `service::remote`).

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::envelope::{ApiError, RemoteBody, RemoteText, error_body};
use crate::service::listen::{ApiKey, ConnectionAuth, KeyRefusal};

/// Wrap `router` so that every request must carry `api-key: <key>` (or
/// `Authorization: Bearer <key>`), compared in constant time.
pub fn require_api_key(router: Router, key: ApiKey) -> Router {
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let checked = key.check(request.headers());
        async move {
            match checked {
                Ok(()) => {
                    ConnectionAuth::mark(&request);
                    next.run(request).await
                }
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

/// Wrap a TCP listener's `router` so that its clients get an error's remote text
/// (`envelope::RemoteText`: a short reason for internal errors, config keys for the
/// daemon's directories) where the Unix socket gets the full one; the full text is
/// logged where the error is answered.
pub fn remote_errors(router: Router) -> Router {
    router.layer(middleware::map_response(
        |mut response: Response| async move {
            if let Some(RemoteBody(bytes)) = response.extensions_mut().remove::<RemoteBody>() {
                let (mut parts, _) = response.into_parts();
                parts.headers.remove(axum::http::header::CONTENT_LENGTH);
                response = Response::from_parts(parts, Body::from(bytes));
            } else if let Some(RemoteText(text)) = response.extensions_mut().remove::<RemoteText>()
            {
                let (mut parts, _) = response.into_parts();
                parts.headers.remove(axum::http::header::CONTENT_LENGTH);
                let body = serde_json::to_vec(&error_body(&text)).unwrap_or_default();
                response = Response::from_parts(parts, Body::from(body));
            }
            response
        },
    ))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn tcp_clients_get_a_short_reason_for_internal_errors_and_no_host_paths() {
        use super::super::envelope::ApiError;
        use crate::service::remote::{INTERNAL_REASON, hide_directories};
        use crate::storage::StorageError;
        use axum::routing::get;
        use tower::ServiceExt;

        let data = tempfile::tempdir().unwrap();
        let secret = data.path().join("storage/collections/c/0/wal");
        hide_directories(&[(data.path().to_path_buf(), "snapfs.data_dir")]);
        let internal = format!(
            "I/O error: failed to open file `{}`: boom",
            secret.display()
        );
        let invalid = format!("the file {} does not fit", secret.display());
        let router = axum::Router::new()
            .route(
                "/internal",
                get(move || {
                    let text = internal.clone();
                    async move { ApiError::from(StorageError::internal(text)) }
                }),
            )
            .route(
                "/invalid",
                get(move || {
                    let text = invalid.clone();
                    async move { ApiError::from(StorageError::bad_request(text)) }
                }),
            );
        let answer = |router: axum::Router, path: &'static str| async move {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (
                status,
                body["status"]["error"].as_str().unwrap().to_string(),
            )
        };
        let shown = data.path().display().to_string();

        // The Unix socket's router: the full texts.
        let (status, text) = answer(router.clone(), "/internal").await;
        assert_eq!(status, 500);
        assert!(text.contains(&shown) && text.contains("boom"), "{text}");

        // A TCP listener's: a short reason, and the client's own error without the
        // daemon's directories.
        let remote = super::remote_errors(router);
        let (status, text) = answer(remote.clone(), "/internal").await;
        assert_eq!(status, 500);
        assert_eq!(text, INTERNAL_REASON);
        let (status, text) = answer(remote, "/invalid").await;
        assert_eq!(status, 400);
        assert!(!text.contains(&shown), "{text}");
        assert!(
            text.contains("<snapfs.data_dir>/storage/collections/c/0/wal does not fit"),
            "{text}"
        );
    }
}
