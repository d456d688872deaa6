//! systemd's service protocol, for `Type=notify` units (packaging/snapfs.service):
//! `READY=1` once the control socket answers and the mount is up, `STATUS=` lines
//! while it runs, `WATCHDOG=1` at half the unit's `WatchdogSec`, `STOPPING=1` when a
//! stop begins. Every message is a no-op outside systemd (no `NOTIFY_SOCKET`).
//!
//! The watchdog is fed from the async runtime, next to the listeners: a daemon whose
//! runtime stalls stops feeding it and systemd restarts it.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::service::Service;

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(%err, "could not notify the service manager");
    }
}

/// The daemon is ready: its socket answers, its mount is up.
pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A stop has begun.
pub(super) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog period the service manager asks for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` names one).
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One line of what the daemon holds and did last, for `systemctl status`.
fn status_line(service: &Service) -> String {
    let collections = service.storage().collection_names().len();
    let last_backup = crate::service::backups::status_now(service)
        .iter()
        .filter_map(|p| p.last_run.as_ref().map(|r| (r.started, r.result.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut line = format!("{collections} collections");
    match last_backup {
        Some((at, result)) => {
            let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
            line.push_str(&format!(
                "; last backup run {}Z {result}",
                crate::snapshot::names::creation_time(at)
            ));
        }
        None if !service.backups.policies().is_empty() => line.push_str("; no backup run yet"),
        None => {}
    }
    let clusters = crate::service::follow::status(service);
    for cluster in clusters {
        if let Some(round) = cluster.last_round {
            line.push_str(&format!(
                "; cluster {}: last round {}{}",
                cluster.name,
                round.started,
                if round.error.is_some() { " failed" } else { "" }
            ));
        }
    }
    line
}

/// Feed the watchdog (when asked for) and refresh the status line every 30 s, until
/// `stop` turns true.
pub(super) fn start(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let watchdog = watchdog_period();
    if let Some(period) = watchdog {
        tracing::info!(
            period_ms = period.as_millis() as u64,
            "feeding systemd's watchdog"
        );
    }
    tokio::spawn(async move {
        let tick = watchdog.map_or(Duration::from_secs(30), |p| {
            (p / 2).min(Duration::from_secs(30))
        });
        let mut since_status = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if watchdog.is_some() {
                send(&[NotifyState::Watchdog]);
            }
            since_status += tick;
            if since_status >= Duration::from_secs(30) {
                since_status = Duration::ZERO;
                let line = status_line(&service);
                send(&[NotifyState::Status(&line)]);
            }
        }
    });
}

/// The first status line, sent with `READY=1`.
pub(super) fn ready_status(
    service: &Service,
    socket: &std::path::Path,
    mount: Option<&std::path::Path>,
) -> String {
    let mut line = status_line(service);
    line.push_str(&format!("; socket {}", socket.display()));
    if let Some(mount) = mount {
        line.push_str(&format!("; mounted at {}", mount.display()));
    }
    line
}
