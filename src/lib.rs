//! snapfs: vector collections kept as real Qdrant Edge shards, served over a
//! Qdrant-compatible control socket and a FUSE mount of collections and snapshots.
//!
//! Layers, top to bottom; data flows one way and nothing below reaches up:
//! - [`grpc`]: Qdrant's gRPC API (optional TCP listener): translates protobuf to the
//!   API layer's protocol-neutral operations and back;
//! - [`api`]: the HTTP/1.1 control API (Unix socket, optional TCP with an API key);
//! - [`fs`]: the FUSE mount (a thin adapter over a fuser-free core);
//! - [`client`] and [`cli`]: the command-line client that talks to that socket;
//! - [`snapshot`]: views, archive layouts, checksums, stored snapshots;
//! - [`storage`]: collections, shards, the per-shard writer and its freeze.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fetch;
pub mod fs;
pub mod grpc;
pub mod metrics;
pub mod snapshot;
pub mod storage;
