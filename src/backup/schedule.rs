//! When a job is due, as a function of the last due time and now (no clock inside,
//! so the rules are tested exactly): the earlier of the cron expression's next
//! match and the interval's end. A due time that passed while the daemon was down,
//! or while the machine slept, gives one catch-up run now, never one per missed slot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::policy::Schedule;

/// The schedule's first due time strictly after `after`.
pub fn next_due(schedule: &Schedule, after: SystemTime) -> SystemTime {
    let never = || after.checked_add(NEVER).unwrap_or(after);
    let by_interval = schedule
        .every
        .map(|every| after.checked_add(every).unwrap_or_else(never));
    let by_cron = schedule.cron.as_ref().and_then(|cron| {
        let from: DateTime<Utc> = after.into();
        cron.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(SystemTime::from)
    });
    match (by_interval, by_cron) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // A cron expression that never matches again (a date in the past).
        (None, None) => never(),
    }
}

/// Far enough to be never (a cron expression without a next match).
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The due time to wait for at start. `last_due`: the due time of the last job
/// started before the stop, or the time the schedule was first started (none: wait
/// for the first slot). `true` when a slot was missed meanwhile: one catch-up run,
/// now. A `last_due` ahead of now (a clock set back) counts as now.
pub fn first_due(
    schedule: &Schedule,
    last_due: Option<SystemTime>,
    now: SystemTime,
) -> (SystemTime, bool) {
    match last_due.map(|last| last.min(now)) {
        Some(last) if next_due(schedule, last) <= now => (now, true),
        Some(last) => (next_due(schedule, last), false),
        None => (next_due(schedule, now), false),
    }
}

/// The due time after the job due at `due`, seen at `now`: the next slot, or now
/// (once) if that slot has passed already (the daemon was busy or the machine slept).
pub fn following(schedule: &Schedule, due: SystemTime, now: SystemTime) -> (SystemTime, bool) {
    let next = next_due(schedule, due);
    if next <= now {
        (now, true)
    } else {
        (next, false)
    }
}

/// A random delay of up to the schedule's jitter.
pub fn jitter(schedule: &Schedule) -> Duration {
    if schedule.jitter.is_zero() {
        return Duration::ZERO;
    }
    let millis = schedule.jitter.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::random_range(0..=millis))
}

/// Seconds since the epoch (the ledger's and the status's unit).
pub fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// [`unix`] back to a time.
/// [`unix`] back to a time; `None` for a value no time has (a damaged ledger).
pub fn from_unix(seconds: f64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::policy::PolicyFile;

    fn schedule(yaml: &str) -> Schedule {
        let text = format!(
            "backups:\n  policies:\n    - name: p\n      collections: [c]\n      schedule: {yaml}\n"
        );
        PolicyFile::from_yaml(&text).unwrap().policies[0]
            .schedule
            .clone()
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<DateTime<Utc>>().unwrap())
    }

    #[test]
    fn cron_interval_and_both() {
        let nightly = schedule("{ cron: \"0 3 * * *\" }");
        assert_eq!(
            next_due(&nightly, at("2026-12-07T10:00:00Z")),
            at("2026-12-08T03:00:00Z")
        );
        // Strictly after: a run due at 03:00 is followed by the next night's.
        assert_eq!(
            next_due(&nightly, at("2026-12-08T03:00:00Z")),
            at("2026-12-09T03:00:00Z")
        );
        let hourly = schedule("{ every: 1h }");
        assert_eq!(
            next_due(&hourly, at("2026-12-07T10:20:00Z")),
            at("2026-12-07T11:20:00Z")
        );
        let both = schedule("{ cron: \"0 3 * * *\", every: 6h }");
        assert_eq!(
            next_due(&both, at("2026-12-07T23:00:00Z")),
            at("2026-12-08T03:00:00Z")
        );
        assert_eq!(
            next_due(&both, at("2026-12-07T10:00:00Z")),
            at("2026-12-07T16:00:00Z")
        );
    }

    #[test]
    fn downtime_gives_one_catch_up_not_a_burst() {
        let hourly = schedule("{ every: 1h }");
        let now = at("2026-12-07T12:00:00Z");
        // Down for five slots: one run now...
        let (due, catch_up) = first_due(&hourly, Some(at("2026-12-07T07:00:00Z")), now);
        assert_eq!((due, catch_up), (now, true));
        // ...and the next an hour after it, not the four others.
        assert_eq!(
            following(&hourly, due, now),
            (at("2026-12-07T13:00:00Z"), false)
        );
        // Nothing missed: the next slot.
        let (due, catch_up) = first_due(&hourly, Some(at("2026-12-07T11:30:00Z")), now);
        assert_eq!((due, catch_up), (at("2026-12-07T12:30:00Z"), false));
        // Never ran: the first slot from now, no run at start.
        assert_eq!(
            first_due(&hourly, None, now),
            (at("2026-12-07T13:00:00Z"), false)
        );
        // A last due time ahead of now (the clock was set back) is taken as now.
        let ahead = at("2027-01-01T00:00:00Z");
        assert_eq!(
            first_due(&hourly, Some(ahead), now),
            (at("2026-12-07T13:00:00Z"), false)
        );
        // Values no time has do not panic.
        assert_eq!(from_unix(f64::MAX), None);
        assert_eq!(from_unix(-1.0), None);
        let huge = schedule("{ every: 520w }");
        assert!(next_due(&huge, now) > now);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let jittered = schedule("{ every: 1h, jitter: 2s }");
        for _ in 0..100 {
            assert!(jitter(&jittered) <= Duration::from_secs(2));
        }
        assert_eq!(jitter(&schedule("{ every: 1h }")), Duration::ZERO);
    }
}
