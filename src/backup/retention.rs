//! Which generations a retention keeps: restic's `forget` rules (keep the last n,
//! the newest per hour/day/week/month/year for n such periods, everything within a
//! span of the newest, anything carrying a pinned tag), applied by rustic_core's own
//! `KeepOptions` so a repository shared with the restic CLI gets the very decisions
//! `restic forget` would make. Periods are counted in the daemon's local time, as
//! restic counts them.

use std::time::SystemTime;

use rustic_core::KeepOptions;
use rustic_core::jiff::{Span, Timestamp, Zoned, tz::TimeZone};
use rustic_core::repofile::{SnapshotFile, StringList};
use serde::Serialize;

use super::policy::Retention;

/// A stored snapshot a retention looks at.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub time: SystemTime,
    /// Its tags, where the store has them (a repository generation's restic tags).
    pub tags: Vec<String>,
}

/// What a retention does with one stored snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    /// Why it stays (`last`, `daily`, `tags`…); empty for one that goes.
    pub reasons: Vec<String>,
}

fn keep_options(retention: &Retention) -> Result<KeepOptions, String> {
    let count = |n: Option<u32>| n.map(|n| n.min(i32::MAX as u32) as i32);
    let mut keep = KeepOptions::default();
    keep.keep_last = count(retention.keep_last);
    keep.keep_hourly = count(retention.keep_hourly);
    keep.keep_daily = count(retention.keep_daily);
    keep.keep_weekly = count(retention.keep_weekly);
    keep.keep_monthly = count(retention.keep_monthly);
    keep.keep_yearly = count(retention.keep_yearly);
    keep.keep_within = match retention.keep_within {
        Some(within) => Some(
            Span::new()
                .try_seconds(within.as_secs().min(i64::MAX as u64) as i64)
                .map_err(|e| format!("keep_within: {e}"))?,
        ),
        None => None,
    };
    keep.keep_tags = retention
        .keep_tags
        .iter()
        .map(|tags| {
            tags.parse::<StringList>()
                .map_err(|_| format!("keep_tags: {tags}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(keep)
}

fn zoned(time: SystemTime) -> Result<Zoned, String> {
    Timestamp::try_from(time)
        .map(|t| t.to_zoned(TimeZone::system()))
        .map_err(|e| format!("a time out of range: {e}"))
}

/// The decision for each of `candidates` (newest first), as restic's `forget` takes
/// it for one group at `now`.
pub fn plan(
    candidates: &[Candidate],
    retention: &Retention,
    now: SystemTime,
) -> Result<Vec<Decision>, String> {
    let keep = keep_options(retention)?;
    let mut snapshots = Vec::with_capacity(candidates.len());
    for (at, candidate) in candidates.iter().enumerate() {
        let mut tags = StringList::default();
        for tag in &candidate.tags {
            tags.add(tag.clone());
        }
        snapshots.push(SnapshotFile {
            time: zoned(candidate.time)?,
            // Where each decision goes back to.
            label: at.to_string(),
            tags,
            ..SnapshotFile::default()
        });
    }
    let decided = keep
        .apply(snapshots, &zoned(now)?)
        .map_err(|e| e.display_log())?;
    Ok(decided
        .into_iter()
        .map(|d| Decision {
            name: candidates[d.snapshot.label.parse::<usize>().unwrap_or(0)]
                .name
                .clone(),
            keep: d.keep,
            reasons: d.reasons,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backup::policy::PolicyFile;

    fn retention(yaml: &str) -> Retention {
        let text = format!(
            "backups:\n  policies:\n    - name: p\n      collections: [c]\n      schedule: {{ every: 1h }}\n      retention: {yaml}\n"
        );
        PolicyFile::from_yaml(&text).unwrap().policies[0]
            .retention
            .clone()
            .unwrap()
    }

    fn hourly_series(hours: u64, now: SystemTime) -> Vec<Candidate> {
        (0..hours)
            .map(|h| Candidate {
                name: format!("g{h}"),
                time: now - Duration::from_secs(3600 * h + 60),
                tags: if h == 40 {
                    vec!["pinned".into()]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    #[test]
    fn keep_last_daily_and_pinned_tags() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let series = hourly_series(72, now);
        let kept = |yaml: &str| -> Vec<String> {
            plan(&series, &retention(yaml), now)
                .unwrap()
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.name)
                .collect()
        };
        assert_eq!(kept("{ keep_last: 3 }"), ["g0", "g1", "g2"]);
        // One per day for three days: 72 hourly generations span three or four days.
        let daily = kept("{ keep_daily: 3 }");
        assert_eq!(daily.len(), 3);
        assert_eq!(daily[0], "g0");
        let pinned = kept("{ keep_last: 1, keep_tags: [pinned] }");
        assert_eq!(pinned, ["g0", "g40"]);
        let within = kept("{ keep_within: 5h }");
        // Newer than the newest minus 5 h: the newest and the four after it.
        assert_eq!(within, ["g0", "g1", "g2", "g3", "g4"]);
    }
}
