//! Device-sync errors.

use crate::domain::ids::{DeviceId, IdError, Seq};
use crate::domain::oplog::{
    CheckpointError, CheckpointId, FoldError, OpError, OpId, SealError, VerifyError,
};
use crate::ports::{JournalError, KeyError, LeaseCoordinatorError, RelayError};

/// Why a device-sync operation failed. When one is returned, nothing was journaled and the
/// in-memory state is as it was, except for a pump: it may have completed earlier rounds, and
/// a chain it holds back (a far-future stamp, a key not held yet) is reported only after the
/// other chains were journaled and acknowledged (see
/// [`DeviceSync::pump`](super::DeviceSync::pump)).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local journal failed or refused the write.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The relay failed or refused the call.
    #[error("relay: {0}")]
    Relay(#[from] RelayError),
    /// The lease coordinator failed or refused the transition.
    #[error("lease: {0}")]
    Lease(#[from] LeaseCoordinatorError),
    /// A scope key was not available.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// Sealing or opening failed (wrong key or epoch, tampered ciphertext or header).
    #[error("seal: {0}")]
    Seal(#[from] SealError),
    /// Pulled ops failed verification (tampered, forked, truncated, far-future stamp).
    #[error("verify: {0}")]
    Verify(#[from] VerifyError),
    /// An op could not be authored (payload does not fit its surface).
    #[error("op: {0}")]
    Op(#[from] OpError),
    /// An opened op does not fit its surface.
    #[error("fold: {0}")]
    Fold(#[from] FoldError),
    /// A checkpoint failed verification.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// End-to-end encryption is on and a pulled op arrived in plaintext.
    #[error("op {op_id} arrived in plaintext while end-to-end encryption is required")]
    PlaintextRefused {
        /// The op.
        op_id: OpId,
    },
    /// End-to-end encryption is on and the relay's checkpoint state is plaintext.
    #[error("checkpoint {id} has a plaintext state while end-to-end encryption is required")]
    PlaintextCheckpoint {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// The relay's stable frontier names an op this device holds differently.
    #[error("the stable frontier names another op at {device}/{seq} than this device holds")]
    FrontierMismatch {
        /// The chain.
        device: DeviceId,
        /// The seq.
        seq: Seq,
    },
    /// The relay compacted ops this device still needs and holds no checkpoint that covers
    /// them beyond the device's own base.
    #[error("the relay compacted ops this device needs and has no newer checkpoint")]
    NoCheckpoint,
    /// The fence would have authorised a dispatch, but the last pump held a chain back, and a
    /// run committed on it may be unseen. Pump again once the chain comes through.
    #[error(
        "the fence cannot authorise a dispatch: chain {device} is held back, and a run \
         committed on it may be unseen; pump again once it comes through"
    )]
    FenceBlind {
        /// The first chain held back.
        device: DeviceId,
    },
    /// An id was invalid (the device-id candidate).
    #[error(transparent)]
    Id(#[from] IdError),
    /// An internal invariant did not hold (a bug); nothing was changed.
    #[error("internal invariant broken: {0}")]
    Internal(&'static str),
    /// A blocking worker was cancelled (the runtime is shutting down).
    #[error("a blocking worker did not finish: {0}")]
    Worker(String),
}

impl SyncError {
    /// Whether retrying later may succeed: a busy or full journal, or a relay backend failure.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Journal(e) => e.is_transient(),
            Self::Relay(RelayError::Backend(_))
            | Self::Lease(LeaseCoordinatorError::Backend(_)) => true,
            _ => false,
        }
    }
}
