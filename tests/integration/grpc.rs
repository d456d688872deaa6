//! Qdrant's gRPC API on `--grpc`: the official Python `qdrant-client` (from PyPI,
//! `prefer_grpc=True`) and a Rust tonic client built from snapfs's own definitions
//! drive collections, points and snapshots; bad input is refused with the right
//! status and changes nothing; a snapshot made over gRPC downloads over REST and
//! restores through the mount.

use crate::support;
use crate::support::moto;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use sha2::Digest;
use snapfs::grpc::proto::{
    self, collections_client::CollectionsClient, points_client::PointsClient,
    qdrant_client::QdrantClient, snapshots_client::SnapshotsClient,
};
use support::*;
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const KEY: &str = "grpc-key";

// ---- the official Python client ----

/// The newest qdrant-client whose version rule (same major, minor within one)
/// accepts the Qdrant API version snapfs speaks (1.18.3), so its compatibility check
/// passes without a warning, as it does against Qdrant 1.18.3 itself.
const PYTHON_CLIENT: &str = "qdrant-client==1.19.1";

fn grpc_venv() -> PathBuf {
    venv(
        "py-venv-grpc",
        "import grpc, importlib.metadata as m; assert m.version('qdrant-client') == '1.19.1'",
        &[PYTHON_CLIENT],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_client_over_grpc_and_its_snapshot_restores_through_the_mount() {
    let python = grpc_venv();
    let (http, grpc) = (free_port(), free_port());
    let m = MountedDaemon::start(&[
        "--http",
        &format!("127.0.0.1:{http}"),
        "--grpc",
        &format!("127.0.0.1:{grpc}"),
        "--api-key",
        KEY,
    ]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("kept.json");
    let (http_port, grpc_port) = (http.to_string(), grpc.to_string());
    python_check(
        &python,
        "qdrant_client_grpc_check.py",
        &[
            ("SNAPFS_HTTP_PORT", http_port.as_ref()),
            ("SNAPFS_GRPC_PORT", grpc_port.as_ref()),
            ("SNAPFS_API_KEY", KEY.as_ref()),
            ("SNAPFS_OUT", out.as_ref()),
        ],
        "qdrant-client over gRPC: all checks passed",
        &m.daemon,
    );

    let kept: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let collection = kept["collection"].as_str().unwrap();
    let name = kept["snapshot"].as_str().unwrap();
    let expected = kept["points"].as_object().unwrap();
    let client = m.client();

    // The snapshot made over gRPC is an ordinary stored snapshot: REST lists and
    // downloads it, and its bytes have the checksum gRPC reported.
    let (status, listed) = call(
        &client,
        Method::GET,
        &format!("/collections/{collection}/snapshots"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["result"][0]["name"], name, "{listed}");
    let bytes = fetch(
        &client,
        &format!("/collections/{collection}/snapshots/{name}"),
    )
    .await;
    assert_eq!(
        format!("{:x}", sha2::Sha256::digest(&bytes)),
        kept["checksum"].as_str().unwrap()
    );

    // Written into the mount's recover/, it becomes a collection holding exactly the
    // points the snapshot was taken with (not the one upserted after it).
    std::fs::write(m.path("recover/restored.snapshot"), &bytes).unwrap();
    let restored = all_points(&client, "restored").await;
    assert_eq!(restored.len(), expected.len());
    for point in &restored {
        let id = point["id"].to_string();
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("point {id} was not in the snapshot"));
        assert_eq!(point["payload"], want["payload"], "payload of {id}");
        for (vector, values) in want["vector"].as_object().unwrap() {
            assert_same_vector(
                &point["vector"][vector],
                values,
                &format!("{vector} of {id}"),
            );
        }
    }
    assert_eq!(count(&client, collection).await, expected.len() as u64 + 1);
}

/// Vectors (dense lists or sparse `{indices, values}`) equal up to float printing.
fn assert_same_vector(got: &Value, want: &Value, what: &str) {
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap_or_else(|| panic!("{what}: {v}"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let close = |a: Vec<f64>, b: Vec<f64>| {
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0))
    };
    if want.is_object() {
        assert_eq!(got["indices"], want["indices"], "{what}");
        assert!(
            close(numbers(&got["values"]), numbers(&want["values"])),
            "{what}: {got} vs {want}"
        );
    } else {
        assert!(
            close(numbers(got), numbers(want)),
            "{what}: {got} vs {want}"
        );
    }
}

// ---- a Rust client from our own definitions ----

/// Adds the API key to every call (as `api-key` metadata, or as a bearer token).
#[derive(Clone)]
struct Key(Option<(&'static str, String)>);

impl Interceptor for Key {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((header, value)) = &self.0 {
            request
                .metadata_mut()
                .insert(*header, value.parse().unwrap());
        }
        Ok(request)
    }
}

fn api_key(key: &str) -> Key {
    Key(Some(("api-key", key.to_string())))
}

type Keyed = InterceptedService<Channel, Key>;

struct Clients {
    qdrant: QdrantClient<Keyed>,
    collections: CollectionsClient<Keyed>,
    points: PointsClient<Keyed>,
    snapshots: SnapshotsClient<Keyed>,
}

async fn connect(port: u16, key: Key) -> Clients {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC listener accepts connections");
    Clients {
        qdrant: QdrantClient::with_interceptor(channel.clone(), key.clone()),
        collections: CollectionsClient::with_interceptor(channel.clone(), key.clone()),
        points: PointsClient::with_interceptor(channel.clone(), key.clone()),
        snapshots: SnapshotsClient::with_interceptor(channel, key),
    }
}

fn grpc_daemon() -> (Daemon, u16) {
    let port = free_port();
    let daemon = Daemon::start(&["--grpc", &format!("127.0.0.1:{port}"), "--api-key", KEY]);
    (daemon, port)
}

fn id(n: u64) -> proto::PointId {
    proto::PointId {
        point_id_options: Some(proto::point_id::PointIdOptions::Num(n)),
    }
}

fn dense(data: Vec<f32>) -> proto::Vector {
    proto::Vector {
        vector: Some(proto::vector::Vector::Dense(proto::DenseVector { data })),
        ..Default::default()
    }
}

fn named(vectors: &[(&str, Vec<f32>)]) -> Option<proto::Vectors> {
    Some(proto::Vectors {
        vectors_options: Some(proto::vectors::VectorsOptions::Vectors(
            proto::NamedVectors {
                vectors: vectors
                    .iter()
                    .map(|(n, v)| (n.to_string(), dense(v.clone())))
                    .collect(),
            },
        )),
    })
}

fn text(s: &str) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::StringValue(s.to_string())),
    }
}

fn integer(i: i64) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::IntegerValue(i)),
    }
}

