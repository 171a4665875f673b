//! The `Relay` port: where devices exchange their oplog chains.
//!
//! A relay stores, per device, a prefix of that device's hash-chained chain (seq contiguous from
//! 0), a roster of registered devices with their last-seen time and acknowledged frontier, and
//! content-addressed checkpoints. It sees cleartext op headers only: payloads and checkpoint
//! state may be sealed, and the relay never needs them open.
//!
//! # Contract
//!
//! Every clause below has a conformance test of the same name in
//! [`conformance::relay`](crate::ports::conformance::relay), run against every adapter.
//!
//! - `register_is_idempotent`: [`Relay::register`] MUST add the device to the roster (or only
//!   refresh its last-seen time if already there) and keep its acknowledged frontier.
//! - `push_requires_registration`: pushing or acking as an unregistered device MUST fail with
//!   [`RelayError::NotRegistered`].
//! - `push_accepts_own_ops_only`: every op pushed by `device` MUST have `op.device() ==
//!   device`, otherwise the whole push fails with [`RelayError::ForeignOp`] and nothing is
//!   stored.
//! - `push_is_chain_checked`: a pushed batch MUST verify as a contiguous chain continuing the
//!   stored chain (recomputed op ids, seqs, prev links, increasing HLC); otherwise the push
//!   fails with [`RelayError::Verify`] (or [`RelayError::Gap`]) and nothing is stored.
//! - `repush_is_deduplicated`: re-pushing ops the relay already holds (byte-identical) MUST
//!   succeed and store nothing twice; [`PushOutcome::accepted`] counts only new ops.
//! - `fork_is_refused`: a different op at a held seq MUST fail with [`RelayError::Fork`] and
//!   leave the stored chain unchanged.
//! - `pull_resumes_from_cursors`: [`Relay::pull`] MUST return, for each device, the stored ops
//!   with `seq >= cursor` (cursor = the next seq the reader wants; absent devices start at 0) in
//!   seq order, at most `limit.ops` ops in total, and say whether more remain.
//! - `pull_honours_the_byte_budget`: a pull MUST stop before an op that would take the batch's
//!   encoded size past `limit.bytes`, but MUST return at least one op if any is pending, so a
//!   single op larger than the budget still moves (see [`BatchLimit`]).
//! - `pull_after_gc_reports_compaction`: a cursor below the first op still stored for a device
//!   MUST fail with [`RelayError::Compacted`], naming the first stored seq, so the reader can
//!   rebase from a checkpoint.
//! - `roster_tracks_last_seen_and_acks`: [`Relay::roster`] MUST list every registered device
//!   with its registration time, last-seen time and acknowledged frontier. Register and ack
//!   MUST refresh last-seen; push and pull MUST refresh it once it is at least
//!   [`LAST_SEEN_RESOLUTION_MS`] old and MAY skip fresher refreshes (so a burst of batches does
//!   not rewrite the roster each time).
//! - `ack_never_moves_backwards`: [`Relay::ack`] MUST keep, per chain, the higher of the stored
//!   and the acknowledged head.
//! - `stable_frontier_is_the_minimum_ack`: [`Relay::stable_frontier`] MUST be, per chain, the
//!   lowest head acknowledged by every device seen within the eviction horizon
//!   (`now_ms - last_seen_ms <= horizon_ms`); a chain some such device has not acknowledged at
//!   all is absent. Devices past the horizon are ignored (evicted) so one lost laptop cannot
//!   block gc forever.
//! - `checkpoints_are_verified_and_latest_wins`: [`Relay::put_checkpoint`] MUST refuse a
//!   checkpoint whose id does not match its frontier and state hash
//!   ([`RelayError::Checkpoint`]); putting the same checkpoint twice is a no-op;
//!   [`Relay::latest_checkpoint`] returns the stored checkpoint covering the most ops. An
//!   adapter that bounds what it stores MAY refuse a larger checkpoint with
//!   [`RelayError::CheckpointTooLarge`], storing nothing, rather than store what it could not
//!   read back.
//! - `gc_keeps_everything_not_covered`: [`Relay::gc`] MUST delete only ops covered by both the
//!   latest checkpoint's frontier and the stable frontier; every other op stays pullable.
//!
//! All methods are atomic: on error nothing the relay holds has changed.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{Checkpoint, CheckpointError, Frontier, OpId, OpRecord, VerifyError};
use crate::ports::BatchLimit;

/// Per device, the next seq a reader wants. Devices absent from the map start at seq 0.
pub type PullCursors = BTreeMap<DeviceId, Seq>;

