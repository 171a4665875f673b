//! The device-sync session: this device's end of the oplog.
//!
//! A [`DeviceSync`] composes the [`Journal`] (durable local oplog), a [`Relay`] (where devices
//! exchange chains), a [`LeaseCoordinator`] (execution leases), a [`KeyProvider`] (scope keys),
//! a [`Clock`] and a CSPRNG for nonces, and keeps the folded [`State`] in memory.
//!
//! ```text
//!  append ──► seal (scope key, AAD = op header) ──► journal ──► fold
//!  pump:  push own ops from the push cursor ──► relay
//!         pull by journal frontier ◄── relay ──► verify (chains, drift) ──► open and check
//!              each payload against its surface ──► journal + frontier (one transaction)
//!              ──► fold ──► ack (frontier read back)
//!         pull says Compacted ──► rebase from the relay's checkpoint, then pull the tail
//!  publish_checkpoint: fold at the relay's stable frontier, seal the state, put
//! ```
//!
//! # Durability and crashes
//!
//! Every write commits to the journal before memory changes, and everything the session tells
//! the relay derives from durable state: own ops are pushed from the journal from the push
//! cursor, which advances only after the relay accepted them; pulled ops are journaled with
//! their heads in one transaction; the acknowledged frontier is read back from the journal.
//! A crash anywhere leaves a state the next pump converges from with no duplicate: the relay
//! deduplicates re-pushed ops, and the journal skips re-delivered ones. Dropping a
//! `DeviceSync` and opening a new one over the same journal is supported at any time; opening
//! rebuilds the fold silently from the base checkpoint and the journaled ops.
//!
//! # End-to-end encryption
//!
//! With E2E on (the default) every payload is sealed at authoring time under its scope's
//! current key, so the op id covers the ciphertext, and checkpoint state is sealed under the
//! personal scope key (a checkpoint holds every scope's state, so only the user's own devices
//! may read it). Pulled plaintext ops and plaintext checkpoints are refused. With E2E off,
//! payloads are authored in plaintext, and sealed ops are still opened when the key is there.
//!
//! # Threads
//!
//! Methods take `&mut self`: drive a session from one task (a single-threaded loop works), or
//! share it behind an async mutex. Journal, key and crypto work runs on tokio's blocking pool,
//! so the methods must be called inside a tokio runtime.
//!
//! Keep one `DeviceSync` open per journal, in one process. Each session authors from its own
//! view of the device's chain, so when two are open, the second to append at a seq is refused
//! with [`JournalError::Fork`](crate::ports::JournalError::Fork) (nothing is forked or lost,
//! but that session cannot append again until it is reopened). Processes that take turns on
//! a device serialise on a lock of their own, as `tandem sync` does
//! ([`crate::app::sync_cli`]).

mod author;
mod builder;
mod checkpoint;
mod error;
mod leases;
mod pump;
mod replay;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

pub use builder::DeviceSyncBuilder;
pub use error::SyncError;
pub use report::{AppendedOp, PumpReport, SyncStatus};

use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::ids::DeviceId;
use crate::domain::oplog::{
    canonical::to_hex, conversation_turns, resume, state_hash, CheckpointId, Frontier, OpAuthor,
    RepairReport, ResumeMessage, Scope, State, Turn, DEFAULT_MAX_DRIFT_MS,
};
use crate::ports::{Clock, Journal, KeyProvider, LeaseCoordinator, Relay};

/// The default [`SyncConfig::batch_bytes`]: 8 MiB.
pub const DEFAULT_BATCH_BYTES: usize = 8 << 20;

/// Settings of a [`DeviceSync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Seal payloads and checkpoint state, and refuse plaintext from the relay (default on).
    pub e2e: bool,
    /// How far ahead of local time a pulled op's stamp may be (default one minute).
    pub max_drift_ms: u64,
    /// Devices not seen for this long no longer hold back the stable frontier (default 30
    /// days).
    pub eviction_horizon_ms: u64,
    /// Own ops pushed per relay call (default 2048: about 1 MiB of sealed chat messages).
    /// Each call costs the relay a few fsyncs, so bigger batches move more per fsync.
    pub push_batch: usize,
    /// Ops pulled per relay call, and journaled per transaction (default 2048).
    pub pull_batch: usize,
    /// Encoded bytes per push or pull call, and per journal page read while rebuilding the
    /// fold (default 8 MiB): a batch stops before the op that would take it past this, but
    /// always holds at least one op, however large. It bounds what one batch of large
    /// messages (tool output, files) holds in memory at once.
    pub batch_bytes: usize,
    /// Push or pull calls per pump before it stops and reports `more` (default 64).
    pub max_rounds: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            e2e: true,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            eviction_horizon_ms: 30 * 24 * 60 * 60 * 1000,
            push_batch: 2048,
            pull_batch: 2048,
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_rounds: 64,
        }
    }
}

