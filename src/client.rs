//! A small client for the control socket, used by the CLI: one HTTP/1.1 request
//! per connection over the Unix socket, Qdrant's envelope unwrapped.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send a request and return the envelope's `result`; a server error becomes
    /// an error carrying the server's own message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.raw(method, path, body).await?;
        if status.is_success() {
            return Ok(value.get("result").cloned().unwrap_or(Value::Null));
        }
        let message = value
            .pointer("/status/error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("{message} (HTTP {})", status.as_u16())
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(hyper::StatusCode, Value)> {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| {
            format!("cannot reach the snapfs daemon at {} (is `snapfs serve` running? set --socket or SNAPFS_SOCKET)", self.socket.display())
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let bytes = match body {
            Some(body) => serde_json::to_vec(body)?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "snapfs")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                anyhow!(
                    "daemon sent a non-JSON answer ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })?
        };
        Ok((status, value))
    }
}
