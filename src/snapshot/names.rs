//! Snapshot file names: `<c>-<YYYY-MM-DD-HH-MM-SS>.snapshot`,
//! `<c>-shard-<id>-<ts>.snapshot`, `full-snapshot-<ts>.snapshot` (UTC), and the check
//! that a name given in a request is a plain file name.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::{Result, StorageError};

/// Civil date and time (UTC) of a Unix timestamp: (year, month, day, hour, minute, second).
pub fn utc(time: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (Howard Hinnant's algorithm, proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `YYYY-MM-DD-HH-MM-SS`, as in Qdrant's snapshot names.
pub fn name_timestamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc(time);
    format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}")
}

/// `YYYY-MM-DDTHH:MM:SS`, Qdrant's `creation_time`.
pub fn creation_time(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// A snapshot name from a request must be a plain file name: no path, no hidden
/// or temporary names, no control characters. Anything else names no stored
/// snapshot, so it is "not found" (404, as in Qdrant), decided from the text alone:
/// nothing outside the snapshots directory is looked at.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(char::is_control);
    if bad {
        return Err(StorageError::NotFound(format!(
            "Snapshot {name:?} not found: a snapshot name is a plain file name (no `/`, no leading `.`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_like_qdrant() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_972_514); // 2026-11-29 ...
        assert_eq!(utc(UNIX_EPOCH), (1970, 1, 1, 0, 0, 0));
        assert_eq!(
            name_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29-00-00-00"
        );
        assert_eq!(
            creation_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20"
        );
        assert_eq!(name_timestamp(t).len(), 19);
    }

    #[test]
    fn snapshot_names_are_plain() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\\b", "x\u{1}"] {
            assert!(
                matches!(validate_snapshot_name(bad), Err(StorageError::NotFound(_))),
                "{bad:?}"
            );
        }
        assert!(validate_snapshot_name("docs-2026-01-01-00-00-00.snapshot").is_ok());
    }
}
