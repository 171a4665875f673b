//! The `Journal` port: this device's durable copy of the oplog.
//!
//! The journal holds every op the device has authored or accepted (as exchanged: sealed
//! payloads stay sealed), the head of every chain it holds (its frontier), a push cursor per
//! chain (the next seq the relay has not yet acknowledged receiving), the base checkpoint the
//! journal continues from after a rebase, and the device's persistent id. The in-memory fold
//! is always rebuildable from it: the base checkpoint's state plus the ops after its frontier.
//!
//! The journal stores; it does not verify. Callers verify ops (op ids, HLC order, drift) with
//! [`verify_chain`](crate::domain::oplog::verify_chain) per chain, or
//! [`verify_batch`](crate::domain::oplog::verify_batch), before committing them. The journal
//! only guarantees that what it holds stays a set of contiguous, linked chain prefixes.
//!
//! # Contract
//!
//! Every clause below has a conformance test of the same name in
//! [`conformance::journal`](crate::ports::conformance::journal), run against every adapter.
//!
//! - `commit_is_atomic`: [`Journal::commit`] MUST store every op of the batch and advance the
//!   heads, or (on any error) change nothing at all.
//! - `commit_extends_chains_only`: ops are taken per device in seq order; each new op MUST be
//!   at its chain's next seq ([`JournalError::Gap`] otherwise) and name the held head as `prev`
//!   ([`JournalError::BrokenPrev`] otherwise).
//! - `recommit_is_idempotent`: an op already held (same device, seq and id), or at a seq
//!   covered by the base checkpoint, MUST be skipped and counted in
//!   [`JournalCommit::duplicates`], never stored twice.
//! - `fork_is_refused`: a different op at a held seq MUST fail with [`JournalError::Fork`].
//! - `frontier_reads_back_heads`: [`Journal::frontier`] MUST return the head of every chain
//!   as last committed (or installed from a base checkpoint), including after a reopen.
//! - `ops_from_pages_in_order`: [`Journal::ops_from`] MUST return a chain's held ops with
//!   `seq >= from` in seq order, at most `limit.ops` of them, byte-identical to what was
//!   committed.
//! - `ops_from_honours_the_byte_budget`: [`Journal::ops_from`] MUST stop before an op that
//!   would take the ops' encoded size past `limit.bytes`, and MUST return at least one op if
//!   any is held from `from` on.
//! - `push_cursor_only_moves_forward`: [`Journal::push_cursor`] starts at seq 0; advancing
//!   it to a lower seq MUST keep the higher one, and advancing past the chain's next seq MUST
//!   fail with [`JournalError::CursorBeyondHead`].
//! - `install_base_supersedes_covered_ops`: [`Journal::install_base`] MUST, in one
//!   transaction, store the checkpoint as the base, drop the ops it covers, raise every head
//!   and push cursor it passes, and keep every op after its frontier.
//! - `install_base_refuses_forks_and_regressions`: a checkpoint naming a different op at a
//!   held seq MUST fail with [`JournalError::Fork`]; one covering less of some chain than the
//!   current base with [`JournalError::BaseRegression`]; nothing changes.
//! - `stage_base_changes_nothing_until_installed`: after [`Journal::stage_base`] the base,
//!   frontier and ops MUST read back as before; installing the staged checkpoint afterwards
//!   MUST then behave as an install without staging, and [`Journal::base_checkpoint`] MUST
//!   return its state byte for byte.
//! - `local_device_id_is_sticky`: [`Journal::local_device_id`] MUST persist the first
//!   candidate and return it for every later call.
//!
//! Implementations MAY block (SQLite is synchronous); async callers move them off the runtime.

use std::fmt::Debug;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{Checkpoint, Frontier, OpId, OpRecord};
use crate::ports::{BatchLimit, StoreError};