/// How stale a last-seen time may be before a push or pull must refresh it (see the
/// `roster_tracks_last_seen_and_acks` clause). Far below any sensible eviction horizon.
pub const LAST_SEEN_RESOLUTION_MS: u64 = 1_000;

/// What a push stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// Ops stored by this call.
    pub accepted: usize,
    /// Ops the relay already held (byte-identical re-push).
    pub duplicates: usize,
}

/// Ops returned by a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullBatch {
    /// Ops per device, each list in seq order starting at that device's cursor.
    pub ops: BTreeMap<DeviceId, Vec<OpRecord>>,
    /// Whether the limit cut the answer short (pull again with advanced cursors).
    pub more: bool,
}

impl PullBatch {
    /// Number of ops in the batch.
    pub fn len(&self) -> usize {
        self.ops.values().map(Vec::len).sum()
    }

    /// Whether the batch holds no op.
    pub fn is_empty(&self) -> bool {
        self.ops.values().all(Vec::is_empty)
    }
}

/// One device in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The device.
    pub device: DeviceId,
    /// When it registered first, Unix milliseconds.
    pub registered_at_ms: u64,
    /// When it last registered, pushed, pulled or acked, Unix milliseconds.
    pub last_seen_ms: u64,
    /// What it has acknowledged as durably held.
    pub acked: Frontier,
}

/// What a gc pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Ops deleted.
    pub deleted: usize,
    /// Per device, the first seq still stored after the pass (only devices that lost ops).
    pub first_kept: BTreeMap<DeviceId, Seq>,
}

/// Why a relay call failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The device is not in the roster.
    #[error("device {0} is not registered with the relay")]
    NotRegistered(DeviceId),
    /// A device tried to push another device's op.
    #[error("device {pusher} pushed an op of device {author}")]
    ForeignOp {
        /// Who pushed.
        pusher: DeviceId,
        /// Whose op it was.
        author: DeviceId,
    },
    /// A pushed op does not continue the stored chain (its seq is past the next one).
    #[error("device {device}: pushed seq {got} but the next seq is {expected}")]
    Gap {
        /// The chain.
        device: DeviceId,
        /// The next seq the relay expects.
        expected: Seq,
        /// The first seq pushed.
        got: Seq,
    },
    /// A different op is already stored at that seq.
    #[error("device {device}: a different op is already stored at seq {seq}")]
    Fork {
        /// The chain.
        device: DeviceId,
        /// The contested seq.
        seq: Seq,
        /// The op stored there.
        held: OpId,
        /// The op offered.
        offered: OpId,
    },
    /// The pushed or stored ops failed chain verification (tampered, reordered, bad HLC).
    #[error("chain verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// The reader's cursor is below what the relay still stores: rebase from a checkpoint.
    #[error("device {device}: ops before seq {first_available} were compacted; rebase from a checkpoint")]
    Compacted {
        /// The chain.
        device: DeviceId,
        /// The first seq still stored.
        first_available: Seq,
    },
    /// A checkpoint failed verification.
    #[error("checkpoint refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A checkpoint is larger than the relay stores; nothing was stored. The ops it would have
    /// covered stay on the relay.
    #[error("checkpoint refused: it takes {bytes} bytes, over the relay's limit of {limit}")]
    CheckpointTooLarge {
        /// What storing it would take.
        bytes: u64,
        /// The most the relay stores.
        limit: u64,
    },
    /// Stored relay data could not be read back as written (tampered or damaged files).
    #[error("relay data is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, database, network).
    #[error("relay backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where devices exchange oplog chains. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Relay: Send + Sync + Debug + 'static {
    /// Adds `device` to the roster or refreshes its last-seen time.
    async fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError>;

    /// Stores `device`'s own ops, which must continue its stored chain (a prefix may repeat
    /// ops already stored).
    async fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError>;

    /// Ops of every stored chain from the reader's cursors on, within `limit` in total.
    async fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError>;

    /// Records that `device` durably holds everything up to `frontier`.
    async fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError>;

    /// Every registered device.
    async fn roster(&self) -> Result<Vec<RosterEntry>, RelayError>;

    /// Per chain, the lowest head acknowledged by every device seen within `horizon_ms`.
    async fn stable_frontier(&self, now_ms: u64, horizon_ms: u64) -> Result<Frontier, RelayError>;

    /// Stores a checkpoint after checking its id against its frontier and state hash (and,
    /// for an adapter with a size limit, its size). A stored checkpoint that no longer reads
    /// back is replaced, so damage to it never blocks publishing a new one.
    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError>;

    /// The stored checkpoint covering the most ops, if any.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError>;

    /// Deletes ops covered by both the latest checkpoint and the stable frontier.
    async fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError>;
}
