#![no_main]
//! `snapshot::checksum::sidecar_checksum`: the checksum read from a `<name>.checksum`
//! (or `sha256sum`-style) sidecar before a restore. Input: any UTF-8 text. Checks: it
//! never panics, and whatever it returns is a SHA-256 as the rest of snapfs compares
//! it: exactly 64 lowercase hex digits (and the first word of the text).

use libfuzzer_sys::fuzz_target;
use snapfs::snapshot::checksum::sidecar_checksum;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(hex) = sidecar_checksum(text) {
        assert_eq!(hex.len(), 64, "{hex:?} from {text:?}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hex:?} from {text:?}"
        );
        let first = text.split_whitespace().next().unwrap();
        assert_eq!(first.to_ascii_lowercase(), hex);
    }
});
