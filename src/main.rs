//! The `snapfs` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use snapfs::client::Client;
use snapfs::config::{self, Flags};
use snapfs::{cli, daemon};

/// jemalloc, as Qdrant ships: with glibc's malloc the daemon kept the peak of parsing
/// large upsert bodies (RssAnon 130–175 MiB after a bulk load, 41 MiB for the same
/// data after a restart). docs/BENCHMARKS.md has the figures.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read at its start; `MALLOC_CONF` in the environment still
/// overrides): a background thread purges dirty pages, freed memory goes back to
/// the system after a second (muzzy pages at once), and few arenas, as snapfs's
/// threads are mostly blocked on I/O.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:4\0";

#[derive(Parser)]
#[command(
    name = "snapfs",
    version,
    about = "Vector collections with snapshots you back up and restore with ordinary file tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (logs to stderr; SIGINT/SIGTERM stop it cleanly).
    Serve(Flags),
    /// Create, list, inspect and delete collections.
    Collections {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: CollectionsCommand,
    },
    /// Fill and count points.
    Points {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: PointsCommand,
    },
    /// Create, list, download and delete stored snapshots.
    Snapshot {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Restore a collection from a snapshot: a local file (uploaded), a stored
    /// snapshot's name, or file://… inside the daemon's snapshots directory.
    Recover {
        #[command(flatten)]
        socket: SocketArg,
        collection: String,
        /// A snapshot file, a stored snapshot's name, or file:///path.
        source: String,
        /// Expected SHA-256 of the snapshot [default: SOURCE.checksum or SOURCE.sha256 when present].
        #[arg(long, conflicts_with = "checksum_file")]
        checksum: Option<String>,
        /// A sidecar holding the expected SHA-256 (bare hex or a sha256sum line).
        #[arg(long)]
        checksum_file: Option<PathBuf>,
        /// snapshot (default), replica or no_sync; on one node all restore the snapshot as it is.
        #[arg(long, value_parser = ["snapshot", "replica", "no_sync"])]
        priority: Option<String>,
        /// Restore one shard of an existing collection from a shard snapshot.
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Partial snapshots of a shard: its manifest, a diff against a manifest,
    /// applying a diff, pulling a peer's changes.
    Partial {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: PartialCommand,
    },
    /// The restic repository that keeps stored snapshots (snapshots_storage:
    /// repository), worked on directly with the daemon's configuration.
    Repo {
        /// YAML configuration file, as for serve (the environment applies too).
        #[arg(long = "config")]
        config_file: Option<PathBuf>,
        /// Data directory, as for serve.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// The daemon's backup policies (backups.policies): status, a run now, what a
    /// retention would remove.
    Backup {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// The followed Qdrant clusters (follow.clusters): status, a round now.
    Follow {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: FollowCommand,
    },
    /// Generations of followed Qdrant clusters: list, show, forget, restore into a
    /// Qdrant cluster.
    Cluster {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Check what a first run needs (FUSE, the data directory's file system, the
    /// socket, the snapshot store, the clock) and say how to fix each; exit 1 when a
    /// check fails. Changes nothing.
    Doctor {
        /// YAML configuration file, as for serve (the environment applies too).
        #[arg(long = "config")]
        config_file: Option<PathBuf>,
        /// Data directory, as for serve.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Mount point, as for serve (checks the right to mount).
        #[arg(long)]
        mount: Option<PathBuf>,
    },
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions.
    Manpage,
    /// Check a snapshot file offline: structure, embedded digests, whole-file checksum.
    Verify {
        file: PathBuf,
        /// Expected SHA-256 of the whole file [default: FILE.checksum when present].
        #[arg(long)]
        checksum: Option<String>,
    },
}

#[derive(Args)]
struct SnapshotTarget {
    /// Collection name (omit with --full).
    collection: Option<String>,
    /// A shard of the collection instead of the whole collection.
    #[arg(long)]
    shard: Option<u32>,
    /// Full-storage snapshots (every collection).
    #[arg(long)]
    full: bool,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Create a stored snapshot.
    Create {
        #[command(flatten)]
        target: SnapshotTarget,
        /// Return at once; the snapshot is listed when complete.
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// List stored snapshots (name, size, creation time, checksum).
    List {
        #[command(flatten)]
        target: SnapshotTarget,
        /// Also how each was made, where the store records it (a repository
        /// generation's id, bytes covered and added, dedup ratio, duration, files).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Download a stored snapshot and verify its checksum.
    Download {
        #[command(flatten)]
        target: SnapshotTarget,
        /// Snapshot name, as listed.
        #[arg(long)]
        name: String,
        /// Output file [default: the snapshot name].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Delete a stored snapshot and its checksum file.
    Delete {
        #[command(flatten)]
        target: SnapshotTarget,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Per policy: last run (result, duration, bytes added), next runs, snapshots
    /// kept, drills, what runs now.
    Status {
        /// The daemon's JSON, as `GET /snapfs/backups` gives it.
        #[arg(long)]
        json: bool,
    },
    /// Run a policy's backup (or its retention, or its drill) now and follow it.
    Run {
        policy: String,
        #[arg(long, default_value = "backup", value_parser = ["backup", "retention", "drill"])]
        job: String,
        /// Start it and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// What a policy's retention keeps and removes (restic's forget rules).
    Forget {
        policy: String,
        /// Only show what it would remove.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum FollowCommand {
    /// Per cluster: nodes, rounds, the last round's outcome (stale shards, skipped
    /// collections).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run a round now and wait for it (pulls, then a generation).
    Run {
        cluster: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// A cluster's generations, oldest first.
    Generations {
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// A generation's manifest.
    Show { cluster: String, generation: String },
    /// Forget a generation (its manifest, and shard snapshots no other generation names).
    Forget { cluster: String, generation: String },
    /// Restore a generation into a Qdrant cluster: every node's REST URL with
    /// --node; the API key from SNAPFS_TARGET_API_KEY.
    Restore {
        cluster: String,
        generation: String,
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// List what it would do; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Create the repository the configuration names (the daemon also creates it on
    /// first use); with one there already, check that the password opens it.
    Init,
    /// Take snapshot archives in as generations: one FILE (with --collection, --shard
    /// or --full), or a DIR laid out as a snapshots directory (<c>/<name>,
    /// <c>/shards/<id>/<name>, <name> for full snapshots). Each is checked first
    /// (and against its .checksum sidecar) and keeps its name and bytes.
    Import {
        path: PathBuf,
        #[command(flatten)]
        target: SnapshotTarget,
    },
}

#[derive(Subcommand)]
enum PartialCommand {
    /// Print the shard's manifest (Qdrant's version form; --files: content hashes).
    Manifest {
        collection: String,
        shard: u32,
        /// The content form: every file with its SHA-256.
        #[arg(long)]
        files: bool,
    },
    /// Write the partial snapshot that takes a receiver with MANIFEST to the shard's state.
    Create {
        collection: String,
        shard: u32,
        /// The receiver's manifest (either form), as `partial manifest` prints it.
        #[arg(long)]
        manifest: PathBuf,
        /// Output file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Apply a partial snapshot file to the shard (atomically; reads keep answering).
    Apply {
        collection: String,
        shard: u32,
        file: PathBuf,
    },
    /// Pull the shard's changes from a peer (snapfs or Qdrant, e.g. http://peer:6333).
    Pull {
        collection: String,
        shard: u32,
        /// The peer's base URL.
        #[arg(long)]
        from: String,
        /// The peer's API key.
        #[arg(long, env = "SNAPFS_PEER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The manifest to send: content (snapfs peers' default) or versions (Qdrant's;
        /// the default for other peers).
        #[arg(long, value_parser = ["content", "versions"])]
        form: Option<String>,
    },
}

#[derive(Args)]
struct SocketArg {
    /// The daemon's control socket.
    #[arg(
        long,
        env = "SNAPFS_SOCKET",
        default_value = "./snapfs-data/snapfs.sock",
        global = true
    )]
    socket: PathBuf,
}

#[derive(Subcommand)]
enum CollectionsCommand {
    /// List collection names.
    List,
    /// Create a collection with one unnamed dense vector.
    Create {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
        dim: u64,
        #[arg(long, default_value = "Cosine", value_parser = ["Cosine", "Euclid", "Dot", "Manhattan"])]
        distance: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        shards: u32,
    },
    /// Show a collection's configuration and counts.
    Info { name: String },
    /// Delete a collection and its data.
    Delete { name: String },
}

#[derive(Subcommand)]
enum PointsCommand {
    /// Upsert points from a JSON-lines file: one {"id", "vector", "payload"} per line.
    Upsert {
        collection: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
    },
    /// Count the points of a collection.
    Count { collection: String },
    /// Upsert random points (for demos and benchmarks).
    Generate {
        collection: String,
        #[arg(long)]
        count: u64,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
        dim: u64,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
        /// First point id.
        #[arg(long, default_value_t = 0)]
        start: u64,
    },
}

/// Our own info logs; the engine's only from warnings up, without two start-up
/// warnings it repeats for every shard about process-wide settings it cannot be given
/// through its public API (feature flags, a multi-mmap support probe).
const DEFAULT_LOG_FILTER: &str = "info,qdrant_edge=warn,qdrant_edge::common::flags=error,qdrant_edge::common::mmap::ops=error,fuser=error";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAPFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only for a terminal: a log file or the journal gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Collections { socket, command } => client_command(socket, |client| async move {
            match command {
                CollectionsCommand::List => cli::collections_list(&client).await,
                CollectionsCommand::Create {
                    name,
                    dim,
                    distance,
                    shards,
                } => cli::collections_create(&client, &name, dim, &distance, shards).await,
                CollectionsCommand::Info { name } => cli::collections_info(&client, &name).await,
                CollectionsCommand::Delete { name } => {
                    cli::collections_delete(&client, &name).await
                }
            }
        }),
        Command::Points { socket, command } => client_command(socket, |client| async move {
            match command {
                PointsCommand::Upsert {
                    collection,
                    file,
                    batch,
                } => cli::points_upsert(&client, &collection, &file, batch as usize).await,
                PointsCommand::Count { collection } => {
                    cli::points_count(&client, &collection).await
                }
                PointsCommand::Generate {
                    collection,
                    count,
                    dim,
                    batch,
                    start,
                } => {
                    cli::points_generate(&client, &collection, count, dim as usize, batch, start)
                        .await
                }
            }
        }),
        Command::Snapshot { socket, command } => client_command(socket, |client| async move {
            use cli::snapshots::{self, Target};
            let target_of = |t: SnapshotTarget| Target::new(t.collection, t.shard, t.full);
            match command {
                SnapshotCommand::Create {
                    target,
                    asynchronous,
                } => snapshots::create(&client, &target_of(target)?, asynchronous).await,
                SnapshotCommand::List { target, verbose } => {
                    snapshots::list(&client, &target_of(target)?, verbose).await
                }
                SnapshotCommand::Download {
                    target,
                    name,
                    output,
                } => snapshots::download(&client, &target_of(target)?, &name, output).await,
                SnapshotCommand::Delete { target, name } => {
                    snapshots::delete(&client, &target_of(target)?, &name).await
                }
            }
        }),
        Command::Partial { socket, command } => client_command(socket, |client| async move {
            use cli::partial;
            match command {
                PartialCommand::Manifest {
                    collection,
                    shard,
                    files,
                } => partial::manifest(&client, &collection, shard, files).await,
                PartialCommand::Create {
                    collection,
                    shard,
                    manifest,
                    output,
                } => partial::create(&client, &collection, shard, &manifest, &output).await,
                PartialCommand::Apply {
                    collection,
                    shard,
                    file,
                } => partial::apply(&client, &collection, shard, &file).await,
                PartialCommand::Pull {
                    collection,
                    shard,
                    from,
                    api_key,
                    form,
                } => {
                    partial::pull(
                        &client,
                        &collection,
                        shard,
                        &from,
                        api_key.as_deref(),
                        form.as_deref(),
                    )
                    .await
                }
            }
        }),
        Command::Follow { socket, command } => client_command(socket, |client| async move {
            match command {
                FollowCommand::Status { json } => cli::cluster::status(&client, json).await,
                FollowCommand::Run { cluster, json } => {
                    cli::cluster::round(&client, &cluster, json).await
                }
            }
        }),
        Command::Cluster { socket, command } => client_command(socket, |client| async move {
            match command {
                ClusterCommand::Generations { cluster, json } => {
                    cli::cluster::generations(&client, &cluster, json).await
                }
                ClusterCommand::Show {
                    cluster,
                    generation,
                } => cli::cluster::show(&client, &cluster, &generation).await,
                ClusterCommand::Forget {
                    cluster,
                    generation,
                } => cli::cluster::forget(&client, &cluster, &generation).await,
                ClusterCommand::Restore {
                    cluster,
                    generation,
                    nodes,
                    dry_run,
                } => cli::cluster::restore(&client, &cluster, &generation, &nodes, dry_run).await,
            }
        }),
        Command::Backup { socket, command } => client_command(socket, |client| async move {
            match command {
                BackupCommand::Status { json } => cli::backup::status(&client, json).await,
                BackupCommand::Run {
                    policy,
                    job,
                    detach,
                } => cli::backup::run(&client, &policy, &job, detach).await,
                BackupCommand::Forget { policy, dry_run } => {
                    cli::backup::forget(&client, &policy, dry_run).await
                }
            }
        }),
        Command::Doctor {
            config_file,
            data_dir,
            mount,
        } => doctor(config_file, data_dir, mount),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "snapfs", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(anyhow::Error::from)
        }
        Command::Verify { file, checksum } => cli::snapshots::verify(&file, checksum),
        Command::Repo {
            config_file,
            data_dir,
            command,
        } => repo(config_file, data_dir, command),
        Command::Recover {
            socket,
            collection,
            source,
            checksum,
            checksum_file,
            priority,
            shard,
        } => client_command(socket, |client| async move {
            cli::recover::recover(
                &client,
                cli::recover::RecoverArgs {
                    collection,
                    source,
                    checksum,
                    checksum_file,
                    priority,
                    shard,
                },
            )
            .await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    mount: Option<PathBuf>,
) -> anyhow::Result<()> {
    let flags = Flags {
        config_file,
        data_dir,
        mount,
        ..Flags::default()
    };
    let config = config::load(&flags, std::env::vars())?;
    let setup = cli::doctor::Setup {
        data_dir: &config.data_dir,
        socket: &config.socket,
        mount: config.mount.is_some(),
        allow_other: config.allow_other,
        group: config.group.as_deref(),
        snapshots_path: &config.snapshots_path,
        s3: config.s3.as_ref(),
        repository: config.repository.as_ref(),
    };
    if cli::doctor::run(&setup) {
        Ok(())
    } else {
        anyhow::bail!("some checks failed: see the fixes above")
    }
}

fn repo(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    command: RepoCommand,
) -> anyhow::Result<()> {
    init_logging();
    let flags = Flags {
        config_file,
        data_dir,
        ..Flags::default()
    };
    let config = config::load(&flags, std::env::vars())?;
    // S3 locations wait for their requests on a runtime; this thread blocks.
    let runtime = tokio::runtime::Runtime::new()?;
    let _entered = runtime.enter();
    match command {
        RepoCommand::Init => cli::repo::init(config.repository.as_ref()),
        RepoCommand::Import { path, target } => {
            use snapfs::snapshot::Scope;
            let scope = match (target.collection, target.shard, target.full) {
                (None, None, false) => None,
                (None, None, true) => Some(Scope::Full),
                (Some(c), None, false) => Some(Scope::Collection(c)),
                (Some(c), Some(id), false) => Some(Scope::Shard(c, id)),
                _ => anyhow::bail!("give a collection (and --shard), or --full"),
            };
            cli::repo::import(config.repository.as_ref(), &path, scope)
        }
    }
}

fn serve(flags: Flags) -> anyhow::Result<()> {
    init_logging();
    let config = config::load(&flags, std::env::vars())?;
    daemon::run(config)
}

fn client_command<F, Fut>(socket: SocketArg, run: F) -> anyhow::Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(Client::new(socket.socket)))
}