pub use crate::app::nonces::NonceRng;

/// This device's sync session. See the module docs.
pub struct DeviceSync {
    device: DeviceId,
    journal: Arc<dyn Journal>,
    relay: Arc<dyn Relay>,
    leases: Arc<dyn LeaseCoordinator>,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    rng: NonceRng,
    config: SyncConfig,
    author: OpAuthor,
    state: State,
    frontier: Frontier,
    base: Option<CheckpointId>,
    current_keys: BTreeMap<Scope, (KeyEpoch, SessionKey)>,
    /// Chains held back (see [`DeviceSync::pump`]): those the last pump that ran to its end
    /// held back, and any held since by a pump that failed later. Until a pump takes them, a
    /// run committed on one may be unseen, so the fence does not authorise dispatches.
    held_back: BTreeSet<DeviceId>,
    /// Whether the clock was last reported further ahead of local time than the drift bound.
    clock_ahead_reported: bool,
}

impl fmt::Debug for DeviceSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSync")
            .field("device", &self.device)
            .field("config", &self.config)
            .field("state", &self.state)
            .field("frontier", &self.frontier)
            .field("base", &self.base)
            .field("held_back", &self.held_back)
            .finish_non_exhaustive()
    }
}

impl DeviceSync {
    /// Starts building a session over its four ports.
    pub fn builder(
        journal: Arc<dyn Journal>,
        relay: Arc<dyn Relay>,
        leases: Arc<dyn LeaseCoordinator>,
        keys: Arc<dyn KeyProvider>,
    ) -> DeviceSyncBuilder {
        DeviceSyncBuilder::new(journal, relay, leases, keys)
    }

    /// This device.
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The settings in force.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The folded state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The folded state's hash.
    pub fn state_hash(&self) -> [u8; 32] {
        state_hash(&self.state)
    }

    /// The folded state's hash as lowercase hex.
    pub fn state_hash_hex(&self) -> String {
        to_hex(&self.state_hash())
    }

    /// The journal's frontier as of the last write or read-back.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The checkpoint the journal continues from, if the device was rebased.
    pub fn base_checkpoint(&self) -> Option<CheckpointId> {
        self.base
    }

    /// A conversation's turns in `(hlc, op_id)` order.
    pub fn transcript(&self, conversation_id: &str) -> Vec<Turn> {
        conversation_turns(&self.state, conversation_id)
    }

    /// A conversation repaired into provider-valid messages, with what was repaired.
    pub fn resume(&self, conversation_id: &str) -> (Vec<ResumeMessage>, RepairReport) {
        resume(&self.transcript(conversation_id))
    }

    /// Where this device stands: its state hash and journal frontier, the relay's stable
    /// frontier and roster, and the base checkpoint.
    pub async fn status(&mut self) -> Result<SyncStatus, SyncError> {
        let journal = Arc::clone(&self.journal);
        self.frontier = replay::blocking(move || Ok(journal.frontier()?)).await?;
        let now = self.now_ms();
        let stable = self
            .relay
            .stable_frontier(now, self.config.eviction_horizon_ms)
            .await?;
        let roster = self.relay.roster().await?;
        Ok(SyncStatus {
            device: self.device,
            state_hash: self.state_hash_hex(),
            journal_frontier: self.frontier.clone(),
            stable_frontier: stable,
            roster,
            base_checkpoint: self.base,
            held_back: self.held_back.iter().copied().collect(),
            clock_ahead_ms: self.clock_ahead_ms(),
        })
    }

    /// How far this device's hybrid clock runs ahead of local time (see
    /// [`SyncStatus::clock_ahead_ms`]).
    pub fn clock_ahead_ms(&self) -> u64 {
        self.author
            .clock()
            .last()
            .wall_ms
            .saturating_sub(self.now_ms())
    }

    /// Warns once each time this device's hybrid clock gets further ahead of local time than
    /// the drift bound, and notes when it is back within it: until then, devices whose clocks
    /// are right hold back the ops it authors.
    fn report_clock_ahead(&mut self) {
        let ahead_ms = self.clock_ahead_ms();
        let over = ahead_ms > self.config.max_drift_ms;
        if over && !self.clock_ahead_reported {
            tracing::warn!(
                ahead_ms,
                max_drift_ms = self.config.max_drift_ms,
                "this device's clock runs ahead of local time by more than the drift bound \
                 (the local clock was set back?): devices on time hold back its new ops until \
                 their own time catches up"
            );
        } else if !over && self.clock_ahead_reported {
            tracing::info!(
                ahead_ms,
                "this device's clock is back within the drift bound"
            );
        }
        self.clock_ahead_reported = over;
    }

    /// The clock's time as the unsigned milliseconds the oplog uses (0 before the epoch).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).unwrap_or(0)
    }
}
