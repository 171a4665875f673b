//! [`MemoryRelay`]: a [`Relay`] held in one process's memory.
//!
//! For tests and development only: nothing is persisted, nothing is shared between processes,
//! and every op ever pushed stays in memory until gc. One mutex guards the whole state, so
//! every call is atomic; no call does I/O or blocks on anything but that mutex.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::adapters::relay_core::{self, HeldChain};
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{encoded_len, ChainHead, Checkpoint, Frontier, OpRecord};
use crate::ports::{
    BatchLimit, GcReport, PullBatch, PullCursors, PushOutcome, Relay, RelayError, RosterEntry,
};

/// A relay in memory. See the module docs: test and development use only.
#[derive(Debug, Default)]
pub struct MemoryRelay {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    roster: BTreeMap<DeviceId, RosterEntry>,
    chains: BTreeMap<DeviceId, Chain>,
    checkpoint: Option<Checkpoint>,
}

/// One device's stored chain: the compaction base and the ops after it, in seq order.
#[derive(Debug, Default)]
struct Chain {
    base: Option<ChainHead>,
    ops: Vec<OpRecord>,
}

impl Chain {
    fn first_seq(&self) -> Seq {
        relay_core::first_stored(self.base)
    }

    /// Index into `ops` of `seq` (which must not be below the first stored seq).
    fn index(&self, seq: Seq) -> usize {
        usize::try_from(seq.get().saturating_sub(self.first_seq().get())).unwrap_or(usize::MAX)
    }
}

impl HeldChain for Chain {
    fn base(&self) -> Option<ChainHead> {
        self.base
    }

    fn head(&self) -> Option<ChainHead> {
        self.ops.last().map(ChainHead::of).or(self.base)
    }

    fn held(&mut self, from: Seq, n: usize) -> Result<Vec<OpRecord>, RelayError> {
        let start = self.index(from).min(self.ops.len());
        let end = start.saturating_add(n).min(self.ops.len());
        Ok(self.ops[start..end].to_vec())
    }
}

impl MemoryRelay {
    /// An empty relay.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied call behind: every call
        // computes its result before mutating.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn registered(&mut self, device: DeviceId) -> Result<&mut RosterEntry, RelayError> {
        self.roster
            .get_mut(&device)
            .ok_or(RelayError::NotRegistered(device))
    }
}

#[async_trait]
impl Relay for MemoryRelay {
    async fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        let mut state = self.lock();
        let existing = state.roster.remove(&device);
        let entry = relay_core::registered(existing, device, now_ms);
        state.roster.insert(device, entry);
        Ok(())
    }

    async fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError> {
        let mut state = self.lock();
        state.registered(device)?;
        relay_core::check_own_ops(device, ops)?;
        let chain = state.chains.entry(device).or_default();
        let plan = relay_core::plan_push(device, ops, chain)?;
        let fresh = &ops[plan.duplicates..];
        chain.ops.extend_from_slice(fresh);
        let outcome = PushOutcome {
            accepted: fresh.len(),
            duplicates: plan.duplicates,
        };
        relay_core::touch_lazily(state.registered(device)?, now_ms);
        Ok(outcome)
    }

    async fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError> {
        let mut state = self.lock();
        let cursor = |device: &DeviceId| cursors.get(device).copied().unwrap_or(Seq::ZERO);
        for (device, chain) in &state.chains {
            relay_core::check_cursor(*device, chain.base, cursor(device))?;
        }
        let mut batch = PullBatch::default();
        let mut fill = limit.fill();
        for (device, chain) in &state.chains {
            let start = chain.index(cursor(device)).min(chain.ops.len());
            let available = &chain.ops[start..];
            let take = available
                .iter()
                .take_while(|op| fill.admit(|| encoded_len(op)))
                .count();
            batch.more |= take < available.len();
            if take > 0 {
                batch.ops.insert(*device, available[..take].to_vec());
            }
        }
        if let Some(entry) = state.roster.get_mut(&reader) {
            relay_core::touch_lazily(entry, now_ms);
        }
        Ok(batch)
    }

    async fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError> {
        let mut state = self.lock();
        let entry = state.registered(device)?;
        relay_core::merge_ack(&mut entry.acked, frontier);
        relay_core::touch(entry, now_ms);
        Ok(())
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>, RelayError> {
        Ok(self.lock().roster.values().cloned().collect())
    }

    async fn stable_frontier(&self, now_ms: u64, horizon_ms: u64) -> Result<Frontier, RelayError> {
        let state = self.lock();
        Ok(relay_core::stable_frontier(
            state.roster.values(),
            now_ms,
            horizon_ms,
        ))
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError> {
        checkpoint.verify_id()?;
        let mut state = self.lock();
        if relay_core::supersedes(checkpoint, state.checkpoint.as_ref()) {
            state.checkpoint = Some(checkpoint.clone());
        }
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError> {
        Ok(self.lock().checkpoint.clone())
    }

    async fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError> {
        let mut state = self.lock();
        let mut report = GcReport::default();
        let Some(checkpoint) = state.checkpoint.as_ref() else {
            return Ok(report);
        };
        let stable = relay_core::stable_frontier(state.roster.values(), now_ms, horizon_ms);
        let cuts = relay_core::gc_cuts(checkpoint.frontier(), &stable);
        for (device, cut) in cuts {
            let Some(chain) = state.chains.get_mut(&device) else {
                continue;
            };
            if cut.seq < chain.first_seq() {
                continue;
            }
            let end = chain.index(cut.seq).saturating_add(1);
            // Delete only what the cut really names: the op held there must be the cut's op.
            if chain.ops.get(end - 1).map(OpRecord::op_id) != Some(cut.op_id) {
                continue;
            }
            chain.base = chain.ops.get(end - 1).map(ChainHead::of);
            chain.ops.drain(..end);
            report.deleted += end;
            report.first_kept.insert(device, cut.seq.next());
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryRelay;

    crate::relay_conformance_tests!(conformance, || Box::new(MemoryRelay::new()));
}
