//! [`InFlightAck`]: the cursor commit of a unit that landed, run while the next unit uploads.
//!
//! Advancing the cursor is a durable SQLite commit. Rather than wait for it before the next
//! upload, [`ColdConsumer::tick`](super::ColdConsumer::tick) starts it when a unit lands and
//! the next step finishes it, concurrently with its own upload. At most one commit is in
//! flight, and the next one starts only after it finished and succeeded, so the cursor moves
//! in order and never past a unit that has not landed. A failed commit hands its unit back to
//! be sent again (the same sealed rows: upserts are idempotent) before anything after it.

use tokio::task::JoinHandle;

use crate::app::effect_log::EffectConsumer;
use crate::domain::backoff::RetryClass;
use crate::ports::StoreError;

use super::execute::{Failure, Pending};

/// The commit of the cursor past one delivered unit: running, or finished and not yet looked
/// at.
#[derive(Debug)]
pub(super) struct InFlightAck {
    /// The unit that landed, kept so that a failed commit re-sends the very same rows.
    delivered: Pending,
    commit: Commit,
}

#[derive(Debug)]
enum Commit {
    Running(JoinHandle<Result<(), StoreError>>),
    /// Kept until taken, so that a cancelled step loses no outcome.
    Finished(Result<(), StoreError>),
}

impl InFlightAck {
    /// Starts committing the cursor through `delivered` off the runtime.
    pub(super) fn start(log: EffectConsumer, delivered: Pending) -> Self {
        let through = delivered.unit.through;
        Self {
            delivered,
            commit: Commit::Running(tokio::task::spawn_blocking(move || log.ack(through))),
        }
    }

    /// Waits until the commit has finished. Cancel-safe: the outcome stays here until
    /// [`Self::take_finished`] takes it.
    pub(super) async fn finish(&mut self) {
        if let Commit::Running(task) = &mut self.commit {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Backend(Box::new(e))),
            };
            self.commit = Commit::Finished(result);
        }
    }

    /// Takes a finished commit out of `slot`: `None` if there is none (a running one stays),
    /// else its outcome; a failure comes with the unit to send again.
    pub(super) fn take_finished(slot: &mut Option<Self>) -> Option<Result<(), (Failure, Pending)>> {
        match slot.take()? {
            Self {
                delivered,
                commit: Commit::Finished(result),
            } => Some(cursor_committed(result).map_err(|failure| (failure, delivered))),
            running => {
                *slot = Some(running);
                None
            }
        }
    }
}

/// How the cold path reads the result of a cursor commit.
pub(super) fn cursor_committed(result: Result<(), StoreError>) -> Result<(), Failure> {
    match result {
        // Already there or past it (a cancelled step's commit finished late): nothing to do.
        Ok(()) | Err(StoreError::CursorRegression { .. }) => Ok(()),
        Err(e) => Err(Failure::Retry {
            class: if e.is_transient() {
                RetryClass::Transient { retry_after: None }
            } else {
                RetryClass::Network
            },
            reason: format!("advancing the cursor: {e}"),
        }),
    }
}
