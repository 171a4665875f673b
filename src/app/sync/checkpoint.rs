//! Checkpoints: publishing one at the relay's stable frontier, and rebasing onto the relay's
//! latest.

use std::sync::Arc;

use crate::domain::oplog::{seal_checkpoint, Checkpoint, CheckpointId, Frontier, Scope, State};
use crate::ports::{BatchLimit, Journal, JournalError, RelayError};

use super::replay::{blocking, fold_range, fold_tail, replay_page, Opener};
use super::{DeviceSync, SyncError};

impl DeviceSync {
    /// Publishes a checkpoint of the fold at the relay's stable frontier (what every live
    /// device has acknowledged), so new or straggling devices can bootstrap from it and the
    /// relay can collect the ops it covers. Under E2E the state is sealed with the personal
    /// scope key; its id, frontier and state hash stay checkable by the relay.
    ///
    /// A stored checkpoint that the relay reports as corrupt is replaced rather than reported.
    /// A relay may refuse a checkpoint larger than it stores
    /// ([`RelayError::CheckpointTooLarge`]); syncing goes on without one.
    ///
    /// Returns `None` when there is nothing to checkpoint: the stable frontier is empty, this
    /// device does not hold every op up to it yet (pump first), or this device's own base
    /// checkpoint is ahead of it on some chain.
    pub async fn publish_checkpoint(&mut self) -> Result<Option<CheckpointId>, SyncError> {
        let now = self.now_ms();
        let stable = self
            .relay
            .stable_frontier(now, self.config.eviction_horizon_ms)
            .await?;
        if stable.is_empty() {
            return Ok(None);
        }
        match self.relay.latest_checkpoint().await {
            Ok(Some(latest)) if latest.frontier() == &stable => return Ok(Some(latest.id())),
            Ok(_) => {}
            // A stored checkpoint that no longer reads back is what this one replaces: refusing
            // to publish would leave the relay without a readable checkpoint, and its gc stuck.
            Err(RelayError::Corrupt(problem)) => {
                tracing::warn!(%problem, "the relay's checkpoint is unreadable; publishing a new one");
            }
            Err(e) => return Err(e.into()),
        }
        let (journal, keys) = (Arc::clone(&self.journal), Arc::clone(&self.keys));
        let target = stable.clone();
        let page = replay_page(&self.config);
        let built =
            blocking(move || state_at(journal.as_ref(), &mut Opener::new(keys), &target, page))
                .await?;
        let Some(state) = built else {
            return Ok(None);
        };
        let plain = Checkpoint::new(stable, &state);
        let checkpoint = if self.config.e2e {
            self.load_current_keys(vec![Scope::Personal]).await?;
            let (epoch, key) = self
                .current_keys
                .get(&Scope::Personal)
                .cloned()
                .ok_or(SyncError::Internal("the personal key was not loaded"))?;
            let mut rng: &mut (dyn rand_core::CryptoRngCore + Send + Sync) = &mut *self.rng;
            seal_checkpoint(&plain, &Scope::Personal, epoch, &key, &mut rng)?
        } else {
            plain
        };
        self.relay.put_checkpoint(&checkpoint).await?;
        tracing::debug!(id = %checkpoint.id(), "published a checkpoint");
        Ok(Some(checkpoint.id()))
    }

