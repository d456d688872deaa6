//! The repository store end to end: generations in a real restic repository on a
//! local path, written and read by the daemon, and read, checked, dumped, forgotten
//! and pruned by the restic CLI (the Debian package scripts/test.sh installs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hyper::Method;
use serde_json::Value;

use crate::support::qdrant_cluster::qdrant_server_binary;
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
    repository_env(repo, password_file)
}

impl RepoDaemon {
    fn start(extra_env: &[(&str, &str)]) -> RepoDaemon {
        RepoDaemon::start_with(&[], extra_env)
    }

    /// With `args` for `serve` (`--mount <dir>/mnt` as `--mount MNT`).
    fn start_with(args: &[&str], extra_env: &[(&str, &str)]) -> RepoDaemon {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt").display().to_string();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "MNT" { mnt.as_str() } else { a })
            .collect();
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        let env = repo_env(&repo, &password_file);
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra_env);
        let daemon = Daemon::start_in(&dir.path().join("data"), &args, &all);
        RepoDaemon {
            daemon,
            repo,
            password_file,
            _dir: dir,
        }
    }

    fn restic(&self, args: &[&str]) -> Output {
        restic(&self.repo, &self.password_file, args)
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
                    if meta.is_dir() {
                        walk(&e.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        }
        walk(&self.repo)
    }
}

