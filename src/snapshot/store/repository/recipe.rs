//! A generation's recipe, `.snapfs-archive.json` at the root of its restic tree: what
//! it takes to put the archive's exact bytes back together from the members stored
//! beside it. The members are the archive's entries as plain files and directories
//! (what `restic restore` and `restic dump` give back); the tar headers are not
//! stored, since snapfs writes them deterministically from the path, the size, the
//! data extents of a sparse file and the one modification time every header carries.
//! The recipe also records the archive's size and SHA-256, so a generation is
//! described without being read, and checked when it is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::snapshot::layout::{ArchiveBuilder, ArchiveLayout, EntryKind, RangeRead};
use crate::snapshot::view::Scope;

/// The recipe's file name at the root of a generation's tree (a dot name: no archive
/// member can have it).
pub const RECIPE_NAME: &str = ".snapfs-archive.json";
const FORMAT: &str = "snapfs-archive";
/// A recipe larger than this is not believed (a shard of a million files would
/// need ~100 MB; this is far above any real one and bounds what is parsed).
pub const MAX_RECIPE: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub format: String,
    pub version: u32,
    /// The snapshot's name (`<c>-<time>.snapshot`, …).
    pub name: String,
    pub scope: ScopeRecord,
    /// The archive's exact size and SHA-256 (64 lowercase hex).
    pub size: u64,
    pub sha256: String,
    /// The modification time in every header (seconds).
    pub mtime: u64,
    /// The archive's entries in archive order.
    pub entries: Vec<RecipeEntry>,
    /// An imported archive (not written by snapfs, so not in its tar dialect) is
    /// kept whole, as this one member of the tree; `entries` is empty then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScopeRecord {
    Collection { collection: String },
    Shard { collection: String, shard: u32 },
    Full,
}

impl ScopeRecord {
    pub fn of(scope: &Scope) -> ScopeRecord {
        match scope {
            Scope::Collection(c) => ScopeRecord::Collection {
                collection: c.clone(),
            },
            Scope::Shard(c, id) => ScopeRecord::Shard {
                collection: c.clone(),
                shard: *id,
            },
            Scope::Full => ScopeRecord::Full,
        }
    }

