//! The integration tests, one binary: every module below starts the real daemon
//! (`support::Daemon`, `support::MountedDaemon`) or drives the library, per area.
//! One binary links the engine once; a test binary per file linked it sixteen
//! times. Run one area with `cargo test --test integration -- mount::`, one test
//! with its name. The soak runs alone (tests/soak.rs). docs/TESTING.md has the rest.

// The support helpers are `pub` for the modules of this one crate to share.
#![allow(unreachable_pub)]

mod support;

mod api;
mod backups;
mod bad_input;
mod cli;
mod cluster;
mod fetch;
mod freeze;
mod grpc;
mod layers;
mod lifecycle;
mod mount;
mod package;
mod partial;
mod qdrant_client;
mod qdrant_compat;
mod qdrant_rest;
mod repository;
mod restore;
mod routing;
mod s3;
mod snapshots;
mod users;