    /// Re-anchors the journal on the relay's latest checkpoint: verifies and opens it, makes
    /// it the journal's base (dropping the ops it covers, keeping every op after it) and
    /// rebuilds the fold from it plus the journal's tail. A pump afterwards pulls the rest.
    ///
    /// Returns whether anything changed: `false` when the relay has no checkpoint, it already
    /// is the base, or it covers less than the current base. A checkpoint that does not open
    /// (a wrong key, an altered state, a plaintext state under E2E) is an error that changes
    /// nothing; the copy of its state staged meanwhile is removed.
    pub async fn rebase(&mut self) -> Result<bool, SyncError> {
        let Some(checkpoint) = self.relay.latest_checkpoint().await? else {
            return Ok(false);
        };
        if Some(checkpoint.id()) == self.base {
            return Ok(false);
        }
        checkpoint.verify_id()?;
        let checkpoint = Arc::new(checkpoint);
        let plaintext_ok = !self.config.e2e;
        // Two independent halves run side by side: the journal writes the checkpoint's state
        // ahead of installing it (staging changes nothing it reports), while the state is
        // opened and checked against the checkpoint's hash. Only a checked state is installed.
        let staged = {
            let (journal, checkpoint) = (Arc::clone(&self.journal), Arc::clone(&checkpoint));
            blocking(move || Ok(journal.stage_base(&checkpoint)?))
        };
        let opened = {
            let (keys, checkpoint) = (Arc::clone(&self.keys), Arc::clone(&checkpoint));
            blocking(move || {
                let mut opener = Opener::new(keys);
                let state = opener.checkpoint_state(&checkpoint, plaintext_ok)?;
                Ok((opener, state))
            })
        };
        let (staged, opened) = tokio::join!(staged, opened);
        let (mut opener, state) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.discard_staged().await;
                return Err(e);
            }
        };
        staged?;
        let journal = Arc::clone(&self.journal);
        let page = replay_page(&self.config);
        let rebuilt = blocking(move || {
            match journal.install_base(&checkpoint) {
                Ok(()) => {}
                Err(JournalError::BaseRegression { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            // The installed base is this checkpoint: fold the tail onto the state just opened
            // instead of reading and decoding the base again.
            let (state, frontier) = fold_tail(
                journal.as_ref(),
                &mut opener,
                state,
                checkpoint.frontier(),
                page,
            )?;
            Ok(Some((state, frontier, Some(checkpoint.id()))))
        })
        .await?;
        let Some((state, frontier, base)) = rebuilt else {
            self.discard_staged().await;
            return Ok(false);
        };
        self.state = state;
        self.base = base;
        if let Some(author) =
            crate::domain::oplog::OpAuthor::resume(&frontier.tip(self.device), self.author.clock())
        {
            self.author = author;
        }
        self.frontier = frontier;
        tracing::debug!(base = ?self.base, "rebased onto the relay's checkpoint");
        Ok(true)
    }

    /// Removes a staged checkpoint state that will not be installed. Best effort: it would
    /// also go at the next install or reopen, so a failure is only logged.
    async fn discard_staged(&self) {
        let journal = Arc::clone(&self.journal);
        if let Err(e) = blocking(move || Ok(journal.discard_staged()?)).await {
            tracing::warn!(error = %e, "could not remove a staged checkpoint state");
        }
    }
}

/// The fold of exactly the ops up to `target`, from the journal's base and ops; `None` when
/// the journal cannot produce it (it lacks ops up to `target`, or its base is past `target`).
fn state_at(
    journal: &dyn Journal,
    opener: &mut Opener,
    target: &Frontier,
    page: BatchLimit,
) -> Result<Option<State>, SyncError> {
    let held = journal.frontier()?;
    let base = journal.base_checkpoint()?;
    let base_frontier = base
        .as_ref()
        .map(|cp| cp.frontier().clone())
        .unwrap_or_default();
    for (device, b) in base_frontier.iter() {
        if target.head(*device).is_none_or(|t| t.seq < b.seq) {
            return Ok(None);
        }
    }
    for (device, t) in target.iter() {
        if held.head(*device).is_none_or(|h| h.seq < t.seq) {
            return Ok(None);
        }
    }
    let mut state = match &base {
        Some(cp) => opener.checkpoint_state(cp, true)?,
        None => State::new(),
    };
    for (device, t) in target.iter() {
        let at = journal.ops_from(*device, t.seq, BatchLimit::ops(1))?;
        let matches = match at.first() {
            Some(op) if op.seq() == t.seq => op.op_id() == t.op_id && op.hlc() == t.hlc,
            // Not in the journal, which starts after `t.seq` on this chain (or holds nothing
            // after the base): only the base's own head can be at `t.seq`.
            _ => base_frontier.head(*device) == Some(t),
        };
        if !matches {
            return Err(SyncError::FrontierMismatch {
                device: *device,
                seq: t.seq,
            });
        }
        let from = base_frontier.tip(*device).next_seq();
        fold_range(journal, opener, &mut state, *device, from, t.seq, page)?;
    }
    Ok(Some(state))
}
