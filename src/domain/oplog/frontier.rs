//! Frontiers: how far each device's chain is known.
//!
//! A [`ChainHead`] is the last op of a contiguous chain prefix: its seq, its id and its stamp
//! (the stamp lets verification check that the *next* op's HLC still increases, also across a
//! checkpoint boundary). A [`ChainTip`] is one device's position, possibly empty. A
//! [`Frontier`] maps every known device to its head.
//!
//! The canonical encoding ([`Frontier::to_canonical_json`]) is the canonical JSON of
//! `{"<device uuid>": {"hlc": {"counter": c, "device": "<uuid>", "wall_ms": w},
//! "op_id": "<hex>", "seq": n}, ...}`; checkpoint ids cover it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hlc::Hlc;
use super::op::{OpId, OpRecord};
use crate::domain::ids::{DeviceId, Seq};

/// The last op of a contiguous chain prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// Its seq: the highest contiguous seq held.
    pub seq: Seq,
    /// Its op id.
    pub op_id: OpId,
    /// Its stamp.
    pub hlc: Hlc,
}

impl ChainHead {
    /// The head describing `op`.
    pub fn of(op: &OpRecord) -> Self {
        Self {
            seq: op.seq(),
            op_id: op.op_id(),
            hlc: op.hlc(),
        }
    }
}

/// One device's position: the device and its head, if any op of it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainTip {
    /// The device whose chain this is.
    pub device: DeviceId,
    /// The last held op, or `None` before the first.
    pub head: Option<ChainHead>,
}

impl ChainTip {
    /// The position before a device's first op.
    pub const fn genesis(device: DeviceId) -> Self {
        Self { device, head: None }
    }

    /// The seq the next op must have.
    pub fn next_seq(&self) -> Seq {
        self.head.map_or(Seq::ZERO, |h| h.seq.next())
    }

    /// The `prev` the next op must name.
    pub fn expected_prev(&self) -> Option<OpId> {
        self.head.map(|h| h.op_id)
    }
}

/// Per device, the highest contiguous seq held and its head op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Frontier(BTreeMap<DeviceId, ChainHead>);

impl Frontier {
    /// An empty frontier.
    pub fn new() -> Self {
        Self::default()
    }

    /// The head of `device`, if any of its ops is held.
    pub fn head(&self, device: DeviceId) -> Option<&ChainHead> {
        self.0.get(&device)
    }

    /// The position of `device` (genesis if unknown).
    pub fn tip(&self, device: DeviceId) -> ChainTip {
        ChainTip {
            device,
            head: self.0.get(&device).copied(),
        }
    }

    /// Records a device's position; a tip without a head removes the device.
    pub fn set(&mut self, tip: ChainTip) {
        match tip.head {
            Some(head) => {
                self.0.insert(tip.device, head);
            }
            None => {
                self.0.remove(&tip.device);
            }
        }
    }

    /// Advances the frontier by `op` if it is the next op of its device's chain (its seq is the
    /// next seq and its prev the current head). Returns whether it advanced. This checks
    /// position only; ops must still be verified.
    pub fn advance(&mut self, op: &OpRecord) -> bool {
        let tip = self.tip(op.device());
        if op.seq() != tip.next_seq() || op.prev() != tip.expected_prev() {
            return false;
        }
        self.0.insert(op.device(), ChainHead::of(op));
        true
    }

    /// Whether `op`'s position is at or below the frontier (its seq is already held).
    pub fn covers(&self, device: DeviceId, seq: Seq) -> bool {
        self.0.get(&device).is_some_and(|h| seq <= h.seq)
    }

    /// Every device and its head, by device.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &ChainHead)> {
        self.0.iter()
    }

    /// The number of devices.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no device is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical JSON value of the frontier (see the module docs).
    pub fn to_canonical_json(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(device, head)| {
                let mut entry = Map::new();
                entry.insert("hlc".into(), hlc_json(&head.hlc));
                entry.insert("op_id".into(), Value::from(head.op_id.to_string()));
                entry.insert("seq".into(), Value::from(head.seq.get()));
                (device.to_string(), Value::Object(entry))
            })
            .collect();
        Value::Object(map)
    }
}

/// The canonical JSON value of a stamp: `{"counter": c, "device": "<uuid>", "wall_ms": w}`.
pub(super) fn hlc_json(hlc: &Hlc) -> Value {
    let mut m = Map::new();
    m.insert("counter".into(), Value::from(hlc.counter));
    m.insert("device".into(), Value::from(hlc.device.to_string()));
    m.insert("wall_ms".into(), Value::from(hlc.wall_ms));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::test_support::{chain, dev};
    use serde_json::json;

    #[test]
    fn advance_accepts_only_the_next_op() {
        let ops = chain(dev(1), 3, 10);
        let mut f = Frontier::new();
        assert!(f.is_empty());
        assert!(!f.advance(&ops[1]));
        assert!(f.advance(&ops[0]));
        assert!(!f.advance(&ops[0]));
        assert!(!f.advance(&ops[2]));
        assert!(f.advance(&ops[1]));
        assert_eq!(f.head(dev(1)), Some(&ChainHead::of(&ops[1])));
        assert_eq!(f.tip(dev(1)).next_seq(), Seq::new(2));
        assert_eq!(f.tip(dev(1)).expected_prev(), Some(ops[1].op_id()));
        assert!(f.covers(dev(1), Seq::new(1)) && !f.covers(dev(1), Seq::new(2)));
        assert!(!f.covers(dev(2), Seq::ZERO));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn set_and_genesis() {
        let mut f = Frontier::new();
        let ops = chain(dev(2), 1, 10);
        f.set(ChainTip {
            device: dev(2),
            head: Some(ChainHead::of(&ops[0])),
        });
        assert_eq!(f.iter().count(), 1);
        f.set(ChainTip::genesis(dev(2)));
        assert!(f.is_empty());
        assert_eq!(f.tip(dev(2)).next_seq(), Seq::ZERO);
        assert_eq!(f.tip(dev(2)).expected_prev(), None);
    }

    #[test]
    fn canonical_json_and_serde() {
        let ops = chain(dev(1), 1, 10);
        let mut f = Frontier::new();
        f.advance(&ops[0]);
        let v = f.to_canonical_json();
        let entry = &v["00000000-0000-0000-0000-000000000001"];
        assert_eq!(entry["seq"], json!(0));
        assert_eq!(entry["op_id"], json!(ops[0].op_id().to_string()));
        assert_eq!(entry["hlc"]["wall_ms"], json!(10));
        let back: Frontier = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
