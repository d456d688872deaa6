//! `snapfs serve`: open the storage under an exclusive lock, listen, and on
//! SIGINT/SIGTERM stop accepting, finish in-flight requests, stop every writer
//! after its queued updates, flush every shard and exit 0. With a mount, it is
//! unmounted first (on every exit path, errors included). A stop is bounded:
//! requests in flight get `snapfs.shutdown_grace_secs`, the rest of the stop
//! `FINAL_STOP_LIMIT`, and a second signal exits at once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub mod access;
mod systemd;

use crate::api;
use crate::config::Config;
use crate::fs::SnapFs;
use crate::service::Service;
use crate::service::listen as server;
use crate::snapshot::Snapshots;
use crate::storage::Storage;

/// Held for the daemon's lifetime: a second daemon on the same storage is refused.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(storage_path: &Path) -> anyhow::Result<Self> {
        let path = storage_path.join("snapfs.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let locked =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        if !locked {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another snapfs daemon (pid {}) is already using {}; stop it first or choose another --data-dir",
                holder.trim(),
                storage_path.display()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

/// After the grace for requests in flight, how long the rest of a stop (unmount,
/// writers draining their queues, the final flush) may take before the process
/// exits anyway. Nothing acknowledged is lost by that: it is in the pending logs
/// and the engines' WALs, replayed at the next start.
const FINAL_STOP_LIMIT: Duration = Duration::from_secs(60);
/// Blocking work still running once the storage is closed (engine reads for a cut
/// stream) is abandoned after this.
const BLOCKING_WORK_LIMIT: Duration = Duration::from_secs(2);

pub fn run(config: Config) -> anyhow::Result<()> {
    // What the daemon writes is nobody else's to read: collections, stored
    // snapshots, staging. Others reach them through the mount and the socket.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    raise_file_limit();
    // A wrong group or a missing user_allow_other stops the start before anything
    // is created.
    let granted = access::resolve(&config)?;
    for dir in [
        &config.data_dir,
        &config.storage_path,
        &config.snapshots_path,
        &config.temp_path,
    ] {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        // With snapfs.group, the data directory is the group's to pass through
        // (0710) to reach the socket.
        let shared = config.group.is_some() && dir == &config.data_dir && mode & 0o777 == 0o710;
        if mode & 0o077 != 0 && !shared {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "other users can reach this directory of the daemon's; `chmod 700` it unless that is meant"
            );
        }
    }
    let _lock = DataDirLock::acquire(&config.storage_path)?;
    // Messages to TCP and gRPC clients name these by their config keys.
    let mut private = vec![
        (config.storage_path.clone(), "storage.storage_path"),
        (config.snapshots_path.clone(), "storage.snapshots_path"),
        (config.temp_path.clone(), "storage.temp_path"),
        (config.data_dir.clone(), "snapfs.data_dir"),
    ];
    private.extend(
        config
            .recover_dirs
            .iter()
            .map(|dir| (dir.clone(), "storage.recover_dirs")),
    );
    // Where stored snapshots go, when that is a local directory: the daemon's
    // repository, and the policies' own stores.
    let local_store = |choice: &crate::snapshot::store::StoreChoice| match &choice.repository {
        Some(repository) => match &repository.location {
            crate::snapshot::store::repository::Location::Local(path) => Some(path.clone()),
            crate::snapshot::store::repository::Location::S3(_) => None,
        },
        None => choice.s3.is_none().then(|| choice.snapshots_path.clone()),
    };
    if let Some(Some(path)) = config
        .repository
        .as_ref()
        .map(|_| local_store(&config.store_choice()))
    {
        private.push((path, "storage.snapshots_config.repository.location"));
    }
    private.extend(
        config
            .policy_stores
            .values()
            .filter_map(local_store)
            .map(|path| (path, "backups.policies[].store")),
    );
    crate::service::remote::hide_directories(&private);
    // Checked before the storage loads, so a wrong mount point fails fast.
    let mount_point = match &config.mount {
        Some(path) => Some(crate::fs::mount::prepare_mount_point(
            path,
            &[
                &config.data_dir,
                &config.storage_path,
                &config.snapshots_path,
                &config.temp_path,
            ],
        )?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(&config, mount_point, granted));
    runtime.shutdown_timeout(BLOCKING_WORK_LIMIT);
    let _ = std::fs::remove_file(&config.socket);
    result
}

/// Raise the soft limit of open files to the hard one: the engine keeps many files
/// open per shard, and a connection takes one too. A soft limit left at a shell's
/// 1024 would let clients (up to `service.max_connections` per listener) and large
/// collections run the engine's own opens into EMFILE. Not fatal: the daemon runs
/// with the limit it was given, and says so.
fn raise_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-files limit")
        }
        Err(err) => tracing::warn!(
            %err,
            soft = ?limit.current,
            hard = ?limit.maximum,
            "cannot raise the open-files limit (RLIMIT_NOFILE) to its hard limit"
        ),
    }
}

