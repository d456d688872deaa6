//! The repository store end to end: generations in a real restic repository on a
//! local path, written and read by the daemon, and read, checked, dumped, forgotten
//! and pruned by the restic CLI (the Debian package scripts/test.sh installs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hyper::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A daemon storing snapshots in a repository at `<dir>/repo`.
struct RepoDaemon {
    daemon: Daemon,
    repo: PathBuf,
    password_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn repo_env(repo: &Path, password_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
            "repository".to_string(),
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION",
            repo.display().to_string(),
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE",
            password_file.display().to_string(),
        ),
    ]
}

impl RepoDaemon {
    fn start(extra_env: &[(&str, &str)]) -> RepoDaemon {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        let env = repo_env(&repo, &password_file);
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra_env);
        let daemon = Daemon::start_in(&dir.path().join("data"), &[], &all);
        RepoDaemon {
            daemon,
            repo,
            password_file,
            _dir: dir,
        }
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

    /// `restic snapshots --json`.
    fn restic_snapshots(&self) -> Vec<Value> {
        serde_json::from_str(&self.restic_ok(&["snapshots", "--json"])).unwrap()
    }

    /// Bytes the repository takes on disk.
    fn repo_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { walk(&e.path()) } else { meta.len() }
                })
                .sum()
        }
        walk(&self.repo)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tags_of(snapshot: &Value) -> Vec<String> {
    snapshot["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn restic_id_of(snapshots: &[Value], name: &str) -> String {
    snapshots
        .iter()
        .find(|s| tags_of(s).contains(&format!("name={name}")))
        .unwrap_or_else(|| panic!("restic lists no generation {name}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn generations_read_back_byte_identical_and_the_restic_cli_reads_them() {
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    seeded_collection(&client, "docs", 2, 300).await;
    wait_settled(&client, "docs").await;

    // A shard generation is the live shard archive of that state, byte for byte.
    let live = fetch(&client, "/collections/docs/shards/0/snapshot").await;
    let shard = create_stored(&client, "/collections/docs/shards/0/snapshots").await;
    let shard_name = shard["name"].as_str().unwrap().to_string();
    let stored = fetch(&client, &format!("/collections/docs/shards/0/snapshots/{shard_name}")).await;
    assert!(stored == live, "the shard generation differs from the live archive");
    assert_eq!(shard["checksum"].as_str().unwrap(), sha256_hex(&live));
    assert_eq!(shard["size"].as_u64().unwrap(), live.len() as u64);

    // A collection generation: listed with size and checksum, read whole and by range.
    let created = create_stored(&client, "/collections/docs/snapshots").await;
    let name = created["name"].as_str().unwrap().to_string();
    let path = format!("/collections/docs/snapshots/{name}");
    let whole = fetch(&client, &path).await;
    assert_eq!(created["checksum"].as_str().unwrap(), sha256_hex(&whole));
    let (status, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200);
    let entry = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .expect("listed")
        .clone();
    assert_eq!(entry["size"].as_u64().unwrap(), whole.len() as u64);
    assert_eq!(entry["checksum"], created["checksum"]);
    let (status, _, part) = fetch_range(&client, &path, "bytes=1000-5095").await;
    assert_eq!(status, 206);
    assert!(part == whole[1000..5096], "a range of a generation");

    // The restic CLI lists both, named by their tags, and checks every byte.
    let snapshots = rd.restic_snapshots();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let id = restic_id_of(&snapshots, &name);
    let tags = tags_of(snapshots.iter().find(|s| s["id"] == id.as_str()).unwrap());
    for tag in ["snapfs", "scope=collection", "collection=docs"] {
        assert!(tags.contains(&tag.to_string()), "{tags:?}");
    }
    assert!(tags.contains(&format!("sha256={}", sha256_hex(&whole))), "{tags:?}");
    let shard_id = restic_id_of(&snapshots, &shard_name);
    let shard_tags = tags_of(snapshots.iter().find(|s| s["id"] == shard_id.as_str()).unwrap());
    assert!(shard_tags.contains(&"shard=0".to_string()), "{shard_tags:?}");
    rd.restic_ok(&["check", "--read-data"]);

    // `restic dump <id> /` alone gives an archive a restore takes: the same points.
    let dump = rd.restic(&["dump", &id, "/"]);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dumped = rd._dir.path().join("dumped.tar");
    std::fs::write(&dumped, &dump.stdout).unwrap();
    let (status, body) = upload(&rd.daemon, "/collections/copy/snapshots/upload?priority=snapshot", &dumped);
    assert_eq!(status, 200, "{body}");
    assert_eq!(all_points(&client, "copy").await, all_points(&client, "docs").await);

    // Delete forgets the generation: gone from the API and from restic's list.
    let (status, body) = call(&client, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&client, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    let left = rd.restic_snapshots();
    assert_eq!(left.len(), 1, "{left:?}");
    rd.restic_ok(&["check"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_generations_cost_almost_nothing_and_a_small_change_adds_little() {
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    seeded_collection(&client, "big", 1, 24_000).await;
    wait_settled(&client, "big").await;

    let first = create_stored(&client, "/collections/big/snapshots").await;
    let archive = first["size"].as_u64().unwrap();
    let after_one = rd.repo_bytes();
    for _ in 0..9 {
        let again = create_stored(&client, "/collections/big/snapshots").await;
        assert_eq!(again["checksum"], first["checksum"], "unchanged state, same archive");
    }
    let after_ten = rd.repo_bytes();
    assert!(
        (after_ten - after_one) * 50 <= after_one,
        "9 more generations of an unchanged collection added {} bytes to {after_one} (archive {archive})",
        after_ten - after_one
    );

    // 1% of the points, spread over the ids, changed: the next generation adds a
    // small fraction of a full archive.
    let changed: Vec<Value> = (0..240u64).map(|i| point(i * 100 + 7, 8)).collect();
    upsert(&client, "big", changed, true).await;
    let next = create_stored(&client, "/collections/big/snapshots").await;
    assert_ne!(next["checksum"], first["checksum"]);
    let added = rd.repo_bytes() - after_ten;
    assert!(
        added * 4 < next["size"].as_u64().unwrap(),
        "a 1% change added {added} bytes; the archive is {}",
        next["size"]
    );
    let name = next["name"].as_str().unwrap();
    let bytes = fetch(&client, &format!("/collections/big/snapshots/{name}")).await;
    assert_eq!(next["checksum"].as_str().unwrap(), sha256_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_and_prune_by_the_restic_cli_beside_the_daemon_keep_the_rest_whole() {
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    seeded_collection(&client, "keep", 1, 400).await;
    wait_settled(&client, "keep").await;
    let mut names = Vec::new();
    for round in 0..3u64 {
        upsert_ids(&client, "keep", 1000 + round * 50..1050 + round * 50, 8).await;
        names.push(stored_name(&client, "/collections/keep/snapshots").await);
    }
    // The CLI forgets the oldest and prunes while the daemon runs.
    let snapshots = rd.restic_snapshots();
    let oldest = restic_id_of(&snapshots, &names[0]);
    rd.restic_ok(&["forget", &oldest, "--prune"]);
    rd.restic_ok(&["check", "--read-data"]);

    let (status, listed) = call(&client, Method::GET, "/collections/keep/snapshots", None).await;
    assert_eq!(status, 200);
    let mut listed: Vec<&str> = listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut kept: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    kept.sort();
    assert_eq!(listed, kept);
    for name in &names[1..] {
        let (status, body) = recover_collection(&client, "keep", serde_json::json!({"location": name})).await;
        assert_eq!(status, 200, "restore of {name}: {body}");
    }
    assert_eq!(count(&client, "keep").await, 400 + 150);
    // And a generation after the prune is whole too.
    let after = create_stored(&client, "/collections/keep/snapshots").await;
    let name = after["name"].as_str().unwrap();
    let bytes = fetch(&client, &format!("/collections/keep/snapshots/{name}")).await;
    assert_eq!(after["checksum"].as_str().unwrap(), sha256_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_fails_its_generations_clearly_and_spares_the_others() {
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    seeded_collection(&client, "one", 1, 300).await;
    seeded_collection(&client, "two", 1, 300).await;
    wait_settled(&client, "one").await;
    wait_settled(&client, "two").await;
    let one = stored_name(&client, "/collections/one/snapshots").await;
    let packs_before: Vec<PathBuf> = packs(&rd.repo);
    let two = stored_name(&client, "/collections/two/snapshots").await;
    // Damage a pack only `two` wrote (the largest: its vectors).
    let damaged = packs(&rd.repo)
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("the second generation wrote packs");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();

    // A download does not pass damaged bytes off as the snapshot: it fails, or ends
    // short.
    let out = Command::new("curl")
        .arg("-s")
        .arg("--unix-socket")
        .arg(&rd.daemon.socket)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://localhost/collections/two/snapshots/{two}"))
        .output()
        .unwrap();
    let recorded = {
        let (_, listed) = call(&client, Method::GET, "/collections/two/snapshots", None).await;
        listed["result"][0]["checksum"].as_str().unwrap().to_string()
    };
    let body = &out.stdout[..out.stdout.len().saturating_sub(4)];
    assert!(
        !(out.status.success() && out.stdout.ends_with(b"\n200") && sha256_hex(body) == recorded),
        "a damaged generation downloaded whole"
    );
    let (status, body) = recover_collection(&client, "two", serde_json::json!({"location": two})).await;
    assert!(status >= 400, "restore of a damaged generation: {status} {body}");
    assert!(error_of(&body).contains(&two), "the error names the generation: {body}");
    assert_eq!(count(&client, "two").await, 300, "the collection is as it was");

    let check = rd.restic(&["check", "--read-data"]);
    assert!(!check.status.success(), "restic check --read-data found nothing");
    // The other generation still reads and restores.
    let bytes = fetch(&client, &format!("/collections/one/snapshots/{one}")).await;
    let (status, listed) = call(&client, Method::GET, "/collections/one/snapshots", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["result"][0]["checksum"].as_str().unwrap(), sha256_hex(&bytes));
    let (status, body) = recover_collection(&client, "one", serde_json::json!({"location": one})).await;
    assert_eq!(status, 200, "{body}");
}

fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(repo.join("data")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(file.unwrap().path());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_a_prune_under_way_is_a_clear_refusal() {
    // The daemon holds its shared lock while it writes: restic's prune refuses then.
    let rd = RepoDaemon::start(&[("SNAPFS_PAUSE_AT", "repository-locked:4000")]);
    let client = rd.daemon.client();
    seeded_collection(&client, "l", 1, 100).await;
    let creating = {
        let client = client.clone();
        tokio::spawn(async move { stored_name(&client, "/collections/l/snapshots").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let prune = rd.restic(&["prune"]);
    assert!(!prune.status.success(), "restic prune ran beside a writer");
    let said = String::from_utf8_lossy(&prune.stderr);
    assert!(said.contains("locked"), "{said}");
    creating.await.unwrap();
    rd.restic_ok(&["check"]);

    // A wrong password: the daemon does not start, and says why without the password.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it").unwrap();
    let env = repo_env(&rd.repo, &wrong);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = Daemon::spawn(&dir.path().join("data"), &[], &env);
    let status = daemon.wait_exit();
    assert!(!status.success());
    let log = daemon.log();
    assert!(log.contains("does not open with the configured password"), "{log}");
    assert!(!log.contains("not it"), "the password is not logged: {log}");
}
