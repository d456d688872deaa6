//! `snapfs follow` and `snapfs cluster`: the followed Qdrant clusters (status, a
//! round now), their generations (list, show, forget) and a restore of one into a
//! Qdrant cluster. The target's API key comes from the environment
//! (`SNAPFS_TARGET_API_KEY`), never from the command line.

use anyhow::bail;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::storage::names::url_segment as seg;

pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let all = client.call(Method::GET, "/snapfs/clusters", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let clusters = all.as_array().cloned().unwrap_or_default();
    if clusters.is_empty() {
        println!("no followed clusters (follow.clusters in the configuration file)");
    }
    for c in clusters {
        println!(
            "cluster {} — {} nodes, collections {}, {}",
            c["name"].as_str().unwrap_or(""),
            c["nodes"].as_array().map_or(0, |n| n.len()),
            c["collections"],
            match c["every_secs"].as_f64() {
                Some(s) => format!("a round every {s} s"),
                None => "rounds on demand".into(),
            }
        );
        println!(
            "  rounds {} (failed {}){}",
            c["rounds"],
            c["failures"],
            if c["running"] == true {
                ", one running now"
            } else {
                ""
            }
        );
        if let Some(last) = c["last_round"].as_object() {
            print_round(&Value::Object(last.clone()));
        }
    }
    Ok(())
}

fn print_round(round: &Value) {
    match round["error"].as_str() {
        Some(error) => println!(
            "  last round {}: FAILED: {error}",
            round["started"].as_str().unwrap_or("")
        ),
        None => println!(
            "  last round {} ({:.1} s): generation {}, {} applied, {} unchanged, {} stale, {} bytes received",
            round["started"].as_str().unwrap_or(""),
            round["seconds"].as_f64().unwrap_or(0.0),
            round["generation"].as_str().unwrap_or("-"),
            round["applied"],
            round["unchanged"],
            round["stale"],
            round["bytes_received"]
        ),
    }
    for skipped in round["skipped"].as_array().into_iter().flatten() {
        println!(
            "    not followed: `{}`: {}",
            skipped["collection"].as_str().unwrap_or(""),
            skipped["reason"].as_str().unwrap_or("")
        );
    }
    for shard in round["shards"].as_array().into_iter().flatten() {
        if shard["outcome"] == "stale" {
            println!(
                "    STALE: `{}` shard {}: {}",
                shard["collection"].as_str().unwrap_or(""),
                shard["shard_id"],
                shard["failures"]
            );
        }
    }
}

pub async fn round(client: &Client, cluster: &str, json: bool) -> anyhow::Result<()> {
    let report = client
        .call(
            Method::POST,
            &format!("/snapfs/clusters/{}/round?wait=true", seg(cluster)),
            None,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_round(&report);
    }
    Ok(())
}

pub async fn generations(client: &Client, cluster: &str, json: bool) -> anyhow::Result<()> {
    let all = client
        .call(
            Method::GET,
            &format!("/snapfs/clusters/{}/generations", seg(cluster)),
            None,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<22} {:>6} {:>6} {:>6} {:>12} {:>14}",
        "GENERATION", "ROUND ENDED", "COLLS", "SHARDS", "STALE", "POINTS", "BYTES"
    );
    for g in all.as_array().into_iter().flatten() {
        println!(
            "{:<36} {:<22} {:>6} {:>6} {:>6} {:>12} {:>14}",
            g["name"].as_str().unwrap_or(""),
            g["round_ended"].as_str().unwrap_or(""),
            g["collections"],
            g["shards"],
            g["stale_shards"],
            g["points"],
            g["bytes"]
        );
    }
    Ok(())
}

pub async fn show(client: &Client, cluster: &str, generation: &str) -> anyhow::Result<()> {
    let manifest = client
        .call(
            Method::GET,
            &format!(
                "/snapfs/clusters/{}/generations/{}",
                seg(cluster),
                seg(generation)
            ),
            None,
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

pub async fn forget(client: &Client, cluster: &str, generation: &str) -> anyhow::Result<()> {
    client
        .call(
            Method::DELETE,
            &format!(
                "/snapfs/clusters/{}/generations/{}",
                seg(cluster),
                seg(generation)
            ),
            None,
        )
        .await?;
    println!("generation {generation} of cluster {cluster} forgotten");
    Ok(())
}

pub async fn restore(
    client: &Client,
    cluster: &str,
    generation: &str,
    nodes: &[String],
    dry_run: bool,
) -> anyhow::Result<()> {
    if nodes.is_empty() {
        bail!("give the target cluster's nodes: --node http://host:6333 (each node)");
    }
    let api_key = std::env::var("SNAPFS_TARGET_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let body = json!({"nodes": nodes, "api_key": api_key, "dry_run": dry_run});
    let report = client
        .call(
            Method::POST,
            &format!(
                "/snapfs/clusters/{}/generations/{}/restore",
                seg(cluster),
                seg(generation)
            ),
            Some(&body),
        )
        .await?;
    for step in report["steps"].as_array().into_iter().flatten() {
        println!(
            "{}{}",
            if dry_run { "would: " } else { "" },
            step.as_str().unwrap_or("")
        );
    }
    for check in report["verified"].as_array().into_iter().flatten() {
        println!(
            "{} `{}` shard {}: expected {} points, replicas {}",
            if check["ok"] == true { "ok  " } else { "FAIL" },
            check["collection"].as_str().unwrap_or(""),
            check["shard_id"],
            check["expected"],
            check["replicas"]
        );
    }
    if report["ok"] != true {
        bail!("the restored cluster does not hold the generation's point counts");
    }
    Ok(())
}
