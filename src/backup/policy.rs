//! The `backups:` section of the configuration file: a list of policies. It is read
//! straight from the YAML text (not through the environment overlay the other
//! sections take), so every refusal names the file's line and column: a bad cron
//! expression, an interval that does not parse, a retention without a rule.
//!
//! ```yaml
//! backups:
//!   policies:
//!     - name: nightly
//!       collections: ["*"]        # names, or "*" for every collection at run time
//!       full_storage: false       # also a full-storage snapshot
//!       schedule: { cron: "0 3 * * *", jitter: 10m }   # cron (UTC) and/or every: 6h
//!       retention: { keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_tags: [pinned] }
//!       drills: { schedule: { every: 1d }, read_data_parts: 30, restore: true }
//! ```

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The file's `backups:` section (absent: no policies).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "PolicySpec")]
pub struct Policy {
    pub name: String,
    /// Collection names; `*` stands for every collection when the run starts.
    pub collections: Vec<String>,
    pub full_storage: bool,
    pub schedule: Schedule,
    pub retention: Option<Retention>,
    pub drills: Option<Drills>,
    /// Where this policy's snapshots go, when not to the daemon's store: the shape of
    /// `storage.snapshots_config` plus `snapshots_path` (resolved by the
    /// configuration, opened at start).
    pub store: Option<StoreSection>,
}

/// A policy's own `store:` section, kept as written until the configuration
/// resolves it (it may hold a password: its `Debug` shows none of it).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct StoreSection(pub serde_yaml::Value);

impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSection(…)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    name: String,
    #[serde(default)]
    collections: Vec<String>,
    #[serde(default)]
    full_storage: bool,
    schedule: Schedule,
    #[serde(default)]
    retention: Option<Retention>,
    #[serde(default)]
    drills: Option<Drills>,
    #[serde(default)]
    store: Option<StoreSection>,
}

impl TryFrom<PolicySpec> for Policy {
    type Error = String;

    fn try_from(spec: PolicySpec) -> Result<Policy, String> {
        if !is_plain_name(&spec.name) {
            return Err(format!(
                "policy name {:?}: 1 to 64 letters, digits, `-` or `_`",
                spec.name
            ));
        }
        if spec.collections.is_empty() && !spec.full_storage {
            return Err(format!(
                "policy {}: backs up nothing (give collections, or full_storage: true)",
                spec.name
            ));
        }
        Ok(Policy {
            name: spec.name,
            collections: spec.collections,
            full_storage: spec.full_storage,
            schedule: spec.schedule,
            retention: spec.retention,
            drills: spec.drills,
            store: spec.store,
        })
    }
}

/// A name the configuration gives a policy or a followed cluster: 1 to 64 letters,
/// digits, `-` or `_` (it becomes part of metric labels, record names and mirrors).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl PolicyFile {
    /// The `backups:` section of configuration `text` (YAML). Errors name the line.
    pub fn from_yaml(text: &str) -> Result<PolicyFile, String> {
        #[derive(Deserialize)]
        struct Whole {
            #[serde(default)]
            backups: Option<PolicyFile>,
        }
        let whole: Whole = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let file = whole.backups.unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for policy in &file.policies {
            if !seen.insert(policy.name.as_str()) {
                return Err(format!(
                    "backups.policies: two policies are named {} (line {})",
                    policy.name,
                    line_of_policy(text, &policy.name).unwrap_or(0)
                ));
            }
        }
        Ok(file)
    }
}

/// The 1-based line of policy `name`'s `name:` key in `text` (searched from the
/// top-level `backups:` key on), for refusals made after parsing (a collection that
/// does not exist).
pub fn line_of_policy(text: &str, name: &str) -> Option<usize> {
    let from = text
        .lines()
        .position(|line| line.trim_end() == "backups:")
        .unwrap_or(0);
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, line)| {
            let line = line.trim_start().trim_start_matches('-').trim_start();
            line.strip_prefix("name:")
                .is_some_and(|value| value.trim().trim_matches(|c| c == '"' || c == '\'') == name)
        })
        .map(|(at, _)| at + 1)
}

