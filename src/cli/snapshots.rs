//! `snapfs snapshot …` and `snapfs verify`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::snapshot::digest::hex;
use crate::snapshot::unpack::verify_archive;

/// Which snapshots a command addresses: a collection's, one shard's, or full storage.
pub enum Target {
    Collection(String),
    Shard(String, u32),
    Full,
}

impl Target {
    pub fn new(
        collection: Option<String>,
        shard: Option<u32>,
        full: bool,
    ) -> anyhow::Result<Target> {
        match (collection, shard, full) {
            (None, None, true) => Ok(Target::Full),
            (_, _, true) => bail!("--full takes no collection and no --shard"),
            (Some(c), Some(id), false) => Ok(Target::Shard(c, id)),
            (Some(c), None, false) => Ok(Target::Collection(c)),
            (None, _, false) => {
                bail!("name a collection, or pass --full for a full-storage snapshot")
            }
        }
    }

    fn base(&self) -> String {
        match self {
            Target::Collection(c) => format!("/collections/{}/snapshots", super::encode_segment(c)),
            Target::Shard(c, id) => format!(
                "/collections/{}/shards/{id}/snapshots",
                super::encode_segment(c)
            ),
            Target::Full => "/snapshots".to_string(),
        }
    }
}

pub(crate) fn byte_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

pub async fn create(client: &Client, target: &Target, asynchronous: bool) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("creating snapshot");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let path = format!("{}?wait={}", target.base(), !asynchronous);
    let result = client.call(Method::POST, &path, None).await;
    spinner.finish_and_clear();
    let result = result?;
    if asynchronous {
        println!("snapshot creation started; `snapfs snapshot list` shows it once complete");
    } else {
        println!(
            "{}  {} bytes  sha256 {}",
            result["name"].as_str().unwrap_or_default(),
            result["size"],
            result["checksum"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn list(client: &Client, target: &Target, verbose: bool) -> anyhow::Result<()> {
    let result = client.call(Method::GET, &target.base(), None).await?;
    if verbose {
        // How each was made, where the store records it (a repository's generations).
        let details = client
            .call(
                Method::GET,
                &format!("{}?details=true", target.base()),
                None,
            )
            .await?;
        let details: Vec<&serde_json::Value> = details.as_array().into_iter().flatten().collect();
        for s in result.as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default();
            let extra = details
                .iter()
                .find(|d| d["name"] == name)
                .map(|d| {
                    let covered = d["bytes_covered"].as_u64().unwrap_or(0);
                    let added = d["bytes_added"].as_u64().unwrap_or(0);
                    format!(
                        "\tid {}\tcovered {covered}\tadded {added}\tdedup {:.1}x\t{:.2} s\tfiles new/changed/unchanged {}/{}/{}",
                        &d["id"].as_str().unwrap_or_default()[..8.min(d["id"].as_str().unwrap_or_default().len())],
                        covered as f64 / added.max(1) as f64,
                        d["seconds"].as_f64().unwrap_or(0.0),
                        d["files_new"], d["files_changed"], d["files_unmodified"],
                    )
                })
                .unwrap_or_default();
            println!(
                "{}\t{}\t{}\t{}{extra}",
                name,
                s["size"],
                s["creation_time"].as_str().unwrap_or_default(),
                s["checksum"].as_str().unwrap_or("-")
            );
        }
        return Ok(());
    }
    for s in result.as_array().into_iter().flatten() {
        println!(
            "{}\t{}\t{}\t{}",
            s["name"].as_str().unwrap_or_default(),
            s["size"],
            s["creation_time"].as_str().unwrap_or_default(),
            s["checksum"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

pub async fn delete(client: &Client, target: &Target, name: &str) -> anyhow::Result<()> {
    client
        .call(
            Method::DELETE,
            &format!("{}/{}", target.base(), super::encode_segment(name)),
            None,
        )
        .await?;
    println!("deleted {name}");
    Ok(())
}

/// Download a stored snapshot, verifying it against its listed checksum.
pub async fn download(
    client: &Client,
    target: &Target,
    name: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let listed = client.call(Method::GET, &target.base(), None).await?;
    let expected = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .and_then(|s| s["checksum"].as_str().map(str::to_string));
    let output = output.unwrap_or_else(|| PathBuf::from(name));
    let partial = output.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?,
    );
    let mut hasher = Sha256::new();
    let bar = byte_bar(0);
    let result = client
        .download(
            &format!("{}/{}", target.base(), super::encode_segment(name)),
            |chunk| {
                hasher.update(chunk);
                file.write_all(chunk)?;
                bar.inc(chunk.len() as u64);
                Ok(())
            },
            |len| bar.set_length(len),
        )
        .await;
    bar.finish_and_clear();
    let size = match result {
        Ok(size) => size,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    file.flush()?;
    drop(file);
    let actual = hex(&hasher.finalize());
    if let Some(expected) = expected.filter(|e| *e != actual) {
        let _ = std::fs::remove_file(&partial);
        bail!("Checksum mismatch: expected {expected}, got {actual}; nothing was kept");
    }
    std::fs::rename(&partial, &output)?;
    println!(
        "{}  {size} bytes  sha256 {actual} (verified)",
        output.display()
    );
    Ok(())
}

/// `snapfs verify FILE [--checksum HEX]`: the sidecar `FILE.checksum` is used when present.
pub fn verify(file: &Path, checksum: Option<String>) -> anyhow::Result<()> {
    let sidecar = PathBuf::from(format!("{}.checksum", file.display()));
    let expected = match checksum {
        Some(hex) => Some(hex),
        None => std::fs::read_to_string(&sidecar)
            .ok()
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_string()),
    };
    let reader = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let report = verify_archive(reader, expected.as_deref())
        .with_context(|| format!("{} failed verification", file.display()))?;
    println!("{}: OK", file.display());
    println!(
        "  entries: {} ({} files, {} bytes unpacked)",
        report.entries, report.files, report.logical_bytes
    );
    println!(
        "  archive: {} bytes, sha256 {}",
        report.archive_bytes,
        report.sha256.as_deref().unwrap_or_default()
    );
    match (&expected, report.manifest_checked) {
        (Some(_), _) => println!("  checksum: matches"),
        (None, _) => println!(
            "  checksum: none given (no --checksum, no {})",
            sidecar.display()
        ),
    }
    match report.manifest_checked {
        Some(n) => println!("  manifest: {n} files match their embedded SHA-256"),
        None => println!("  manifest: none (not a snapfs archive; structure checked only)"),
    }
    Ok(())
}
