//! Backup policies: what the daemon backs up by itself, when, what it keeps, and how
//! it proves the backups restore. This layer is pure decisions over the snapshot
//! layer's types — the policy file's shape ([`policy`]), when a job is due
//! ([`schedule`]), which generations a retention keeps ([`retention`]) and the record
//! of past runs kept across restarts ([`ledger`]). The service runs the jobs
//! (`crate::service::backups`); REST, the CLI and the mount only show and start them.
//!
//! Built so because every part here must be exact and testable without a clock or a
//! store: a schedule is a function of the last due time and now, a retention a
//! function of the generations' times and tags (restic's own rules, through
//! rustic_core's `KeepOptions`, so `restic forget` and snapfs agree on a repository
//! they share).

pub mod ledger;
pub mod policy;
pub mod retention;
pub mod schedule;

pub use policy::{Policy, PolicyFile};
