//! `snapfs backup`: the daemon's backup policies — their status, a run now (with
//! its progress while it goes), and what a retention would remove.

use std::time::Duration;

use anyhow::bail;
use hyper::Method;
use serde_json::Value;

use crate::client::Client;

fn when(seconds: &Value) -> String {
    match seconds.as_f64() {
        Some(s) if s > 0.0 => {
            let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(s);
            humantime_like(at)
        }
        _ => "never".into(),
    }
}

/// `2026-12-07T10:00:00Z (in 5m)`, `… (3m ago)`.
fn humantime_like(at: std::time::SystemTime) -> String {
    let text = crate::snapshot::names::creation_time(at);
    let now = std::time::SystemTime::now();
    let (ahead, gap) = match at.duration_since(now) {
        Ok(gap) => (true, gap),
        Err(e) => (false, e.duration()),
    };
    let secs = gap.as_secs();
    let gap = match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if ahead {
        format!("{text} (in {gap})")
    } else {
        format!("{text} ({gap} ago)")
    }
}

pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let all = client.call(Method::GET, "/snapfs/backups", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let policies = all.as_array().cloned().unwrap_or_default();
    if policies.is_empty() {
        println!("no backup policies (backups.policies in the configuration file)");
    }
    for p in policies {
        println!(
            "policy {} — {}",
            p["name"].as_str().unwrap_or(""),
            p["schedule"].as_str().unwrap_or("")
        );
        let last = &p["last_run"];
        if last.is_null() {
            println!("  last run:    none yet");
        } else {
            println!(
                "  last run:    {} ({}), {:.1} s, {} bytes added, trigger {}",
                when(&last["finished"]),
                last["result"].as_str().unwrap_or("?"),
                last["seconds"].as_f64().unwrap_or(0.0),
                last["bytes_added"],
                last["trigger"].as_str().unwrap_or("?"),
            );
            for scope in last["scopes"].as_array().into_iter().flatten() {
                if let Some(error) = scope["error"].as_str() {
                    let c = scope["collection"].as_str().unwrap_or("");
                    println!(
                        "    {}: FAILED: {error}",
                        if c.is_empty() { "full storage" } else { c }
                    );
                }
            }
        }
        let mut next: Vec<(String, Value)> = p["next"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        next.sort_by(|a, b| a.0.cmp(&b.0));
        for (job, at) in next {
            println!(
                "  next {job}:{} {}",
                " ".repeat(10usize.saturating_sub(job.len())),
                when(&at)
            );
        }
        let mut kept: Vec<(String, Value)> = p["generations"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        let kept: Vec<String> = kept
            .into_iter()
            .map(|(c, n)| format!("{} {n}", if c.is_empty() { "full storage" } else { &c }))
            .collect();
        println!("  kept:        {}", kept.join(", "));
        println!(
            "  runs {} (failed {}, skipped {}), drills passed {} failed {}",
            p["runs"], p["failures"], p["skipped"], p["drills_passed"], p["drills_failed"]
        );
        let drill = &p["last_drill"];
        if !drill.is_null() {
            println!(
                "  last drill:  {} ({})",
                when(&drill["finished"]),
                drill["result"].as_str().unwrap_or("?")
            );
            for check in drill["checks"].as_array().into_iter().flatten() {
                println!("    {}", check.as_str().unwrap_or(""));
            }
        }
        for running in p["running"].as_array().into_iter().flatten() {
            println!(
                "  running:     {} ({}/{}) {}",
                running["job"].as_str().unwrap_or("?"),
                running["done"],
                running["total"],
                running["step"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Start job `job` of `policy` and follow it: its steps as they change, then its
/// outcome. Exits non-zero when the job failed.
pub async fn run(client: &Client, policy: &str, job: &str, detach: bool) -> anyhow::Result<()> {
    let path = format!("/snapfs/backups/{policy}/run?job={job}&wait=false");
    client.call(Method::POST, &path, None).await?;
    if detach {
        println!("{job} of policy {policy} started");
        return Ok(());
    }
    let mut shown = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = client
            .call(Method::GET, &format!("/snapfs/backups/{policy}"), None)
            .await?;
        let running = status["running"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["job"] == job)
            .cloned();
        match running {
            Some(r) => {
                let line = format!(
                    "{} ({}/{})",
                    r["step"].as_str().unwrap_or(""),
                    r["done"],
                    r["total"]
                );
                if line != shown {
                    eprintln!("{line}");
                    shown = line;
                }
            }
            None => {
                let key = match job {
                    "retention" => "last_retention",
                    "drill" => "last_drill",
                    _ => "last_run",
                };
                let record = &status[key];
                println!("{}", serde_json::to_string_pretty(record)?);
                if record["result"] != "ok" {
                    bail!("the {job} of policy {policy} failed");
                }
                return Ok(());
            }
        }
    }
}

/// What policy `policy`'s retention removes (`dry_run`: would remove).
pub async fn forget(client: &Client, policy: &str, dry_run: bool) -> anyhow::Result<()> {
    let path = format!("/snapfs/backups/{policy}/forget?dry_run={dry_run}");
    let planned = client.call(Method::POST, &path, None).await?;
    for scope in planned.as_array().into_iter().flatten() {
        let c = scope["collection"].as_str().unwrap_or("");
        println!("{}:", if c.is_empty() { "full storage" } else { c });
        for d in scope["decisions"].as_array().into_iter().flatten() {
            let name = d["name"].as_str().unwrap_or("");
            if d["keep"] == true {
                let why: Vec<&str> = d["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                println!("  keep   {name} ({})", why.join(", "));
            } else {
                println!(
                    "  {} {name}",
                    if dry_run { "would remove" } else { "removed" }
                );
            }
        }
    }
    Ok(())
}