/// The restic CLI on repository `repo`.
fn restic(repo: &Path, password_file: &Path, args: &[&str]) -> Output {
    Command::new("restic")
        .arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(password_file)
        .arg("--no-cache")
        .args(args)
        .output()
        .expect("the restic CLI runs (scripts/test.sh installs the Debian package)")
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
    settled_collection(&client, "docs", 2, 300).await;

    // A shard generation is the live shard archive of that state, byte for byte.
    let live = fetch(&client, "/collections/docs/shards/0/snapshot").await;
    let shard = create_stored(&client, "/collections/docs/shards/0/snapshots").await;
    let shard_name = shard["name"].as_str().unwrap().to_string();
    let stored = fetch(
        &client,
        &format!("/collections/docs/shards/0/snapshots/{shard_name}"),
    )
    .await;
    assert!(
        stored == live,
        "the shard generation differs from the live archive"
    );
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
    assert!(
        tags.contains(&format!("sha256={}", sha256_hex(&whole))),
        "{tags:?}"
    );
    let shard_id = restic_id_of(&snapshots, &shard_name);
    let shard_tags = tags_of(
        snapshots
            .iter()
            .find(|s| s["id"] == shard_id.as_str())
            .unwrap(),
    );
    assert!(
        shard_tags.contains(&"shard=0".to_string()),
        "{shard_tags:?}"
    );
    rd.restic_ok(&["check", "--read-data"]);

    // `restic dump <id> /` alone gives an archive a restore takes: the same points.
    let dump = rd.restic(&["dump", &id, "/"]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dumped = rd._dir.path().join("dumped.tar");
    std::fs::write(&dumped, &dump.stdout).unwrap();
    let (status, body) = upload(
        &rd.daemon,
        "/collections/copy/snapshots/upload?priority=snapshot",
        &dumped,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        all_points(&client, "copy").await,
        all_points(&client, "docs").await
    );

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
    settled_collection(&client, "big", 1, 24_000).await;

    let first = create_stored(&client, "/collections/big/snapshots").await;
    let archive = first["size"].as_u64().unwrap();
    let after_one = rd.repo_bytes();
    for _ in 0..9 {
        let again = create_stored(&client, "/collections/big/snapshots").await;
        assert_eq!(
            again["checksum"], first["checksum"],
            "unchanged state, same archive"
        );
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

    // The generations' own figures: over REST (`?details=true`) and `snapshot list -v`.
    let (status, details) = call(
        &client,
        Method::GET,
        "/collections/big/snapshots?details=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{details}");
    let details = details["result"].as_array().unwrap().clone();
    assert_eq!(details.len(), 11, "{details:?}");
    let of = |name: &str| details.iter().find(|d| d["name"] == name).unwrap().clone();
    let newest = of(name);
    assert!(
        newest["bytes_added"].as_u64().unwrap() * 4 < newest["bytes_covered"].as_u64().unwrap(),
        "{newest}"
    );
    assert!(
        newest["files_unmodified"].as_u64().unwrap() > 0,
        "unchanged files reused: {newest}"
    );
    let listed = std::process::Command::new(BIN)
        .args(["snapshot", "list", "big", "-v", "--socket"])
        .arg(&rd.daemon.socket)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains("dedup") && line.contains(&newest["id"].as_str().unwrap()[..8]),
        "{line}"
    );

    // /metrics counts what the generations covered and added.
    let metrics = String::from_utf8(fetch(&client, "/metrics").await).unwrap();
    let value = |family: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_total{{id=\"big\"}} ")))
            .unwrap_or_else(|| panic!("{family}: {metrics}"))
            .parse()
            .unwrap()
    };
    let covered = value("snapfs_repository_bytes_covered");
    let stored = value("snapfs_repository_bytes_added");
    assert!(covered > 0, "covered {covered}");
    assert!(
        stored > 0 && stored * 10 < covered,
        "added {stored} of {covered}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_and_prune_by_the_restic_cli_beside_the_daemon_keep_the_rest_whole() {
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    settled_collection(&client, "keep", 1, 400).await;
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
        let (status, body) =
            recover_collection(&client, "keep", serde_json::json!({"location": name})).await;
        assert_eq!(status, 200, "restore of {name}: {body}");
    }
    // A generation by its restic id (a unique prefix, as restic takes it).
    let newest = restic_id_of(&rd.restic_snapshots(), &names[2]);
    let (status, body) = recover_collection(
        &client,
        "keep",
        serde_json::json!({"location": format!("restic:{}", &newest[..10])}),
    )
    .await;
    assert_eq!(status, 200, "restore by id: {body}");
    let (status, body) = recover_collection(
        &client,
        "other",
        serde_json::json!({"location": format!("restic:{newest}")}),
    )
    .await;
    assert_eq!(status, 400, "another collection's generation: {body}");
    let (status, body) = recover_collection(
        &client,
        "keep",
        serde_json::json!({"location": "restic:00000000"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The CLI takes the same locations.
    let out = Command::new(BIN)
        .args([
            "recover",
            "keep",
            &format!("restic:{}", &newest[..12]),
            "--socket",
        ])
        .arg(&rd.daemon.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "snapfs recover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    settled_collection(&client, "one", 1, 300).await;
    settled_collection(&client, "two", 1, 300).await;
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
        listed["result"][0]["checksum"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let body = &out.stdout[..out.stdout.len().saturating_sub(4)];
    assert!(
        !(out.status.success() && out.stdout.ends_with(b"\n200") && sha256_hex(body) == recorded),
        "a damaged generation downloaded whole"
    );
    let (status, body) =
        recover_collection(&client, "two", serde_json::json!({"location": two})).await;
    assert!(
        status >= 400,
        "restore of a damaged generation: {status} {body}"
    );
    assert!(
        error_of(&body).contains(&two),
        "the error names the generation: {body}"
    );
    assert_eq!(
        count(&client, "two").await,
        300,
        "the collection is as it was"
    );

    let check = rd.restic(&["check", "--read-data"]);
    assert!(
        !check.status.success(),
        "restic check --read-data found nothing"
    );
    // The other generation still reads and restores.
    let bytes = fetch(&client, &format!("/collections/one/snapshots/{one}")).await;
    let (status, listed) = call(&client, Method::GET, "/collections/one/snapshots", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["result"][0]["checksum"].as_str().unwrap(),
        sha256_hex(&bytes)
    );
    let (status, body) =
        recover_collection(&client, "one", serde_json::json!({"location": one})).await;
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
    assert!(
        log.contains("does not open with the configured password"),
        "{log}"
    );
    assert!(!log.contains("not it"), "the password is not logged: {log}");
}

/// The same promises with the repository in a bucket of a real S3-compatible server
/// (moto, as the S3 store's tests), and a missing bucket said in words.
#[tokio::test(flavor = "multi_thread")]
async fn a_repository_in_s3_keeps_the_stores_promises() {
    use crate::support::moto::{ACCESS, Moto, REGION, SECRET};
    use snapfs::snapshot::store::conformance;
    use snapfs::snapshot::store::repository::{Location, RepositoryConfig, RepositoryStore};
    use snapfs::snapshot::store::s3::S3Config;

    let moto = Moto::start();
    moto.create_bucket("repo");
    let temp = tempfile::tempdir().unwrap();
    let storage = snapfs::storage::Storage::open(&temp.path().join("storage")).unwrap();
    snapfs::demo::create_demo_collection(&storage)
        .await
        .unwrap();
    let config = |bucket: &str| RepositoryConfig {
        location: Location::S3(S3Config {
            bucket: Some(bucket.into()),
            region: Some(REGION.into()),
            access_key: Some(ACCESS.into()),
            secret_key: Some(SECRET.into()),
            endpoint_url: Some(moto.endpoint()),
            prefix: "restic/main".into(),
            ..S3Config::default()
        }),
        password: PASSWORD.into(),
        cache_dir: None,
    };
    let missing = tokio::task::block_in_place(|| RepositoryStore::open(&config("no-such-bucket")));
    match missing {
        Err(e) => assert!(e.to_string().contains("does not exist"), "{e}"),
        Ok(_) => panic!("a repository opened in a missing bucket"),
    }
    let store = tokio::task::block_in_place(|| RepositoryStore::open(&config("repo"))).unwrap();
    tokio::task::spawn_blocking(move || {
        conformance::check_every_scope(&store, &snapfs::snapshot::Snapshots::new(storage));
    })
    .await
    .unwrap();
    // restic's layout under the prefix, and nothing outside it.
    let keys = moto.keys("repo");
    assert!(keys.iter().any(|k| k == "restic/main/config"), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("restic/main/data/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with("restic/main/")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("restic/main/locks/")),
        "locks removed: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mount_shows_generations_as_files_and_restores_them() {
    let rd = RepoDaemon::start_with(&["--mount", "MNT"], &[]);
    let client = rd.daemon.client();
    settled_collection(&client, "docs", 2, 300).await;
    let created = create_stored(&client, "/collections/docs/snapshots").await;
    let name = created["name"].as_str().unwrap().to_string();
    let mnt = rd._dir.path().join("mnt");
    let dir = mnt.join("collections/docs/snapshots");
    eventually("the generation listed", || {
        names(&dir) == [name.clone(), format!("{name}.checksum")]
    });
    let file = dir.join(&name);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        created["size"].as_u64().unwrap()
    );

    // cp, sha256sum -c with the checksum file, rsync and dd skip= read the archive.
    let work = tempfile::tempdir().unwrap();
    run_ok(Command::new("cp").arg(&file).arg(work.path()));
    let copy = std::fs::read(work.path().join(&name)).unwrap();
    assert_eq!(sha256_hex(&copy), created["checksum"].as_str().unwrap());
    let checksum = std::fs::read_to_string(dir.join(format!("{name}.checksum"))).unwrap();
    std::fs::write(work.path().join("SUMS"), format!("{checksum}  {name}\n")).unwrap();
    let out = run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(work.path().join("SUMS"))
            .current_dir(&dir),
    );
    assert!(out.contains(": OK"), "{out}");
    let synced = work.path().join("synced");
    run_ok(Command::new("rsync").arg("-a").arg(&file).arg(&synced));
    assert!(std::fs::read(&synced).unwrap() == copy);
    let tail = Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["bs=4096", "skip=3", "status=none"])
        .output()
        .unwrap();
    assert!(tail.status.success());
    assert!(tail.stdout == copy[3 * 4096..], "dd skip=3");

    // Writing it into recover/ restores it.
    upsert_ids(&client, "docs", 5000..5010, 8).await;
    assert_eq!(count(&client, "docs").await, 310);
    run_ok(
        Command::new("cp")
            .arg(&file)
            .arg(mnt.join("collections/docs/recover/back.snapshot")),
    );
    assert_eq!(count(&client, "docs").await, 300);

    // rm forgets the generation: gone from the API and from restic's list.
    std::fs::remove_file(&file).unwrap();
    let (_, list) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(list["result"], serde_json::json!([]), "{list}");
    assert!(rd.restic_snapshots().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_while_writing_leaves_no_half_generation() {
    let mut rd = RepoDaemon::start(&[("SNAPFS_CRASH_AT", "repository-pack-written")]);
    let client = rd.daemon.client();
    settled_collection(&client, "c", 1, 2000).await;
    let answer = client
        .raw(Method::POST, "/collections/c/snapshots", None)
        .await;
    assert!(
        answer
            .map(|(status, _)| status.as_u16() != 200)
            .unwrap_or(true),
        "the creation was to be killed"
    );
    rd.daemon.wait_exit();
    // A pack was stored that nothing names: no generation.
    assert!(
        !packs(&rd.repo).is_empty(),
        "the crash came after a pack was written"
    );
    assert!(rd.restic_snapshots().is_empty());
    // The next daemon removes the lock its dead predecessor left (as `restic unlock`
    // would); the repository checks clean, and whole generations are written.
    let data = rd._dir.path().join("data");
    let env = repo_env(&rd.repo, &rd.password_file);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start_in(&data, &[], &env);
    rd.restic_ok(&["check"]);
    let client = daemon.client();
    let created = create_stored(&client, "/collections/c/snapshots").await;
    let name = created["name"].as_str().unwrap();
    let bytes = fetch(&client, &format!("/collections/c/snapshots/{name}")).await;
    assert_eq!(created["checksum"].as_str().unwrap(), sha256_hex(&bytes));
    rd.restic_ok(&["check", "--read-data"]);
}

/// Generations written while points keep arriving each hold one consistent state:
/// whole batches only, never fewer than the generation before.
#[tokio::test(flavor = "multi_thread")]
async fn generations_under_concurrent_writes_hold_whole_batches() {
    const BATCH: u64 = 25;
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    create_collection(&client, "storm", sharded_vectors(8, "Dot", 2)).await;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for batch in 0..40u64 {
                upsert_ids(&client, "storm", batch * BATCH..(batch + 1) * BATCH, 8).await;
            }
        })
    };
    let mut seen = Vec::new();
    for round in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let created = create_stored(&client, "/collections/storm/snapshots").await;
        let name = created["name"].as_str().unwrap();
        let bytes = fetch(&client, &format!("/collections/storm/snapshots/{name}")).await;
        assert_eq!(created["checksum"].as_str().unwrap(), sha256_hex(&bytes));
        let copy = format!("storm-{round}");
        let file = rd._dir.path().join(format!("{copy}.snapshot"));
        std::fs::write(&file, &bytes).unwrap();
        let (status, body) = upload(
            &rd.daemon,
            &format!("/collections/{copy}/snapshots/upload"),
            &file,
        );
        assert_eq!(status, 200, "{body}");
        let points = count(&client, &copy).await;
        assert_eq!(
            points % BATCH,
            0,
            "round {round}: a torn batch ({points} points)"
        );
        seen.push(points);
    }
    writer.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "generations move forward: {seen:?}"
    );
    rd.restic_ok(&["check", "--read-data"]);
}

