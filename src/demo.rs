//! The embedded default: a `demo` collection with a few thousand random points, so
//! the README's first command shows something real. The point generator is shared
//! with `snapfs points generate`.

use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};

use crate::storage::{CreateCollection, Storage};

pub const DEMO_COLLECTION: &str = "demo";
pub const DEMO_POINTS: u64 = 5_000;
pub const DEMO_DIM: usize = 64;
/// Points per upsert request, as the CLI sends them.
pub const BATCH: u64 = 1_000;

/// One random point in Qdrant's JSON shape, with a small payload to filter on.
pub fn random_point(rng: &mut impl Rng, id: u64, dim: usize) -> Value {
    let vector: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    json!({
        "id": id,
        "vector": vector,
        "payload": {"n": id, "group": format!("g{}", id % 10), "even": id.is_multiple_of(2)},
    })
}

pub async fn create_demo_collection(storage: &Arc<Storage>) -> anyhow::Result<()> {
    let request: CreateCollection = serde_json::from_value(
        json!({"vectors": {"size": DEMO_DIM, "distance": "Cosine"}, "shard_number": 2}),
    )?;
    storage
        .create_collection(DEMO_COLLECTION, request.into_config()?)
        .await?;
    let collection = storage.collection(DEMO_COLLECTION)?;
    let mut rng = rand::rng();
    for start in (0..DEMO_POINTS).step_by(BATCH as usize) {
        let batch: Vec<Value> = (start..(start + BATCH).min(DEMO_POINTS))
            .map(|id| random_point(&mut rng, id, DEMO_DIM))
            .collect();
        let points = serde_json::from_value(Value::Array(batch))?;
        collection.upsert(points, true).await?;
    }
    tracing::info!(
        collection = DEMO_COLLECTION,
        points = DEMO_POINTS,
        "demo collection created"
    );
    Ok(())
}