/// Open the storage, serve, and close the storage on every way out: a clean stop
/// and an error alike flush every shard and keep its clock, so the next start does
/// not take unchanged shards for changed ones.
async fn serve(
    config: &Config,
    mount_point: Option<PathBuf>,
    granted: crate::fs::fuse::MountAccess,
) -> anyhow::Result<()> {
    let storage = {
        let path = config.storage_path.clone();
        tokio::task::spawn_blocking(move || Storage::open(&path)).await??
    };
    let result = serve_storage(config, &storage, mount_point, granted).await;
    let closing = storage.clone();
    tokio::task::spawn_blocking(move || closing.shutdown()).await?;
    match &result {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(err) => tracing::info!(err = %format!("{err:#}"), "storage closed after an error"),
    }
    result
}

async fn serve_storage(
    config: &Config,
    storage: &Arc<Storage>,
    mount_point: Option<PathBuf>,
    granted: crate::fs::fuse::MountAccess,
) -> anyhow::Result<()> {
    storage.stage_restores_in(&config.temp_path)?;
    if let Some(bytes) = config.max_restore_bytes {
        storage.limit_restores(bytes);
    }
    // The snapshot layer's state, for the life of the daemon.
    let snapshots = Snapshots::new(storage.clone());
    crate::snapshot::view::start_freeze_watchdog(
        &snapshots,
        config.temp_path.clone(),
        config.snapshot_max_freeze,
    )?;
    if let Some(file) = &config.storage_snapshot {
        let restored = crate::snapshot::restore::full::restore_full(
            &snapshots,
            file,
            &config.temp_path,
            config.force,
        )
        .await
        .with_context(|| format!("restoring the storage snapshot {}", file.display()))?;
        tracing::info!(collections = ?restored, "full-storage snapshot restored");
    }
    if config.demo && storage.is_empty() {
        crate::demo::create_demo_collection(storage).await?;
    }

    // Where stored snapshots go, chosen once: nothing above asks which it is.
    // Opening a repository blocks (key derivation, its files read, in S3 requests
    // waited for on this runtime).
    let store = tokio::task::block_in_place(|| {
        crate::snapshot::store::open(
            &config.snapshots_path,
            &config.temp_path,
            config.s3.as_ref(),
            config.repository.as_ref(),
        )
    })?;
    crate::service::backups::check_policies(storage, &config.backups, &config.backup_lines)
        .map_err(|why| anyhow::anyhow!(why))?;
    // A policy's own store; one that is the daemon's is the daemon's (one store object
    // per place, so names are reserved in one place).
    let mut opened = vec![(config.store_choice(), store.clone())];
    let mut policy_stores = std::collections::HashMap::new();
    for (policy, choice) in &config.policy_stores {
        let same = opened.iter().find(|(place, _)| place.same_place(choice));
        let store = match same {
            Some((_, store)) => store.clone(),
            None => {
                let store = tokio::task::block_in_place(|| choice.open(&config.temp_path))
                    .with_context(|| format!("backup policy {policy}: its store"))?;
                opened.push((choice.clone(), store.clone()));
                store
            }
        };
        policy_stores.insert(policy.clone(), store);
    }
    let backups = Arc::new(crate::service::backups::Backups::new(
        &config.backups,
        &config.data_dir,
        &config.temp_path,
        policy_stores,
    ));
    storage.set_mirrored_clusters(
        &config
            .follow
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
    );
    let follow = Arc::new(crate::service::follow::Follow::new(
        &config.follow.clusters,
        &config.data_dir,
    ));
    let state = Arc::new(Service {
        snapshots: snapshots.clone(),
        store: store.clone(),
        recover_dirs: std::iter::once(config.snapshots_path.clone())
            .chain(config.recover_dirs.iter().cloned())
            .collect(),
        require_checksum: config.require_checksum,
        transfer_stall: config.transfer_stall,
        s3_recovery: config.s3_recovery.clone(),
        fetch: Arc::new(config.fetch.clone()),
        backups,
        follow,
    });
    let router = api::router(state.clone(), config.max_request_bytes());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grace = config.shutdown_grace;
    crate::service::backups::start_schedules(&state, stop_rx.clone());
    crate::service::follow::start_rounds(&state, stop_rx.clone());

    // Dropped on every way out of this function: listener tasks are cancelled
    // with their connections.
    let mut servers = tokio::task::JoinSet::new();
    let unix = server::bind_unix(&config.socket)?;
    if let Some(gid) = granted.group {
        access::share_socket(&config.socket, &config.data_dir, gid)?;
    }
    servers.spawn(server::serve(
        unix,
        router.clone(),
        stopped(stop_rx.clone()),
        grace,
    ));
    let limits = server::TcpLimits {
        max_connections: config.max_connections,
        auth_deadline: config.connection_auth_timeout,
        max_streams: config.grpc_max_concurrent_streams,
    };
    if let (Some(addr), Some(key)) = (config.http, config.api_key.clone()) {
        let tcp = server::bind_tcp(&addr.to_string()).await?;
        servers.spawn(server::serve_tcp(
            tcp,
            api::auth::remote_errors(api::auth::require_api_key(router, server::ApiKey::new(key))),
            stopped(stop_rx.clone()),
            grace,
            limits.clone(),
        ));
        tracing::info!(%addr, "HTTP API on TCP (api-key required)");
    }
    if let (Some(addr), Some(key)) = (config.grpc, config.api_key.clone()) {
        let tcp = server::bind_tcp(&addr.to_string()).await?;
        let grpc_router = crate::grpc::require_api_key(
            crate::grpc::router(
                state.clone(),
                config.max_request_bytes(),
                config.grpc_max_concurrent_calls,
            ),
            server::ApiKey::new(key),
        );
        servers.spawn(crate::grpc::serve(
            tcp,
            grpc_router,
            stopped(stop_rx.clone()),
            grace,
            limits,
        ));
        tracing::info!(%addr, "gRPC API on TCP (api-key required)");
    }
    // Dropped (unmounted) on every way out of this function, errors included.
    let mut mounted = match mount_point {
        Some(path) => {
            let core = Arc::new(
                SnapFs::new(
                    snapshots.clone(),
                    config.snapshots_path.clone(),
                    store.clone(),
                )
                .with_require_checksum(config.require_checksum)
                .with_backups(state.clone())
                .with_clusters(state.clone()),
            );
            let runtime = tokio::runtime::Handle::current();
            Some(
                tokio::task::spawn_blocking(move || {
                    crate::fs::mount::mount(core, runtime, &path, granted)
                })
                .await??,
            )
        }
        None => None,
    };
    // The socket must answer before the service manager hears the daemon is ready.
    answers_on(&config.socket).await?;
    tracing::info!(socket = %config.socket.display(), data_dir = %config.data_dir.display(), "snapfs ready");
    systemd::ready(&systemd::ready_status(
        &state,
        &config.socket,
        mounted.as_ref().map(|m| m.path()),
    ));
    systemd::start(state.clone(), stop_rx.clone());

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        Some(result) = servers.join_next() => {
            result?;
            bail!("a listener stopped unexpectedly");
        }
    }
    systemd::stopping();
    bound_the_stop(grace + FINAL_STOP_LIMIT, sigterm, sigint);
    let _ = stop_tx.send(true);
    // Pulls from peers still receiving are cut now, not at the end of the grace.
    crate::snapshot::partial::peer::cancel_all_pulls(&snapshots);
    if let Some(mut mount) = mounted.take() {
        tokio::task::spawn_blocking(move || mount.unmount()).await?;
    }
    let mut abandoned = 0;
    while let Some(drained) = servers.join_next().await {
        abandoned += drained?.abandoned;
    }
    if abandoned > 0 {
        tracing::warn!(
            connections = abandoned,
            "requests still in flight after snapfs.shutdown_grace_secs ({grace:?}) were abandoned"
        );
    }
    // Snapshot uploads still running (abandoned requests, wait=false creations)
    // abort their multipart uploads rather than leave the parts in the bucket.
    // The policies' own stores too (`opened` holds the daemon's and theirs, once each).
    drop(store);
    tokio::task::spawn_blocking(move || {
        for (_, store) in opened {
            store.stop(FINAL_STOP_LIMIT / 2);
        }
    })
    .await?;
    Ok(())
}

/// The control socket answers `GET /` (within 10 s).
async fn answers_on(socket: &Path) -> anyhow::Result<()> {
    let client = crate::client::Client::new(socket.to_path_buf());
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        client.raw(hyper::Method::GET, "/", None),
    )
    .await;
    match asked {
        Ok(Ok((status, _))) if status.is_success() => Ok(()),
        Ok(Ok((status, _))) => bail!("the control socket answered {status} to GET /"),
        Ok(Err(err)) => bail!("the control socket does not answer: {err}"),
        Err(_) => bail!("the control socket did not answer within 10 s"),
    }
}

/// Once a stop has begun, it ends within `limit` whatever hangs, and a second
/// signal ends it at once. Either way the process exits 1 without the final
/// flush: acknowledged updates are in the pending logs and WALs.
fn bound_the_stop(
    limit: Duration,
    mut sigterm: tokio::signal::unix::Signal,
    mut sigint: tokio::signal::unix::Signal,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        tracing::error!("a second signal: exiting now, without the final flush");
        std::process::exit(1);
    });
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            "the stop did not finish within {limit:?}: exiting without the final flush"
        );
        std::process::exit(1);
    });
}
