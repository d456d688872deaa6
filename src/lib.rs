//! snapfs: vector collections kept as real Qdrant Edge shards, served over a
//! Qdrant-compatible control socket and a FUSE mount of collections and snapshots.
//!
//! Layers, top to bottom; data flows one way and nothing below reaches up:
//! - adapters, which never import each other: [`api`] (REST: HTTP/1.1 on the Unix
//!   socket, optionally TCP with an API key), [`grpc`] (Qdrant's gRPC API), [`fs`]
//!   (the FUSE mount), [`cli`] with [`client`] (the command line, over the socket);
//! - [`service`]: what a request does, whatever the protocol, and the listeners;
//! - [`snapshot`]: views, archive layouts, checksums, restores, stored snapshots
//!   (behind one trait, [`snapshot::store`]);
//! - [`storage`]: collections, shards, the per-shard writer and its freeze.

pub mod api;
pub mod backup;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fetch;
pub mod fs;
pub mod grpc;
pub mod host;
pub mod metrics;
pub mod service;
pub mod snapshot;
pub mod storage;
