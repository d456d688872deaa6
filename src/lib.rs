//! snapfs: vector collections kept as real Qdrant Edge shards, served over a
//! Qdrant-compatible control socket (and, in later layers, a FUSE mount of snapshots).
//!
//! Layers, top to bottom; data flows one way and nothing below reaches up:
//! - [`api`]: the HTTP/1.1 control API (Unix socket, optional TCP with an API key);
//! - [`client`] and [`cli`]: the command-line client that talks to that socket;
//! - [`storage`]: collections, shards, the per-shard writer and its freeze.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod snapshot;
pub mod storage;
