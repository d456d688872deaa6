//! Streaming a byte source as an HTTP body, honouring a single `Range` request
//! (`bytes=a-b`, `bytes=a-`, `bytes=-n`): the live view and stored files share it.
//! Every answer names its bytes (`ETag`, `Last-Modified`), and a `Range` with an
//! `If-Range` that no longer names them gets the whole new resource instead of a
//! piece of it (so a resumed download never joins two states).

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::stream;

use super::envelope::ApiError;

/// Bytes per body chunk: large enough that per-chunk costs (a blocking-pool hop, a
/// write to the socket) vanish next to copying, small enough to bound memory per stream.
const CHUNK: usize = 2 << 20;
/// Chunks read ahead of the one being sent: reading overlaps sending.
const CHUNKS_AHEAD: usize = 2;

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
            // A last byte past the end means the end (RFC 9110); `end + 1` would
            // overflow for the largest `end`.
            (start, end.saturating_add(1).min(size))
        }
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// What names a resource's bytes: a strong entity tag (the same tag, the same
/// bytes) and when they last changed.
#[derive(Debug, Clone)]
pub struct Validators {
    pub etag: String,
    pub last_modified: std::time::SystemTime,
}

impl Validators {
    /// A strong tag from a digest of what determines the bytes.
    pub fn from_digest(digest: &[u8], last_modified: std::time::SystemTime) -> Self {
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Validators {
            etag: format!("\"{hex}\""),
            last_modified,
        }
    }

    /// Does an `If-Range` value still name these bytes? A tag must be ours exactly
    /// (and strong); a date must be our Last-Modified, to the second.
    fn still(&self, if_range: &HeaderValue) -> bool {
        let Ok(text) = if_range.to_str() else {
            return false;
        };
        let text = text.trim();
        if text.starts_with('"') {
            return text == self.etag;
        }
        if text.starts_with("W/") {
            return false;
        }
        httpdate::parse_http_date(text).is_ok_and(|date| {
            httpdate::fmt_http_date(date) == httpdate::fmt_http_date(self.last_modified)
        })
    }
}

/// `Content-Disposition` for a download: the name as a quoted string (quotes and
/// backslashes escaped, anything but printable ASCII replaced), and the exact name
/// in RFC 5987 form when it is not plain ASCII.
pub fn content_disposition(file_name: &str) -> String {
    let plain: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let quoted = plain.replace('\\', "\\\\").replace('"', "\\\"");
    let mut value = format!("attachment; filename=\"{quoted}\"");
    if plain != file_name {
        // RFC 5987's attr-char kept, every other byte percent-encoded.
        const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'!')
            .remove(b'#')
            .remove(b'$')
            .remove(b'&')
            .remove(b'+')
            .remove(b'-')
            .remove(b'.')
            .remove(b'^')
            .remove(b'_')
            .remove(b'`')
            .remove(b'|')
            .remove(b'~');
        let encoded = percent_encoding::utf8_percent_encode(file_name, ATTR_CHAR);
        value.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    value
}

/// A streamed response of the source, whole or the requested range, with exact
/// `Content-Length`, its validators and a download file name. `on_chunk` sees every
/// chunk sent.
pub fn stream_response(
    headers: &HeaderMap,
    size: u64,
    file_name: &str,
    validators: &Validators,
    read_at: ReadAt,
    on_chunk: Option<OnChunk>,
) -> Result<Response, ApiError> {
    let still = headers
        .get(header::IF_RANGE)
        .is_none_or(|value| validators.still(value));
    // A Range whose If-Range names other bytes: the whole resource, 200.
    let range_header = headers.get(header::RANGE).filter(|_| still);
    let range = parse_range(range_header, size).map_err(|_| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Range not satisfiable for a resource of {size} bytes"),
        )
    })?;
    let (start, end, status) = match range {
        None => (0, size, StatusCode::OK),
        Some((s, e)) => (s, e, StatusCode::PARTIAL_CONTENT),
    };
    let body = Body::from_stream(read_ahead(start, end, read_at, on_chunk));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &validators.etag)
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(validators.last_modified),
        )
        .header(header::CONTENT_DISPOSITION, content_disposition(file_name));
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

/// Bytes `start..end` from `read_at`, in chunks, read on a blocking thread of their
/// own while earlier chunks are being sent: the socket never waits for a read it
/// could have had already. At most `CHUNKS_AHEAD` chunks wait, so memory per stream
/// stays at a few chunks. A client that goes away stops the reading at the next chunk.
fn read_ahead(
    start: u64,
    end: u64,
    read_at: ReadAt,
    on_chunk: Option<OnChunk>,
) -> impl futures_util::Stream<Item = io::Result<axum::body::Bytes>> {
    let (chunks, received) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        while offset < end {
            let want = ((end - offset) as usize).min(CHUNK);
            let mut buf = vec![0u8; want];
            let chunk = match read_at(offset, &mut buf) {
                Ok(n) if n == want => {
                    if let Some(f) = &on_chunk {
                        f(offset, &buf);
                    }
                    Ok(axum::body::Bytes::from(buf))
                }
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended before its size",
                )),
                Err(err) => Err(err),
            };
            if let Err(err) = &chunk {
                tracing::error!(%err, offset, "streaming failed; the response is cut short");
            }
            let failed = chunk.is_err();
            if chunks.blocking_send(chunk).is_err() || failed {
                return;
            }
            offset += want as u64;
        }
    });
    stream::unfold(received, |mut received| async move {
        received.recv().await.map(|chunk| (chunk, received))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_range_names_the_bytes_or_not() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let v = Validators::from_digest(&[0xab; 32], at);
        let value = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(v.still(&value(&v.etag)));
        assert!(!v.still(&value("\"00\"")));
        assert!(!v.still(&value(&format!("W/{}", v.etag))));
        assert!(v.still(&value(&httpdate::fmt_http_date(at))));
        assert!(!v.still(&value(&httpdate::fmt_http_date(
            at + std::time::Duration::from_secs(1)
        ))));
        assert!(!v.still(&value("yesterday")));
    }

    #[test]
    fn file_names_are_quoted_safely() {
        assert_eq!(
            content_disposition("a.snapshot"),
            "attachment; filename=\"a.snapshot\""
        );
        assert_eq!(
            content_disposition("x\"y\\z.snapshot"),
            "attachment; filename=\"x\\\"y\\\\z.snapshot\""
        );
        let fancy = content_disposition("café.snapshot");
        assert_eq!(
            fancy,
            "attachment; filename=\"caf_.snapshot\"; filename*=UTF-8''caf%C3%A9.snapshot"
        );
    }

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

    /// Found by fuzzing (fuzz/ `range`): the largest last-byte position overflowed
    /// `end + 1` (a panic with overflow checks; without them, a range ending at 0).
    #[test]
    fn a_last_byte_of_u64_max_means_the_end() {
        let max = u64::MAX;
        assert_eq!(range(&format!("bytes=0-{max}"), max), Ok(Some((0, max))));
        assert_eq!(range(&format!("bytes=5-{max}"), 10), Ok(Some((5, 10))));
    }
}
