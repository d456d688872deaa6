//! A real multi-node Qdrant cluster (`support::qdrant_cluster`): the upstream 1.18.3
//! binary, three nodes on loopback, killed on drop. Real sharding and replication,
//! not a model of them, so what snapfs does against a cluster is checked against the
//! server itself. Skipped with a notice when the binary is not available.

use std::collections::{BTreeMap, BTreeSet};

use hyper::Method;
use serde_json::{Value, json};

use crate::support::qdrant_cluster::{QdrantCluster, random_points};
use crate::support::{all_points, call};

/// The harness itself: three nodes join, a sharded and replicated collection is
/// placed over them, and every node answers for all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_three_node_cluster_starts_and_answers() {
    tokio::task::block_in_place(|| {
        let Some(cluster) = QdrantCluster::start(3) else {
            return;
        };
        cluster.create_collection(
            "c1",
            json!({"vectors": {"size": 4, "distance": "Cosine"},
                   "shard_number": 3, "replication_factor": 2}),
        );
        cluster.upsert("c1", &random_points(0..300, 4, 7));

        let ids: BTreeSet<String> = cluster.scroll_all(1, "c1").into_keys().collect();
        let expected: BTreeSet<String> = (0..300).map(|id: u64| id.to_string()).collect();
        assert_eq!(ids, expected);
        assert_eq!(cluster.count_exact(2, "c1"), 300);

        let placement = cluster.placement(0, "c1");
        assert_eq!(placement.len(), 6, "{placement:?}");
        assert!(
            placement.iter().all(|(_, _, state)| state == "Active"),
            "{placement:?}"
        );
        let peers: BTreeSet<u64> = (0..3).map(|i| cluster.node(i).peer_id).collect();
        assert!(
            placement.iter().all(|(_, peer, _)| peers.contains(peer)),
            "{placement:?}"
        );
    });
}

/// A snapfs daemon following `cluster` as cluster `prod` (every collection, rounds on
/// demand), its snapshots in a restic repository.
struct Follower {
    daemon: crate::support::Daemon,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Follower {
    fn start(nodes: &[String], extra: &str) -> Follower {
        Follower::start_with_env(nodes, extra, &[])
    }

    /// The daemon again on the same data dir and configuration.
    fn restart(&mut self) {
        self.daemon = crate::support::Daemon::start_in(
            &self.data,
            &["--config", self.config.to_str().unwrap()],
            &[],
        );
    }

    fn start_with_env(nodes: &[String], extra: &str, env: &[(&str, &str)]) -> Follower {
        Follower::start_with(nodes, extra, env, false)
    }

    /// Mounted at `<dir>/mnt`.
    fn start_mounted(nodes: &[String]) -> Follower {
        Follower::start_with(nodes, "", &[], true)
    }

    fn mnt(&self) -> std::path::PathBuf {
        self.data.parent().unwrap().join("mnt")
    }

    fn start_with(nodes: &[String], extra: &str, env: &[(&str, &str)], mount: bool) -> Follower {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "follow-test").unwrap();
        let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "storage:\n  snapshots_config:\n    snapshots_storage: repository\n    repository:\n      location: {}\n      password_file: {}\nfollow:\n  clusters:\n    - name: prod\n      nodes: [{}]\n      collections: [\"*\"]\n      per_node: 2\n{extra}",
                dir.path().join("repo").display(),
                password.display(),
                nodes.join(", ")
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mut args = vec!["--config", config.to_str().unwrap()];
        if mount {
            args.extend(["--mount", mnt.to_str().unwrap()]);
        }
        let daemon = crate::support::Daemon::start_in(&data, &args, env);
        Follower {
            daemon,
            _dir: dir,
            config,
            data,
        }
    }

    async fn round(&self) -> (u16, Value) {
        call(
            &self.daemon.client(),
            Method::POST,
            "/snapfs/clusters/prod/round?wait=true",
            None,
        )
        .await
    }

