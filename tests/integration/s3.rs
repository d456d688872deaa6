//! Stored snapshots in S3 (`storage.snapshots_config.snapshots_storage: s3`) and
//! recovery from `s3://` locations, against a real S3-compatible server process
//! (moto's standalone server, see tests/integration/support/moto.rs).

use crate::support;
use crate::support::moto;

use hyper::Method;
use moto::{ACCESS, CuttingProxy, Moto, REGION, SECRET};
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

const BUCKET: &str = "snaps";
const PREFIX: &str = "backups";

/// The daemon's environment for S3 snapshot storage at `endpoint`.
fn s3_env(
    endpoint: &str,
    access: &str,
    secret: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "s3"),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET",
            BUCKET,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__REGION",
            REGION,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL",
            endpoint,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY",
            access,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY",
            secret,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PREFIX",
            PREFIX,
        ),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // The daemon must not pick up AWS settings of the machine running the tests.
    env.push(("AWS_PROFILE".into(), "none".into()));
    env
}

fn daemon_with(env: &[(String, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let temp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(&temp.path().join("data"), &[], &env);
    std::mem::forget(temp); // removed with the OS temp dir; the daemon is killed on drop
    daemon
}

fn s3_daemon(moto: &Moto) -> Daemon {
    daemon_with(&s3_env(&moto.endpoint(), ACCESS, SECRET, &[]))
}

/// Create, list, download (whole and ranges), check the checksum object, delete,
/// for one scope whose snapshots live under `key_dir`.
async fn round_trip(client: &Client, moto: &Moto, base: &str, key_dir: &str) {
    let (status, created) = call(client, Method::POST, base, None).await;
    assert_eq!(status, 200, "create {base}: {created}");
    let name = created["result"]["name"].as_str().unwrap().to_string();
    let checksum = created["result"]["checksum"].as_str().unwrap().to_string();
    assert_eq!(checksum.len(), 64);

    // Qdrant's key layout, the checksum object beside the snapshot.
    let key = format!("{key_dir}/{name}");
    let keys = moto.keys(BUCKET);
    assert!(keys.contains(&key), "{key} not in {keys:?}");
    assert_eq!(
        String::from_utf8(moto.get(BUCKET, &format!("{key}.checksum"))).unwrap(),
        checksum
    );

    // Listed with size, time and checksum; only this level's snapshots.
    let (status, listed) = call(client, Method::GET, base, None).await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["result"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["checksum"], checksum.as_str());
    assert_eq!(listed[0]["size"], created["result"]["size"]);
    assert!(listed[0]["creation_time"].is_string());

    // The download is the object, and hashes to the checksum.
    let bytes = fetch(client, &format!("{base}/{name}")).await;
    assert_eq!(
        bytes.len() as u64,
        created["result"]["size"].as_u64().unwrap()
    );
    assert_eq!(sha256_hex(&bytes), checksum);
    assert_eq!(bytes, moto.get(BUCKET, &key));

    // Ranges equal slices.
    let len = bytes.len() as u64;
    for (start, end) in [
        (0, 511),
        (512, 4095),
        (len / 3, len / 3 + 70_000),
        (len - 100, len - 1),
    ] {
        let end = end.min(len - 1);
        let (status, _, body) = fetch_range(
            client,
            &format!("{base}/{name}"),
            &format!("bytes={start}-{end}"),
        )
        .await;
        assert_eq!(status, 206);
        assert_eq!(
            body,
            bytes[start as usize..=end as usize],
            "range {start}-{end}"
        );
    }

    // Names that are no snapshot: 404.
    for bad in ["missing.snapshot", "..%2F..%2Fetc%2Fpasswd", "x.checksum"] {
        let (status, body) = call(client, Method::GET, &format!("{base}/{bad}"), None).await;
        assert_eq!(status, 404, "{bad}: {body}");
        let (status, body) = call(client, Method::DELETE, &format!("{base}/{bad}"), None).await;
        assert_eq!(status, 404, "{bad}: {body}");
    }

    // Delete removes the snapshot and its checksum.
    let (status, body) = call(client, Method::DELETE, &format!("{base}/{name}"), None).await;
    assert_eq!(status, 200, "{body}");
    let keys = moto.keys(BUCKET);
    assert!(!keys.iter().any(|k| k.starts_with(&key)), "{keys:?}");
    let (_, listed) = call(client, Method::GET, base, None).await;
    assert_eq!(listed["result"], json!([]));
    let (status, _) = call(client, Method::GET, &format!("{base}/{name}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_collection_shard_and_full_snapshots_round_trip() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let daemon = s3_daemon(&moto);
    let client = daemon.client();
    seeded_collection(&client, "docs", 2, 500).await;

    round_trip(
        &client,
        &moto,
        "/collections/docs/snapshots",
        &format!("{PREFIX}/docs"),
    )
    .await;
    round_trip(
        &client,
        &moto,
        "/collections/docs/shards/1/snapshots",
        &format!("{PREFIX}/docs/shards/1"),
    )
    .await;
    round_trip(&client, &moto, "/snapshots", PREFIX).await;

    // Listings are per level: a shard snapshot is not a collection snapshot.
    let (status, _) = call(
        &client,
        Method::POST,
        "/collections/docs/shards/0/snapshots",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(listed["result"], json!([]));
    let (_, listed) = call(&client, Method::GET, "/snapshots", None).await;
    assert_eq!(listed["result"], json!([]));

    // wait=false: 202, the snapshot appears.
    let (status, _) = call(
        &client,
        Method::POST,
        "/collections/docs/snapshots?wait=false",
        None,
    )
    .await;
    assert_eq!(status, 202);
    let mut seen = false;
    for _ in 0..100 {
        let (_, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
        if listed["result"].as_array().unwrap().len() == 1 {
            assert!(listed["result"][0]["checksum"].is_string());
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the background creation did not appear");

    // Two more in the same second get distinct names; all three are listed, each
    // with the checksum of its own bytes.
    for _ in 0..2 {
        let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    let listed = listed["result"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let names: std::collections::BTreeSet<String> =
        listed.iter().map(|d| d["name"].to_string()).collect();
    assert_eq!(names.len(), 3);
    for description in &listed {
        let name = description["name"].as_str().unwrap();
        let bytes = fetch(&client, &format!("/collections/docs/snapshots/{name}")).await;
        assert_eq!(description["checksum"], sha256_hex(&bytes).as_str());
    }

    // Nothing was written to the local snapshots directory, no upload left open.
    let local = daemon.data_dir.join("snapshots");
    let leftovers: Vec<_> = walk(&local);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
    assert!(!daemon.log().contains(SECRET), "the secret key was logged");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

async fn recover(client: &Client, path: &str, body: Value) -> (u16, Value) {
    call(client, Method::PUT, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_recovery_from_s3_urls_and_stored_names() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let daemon = s3_daemon(&moto);
    let client = daemon.client();
    seeded_collection(&client, "docs", 2, 400).await;
    let expected = by_id(&all_points(&client, "docs").await);

    let (status, created) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{created}");
    let name = created["result"]["name"].as_str().unwrap().to_string();
    let checksum = created["result"]["checksum"].as_str().unwrap().to_string();
    let location = format!("s3://{BUCKET}/{PREFIX}/docs/{name}");

    // Configured credentials, with the checksum.
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": location, "checksum": checksum}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_id(&all_points(&client, "copy").await), expected);

    // The api_key form: ACCESS:SECRET, a client made for the request.
    let (status, body) = recover(
        &client,
        "/collections/copy2/snapshots/recover",
        json!({"location": location, "api_key": format!("{ACCESS}:{SECRET}")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_id(&all_points(&client, "copy2").await), expected);

    // A stored snapshot's name, from the S3 backend.
    let (status, body) = recover(
        &client,
        "/collections/docs/snapshots/recover",
        json!({"location": name}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_id(&all_points(&client, "docs").await), expected);

    // A shard snapshot into a shard.
    let (status, shard) = call(
        &client,
        Method::POST,
        "/collections/docs/shards/0/snapshots",
        None,
    )
    .await;
    assert_eq!(status, 200, "{shard}");
    let shard_name = shard["result"]["name"].as_str().unwrap();
    let (status, body) = recover(
        &client,
        "/collections/copy/shards/0/snapshots/recover",
        json!({"location": format!("s3://{BUCKET}/{PREFIX}/docs/shards/0/{shard_name}")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(by_id(&all_points(&client, "copy").await), expected);

    // Wrong checksum: 400 with words; nothing changed.
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": location, "checksum": "0".repeat(64)}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_of(&body).to_lowercase().contains("checksum"),
        "{body}"
    );
    assert_eq!(by_id(&all_points(&client, "copy").await), expected);

    // A key that does not exist: 404.
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": format!("s3://{BUCKET}/{PREFIX}/docs/nothing.snapshot")}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains("not found"), "{body}");

    // A bucket that does not exist: a clear error (with the request's own
    // credentials: the daemon's may read only the configured bucket).
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": format!("s3://no-such-bucket/{PREFIX}/docs/{name}"), "api_key": format!("{ACCESS}:{SECRET}")}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        error_of(&body).contains("bucket `no-such-bucket` does not exist"),
        "{body}"
    );

    // A malformed api_key.
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": location, "api_key": "no-colon"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("ACCESS_KEY:SECRET_KEY"), "{body}");
    daemon.assert_no_staging_leftovers();
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_locations_need_s3_settings() {
    let daemon = daemon_with(&[("AWS_PROFILE".into(), "none".into())]);
    let client = daemon.client();
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": "s3://bucket/key.snapshot"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("needs S3 settings"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_wrong_secret_is_an_authorization_error() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let (access, secret) = moto.enforce_auth();
    // The right key works…
    let daemon = daemon_with(&s3_env(&moto.endpoint(), &access, &secret, &[]));
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 50).await;
    let (status, created) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{created}");
    let name = created["result"]["name"].as_str().unwrap().to_string();
    let location = format!("s3://{BUCKET}/{PREFIX}/docs/{name}");
    // …a wrong secret in api_key is refused with words…
    let (status, body) = recover(
        &client,
        "/collections/copy/snapshots/recover",
        json!({"location": location, "api_key": format!("{access}:wrong-secret")}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let error = error_of(&body);
    assert!(error.contains("S3 refused access"), "{body}");
    assert!(!error.contains("wrong-secret"), "{body}");
    drop(daemon);
    // …and a daemon configured with a wrong secret cannot create.
    let daemon = daemon_with(&s3_env(&moto.endpoint(), &access, "wrong-secret", &[]));
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 50).await;
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("S3 refused access"), "{body}");
    assert!(!daemon.log().contains("wrong-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_missing_bucket_is_a_clear_error() {
    let moto = Moto::start();
    let daemon = s3_daemon(&moto);
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 20).await;
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_of(&body).contains(&format!("bucket `{BUCKET}` does not exist")),
        "{body}"
    );
    let (status, body) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("does not exist"), "{body}");
    // No snapshot was made: after the bucket exists, nothing is listed.
    moto.create_bucket(BUCKET);
    let (status, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["result"], json!([]));
}

/// Small parts, one at a time, so an upload of a few MiB takes many requests.
const SMALL_PARTS: [(&str, &str); 2] = [
    (
        "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PART_SIZE_BYTES",
        "65536",
    ),
    (
        "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
        "2",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn s3_link_cut_during_upload_aborts_it() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = CuttingProxy::start(moto.port);
    let daemon = daemon_with(&s3_env(&proxy.endpoint(), ACCESS, SECRET, &SMALL_PARTS));
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 2000).await;
    proxy.arm();
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("S3 failed"), "{body}");
    // The multipart upload was aborted: no object, no open upload.
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
    assert_eq!(moto.keys(BUCKET), Vec::<String>::new());
    assert!(
        daemon.log().contains("the multipart upload was aborted"),
        "{}",
        daemon.log()
    );
    // The shards thawed: an update applied at once.
    upsert(&client, "docs", vec![point(9999, 8)], true).await;
    assert_eq!(count(&client, "docs").await, 2001);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_server_killed_during_upload() {
    let mut moto = Moto::start();
    moto.create_bucket(BUCKET);
    let tiny_parts = [
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PART_SIZE_BYTES",
            "16384",
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
            "1",
        ),
    ];
    let daemon = daemon_with(&s3_env(&moto.endpoint(), ACCESS, SECRET, &tiny_parts));
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 20_000).await;
    let creating = {
        let client = daemon.client();
        tokio::spawn(async move {
            call(&client, Method::POST, "/collections/docs/snapshots", None).await
        })
    };
    // Kill the server once a few parts of the upload have arrived.
    for _ in 0..1000 {
        if moto.saw("partNumber=5&") || moto.saw("partNumber=5 ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(moto.saw("partNumber=5"), "the upload did not begin");
    moto.kill();
    let (status, body) = creating.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body).contains("S3 failed"), "{body}");
    // The daemon said it gave the upload up; the shards thawed.
    let log = daemon.log();
    assert!(log.contains("snapshot upload to S3 failed"), "{log}");
    upsert(&client, "docs", vec![point(99_999, 8)], true).await;
    assert_eq!(count(&client, "docs").await, 20_001);
    // moto keeps its state in memory: after a restart nothing is listed.
    moto.restart();
    moto.create_bucket(BUCKET);
    let (status, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["result"], json!([]));
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
}

/// The mount shows S3 snapshots in its `snapshots/` directories: `ls -l` with the
/// objects' sizes, `cp` out (read ahead in small chunks here, so a copy spans many
/// of them) checked by `sha256sum` against the checksum object, `rm` deleting the
/// object and its checksum; writes stay refused.
#[tokio::test(flavor = "multi_thread")]
async fn s3_snapshots_in_the_mount() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let small_chunks = [
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PART_SIZE_BYTES",
            "65536",
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
            "3",
        ),
    ];
    let env = s3_env(&moto.endpoint(), ACCESS, SECRET, &small_chunks);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mounted = MountedDaemon::start_with_env(&env);
    let client = mounted.client();
    seeded_collection(&client, "docs", 2, 3000).await;
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let name = body["result"]["name"].as_str().unwrap().to_string();
    let size = body["result"]["size"].as_u64().unwrap();
    assert!(size > 10 * 65536, "a copy should span many chunks: {size}");
    let shard_name = stored_name(&client, "/collections/docs/shards/1/snapshots").await;

    // ls -l: the snapshot and its checksum, with the object's size.
    let dir = mounted.path("collections/docs/snapshots");
    let listing = run_ok(std::process::Command::new("ls").arg("-l").arg(&dir));
    assert!(listing.contains(&name), "{listing}");
    assert!(listing.contains(&format!("{name}.checksum")), "{listing}");
    assert_eq!(std::fs::metadata(dir.join(&name)).unwrap().len(), size);
    assert!(
        !listing.contains(&shard_name),
        "a shard snapshot listed at the collection's level: {listing}"
    );
    let shard_dir = mounted.path("collections/docs/shards/1/snapshots");
    assert!(
        std::fs::read_dir(&shard_dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy() == shard_name)
    );

    // cp out, sha256sum against the checksum object.
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join(&name);
    run_ok(
        std::process::Command::new("cp")
            .arg(dir.join(&name))
            .arg(&copy),
    );
    let copied = std::fs::read(&copy).unwrap();
    assert_eq!(copied.len() as u64, size);
    let sum = run_ok(std::process::Command::new("sha256sum").arg(&copy));
    let checksum_object = moto.get(BUCKET, &format!("{PREFIX}/docs/{name}.checksum"));
    let checksum_file = std::fs::read(dir.join(format!("{name}.checksum"))).unwrap();
    assert_eq!(checksum_file, checksum_object);
    assert_eq!(
        sum.split_whitespace().next().unwrap().as_bytes(),
        &checksum_object[..]
    );
    // The copy is the object's bytes (whole download over HTTP, same bytes).
    let downloaded = fetch(&client, &format!("/collections/docs/snapshots/{name}")).await;
    assert!(downloaded == copied);
    // A read in the middle (no read-ahead) gives the same bytes.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(dir.join(&name)).unwrap();
        let mut middle = vec![0u8; 100_000];
        let at = size / 2;
        let n = file.read_at(&mut middle, at).unwrap();
        assert!(n > 0);
        assert!(middle[..n] == copied[at as usize..at as usize + n]);
    }

    // Writes are refused; the checksum alone cannot be removed.
    let err = std::fs::write(dir.join("new.snapshot"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = std::fs::remove_file(dir.join(format!("{name}.checksum"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

    // rm deletes the object and its checksum object.
    std::fs::remove_file(dir.join(&name)).unwrap();
    let keys = moto.keys(BUCKET);
    assert!(
        !keys.iter().any(|k| k.contains(&name)),
        "still in S3: {keys:?}"
    );
    assert!(keys.iter().any(|k| k.contains(&shard_name)), "{keys:?}");
    let (_, listed) = call(&client, Method::GET, "/collections/docs/snapshots", None).await;
    assert_eq!(listed["result"], json!([]));
    assert!(!dir.join(&name).exists());
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

/// `snapfs snapshot create|list|download|delete` and `snapfs recover … s3://…` work
/// unchanged against the S3 backend.
#[tokio::test(flavor = "multi_thread")]
async fn s3_cli_commands() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let daemon = s3_daemon(&moto);
    let client = daemon.client();
    seeded_collection(&client, "docs", 2, 400).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("SNAPFS_SOCKET", &daemon.socket)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "snapfs {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let created = cli(&["snapshot", "create", "docs"]);
    let name = created.split_whitespace().next().unwrap().to_string();
    let checksum = created.split_whitespace().last().unwrap().to_string();
    assert!(name.ends_with(".snapshot"), "{created}");
    assert_eq!(
        moto.get(BUCKET, &format!("{PREFIX}/docs/{name}.checksum")),
        checksum.as_bytes()
    );
    let listed = cli(&["snapshot", "list", "docs"]);
    assert!(listed.starts_with(&format!("{name}\t")), "{listed}");
    assert!(listed.trim_end().ends_with(&checksum), "{listed}");

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("docs.snapshot");
    let downloaded = cli(&[
        "snapshot",
        "download",
        "docs",
        "--name",
        &name,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(downloaded.contains("(verified)"), "{downloaded}");
    assert_eq!(sha256_hex(&std::fs::read(&file).unwrap()), checksum);

    let before = by_id(&all_points(&client, "docs").await);
    let location = format!("s3://{BUCKET}/{PREFIX}/docs/{name}");
    cli(&["recover", "copy", &location]);
    assert!(by_id(&all_points(&client, "copy").await) == before);

    cli(&["snapshot", "delete", "docs", "--name", &name]);
    assert_eq!(cli(&["snapshot", "list", "docs"]), "");
    assert!(
        !moto.keys(BUCKET).iter().any(|k| k.contains(&name)),
        "{:?}",
        moto.keys(BUCKET)
    );
}

/// A name another writer has taken (its checksum object exists, its snapshot is
/// still being uploaded) is not taken again: names are reserved by a conditional
/// create of the checksum object, not by a lookup then a write.
#[tokio::test(flavor = "multi_thread")]
async fn s3_names_another_writer_reserved_are_not_reused() {
    use snapfs::snapshot::names::name_timestamp;
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let daemon = s3_daemon(&moto);
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 50).await;
    // Another daemon's reservations for every second of the next two minutes.
    let now = std::time::SystemTime::now();
    let theirs: Vec<String> = (0..120)
        .map(|s| {
            let ts = name_timestamp(now + std::time::Duration::from_secs(s));
            format!("{PREFIX}/docs/docs-{ts}.snapshot.checksum")
        })
        .collect();
    moto.py(&format!(
        "for k in {theirs:?}:\n    s3.put_object(Bucket={BUCKET:?}, Key=k, Body=b'theirs')"
    ));
    let (status, body) = call(&client, Method::POST, "/collections/docs/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let name = body["result"]["name"].as_str().unwrap().to_string();
    assert!(name.ends_with("-1.snapshot"), "{name}");
    let bodies = moto.py(&format!(
        "print(json.dumps(sorted(set(s3.get_object(Bucket={BUCKET:?}, Key=k)['Body'].read().decode() for k in {theirs:?}))))"
    ));
    assert_eq!(bodies.trim(), r#"["theirs"]"#);
    let ours = moto.get(BUCKET, &format!("{PREFIX}/docs/{name}.checksum"));
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        body["result"]["checksum"].as_str().unwrap()
    );
    assert!(
        moto.keys(BUCKET).contains(&format!("{PREFIX}/docs/{name}")),
        "{:?}",
        moto.keys(BUCKET)
    );
}

/// A stop that outlives the shutdown grace aborts a snapshot upload still
/// running: no multipart upload is left open in the bucket, no object written.
#[tokio::test(flavor = "multi_thread")]
async fn s3_upload_running_at_a_stop_is_aborted() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let extra = [
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PART_SIZE_BYTES",
            "4096",
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
            "1",
        ),
        ("SNAPFS__SNAPFS__SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut daemon = daemon_with(&s3_env(&moto.endpoint(), ACCESS, SECRET, &extra));
    let client = daemon.client();
    seeded_collection(&client, "docs", 1, 20_000).await;
    let creating = tokio::spawn(async move {
        call(&client, Method::POST, "/collections/docs/snapshots", None).await
    });
    for _ in 0..1000 {
        if moto.saw("partNumber=5") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(moto.saw("partNumber=5"), "the upload did not begin");
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    let status = daemon.wait_exit();
    // The request was cut at the end of the grace (or answered that snapfs stops).
    let _ = creating.await;
    let log = daemon.log();
    assert!(status.success(), "{log}");
    assert!(log.contains("the multipart upload was aborted"), "{log}");
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
    assert_eq!(moto.keys(BUCKET), Vec::<String>::new());
}

/// The S3 store keeps the promises every store keeps
/// (`snapfs::snapshot::store::conformance`, the checks the local store's unit test
/// runs too), against the real server, for every kind of scope.
#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_keeps_the_stores_promises() {
    use snapfs::snapshot::store::conformance;
    use snapfs::snapshot::store::s3::{S3Config, S3Store};

    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let temp = tempfile::tempdir().unwrap();
    let storage = snapfs::storage::Storage::open(&temp.path().join("storage")).unwrap();
    snapfs::demo::create_demo_collection(&storage)
        .await
        .unwrap();
    let config = S3Config {
        bucket: Some(BUCKET.into()),
        region: Some(REGION.into()),
        access_key: Some(ACCESS.into()),
        secret_key: Some(SECRET.into()),
        endpoint_url: Some(moto.endpoint()),
        prefix: "conformance".into(),
        ..S3Config::default()
    };
    let store = S3Store::new(&config).unwrap();
    tokio::task::spawn_blocking(move || {
        conformance::check_every_scope(&store, &snapfs::snapshot::Snapshots::new(storage));
    })
    .await
    .unwrap();
    // Everything it wrote it removed: only the bucket is left.
    assert_eq!(moto.keys(BUCKET), Vec::<String>::new());
}