/// When a job is due: a cron expression (five fields, UTC; six with seconds), an
/// interval, or both (whichever comes first), plus an optional random delay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ScheduleSpec")]
pub struct Schedule {
    pub cron: Option<CronExpr>,
    pub every: Option<Duration>,
    /// Each due time is moved later by a random delay of up to this, so many daemons
    /// do not reach one bucket at once.
    pub jitter: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    #[serde(default)]
    cron: Option<CronExpr>,
    #[serde(default)]
    every: Option<Interval>,
    #[serde(default)]
    jitter: Option<Interval>,
}

impl TryFrom<ScheduleSpec> for Schedule {
    type Error = String;

    fn try_from(spec: ScheduleSpec) -> Result<Schedule, String> {
        if spec.cron.is_none() && spec.every.is_none() {
            return Err("a schedule needs `cron`, `every` or both".into());
        }
        Ok(Schedule {
            cron: spec.cron,
            every: spec.every.map(|i| i.0),
            jitter: spec.jitter.map_or(Duration::ZERO, |i| i.0),
        })
    }
}

/// A cron expression, parsed by croner when the file is read.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CronExpr {
    pub text: String,
    pub cron: croner::Cron,
}

impl std::fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl TryFrom<String> for CronExpr {
    type Error = String;

    fn try_from(text: String) -> Result<CronExpr, String> {
        let cron = croner::Cron::from_str(&text)
            .map_err(|e| format!("bad cron expression {text:?}: {e}"))?;
        Ok(CronExpr { text, cron })
    }
}

/// A length of time: `90s`, `15m`, `6h`, `1d`, `2w`, `1h30m`, or plain seconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct Interval(pub Duration);

impl TryFrom<serde_yaml::Value> for Interval {
    type Error = String;

    fn try_from(value: serde_yaml::Value) -> Result<Interval, String> {
        let text = match &value {
            serde_yaml::Value::Number(n) => format!("{n}s"),
            serde_yaml::Value::String(s) => s.clone(),
            _ => return Err("a length of time is like 90s, 15m, 6h, 1d or 2w".into()),
        };
        parse_interval(&text).map(Interval)
    }
}

/// The longest length of time a policy takes: ten years.
const MAX_INTERVAL_SECS: u64 = 10 * 366 * 86_400;

/// `1h30m` → 5400 s. Units: s, m, h, d (24 h), w.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad length of time {text:?}: write it like 90s, 15m, 6h, 1d or 2w");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() {
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total.checked_add(n).ok_or_else(bad)?;
        any = true;
    }
    if !any || total == 0 {
        return Err(bad());
    }
    if total > MAX_INTERVAL_SECS {
        return Err(format!("{text:?} is longer than ten years"));
    }
    Ok(Duration::from_secs(total))
}

/// Which generations stay, with restic's `forget` rules; then `prune` (repository).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RetentionSpec")]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<Duration>,
    /// Generations carrying any of these tags stay (a repository's restic tags).
    pub keep_tags: Vec<String>,
    /// Reclaim the space of forgotten generations (a repository's garbage
    /// collection) after each retention.
    pub prune: bool,
    /// Its own schedule; without one the retention follows each backup run.
    pub schedule: Option<Schedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSpec {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<Interval>,
    #[serde(default)]
    keep_tags: Vec<String>,
    #[serde(default = "yes")]
    prune: bool,
    #[serde(default)]
    schedule: Option<Schedule>,
}

fn yes() -> bool {
    true
}

impl TryFrom<RetentionSpec> for Retention {
    type Error = String;

