//! Everything a Qdrant collection holds survives snapfs: sparse vectors, multivectors,
//! datatypes, quantization, named vectors a point may lack, payload indexes — from
//! Qdrant's own snapshots and from collections made here, through restore and a
//! fresh snapshot of the restored state.

use crate::support;

use std::path::Path;

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

async fn recover(client: &Client, collection: &str, location: &str) -> (u16, Value) {
    call(
        client,
        Method::PUT,
        &format!("/collections/{collection}/snapshots/recover"),
        Some(json!({"location": location})),
    )
    .await
}

async fn info(client: &Client, collection: &str) -> Value {
    let (status, body) = call(
        client,
        Method::GET,
        &format!("/collections/{collection}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// A collection's points by id, with vectors as Qdrant prints them.
async fn points_of(client: &Client, collection: &str) -> std::collections::BTreeMap<String, Value> {
    by_id(&all_points(client, collection).await)
}

/// Float lists compared to 1e-6 (sparse values and multivector rows included).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

fn assert_same_points(
    what: &str,
    want: &std::collections::BTreeMap<String, Value>,
    got: &std::collections::BTreeMap<String, Value>,
) {
    assert_eq!(got.len(), want.len(), "{what}: point count");
    let differing: Vec<_> = want
        .iter()
        .filter(|(id, p)| !got.get(*id).is_some_and(|g| close(g, p)))
        .take(2)
        .map(|(id, p)| (p.clone(), got.get(id).cloned()))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: points differ (want, got): {differing:?}"
    );
}

/// Qdrant's hybrid collection (dense + scalar quantization, a ColBERT-style
/// multivector, an idf sparse vector, keyword/integer/text indexes) restores to
/// exactly what Qdrant returned for it; a fresh snapfs snapshot of it restores again
/// to the same, with the indexes in its payload_index.json.
#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_hybrid_collection_restores_exactly_and_round_trips() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(qdrant_fixture("expected-hybrid.json")).unwrap())
            .unwrap();
    let want = by_id(expected["points"].as_array().unwrap());

    let location = stage(
        &daemon,
        &qdrant_fixture("qdrant-hybrid.snapshot"),
        "hybrid.snapshot",
    );
    let (status, body) = recover(&client, "hybrid", &location).await;
    assert_eq!(status, 200, "{body}");
    let restored = info(&client, "hybrid").await;
    assert_eq!(restored["config"], expected["config"], "config");
    assert_eq!(
        restored["payload_schema"], expected["payload_schema"],
        "payload_schema"
    );
    assert_same_points("restored", &want, &points_of(&client, "hybrid").await);

    // A fresh snapshot of it carries the real index schema and restores again.
    let name = stored_name(&client, "/collections/hybrid/snapshots").await;
    let stored = daemon.data_dir.join("snapshots/hybrid").join(&name);
    let listing = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&stored)
        .arg("payload_index.json")
        .output()
        .unwrap();
    let schema: Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(schema["schema"]["tag"], json!("keyword"), "{schema}");
    assert_eq!(schema["schema"]["n"], json!("integer"), "{schema}");
    assert_eq!(schema["schema"]["words"]["type"], json!("text"), "{schema}");

    let location = format!("file://{}", stored.display());
    let (status, body) = recover(&client, "hybrid2", &location).await;
    assert_eq!(status, 200, "{body}");
    let again = info(&client, "hybrid2").await;
    assert_eq!(
        again["config"], expected["config"],
        "config after the round trip"
    );
    assert_eq!(again["payload_schema"], expected["payload_schema"]);
    assert_same_points("round trip", &want, &points_of(&client, "hybrid2").await);

    // Queries by each kind of vector answer, as Qdrant's would.
    for (using, query) in [
        ("text", json!({"indices": [346, 557], "values": [1.0, 0.5]})),
        (
            "colbert",
            json!([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]),
        ),
        ("dense", json!([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])),
    ] {
        let (status, body) = call(
            &client,
            Method::POST,
            "/collections/hybrid2/points/query",
            Some(json!({"query": query, "using": using, "limit": 5})),
        )
        .await;
        assert_eq!(status, 200, "{using}: {body}");
        let points = body["result"]["points"].as_array().unwrap();
        assert_eq!(points.len(), 5, "{using}: {body}");
        let scores: Vec<f64> = points
            .iter()
            .map(|p| p["score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{using}: {scores:?}"
        );
    }
}

/// A collection with every kind of vector Qdrant has and indexes of every type.
fn rich_collection() -> Value {
    json!({
        "vectors": {
            "dense": {"size": 8, "distance": "Cosine", "datatype": "float16",
                      "quantization_config": {"scalar": {"type": "int8", "always_ram": true}}},
            "bytes": {"size": 4, "distance": "Euclid", "datatype": "uint8",
                      "quantization_config": {"binary": {"always_ram": true}}},
            "colbert": {"size": 4, "distance": "Dot", "multivector_config": {"comparator": "max_sim"},
                        "hnsw_config": {"m": 8}}
        },
        "sparse_vectors": {
            "text": {"modifier": "idf"},
            "plain": {"index": {"on_disk": true}}
        },
        "shard_number": 2,
        "metadata": {"owner": "tests"}
    })
}

/// Point `i`: a sparse `text` vector always; the others on some points only.
fn rich_point(i: u64) -> Value {
    let f = |k: u64| ((i * 7 + k * 13) % 17) as f64 / 17.0 + 0.01;
    let mut vector = serde_json::Map::new();
    vector.insert(
        "text".into(),
        json!({"indices": [i % 50, 50 + i % 7, 100 + i], "values": [f(1), f(2), f(3)]}),
    );
    if !i.is_multiple_of(3) {
        vector.insert("dense".into(), json!((0..8).map(f).collect::<Vec<_>>()));
    }
    if i.is_multiple_of(2) {
        vector.insert(
            "bytes".into(),
            json!((0..4).map(|k| ((i + k) % 256) as f64).collect::<Vec<_>>()),
        );
    }
    if i % 4 != 1 {
        let rows = (i % 3 + 1) as usize;
        let multi: Vec<Vec<f64>> = (0..rows)
            .map(|r| (0..4).map(|k| f(k + r as u64)).collect())
            .collect();
        vector.insert("colbert".into(), json!(multi));
    }
    if i.is_multiple_of(5) {
        vector.insert(
            "plain".into(),
            json!({"indices": [1, 2], "values": [f(4), f(5)]}),
        );
    }
    json!({
        "id": i,
        "vector": vector,
        "payload": {
            "n": i, "tag": format!("t{}", i % 7), "words": format!("Word{} alpha BETA", i % 11),
            "loc": {"lon": (i % 90) as f64, "lat": (i % 45) as f64},
            "when": format!("2026-11-{:02}T10:00:00Z", i % 28 + 1),
            "flag": i.is_multiple_of(2), "f": i as f64 / 3.0,
            "uid": format!("00000000-0000-4000-8000-{:012}", i)
        }
    })
}

const RICH_INDEXES: [(&str, &str); 8] = [
    ("n", r#"{"type": "integer", "lookup": true, "range": true}"#),
    ("tag", r#""keyword""#),
    (
        "words",
        r#"{"type": "text", "tokenizer": "word", "lowercase": true}"#,
    ),
    ("loc", r#""geo""#),
    ("when", r#""datetime""#),
    ("flag", r#""bool""#),
    ("f", r#""float""#),
    ("uid", r#""uuid""#),
];

/// Collections made here with sparse vectors (idf), a multivector, float16 and
/// uint8 storage, scalar and binary quantization, named vectors points may lack and
/// indexes of every type restore through `recover/`, an upload and a URL to the same
/// config, payload_schema and points; a snapshot of each restored state is
/// byte-identical to the archive it came from.
#[tokio::test(flavor = "multi_thread")]
async fn rich_collections_restore_every_way_byte_identical() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mnt = temp.path().join("mnt");
    {
        let mut first = Daemon::start_in(&data, &[], &[]);
        let client = first.client();
        let (status, body) = call(
            &client,
            Method::PUT,
            "/collections/rich",
            Some(rich_collection()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for (field, schema) in RICH_INDEXES {
            let schema: Value = serde_json::from_str(schema).unwrap();
            let (status, body) = call(
                &client,
                Method::PUT,
                "/collections/rich/index?wait=true",
                Some(json!({"field_name": field, "field_schema": schema})),
            )
            .await;
            assert_eq!(status, 200, "{field}: {body}");
        }
        let points: Vec<Value> = (0..120).map(rich_point).collect();
        let (status, body) = call(
            &client,
            Method::PUT,
            "/collections/rich/points?wait=true",
            Some(json!({"points": points})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        first.stop();
    }
    let mut daemon = Daemon::start_in(&data, &["--mount", mnt.to_str().unwrap()], &[]);
    let client = daemon.client();
    let original_info = info(&client, "rich").await;
    let schema = &original_info["payload_schema"];
    for (field, _) in RICH_INDEXES {
        assert_eq!(schema[field]["points"], json!(120), "{field}: {schema}");
    }
    assert_eq!(
        schema["words"]["params"]["tokenizer"],
        json!("word"),
        "{schema}"
    );
    assert_eq!(
        original_info["config"]["metadata"],
        json!({"owner": "tests"})
    );
    let original_points = points_of(&client, "rich").await;
    // Points lack what they were not given, and keep every kind they were.
    assert!(original_points["0"]["vector"].get("dense").is_none());
    assert_eq!(
        original_points["4"]["vector"]["colbert"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        original_points["10"]["vector"]["bytes"],
        json!([10.0, 11.0, 12.0, 13.0])
    );

    let snapshot = |collection: &str| {
        let client = daemon.client();
        let dir = daemon.data_dir.join("snapshots").join(collection);
        let collection = collection.to_string();
        async move {
            let (status, body) = call(
                &client,
                Method::POST,
                &format!("/collections/{collection}/snapshots"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            dir.join(body["result"]["name"].as_str().unwrap())
        }
    };
    let original = snapshot("rich").await;
    let original_bytes = std::fs::read(&original).unwrap();

    // recover/ on the mount.
    let copied = std::process::Command::new("cp")
        .arg(&original)
        .arg(mnt.join("recover/viamount.snapshot"))
        .status()
        .unwrap();
    assert!(copied.success());
    // An upload.
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&daemon.socket)
        .arg("-F")
        .arg(format!("snapshot=@{}", original.display()))
        .arg("http://localhost/collections/viaupload/snapshots/upload?wait=true")
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], json!("ok"), "{body}");
    // A URL.
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(&original, served.path().join("rich.snapshot")).unwrap();
    let server = file_server(served.path());
    let url = format!("http://127.0.0.1:{}/rich.snapshot", server.port);
    let (status, body) = recover(&client, "viaurl", &url).await;
    assert_eq!(status, 200, "{body}");

    for copy in ["viamount", "viaupload", "viaurl"] {
        let restored = info(&client, copy).await;
        assert_eq!(
            restored["config"], original_info["config"],
            "{copy}: config"
        );
        assert_eq!(
            restored["payload_schema"], original_info["payload_schema"],
            "{copy}: schema"
        );
        assert_same_points(copy, &original_points, &points_of(&client, copy).await);
        let again_path = snapshot(copy).await;
        let again = std::fs::read(&again_path).unwrap();
        assert!(
            again == original_bytes,
            "{copy}: a snapshot of the restored state differs from the archive: {}",
            differing_entries(&original, &again_path)
        );
    }
    daemon.stop();
    detach_if_mounted(&mnt);
}

/// The payload index API: create (a type name or params), shown in the info and
/// used by filters, deleted; bad schemas, unknown types and missing collections are
/// refused with words and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn payload_indexes_are_made_shown_and_dropped() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/ix",
        Some(rich_collection()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let points: Vec<Value> = (0..40).map(rich_point).collect();
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/ix/points?wait=true",
        Some(json!({"points": points})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/ix/index?wait=true",
        Some(json!({"field_name": "tag", "field_schema": "keyword"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["status"], json!("completed"), "{body}");
    let schema = info(&client, "ix").await["payload_schema"].clone();
    assert_eq!(
        schema,
        json!({"tag": {"data_type": "keyword", "points": 40}})
    );

    let bad = [
        (
            "/collections/ix/index",
            json!({"field_name": "tag", "field_schema": "colour"}),
            400,
            "colour",
        ),
        (
            "/collections/ix/index",
            json!({"field_name": "n", "field_schema": {"type": "integer", "lookup": "yes"}}),
            400,
            "field_schema",
        ),
        (
            "/collections/ix/index",
            json!({"field_name": "n"}),
            400,
            "field_schema` is required",
        ),
        (
            "/collections/ix/index",
            json!({"field_schema": "keyword"}),
            400,
            "field_name",
        ),
        (
            "/collections/nope/index",
            json!({"field_name": "n", "field_schema": "integer"}),
            404,
            "nope",
        ),
    ];
    for (path, body, want_status, words) in bad {
        let (status, answer) = call(
            &client,
            Method::PUT,
            &format!("{path}?wait=true"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, want_status, "{body}: {answer}");
        assert!(error_of(&answer).contains(words), "{body}: {answer}");
    }
    assert_eq!(
        info(&client, "ix").await["payload_schema"],
        schema,
        "a refusal changed the schema"
    );

    // wait=false is acknowledged and lands.
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/ix/index?wait=false",
        Some(json!({"field_name": "n", "field_schema": "integer"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["status"], json!("acknowledged"), "{body}");
    let mut indexed = false;
    for _ in 0..100 {
        if info(&client, "ix").await["payload_schema"]["n"]["points"] == json!(40) {
            indexed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(indexed, "{}", info(&client, "ix").await);
    // A filter on the indexed field answers.
    let (status, body) = call(
        &client,
        Method::POST,
        "/collections/ix/points/count",
        Some(
            json!({"filter": {"must": [{"key": "tag", "match": {"value": "t3"}}]}, "exact": true}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["count"],
        json!((0..40).filter(|i| i % 7 == 3).count())
    );

    let (status, body) = call(
        &client,
        Method::DELETE,
        "/collections/ix/index/tag?wait=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        info(&client, "ix").await["payload_schema"],
        json!({"n": {"data_type": "integer", "points": 40}})
    );
    let (status, body) = call(&client, Method::DELETE, "/collections/nope/index/tag", None).await;
    assert_eq!(status, 404, "{body}");
}

/// Points are checked against the config's kinds: a sparse vector under a dense
/// name, a single vector for a multivector, a repeated sparse index, an unknown name
/// — each refused with words, nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn points_of_the_wrong_kind_are_refused() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/k",
        Some(rich_collection()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cases = [
        (
            json!({"dense": {"indices": [1], "values": [0.5]}}),
            "Not existing vector name",
        ),
        (json!({"colbert": [0.1, 0.2, 0.3, 0.4]}), "multivector"),
        (json!({"colbert": [[0.1, 0.2, 0.3]]}), "expected dim: 4"),
        (json!({"text": [0.1, 0.2]}), "sparse"),
        (
            json!({"text": {"indices": [1, 1], "values": [0.1, 0.2]}}),
            "repeats an index",
        ),
        (
            json!({"text": {"indices": [1, 2], "values": [0.1]}}),
            "indices",
        ),
        (json!({"nope": [0.1]}), "Not existing vector name"),
    ];
    for (vector, words) in cases {
        let (status, body) = call(
            &client,
            Method::PUT,
            "/collections/k/points?wait=true",
            Some(json!({"points": [{"id": 1, "vector": vector}]})),
        )
        .await;
        assert_eq!(status, 400, "{vector}: {body}");
        assert!(error_of(&body).contains(words), "{vector}: {body}");
    }
    assert_eq!(count(&client, "k").await, 0);
}

/// The entries two archives do not share byte for byte (names, metadata or data), for
/// a failure message.
fn differing_entries(a: &Path, b: &Path) -> String {
    let script = "import sys, tarfile\n\
        entries = lambda t: {m.name: (m.size, m.mtime, m.mode, t.extractfile(m).read() if m.isfile() else b'') for m in t}\n\
        a, b = (entries(tarfile.open(p)) for p in sys.argv[1:3])\n\
        names = ('size', 'mtime', 'mode', 'data')\n\
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))\n\
        print(len(diff), 'entries differ, e.g.', [(k, [n for n, x, y in zip(names, a.get(k, ()), b.get(k, ())) if x != y] or 'missing') for k in diff[:6]])\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Qdrant's `multi` collection carries a keyword index on `tag`: it is in the
/// payload_schema after the restore and in the payload_index.json of a fresh snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_snapshots_index_survives_restore_and_snapshot() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let location = stage(
        &daemon,
        &qdrant_fixture("qdrant-multi.snapshot"),
        "multi.snapshot",
    );
    let (status, body) = recover(&client, "multi", &location).await;
    assert_eq!(status, 200, "{body}");
    let schema = info(&client, "multi").await["payload_schema"].clone();
    assert_eq!(
        schema,
        json!({"tag": {"data_type": "keyword", "points": 1800}})
    );
    let (status, body) = call(&client, Method::POST, "/collections/multi/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let stored = daemon
        .data_dir
        .join("snapshots/multi")
        .join(body["result"]["name"].as_str().unwrap());
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&stored)
        .arg("payload_index.json")
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"schema": {"tag": "keyword"}})
    );
}
