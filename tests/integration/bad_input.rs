//! Bad input gets a clear error in Qdrant's envelope and changes nothing.

use crate::support;

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;
use support::*;

fn error_text(body: &Value) -> String {
    body["status"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error envelope in {body}"))
        .to_string()
}

async fn expect_error(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    words: &str,
) {
    let (got, value) = call(client, method.clone(), path, body).await;
    assert_eq!(got, status, "{method} {path}: {value}");
    let text = error_text(&value);
    assert!(
        text.contains(words),
        "{method} {path}: expected {words:?} in {text:?}"
    );
    assert!(value["time"].is_number(), "envelope has a time: {value}");
}

async fn raw_body(client: &Client, method: &str, path: &str, body: &str) -> (u16, Value) {
    // The client takes JSON values; send a raw string through a minimal HTTP request instead.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(client.socket())
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn collection_level_errors() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(&client, "docs", vectors(4, "Cosine")).await;

    // Creating an existing collection: 409, config untouched.
    expect_error(
        &client,
        Method::PUT,
        "/collections/docs",
        Some(json!({"vectors": {"size": 9, "distance": "Dot"}})),
        409,
        "already exists",
    )
    .await;
    let (_, info) = call(&client, Method::GET, "/collections/docs", None).await;
    assert_eq!(info["result"]["config"]["params"]["vectors"]["size"], 4);

    // Unknown distance, bad sizes, missing vectors: 400, nothing created.
    expect_error(
        &client,
        Method::PUT,
        "/collections/x",
        Some(json!({"vectors": {"size": 4, "distance": "Hamming"}})),
        400,
        "unknown variant `Hamming`",
    )
    .await;
    expect_error(
        &client,
        Method::PUT,
        "/collections/x",
        Some(json!({"vectors": {"size": 0, "distance": "Dot"}})),
        400,
        "between 1 and",
    )
    .await;
    expect_error(
        &client,
        Method::PUT,
        "/collections/x",
        Some(json!({"shard_number": 2})),
        400,
        "`vectors` is required",
    )
    .await;
    expect_error(
        &client,
        Method::PUT,
        "/collections/x",
        Some(json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 0})),
        400,
        "shard_number",
    )
    .await;

    // Invalid names, including encoded traversal.
    for name in [
        "..",
        ".hidden",
        "a%2Fb",
        "%2E%2E%2Fetc",
        "bad%01name",
        &"n".repeat(256),
    ] {
        expect_error(
            &client,
            Method::PUT,
            &format!("/collections/{name}"),
            Some(json!({"vectors": {"size": 4, "distance": "Dot"}})),
            400,
            "Invalid collection name",
        )
        .await;
    }
    let (_, list) = call(&client, Method::GET, "/collections", None).await;
    assert_eq!(
        list["result"]["collections"],
        json!([{"name": "docs"}]),
        "nothing was created"
    );
    let leftovers: Vec<_> = std::fs::read_dir(daemon.data_dir.join("storage/collections"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("docs")],
        "no staging leftovers"
    );

    // Unknown collection: 404 everywhere.
    for (method, path, body) in [
        (Method::GET, "/collections/nope", None),
        (
            Method::PUT,
            "/collections/nope/points",
            Some(json!({"points": [{"id": 1, "vector": [1, 2, 3, 4]}]})),
        ),
        (
            Method::POST,
            "/collections/nope/points/count",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/collections/nope/points/query",
            Some(json!({"query": [1, 2, 3, 4]})),
        ),
    ] {
        expect_error(
            &client,
            method,
            path,
            body,
            404,
            "Collection `nope` not found",
        )
        .await;
    }
    expect_error(
        &client,
        Method::GET,
        "/no/such/path",
        None,
        404,
        "Not found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn point_level_errors_change_nothing() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    create_collection(&client, "docs", sharded_vectors(4, "Cosine", 2)).await;
    upsert_ids(&client, "docs", 0..10, 4).await;
    let before = all_points(&client, "docs").await;

    // Malformed JSON.
    let (status, body) = raw_body(
        &client,
        "PUT",
        "/collections/docs/points?wait=true",
        "{\"points\": [",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error_text(&body).contains("Format error in JSON body"),
        "{body}"
    );

    // Wrong vector size: the whole batch is refused, even its valid points.
    let batch =
        json!({"points": [{"id": 100, "vector": [1, 2, 3, 4]}, {"id": 101, "vector": [1, 2, 3]}]});
    expect_error(
        &client,
        Method::PUT,
        "/collections/docs/points?wait=true",
        Some(batch),
        400,
        "expected dim: 4, got 3",
    )
    .await;
    // Named vector on an unnamed collection.
    expect_error(
        &client,
        Method::PUT,
        "/collections/docs/points?wait=true",
        Some(json!({"points": [{"id": 100, "vector": {"text": [1, 2, 3, 4]}}]})),
        400,
        "Not existing vector name",
    )
    .await;
    // Invalid point ids: negative, fractional, not a UUID.
    for id in [json!(-1), json!(1.5), json!("not-a-uuid")] {
        let (status, body) = call(
            &client,
            Method::PUT,
            "/collections/docs/points?wait=true",
            Some(json!({"points": [{"id": id, "vector": [1, 2, 3, 4]}]})),
        )
        .await;
        assert_eq!(status, 400, "id {id}: {body}");
        assert!(
            error_text(&body).contains("Format error in JSON body"),
            "{body}"
        );
    }
    expect_error(
        &client,
        Method::GET,
        "/collections/docs/points/abc",
        None,
        400,
        "invalid point id",
    )
    .await;
    expect_error(
        &client,
        Method::GET,
        "/collections/docs/points/12345",
        None,
        404,
        "Point 12345 not found",
    )
    .await;
    // Mismatched batch columns.
    expect_error(
        &client,
        Method::PUT,
        "/collections/docs/points?wait=true",
        Some(json!({"batch": {"ids": [1, 2], "vectors": [[1, 2, 3, 4]]}})),
        400,
        "2 ids but 1 vectors",
    )
    .await;
    // Wrong query vector size.
    expect_error(
        &client,
        Method::POST,
        "/collections/docs/points/query",
        Some(json!({"query": [1, 2]})),
        400,
        "expected dim: 4, got 2",
    )
    .await;
    // A field condition with nothing but a key: under `must_not` the engine would
    // match (and delete) every point; refused as Qdrant refuses it.
    for (path, clause) in [("delete?wait=true", "must_not"), ("count", "must")] {
        expect_error(
            &client,
            Method::POST,
            &format!("/collections/docs/points/{path}"),
            Some(json!({"filter": {clause: [{"key": "n"}]}})),
            400,
            "At least one field condition must be specified",
        )
        .await;
    }
    // A page of no points (a scroll following next_page_offset would never end).
    for path in ["scroll", "query"] {
        let body = match path {
            "scroll" => json!({"limit": 0}),
            _ => json!({"query": [1, 2, 3, 4], "limit": 0}),
        };
        expect_error(
            &client,
            Method::POST,
            &format!("/collections/docs/points/{path}"),
            Some(body),
            400,
            "limit must be at least 1",
        )
        .await;
    }

    assert_eq!(
        all_points(&client, "docs").await,
        before,
        "no bad request changed the collection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_refused() {
    let daemon = Daemon::start_with_env(&[("SNAPFS__SERVICE__MAX_REQUEST_SIZE_MB", "1")]);
    let client = daemon.client();
    create_collection(&client, "docs", vectors(256, "Dot")).await;
    // ~2.5 MB of points.
    let points: Vec<Value> = (0..1000).map(|id| point(id, 256)).collect();
    let (status, body) = call(
        &client,
        Method::PUT,
        "/collections/docs/points?wait=true",
        Some(json!({"points": points})),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("max_request_size_mb"), "{body}");
    assert_eq!(count(&client, "docs").await, 0);
    // A body many times the limit still gets its reason, not a reset connection:
    // the daemon reads and drops the rest before it answers.
    let filler = "x".repeat(24 << 20);
    for _ in 0..3 {
        let (status, body) = call(
            &client,
            Method::PUT,
            "/collections/docs/points?wait=true",
            Some(json!({"points": [], "filler": filler})),
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert!(error_text(&body).contains("max_request_size_mb"), "{body}");
    }
    assert_eq!(count(&client, "docs").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_listener_requires_the_api_key() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(
        dir.path(),
        &["--http", &addr],
        &[("SNAPFS_API_KEY", "s3cret")],
    );
    assert!(
        !daemon.log().contains("s3cret"),
        "the key never reaches the log"
    );

    let http = |key: Option<&'static str>| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let header = key.map(|k| format!("api-key: {k}\r\n")).unwrap_or_default();
            stream
                .write_all(
                    format!(
                        "GET /collections HTTP/1.1\r\nhost: x\r\n{header}connection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            let status: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
            (status, response)
        }
    };
    let (status, body) = http(None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Must provide an API key"));
    let (status, body) = http(Some("wrong")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Invalid API key"));
    let (status, body) = http(Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    // The Unix socket needs no key.
    assert_answers(&daemon.client()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_without_a_key_or_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut no_key = Daemon::spawn(dir.path(), &["--http", "127.0.0.1:1"], &[]);
    assert!(!no_key.wait_exit().success());
    assert!(
        no_key.log().contains("needs an API key"),
        "{}",
        no_key.log()
    );
    let mut remote = Daemon::spawn(dir.path(), &["--http", "0.0.0.0:1", "--api-key", "k"], &[]);
    assert!(!remote.wait_exit().success());
    assert!(
        remote.log().contains("not a loopback address"),
        "{}",
        remote.log()
    );
}
