//! Client subcommands: each turns its arguments into calls on the control socket
//! and prints what a user needs, with progress bars for long work.

pub mod backup;
pub mod cluster;
pub mod doctor;
pub mod partial;
pub mod recover;
pub mod repo;
pub mod snapshots;

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::Client;
use crate::demo::random_point;

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

pub async fn collections_list(client: &Client) -> anyhow::Result<()> {
    let result = client.call(Method::GET, "/collections", None).await?;
    for c in result["collections"].as_array().into_iter().flatten() {
        println!("{}", c["name"].as_str().unwrap_or_default());
    }
    Ok(())
}

pub async fn collections_create(
    client: &Client,
    name: &str,
    dim: u64,
    distance: &str,
    shards: u32,
) -> anyhow::Result<()> {
    let body = json!({"vectors": {"size": dim, "distance": distance}, "shard_number": shards});
    client
        .call(Method::PUT, &collection_path(name), Some(&body))
        .await?;
    println!("created collection {name} ({dim} dims, {distance}, {shards} shard(s))");
    Ok(())
}

pub async fn collections_info(client: &Client, name: &str) -> anyhow::Result<()> {
    let info = client
        .call(Method::GET, &collection_path(name), None)
        .await?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

pub async fn collections_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let deleted = client
        .call(Method::DELETE, &collection_path(name), None)
        .await?;
    if deleted.as_bool() != Some(true) {
        bail!("collection {name} does not exist");
    }
    println!("deleted collection {name}");
    Ok(())
}

pub async fn points_count(client: &Client, name: &str) -> anyhow::Result<()> {
    let result = client
        .call(
            Method::POST,
            &format!("{}/points/count", collection_path(name)),
            Some(&json!({"exact": true})),
        )
        .await?;
    println!("{}", result["count"]);
    Ok(())
}

async fn upsert_batch(client: &Client, name: &str, points: Vec<Value>) -> anyhow::Result<()> {
    let path = format!("{}/points?wait=true", collection_path(name));
    client
        .call(Method::PUT, &path, Some(&json!({"points": points})))
        .await?;
    Ok(())
}

/// Upsert points from a JSON-lines file (one Qdrant point object per line).
pub async fn points_upsert(
    client: &Client,
    name: &str,
    file: &Path,
    batch: usize,
) -> anyhow::Result<()> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let total = opened.metadata()?.len();
    let bar = progress(total, "upserting bytes");
    let mut pending = Vec::with_capacity(batch);
    let mut sent = 0u64;
    for (number, line) in std::io::BufReader::new(opened).lines().enumerate() {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let point: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON point", file.display(), number + 1))?;
        pending.push(point);
        if pending.len() == batch {
            sent += pending.len() as u64;
            upsert_batch(client, name, std::mem::take(&mut pending)).await?;
        }
    }
    if !pending.is_empty() {
        sent += pending.len() as u64;
        upsert_batch(client, name, pending).await?;
    }
    bar.finish_and_clear();
    println!("upserted {sent} points into {name}");
    Ok(())
}

/// Upsert `count` random points with ids `start..start+count`.
pub async fn points_generate(
    client: &Client,
    name: &str,
    count: u64,
    dim: usize,
    batch: u64,
    start: u64,
) -> anyhow::Result<()> {
    let bar = progress(count, "generating points");
    let mut rng = rand::rng();
    let mut id = start;
    while id < start + count {
        let end = (id + batch).min(start + count);
        let points: Vec<Value> = (id..end).map(|i| random_point(&mut rng, i, dim)).collect();
        upsert_batch(client, name, points).await?;
        bar.inc(end - id);
        id = end;
    }
    bar.finish_and_clear();
    println!("upserted {count} random {dim}-dim points into {name}");
    Ok(())
}

fn collection_path(name: &str) -> String {
    format!("/collections/{}", encode_segment(name))
}

/// Percent-encode a path segment (names may hold spaces or non-ASCII).
pub(crate) use crate::storage::names::url_segment as encode_segment;
