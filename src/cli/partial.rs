//! `snapfs partial …`: a shard's manifest, a partial archive made against a
//! manifest, applying one, and pulling one from a peer (with a progress bar while
//! the daemon receives it).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::Method;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::encode_segment;
use crate::client::Client;

fn shard_path(collection: &str, shard: u32) -> String {
    format!(
        "/collections/{}/shards/{shard}/snapshot/partial",
        encode_segment(collection)
    )
}

/// Print the shard's manifest: Qdrant's form, or with `files` the content form.
pub async fn manifest(
    client: &Client,
    collection: &str,
    shard: u32,
    files: bool,
) -> anyhow::Result<()> {
    let query = if files { "?format=files" } else { "" };
    let result = client
        .call(
            Method::GET,
            &format!("{}/manifest{query}", shard_path(collection, shard)),
            None,
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Write the partial archive that takes a receiver with `manifest` to the shard's
/// state into `output` (nothing, and a message, when it has that state already).
pub async fn create(
    client: &Client,
    collection: &str,
    shard: u32,
    manifest: &Path,
    output: &Path,
) -> anyhow::Result<()> {
    let body =
        std::fs::read(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    serde_json::from_slice::<Value>(&body)
        .with_context(|| format!("{} is not JSON", manifest.display()))?;
    let temp = output.with_extension("partial-download");
    let mut file =
        std::fs::File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
    let bar = super::snapshots::byte_bar(0);
    let progress = bar.clone();
    let answered = client
        .post_download(
            &format!("{}/create", shard_path(collection, shard)),
            body,
            |chunk| {
                use std::io::Write;
                progress.inc(chunk.len() as u64);
                file.write_all(chunk).map_err(Into::into)
            },
            |len| bar.set_length(len),
        )
        .await;
    bar.finish_and_clear();
    let length = match answered {
        Ok(Some(length)) => length,
        Ok(None) => {
            let _ = std::fs::remove_file(&temp);
            println!("nothing to send: the manifest describes shard {shard}'s current state (304)");
            return Ok(());
        }
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            return Err(err);
        }
    };
    file.sync_all()?;
    std::fs::rename(&temp, output)?;
    println!("wrote {} ({})", output.display(), HumanBytes(length));
    Ok(())
}

/// Apply the partial archive in `file` to the shard (uploaded with a progress bar).
pub async fn apply(
    client: &Client,
    collection: &str,
    shard: u32,
    file: &Path,
) -> anyhow::Result<()> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let bar = super::snapshots::byte_bar(len);
    let progress = bar.clone();
    let result = client
        .upload(
            &format!("{}/recover?wait=true", shard_path(collection, shard)),
            file,
            move |n| progress.inc(n),
        )
        .await;
    bar.finish_and_clear();
    result?;
    println!(
        "applied {} to shard {shard} of {collection}",
        file.display()
    );
    Ok(())
}

/// Pull the shard's changes from a peer, showing the bytes as the daemon receives
/// them, then what moved against what a full snapshot would have.
pub async fn pull(
    client: &Client,
    collection: &str,
    shard: u32,
    from: &str,
    api_key: Option<&str>,
    form: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({"peer_url": from});
    if let Some(key) = api_key {
        body["api_key"] = json!(key);
    }
    if let Some(form) = form {
        body["manifest"] = json!(form);
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.set_message(format!("asking {from}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let path = format!("{}/recover_from?wait=true", shard_path(collection, shard));
    let call = client.raw(Method::POST, &path, Some(&body));
    tokio::pin!(call);
    let info_path = format!("/collections/{}", encode_segment(collection));
    let answered = loop {
        tokio::select! {
            answered = &mut call => break answered?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Ok(info) = client.call(Method::GET, &info_path, None).await
                    && let Some(bytes) = info["snapfs"]["restore"]["bytes_received"].as_u64()
                {
                    bar.set_message(format!("received {}", HumanBytes(bytes)));
                }
            }
        }
    };
    bar.finish_and_clear();
    let (status, value) = answered;
    if !status.is_success() {
        let message = value["status"]["error"].as_str().unwrap_or("(no message)");
        bail!("{message} (HTTP {})", status.as_u16());
    }
    let details = &value["snapfs"];
    let full = details["full_size"].as_u64().unwrap_or(0);
    if value["result"] == Value::Bool(false) {
        println!(
            "shard {shard} of {collection} is up to date with {from}: nothing moved (a full snapshot is {})",
            HumanBytes(full)
        );
        return Ok(());
    }
    let moved = details["bytes"].as_u64().unwrap_or(0);
    let share = if full > 0 {
        moved as f64 * 100.0 / full as f64
    } else {
        0.0
    };
    println!(
        "pulled shard {shard} of {collection} from {from}: moved {} of a full {} ({share:.1}%), {} files received, {} kept",
        HumanBytes(moved),
        HumanBytes(full),
        details["files_received"],
        details["files_kept"],
    );
    Ok(())
}
