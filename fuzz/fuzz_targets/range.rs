#![no_main]
//! `api::ranges::parse_range`: the `Range` header of a download against a resource
//! of `size` bytes. Input: the size (first 8 bytes, little-endian), then the header's
//! bytes (skipped when `HeaderValue::from_bytes` refuses them, as the HTTP stack
//! would). Checks: it never panics, and a range it grants, `Ok(Some((start, end)))`,
//! is a non-empty piece of the resource: `start < end <= size` (the response's
//! `Content-Length` is `end - start` and its `Content-Range` ends at `end - 1`).

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use snapfs::api::ranges::parse_range;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    if let Ok(Some((start, end))) = parse_range(Some(&value), size) {
        assert!(
            start < end && end <= size,
            "range {start}..{end} granted for {value:?} on a resource of {size} bytes"
        );
    }
    // No header: the whole resource.
    assert_eq!(parse_range(None, size), Ok(None));
});