    fn try_from(spec: RetentionSpec) -> Result<Retention, String> {
        let counts = [
            spec.keep_last,
            spec.keep_hourly,
            spec.keep_daily,
            spec.keep_weekly,
            spec.keep_monthly,
            spec.keep_yearly,
        ];
        if counts.iter().all(Option::is_none)
            && spec.keep_within.is_none()
            && spec.keep_tags.is_empty()
        {
            return Err(
                "a retention needs at least one keep_* rule (it would remove every generation)"
                    .into(),
            );
        }
        if counts.contains(&Some(0)) {
            return Err("a keep_* count is at least 1 (leave the rule out instead)".into());
        }
        Ok(Retention {
            keep_last: spec.keep_last,
            keep_hourly: spec.keep_hourly,
            keep_daily: spec.keep_daily,
            keep_weekly: spec.keep_weekly,
            keep_monthly: spec.keep_monthly,
            keep_yearly: spec.keep_yearly,
            keep_within: spec.keep_within.map(|i| i.0),
            keep_tags: spec.keep_tags,
            prune: spec.prune,
            schedule: spec.schedule,
        })
    }
}

/// Proof that the backups restore, on a schedule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drills {
    pub schedule: Schedule,
    /// The repository's pack files are read in this many parts, one part per drill
    /// (restic's `check --read-data-subset k/n`), so all of them are read every
    /// `read_data_parts` drills; 0: the structure only.
    #[serde(default)]
    pub read_data_parts: u32,
    /// Restore the newest generation of each collection into a scratch place, open
    /// it and compare it with what was recorded.
    #[serde(default = "yes")]
    pub restore: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_nonsense_is_refused() {
        assert_eq!(parse_interval("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_interval("2w").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert_eq!(parse_interval("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "0s", "h", "5 parsecs", "99999999999999999999w", "600w"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_policy_file_reads_and_its_errors_name_the_line() {
        let text = "\
storage: {}
backups:
  policies:
    - name: nightly
      collections: [docs, \"*\"]
      schedule: { cron: \"0 3 * * *\", every: 6h, jitter: 10m }
      retention: { keep_last: 3, keep_daily: 7, keep_tags: [pinned] }
      drills: { schedule: { every: 1d }, read_data_parts: 30 }
";
        let file = PolicyFile::from_yaml(text).unwrap();
        let policy = &file.policies[0];
        assert_eq!(policy.collections, ["docs", "*"]);
        assert_eq!(policy.schedule.every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(policy.schedule.jitter, Duration::from_secs(600));
        assert_eq!(policy.retention.as_ref().unwrap().keep_daily, Some(7));
        assert!(policy.retention.as_ref().unwrap().prune);
        assert!(policy.drills.as_ref().unwrap().restore);
        assert_eq!(line_of_policy(text, "nightly"), Some(4));
        // A `name:` before the section (another key's) is not the policy's.
        let earlier = format!("other:\n  name: nightly\n{text}");
        assert_eq!(line_of_policy(&earlier, "nightly"), Some(6));

        let bad_cron = text.replace("0 3 * * *", "0 3 * * * * * *");
        let err = PolicyFile::from_yaml(&bad_cron).unwrap_err();
        assert!(
            err.contains("bad cron expression") && err.contains("line 6"),
            "{err}"
        );
        let no_rule = text.replace(
            "keep_last: 3, keep_daily: 7, keep_tags: [pinned]",
            "prune: true",
        );
        let err = PolicyFile::from_yaml(&no_rule).unwrap_err();
        // A whole-mapping refusal is placed at its policy.
        assert!(
            err.contains("at least one keep_") && err.contains("line 4"),
            "{err}"
        );
        let typo = text.replace("read_data_parts", "read_data_part");
        let err = PolicyFile::from_yaml(&typo).unwrap_err();
        assert!(
            err.contains("read_data_part") && err.contains("line 8"),
            "{err}"
        );
        let twice = format!(
            "{text}    - name: nightly\n      full_storage: true\n      schedule: {{ every: 1h }}\n"
        );
        let err = PolicyFile::from_yaml(&twice).unwrap_err();
        assert!(err.contains("two policies are named nightly"), "{err}");
        assert!(
            PolicyFile::from_yaml("storage: {}\n")
                .unwrap()
                .policies
                .is_empty()
        );
    }
}
