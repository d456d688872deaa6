//! Following a Qdrant cluster: the decisions, apart from the network and the store.
//!
//! snapfs keeps a read-only **mirror** collection for each followed collection of a
//! Qdrant cluster and brings each mirror shard up to date with Qdrant's own partial
//! snapshot protocol, pulled from a node that holds an Active replica of it. After a
//! round it records a **cluster generation**: the stored shard snapshot of every
//! followed shard plus a manifest naming them (configs, placement, aliases, counts,
//! the round's span), kept in the daemon's snapshot store.
//!
//! This layer is pure: the `follow:` section ([`config`]), which replica a shard is
//! pulled from and what a layout says about a collection ([`layout`]), Qdrant's
//! collection configuration turned into a create request ([`qdrant_config`]) and the
//! manifest's shape with its bounds on reading ([`manifest`]). The service runs the
//! rounds and restores (`crate::service::follow`); built so because the per-case
//! decisions (a node down, a shard in transfer, a config that changed) must be exact
//! and testable without a cluster.

pub mod config;
pub mod layout;
pub mod manifest;
pub mod qdrant_config;

pub use config::{FollowFile, FollowedCluster};
pub use manifest::ClusterManifest;
