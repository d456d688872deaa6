//! Streaming a byte source as an HTTP body, honouring a single `Range` request
//! (`bytes=a-b`, `bytes=a-`, `bytes=-n`): the live view and stored files share it.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::stream;

use super::envelope::ApiError;

/// Bytes per body chunk: large enough that per-chunk costs (a blocking-pool hop, a
/// write to the socket) vanish next to copying, small enough to bound memory per stream.
const CHUNK: usize = 4 << 20;

/// Reads `buf.len()` bytes at an offset (short only at the end).
pub type ReadAt = Arc<dyn Fn(u64, &mut [u8]) -> io::Result<usize> + Send + Sync>;
/// Sees every chunk sent, with its offset.
pub type OnChunk = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// A `Range` header that cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parse a `Range` header against a resource of `size` bytes: `Ok(None)` for the
/// whole resource, `Ok(Some((start, end_exclusive)))` for a satisfiable range.
pub fn parse_range(
    value: Option<&HeaderValue>,
    size: u64,
) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(value) = value else { return Ok(None) };
    let text = value.to_str().map_err(|_| Unsatisfiable)?.trim();
    let spec = text.strip_prefix("bytes=").ok_or(Unsatisfiable)?;
    if spec.contains(',') {
        // Multiple ranges are allowed to be answered with the whole resource.
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (size.saturating_sub(n), size)
        }
        (start, "") => (start.parse().map_err(|_| Unsatisfiable)?, size),
        (start, end) => {
            let start: u64 = start.parse().map_err(|_| Unsatisfiable)?;
            let end: u64 = end.parse().map_err(|_| Unsatisfiable)?;
            if end < start {
                return Err(Unsatisfiable);
            }
            (start, (end + 1).min(size))
        }
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// A streamed response of the source, whole or the requested range, with exact
/// `Content-Length` and a download file name. `on_chunk` sees every chunk sent.
pub fn stream_response(
    headers: &HeaderMap,
    size: u64,
    file_name: &str,
    read_at: ReadAt,
    on_chunk: Option<OnChunk>,
) -> Result<Response, ApiError> {
    let range = parse_range(headers.get(header::RANGE), size).map_err(|_| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Range not satisfiable for a resource of {size} bytes"),
        )
    })?;
    let (start, end, status) = match range {
        None => (0, size, StatusCode::OK),
        Some((s, e)) => (s, e, StatusCode::PARTIAL_CONTENT),
    };
    let body = Body::from_stream(stream::unfold(start, move |offset| {
        let read_at = read_at.clone();
        let on_chunk = on_chunk.clone();
        async move {
            if offset >= end {
                return None;
            }
            let want = ((end - offset) as usize).min(CHUNK);
            let chunk = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
                let mut buf = vec![0u8; want];
                let n = read_at(offset, &mut buf)?;
                if n < want {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "source ended before its size",
                    ));
                }
                if let Some(f) = on_chunk {
                    f(offset, &buf);
                }
                Ok(buf)
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            match chunk {
                Ok(buf) => {
                    let next = offset + buf.len() as u64;
                    Some((Ok::<_, io::Error>(axum::body::Bytes::from(buf)), next))
                }
                Err(err) => {
                    tracing::error!(%err, offset, "streaming failed; the response is cut short");
                    Some((Err(err), end))
                }
            }
        }
    }));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    response
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
        parse_range(Some(&HeaderValue::from_str(text).unwrap()), size)
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(range("bytes=0-0", 10), Ok(Some((0, 1))));
        assert_eq!(range("bytes=2-", 10), Ok(Some((2, 10))));
        assert_eq!(range("bytes=-3", 10), Ok(Some((7, 10))));
        assert_eq!(range("bytes=-30", 10), Ok(Some((0, 10))));
        assert_eq!(range("bytes=5-100", 10), Ok(Some((5, 10))));
        assert_eq!(range("bytes=0-1,4-5", 10), Ok(None));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=x-1",
            "items=0-1",
            "bytes=-0",
        ] {
            assert_eq!(range(bad, 10), Err(Unsatisfiable), "{bad}");
        }
    }
}
