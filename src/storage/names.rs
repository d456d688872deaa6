//! Collection names become directory names and, later, file names in the mount, so
//! only plain names are allowed.

use super::error::{Result, StorageError};

/// Longest name a Linux file system takes as one path component.
pub const MAX_NAME_BYTES: usize = 255;

pub fn validate_collection_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("must be at most 255 bytes")
    } else if name == "." || name == ".." {
        Some("must not be `.` or `..`")
    } else if name.starts_with('.') {
        Some("must not start with `.` (hidden names are reserved for staging)")
    } else if name.contains('/') || name.contains('\\') {
        Some("must not contain `/` or `\\`")
    } else if name.chars().any(|c| c.is_control()) {
        Some("must not contain NUL or control characters")
    } else {
        None
    };
    match problem {
        Some(why) => Err(StorageError::bad_request(format!(
            "Invalid collection name {name:?}: a collection name {why}"
        ))),
        None => Ok(()),
    }
}

/// A name as one URL path segment: all but RFC 3986's unreserved characters
/// percent-encoded (names may hold spaces or non-ASCII).
pub fn url_segment(name: &str) -> String {
    const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, KEPT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_paths() {
        let long = "x".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("docs", true),
            ("my-collection_2", true),
            ("ümlaut", true),
            ("", false),
            (".", false),
            ("..", false),
            (".hidden", false),
            ("a/b", false),
            ("../etc", false),
            ("a\0b", false),
            ("tab\there", false),
            (&long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_collection_name(name).is_ok(), *ok, "name {name:?}");
        }
        assert!(validate_collection_name(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn a_name_becomes_one_path_segment() {
        assert_eq!(url_segment("docs-1_a.b~"), "docs-1_a.b~");
        assert_eq!(url_segment("a b/ü?#%"), "a%20b%2F%C3%BC%3F%23%25");
    }
}
