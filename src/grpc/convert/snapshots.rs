//! Stored snapshots out: Qdrant's `SnapshotDescription`.

use crate::grpc::proto;
use crate::snapshot::store::SnapshotDescription;

pub fn description(d: SnapshotDescription) -> proto::SnapshotDescription {
    proto::SnapshotDescription {
        // `YYYY-MM-DDTHH:MM:SS` in UTC, as REST shows it.
        creation_time: d
            .creation_time
            .and_then(|t| format!("{t}Z").parse::<prost_types::Timestamp>().ok()),
        name: d.name,
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        checksum: d.checksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_creation_time_is_the_same_instant_as_rests() {
        let shown = description(SnapshotDescription {
            name: "c-2026-11-30-16-51-59.snapshot".into(),
            creation_time: Some("2026-11-30T16:51:59".into()),
            size: 4096,
            checksum: Some("ab".repeat(32)),
        });
        let time = shown.creation_time.unwrap();
        assert_eq!(time.to_string(), "2026-11-30T16:51:59Z");
        assert_eq!(shown.size, 4096);
    }
}
