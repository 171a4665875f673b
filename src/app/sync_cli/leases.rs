//! `tandem sync lease …`, `intent` and `fence`: leases and the dispatch fence from the command
//! line.
//!
//! A lease is as shared as its lease database: by default each device keeps its own
//! (`leases.db` in its data directory), so devices contend only when they name one shared
//! file with `--lease-db`. The SQLite coordinator is safe across processes on one host; a file
//! in a synced folder is not a lease database two machines can share.

use std::io::Write;

use crate::domain::ids::{Epoch, RunId};
use crate::domain::oplog::{DispatchDecision, Intent, IntentId, IntentStatus, Lease, Scope};

use super::{now_ms, write_json, SyncCliError};
use crate::app::sync::DeviceSync;

/// How long a lease lasts unless renewed, by default, in milliseconds.
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;

/// What `tandem sync lease` does.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum LeaseCommand {
    /// Takes the lease on a resource (an agent, say) for this device with a new fencing epoch,
    /// unless another device holds a live one. Prints the epoch: pass it to `renew`,
    /// `release` and `fence`.
    Acquire {
        /// What to lease (any text).
        resource: String,
        /// How long the lease lasts unless renewed, in milliseconds (at least 1).
        #[arg(long, default_value_t = DEFAULT_LEASE_TTL_MS, value_parser = clap::value_parser!(u64).range(1..))]
        ttl_ms: u64,
    },
    /// Extends this device's live lease on a resource, held at `epoch`, to `--ttl-ms` from now.
    Renew {
        /// The leased resource.
        resource: String,
        /// The epoch `acquire` printed.
        #[arg(value_parser = parse_epoch)]
        epoch: Epoch,
        /// The new time to live, in milliseconds from now (at least 1).
        #[arg(long, default_value_t = DEFAULT_LEASE_TTL_MS, value_parser = clap::value_parser!(u64).range(1..))]
        ttl_ms: u64,
    },
    /// Gives up this device's lease on a resource, held at `epoch`.
    Release {
        /// The leased resource.
        resource: String,
        /// The epoch `acquire` printed.
        #[arg(value_parser = parse_epoch)]
        epoch: Epoch,
    },
    /// Prints who holds a resource's lease, at which epoch, and until when.
    Status {
        /// The resource.
        resource: String,
        /// Print the lease as JSON (`null` when there is none).
        #[arg(long)]
        json: bool,
    },
}

/// An intent status as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntentState {
    /// Requested, not dispatched.
    Pending,
    /// Dispatched under a lease (needs `--epoch`).
    Dispatched,
    /// The effect happened; the run is never dispatched again.
    Committed,
    /// The effect did not happen and will not be retried.
    Failed,
    /// Withdrawn before it happened.
    Cancelled,
}

/// Parses an epoch for clap.
pub(super) fn parse_epoch(s: &str) -> Result<Epoch, String> {
    s.parse::<u64>()
        .map(Epoch::new)
        .map_err(|_| format!("not an epoch (a whole number): {s:?}"))
}

/// Runs a lease command.
pub(super) async fn lease(
    device: &DeviceSync,
    command: LeaseCommand,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    match command {
        LeaseCommand::Acquire { resource, ttl_ms } => {
            let lease = device.lease_acquire(&resource, ttl_ms).await?;
            writeln!(out, "{}", describe(&lease, device, now_ms()))?;
        }
        LeaseCommand::Renew {
            resource,
            epoch,
            ttl_ms,
        } => {
            let lease = device.lease_renew(&resource, epoch, ttl_ms).await?;
            writeln!(out, "{}", describe(&lease, device, now_ms()))?;
        }
        LeaseCommand::Release { resource, epoch } => {
            device.lease_release(&resource, epoch).await?;
            writeln!(out, "released {resource} (epoch {epoch})")?;
        }
        LeaseCommand::Status { resource, json } => {
            let lease = device.lease_status(&resource).await?;
            if json {
                write_json(out, &lease)?;
            } else {
                match lease {
                    Some(lease) => writeln!(out, "{}", describe(&lease, device, now_ms()))?,
                    None => writeln!(out, "{resource}: no lease")?,
                }
            }
        }
    }
    Ok(())
}

/// One line on `lease`: resource, epoch, holder, expiry.
fn describe(lease: &Lease, device: &DeviceSync, now_ms: u64) -> String {
    let holder = if lease.holder == device.device_id() {
        format!("{} (this device)", lease.holder)
    } else {
        lease.holder.to_string()
    };
    let expiry = if lease.is_expired(now_ms) {
        format!("expired {} ms ago", now_ms - lease.expires_at_ms)
    } else {
        format!("expires in {} ms", lease.expires_at_ms - now_ms)
    };
    format!(
        "{}: epoch {}, held by {holder}, {expiry}",
        lease.resource, lease.epoch
    )
}

/// Records an intent's status for a run.
pub(super) async fn intent(
    device: &mut DeviceSync,
    intent_id: IntentId,
    run_id: RunId,
    state: IntentState,
    epoch: Option<Epoch>,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    let status = match (state, epoch) {
        (IntentState::Dispatched, Some(epoch)) => IntentStatus::Dispatched { epoch },
        (IntentState::Dispatched, None) => return Err(SyncCliError::IntentEpoch { given: false }),
        (_, Some(_)) => return Err(SyncCliError::IntentEpoch { given: true }),
        (IntentState::Pending, None) => IntentStatus::Pending,
        (IntentState::Committed, None) => IntentStatus::Committed,
        (IntentState::Failed, None) => IntentStatus::Failed,
        (IntentState::Cancelled, None) => IntentStatus::Cancelled,
    };
    let intent = Intent {
        intent_id,
        run_id,
        status,
    };
    match device.record_intent(Scope::Personal, &intent).await? {
        Some(appended) => writeln!(
            out,
            "recorded intent {} of run {run_id} as {status} (op {}); `tandem sync pump` sends it",
            intent.intent_id, appended.op_id
        )?,
        None => writeln!(
            out,
            "run {run_id} is already committed: nothing recorded (only `committed` is accepted \
             for a committed run)"
        )?,
    }
    Ok(())
}

/// Asks the dispatch fence whether this device may run `run_id` under its lease on `resource`
/// at `epoch`: prints `proceed`, or fails with the reason.
pub(super) async fn fence(
    device: &DeviceSync,
    resource: String,
    run_id: RunId,
    epoch: Epoch,
    out: &mut dyn Write,
) -> Result<(), SyncCliError> {
    match device.fence_check(&resource, run_id, epoch).await? {
        DispatchDecision::Proceed => {
            writeln!(
                out,
                "proceed: this device holds {resource} at epoch {epoch} and run {run_id} is not \
                 committed"
            )?;
            Ok(())
        }
        decision => Err(SyncCliError::Fenced {
            resource,
            run_id,
            epoch,
            decision,
        }),
    }
}

/// Why the fence refused, in words.
pub(super) fn refusal(
    resource: &str,
    run_id: &RunId,
    epoch: &Epoch,
    decision: &DispatchDecision,
) -> String {
    match decision {
        DispatchDecision::Proceed => format!("run {run_id} may proceed"),
        DispatchDecision::AlreadyCommitted => {
            format!("do not dispatch: run {run_id} is already committed")
        }
        DispatchDecision::StaleEpoch { current } => format!(
            "do not dispatch: epoch {epoch} is stale, the lease on {resource} is at epoch {current}"
        ),
        DispatchDecision::NotHeld => {
            format!("do not dispatch: this device holds no live lease on {resource}")
        }
    }
}
