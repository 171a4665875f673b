//! Authoring: appending this device's own ops to its chain.
//!
//! [`OpAuthor`] holds what the next op needs: the device's [`HlcClock`], the next seq and the
//! current head id. [`OpAuthor::append`] stamps, links and content-addresses a new op, so every
//! op it returns continues the chain and passes `verify_chain`.
//!
//! Plaintext payloads are checked against their surface's shape (the same check the fold
//! applies, [`validate_payload`]) before anything is written: an op the fold would refuse must
//! never enter a chain, where it would block every later op of the device. Sealed payloads
//! cannot be inspected here; validate the plaintext before sealing it.

use super::frontier::{ChainHead, ChainTip};
use super::hlc::{Hlc, HlcClock, HlcError};
use super::op::{OpError, OpId, OpPayload, OpRecord};
use super::payload::validate_payload;
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::ids::{DeviceId, Seq};

/// The writer of one device's chain. Pure state: time arrives as `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpAuthor {
    clock: HlcClock,
    next_seq: Seq,
    head: Option<OpId>,
}

impl OpAuthor {
    /// The author of a brand-new chain for `device` (default drift bound).
    pub const fn new(device: DeviceId) -> Self {
        Self {
            clock: HlcClock::new(device),
            next_seq: Seq::ZERO,
            head: None,
        }
    }

    /// Continues a chain after `tip` (read back from durable state after a restart). `clock`
    /// must belong to `tip.device`; it is advanced past the head's stamp so the next op's HLC
    /// increases. Returns `None` if `clock` is another device's.
    pub fn resume(tip: &ChainTip, clock: &HlcClock) -> Option<Self> {
        if clock.device() != tip.device {
            return None;
        }
        let last = match tip.head {
            Some(ChainHead { hlc, .. }) if hlc > clock.last() => hlc,
            _ => clock.last(),
        };
        Some(Self {
            clock: HlcClock::resume(last, clock.max_drift_ms()),
            next_seq: tip.next_seq(),
            head: tip.expected_prev(),
        })
    }

    /// The device this author writes for.
    pub const fn device(&self) -> DeviceId {
        self.clock.device()
    }

    /// The seq the next op will get.
    pub const fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The id of the last op appended (the next op's `prev`).
    pub const fn head(&self) -> Option<OpId> {
        self.head
    }

    /// The clock, for stamping non-op events.
    pub const fn clock(&self) -> &HlcClock {
        &self.clock
    }

    /// Merges a remote stamp on receipt (see [`HlcClock::observe`]); far-future stamps are
    /// refused and leave the author unchanged.
    pub fn observe(&mut self, remote: &Hlc, now_ms: u64) -> Result<Hlc, HlcError> {
        self.clock.observe(remote, now_ms)
    }

    /// Appends an op at physical time `now_ms`. On error nothing changes.
    pub fn append(
        &mut self,
        now_ms: u64,
        scope: Scope,
        surface: Surface,
        payload: OpPayload,
    ) -> Result<OpRecord, OpError> {
        if let OpPayload::Plain(value) = &payload {
            validate_payload(&surface, value).map_err(|source| OpError::InvalidPayload {
                surface: surface.clone(),
                source,
            })?;
        }
        let mut clock = self.clock.clone();
        let hlc = clock.tick(now_ms);
        let op = OpRecord::new(hlc, self.next_seq, self.head, scope, surface, payload)?;
        self.clock = clock;
        self.next_seq = self.next_seq.next();
        self.head = Some(op.op_id());
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::hlc::DEFAULT_MAX_DRIFT_MS;
    use crate::domain::oplog::test_support::dev;
    use serde_json::json;

    fn run(i: u64) -> OpPayload {
        OpPayload::Plain(json!({ "step": i }))
    }

    #[test]
    fn appends_link_into_a_chain() {
        let mut a = OpAuthor::new(dev(1));
        let op0 = a.append(5, Scope::Personal, Surface::Run, run(0)).unwrap();
        let op1 = a.append(5, Scope::Personal, Surface::Run, run(1)).unwrap();
        assert_eq!((op0.seq(), op0.prev()), (Seq::new(0), None));
        assert_eq!((op1.seq(), op1.prev()), (Seq::new(1), Some(op0.op_id())));
        assert!(op1.hlc() > op0.hlc());
        assert_eq!(a.head(), Some(op1.op_id()));
        assert_eq!(a.next_seq(), Seq::new(2));
        assert_eq!(a.device(), dev(1));
        assert_eq!(op1.device(), dev(1));
    }

    #[test]
    fn invalid_payloads_are_refused_before_anything_changes() {
        let mut a = OpAuthor::new(dev(1));
        let before = a.clone();
        let err = a
            .append(
                5,
                Scope::Personal,
                Surface::Preference,
                OpPayload::Plain(json!({"value": 1})),
            )
            .unwrap_err();
        assert!(matches!(
            err,
            OpError::InvalidPayload {
                surface: Surface::Preference,
                ..
            }
        ));
        assert_eq!(a, before);
        // Sealed payloads are not inspected.
        let sealed = OpPayload::Sealed {
            key_epoch: 1,
            nonce: [0; 24],
            ciphertext: vec![1],
        };
        assert!(a
            .append(5, Scope::Personal, Surface::Preference, sealed)
            .is_ok());
    }

    #[test]
    fn resume_continues_after_the_tip() {
        let mut a = OpAuthor::new(dev(1));
        let op0 = a
            .append(1_000, Scope::Personal, Surface::Run, run(0))
            .unwrap();
        let tip = ChainTip {
            device: dev(1),
            head: Some(ChainHead::of(&op0)),
        };
        // A clock that restarted from zero still stamps after the head.
        let mut b = OpAuthor::resume(&tip, &HlcClock::new(dev(1))).unwrap();
        let op1 = b.append(10, Scope::Personal, Surface::Run, run(1)).unwrap();
        assert_eq!(op1.prev(), Some(op0.op_id()));
        assert!(op1.hlc() > op0.hlc());
        assert!(OpAuthor::resume(&tip, &HlcClock::new(dev(2))).is_none());
        let fresh = OpAuthor::resume(&ChainTip::genesis(dev(3)), &HlcClock::new(dev(3))).unwrap();
        assert_eq!(fresh, OpAuthor::new(dev(3)));
    }

    #[test]
    fn observe_applies_the_drift_guard() {
        let mut a = OpAuthor::new(dev(1));
        let far = Hlc::new(DEFAULT_MAX_DRIFT_MS + 2, 0, dev(2));
        assert!(a.observe(&far, 1).is_err());
        assert_eq!(a.clock().last(), Hlc::zero(dev(1)));
        let near = Hlc::new(50, 0, dev(2));
        assert!(a.observe(&near, 1).unwrap() > near);
        let op = a.append(1, Scope::Personal, Surface::Run, run(0)).unwrap();
        assert!(op.hlc() > near);
    }
}