/// `snapfs repo import`: a plain snapshots directory and a Qdrant snapshot moved into
/// the repository, each under its own name and byte for byte; a file that is not a
/// snapshot is refused with nothing added.
#[tokio::test(flavor = "multi_thread")]
async fn repo_import_takes_a_snapshots_directory_and_qdrant_archives_in() {
    // Stored snapshots of the plain local store.
    let plain = tempfile::tempdir().unwrap();
    let (collection_name, shard_name) = {
        let mut daemon = Daemon::start_in(plain.path(), &[], &[]);
        let client = daemon.client();
        settled_collection(&client, "docs", 2, 200).await;
        let names = (
            stored_name(&client, "/collections/docs/snapshots").await,
            stored_name(&client, "/collections/docs/shards/1/snapshots").await,
        );
        assert!(daemon.stop().success());
        names
    };
    let snapshots = plain.path().join("snapshots");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let env = repo_env(&repo, &password_file);
    let import = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.arg("repo").arg("import").args(args);
        for (k, v) in &env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let out = import(&[snapshots.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 imported, 0 already there"), "{said}");
    let again = import(&[snapshots.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 imported, 2 already there"));
    let qdrant = qdrant_fixture("qdrant-docs.snapshot");
    let out = import(&[qdrant.to_str().unwrap(), "qdrant_docs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a snapshot: refused, nothing added.
    let junk = dir.path().join("junk.snapshot");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let out = import(&[junk.to_str().unwrap(), "docs"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("junk.snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A daemon on the repository serves them as they were.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start_in(&dir.path().join("data"), &[], &env);
    let client = daemon.client();
    // Restores by name make the collections (a stored snapshot is served for a
    // collection that exists, as Qdrant does).
    let (status, body) = recover_collection(
        &client,
        "docs",
        serde_json::json!({"location": collection_name}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "docs").await, 200);
    let (status, body) = recover_collection(
        &client,
        "qdrant_docs",
        serde_json::json!({"location": "qdrant-docs.snapshot"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&client, "qdrant_docs").await, 200);
    for (path, original) in [
        (
            format!("/collections/docs/snapshots/{collection_name}"),
            snapshots.join("docs").join(&collection_name),
        ),
        (
            format!("/collections/docs/shards/1/snapshots/{shard_name}"),
            snapshots.join("docs/shards/1").join(&shard_name),
        ),
        (
            "/collections/qdrant_docs/snapshots/qdrant-docs.snapshot".to_string(),
            qdrant.clone(),
        ),
    ] {
        let bytes = fetch(&client, &path).await;
        assert!(
            bytes == std::fs::read(&original).unwrap(),
            "{path} differs from {}",
            original.display()
        );
    }
    // restic alone gives an imported archive back whole.
    let rd_restic = |args: &[&str]| restic(&repo, &password_file, args);
    let listed: Vec<Value> =
        serde_json::from_slice(&rd_restic(&["snapshots", "--json"]).stdout).unwrap();
    assert_eq!(listed.len(), 3);
    let id = restic_id_of(&listed, "qdrant-docs.snapshot");
    let dumped = rd_restic(&["dump", &id, "/qdrant-docs.snapshot"]);
    assert!(
        dumped.stdout == std::fs::read(&qdrant).unwrap(),
        "restic dump of an imported archive"
    );
}

/// What `restic dump <id> /` gives of a generation, a Qdrant server recovers: the
/// restic CLI alone brings a collection back into Qdrant.
#[tokio::test(flavor = "multi_thread")]
async fn restic_dump_of_a_generation_recovers_in_a_qdrant_server() {
    let Some(qdrant) = qdrant_server_binary() else {
        return;
    };
    let rd = RepoDaemon::start(&[]);
    let client = rd.daemon.client();
    settled_collection(&client, "docs", 2, 300).await;
    let name = stored_name(&client, "/collections/docs/snapshots").await;
    let id = restic_id_of(&rd.restic_snapshots(), &name);
    let dump = rd.restic(&["dump", &id, "/"]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let tar = rd._dir.path().join("docs.tar");
    std::fs::write(&tar, &dump.stdout).unwrap();

    let home = rd._dir.path().join("qdrant");
    std::fs::create_dir_all(&home).unwrap();
    let (http, grpc) = (free_port(), free_port());
    let log = std::fs::File::create(home.join("log")).unwrap();
    let mut server = Command::new(&qdrant)
        .current_dir(&home)
        .env("QDRANT__SERVICE__HOST", "127.0.0.1")
        .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
        .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
        .env("QDRANT__TELEMETRY_DISABLED", "true")
        .env("QDRANT__STORAGE__STORAGE_PATH", home.join("storage"))
        .env("QDRANT__STORAGE__SNAPSHOTS_PATH", home.join("snapshots"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);
    let base = format!("http://127.0.0.1:{http}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-m", "120"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while curl(&[&format!("{base}/")]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "Qdrant did not start");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let answer = curl(&[
        "-F",
        &format!("snapshot=@{}", tar.display()),
        &format!("{base}/collections/docs/snapshots/upload?priority=snapshot&wait=true"),
    ]);
    assert!(
        answer.contains("\"result\":true"),
        "Qdrant's answer to the upload: {answer}"
    );
    let counted = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        "{\"exact\":true}",
        &format!("{base}/collections/docs/points/count"),
    ]);
    let counted: Value = serde_json::from_str(&counted).unwrap();
    assert_eq!(counted["result"]["count"], 300, "{counted}");
}
