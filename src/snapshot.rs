//! The snapshot layer: consistent, deterministic, Qdrant-compatible tar archives
//! built on the fly from frozen shard files.
//!
//! A snapshot is a *view* ([`view`]): the collections it covers are frozen, and the
//! archive is a *layout* ([`layout`]) of pieces (headers, ranges of frozen files) whose
//! offsets are known before the first byte. Nothing is copied: any byte range is
//! produced by pread of the frozen files. Preallocated sparse files become GNU sparse
//! entries ([`tar_header`], `storage::extents`). [`archive`] decides what goes where;
//! [`checksum`] and [`digest`] compute and cache SHA-256s; [`store`] keeps stored
//! snapshots (the snapshots directory or S3, behind one trait). What the layer
//! remembers between calls (views alive, caches, pulls and restores under way) is
//! owned by one [`Snapshots`], made by the daemon beside its storage.

pub mod archive;
pub mod checksum;
mod context;
pub mod digest;
pub mod error;
pub mod inflow;
pub mod intake;
pub mod layout;
pub mod limits;
pub mod names;
pub mod partial;
pub mod progress;
pub mod recover;
pub mod restore;
pub mod segment_layout;
pub mod sparse;
pub mod store;
pub mod tar_header;
pub mod unpack;
pub mod view;

pub use context::Snapshots;
pub use error::SnapshotError;
pub use view::{Scope, SnapshotView};
