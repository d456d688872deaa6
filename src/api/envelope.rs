//! Qdrant's response envelope, and the one place where errors become HTTP statuses.
//!
//! Success: `{"result": …, "status": "ok", "time": seconds}`; accepted (`wait=false`):
//! `{"status": "accepted", "time": …}` with 202 where Qdrant does;
//! failure: `{"status": {"error": "…"}, "time": …}`.
//!
//! Clients on the TCP listeners (REST and gRPC) are not told what only the host
//! should know: an internal error (I/O, the engine, a bug) is answered with a short
//! reason (`service::remote::INTERNAL_REASON`) and logged in full, and the daemon's own directories
//! are named by their config keys in every other message ([`remote_text`]). The Unix
//! socket (mode 0600, its owner only) keeps the full texts.

use std::borrow::Cow;
use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::service::remote::{is_private, remote_text};
use crate::storage::StorageError;
use crate::storage::error::ErrorKind;

/// When the request started; every answer reports the time since.
#[derive(Clone, Copy)]
pub struct Timer(pub Instant);

impl<S: Send + Sync> FromRequestParts<S> for Timer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Timer(Instant::now()))
    }
}

impl Timer {
    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    pub fn ok<T: Serialize>(&self, result: T) -> Response {
        Json(json!({"result": result, "status": "ok", "time": self.seconds()})).into_response()
    }

    /// [`Timer::ok`] with snapfs's own figures beside Qdrant's envelope, under
    /// `snapfs` (clients ignore fields they do not know).
    pub fn ok_with_details<T: Serialize>(&self, result: T, details: serde_json::Value) -> Response {
        Json(json!({"result": result, "status": "ok", "time": self.seconds(), "snapfs": details}))
            .into_response()
    }

    /// A body that is not wrapped in the envelope (Qdrant's `GET /`).
    pub fn ok_raw(&self, body: serde_json::Value) -> Response {
        Json(body).into_response()
    }

    /// A `wait=false` answer, 202 `{"status": "accepted", "time": …}` (no `result`,
    /// as Qdrant): the work continues after this reply.
    pub fn accepted(&self) -> Response {
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "time": self.seconds()})),
        )
            .into_response()
    }
}

/// What [`ApiError`]'s answer carries for the TCP listeners when their client is to
/// be told less than the full text (`api::auth::remote_errors` puts it in place).
#[derive(Clone, Debug)]
pub struct RemoteText(pub String);

/// A whole answer a client on a TCP listener gets instead of the full one (an
/// answer that names the host's directories, such as a backup policy's status).
#[derive(Clone, Debug)]
pub struct RemoteBody(pub Vec<u8>);

impl Timer {
    /// [`Timer::ok`], and beside it the same answer with the daemon's directories
    /// named by their config keys ([`remote_text`]) for TCP clients.
    pub fn ok_hiding_paths<T: Serialize>(&self, result: T) -> Response {
        let body = json!({"result": result, "status": "ok", "time": self.seconds()});
        let full = body.to_string();
        let remote = remote_text(false, &full).into_owned();
        let mut response = (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            full,
        )
            .into_response();
        response
            .extensions_mut()
            .insert(RemoteBody(remote.into_bytes()));
        response
    }
}

/// The failure envelope.
pub fn error_body(message: &str) -> serde_json::Value {
    json!({"status": {"error": message}, "time": 0.0})
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The message is for the host only: a remote client gets `service::remote::INTERNAL_REASON`.
    private: bool,
}

impl ApiError {
    /// An error with `message`; a 500's text is taken as the host's only.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            private: status == StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        let status = match err.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Exists => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Peer => StatusCode::BAD_GATEWAY,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            private: is_private(&err),
            message: err.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        } else {
            tracing::debug!(status = %self.status, error = %self.message, "request rejected");
        }
        let remote = match remote_text(self.private, &self.message) {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(text) if text != self.message => Some(text.to_string()),
            Cow::Borrowed(_) => None,
        };
        let mut response = (self.status, Json(error_body(&self.message))).into_response();
        if let Some(remote) = remote {
            response.extensions_mut().insert(RemoteText(remote));
        }
        response
    }
}

/// The most a JSON body may hold (`service.max_request_size_mb`), set on every
/// request by the router for [`ApiJson`].
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// How much of a refused body is still read and dropped, and for how long at most,
/// before the refusal is sent (see [`read_limited`]).
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// `Json<T>` whose rejections answer in Qdrant's envelope. An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        let bytes = read_limited(req.into_body(), limit).await?;
        let bytes: &[u8] = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            b"{}"
        } else {
            &bytes
        };
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = parse_whole(&mut deserializer)?;
        Ok(ApiJson(value))
    }
}

/// A body of at most `limit` bytes. A longer one is refused with 413, but only
/// after the rest of it was read and dropped (up to [`LINGER_BYTES`], for
/// [`LINGER_TIME`] at most): a refusal sent while the client is still writing is
/// followed by the connection's close, whose reset can reach the client before the
/// answer does, and it would see a broken connection instead of the reason.
async fn read_limited(mut body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body is too large: more than {limit} bytes (raise service.max_request_size_mb)"
            ),
        )
    };
    let declared = hyper::body::Body::size_hint(&body).lower();
    if declared <= limit as u64 {
        let mut bytes = Vec::new();
        loop {
            let Some(frame) = body.frame().await else {
                return Ok(bytes);
            };
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("Request body is unreadable: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit {
                break;
            }
            bytes.extend_from_slice(&data);
        }
    }
    let linger = async {
        let mut dropped = 0usize;
        while dropped < LINGER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => dropped += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, linger).await;
    Err(too_large())
}

fn parse_whole<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, ApiError> {
    let value = T::deserialize(&mut *de)
        .map_err(|e| ApiError::bad_request(format!("Format error in JSON body: {e}")))?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("Format error in JSON body: {e}")))?;
    Ok(value)
}

pub type ApiResult = Result<Response, ApiError>;
