//! The `follow:` section of the configuration file: the Qdrant clusters snapfs
//! follows. Read straight from the YAML text, as `backups:` is, so a refusal names
//! its line; the API key is read from where the section says (an environment
//! variable, a file, or the file itself), never from the command line.
//!
//! ```yaml
//! follow:
//!   clusters:
//!     - name: prod                       # mirrors are named prod.<collection>
//!       nodes: ["http://10.0.0.1:6333", "http://10.0.0.2:6333", "http://10.0.0.3:6333"]
//!       api_key_env: QDRANT_API_KEY      # or api_key_file: /etc/snapfs/qdrant.key
//!       collections: ["*"]               # names, or "*" for every collection of the cluster
//!       every: 15m                       # a round every 15 minutes (omit: on demand only)
//!       per_node: 2                      # pulls at once from one node
//!       round_deadline: 30m              # pulls still running then are cancelled
//!       on_stale: record                 # or fail: a shard no replica could give
//!       retention: { keep_last: 24, keep_daily: 7 }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::backup::policy::{Interval, Retention};

/// The file's `follow:` section (absent: nothing followed).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowFile {
    #[serde(default)]
    pub clusters: Vec<FollowedCluster>,
}

/// What a round does with a shard no Active replica could give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    /// The shard keeps its previous state; the generation says it is stale.
    Record,
    /// The round fails and records no generation.
    Fail,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ClusterSpec")]
pub struct FollowedCluster {
    pub name: String,
    /// The nodes' REST base URLs (Qdrant's `/cluster` names only their p2p ports).
    pub nodes: Vec<String>,
    pub api_key: Option<String>,
    /// Collection names; `*` stands for every collection of the cluster at each round.
    pub collections: Vec<String>,
    pub every: Option<Duration>,
    pub per_node: usize,
    pub round_deadline: Duration,
    pub on_stale: OnStale,
    pub retention: Option<Retention>,
}

impl std::fmt::Debug for FollowedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowedCluster")
            .field("name", &self.name)
            .field("nodes", &self.nodes)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collections", &self.collections)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl FollowedCluster {
    /// The mirror of the cluster's collection `collection`.
    pub fn mirror_of(&self, collection: &str) -> String {
        format!("{}.{collection}", self.name)
    }

    /// The cluster collection a mirror name stands for.
    pub fn source_of<'a>(&self, mirror: &'a str) -> Option<&'a str> {
        mirror
            .strip_prefix(self.name.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| !rest.is_empty())
    }

    pub fn follows_all(&self) -> bool {
        self.collections.iter().any(|c| c == "*")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    name: String,
    nodes: Vec<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<std::path::PathBuf>,
    collections: Vec<String>,
    #[serde(default)]
    every: Option<Interval>,
    #[serde(default)]
    per_node: Option<usize>,
    #[serde(default)]
    round_deadline: Option<Interval>,
    #[serde(default)]
    on_stale: Option<OnStale>,
    #[serde(default)]
    retention: Option<Retention>,
}

/// The most nodes one cluster may list (a typo'd list, not a real cluster, beyond).
const MAX_NODES: usize = 256;
const DEFAULT_ROUND_DEADLINE: Duration = Duration::from_secs(3600);

impl TryFrom<ClusterSpec> for FollowedCluster {
    type Error = String;

