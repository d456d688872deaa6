//! Everything a Qdrant collection holds survives snapfs: sparse vectors, multivectors,
//! datatypes, quantization, named vectors a point may lack, payload indexes — from
//! Qdrant's own snapshots and from collections made here, through restore and a
//! fresh snapshot of the restored state.

mod support;

use std::path::Path;

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

/// Put `file` into the daemon's snapshots directory; returns its file:// location.
fn stage(daemon: &Daemon, file: &Path, name: &str) -> String {
    let dir = daemon.data_dir.join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join(name);
    std::fs::copy(file, &target).unwrap();
    format!("file://{}", target.display())
}

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
    let (status, body) = call(client, Method::GET, &format!("/collections/{collection}"), None).await;
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
    assert!(differing.is_empty(), "{what}: points differ (want, got): {differing:?}");
}

/// Qdrant's hybrid collection (dense + scalar quantization, a ColBERT-style
/// multivector, an idf sparse vector, keyword/integer/text indexes) restores to
/// exactly what Qdrant returned for it; a fresh snapfs snapshot of it restores again
/// to the same, with the indexes in its payload_index.json.
#[tokio::test(flavor = "multi_thread")]
async fn a_qdrant_hybrid_collection_restores_exactly_and_round_trips() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(qdrant_fixture("expected-hybrid.json")).unwrap(),
    )
    .unwrap();
    let want = by_id(expected["points"].as_array().unwrap());

    let location = stage(&daemon, &qdrant_fixture("qdrant-hybrid.snapshot"), "hybrid.snapshot");
    let (status, body) = recover(&client, "hybrid", &location).await;
    assert_eq!(status, 200, "{body}");
    let restored = info(&client, "hybrid").await;
    assert_eq!(restored["config"], expected["config"], "config");
    assert_eq!(restored["payload_schema"], expected["payload_schema"], "payload_schema");
    assert_same_points("restored", &want, &points_of(&client, "hybrid").await);

    // A fresh snapshot of it carries the real index schema and restores again.
    let (status, body) = call(&client, Method::POST, "/collections/hybrid/snapshots", None).await;
    assert_eq!(status, 200, "{body}");
    let name = body["result"]["name"].as_str().unwrap().to_string();
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
    assert_eq!(again["config"], expected["config"], "config after the round trip");
    assert_eq!(again["payload_schema"], expected["payload_schema"]);
    assert_same_points("round trip", &want, &points_of(&client, "hybrid2").await);

    // Queries by each kind of vector answer, as Qdrant's would.
    for (using, query) in [
        ("text", json!({"indices": [346, 557], "values": [1.0, 0.5]})),
        ("colbert", json!([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])),
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
        let scores: Vec<f64> = points.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{using}: {scores:?}");
    }
}