    async fn round_ok(&self) -> Value {
        let (status, report) = self.round().await;
        assert_eq!(status, 200, "round: {report}\n{}", self.daemon.log());
        report["result"].clone()
    }

    async fn generations(&self) -> Vec<Value> {
        let (status, all) = call(
            &self.daemon.client(),
            Method::GET,
            "/snapfs/clusters/prod/generations",
            None,
        )
        .await;
        assert_eq!(status, 200, "{all}");
        all["result"].as_array().unwrap().clone()
    }

    /// Generation `name`'s manifest.
    async fn manifest(&self, name: &str) -> Value {
        let (status, manifest) = call(
            &self.daemon.client(),
            Method::GET,
            &format!("/snapfs/clusters/prod/generations/{name}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{manifest}");
        manifest["result"].clone()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::support::BIN)
            .args(args)
            .arg("--socket")
            .arg(&self.daemon.socket)
            .output()
            .unwrap()
    }
}

/// Points by id (as text) with payload and vector, from the mirror in snapfs.
async fn mirror_points(follower: &Follower, mirror: &str) -> BTreeMap<String, Value> {
    all_points(&follower.daemon.client(), mirror)
        .await
        .into_iter()
        .map(|p| {
            (
                p["id"].to_string(),
                json!({"payload": p["payload"], "vector": p["vector"]}),
            )
        })
        .collect()
}

fn cluster_points(cluster: &QdrantCluster, node: usize, name: &str) -> BTreeMap<String, Value> {
    cluster
        .scroll_all(node, name)
        .into_iter()
        .map(|(id, p)| (id, json!({"payload": p["payload"], "vector": p["vector"]})))
        .collect()
}