fn vector_a(i: u64) -> Vec<f32> {
    (0..4)
        .map(|k| ((i + 1) as f32 * (k + 1) as f32).sin())
        .collect()
}

fn vector_b(i: u64) -> Vec<f32> {
    (0..3)
        .map(|k| ((i + 2) as f32 * (k + 3) as f32).cos())
        .collect()
}

fn points(range: std::ops::Range<u64>) -> Vec<proto::PointStruct> {
    range
        .map(|i| proto::PointStruct {
            id: Some(id(i)),
            payload: HashMap::from([
                ("n".to_string(), integer(i as i64)),
                (
                    "kind".to_string(),
                    text(if i % 2 == 0 { "even" } else { "odd" }),
                ),
            ]),
            vectors: named(&[("a", vector_a(i)), ("b", vector_b(i))]),
        })
        .collect()
}

fn keyword(key: &str, value: &str) -> proto::Filter {
    proto::Filter {
        must: vec![proto::Condition {
            condition_one_of: Some(proto::condition::ConditionOneOf::Field(
                proto::FieldCondition {
                    key: key.into(),
                    r#match: Some(proto::Match {
                        match_value: Some(proto::r#match::MatchValue::Keyword(value.into())),
                    }),
                    ..Default::default()
                },
            )),
        }],
        ..Default::default()
    }
}

/// Create collection `name` with `shards` shards holding points `ids` (wait=true).
async fn seed(c: &mut Clients, name: &str, shards: u32, ids: std::ops::Range<u64>) {
    c.collections
        .create(create_request(name, shards))
        .await
        .unwrap();
    c.points
        .upsert(upsert_wait(name, points(ids)))
        .await
        .unwrap();
}

/// Upsert `points` into `collection`, waiting for them.
fn upsert_wait(collection: &str, points: Vec<proto::PointStruct>) -> proto::UpsertPoints {
    proto::UpsertPoints {
        collection_name: collection.into(),
        wait: Some(true),
        points,
        ..Default::default()
    }
}

fn create_request(name: &str, shards: u32) -> proto::CreateCollection {
    let params = |size, distance: proto::Distance| proto::VectorParams {
        size,
        distance: distance as i32,
        ..Default::default()
    };
    proto::CreateCollection {
        collection_name: name.into(),
        vectors_config: Some(proto::VectorsConfig {
            config: Some(proto::vectors_config::Config::ParamsMap(
                proto::VectorParamsMap {
                    map: HashMap::from([
                        ("a".to_string(), params(4, proto::Distance::Cosine)),
                        ("b".to_string(), params(3, proto::Distance::Euclid)),
                    ]),
                },
            )),
        }),
        shard_number: Some(shards),
        ..Default::default()
    }
}

fn with_all() -> (
    Option<proto::WithPayloadSelector>,
    Option<proto::WithVectorsSelector>,
) {
    (
        Some(proto::WithPayloadSelector {
            selector_options: Some(proto::with_payload_selector::SelectorOptions::Enable(true)),
        }),
        Some(proto::WithVectorsSelector {
            selector_options: Some(proto::with_vectors_selector::SelectorOptions::Enable(true)),
        }),
    )
}