/// What a commit stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCommit {
    /// Ops stored by this commit.
    pub inserted: usize,
    /// Ops skipped because they were already held (or covered by the base checkpoint).
    pub duplicates: usize,
}

/// Why a journal operation failed. Nothing changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An op is past its chain's next seq.
    #[error("chain {device}: next seq is {expected}, got {found}")]
    Gap {
        /// The chain.
        device: DeviceId,
        /// The seq the journal would accept.
        expected: Seq,
        /// The seq offered.
        found: Seq,
    },
    /// An op does not name its chain's head as `prev`.
    #[error("chain {device}: op at seq {seq} does not link to the held head")]
    BrokenPrev {
        /// The chain.
        device: DeviceId,
        /// The op's seq.
        seq: Seq,
    },
    /// A different op is held at that seq.
    #[error("chain {device}: a different op is held at seq {seq}")]
    Fork {
        /// The chain.
        device: DeviceId,
        /// The contested seq.
        seq: Seq,
        /// The op held (or named by the base checkpoint).
        held: OpId,
        /// The op offered.
        offered: OpId,
    },
    /// A checkpoint covers less of a chain than the current base checkpoint.
    #[error("checkpoint covers chain {device} only up to {offered:?}, the base covers {held}")]
    BaseRegression {
        /// The chain.
        device: DeviceId,
        /// The base's head seq.
        held: Seq,
        /// The checkpoint's head seq (`None`: the chain is absent).
        offered: Option<Seq>,
    },
    /// A push cursor was moved past the chain's next seq.
    #[error("push cursor of chain {device} cannot pass seq {next} (asked {requested})")]
    CursorBeyondHead {
        /// The chain.
        device: DeviceId,
        /// The chain's next seq.
        next: Seq,
        /// The position asked for.
        requested: Seq,
    },
    /// The storage failed (busy, full, corrupt, undecodable).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JournalError {
    /// Whether retrying the same operation later may succeed (full disk, busy database).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_transient())
    }
}

/// This device's durable oplog. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
pub trait Journal: Send + Sync + Debug + 'static {
    /// The persisted id of this device; `candidate` is persisted on first use.
    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, JournalError>;

    /// Stores `ops` (any devices, any order) and advances the heads, atomically.
    fn commit(&self, ops: &[OpRecord]) -> Result<JournalCommit, JournalError>;

    /// The head of every held chain.
    fn frontier(&self) -> Result<Frontier, JournalError>;

    /// A chain's held ops with `seq >= from`, in seq order, within `limit` (at least one op if
    /// any is held, whatever its size).
    fn ops_from(
        &self,
        device: DeviceId,
        from: Seq,
        limit: BatchLimit,
    ) -> Result<Vec<OpRecord>, JournalError>;

    /// The next seq of `device`'s chain the relay has not acknowledged receiving.
    fn push_cursor(&self, device: DeviceId) -> Result<Seq, JournalError>;

    /// Records that the relay holds `device`'s chain below `next`.
    fn advance_push_cursor(&self, device: DeviceId, next: Seq) -> Result<(), JournalError>;

    /// The checkpoint the journal continues from, as installed (its state may be sealed).
    fn base_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError>;

    /// Makes `checkpoint` the base: drops the ops it covers and raises heads and cursors.
    fn install_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError>;

    /// Optionally writes `checkpoint`'s state durably ahead of [`Journal::install_base`], so a
    /// caller can do it while it verifies the checkpoint and the install itself only commits a
    /// small record. Staging changes nothing the journal reports; a staged checkpoint that is
    /// never installed is discarded by [`Journal::discard_staged`], a later install or a
    /// reopen. The default does nothing.
    fn stage_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        let _ = checkpoint;
        Ok(())
    }

    /// Removes whatever [`Journal::stage_base`] wrote for checkpoints that were not installed,
    /// keeping the installed base: a caller calls it when a checkpoint it staged turned out
    /// unusable. The default does nothing.
    fn discard_staged(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