/// Equal ids and payloads, and vectors equal to f32 precision.
fn assert_same_points(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: the ids differ"
    );
    for (id, left) in a {
        let right = &b[id];
        assert_eq!(left["payload"], right["payload"], "{what}: payload of {id}");
        assert!(
            close(&left["vector"], &right["vector"]),
            "{what}: vector of {id}: {} vs {}",
            left["vector"],
            right["vector"]
        );
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// Sparse-vector points for `c2`: a dense `d` and a sparse `text` vector.
fn sparse_points(ids: std::ops::Range<u64>) -> Vec<Value> {
    ids.map(|id| {
        json!({"id": id,
               "vector": {"d": [1.0, (id % 5) as f32, 0.5, (id % 3) as f32],
                          "text": {"indices": [id % 11, 20 + id % 7], "values": [0.5, 1.5]}},
               "payload": {"tag": format!("t{}", id % 4), "n": id}})
    })
    .collect()
}

fn two_collections(cluster: &QdrantCluster) {
    cluster.create_collection(
        "c1",
        json!({"vectors": {"size": 4, "distance": "Cosine"},
               "shard_number": 3, "replication_factor": 2}),
    );
    cluster.create_collection(
        "c2",
        json!({"vectors": {"d": {"size": 4, "distance": "Dot"}},
               "sparse_vectors": {"text": {}},
               "shard_number": 2, "replication_factor": 2}),
    );
    cluster.create_payload_index("c2", "tag", "keyword");
    cluster.create_alias("c1", "c1-live");
    cluster.upsert("c1", &random_points(0..300, 4, 7));
    cluster.upsert("c2", &sparse_points(0..120));
}

/// The main path: rounds under writes mirror the cluster exactly, an
/// unchanged round moves no segment data, mirrors refuse writers, generations are
/// listed, and the latest one restores into a fresh cluster with the same points,
/// configurations, payload indexes and aliases; a cluster too small is refused
/// before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn following_a_cluster_mirrors_it_and_its_generations_restore_into_a_fresh_one() {
    let Some(source) = tokio::task::block_in_place(|| QdrantCluster::start(3)) else {
        return;
    };
    tokio::task::block_in_place(|| two_collections(&source));
    let follower = Follower::start(&source.urls(), "");

    // A round while writes go on, then one after them: the mirror equals the cluster.
    let first = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for batch in 0..5u64 {
                let from = 1000 + batch * 50;
                source.upsert("c1", &random_points(from..from + 50, 4, batch));
            }
        });
        let round = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(follower.round_ok())
        });
        writer.join().unwrap();
        round
    });
    assert!(first["error"].is_null(), "{first}");
    assert_eq!(first["stale"], 0, "{first}");
    let second = follower.round_ok().await;
    assert_eq!(second["stale"], 0, "{second}");
    for name in ["c1", "c2"] {
        let theirs = tokio::task::block_in_place(|| cluster_points(&source, 1, name));
        let ours = mirror_points(&follower, &format!("prod.{name}")).await;
        assert_same_points(&ours, &theirs, name);
    }
    assert_eq!(
        mirror_points(&follower, "prod.c1").await.len(),
        550,
        "300 points and 250 written during the first round"
    );

    // Nothing changed: every shard answers 304, no segment data moves.
    let quiet = follower.round_ok().await;
    assert_eq!(quiet["unchanged"], 5, "{quiet}");
    assert_eq!(quiet["applied"], 0, "{quiet}");
    assert_eq!(quiet["bytes_received"], 0, "{quiet}");

    // The mirror takes no writes, and says whose it is.
    let (status, refused) = call(
        &follower.daemon.client(),
        Method::PUT,
        "/collections/prod.c1/points?wait=true",
        Some(json!({"points": [{"id": 1, "vector": [1.0, 0.0, 0.0, 0.0]}]})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("read-only mirror of Qdrant cluster `prod`"),
        "{refused}"
    );

    // Three generations, listed by the API and the CLI.
    let generations = follower.generations().await;
    assert_eq!(generations.len(), 3, "{generations:?}");
    let latest = generations.last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(generations.last().unwrap()["points"], 550 + 120);
    let listed = follower.cli(&["cluster", "generations", "prod"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&latest));
    // The unchanged round stored nothing new: it names the same shard snapshots.
    let manifest = follower.manifest(&latest).await;
    let before = follower
        .manifest(generations[1]["name"].as_str().unwrap())
        .await;
    assert_eq!(
        manifest["collections"], before["collections"],
        "an unchanged round's generation names the previous stored shards"
    );
    assert_eq!(
        manifest["aliases"],
        json!([{"alias_name": "c1-live", "collection_name": "c1"}])
    );
    assert_eq!(manifest["qdrant_version"], "1.18.3");

    // Too few nodes: refused before anything is written.
    let small = tokio::task::block_in_place(|| QdrantCluster::start(1)).unwrap();
    let (status, refused) = call(
        &follower.daemon.client(),
        Method::POST,
        &format!("/snapfs/clusters/prod/generations/{latest}/restore"),
        Some(json!({"nodes": small.urls()})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("too few"), "{refused}");
    let (_, listed) = tokio::task::block_in_place(|| small.request(0, "GET", "/collections", None));
    assert_eq!(
        listed["result"]["collections"],
        json!([]),
        "nothing written"
    );
    drop(small);

    // A fresh three-node cluster: a dry run changes nothing, then the restore.
    let fresh = tokio::task::block_in_place(|| QdrantCluster::start(3)).unwrap();
    let dry = follower.cli(&[
        "cluster",
        "restore",
        "prod",
        &latest,
        "--dry-run",
        "--node",
        &fresh.url(0),
        "--node",
        &fresh.url(1),
        "--node",
        &fresh.url(2),
    ]);
    assert!(dry.status.success(), "{dry:?}");
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("would: create collection `c1`"), "{said}");
    assert!(said.contains("would: upload shard 2 of `c1`"), "{said}");
    let (_, listed) = tokio::task::block_in_place(|| fresh.request(0, "GET", "/collections", None));
    assert_eq!(
        listed["result"]["collections"],
        json!([]),
        "a dry run writes nothing"
    );
    let restored = follower.cli(&[
        "cluster",
        "restore",
        "prod",
        &latest,
        "--node",
        &fresh.url(0),
        "--node",
        &fresh.url(1),
        "--node",
        &fresh.url(2),
    ]);
    assert!(
        restored.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&restored.stdout),
        String::from_utf8_lossy(&restored.stderr),
        follower.daemon.log()
    );
    tokio::task::block_in_place(|| {
        for name in ["c1", "c2"] {
            assert_same_points(
                &cluster_points(&fresh, 2, name),
                &cluster_points(&source, 0, name),
                &format!("restored {name}"),
            );
            let (_, was) = source.request(0, "GET", &format!("/collections/{name}"), None);
            let (_, now) = fresh.request(0, "GET", &format!("/collections/{name}"), None);
            assert_eq!(
                now["result"]["config"]["params"],
                was["result"]["config"]["params"]
            );
            assert_eq!(
                now["result"]["config"]["hnsw_config"],
                was["result"]["config"]["hnsw_config"]
            );
        }
        let (_, c2) = fresh.request(0, "GET", "/collections/c2", None);
        assert_eq!(
            c2["result"]["payload_schema"]["tag"]["data_type"], "keyword",
            "{c2}"
        );
        assert_eq!(
            fresh.aliases(1),
            vec![("c1-live".to_string(), "c1".to_string())]
        );
        for (shard, _, state) in fresh.placement(0, "c1") {
            assert_eq!(state, "Active", "shard {shard}");
        }
    });
}

