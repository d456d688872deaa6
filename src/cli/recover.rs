//! `snapfs recover`: restore a collection from a local file (uploaded with a progress
//! bar) or from a location the daemon reads itself (`file://…` inside its snapshots
//! directory, or a stored snapshot's name).

use std::path::{Path, PathBuf};

use hyper::Method;
use serde_json::json;

use super::encode_segment;
use crate::client::Client;

pub struct RecoverArgs {
    pub collection: String,
    pub source: String,
    pub checksum: Option<String>,
    pub checksum_file: Option<PathBuf>,
    pub priority: Option<String>,
    pub shard: Option<u32>,
}

/// A sidecar's checksum: bare hex or a `sha256sum` line.
fn read_checksum_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    crate::snapshot::checksum::sidecar_checksum(&text).ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no SHA-256 (64 hex digits, or a sha256sum line)",
            path.display()
        )
    })
}

pub async fn recover(client: &Client, args: RecoverArgs) -> anyhow::Result<()> {
    let local = Path::new(&args.source);
    let checksum = match (&args.checksum, &args.checksum_file) {
        (Some(hex), _) => Some(hex.trim().to_ascii_lowercase()),
        (None, Some(file)) => Some(read_checksum_file(file)?),
        // A sidecar beside a local file is used when present, as Qdrant writes it.
        (None, None) => [".checksum", ".sha256"].iter().find_map(|ext| {
            let mut name = local.as_os_str().to_owned();
            name.push(ext);
            read_checksum_file(Path::new(&name)).ok()
        }),
    };
    let base = match args.shard {
        Some(id) => format!(
            "/collections/{}/shards/{id}/snapshots",
            encode_segment(&args.collection)
        ),
        None => format!(
            "/collections/{}/snapshots",
            encode_segment(&args.collection)
        ),
    };
    if local.is_file() {
        let len = std::fs::metadata(local)?.len();
        let bar = super::snapshots::byte_bar(len);
        let progress = bar.clone();
        let mut query = vec!["wait=true".to_string()];
        if let Some(sum) = &checksum {
            query.push(format!("checksum={sum}"));
        }
        if let Some(priority) = &args.priority {
            query.push(format!("priority={}", encode_segment(priority)));
        }
        let path = format!("{base}/upload?{}", query.join("&"));
        let result = client.upload(&path, local, move |n| progress.inc(n)).await;
        bar.finish_and_clear();
        result?;
    } else {
        let mut body = json!({"location": args.source});
        if let Some(sum) = &checksum {
            body["checksum"] = json!(sum);
        }
        if let Some(priority) = &args.priority {
            body["priority"] = json!(priority);
        }
        client
            .call(Method::PUT, &format!("{base}/recover"), Some(&body))
            .await?;
    }
    let what = match args.shard {
        Some(id) => format!("shard {id} of collection {}", args.collection),
        None => format!("collection {}", args.collection),
    };
    println!(
        "restored {what}{}",
        if checksum.is_some() {
            " (checksum verified)"
        } else {
            ""
        }
    );
    Ok(())
}
