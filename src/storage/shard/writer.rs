//! The writer thread: the one place that changes a shard's files. Updates and
//! freeze/thaw commands come down one FIFO channel, so a freeze is a point in the
//! order of updates; while frozen, updates go to the pending log and are applied
//! at the last thaw.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use qdrant_edge::EdgeShard;

use super::{Ack, ShardState, Waiting};
use crate::storage::error::{Result, StorageError};
use crate::storage::ops::ShardOp;
use crate::storage::pending_log::PendingLog;

pub(super) enum Command {
    Update {
        op: ShardOp,
        wait: bool,
        ack: Ack,
    },
    /// A cut. Answers whether it joined a freeze that updates have passed since
    /// (they wait in the pending log): the files then hold an older state than
    /// this cut's.
    Freeze {
        cut: mpsc::SyncSender<bool>,
    },
    Thaw,
    Shutdown,
    /// Stop and hand over who waits for the pending log's records (a shard switch
    /// whose new shard applies that log).
    Handover {
        waiting: mpsc::SyncSender<Waiting>,
    },
}

pub(super) fn writer_loop(
    engine: Arc<EdgeShard>,
    state: Arc<ShardState>,
    mut log: PendingLog,
    commands: mpsc::Receiver<Command>,
) {
    let mut waiting = Waiting::new();
    let mut frozen = 0usize;
    for command in commands {
        match command {
            Command::Update { op, ack, .. } if frozen == 0 => {
                let result = engine
                    .update(op.into_engine())
                    .map_err(StorageError::from_engine);
                if result.is_ok() {
                    state.mark_applied();
                }
                let _ = ack.send(result);
            }
            Command::Update { op, wait, ack } => match log.append(&op) {
                Err(err) => {
                    let _ = ack.send(Err(err));
                }
                Ok(()) => {
                    state.pending.store(log.len(), Ordering::SeqCst);
                    if wait {
                        waiting.push_back(Some(ack));
                    } else {
                        let _ = ack.send(Ok(()));
                        waiting.push_back(None);
                    }
                }
            },
            Command::Freeze { cut } => {
                // Joining a freeze that updates have passed gives an older state
                // than this cut: say so (the caller decides whether it may use it).
                let lags = frozen > 0 && state.pending.load(Ordering::SeqCst) > 0;
                frozen += 1;
                state.frozen.store(frozen, Ordering::SeqCst);
                let _ = cut.send(lags);
            }
            Command::Thaw => {
                frozen = frozen.saturating_sub(1);
                if frozen == 0
                    && let Err(err) = apply_pending(&engine, &state, &mut log, &mut waiting)
                {
                    tracing::error!(%err, "applying the pending log after a thaw failed");
                }
                state.frozen.store(frozen, Ordering::SeqCst);
            }
            Command::Shutdown => break,
            Command::Handover { waiting: to } => {
                // The log file is closed when this thread ends; the next shard reopens it.
                let _ = to.send(std::mem::take(&mut waiting));
                return;
            }
        }
    }
    // Anything still waiting stays in the pending log and is applied at the next start.
    for ack in waiting.into_iter().flatten() {
        let _ = ack.send(Err(StorageError::ShuttingDown));
    }
}

/// Apply the pending log in order, answer whoever waits, then empty the log.
pub(super) fn apply_pending(
    engine: &EdgeShard,
    state: &ShardState,
    log: &mut PendingLog,
    waiting: &mut Waiting,
) -> Result<()> {
    if log.is_empty() {
        return Ok(());
    }
    let ops = log.read_all()?;
    // Records from before this process started have nobody waiting.
    let unattended = ops.len().saturating_sub(waiting.len());
    for (index, op) in ops.into_iter().enumerate() {
        let result = engine
            .update(op.into_engine())
            .map_err(StorageError::from_engine);
        if let Err(err) = &result {
            tracing::error!(%err, "an acknowledged update failed to apply");
        }
        if index >= unattended
            && let Some(Some(ack)) = waiting.pop_front()
        {
            let _ = ack.send(result);
        }
    }
    state.mark_applied();
    // The engine's WAL holds them now.
    log.clear()?;
    state.pending.store(0, Ordering::SeqCst);
    Ok(())
}
