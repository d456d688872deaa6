//! Backup policies end to end: schedules that run by themselves (short intervals,
//! no long sleeps), one catch-up after downtime, overlaps skipped and counted,
//! retention deciding exactly as `restic forget` does on the same repository, a
//! prune beside a generation being written, drills that pass and one that fails on a
//! repository damaged on purpose, and policies refused at start by their line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A daemon with a demo collection, snapshots in a restic repository at
/// `<dir>/repo` (or the plain local store), and the policies of `policies` (YAML
/// under `backups:`; `DIR` stands for the test's directory).
struct PolicyDaemon {
    daemon: Daemon,
    dir: tempfile::TempDir,
    repo: PathBuf,
    password_file: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl PolicyDaemon {
    fn start(
        policies: &str,
        repository: bool,
        extra_env: &[(&str, &str)],
        mount: bool,
    ) -> PolicyDaemon {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        let config = dir.path().join("config.yaml");
        let policies = policies.replace("DIR", &dir.path().display().to_string());
        std::fs::write(&config, format!("backups:\n  policies:\n{policies}")).unwrap();
        let mut env: Vec<(String, String)> = Vec::new();
        if repository {
            env.extend(
                repository_env(&repo, &password_file)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
        }
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut args = vec![
            "--demo".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        if mount {
            args.push("--mount".into());
            args.push(dir.path().join("mnt").display().to_string());
        }
        let daemon = Self::spawn_in(dir.path(), &args, &env);
        PolicyDaemon {
            daemon,
            dir,
            repo,
            password_file,
            env,
            args,
        }
    }

    fn spawn_in(dir: &Path, args: &[String], env: &[(String, String)]) -> Daemon {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start_in(&dir.join("data"), &args, &env)
    }

    /// Start again after a stop.
    fn restart(&mut self) {
        self.daemon = Self::spawn_in(self.dir.path(), &self.args, &self.env);
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn restic(&self, args: &[&str]) -> Output {
        Command::new("restic")
            .arg("-r")
            .arg(&self.repo)
            .arg("--password-file")
            .arg(&self.password_file)
            .arg("--no-cache")
            .args(args)
            .output()
            .expect("the restic CLI runs (scripts/test.sh installs the Debian package)")
    }

    fn restic_ok(&self, args: &[&str]) -> String {
        let out = self.restic(args);
        assert!(
            out.status.success(),
            "restic {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SNAPFS_SOCKET", &self.daemon.socket)
            .output()
            .unwrap()
    }

    async fn status(&self, policy: &str) -> Value {
        let (status, body) = call(
            &self.daemon.client(),
            Method::GET,
            &format!("/snapfs/backups/{policy}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["result"].clone()
    }

    async fn metrics(&self) -> String {
        String::from_utf8(fetch(&self.daemon.client(), "/metrics").await).unwrap()
    }
}

/// Poll the policy's status until `check` holds (at most `within`).
async fn status_until(
    pd: &PolicyDaemon,
    policy: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = pd.status(policy).await;
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(feature = "failpoints")] // SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn schedules_run_overlaps_are_skipped_and_the_status_shows_everywhere() {
    // Every second, each generation held 2.5 s in writing: runs overlap.
    let pd = PolicyDaemon::start(
        "    - name: often\n      collections: [demo]\n      schedule: { every: 1s }\n      retention: { keep_last: 2 }\n",
        true,
        &[("SNAPFS_PAUSE_AT", "repository-locked:2500")],
        true,
    );
    let status = status_until(
        &pd,
        "often",
        Duration::from_secs(30),
        "two runs and a skip",
        |s| s["runs"].as_u64() >= Some(2) && s["skipped"].as_u64() >= Some(1),
    )
    .await;
    let last = &status["last_run"];
    assert_eq!(last["result"], "ok", "{status:#}");
    assert_eq!(last["trigger"], "schedule");
    assert_eq!(last["scopes"][0]["collection"], "demo");
    assert!(
        last["scopes"][0]["snapshot"]
            .as_str()
            .unwrap()
            .ends_with(".snapshot")
    );
    assert!(status["next"]["backup"].as_f64().unwrap() > 0.0);
    // The retention followed each run: never more than two kept once it ran.
    assert!(
        status["generations"]["demo"].as_u64().unwrap() <= 3,
        "{status:#}"
    );

    let metrics = pd.metrics().await;
    let skipped = sample(
        &metrics,
        "snapfs_backup_runs_skipped_total{policy=\"often\",job=\"backup\"}",
    );
    assert!(skipped >= Some(1.0), "{metrics}");
    let success = sample(
        &metrics,
        "snapfs_backup_last_success_timestamp_seconds{policy=\"often\",collection=\"demo\"}",
    )
    .expect("a last-success sample");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - success < 60.0, "{success} vs {now}");
    assert_eq!(
        sample(&metrics, "snapfs_backup_interval_seconds{policy=\"often\"}"),
        Some(1.0)
    );

    // The same status in the mount, and in the CLI's words.
    let mounted: Value =
        serde_json::from_slice(&std::fs::read(pd.mnt().join("backups/often.json")).unwrap())
            .unwrap();
    assert_eq!(mounted["name"], "often");
    assert!(mounted["runs"].as_u64() >= Some(2));
    assert_eq!(names(&pd.mnt().join("backups")), ["often.json"]);
    assert!(std::fs::write(pd.mnt().join("backups/often.json"), b"x").is_err());
    let out = pd.cli(&["backup", "status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy often") && text.contains("last run:"),
        "{text}"
    );
    // The repository is whole for restic (whose check wants the daemon's locks gone).
    let mut pd = pd;
    assert!(pd.daemon.stop().success());
    pd.restic_ok(&["check"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catch_up_after_downtime_is_one_run_on_the_plain_store() {
    let mut pd = PolicyDaemon::start(
        "    - name: hourly\n      collections: [\"*\"]\n      schedule: { every: 1h }\n      retention: { keep_last: 1 }\n",
        false,
        &[],
        false,
    );
    // Never ran: the first slot is an hour away, nothing runs at start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = pd.status("hourly").await;
    assert_eq!(status["runs"], 0, "{status:#}");
    let next = status["next"]["backup"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((next - now - 3600.0).abs() < 60.0, "{next} vs {now}");

    // The daemon was down for five slots: the ledger says the last one was due 5 h ago.
    assert!(pd.daemon.stop().success());
    let ledger_path = pd.dir.path().join("data/backups.json");
    // (The first start anchored the schedule: restarts more often than the interval
    // still come to a run.)
    let anchored: Value = serde_json::from_slice(&std::fs::read(&ledger_path).unwrap()).unwrap();
    let anchor = anchored["policies"]["hourly"]["last_due"]["backup"]
        .as_f64()
        .unwrap();
    assert!((anchor - now).abs() < 60.0, "{anchor} vs {now}");
    let mut ledger: Value = serde_json::from_slice(
        &std::fs::read(&ledger_path).unwrap_or_else(|_| b"{\"policies\":{}}".to_vec()),
    )
    .unwrap();
    ledger["policies"]["hourly"]["last_due"] = serde_json::json!({"backup": now - 5.0 * 3600.0});
    std::fs::write(&ledger_path, serde_json::to_vec(&ledger).unwrap()).unwrap();
    pd.restart();
    let status = status_until(
        &pd,
        "hourly",
        Duration::from_secs(20),
        "the catch-up run",
        |s| s["runs"] == 1,
    )
    .await;
    assert_eq!(status["last_run"]["trigger"], "catch-up");
    assert_eq!(status["last_run"]["result"], "ok", "{status:#}");
    // One run, not five: nothing more comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = pd.status("hourly").await;
    assert_eq!(status["runs"], 1, "{status:#}");
    assert_eq!(status["generations"]["demo"], 1);
    let next = status["next"]["backup"].as_f64().unwrap();
    assert!(
        next - now > 3000.0,
        "the next run is a slot away: {next} vs {now}"
    );
    // A run now, by the CLI, follows its progress to the end; a second stored
    // snapshot and the retention keeping one.
    let out = pd.cli(&["backup", "run", "hourly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = pd.status("hourly").await;
    assert_eq!(status["runs"], 2);
    assert_eq!(status["last_run"]["trigger"], "manual");
    assert_eq!(status["generations"]["demo"], 1, "{status:#}");
    assert_eq!(
        status["last_run"]["scopes"][0]["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Make a generation of the demo collection with the restic CLI at `time`: snapfs's
/// tags, a small tree (retention reads only times and tags).
fn synthetic_generation(pd: &PolicyDaemon, time: &str, n: usize, extra_tag: Option<&str>) {
    let content = pd.dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("f"), format!("{n}")).unwrap();
    let name = format!("demo-synthetic-{n:03}.snapshot");
    let mut tags = format!(
        "snapfs,scope=collection,collection=demo,name={name},size=1,sha256={}",
        "0".repeat(64)
    );
    if let Some(tag) = extra_tag {
        tags.push(',');
        tags.push_str(tag);
    }
    pd.restic_ok(&[
        "backup",
        "--host",
        "snapfs",
        "--time",
        time,
        "--tag",
        &tags,
        content.to_str().unwrap(),
    ]);
}

fn name_of(snapshot: &Value) -> String {
    snapshot["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str()?.strip_prefix("name="))
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_exactly_what_restic_forget_removes() {
    let pd = PolicyDaemon::start(
        "    - name: keep\n      collections: [demo]\n      schedule: { every: 1d }\n      retention: { keep_last: 2, keep_daily: 5, keep_weekly: 3, keep_monthly: 4, keep_yearly: 2, keep_tags: [pinned] }\n",
        true,
        &[],
        false,
    );
    // 32 generations over two years: every ~25 days, then a cluster of several a
    // day at the end; one of the old ones pinned.
    let mut n = 0;
    let start = 1_700_000_000i64;
    for i in 0..24 {
        let t = start + i * 25 * 86_400 + (i % 5) * 3_600;
        let tag = (i == 7).then_some("pinned");
        synthetic_generation(&pd, &restic_time(t), n, tag);
        n += 1;
    }
    for h in 0..8 {
        let t = start + 24 * 25 * 86_400 + h * 5 * 3_600;
        synthetic_generation(&pd, &restic_time(t), n, None);
        n += 1;
    }
    let out = pd.restic_ok(&[
        "forget",
        "--dry-run",
        "--json",
        "--tag",
        "snapfs",
        "--group-by",
        "",
        "--keep-last",
        "2",
        "--keep-daily",
        "5",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "4",
        "--keep-yearly",
        "2",
        "--keep-tag",
        "pinned",
    ]);
    let groups: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(groups.len(), 1, "{out}");
    let mut restic_removes: Vec<String> = groups[0]["remove"]
        .as_array()
        .map(|r| r.iter().map(name_of).collect())
        .unwrap_or_default();
    restic_removes.sort();
    let mut restic_keeps: Vec<String> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(name_of)
        .collect();
    restic_keeps.sort();
    assert!(!restic_removes.is_empty() && restic_keeps.len() > 5);

    let ours = |planned: &Value, keep: bool| -> Vec<String> {
        let mut names: Vec<String> = planned[0]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["keep"] == keep)
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let client = pd.daemon.client();
    let (status, body) = call(
        &client,
        Method::POST,
        "/snapfs/backups/keep/forget?dry_run=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ours(&body["result"], false), restic_removes);
    assert_eq!(ours(&body["result"], true), restic_keeps);
    // The CLI's dry run says the same and removes nothing.
    let out = pd.cli(&["backup", "forget", "keep", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("would remove").count(),
        restic_removes.len(),
        "{text}"
    );
    let pinned = text
        .lines()
        .find(|l| l.contains("demo-synthetic-007.snapshot"))
        .unwrap();
    assert!(
        pinned.contains("keep") && pinned.contains("tags"),
        "{pinned}"
    );
    assert_eq!(
        pd.restic_ok(&["snapshots", "--json"])
            .matches("\"id\"")
            .count(),
        32
    );

    // Applied: what stays is what restic would have kept.
    let (status, body) = call(&client, Method::POST, "/snapfs/backups/keep/forget", None).await;
    assert_eq!(status, 200, "{body}");
    // The answer is what was applied.
    assert_eq!(ours(&body["result"], false), restic_removes);
    let left: Vec<Value> = serde_json::from_str(&pd.restic_ok(&["snapshots", "--json"])).unwrap();
    let mut left: Vec<String> = left.iter().map(name_of).collect();
    left.sort();
    assert_eq!(left, restic_keeps);
    let metrics = pd.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "snapfs_backup_generations_forgotten_total{policy=\"keep\",collection=\"demo\"}"
        ),
        Some(restic_removes.len() as f64)
    );
    pd.restic_ok(&["check"]);
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, as restic's `--time` reads it here) for `unix`.
fn restic_time(unix: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[cfg(feature = "failpoints")] // SNAPFS_PAUSE_AT
#[tokio::test(flavor = "multi_thread")]
async fn a_prune_beside_a_generation_being_written_leaves_both_whole() {
    let pd = PolicyDaemon::start(
        "    - name: tidy\n      collections: [demo]\n      schedule: { every: 1d }\n      retention: { keep_last: 1 }\n",
        true,
        &[("SNAPFS_PAUSE_AT", "repository-locked:3000")],
        false,
    );
    let client = pd.daemon.client();
    create_stored(&client, "/collections/demo/snapshots").await;
    upsert_ids(&client, "demo", 100_000..100_050, 64).await;
    create_stored(&client, "/collections/demo/snapshots").await;
    // A third generation starts (held 3 s in writing under its lock)...
    upsert_ids(&client, "demo", 100_050..100_100, 64).await;
    let writer = {
        let client = pd.daemon.client();
        tokio::spawn(async move { create_stored(&client, "/collections/demo/snapshots").await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // ...while the retention removes the oldest and prunes.
    let (status, body) = call(&client, Method::POST, "/snapfs/backups/tidy/forget", None).await;
    assert_eq!(status, 200, "{body}");
    let created = writer.await.unwrap();
    let name = created["name"].as_str().unwrap().to_string();
    let status = pd.status("tidy").await;
    let pruned = status["last_retention"]["pruned"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(pruned.contains("removed"), "{status:#}");
    // Both whole: restic reads every byte, and the new generation reads back as its checksum says.
    pd.restic_ok(&["check", "--read-data"]);
    let bytes = fetch(&client, &format!("/collections/demo/snapshots/{name}")).await;
    assert_eq!(sha256_hex(&bytes), created["checksum"].as_str().unwrap());
    let (_, listed) = call(&client, Method::GET, "/collections/demo/snapshots", None).await;
    assert_eq!(listed["result"].as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drills_pass_and_a_damaged_repository_fails_them_loudly() {
    let port = free_port().to_string();
    let pd = PolicyDaemon::start(
        "    - name: proof\n      collections: [demo]\n      schedule: { every: 1d }\n      drills: { schedule: { every: 1d }, read_data_parts: 2, restore: true }\n",
        true,
        &[
            ("SNAPFS__SERVICE__HOST", "127.0.0.1"),
            ("SNAPFS__SERVICE__HTTP_PORT", &port),
            ("SNAPFS__SERVICE__API_KEY", "drill-key"),
        ],
        true,
    );
    let out = pd.cli(&["backup", "run", "proof"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pd.cli(&["backup", "run", "proof", "--job", "drill"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = pd.status("proof").await;
    assert_eq!(status["drills_passed"], 1, "{status:#}");
    let checks: Vec<String> = status["last_drill"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let points = count(&pd.daemon.client(), "demo").await;
    assert!(
        checks
            .iter()
            .any(|c| c.starts_with("check: structure and data part 1/2 whole (")),
        "{checks:?}"
    );
    assert!(
        checks.iter().any(|c| c.starts_with(&format!(
            "restore demo: {points} points, as recorded, configuration as recorded, 5 sample points"
        ))),
        "{checks:?}"
    );
    // The scratch place is gone.
    assert_no_scratch(&pd);
    let metrics = pd.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "snapfs_backup_drill_failing{policy=\"proof\",collection=\"demo\",kind=\"restore\"}"
        ),
        Some(0.0)
    );

    // Every pack damaged on purpose: a byte in every KiB, so every blob of any size
    // is hit wherever the pack's layout put it (one byte in the middle could land in
    // a part no read of this generation needs).
    let mut damaged = 0;
    for dir in std::fs::read_dir(pd.repo.join("data")).unwrap() {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            for at in (0..bytes.len()).step_by(1024) {
                bytes[at] ^= 0xff;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let out = pd.cli(&["backup", "run", "proof", "--job", "drill"]);
    assert!(!out.status.success(), "a failed drill exits non-zero");
    let status = pd.status("proof").await;
    assert_eq!(status["drills_failed"], 1, "{status:#}");
    assert_eq!(status["last_drill"]["result"], "failed");
    let checks = status["last_drill"]["checks"].to_string();
    assert!(checks.contains("restore demo: FAILED"), "{checks}");
    assert!(
        !checks.contains("whole ("),
        "the check found the damage: {checks}"
    );
    assert_no_scratch(&pd);
    let metrics = pd.metrics().await;
    // A drill's restore is labelled as the drill's, never as a restore of the live
    // collection.
    assert!(
        metrics.contains("snapshot_recovery_running{id=\"backup-drill\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "snapfs_backup_drill_failing{policy=\"proof\",collection=\"\",kind=\"check\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "snapfs_backup_drill_failing{policy=\"proof\",collection=\"demo\",kind=\"restore\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "snapfs_backup_drills_total{policy=\"proof\",collection=\"demo\",kind=\"restore\",result=\"failed\"}"
        ),
        Some(1.0)
    );
    let mounted: Value =
        serde_json::from_slice(&std::fs::read(pd.mnt().join("backups/proof.json")).unwrap())
            .unwrap();
    assert_eq!(mounted["last_drill"]["result"], "failed");
    // Over TCP the status names the repository by its config key, not its path.
    let tcp = Command::new("curl")
        .args(["-s", "-H", "api-key: drill-key"])
        .arg(format!("http://127.0.0.1:{port}/snapfs/backups/proof"))
        .output()
        .unwrap();
    let tcp = String::from_utf8_lossy(&tcp.stdout).into_owned();
    let repo = pd.repo.display().to_string();
    assert!(
        tcp.contains("<storage.snapshots_config.repository.location>"),
        "{tcp}"
    );
    assert!(
        !tcp.contains(&repo) && tcp.contains("\"drills_failed\":1"),
        "{tcp}"
    );
    let local = pd.status("proof").await;
    assert!(
        local["store"].as_str().unwrap().contains(&repo),
        "{local:#}"
    );
    // The live collection was never touched by the drills.
    assert_eq!(count(&pd.daemon.client(), "demo").await, points);
}

/// No restore drill's scratch storage is left in the daemon's temp_path.
fn assert_no_scratch(pd: &PolicyDaemon) {
    let tmp = pd.dir.path().join("data/tmp");
    let left: Vec<String> = names(&tmp)
        .into_iter()
        .filter(|n| n.starts_with(".backup-drill-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_policies_are_refused_at_start_naming_the_line() {
    let cases = [
        (
            "    - name: nightly\n      collections: [demo]\n      schedule: { cron: \"61 3 * * *\" }\n",
            &["bad cron expression", "line 5"][..],
        ),
        (
            "    - name: nightly\n      collections: [demo]\n      schedule: { every: 1d }\n    - name: other\n      collections: [demo, nope]\n      schedule: { every: 1h }\n",
            &[
                "backup policy other (line 6)",
                "collection nope does not exist",
            ][..],
        ),
        (
            "    - name: nightly\n      collections: [demo]\n      schedule: { every: soon }\n",
            &["bad length of time \"soon\"", "line 5"][..],
        ),
    ];
    for (policies, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, format!("backups:\n  policies:\n{policies}")).unwrap();
        let mut daemon = Daemon::spawn(
            &dir.path().join("data"),
            &["--demo", "--config", config.to_str().unwrap()],
            &[],
        );
        let status = daemon.wait_exit();
        assert!(!status.success());
        let log = daemon.log();
        for word in words {
            assert!(log.contains(word), "{word:?} in:\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_with_its_own_store_keeps_its_generations_there() {
    // The daemon keeps stored snapshots as plain files; the policy sends its own to
    // a restic repository.
    let pd = PolicyDaemon::start(
        "    - name: offsite\n      collections: [demo]\n      schedule: { every: 1d }\n      retention: { keep_last: 1 }\n      store:\n        snapshots_storage: repository\n        repository: { location: DIR/repo, password_file: DIR/password }\n",
        false,
        &[],
        false,
    );
    for _ in 0..2 {
        let out = pd.cli(&["backup", "run", "offsite"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = pd.status("offsite").await;
    assert!(
        status["store"]
            .as_str()
            .unwrap()
            .starts_with("restic repository"),
        "{status:#}"
    );
    assert_eq!(status["generations"]["demo"], 1, "{status:#}");
    assert_eq!(
        status["last_run"]["scopes"][0]["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // In the repository: one generation of demo, read back whole by restic.
    let snapshots: Vec<Value> =
        serde_json::from_str(&pd.restic_ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(
        name_of(&snapshots[0]),
        status["last_run"]["scopes"][0]["snapshot"]
            .as_str()
            .unwrap()
    );
    // Not among the daemon's own stored snapshots.
    let (_, listed) = call(
        &pd.daemon.client(),
        Method::GET,
        "/collections/demo/snapshots",
        None,
    )
    .await;
    assert_eq!(listed["result"], serde_json::json!([]));
    let mut pd = pd;
    assert!(pd.daemon.stop().success());
    pd.restic_ok(&["check", "--read-data"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_waits_for_a_generation_being_read() {
    let pd = PolicyDaemon::start(
        "    - name: tidy\n      collections: [demo]\n      schedule: { every: 1d }\n      retention: { keep_last: 1 }\n",
        true,
        &[],
        true,
    );
    let client = pd.daemon.client();
    // An archive larger than what the download reads ahead (2 × 2 MiB) and the
    // socket holds, so its reader stays open while the client does not read.
    for start in (100_000..160_000).step_by(10_000) {
        upsert_ids(&client, "demo", start..start + 10_000, 64).await;
    }
    let old = create_stored(&client, "/collections/demo/snapshots").await;
    assert!(old["size"].as_u64().unwrap() > 16 << 20, "{old}");
    upsert_ids(&client, "demo", 200_000..200_200, 64).await;
    create_stored(&client, "/collections/demo/snapshots").await;
    // The older generation is being downloaded by a client that stops reading after
    // its first bytes (the daemon's reader stays open, its writes held by the socket).
    let mut download = std::os::unix::net::UnixStream::connect(&pd.daemon.socket).unwrap();
    std::io::Write::write_all(
        &mut download,
        format!(
            "GET /collections/demo/snapshots/{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            old["name"].as_str().unwrap()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut received = vec![0u8; 16 << 10];
    std::io::Read::read_exact(&mut download, &mut received).unwrap();
    // And it is open in the mount, a little of it read.
    let mut mounted = std::fs::File::open(
        pd.mnt()
            .join("collections/demo/snapshots")
            .join(old["name"].as_str().unwrap()),
    )
    .unwrap();
    let mut copied = vec![0u8; 4096];
    std::io::Read::read_exact(&mut mounted, &mut copied).unwrap();
    // The retention forgets it and prunes: the prune waits for the reader.
    let forgetting = {
        let client = pd.daemon.client();
        tokio::spawn(async move {
            call(&client, Method::POST, "/snapfs/backups/tidy/forget", None).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !forgetting.is_finished(),
        "the prune did not wait for the reader"
    );
    // The readers get every byte of what they opened, then let go.
    std::io::Read::read_to_end(&mut download, &mut received).unwrap();
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..split]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-length"),
        "{head}"
    );
    assert_eq!(
        sha256_hex(&received[split..]),
        old["checksum"].as_str().unwrap()
    );
    drop(download);
    // An open file of the mount keeps its bytes after its snapshot was forgotten, as
    // an unlinked file does.
    assert!(
        !forgetting.is_finished(),
        "the prune waits for the mount's reader too"
    );
    std::io::Read::read_to_end(&mut mounted, &mut copied).unwrap();
    assert_eq!(sha256_hex(&copied), old["checksum"].as_str().unwrap());
    drop(mounted);
    let (status, body) = forgetting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let status = pd.status("tidy").await;
    assert!(
        status["last_retention"]["pruned"]
            .as_str()
            .is_some_and(|p| p.contains("removed")),
        "{status:#}"
    );
    let mut pd = pd;
    assert!(pd.daemon.stop().success());
    pd.restic_ok(&["check", "--read-data"]);
}
