//! `snapfs repo`: the restic repository that keeps stored snapshots
//! (`snapshots_storage: repository`), worked on directly with the daemon's own
//! configuration (the daemon may run meanwhile: restic's locks keep them apart).
//! `init` creates it (a daemon also does on first use); `import` takes existing
//! snapshot archives in, so users of the plain local or S3 stores can move over.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::snapshot::Scope;
use crate::snapshot::store::SNAPSHOT_EXT;
use crate::snapshot::store::repository::{RepositoryConfig, RepositoryStore};

/// The repository the configuration names (`None`: it names none), opened (created
/// when there is none).
pub fn open(config: Option<&RepositoryConfig>) -> anyhow::Result<RepositoryStore> {
    let Some(repository) = config else {
        bail!(
            "the configuration does not keep snapshots in a repository (storage.snapshots_config.snapshots_storage: repository)"
        );
    };
    Ok(RepositoryStore::open(repository)?)
}

pub fn init(config: Option<&RepositoryConfig>) -> anyhow::Result<()> {
    let store = open(config)?;
    println!(
        "{}: ready",
        crate::snapshot::store::SnapshotStore::location(&store)
    );
    Ok(())
}

/// One archive to take in, and what it is a snapshot of.
struct Found {
    file: PathBuf,
    scope: Scope,
}

/// `path` a file (its scope given) or a directory laid out as a snapshots directory
/// is: `<c>/<name>`, `<c>/shards/<id>/<name>`, `<name>` (full snapshots).
fn find(path: &Path, given: Option<Scope>) -> anyhow::Result<Vec<Found>> {
    if path.is_file() {
        let Some(scope) = given else {
            bail!("importing one file needs --collection (and --shard) or --full");
        };
        return Ok(vec![Found {
            file: path.to_path_buf(),
            scope,
        }]);
    }
    if given.is_some() {
        bail!("--collection, --shard and --full are for one file; a directory says by its layout");
    }
    let snapshots_in = |dir: &Path| -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(SNAPSHOT_EXT)
                && !name.starts_with('.')
                && entry.file_type()?.is_file()
            {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    };
    let mut found: Vec<Found> = snapshots_in(path)?
        .into_iter()
        .map(|file| Found {
            file,
            scope: Scope::Full,
        })
        .collect();
    let mut collections: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    collections.sort();
    for dir in collections {
        let collection = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in snapshots_in(&dir)? {
            found.push(Found {
                file,
                scope: Scope::Collection(collection.clone()),
            });
        }
        let shards = dir.join("shards");
        if shards.is_dir() {
            for entry in std::fs::read_dir(&shards)? {
                let entry = entry?;
                let Ok(id) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                for file in snapshots_in(&entry.path())? {
                    found.push(Found {
                        file,
                        scope: Scope::Shard(collection.clone(), id),
                    });
                }
            }
        }
    }
    Ok(found)
}

/// Take `path` in: each archive checked (its `.checksum` sidecar too, when it has one)
/// and stored as a generation under its own name. Stops at the first failure.
pub fn import(
    config: Option<&RepositoryConfig>,
    path: &Path,
    given: Option<Scope>,
) -> anyhow::Result<()> {
    let store = open(config)?;
    let found = find(path, given)?;
    if found.is_empty() {
        bail!("no snapshot archives (*.snapshot) in {}", path.display());
    }
    let (mut taken, mut there) = (0, 0);
    for Found { file, scope } in found {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let sidecar = PathBuf::from(format!("{}.checksum", file.display()));
        let checksum = std::fs::read_to_string(&sidecar)
            .ok()
            .and_then(|text| crate::snapshot::checksum::sidecar_checksum(&text));
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{name}: checking, then storing"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let result = store.import(&scope, &name, &file, checksum.as_deref());
        bar.finish_and_clear();
        match result.with_context(|| format!("importing {}", file.display()))? {
            Some(stored) => {
                taken += 1;
                println!(
                    "{name}: stored ({} bytes, sha256 {})",
                    stored.size,
                    stored.checksum.unwrap_or_default()
                );
            }
            None => {
                there += 1;
                println!("{name}: already in the repository");
            }
        }
    }
    println!("{taken} imported, {there} already there");
    Ok(())
}