    pub fn scope(&self) -> Scope {
        match self {
            ScopeRecord::Collection { collection } => Scope::Collection(collection.clone()),
            ScopeRecord::Shard { collection, shard } => Scope::Shard(collection.clone(), *shard),
            ScopeRecord::Full => Scope::Full,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecipeEntry {
    /// As in the archive; a directory's ends in `/`.
    pub path: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// A sparse entry's data extents; absent for a regular one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extents: Option<Vec<(u64, u64)>>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RecipeEntry {
    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
}

impl Recipe {
    /// The recipe of `layout`, whose bytes hash to `sha256`.
    pub fn of(layout: &ArchiveLayout, name: &str, scope: &Scope, sha256: &str) -> Recipe {
        let entries = layout
            .entries()
            .iter()
            .map(|entry| {
                let extents = match &entry.kind {
                    EntryKind::File { extents, .. } | EntryKind::Ranged { extents } => {
                        let dense = extents == &[(0, entry.size)] || entry.size == 0;
                        (!dense).then(|| extents.clone())
                    }
                    _ => None,
                };
                RecipeEntry {
                    path: entry.path.clone(),
                    size: entry.size,
                    extents,
                }
            })
            .collect();
        Recipe {
            format: FORMAT.into(),
            version: 1,
            name: name.into(),
            scope: ScopeRecord::of(scope),
            size: layout.size(),
            sha256: sha256.into(),
            mtime: layout.mtime(),
            entries,
            whole: None,
        }
    }

    /// The recipe of an archive imported whole as member `member`.
    pub fn whole(member: &str, name: &str, scope: &Scope, size: u64, sha256: &str) -> Recipe {
        Recipe {
            format: FORMAT.into(),
            version: 1,
            name: name.into(),
            scope: ScopeRecord::of(scope),
            size,
            sha256: sha256.into(),
            mtime: 0,
            entries: Vec::new(),
            whole: Some(member.into()),
        }
    }

    /// Parse and check a recipe read from a repository: its format, and that every
    /// entry is a plain relative path with extents inside its size.
    pub fn parse(bytes: &[u8]) -> Result<Recipe, String> {
        let recipe: Recipe = serde_json::from_slice(bytes).map_err(|e| {
            // Where, not what: serde's message may quote the recipe's bytes.
            format!(
                "recipe is not valid (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if recipe.format != FORMAT || recipe.version != 1 {
            return Err("recipe of an unknown format".into());
        }
        if recipe.sha256.len() != 64 || !recipe.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("recipe without a SHA-256".into());
        }
        if let Some(member) = &recipe.whole
            && (!recipe.entries.is_empty()
                || member.is_empty()
                || member.contains('/')
                || member.starts_with('.'))
        {
            return Err("recipe of a whole archive names no plain member".into());
        }
        for entry in &recipe.entries {
            let path = entry.path.trim_end_matches('/');
            if path.is_empty()
                || path
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
            {
                return Err("recipe names a path that is not a plain relative one".into());
            }
            if let Some(extents) = &entry.extents {
                let mut end = 0u64;
                for (offset, len) in extents {
                    let stop = offset.checked_add(*len).filter(|stop| *stop <= entry.size);
                    match stop {
                        Some(stop) if *offset >= end => end = stop,
                        _ => return Err("recipe has extents outside their file".into()),
                    }
                }
            }
        }
        Ok(recipe)
    }

    /// The archive's layout, each member's bytes read through `member(path, size)`;
    /// an error if it does not come to the recorded size.
    pub fn layout(
        &self,
        mut member: impl FnMut(&str, u64) -> std::io::Result<Arc<dyn RangeRead>>,
    ) -> std::io::Result<ArchiveLayout> {
        let mut builder = ArchiveBuilder::new(self.mtime);
        for entry in &self.entries {
            if entry.is_dir() {
                builder.dir(&entry.path);
                continue;
            }
            let extents = entry
                .extents
                .clone()
                .unwrap_or_else(|| vec![(0, entry.size)]);
            let reader = member(&entry.path, entry.size)?;
            builder.ranged(&entry.path, entry.size, extents, reader);
        }
        let layout = builder.finish()?;
        if layout.size() != self.size {
            return Err(std::io::Error::other(
                "the generation's entries do not add up to its recorded size",
            ));
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slice(Vec<u8>);
    impl RangeRead for Slice {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            let start = offset as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn a_recipe_rebuilds_the_same_bytes_from_member_contents() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(&sparse).unwrap();
            f.set_len(8 << 20).unwrap();
            f.seek(SeekFrom::Start(3 << 20)).unwrap();
            f.write_all(&[9u8; 10_000]).unwrap();
        }
        let dense = dir.path().join("dense");
        std::fs::write(&dense, b"dense content").unwrap();
        let mut builder = ArchiveBuilder::new(1_700_000_123);
        builder.dir("segments");
        builder.file("segments/sparse", &sparse).unwrap();
        builder.file("segments/dense", &dense).unwrap();
        builder.bytes("config.json", b"{}".to_vec());
        let layout = builder.finish().unwrap();
        let mut original = vec![0u8; layout.size() as usize];
        layout.read_at(0, &mut original).unwrap();

        let recipe = Recipe::of(
            &layout,
            "c.snapshot",
            &Scope::Collection("c".into()),
            &"0".repeat(64),
        );
        let text = serde_json::to_vec(&recipe).unwrap();
        let parsed = Recipe::parse(&text).unwrap();
        assert_eq!(parsed, recipe);
        let rebuilt = parsed
            .layout(|path, _| {
                let content = match path {
                    "segments/sparse" => std::fs::read(&sparse).unwrap(),
                    "segments/dense" => std::fs::read(&dense).unwrap(),
                    "config.json" => b"{}".to_vec(),
                    other => panic!("asked for {other}"),
                };
                Ok(Arc::new(Slice(content)) as Arc<dyn RangeRead>)
            })
            .unwrap();
        let mut again = vec![0u8; rebuilt.size() as usize];
        rebuilt.read_at(0, &mut again).unwrap();
        assert!(again == original, "the rebuilt archive differs");

        // What is not a recipe is refused without quoting it.
        let why = Recipe::parse(br#"{"format": 7, "secret-bytes": "x"}"#).unwrap_err();
        assert!(!why.contains("secret") && !why.contains('7'), "{why}");
        // A recipe that leaves its directory, or extents past the end, is refused.
        let mut bad = recipe.clone();
        bad.entries[1].path = "../escape".into();
        assert!(Recipe::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        let mut bad = recipe.clone();
        let sparse_entry = bad
            .entries
            .iter_mut()
            .find(|e| e.extents.is_some())
            .unwrap();
        sparse_entry.extents = Some(vec![(sparse_entry.size, 1)]);
        assert!(Recipe::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        // One whose sizes do not add up to the recorded size is refused when read.
        let mut bad = recipe;
        bad.size += 512;
        assert!(
            bad.layout(|_, size| Ok(Arc::new(Slice(vec![0; size as usize])) as Arc<dyn RangeRead>))
                .is_err()
        );
    }
}