    fn try_from(spec: ClusterSpec) -> Result<FollowedCluster, String> {
        if !crate::backup::policy::is_plain_name(&spec.name) {
            return Err(format!(
                "cluster name {:?}: 1 to 64 letters, digits, `-` or `_`",
                spec.name
            ));
        }
        let name = spec.name;
        if spec.nodes.is_empty() || spec.nodes.len() > MAX_NODES {
            return Err(format!(
                "cluster {name}: nodes: 1 to {MAX_NODES} REST URLs of the cluster's nodes"
            ));
        }
        let mut nodes = Vec::new();
        for node in &spec.nodes {
            let url = reqwest::Url::parse(node)
                .map_err(|e| format!("cluster {name}: node {node:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "cluster {name}: node {node:?} must be an http:// or https:// URL"
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "cluster {name}: node {node:?}: no credentials in URLs (api_key_env or api_key_file)"
                ));
            }
            let base = node.trim_end_matches('/').to_string();
            if nodes.contains(&base) {
                return Err(format!("cluster {name}: node {node} is listed twice"));
            }
            nodes.push(base);
        }
        let sources = [
            spec.api_key.is_some(),
            spec.api_key_env.is_some(),
            spec.api_key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(format!(
                "cluster {name}: give one of api_key, api_key_env, api_key_file"
            ));
        }
        let api_key = if let Some(var) = &spec.api_key_env {
            Some(std::env::var(var).map_err(|_| {
                format!("cluster {name}: api_key_env: the environment has no {var}")
            })?)
        } else if let Some(path) = &spec.api_key_file {
            let text = crate::storage::read_bounded(path, 64 * 1024)
                .map_err(|e| format!("cluster {name}: api_key_file {}: {e}", path.display()))?;
            Some(String::from_utf8_lossy(&text).trim().to_string())
        } else {
            spec.api_key
        };
        if api_key
            .as_deref()
            .is_some_and(|k| k.is_empty() || k.chars().any(|c| c.is_control()))
        {
            return Err(format!(
                "cluster {name}: the API key is empty or holds control characters"
            ));
        }
        if spec.collections.is_empty() {
            return Err(format!(
                "cluster {name}: collections: names, or [\"*\"] for every collection"
            ));
        }
        for collection in &spec.collections {
            if collection != "*" {
                crate::storage::names::validate_collection_name(collection)
                    .map_err(|e| format!("cluster {name}: collection {collection:?}: {e}"))?;
            }
        }
        let per_node = spec.per_node.unwrap_or(1);
        if !(1..=16).contains(&per_node) {
            return Err(format!("cluster {name}: per_node: 1 to 16 pulls at once"));
        }
        Ok(FollowedCluster {
            name,
            nodes,
            api_key,
            collections: spec.collections,
            every: spec.every.map(|i| i.0),
            per_node,
            round_deadline: spec.round_deadline.map_or(DEFAULT_ROUND_DEADLINE, |i| i.0),
            on_stale: spec.on_stale.unwrap_or(OnStale::Record),
            retention: spec.retention,
        })
    }
}

impl FollowFile {
    /// The `follow:` section of configuration `text` (YAML). Errors name the line.
    pub fn from_yaml(text: &str) -> Result<FollowFile, String> {
        #[derive(Deserialize)]
        struct Whole {
            #[serde(default)]
            follow: Option<FollowFile>,
        }
        let whole: Whole = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let file = whole.follow.unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for cluster in &file.clusters {
            if !seen.insert(cluster.name.as_str()) {
                return Err(format!(
                    "follow.clusters: two clusters are named {}",
                    cluster.name
                ));
            }
        }
        Ok(file)
    }

    pub fn cluster(&self, name: &str) -> Option<&FollowedCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The followed cluster whose mirror `collection` is, if it is one.
    pub fn mirror_owner(&self, collection: &str) -> Option<&FollowedCluster> {
        self.clusters
            .iter()
            .find(|c| c.source_of(collection).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_cluster_reads_with_its_defaults_and_names_its_mirrors() {
        let file = FollowFile::from_yaml(
            "follow:\n  clusters:\n    - name: prod\n      nodes: [\"http://127.0.0.1:6333/\", \"http://127.0.0.1:6343\"]\n      api_key: k\n      collections: [\"*\"]\n      every: 15m\n",
        )
        .unwrap();
        let prod = file.cluster("prod").unwrap();
        assert_eq!(
            prod.nodes,
            ["http://127.0.0.1:6333", "http://127.0.0.1:6343"]
        );
        assert_eq!(prod.every, Some(Duration::from_secs(900)));
        assert_eq!(prod.per_node, 1);
        assert_eq!(prod.on_stale, OnStale::Record);
        assert!(prod.follows_all());
        assert_eq!(prod.mirror_of("c1"), "prod.c1");
        assert_eq!(prod.source_of("prod.c1.x"), Some("c1.x"));
        assert_eq!(prod.source_of("prod."), None);
        assert_eq!(prod.source_of("production.c1"), None);
        assert!(file.mirror_owner("prod.c1").is_some());
        assert!(!format!("{prod:?}").contains("\"k\""));
    }

    #[test]
    fn bad_sections_are_refused_with_their_line_or_reason() {
        let refused = |yaml: &str| FollowFile::from_yaml(yaml).unwrap_err();
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"ftp://x\"]\n      collections: [c]\n",
        );
        assert!(why.contains("http://"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"http://u:p@x\"]\n      collections: [c]\n",
        );
        assert!(why.contains("no credentials"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"http://x\"]\n      collections: []\n",
        );
        assert!(why.contains("collections"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"http://x\"]\n      collections: [c]\n      api_key_env: SNAPFS_TEST_SURELY_UNSET\n",
        );
        assert!(why.contains("SNAPFS_TEST_SURELY_UNSET"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"http://x\"]\n      collections: [c]\n      per_node: 0\n",
        );
        assert!(why.contains("per_node"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a\n      nodes: [\"http://x\"]\n      collections: [c]\n      colections: [d]\n",
        );
        assert!(why.contains("line"), "{why}");
        let why = refused(
            "follow:\n  clusters:\n    - name: a.b\n      nodes: [\"http://x\"]\n      collections: [c]\n",
        );
        assert!(why.contains("cluster name"), "{why}");
    }
}