async fn count_of(c: &mut Clients, collection: &str) -> u64 {
    c.points
        .count(proto::CountPoints {
            collection_name: collection.into(),
            exact: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
        .count
}

fn num(point_id: &Option<proto::PointId>) -> u64 {
    match point_id.as_ref().and_then(|p| p.point_id_options.clone()) {
        Some(proto::point_id::PointIdOptions::Num(n)) => n,
        other => panic!("a numeric id, got {other:?}"),
    }
}

fn dense_out(vectors: &Option<proto::VectorsOutput>, name: &str) -> Vec<f32> {
    let Some(proto::vectors_output::VectorsOptions::Vectors(named)) =
        vectors.as_ref().and_then(|v| v.vectors_options.clone())
    else {
        panic!("named vectors, got {vectors:?}")
    };
    match &named.vectors[name].vector {
        Some(proto::vector_output::Vector::Dense(d)) => d.data.clone(),
        other => panic!("a dense vector, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_client_serves_collections_points_and_snapshots() {
    let (mut daemon, port) = grpc_daemon();
    let mut c = connect(port, api_key(KEY)).await;

    let health = c
        .qdrant
        .health_check(proto::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.title.starts_with("snapfs"), "{health:?}");
    assert_eq!(health.version, snapfs::service::QDRANT_API_VERSION);

    for (name, shards) in [("one", 1), ("three", 3)] {
        let created = c
            .collections
            .create(create_request(name, shards))
            .await
            .unwrap();
        assert!(created.into_inner().result);
        let exists = c
            .collections
            .collection_exists(proto::CollectionExistsRequest {
                collection_name: name.into(),
            })
            .await
            .unwrap();
        assert!(exists.into_inner().result.unwrap().exists);

        let upserted = c
            .points
            .upsert(upsert_wait(name, points(0..30)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            upserted.result.unwrap().status,
            proto::UpdateStatus::Completed as i32
        );

        let info = c
            .collections
            .get(proto::GetCollectionInfoRequest {
                collection_name: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap();
        assert_eq!(info.points_count, Some(30));
        let params = info.config.unwrap().params.unwrap();
        assert_eq!(params.shard_number, shards);
        let Some(proto::vectors_config::Config::ParamsMap(map)) =
            params.vectors_config.unwrap().config
        else {
            panic!("named vectors")
        };
        assert_eq!(map.map["a"].size, 4);
        assert_eq!(map.map["b"].distance, proto::Distance::Euclid as i32);

        assert_eq!(count_of(&mut c, name).await, 30);
        let even = c
            .points
            .count(proto::CountPoints {
                collection_name: name.into(),
                filter: Some(keyword("kind", "even")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(even.result.unwrap().count, 15);

        let (with_payload, with_vectors) = with_all();
        let got = c
            .points
            .get(proto::GetPoints {
                collection_name: name.into(),
                ids: vec![id(4), id(17)],
                with_payload,
                with_vectors,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .result;
        let mut ids: Vec<u64> = got.iter().map(|p| num(&p.id)).collect();
        ids.sort();
        assert_eq!(ids, [4, 17]);
        for p in &got {
            let i = num(&p.id);
            assert_eq!(p.payload["n"], integer(i as i64));
            assert_eq!(
                dense_out(&p.vectors, "b"),
                vector_b(i),
                "Euclid vectors are kept as given"
            );
        }

        let mut seen = Vec::new();
        let mut offset = None;
        loop {
            let page = c
                .points
                .scroll(proto::ScrollPoints {
                    collection_name: name.into(),
                    offset,
                    limit: Some(7),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.result.iter().map(|p| num(&p.id)));
            assert!(
                page.result
                    .iter()
                    .all(|p| p.vectors.is_none() && !p.payload.is_empty())
            );
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());

        let query = |target: proto::vector_input::Variant, using: &str| proto::QueryPoints {
            collection_name: name.into(),
            query: Some(proto::Query {
                variant: Some(proto::query::Variant::Nearest(proto::VectorInput {
                    variant: Some(target),
                })),
            }),
            using: Some(using.into()),
            limit: Some(3),
            ..Default::default()
        };
        let near = c
            .points
            .query(query(
                proto::vector_input::Variant::Dense(proto::DenseVector { data: vector_a(9) }),
                "a",
            ))
            .await
            .unwrap()
            .into_inner()
            .result;
        assert_eq!(num(&near[0].id), 9);
        assert!((near[0].score - 1.0).abs() < 1e-4, "{near:?}");
        assert!(
            near[0].payload.is_empty(),
            "queries return no payload unless asked"
        );
        let by_id = c
            .points
            .query(query(proto::vector_input::Variant::Id(id(9)), "a"))
            .await
            .unwrap()
            .into_inner()
            .result;
        assert_eq!(by_id.len(), 3);
        assert!(by_id.iter().all(|p| num(&p.id) != 9), "{by_id:?}");

        let searched = c
            .points
            .search(proto::SearchPoints {
                collection_name: name.into(),
                vector: vector_b(12),
                vector_name: Some("b".into()),
                limit: 2,
                filter: Some(keyword("kind", "even")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .result;
        assert_eq!(num(&searched[0].id), 12);
        assert!(
            searched[0].score.abs() < 1e-5,
            "Euclid distance to itself: {searched:?}"
        );
        assert!(searched.iter().all(|p| num(&p.id).is_multiple_of(2)));

        let deleted = c
            .points
            .delete(proto::DeletePoints {
                collection_name: name.into(),
                wait: Some(true),
                points: Some(proto::PointsSelector {
                    points_selector_one_of: Some(
                        proto::points_selector::PointsSelectorOneOf::Filter(keyword("kind", "odd")),
                    ),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            deleted.result.unwrap().status,
            proto::UpdateStatus::Completed as i32
        );
        assert_eq!(count_of(&mut c, name).await, 15);
    }
    let listed = c
        .collections
        .list(proto::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = listed.collections.into_iter().map(|d| d.name).collect();
    names.sort();
    assert_eq!(names, ["one", "three"]);

    // Collection snapshots: created (answered when done), listed, deleted; the same
    // store REST uses.
    let made = c
        .snapshots
        .create(proto::CreateSnapshotRequest {
            collection_name: "three".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    assert!(made.name.starts_with("three-") && made.size > 0, "{made:?}");
    assert_eq!(made.checksum.as_deref().map(str::len), Some(64));
    assert!(made.creation_time.is_some());
    let stored = daemon.data_dir.join("snapshots/three").join(&made.name);
    assert_eq!(std::fs::metadata(&stored).unwrap().len() as i64, made.size);
    let (_, rest_list) = call(
        &daemon.client(),
        Method::GET,
        "/collections/three/snapshots",
        None,
    )
    .await;
    assert_eq!(rest_list["result"][0]["name"], made.name.as_str());
    let listed = c
        .snapshots
        .list(proto::ListSnapshotsRequest {
            collection_name: "three".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_descriptions;
    assert_eq!(listed, vec![made.clone()]);
    c.snapshots
        .delete(proto::DeleteSnapshotRequest {
            collection_name: "three".into(),
            snapshot_name: made.name.clone(),
        })
        .await
        .unwrap();
    assert!(!stored.exists());
    let empty = c
        .snapshots
        .list(proto::ListSnapshotsRequest {
            collection_name: "three".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.snapshot_descriptions.is_empty());

    // Full-storage snapshots the same way.
    let full = c
        .snapshots
        .create_full(proto::CreateFullSnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    assert!(full.name.starts_with("full-snapshot-"), "{full:?}");
    let listed = c
        .snapshots
        .list_full(proto::ListFullSnapshotsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.snapshot_descriptions, vec![full.clone()]);
    c.snapshots
        .delete_full(proto::DeleteFullSnapshotRequest {
            snapshot_name: full.name.clone(),
        })
        .await
        .unwrap();
    assert!(!daemon.data_dir.join("snapshots").join(&full.name).exists());

    // Delete: true once, false when there is nothing to delete.
    for expected in [true, false] {
        let deleted = c
            .collections
            .delete(proto::DeleteCollection {
                collection_name: "one".into(),
                timeout: None,
            })
            .await
            .unwrap();
        assert_eq!(deleted.into_inner().result, expected);
    }

    // The listener takes part in the bounded stop: SIGTERM with a client connected
    // exits cleanly and promptly.
    let started = Instant::now();
    assert!(daemon.stop().success(), "log:\n{}", daemon.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stop took {:?}",
        started.elapsed()
    );
}

// ---- snapshots stored in S3 ----

#[tokio::test(flavor = "multi_thread")]
async fn grpc_snapshots_go_where_rest_puts_them_in_s3_too() {
    let s3 = moto::Moto::start();
    s3.create_bucket("snaps");
    let port = free_port();
    let endpoint = s3.endpoint();
    let env = [
        ("SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "s3"),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET",
            "snaps",
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__REGION",
            moto::REGION,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL",
            endpoint.as_str(),
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY",
            moto::ACCESS,
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY",
            moto::SECRET,
        ),
        ("AWS_PROFILE", "none"),
        ("SNAPFS_API_KEY", KEY),
    ];
    let temp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(temp.path(), &["--grpc", &format!("127.0.0.1:{port}")], &env);
    let mut c = connect(port, api_key(KEY)).await;
    seed(&mut c, "docs", 2, 0..20).await;

    let made = c
        .snapshots
        .create(proto::CreateSnapshotRequest {
            collection_name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    let key = format!("docs/{}", made.name);
    assert!(
        s3.keys("snaps").contains(&key),
        "{key} not in {:?}",
        s3.keys("snaps")
    );
    let object = s3.get("snaps", &key);
    assert_eq!(object.len() as i64, made.size);
    assert_eq!(
        Some(format!("{:x}", sha2::Sha256::digest(&object))),
        made.checksum
    );
    assert!(
        !daemon
            .data_dir
            .join("snapshots/docs")
            .join(&made.name)
            .exists()
    );
    let listed = c
        .snapshots
        .list(proto::ListSnapshotsRequest {
            collection_name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_descriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        (made.name.as_str(), made.size)
    );
    assert_eq!(listed[0].checksum, made.checksum);
    c.snapshots
        .delete(proto::DeleteSnapshotRequest {
            collection_name: "docs".into(),
            snapshot_name: made.name.clone(),
        })
        .await
        .unwrap();
    assert!(
        !s3.keys("snaps").iter().any(|k| k.starts_with(&key)),
        "{:?}",
        s3.keys("snaps")
    );

    let full = c
        .snapshots
        .create_full(proto::CreateFullSnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    assert!(
        s3.keys("snaps").contains(&full.name),
        "{:?}",
        s3.keys("snaps")
    );
    let listed = c
        .snapshots
        .list_full(proto::ListFullSnapshotsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.snapshot_descriptions.len(), 1);
    c.snapshots
        .delete_full(proto::DeleteFullSnapshotRequest {
            snapshot_name: full.name.clone(),
        })
        .await
        .unwrap();
    assert!(s3.keys("snaps").is_empty(), "{:?}", s3.keys("snaps"));
    assert_refused(
        c.snapshots
            .delete_full(proto::DeleteFullSnapshotRequest {
                snapshot_name: full.name,
            })
            .await,
        Code::NotFound,
        "a deleted S3 snapshot",
    );
}

// ---- bad input ----

fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    what: &str,
) -> String {
    match result {
        Ok(answer) => panic!("{what}: expected {code:?}, got {answer:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            status.message().to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_over_grpc_is_refused_with_its_code_and_changes_nothing() {
    let (daemon, port) = grpc_daemon();
    let mut c = connect(port, api_key(KEY)).await;
    seed(&mut c, "kept", 2, 0..10).await;
    let snapshots_dir = daemon.data_dir.join("snapshots");
    let state = |daemon: &Daemon| {
        let mut names: Vec<_> = std::fs::read_dir(daemon.data_dir.join("storage/collections"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let collections_before = state(&daemon);
    assert_eq!(collections_before, ["kept"]);

    // An unknown collection: NOT_FOUND, with REST's words; nothing is created.
    let missing = "no_such";
    let msg = assert_refused(
        c.collections
            .get(proto::GetCollectionInfoRequest {
                collection_name: missing.into(),
            })
            .await,
        Code::NotFound,
        "get",
    );
    assert_eq!(msg, "Collection `no_such` not found");
    assert_refused(
        c.points
            .count(proto::CountPoints {
                collection_name: missing.into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "count",
    );
    assert_refused(
        c.points
            .upsert(proto::UpsertPoints {
                collection_name: missing.into(),
                points: points(0..1),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "upsert",
    );
    assert_refused(
        c.snapshots
            .create(proto::CreateSnapshotRequest {
                collection_name: missing.into(),
            })
            .await,
        Code::NotFound,
        "snapshot create",
    );
    assert_refused(
        c.snapshots
            .delete(proto::DeleteSnapshotRequest {
                collection_name: "kept".into(),
                snapshot_name: "kept-none.snapshot".into(),
            })
            .await,
        Code::NotFound,
        "snapshot delete",
    );
    assert_eq!(state(&daemon), collections_before);
    assert!(!snapshots_dir.join(missing).exists());

    // A vector of the wrong size: INVALID_ARGUMENT, and no point of the batch lands.
    let mut batch = points(100..103);
    batch[1].vectors = named(&[("a", vec![0.5; 5]), ("b", vector_b(101))]);
    let msg = assert_refused(
        c.points.upsert(upsert_wait("kept", batch)).await,
        Code::InvalidArgument,
        "wrong vector size",
    );
    assert!(msg.contains('5') && msg.contains('4'), "{msg}");
    assert_eq!(count_of(&mut c, "kept").await, 10);
    let query = proto::QueryPoints {
        collection_name: "kept".into(),
        query: Some(proto::Query {
            variant: Some(proto::query::Variant::Nearest(proto::VectorInput {
                variant: Some(proto::vector_input::Variant::Dense(proto::DenseVector {
                    data: vec![0.1; 7],
                })),
            })),
        }),
        using: Some("a".into()),
        ..Default::default()
    };
    assert_refused(
        c.points.query(query.clone()).await,
        Code::InvalidArgument,
        "wrong query size",
    );

    // Input Qdrant refuses and the engine would misread: INVALID_ARGUMENT, nothing
    // changes (a condition with only a key under `must_not` would match every point).
    let mut hollow = points(200..201);
    hollow[0].vectors = Some(proto::Vectors {
        vectors_options: Some(proto::vectors::VectorsOptions::Vectors(
            proto::NamedVectors {
                vectors: [(
                    "a".to_string(),
                    proto::Vector {
                        vectors_count: Some(2),
                        ..Default::default()
                    },
                )]
                .into(),
            },
        )),
    });
    let mut vectorless = points(201..202);
    vectorless[0].vectors = None;
    for (batch, what) in [(hollow, "an empty multivector"), (vectorless, "no vectors")] {
        assert_refused(
            c.points.upsert(upsert_wait("kept", batch)).await,
            Code::InvalidArgument,
            what,
        );
    }
    let condition = |one_of| proto::Condition {
        condition_one_of: Some(one_of),
    };
    let key_only = condition(proto::condition::ConditionOneOf::Field(
        proto::FieldCondition {
            key: "n".into(),
            ..Default::default()
        },
    ));
    let msg = assert_refused(
        c.points
            .delete(proto::DeletePoints {
                collection_name: "kept".into(),
                wait: Some(true),
                points: Some(proto::PointsSelector {
                    points_selector_one_of: Some(
                        proto::points_selector::PointsSelectorOneOf::Filter(proto::Filter {
                            must_not: vec![key_only],
                            ..Default::default()
                        }),
                    ),
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "a field condition with only a key",
    );
    assert!(msg.contains("At least one field condition"), "{msg}");
    let nested_without_filter = condition(proto::condition::ConditionOneOf::Nested(
        proto::NestedCondition {
            key: "n".into(),
            filter: None,
        },
    ));
    let msg = assert_refused(
        c.points
            .count(proto::CountPoints {
                collection_name: "kept".into(),
                filter: Some(proto::Filter {
                    must: vec![nested_without_filter],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "a nested condition without a filter",
    );
    assert!(msg.contains("a nested condition needs a filter"), "{msg}");
    assert_refused(
        c.points
            .scroll(proto::ScrollPoints {
                collection_name: "kept".into(),
                limit: Some(0),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "scroll of no points",
    );
    assert_eq!(count_of(&mut c, "kept").await, 10);

    // gzip-compressed calls and answers, as qdrant-client's `grpc_compression` sends.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gzip = PointsClient::with_interceptor(channel, api_key(KEY))
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let counted = gzip
        .count(proto::CountPoints {
            collection_name: "kept".into(),
            ..Default::default()
        })
        .await
        .expect("a gzip call is served");
    // The answer comes back compressed too.
    assert_eq!(
        counted
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "{:?}",
        counted.metadata()
    );
    assert_eq!(counted.into_inner().result.unwrap().count, 10);

    // Invalid names: INVALID_ARGUMENT; an existing name: ALREADY_EXISTS, config kept.
    for bad in ["bad/name", "..", ""] {
        assert_refused(
            c.collections.create(create_request(bad, 1)).await,
            Code::InvalidArgument,
            &format!("name {bad:?}"),
        );
    }
    assert_refused(
        c.collections.create(create_request("kept", 5)).await,
        Code::AlreadyExists,
        "existing name",
    );
    let info = c
        .collections
        .get(proto::GetCollectionInfoRequest {
            collection_name: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.result
            .unwrap()
            .config
            .unwrap()
            .params
            .unwrap()
            .shard_number,
        2
    );
    assert_eq!(state(&daemon), collections_before);

    // What snapfs does not serve is refused, never ignored.
    let refused_upserts = [
        (
            "shard keys",
            proto::UpsertPoints {
                shard_key_selector: Some(vec![10, 0]),
                ..Default::default()
            },
        ),
        (
            "update filter",
            proto::UpsertPoints {
                update_filter: Some(vec![]),
                ..Default::default()
            },
        ),
        (
            "insert-only",
            proto::UpsertPoints {
                update_mode: Some(proto::UpdateMode::InsertOnly as i32),
                ..Default::default()
            },
        ),
    ];
    for (what, refused) in refused_upserts {
        let request = proto::UpsertPoints {
            collection_name: "kept".into(),
            wait: Some(true),
            points: points(200..201),
            ..refused
        };
        assert_refused(c.points.upsert(request).await, Code::InvalidArgument, what);
    }
    let recommend = proto::QueryPoints {
        query: Some(proto::Query {
            variant: Some(proto::query::Variant::Recommend(vec![])),
        }),
        ..query.clone()
    };
    let msg = assert_refused(
        c.points.query(recommend).await,
        Code::InvalidArgument,
        "recommend",
    );
    assert!(msg.contains("recommend"), "{msg}");
    // A query that is right but for its prefetch (the one above has a wrong size).
    let mut prefetch = query;
    prefetch.prefetch = vec![vec![]];
    if let Some(proto::Query {
        variant: Some(proto::query::Variant::Nearest(input)),
    }) = &mut prefetch.query
    {
        input.variant = Some(proto::vector_input::Variant::Dense(proto::DenseVector {
            data: vector_a(1),
        }));
    }
    let msg = assert_refused(
        c.points.query(prefetch).await,
        Code::InvalidArgument,
        "prefetch",
    );
    assert!(msg.contains("prefetch"), "{msg}");
    assert_refused(
        c.points
            .scroll(proto::ScrollPoints {
                collection_name: "kept".into(),
                order_by: Some(vec![10, 1, b'n']),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "order_by",
    );
    let strict = proto::CreateCollection {
        strict_mode_config: Some(vec![8, 1]),
        ..create_request("strict", 1)
    };
    assert_refused(
        c.collections.create(strict).await,
        Code::InvalidArgument,
        "strict mode",
    );
    assert_eq!(count_of(&mut c, "kept").await, 10);
    assert_eq!(state(&daemon), collections_before);

    // A field our definitions do not have (a newer client's): refused by name.
    let msg = assert_refused(
        raw_count_with_unknown_field(port, "kept").await,
        Code::InvalidArgument,
        "unknown field",
    );
    assert!(msg.contains("field 30 of CountPoints"), "{msg}");

    // A method snapfs does not serve: UNIMPLEMENTED.
    let mut grpc = tonic::client::Grpc::new(
        Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(proto::CountPoints::default());
    request
        .metadata_mut()
        .insert("api-key", KEY.parse().unwrap());
    let unserved: Result<tonic::Response<proto::CountResponse>, _> = grpc
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static("/qdrant.Points/SetPayload"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_refused(unserved, Code::Unimplemented, "SetPayload");

    // The API key: missing → UNAUTHENTICATED, wrong → PERMISSION_DENIED, for every
    // method but the health check (open, as in Qdrant); nothing changes. A bearer
    // token also works.
    let mut anonymous = connect(port, Key(None)).await;
    let health = anonymous
        .qdrant
        .health_check(proto::HealthCheckRequest {})
        .await
        .expect("the health check needs no key")
        .into_inner();
    assert_eq!(health.version, snapfs::service::QDRANT_API_VERSION);
    let msg = assert_refused(
        anonymous
            .collections
            .list(proto::ListCollectionsRequest {})
            .await,
        Code::Unauthenticated,
        "list without a key",
    );
    assert!(msg.contains("api-key"), "{msg}");
    assert_refused(
        anonymous
            .points
            .upsert(upsert_wait("kept", points(300..301)))
            .await,
        Code::Unauthenticated,
        "upsert without a key",
    );
    let mut wrong = connect(port, api_key("not-the-key")).await;
    assert_refused(
        wrong
            .collections
            .create(create_request("intruder", 1))
            .await,
        Code::PermissionDenied,
        "create with a wrong key",
    );
    assert_refused(
        wrong
            .collections
            .delete(proto::DeleteCollection {
                collection_name: "kept".into(),
                timeout: None,
            })
            .await,
        Code::PermissionDenied,
        "delete with a wrong key",
    );
    assert_refused(
        wrong
            .snapshots
            .create_full(proto::CreateFullSnapshotRequest {})
            .await,
        Code::PermissionDenied,
        "full snapshot with a wrong key",
    );
    let mut bearer = connect(port, Key(Some(("authorization", format!("Bearer {KEY}"))))).await;
    assert_eq!(count_of(&mut bearer, "kept").await, 10);
    assert_eq!(state(&daemon), collections_before);
    assert_eq!(
        std::fs::read_dir(&snapshots_dir)
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no snapshot was made"
    );
}

/// `CountPoints` as a newer client might send it: with a field 30 snapfs's
/// definitions do not have.
#[derive(Clone, PartialEq, prost::Message)]
struct CountPointsWithMore {
    #[prost(string, tag = "1")]
    collection_name: String,
    #[prost(uint64, tag = "30")]
    from_the_future: u64,
}

async fn raw_count_with_unknown_field(
    port: u16,
    collection: &str,
) -> Result<tonic::Response<proto::CountResponse>, tonic::Status> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(CountPointsWithMore {
        collection_name: collection.into(),
        from_the_future: 7,
    });
    request
        .metadata_mut()
        .insert("api-key", KEY.parse().unwrap());
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static("/qdrant.Points/Count"),
        tonic_prost::ProstCodec::default(),
    )
    .await
}

// ---- hostile clients on the TCP listeners ----

/// A message given as its bytes on the wire: an attack's body, whatever its fields.
#[derive(Debug, Default, Clone)]
struct Raw(bytes::Bytes);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = bytes::Bytes::new();
    }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC listener accepts connections")
}

/// Call `method` with `body` as its message, gzip-compressed or not, with the key or
/// without.
async fn raw_call(
    channel: Channel,
    method: &'static str,
    body: bytes::Bytes,
    key: Option<&str>,
    gzip: bool,
) -> Result<tonic::Response<Raw>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Raw(body));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("api-key", key.parse().unwrap());
    }
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(method),
        tonic_prost::ProstCodec::<Raw, Raw>::default(),
    )
    .await
}

/// A `/proc/<pid>/status` figure in KiB (`VmHWM:` is the peak resident size).
fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_bomb_without_a_key_costs_little_and_gets_a_short_refusal() {
    use prost::Message as _;
    let (daemon, port) = grpc_daemon();
    let mut c = connect(port, api_key(KEY)).await;
    seed(&mut c, "kept", 1, 0..10).await;
    let pid = daemon.pid();
    let peak_before = proc_status_kib(pid, "VmHWM:");
    let short = |status: &tonic::Status| {
        assert!(
            status.message().len() < 1024,
            "a short answer, not {} bytes: {:.300}",
            status.message().len(),
            status.message()
        );
    };

    // 32 MiB (the message limit) of `08 00`: field 1 = 0, over and over; about
    // 32 KiB gzipped. Sent twice at once on one connection, without a key, to the
    // open health check, whose request is empty.
    let bomb = bytes::Bytes::from([8u8, 0].repeat(16 * 1024 * 1024));
    let grpc = channel(port).await;
    let calls = (0..2).map(|_| {
        raw_call(
            grpc.clone(),
            "/qdrant.Qdrant/HealthCheck",
            bomb.clone(),
            None,
            true,
        )
    });
    for result in futures_util::future::join_all(calls).await {
        let status = result.expect_err("the bomb is refused");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("limit"), "{}", status.message());
        short(&status);
    }

    // The same to a method that needs the key: refused before its body is read.
    let status = raw_call(grpc.clone(), "/qdrant.Points/Count", bomb, None, true)
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    short(&status);

    // With the key, a Count of millions of unknown fields (field 30 = 0, up to the
    // limit): refused, naming the field once and counting the rest.
    let mut count = proto::CountPoints {
        collection_name: "kept".into(),
        ..Default::default()
    }
    .encode_to_vec();
    while count.len() + 3 <= 32 * 1024 * 1024 {
        count.extend_from_slice(&[0xf0, 0x01, 0x00]);
    }
    let count = bytes::Bytes::from(count);
    for gzip in [true, false] {
        let status = raw_call(
            grpc.clone(),
            "/qdrant.Points/Count",
            count.clone(),
            Some(KEY),
            gzip,
        )
        .await
        .expect_err("unknown fields are refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("field 30 of CountPoints")
                && status.message().contains("unknown fields in all"),
            "{:.300}",
            status.message()
        );
        short(&status);
    }

    let grown = proc_status_kib(pid, "VmHWM:").saturating_sub(peak_before);
    assert!(
        grown < 300 * 1024,
        "the daemon's peak RSS grew by {} MiB",
        grown / 1024
    );
    // Alive and unchanged.
    let health = c
        .qdrant
        .health_check(proto::HealthCheckRequest {})
        .await
        .expect("the health check answers");
    assert!(health.into_inner().title.starts_with("snapfs"));
    assert_eq!(count_of(&mut c, "kept").await, 10);
    assert_answers(&daemon.client()).await;
    daemon.assert_no_staging_leftovers();
}

/// One HTTP/1.1 request on `stream` (kept open); the status and body, or `None`
/// when the server closed the connection instead of answering.
fn http1_exchange(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let key = key.map(|k| format!("api-key: {k}\r\n")).unwrap_or_default();
    let request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{key}content-length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while received.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    Some((
        status,
        String::from_utf8_lossy(&received[head_end..head_end + length]).to_string(),
    ))
}

fn tcp_connect(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Whether the server has closed `stream` (end of file or reset), without waiting.
/// What it sent meanwhile (an HTTP/2 server's SETTINGS) is read and dropped.
fn closed_by_server(mut stream: &std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let closed = loop {
        match stream.read(&mut [0u8; 1024]) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `Max open files` of a process: (soft, hard).
fn file_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut figures = line["Max open files".len()..].split_whitespace();
    (
        figures.next().unwrap().to_string(),
        figures.next().unwrap().to_string(),
    )
}

/// Poll `done` until it holds, at most `limit` (bounds a hang, asserts no speed).
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_listeners_cap_connections_close_unauthenticated_ones_and_raise_the_file_limit() {
    const CAP: usize = 8;
    const FLOOD: usize = 40;
    let (http, grpc) = (free_port(), free_port());
    let daemon = Daemon::start_with_soft_nofile(
        &[
            "--http",
            &format!("127.0.0.1:{http}"),
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--api-key",
            KEY,
        ],
        &[
            ("SNAPFS__SERVICE__MAX_CONNECTIONS", "8"),
            ("SNAPFS__SERVICE__CONNECTION_AUTH_TIMEOUT_SECS", "15"),
        ],
        256,
    );
    let pid = daemon.pid();
    // Started with a soft limit of 256, the daemon raised it to the hard one.
    let (soft, hard) = file_limits(pid);
    assert_eq!(soft, hard, "soft open-files limit raised to the hard one");
    assert_ne!(soft, "256");
    seeded_collection(&daemon.client(), "kept", 1, 10).await;

    // A client that brought the key keeps its connection past the deadline.
    let mut keyed = tcp_connect(http);
    let (status, body) =
        http1_exchange(&mut keyed, "GET", "/collections/kept", Some(KEY)).expect("an answer");
    assert_eq!(status, 200, "{body}");

    // A flood of idle connections, no key, no bytes: each listener holds CAP in all
    // and closes the others as soon as it accepts them.
    let descriptors_before = open_descriptors(pid);
    let flood: Vec<(u16, std::net::TcpStream)> = [http, grpc]
        .into_iter()
        .flat_map(|port| (0..FLOOD).map(move |_| (port, tcp_connect(port))))
        .collect();
    let refused = 2 * FLOOD - (2 * CAP - 1);
    assert!(
        wait_until(Duration::from_secs(10), || {
            flood.iter().filter(|(_, s)| closed_by_server(s)).count() >= refused
        }),
        "connections over the cap are closed; log:\n{}",
        daemon.log()
    );
    let held = |port: u16| {
        flood
            .iter()
            .filter(|(p, s)| *p == port && !closed_by_server(s))
            .count()
    };
    assert_eq!(held(http), CAP - 1, "the REST listener holds its cap");
    assert_eq!(held(grpc), CAP, "the gRPC listener holds its cap");
    let descriptors = open_descriptors(pid);
    assert!(
        descriptors <= descriptors_before + 2 * CAP + 8,
        "{descriptors} descriptors open, {descriptors_before} before the flood"
    );
    // Meanwhile the Unix socket answers, and the TCP listeners refuse even a key.
    assert_answers(&daemon.client()).await;
    assert_eq!(
        http1_exchange(&mut tcp_connect(http), "GET", "/collections", Some(KEY)),
        None,
        "a connection over the cap gets no answer"
    );
    assert!(daemon.log().contains("service.max_connections"));

    // No request with the key before the deadline: the held connections are closed,
    // and their places are free again.
    assert!(
        wait_until(Duration::from_secs(60), || flood
            .iter()
            .all(|(_, s)| closed_by_server(s))),
        "idle connections without a key are closed after service.connection_auth_timeout_secs"
    );
    let (status, body) = http1_exchange(&mut keyed, "GET", "/collections/kept", Some(KEY))
        .expect("the keyed connection is still open");
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        http1_exchange(&mut tcp_connect(http), "GET", "/collections", Some(KEY)).unwrap();
    assert_eq!(status, 200, "{body}");
    let mut c = connect(grpc, api_key(KEY)).await;
    assert_eq!(count_of(&mut c, "kept").await, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_error_gives_tcp_clients_a_short_reason_and_no_host_path() {
    let (http, grpc) = (free_port(), free_port());
    let daemon = Daemon::start(&[
        "--http",
        &format!("127.0.0.1:{http}"),
        "--grpc",
        &format!("127.0.0.1:{grpc}"),
        "--api-key",
        KEY,
    ]);
    let client = daemon.client();
    seeded_collection(&client, "kept", 1, 10).await;
    // A file where the collection's snapshots directory goes: making a snapshot
    // fails inside the daemon (an I/O error, not the client's doing).
    std::fs::write(daemon.data_dir.join("snapshots/kept"), b"in the way").unwrap();
    let data_dir = daemon.data_dir.display().to_string();

    let (status, body) = http1_exchange(
        &mut tcp_connect(http),
        "POST",
        "/collections/kept/snapshots",
        Some(KEY),
    )
    .expect("an answer");
    assert_eq!(status, 500, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_of(&body), snapfs::service::remote::INTERNAL_REASON);
    assert!(!body.to_string().contains(&data_dir), "{body}");

    let mut c = connect(grpc, api_key(KEY)).await;
    let status = c
        .snapshots
        .create(proto::CreateSnapshotRequest {
            collection_name: "kept".into(),
        })
        .await
        .expect_err("the snapshot fails");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), snapfs::service::remote::INTERNAL_REASON);

    // The Unix socket (its owner only) and the log keep the full text.
    let (status, body) = call(&client, Method::POST, "/collections/kept/snapshots", None).await;
    assert_eq!(status, 500, "{body}");
    assert!(error_of(&body).contains("File exists"), "{body}");
    assert!(daemon.log().contains("File exists"));

    assert_eq!(count(&client, "kept").await, 10);
    daemon.assert_no_staging_leftovers();
}

/// gRPC's snapshot calls with stored snapshots kept as repository generations: the
/// same descriptions REST gives, the download byte-identical to the checksum, delete
/// forgetting the generation.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_snapshots_are_repository_generations_with_the_repository_store() {
    let temp = tempfile::tempdir().unwrap();
    let password = temp.path().join("password");
    std::fs::write(&password, "grpc-repo").unwrap();
    let port = free_port();
    let repository = repository_env(&temp.path().join("repo"), &password);
    let mut env: Vec<(&str, &str)> = repository.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SNAPFS_API_KEY", KEY));
    let daemon = Daemon::start_in(
        &temp.path().join("data"),
        &["--grpc", &format!("127.0.0.1:{port}")],
        &env,
    );
    let mut c = connect(port, api_key(KEY)).await;
    seed(&mut c, "docs", 2, 0..20).await;
    let made = c
        .snapshots
        .create(proto::CreateSnapshotRequest {
            collection_name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    let client = daemon.client();
    let bytes = fetch(
        &client,
        &format!("/collections/docs/snapshots/{}", made.name),
    )
    .await;
    assert_eq!(bytes.len() as i64, made.size);
    assert_eq!(
        Some(format!("{:x}", sha2::Sha256::digest(&bytes))),
        made.checksum
    );
    let listed = c
        .snapshots
        .list(proto::ListSnapshotsRequest {
            collection_name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot_descriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), &listed[0].checksum),
        (made.name.as_str(), &made.checksum)
    );
    let full = c
        .snapshots
        .create_full(proto::CreateFullSnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
        .snapshot_description
        .unwrap();
    let bytes = fetch(&client, &format!("/snapshots/{}", full.name)).await;
    assert_eq!(
        Some(format!("{:x}", sha2::Sha256::digest(&bytes))),
        full.checksum
    );
    c.snapshots
        .delete(proto::DeleteSnapshotRequest {
            collection_name: "docs".into(),
            snapshot_name: made.name.clone(),
        })
        .await
        .unwrap();
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("/collections/docs/snapshots/{}", made.name),
        None,
    )
    .await;
    assert_eq!(status, 404);
}
