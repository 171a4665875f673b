//! What device-sync operations report.

use serde::Serialize;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{CheckpointId, Frontier, Hlc, OpId};
use crate::ports::RosterEntry;

/// One op this device appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendedOp {
    /// Its id.
    pub op_id: OpId,
    /// Its seq in this device's chain.
    pub seq: Seq,
    /// Its stamp.
    pub hlc: Hlc,
}

/// What one [`DeviceSync::pump`](super::DeviceSync::pump) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PumpReport {
    /// Own ops the relay stored for the first time.
    pub pushed: usize,
    /// Own ops re-sent that the relay already held (a retry after a crash or a lost reply).
    pub push_duplicates: usize,
    /// Ops received from the relay.
    pub pulled: usize,
    /// Received ops newly journaled.
    pub journaled: usize,
    /// Journaled ops that changed the folded state.
    pub folded: usize,
    /// Whether a compacted pull made the device rebase from the relay's checkpoint.
    pub rebased: bool,
    /// Whether the pull stopped at its round limit with more ops waiting.
    pub more: bool,
    /// The frontier acknowledged to the relay, as read back from the journal.
    pub acked: Frontier,
}

/// Where this device stands ([`DeviceSync::status`](super::DeviceSync::status)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// This device.
    pub device: DeviceId,
    /// The folded state's hash, lowercase hex.
    pub state_hash: String,
    /// The heads of every chain the journal holds.
    pub journal_frontier: Frontier,
    /// The relay's stable frontier (acknowledged by every live device).
    pub stable_frontier: Frontier,
    /// The relay's roster.
    pub roster: Vec<RosterEntry>,
    /// The checkpoint the journal continues from, if it was rebased.
    pub base_checkpoint: Option<CheckpointId>,
    /// Chains the last pump held back (an op stamped too far ahead of local time, or sealed
    /// under a key this device does not hold yet); empty once a pump takes them.
    pub held_back: Vec<DeviceId>,
    /// How far this device's hybrid clock runs ahead of local time, in milliseconds: 0 while
    /// the two agree. The hybrid clock never runs backwards, so it stays ahead after the local
    /// clock was set back (from a time that was wrong) until local time catches up. While it
    /// is ahead by more than [`SyncConfig::max_drift_ms`](super::SyncConfig::max_drift_ms),
    /// devices whose clocks are right hold back this device's new ops (see
    /// [`DeviceSync::pump`](super::DeviceSync::pump)) until their own time reaches the stamps.
    pub clock_ahead_ms: u64,
}
