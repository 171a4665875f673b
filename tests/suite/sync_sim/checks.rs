//! The invariants, checked during and after every simulated run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tandem::adapters::sqlite::SqliteJournal;
use tandem::domain::ids::{DeviceId, Seq};
use tandem::domain::oplog::{Frontier, OpId};
use tandem::ports::{BatchLimit, Journal};

use super::device::event_ids;
use super::world::World;

/// Devices whose journals hold the same frontier hold the same state.
pub fn same_frontier_same_hash(world: &World) -> Result<(), String> {
    let devices = &world.devices;
    for (i, a) in devices.iter().enumerate() {
        for (j, b) in devices.iter().enumerate().skip(i + 1) {
            if a.sync.frontier() == b.sync.frontier() && a.sync.state_hash() != b.sync.state_hash()
            {
                return Err(world.fail(format!(
                    "devices {i} and {j} hold the same frontier but different states"
                )));
            }
        }
    }
    Ok(())
}

/// What a journal holds durably, read off the runtime.
struct Durable {
    frontier: Frontier,
    base: Frontier,
    /// Per asked chain, the id of every op the journal holds, by seq.
    held: BTreeMap<DeviceId, BTreeMap<Seq, OpId>>,
}

impl Durable {
    async fn read(journal: &Arc<SqliteJournal>, chains: Vec<DeviceId>) -> Result<Self, String> {
        let journal = Arc::clone(journal);
        tokio::task::spawn_blocking(move || {
            let frontier = journal.frontier().map_err(|e| e.to_string())?;
            let base = journal
                .base_checkpoint()
                .map_err(|e| e.to_string())?
                .map(|cp| cp.frontier().clone())
                .unwrap_or_default();
            let mut held = BTreeMap::new();
            for chain in chains {
                let ops = journal
                    .ops_from(chain, Seq::ZERO, BatchLimit::ops(usize::MAX))
                    .map_err(|e| e.to_string())?;
                held.insert(chain, ops.iter().map(|op| (op.seq(), op.op_id())).collect());
            }
            Ok(Self {
                frontier,
                base,
                held,
            })
        })
        .await
        .map_err(|e| format!("journal reader: {e}"))?
    }

    /// Whether the journal durably holds `op_id` at `chain`/`seq`, directly or under its
    /// base checkpoint.
    fn holds(&self, chain: DeviceId, seq: Seq, op_id: OpId) -> bool {
        if !self.frontier.covers(chain, seq) {
            return false;
        }
        if let Some(held) = self.held.get(&chain).and_then(|ops| ops.get(&seq)) {
            return *held == op_id;
        }
        // Compacted into the base: the base's own head is checkable, lower seqs are vouched
        // for by the chain links the base was verified with.
        match self.base.head(chain) {
            Some(head) if head.seq == seq => head.op_id == op_id,
            Some(head) => head.seq > seq,
            None => false,
        }
    }
}

/// Device `d` still holds, durably and in its fold, every op it ever acknowledged: the
/// heads its pumps acknowledged to the relay and every op its `append` returned.
pub async fn nothing_acknowledged_lost(world: &World, d: usize) -> Result<(), String> {
    let device = &world.devices[d];
    let acked = device
        .acked
        .iter()
        .map(|(chain, head)| (*chain, head.seq, head.op_id, "acknowledged head"));
    let own = device
        .own
        .iter()
        .map(|o| (device.id, o.op.seq, o.op.op_id, "appended op"));
    let all: Vec<_> = acked.chain(own).collect();
    let mut chains: Vec<DeviceId> = all.iter().map(|(c, ..)| *c).collect();
    chains.sort();
    chains.dedup();
    let durable = Durable::read(&device.journal, chains)
        .await
        .map_err(|e| world.fail(e))?;
    for (chain, seq, op_id, what) in all {
        if !durable.holds(chain, seq, op_id) {
            return Err(world.fail(format!(
                "device {d} lost its {what} {chain}/{seq} ({op_id})"
            )));
        }
    }
    let events = event_ids(device.sync.state());
    for own in device.own.iter().filter(|o| o.event) {
        if !events.contains(&own.op.op_id) {
            return Err(world.fail(format!(
                "device {d}'s fold lacks its own event op {}",
                own.op.op_id
            )));
        }
    }
    Ok(())
}

/// After a full heal: one state everywhere, holding every op any device ever appended.
pub fn converged_with_everything(world: &World) -> Result<(), String> {
    let first = world.devices[0].sync.state_hash();
    for device in &world.devices {
        if device.sync.state_hash() != first {
            return Err(world.fail(format!(
                "device {} did not converge to device 0's state",
                device.n
            )));
        }
    }
    let appended_events: HashSet<OpId> = world
        .devices
        .iter()
        .flat_map(|d| d.own.iter().filter(|o| o.event).map(|o| o.op.op_id))
        .collect();
    for device in &world.devices {
        let frontier = device.sync.frontier();
        for author in &world.devices {
            if let Some(last) = author.own.last() {
                if !frontier.covers(author.id, last.op.seq) {
                    return Err(world.fail(format!(
                        "device {} misses device {}'s ops up to seq {}",
                        device.n, author.n, last.op.seq
                    )));
                }
            }
        }
        let events = event_ids(device.sync.state());
        if let Some(missing) = appended_events.iter().find(|id| !events.contains(id)) {
            return Err(world.fail(format!(
                "device {}'s fold lacks the event op {missing}",
                device.n
            )));
        }
    }
    Ok(())
}