/// A node down when a round starts, and one killed while it runs: the round takes
/// every shard from another Active replica, nothing is stale, the mirror equals the
/// cluster. With every replica of the cluster gone, the round fails clearly and
/// records no generation.
#[tokio::test(flavor = "multi_thread")]
async fn a_round_uses_the_other_replicas_when_a_node_dies() {
    let Some(mut source) = cluster_with_c1(
        3,
        json!({"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2}),
        0..400,
        4,
        3,
    ) else {
        return;
    };
    let follower = Follower::start(&source.urls(), "");
    let first = follower.round_ok().await;
    assert_eq!(first["applied"], 3, "{first}");

    // Node 2 dies while the next round runs (started without waiting).
    tokio::task::block_in_place(|| source.upsert("c1", &random_points(400..500, 4, 4)));
    let (status, _) = call(
        &follower.daemon.client(),
        Method::POST,
        "/snapfs/clusters/prod/round?wait=false",
        None,
    )
    .await;
    assert_eq!(status, 202);
    tokio::task::block_in_place(|| source.kill(2));
    let report = loop {
        let (_, all) = call(
            &follower.daemon.client(),
            Method::GET,
            "/snapfs/clusters",
            None,
        )
        .await;
        let prod = all["result"][0].clone();
        if prod["running"] == false && prod["rounds"] == 2 {
            break prod["last_round"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(report["stale"], 0, "{report}");
    // And a round with node 2 down from the start.
    let third = follower.round_ok().await;
    assert_eq!(third["stale"], 0, "{third}");
    let down = third["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["unreachable"].is_null())
        .count();
    assert_eq!(down, 1, "{third}");
    let theirs = tokio::task::block_in_place(|| cluster_points(&source, 0, "c1"));
    assert_same_points(&mirror_points(&follower, "prod.c1").await, &theirs, "c1");
    assert_eq!(theirs.len(), 500);

    // No node answers: a clear failure, no generation, the mirror as it was.
    tokio::task::block_in_place(|| {
        source.kill(0);
        source.kill(1);
    });
    let before = follower.generations().await.len();
    let (status, failed) = follower.round().await;
    assert_eq!(status, 502, "{failed}");
    assert!(
        failed
            .to_string()
            .contains("no node of cluster prod answered"),
        "{failed}"
    );
    assert_eq!(follower.generations().await.len(), before);
    assert_eq!(mirror_points(&follower, "prod.c1").await.len(), 500);
    let text =
        String::from_utf8(crate::support::fetch(&follower.daemon.client(), "/metrics").await)
            .unwrap();
    assert!(
        text.contains("snapfs_follow_rounds_total{cluster=\"prod\",result=\"failed\"} 1"),
        "{text}"
    );
}

/// A wrong API key and a server that is not Qdrant: clear errors, nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_or_a_node_answering_garbage_fails_the_round_clearly() {
    let Some(keyed) =
        tokio::task::block_in_place(|| QdrantCluster::start_with_key(1, Some("right-key")))
    else {
        return;
    };
    let wrong = Follower::start(&keyed.urls(), "      api_key: wrong-key\n");
    let (status, failed) = wrong.round().await;
    assert_eq!(status, 502, "{failed}");
    assert!(
        failed
            .to_string()
            .contains("needs an API key (none was given, or a wrong one)"),
        "{failed}"
    );
    assert!(
        !failed.to_string().contains("wrong-key"),
        "the key is never echoed: {failed}"
    );
    assert!(!wrong.daemon.log().contains("wrong-key"), "nor logged");
    assert_eq!(wrong.generations().await.len(), 0);

    // A plain web server where a node should be.
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("cluster"), "<html>not qdrant</html>").unwrap();
    let server = crate::support::file_server(junk.path());
    let garbage = Follower::start(&[server.url("")], "");
    let (status, failed) = garbage.round().await;
    assert_eq!(status, 502, "{failed}");
    assert!(
        failed.to_string().contains("does not run in cluster mode")
            || failed.to_string().contains("is it Qdrant"),
        "{failed}"
    );
    assert!(
        !failed.to_string().contains("not qdrant</html>"),
        "no fetched bytes echoed: {failed}"
    );
    assert_eq!(garbage.generations().await.len(), 0);
    assert!(
        garbage
            .daemon
            .client()
            .raw(Method::GET, "/collections", None)
            .await
            .unwrap()
            .1
            .to_string()
            .contains("[]")
    );
}

/// The stored snapshots of `mirror`'s shard `shard`, by name.
async fn stored_names(follower: &Follower, mirror: &str, shard: u32) -> BTreeSet<String> {
    let (status, listed) = call(
        &follower.daemon.client(),
        Method::GET,
        &format!("/collections/{mirror}/shards/{shard}/snapshots"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    listed["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The shard snapshots the generations' manifests name, per shard.
async fn named_by_generations(follower: &Follower, shard: u32) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for generation in follower.generations().await {
        let manifest = follower
            .manifest(generation["name"].as_str().unwrap())
            .await;
        for collection in manifest["collections"].as_array().unwrap() {
            named.insert(
                collection["shards"][shard as usize]["snapshot"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    named
}

/// A daemon killed between its shard snapshots and the manifest records no
/// generation, and the next round removes what it stored; the cluster's retention
/// forgets generations by restic's rules, and a shard snapshot goes with the last
/// generation naming it: the store holds exactly what the generations name.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_manifest_and_the_retention_leave_only_what_generations_name() {
    let Some(source) = cluster_with_c1(
        1,
        json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2}),
        0..200,
        4,
        1,
    ) else {
        return;
    };
    let mut follower = Follower::start_with_env(
        &source.urls(),
        "      retention: { keep_last: 2 }\n",
        &[("SNAPFS_CRASH_AT", "follow-before-manifest")],
    );
    let _ = follower
        .daemon
        .client()
        .raw(Method::POST, "/snapfs/clusters/prod/round?wait=true", None)
        .await;
    follower.daemon.wait_exit();
    follower.restart();
    assert_eq!(
        follower.generations().await.len(),
        0,
        "no manifest, no generation"
    );
    assert_eq!(
        stored_names(&follower, "prod.c1", 0).await.len(),
        1,
        "the crashed round's shard snapshot is there until the next round"
    );

    follower.round_ok().await;
    assert_eq!(
        stored_names(&follower, "prod.c1", 0).await,
        named_by_generations(&follower, 0).await,
        "the crashed round's shard snapshot was removed"
    );
    tokio::task::block_in_place(|| source.upsert("c1", &random_points(200..260, 4, 2)));
    let changed = follower.round_ok().await;
    assert_eq!(changed["applied"], 2, "{changed}");
    let quiet = follower.round_ok().await;
    assert_eq!(quiet["unchanged"], 2, "{quiet}");
    let generations = follower.generations().await;
    assert_eq!(generations.len(), 2, "keep_last: 2: {generations:?}");
    for shard in 0..2 {
        let named = named_by_generations(&follower, shard).await;
        assert_eq!(
            named.len(),
            1,
            "the two kept generations share their shard snapshots"
        );
        assert_eq!(stored_names(&follower, "prod.c1", shard).await, named);
    }
    assert_eq!(mirror_points(&follower, "prod.c1").await.len(), 260);
}

/// The mount's `clusters/<cluster>/<generation>/`: the manifest, `SHA256SUMS` that
/// `sha256sum -c` checks, and the shard archives, byte for byte the stored snapshots
/// they name; read-only.
#[tokio::test(flavor = "multi_thread")]
async fn the_mount_shows_each_generation_as_a_checkable_tree() {
    let Some(source) = cluster_with_c1(
        1,
        json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2}),
        0..150,
        4,
        5,
    ) else {
        return;
    };
    let follower = Follower::start_mounted(&source.urls());
    let round = follower.round_ok().await;
    let generation = round["generation"].as_str().unwrap().to_string();
    let mnt = follower.mnt();
    let dir = mnt.join("clusters/prod").join(&generation);
    let listed: Vec<String> =
        tokio::task::block_in_place(|| crate::support::names(&mnt.join("clusters/prod")));
    assert_eq!(listed, vec![generation.clone()]);
    assert_eq!(
        crate::support::names(&dir),
        vec!["SHA256SUMS", "c1", "manifest.json"]
    );
    assert_eq!(
        crate::support::names(&dir.join("c1")),
        vec!["0.snapshot", "1.snapshot"]
    );
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .matches(": OK")
            .count(),
        2
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["generation"], generation.as_str());
    let name = manifest["collections"][0]["shards"][1]["snapshot"]
        .as_str()
        .unwrap();
    let stored = crate::support::fetch(
        &follower.daemon.client(),
        &format!("/collections/prod.c1/shards/1/snapshots/{name}"),
    )
    .await;
    assert!(std::fs::read(dir.join("c1/1.snapshot")).unwrap() == stored);
    assert!(
        std::fs::write(dir.join("c1/2.snapshot"), b"x").is_err(),
        "read-only"
    );
    assert!(
        std::fs::remove_file(dir.join("manifest.json")).is_err(),
        "read-only"
    );

    // Bad requests: a clear refusal each, nothing written into the target.
    let client = follower.daemon.client();
    let restore = format!("/snapfs/clusters/prod/generations/{generation}/restore");
    for (body, status, said) in [
        (json!({"nodes": []}), 400, "give the target cluster's nodes"),
        (
            json!({"nodes": ["ftp://127.0.0.1:1"]}),
            400,
            "http:// or https://",
        ),
        (json!({"nodes": source.urls(), "wipe": true}), 400, "wipe"),
    ] {
        let (got, answer) = call(&client, Method::POST, &restore, Some(body)).await;
        assert_eq!(got, status, "{answer}");
        assert!(answer.to_string().contains(said), "{answer}");
    }
    for (method, path) in [
        (
            Method::POST,
            "/snapfs/clusters/prod/generations/prod-2000-01-01-00-00-00/restore",
        ),
        (
            Method::GET,
            "/snapfs/clusters/prod/generations/..%2F..%2Fetc",
        ),
        (Method::DELETE, "/snapfs/clusters/prod/generations/nope"),
        (Method::POST, "/snapfs/clusters/elsewhere/round"),
        (Method::GET, "/snapfs/clusters/elsewhere/generations"),
    ] {
        let body = (method == Method::POST).then(|| json!({"nodes": source.urls()}));
        let (got, answer) = call(&client, method.clone(), path, body).await;
        assert_eq!(got, 404, "{method} {path}: {answer}");
    }
    let (_, listed) =
        tokio::task::block_in_place(|| source.request(0, "GET", "/collections", None));
    assert_eq!(
        listed["result"]["collections"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
}

/// A shard whose only replica is on a dead node: with `on_stale: record` the round
/// records a generation with that shard stale (its previous state, the reason), the
/// others pulled; with `on_stale: fail` the round fails and records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_no_replica_can_give_is_recorded_stale_or_fails_the_round() {
    let Some(mut source) = cluster_with_c1(
        3,
        json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 3, "replication_factor": 1}),
        0..300,
        4,
        9,
    ) else {
        return;
    };
    let record = Follower::start(&source.urls(), "");
    let fail = Follower::start(&source.urls(), "      on_stale: fail\n");
    record.round_ok().await;
    fail.round_ok().await;
    let lost = source.node(2).peer_id;
    let lost_shards: Vec<u32> = tokio::task::block_in_place(|| source.placement(0, "c1"))
        .into_iter()
        .filter(|(_, peer, _)| *peer == lost)
        .map(|(shard, _, _)| shard)
        .collect();
    assert_eq!(lost_shards.len(), 1, "one shard per node");
    tokio::task::block_in_place(|| source.kill(2));

    let report = record.round_ok().await;
    assert_eq!(report["stale"], 1, "{report}");
    let generations = record.generations().await;
    assert_eq!(generations.last().unwrap()["stale_shards"], 1);
    let manifest = record
        .manifest(report["generation"].as_str().unwrap())
        .await;
    let shard = &manifest["collections"][0]["shards"][lost_shards[0] as usize];
    assert!(
        shard["stale"]
            .as_str()
            .unwrap()
            .contains("no Active replica could give it"),
        "{shard}"
    );
    assert_eq!(
        mirror_points(&record, "prod.c1").await.len(),
        300,
        "its previous state"
    );
    let metrics =
        String::from_utf8(crate::support::fetch(&record.daemon.client(), "/metrics").await)
            .unwrap();
    assert!(
        metrics.contains("snapfs_follow_stale_shards{cluster=\"prod\"} 1"),
        "{metrics}"
    );

    let before = fail.generations().await.len();
    let (status, failed) = fail.round().await;
    assert_eq!(status, 502, "{failed}");
    assert!(failed.to_string().contains("on_stale: fail"), "{failed}");
    assert_eq!(fail.generations().await.len(), before, "no generation");
}

/// The cluster changes under the follower: a collection created is followed from the
/// next round, one whose vectors change gets its mirror rebuilt with the new
/// configuration, one deleted loses its mirror (earlier generations keep it).
#[tokio::test(flavor = "multi_thread")]
async fn collections_created_reshaped_and_deleted_in_the_cluster_are_followed() {
    let Some(source) = tokio::task::block_in_place(|| QdrantCluster::start(1)) else {
        return;
    };
    let create = |name: &str, size: usize| {
        tokio::task::block_in_place(|| {
            source.create_collection(
                name,
                json!({"vectors": {"size": size, "distance": "Dot"}, "shard_number": 1}),
            );
            source.upsert(name, &random_points(0..50, size, 2));
        })
    };
    create("c1", 4);
    let follower = Follower::start(&source.urls(), "");
    follower.round_ok().await;
    let mirrors = |follower: &Follower| {
        let client = follower.daemon.client();
        async move {
            let (_, listed) = call(&client, Method::GET, "/collections", None).await;
            let mut names: Vec<String> = listed["result"]["collections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(mirrors(&follower).await, ["prod.c1"]);

    create("c2", 4);
    follower.round_ok().await;
    assert_eq!(mirrors(&follower).await, ["prod.c1", "prod.c2"]);

    // c1 again with 8-dimensional vectors.
    tokio::task::block_in_place(|| {
        let (status, _) = source.request(0, "DELETE", "/collections/c1", None);
        assert_eq!(status, 200);
    });
    create("c1", 8);
    follower.round_ok().await;
    let (_, info) = call(
        &follower.daemon.client(),
        Method::GET,
        "/collections/prod.c1",
        None,
    )
    .await;
    assert_eq!(
        info["result"]["config"]["params"]["vectors"]["size"], 8,
        "{info}"
    );
    let points = mirror_points(&follower, "prod.c1").await;
    assert_eq!(points.len(), 50);
    assert!(
        points
            .values()
            .all(|p| p["vector"].as_array().unwrap().len() == 8)
    );

    tokio::task::block_in_place(|| {
        let (status, _) = source.request(0, "DELETE", "/collections/c2", None);
        assert_eq!(status, 200);
    });
    follower.round_ok().await;
    assert_eq!(mirrors(&follower).await, ["prod.c1"]);
    let generations = follower.generations().await;
    assert_eq!(generations.len(), 4);
    assert_eq!(
        generations[2]["collections"], 2,
        "the earlier generation keeps c2"
    );
    assert_eq!(generations[3]["collections"], 1);
}

/// A collection that had a mirror's name before the cluster was followed is no
/// mirror: a round neither rebuilds nor removes it, says why it does not follow its
/// source, and the collection keeps its points.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_that_only_has_a_mirrors_name_is_left_alone() {
    let Some(source) = cluster_with_c1(
        1,
        json!({"vectors": {"size": 8, "distance": "Dot"}, "shard_number": 1}),
        0..20,
        8,
        3,
    ) else {
        return;
    };
    let mut follower = Follower::start(&source.urls(), "");
    follower.daemon.stop();
    // Without the follow configuration, a collection of its own named prod.c1.
    let mut plain = crate::support::Daemon::start_in(&follower.data, &[], &[]);
    crate::support::create_collection(
        &plain.client(),
        "prod.c1",
        crate::support::vectors(4, "Dot"),
    )
    .await;
    crate::support::upsert_ids(&plain.client(), "prod.c1", 0..7, 4).await;
    plain.stop();
    follower.restart();

    let report = follower.round_ok().await;
    let skipped = report["skipped"].to_string();
    assert!(skipped.contains("is no mirror of cluster prod"), "{report}");
    assert_eq!(
        mirror_points(&follower, "prod.c1").await.len(),
        7,
        "untouched"
    );
    let (_, info) = call(
        &follower.daemon.client(),
        Method::GET,
        "/collections/prod.c1",
        None,
    )
    .await;
    assert_eq!(info["result"]["config"]["params"]["vectors"]["size"], 4);
}

/// A cluster of `nodes` Qdrant nodes holding collection `c1` (created with `body`)
/// and the random points `ids` of `dim` dimensions from `seed`; `None` (with the
/// notice printed) where there is no Qdrant binary.
fn cluster_with_c1(
    nodes: usize,
    body: Value,
    ids: std::ops::Range<u64>,
    dim: usize,
    seed: u64,
) -> Option<QdrantCluster> {
    tokio::task::block_in_place(|| {
        let cluster = QdrantCluster::start(nodes)?;
        cluster.create_collection("c1", body);
        cluster.upsert("c1", &random_points(ids, dim, seed));
        Some(cluster)
    })
}
