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
        envelope_result(status, &value, || value.to_string())
    }

    /// Stream a GET response body into `out`; returns the expected length. A server
    /// error becomes an error with the server's message.
    pub async fn download(
        &self,
        path: &str,
        out: impl FnMut(&[u8]) -> anyhow::Result<()>,
        on_length: impl FnMut(u64),
    ) -> anyhow::Result<u64> {
        let length = self
            .stream(Method::GET, path, Bytes::new(), out, on_length)
            .await?;
        length.ok_or_else(|| anyhow!("the daemon answered 304 Not Modified to a download"))
    }

    /// POST `body` (JSON) and stream the response body into `out`: `None` when the
    /// daemon answers 304 Not Modified (a partial snapshot with nothing in it).
    pub async fn post_download(
        &self,
        path: &str,
        body: Vec<u8>,
        out: impl FnMut(&[u8]) -> anyhow::Result<()>,
        on_length: impl FnMut(u64),
    ) -> anyhow::Result<Option<u64>> {
        self.stream(Method::POST, path, Bytes::from(body), out, on_length)
            .await
    }

    async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        mut out: impl FnMut(&[u8]) -> anyhow::Result<()>,
        mut on_length: impl FnMut(u64),
    ) -> anyhow::Result<Option<u64>> {
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "snapfs")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        if status == hyper::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.into_body().collect().await?.to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(server_error(status, &value, || {
                String::from_utf8_lossy(&body).into_owned()
            }));
        }
        let length = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("the daemon sent no Content-Length"))?;
        on_length(length);
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                received += data.len() as u64;
                out(&data)?;
            }
        }
        if received != length {
            bail!("download ended after {received} of {length} bytes");
        }
        Ok(Some(length))
    }

    async fn connect<B>(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<B>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| {
            format!("cannot reach the snapfs daemon at {} (is `snapfs serve` running? set --socket or SNAPFS_SOCKET)", self.socket.display())
        })?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Upload `file` as the multipart field `snapshot` (streamed, never read whole);
    /// `on_sent` sees the bytes of the file as they go.
    pub async fn upload(
        &self,
        path: &str,
        file: &Path,
        on_sent: impl FnMut(u64) + Send + 'static,
    ) -> anyhow::Result<Value> {
        use futures_util::StreamExt;
        use hyper::body::Frame;
        let boundary = format!("snapfs-{}", uuid::Uuid::new_v4().simple());
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().replace('"', "_"))
            .unwrap_or_else(|| "snapshot".into());
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        let len = handle.metadata().await?.len();
        let total = head.len() as u64 + len + tail.len() as u64;
        let mut on_sent = on_sent;
        let content =
            tokio_util::io::ReaderStream::with_capacity(handle, 1 << 20).map(move |chunk| {
                if let Ok(chunk) = &chunk {
                    on_sent(chunk.len() as u64);
                }
                chunk
            });
        let stream = futures_util::stream::iter([Ok(Bytes::from(head))])
            .chain(content)
            .chain(futures_util::stream::iter([Ok(Bytes::from(tail))]))
            .map(|chunk: std::io::Result<Bytes>| chunk.map(Frame::data));
        let body = http_body_util::StreamBody::new(stream);
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "snapfs")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("content-length", total)
            .body(body)?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        envelope_result(status, &value, || {
            String::from_utf8_lossy(&body).into_owned()
        })
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(hyper::StatusCode, Value)> {
        let mut sender = self.connect().await?;
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

/// The envelope's `result` on success; otherwise the server's error.
fn envelope_result(
    status: hyper::StatusCode,
    value: &Value,
    fallback: impl FnOnce() -> String,
) -> anyhow::Result<Value> {
    if status.is_success() {
        return Ok(value.get("result").cloned().unwrap_or(Value::Null));
    }
    Err(server_error(status, value, fallback))
}

/// An error with the server's own message (`status.error`), or `fallback` when the
/// body has none.
fn server_error(
    status: hyper::StatusCode,
    value: &Value,
    fallback: impl FnOnce() -> String,
) -> anyhow::Error {
    let message = value
        .pointer("/status/error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(fallback);
    anyhow!("{message} (HTTP {})", status.as_u16())
}
