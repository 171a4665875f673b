//! Verification: nothing is folded before its chain checks out.
//!
//! [`verify_chain`] checks a run of ops from one device against the position already held
//! (a [`ChainTip`]). For each op, in this order:
//!
//! 1. the op id recomputes from the header and stored payload ([`VerifyError::OpIdMismatch`]:
//!    tampering or corruption);
//! 2. the op and its stamp belong to the chain's device ([`VerifyError::ForeignDevice`]);
//! 3. the seq is the next one ([`VerifyError::Fork`] if it re-uses the held head's seq with a
//!    different id, [`VerifyError::SeqGap`] otherwise: a gap, truncation or overlap);
//! 4. `prev` names the previous op, and is absent exactly at seq 0
//!    ([`VerifyError::BrokenPrev`]);
//! 5. the stamp is strictly greater than the previous op's ([`VerifyError::HlcNotIncreasing`]);
//! 6. optionally, the stamp is not too far ahead of local time ([`VerifyError::TooFarInFuture`],
//!    the same guard [`HlcClock::observe`](super::hlc::HlcClock::observe) applies).
//!
//! Verification is pure and all-or-nothing: on error the caller keeps its state untouched.
//! On success it returns the new tip.
//!
//! Inputs must not repeat ops already held: drop re-deliveries first with
//! [`check_against_held`], which also detects a fork (a different op at a held seq).
//! [`verify_batch`] verifies ops of many devices against a [`Frontier`].
//!
//! No error carries payload content: only ids, seqs, devices and stamps.

use super::frontier::{ChainHead, ChainTip, Frontier};
use super::hlc::{check_drift, Hlc};
use super::op::{OpId, OpRecord};
use crate::domain::ids::{DeviceId, Seq};

/// The drift guard applied during verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftGuard {
    /// Local physical time, Unix milliseconds.
    pub now_ms: u64,
    /// How far ahead of `now_ms` a stamp may be.
    pub max_drift_ms: u64,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The op's id does not match its content.
    #[error("op {device}/{seq}: claimed id {claimed} but content hashes to {computed}")]
    OpIdMismatch {
        /// Authoring device (as claimed).
        device: DeviceId,
        /// Seq (as claimed).
        seq: Seq,
        /// The id the op carries.
        claimed: OpId,
        /// The id recomputed from its content.
        computed: OpId,
    },
    /// The op is not at the next seq of the chain.
    #[error("chain {device}: expected seq {expected}, found {found}")]
    SeqGap {
        /// The chain's device.
        device: DeviceId,
        /// The seq the next op must have.
        expected: Seq,
        /// The seq it had.
        found: Seq,
    },
    /// The op's `prev` does not name the previous op (or is set at seq 0, or missing after).
    #[error("op {device}/{seq}: prev is {found:?}, expected {expected:?}")]
    BrokenPrev {
        /// The chain's device.
        device: DeviceId,
        /// The op's seq.
        seq: Seq,
        /// The id of the op held at `seq - 1` (`None` at seq 0).
        expected: Option<OpId>,
        /// The `prev` the op carries.
        found: Option<OpId>,
    },
    /// A different op at a seq already held: the device's chain forked.
    #[error("fork in chain {device} at seq {seq}: held {held}, incoming {incoming}")]
    Fork {
        /// The chain's device.
        device: DeviceId,
        /// The contested seq.
        seq: Seq,
        /// The op already held there.
        held: OpId,
        /// The different op offered.
        incoming: OpId,
    },
    /// The op's stamp is not greater than its predecessor's.
    #[error("op {device}/{seq}: stamp {found} does not follow {previous}")]
    HlcNotIncreasing {
        /// The chain's device.
        device: DeviceId,
        /// The op's seq.
        seq: Seq,
        /// The predecessor's stamp.
        previous: Hlc,
        /// The op's stamp.
        found: Hlc,
    },
    /// The op (field `device`) or its stamp (field `hlc.device`) names another device.
    #[error("op at seq {seq} of chain {expected}: {field} is {found}")]
    ForeignDevice {
        /// The chain's device.
        expected: DeviceId,
        /// The device found instead.
        found: DeviceId,
        /// Which field: `"device"` or `"hlc.device"`.
        field: &'static str,
        /// The op's seq.
        seq: Seq,
    },
    /// The op's stamp is too far ahead of local time.
    #[error("op {device}/{seq}: stamp {stamp} is more than {max_drift_ms} ms ahead of {now_ms}")]
    TooFarInFuture {
        /// The chain's device.
        device: DeviceId,
        /// The op's seq.
        seq: Seq,
        /// The refused stamp.
        stamp: Hlc,
        /// Local time.
        now_ms: u64,
        /// The bound in force.
        max_drift_ms: u64,
    },
}

/// Verifies `ops` (one device's, in chain order) as the continuation of `tip`. Returns the new
/// tip. See the module docs for the checks and their order.
pub fn verify_chain(
    ops: &[OpRecord],
    tip: &ChainTip,
    drift: Option<DriftGuard>,
) -> Result<ChainTip, VerifyError> {
    verify_refs(ops.iter(), tip, drift)
}

fn verify_refs<'a>(
    ops: impl Iterator<Item = &'a OpRecord>,
    tip: &ChainTip,
    drift: Option<DriftGuard>,
) -> Result<ChainTip, VerifyError> {
    let device = tip.device;
    let mut head = tip.head;
    for op in ops {
        let computed = op.computed_id();
        if computed != op.op_id() {
            return Err(VerifyError::OpIdMismatch {
                device: op.device(),
                seq: op.seq(),
                claimed: op.op_id(),
                computed,
            });
        }
        for (field, found) in [("device", op.device()), ("hlc.device", op.hlc().device)] {
            if found != device {
                return Err(VerifyError::ForeignDevice {
                    expected: device,
                    found,
                    field,
                    seq: op.seq(),
                });
            }
        }
        let expected = head.map_or(Seq::ZERO, |h| h.seq.next());
        if op.seq() != expected {
            return Err(match head {
                Some(h) if h.seq == op.seq() && h.op_id != op.op_id() => VerifyError::Fork {
                    device,
                    seq: op.seq(),
                    held: h.op_id,
                    incoming: op.op_id(),
                },
                _ => VerifyError::SeqGap {
                    device,
                    expected,
                    found: op.seq(),
                },
            });
        }
        let expected_prev = head.map(|h| h.op_id);
        if op.prev() != expected_prev {
            return Err(VerifyError::BrokenPrev {
                device,
                seq: op.seq(),
                expected: expected_prev,
                found: op.prev(),
            });
        }
        if let Some(h) = head {
            if op.hlc() <= h.hlc {
                return Err(VerifyError::HlcNotIncreasing {
                    device,
                    seq: op.seq(),
                    previous: h.hlc,
                    found: op.hlc(),
                });
            }
        }
        if let Some(guard) = drift {
            check_drift(&op.hlc(), guard.now_ms, guard.max_drift_ms).map_err(|_| {
                VerifyError::TooFarInFuture {
                    device,
                    seq: op.seq(),
                    stamp: op.hlc(),
                    now_ms: guard.now_ms,
                    max_drift_ms: guard.max_drift_ms,
                }
            })?;
        }
        head = Some(ChainHead::of(op));
    }
    Ok(ChainTip { device, head })
}

/// Compares an incoming op with the op already held at the same position.
///
/// `Ok(())` means the incoming op is a re-delivery of the held one (same id, and its content
/// really hashes to that id), so it can be dropped. A different op at a held position is a
/// [`VerifyError::Fork`]; a tampered re-delivery is [`VerifyError::OpIdMismatch`]. If the two
/// are not at the same position the result is [`VerifyError::ForeignDevice`] (other device) or
/// [`VerifyError::SeqGap`] (other seq).
pub fn check_against_held(incoming: &OpRecord, held: &OpRecord) -> Result<(), VerifyError> {
    let computed = incoming.computed_id();
    if computed != incoming.op_id() {
        return Err(VerifyError::OpIdMismatch {
            device: incoming.device(),
            seq: incoming.seq(),
            claimed: incoming.op_id(),
            computed,
        });
    }
    if incoming.device() != held.device() {
        return Err(VerifyError::ForeignDevice {
            expected: held.device(),
            found: incoming.device(),
            field: "device",
            seq: incoming.seq(),
        });
    }
    if incoming.seq() != held.seq() {
        return Err(VerifyError::SeqGap {
            device: held.device(),
            expected: held.seq(),
            found: incoming.seq(),
        });
    }
    if incoming.op_id() != held.op_id() {
        return Err(VerifyError::Fork {
            device: held.device(),
            seq: held.seq(),
            held: held.op_id(),
            incoming: incoming.op_id(),
        });
    }
    Ok(())
}

/// Verifies ops of any number of devices against `frontier` and returns the advanced frontier.
///
/// Ops are grouped by device and sorted by seq (the input order does not matter); each group
/// must continue its device's chain exactly, without repeats (see [`check_against_held`]). The
/// first failure is returned and `frontier` is not changed.
pub fn verify_batch(
    ops: &[OpRecord],
    frontier: &Frontier,
    drift: Option<DriftGuard>,
) -> Result<Frontier, VerifyError> {
    let mut sorted: Vec<&OpRecord> = ops.iter().collect();
    sorted.sort_by_key(|op| (op.device(), op.seq()));
    let mut next = frontier.clone();
    let mut start = 0;
    while start < sorted.len() {
        let device = sorted[start].device();
        let end = sorted[start..]
            .iter()
            .position(|op| op.device() != device)
            .map_or(sorted.len(), |n| start + n);
        let group = sorted[start..end].iter().copied();
        let tip = verify_refs(group, &frontier.tip(device), drift)?;
        next.set(tip);
        start = end;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::author::OpAuthor;
    use crate::domain::oplog::test_support::{chain, dev};
    use crate::domain::oplog::{OpPayload, Scope, Surface};
    use serde_json::{json, Value};

    /// Rewrites one field of an op's JSON form (a tampered wire copy).
    fn tamper(op: &OpRecord, edit: impl FnOnce(&mut Value)) -> OpRecord {
        let mut v = serde_json::to_value(op).unwrap();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    /// Rebuilds an op with a valid id from edited parts (a well-formed but wrong op).
    fn forge(op: &OpRecord, hlc: Hlc, seq: Seq, prev: Option<OpId>) -> OpRecord {
        OpRecord::new(
            hlc,
            seq,
            prev,
            op.scope().clone(),
            op.surface().clone(),
            op.payload().clone(),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_chain_verifies_in_one_go_or_in_pieces() {
        let ops = chain(dev(1), 4, 1000);
        let tip = verify_chain(&ops, &ChainTip::genesis(dev(1)), None).unwrap();
        assert_eq!(tip.head, Some(ChainHead::of(&ops[3])));
        let mid = verify_chain(&ops[..2], &ChainTip::genesis(dev(1)), None).unwrap();
        assert_eq!(verify_chain(&ops[2..], &mid, None).unwrap(), tip);
        assert_eq!(verify_chain(&[], &mid, None).unwrap(), mid);
    }

    #[test]
    fn tampered_payload_is_an_op_id_mismatch() {
        let ops = chain(dev(1), 2, 1000);
        let bad = tamper(&ops[1], |v| v["payload"]["plain"]["i"] = json!(99));
        let err =
            verify_chain(&[ops[0].clone(), bad], &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert!(
            matches!(err, VerifyError::OpIdMismatch { seq, claimed, .. } if seq == Seq::new(1) && claimed == ops[1].op_id())
        );
        assert!(!err.to_string().contains("99"));
    }

    #[test]
    fn missing_op_is_a_seq_gap() {
        let ops = chain(dev(1), 3, 1000);
        let err = verify_chain(
            &[ops[0].clone(), ops[2].clone()],
            &ChainTip::genesis(dev(1)),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            VerifyError::SeqGap {
                device: dev(1),
                expected: Seq::new(1),
                found: Seq::new(2)
            }
        );
        // Truncated start.
        let err = verify_chain(&ops[1..], &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert!(matches!(err, VerifyError::SeqGap { expected, .. } if expected == Seq::ZERO));
        // A repeated op (re-delivery not filtered out).
        let tip = verify_chain(&ops[..2], &ChainTip::genesis(dev(1)), None).unwrap();
        let err = verify_chain(&ops[..1], &tip, None).unwrap_err();
        assert!(matches!(err, VerifyError::SeqGap { found, .. } if found == Seq::ZERO));
    }

    #[test]
    fn wrong_prev_is_a_broken_prev() {
        let ops = chain(dev(1), 2, 1000);
        let bad = forge(
            &ops[1],
            ops[1].hlc(),
            Seq::new(1),
            Some(OpId::from_bytes([9; 32])),
        );
        let err =
            verify_chain(&[ops[0].clone(), bad], &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::BrokenPrev {
                device: dev(1),
                seq: Seq::new(1),
                expected: Some(ops[0].op_id()),
                found: Some(OpId::from_bytes([9; 32])),
            }
        );
        // A prev at seq 0 (only reachable through a forged wire record with a valid id).
        let genesis_with_prev = tamper(&ops[0], |v| {
            v["prev"] = json!(OpId::from_bytes([1; 32]).to_string());
        });
        let fixed = tamper(&genesis_with_prev, |v| {
            v["op_id"] = json!(genesis_with_prev.computed_id().to_string());
        });
        let err = verify_chain(&[fixed], &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert!(matches!(
            err,
            VerifyError::BrokenPrev {
                expected: None,
                found: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_different_op_at_the_held_head_is_a_fork() {
        let ops = chain(dev(1), 2, 1000);
        let tip = verify_chain(&ops, &ChainTip::genesis(dev(1)), None).unwrap();
        let rival = forge(
            &ops[1],
            Hlc::new(5_000, 0, dev(1)),
            Seq::new(1),
            Some(ops[0].op_id()),
        );
        let err = verify_chain(std::slice::from_ref(&rival), &tip, None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Fork {
                device: dev(1),
                seq: Seq::new(1),
                held: ops[1].op_id(),
                incoming: rival.op_id()
            }
        );
        assert!(err.to_string().contains("fork"));
    }

    #[test]
    fn check_against_held_tells_redelivery_from_fork() {
        let ops = chain(dev(1), 2, 1000);
        assert_eq!(check_against_held(&ops[1], &ops[1]), Ok(()));
        let rival = forge(
            &ops[1],
            Hlc::new(5_000, 0, dev(1)),
            Seq::new(1),
            Some(ops[0].op_id()),
        );
        assert!(matches!(
            check_against_held(&rival, &ops[1]),
            Err(VerifyError::Fork { .. })
        ));
        let tampered = tamper(&ops[1], |v| v["payload"]["plain"]["i"] = json!(7));
        assert!(matches!(
            check_against_held(&tampered, &ops[1]),
            Err(VerifyError::OpIdMismatch { .. })
        ));
        assert!(matches!(
            check_against_held(&ops[0], &ops[1]),
            Err(VerifyError::SeqGap { .. })
        ));
        let other = chain(dev(2), 1, 1000);
        assert!(matches!(
            check_against_held(&other[0], &ops[0]),
            Err(VerifyError::ForeignDevice { .. })
        ));
    }

    #[test]
    fn non_increasing_stamp_is_refused() {
        let ops = chain(dev(1), 1, 1000);
        let same = forge(&ops[0], ops[0].hlc(), Seq::new(1), Some(ops[0].op_id()));
        let err =
            verify_chain(&[ops[0].clone(), same], &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::HlcNotIncreasing {
                device: dev(1),
                seq: Seq::new(1),
                previous: ops[0].hlc(),
                found: ops[0].hlc(),
            }
        );
        let earlier = forge(
            &ops[0],
            Hlc::new(1, 0, dev(1)),
            Seq::new(1),
            Some(ops[0].op_id()),
        );
        assert!(matches!(
            verify_chain(&[ops[0].clone(), earlier], &ChainTip::genesis(dev(1)), None),
            Err(VerifyError::HlcNotIncreasing { .. })
        ));
    }

    #[test]
    fn ops_of_another_device_are_foreign() {
        let ops = chain(dev(2), 1, 1000);
        let err = verify_chain(&ops, &ChainTip::genesis(dev(1)), None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::ForeignDevice {
                expected: dev(1),
                found: dev(2),
                field: "device",
                seq: Seq::ZERO
            }
        );
        // The stamp names a different device than the op (forged wire record, valid id).
        let odd = tamper(&ops[0], |v| v["hlc"]["device"] = json!(dev(3).to_string()));
        let odd = tamper(&odd, |v| v["op_id"] = json!(odd.computed_id().to_string()));
        let err = verify_chain(&[odd], &ChainTip::genesis(dev(2)), None).unwrap_err();
        assert!(matches!(
            err,
            VerifyError::ForeignDevice {
                field: "hlc.device",
                ..
            }
        ));
    }

    #[test]
    fn far_future_stamps_are_refused_when_guarded() {
        let mut author = OpAuthor::new(dev(1));
        let op = author
            .append(
                100_000,
                Scope::Personal,
                Surface::Run,
                OpPayload::Plain(json!(0)),
            )
            .unwrap();
        let guard = DriftGuard {
            now_ms: 30_000,
            max_drift_ms: 60_000,
        };
        let err = verify_chain(
            std::slice::from_ref(&op),
            &ChainTip::genesis(dev(1)),
            Some(guard),
        )
        .unwrap_err();
        assert_eq!(
            err,
            VerifyError::TooFarInFuture {
                device: dev(1),
                seq: Seq::ZERO,
                stamp: op.hlc(),
                now_ms: 30_000,
                max_drift_ms: 60_000,
            }
        );
        let ok = DriftGuard {
            now_ms: 40_000,
            max_drift_ms: 60_000,
        };
        assert!(verify_chain(
            std::slice::from_ref(&op),
            &ChainTip::genesis(dev(1)),
            Some(ok)
        )
        .is_ok());
        assert!(verify_chain(&[op], &ChainTip::genesis(dev(1)), None).is_ok());
    }

    #[test]
    fn verify_batch_groups_by_device_in_any_order() {
        let a = chain(dev(1), 3, 1000);
        let b = chain(dev(2), 2, 1000);
        let mut mixed = vec![
            b[1].clone(),
            a[2].clone(),
            a[0].clone(),
            b[0].clone(),
            a[1].clone(),
        ];
        let f = verify_batch(&mixed, &Frontier::new(), None).unwrap();
        assert_eq!(f.head(dev(1)), Some(&ChainHead::of(&a[2])));
        assert_eq!(f.head(dev(2)), Some(&ChainHead::of(&b[1])));
        // Tail after a frontier.
        let mut half = Frontier::new();
        half.advance(&a[0]);
        let f2 = verify_batch(&a[1..], &half, None).unwrap();
        assert_eq!(f2.head(dev(1)), Some(&ChainHead::of(&a[2])));
        // One bad op refuses the whole batch.
        mixed.retain(|op| op.op_id() != a[1].op_id());
        assert!(matches!(
            verify_batch(&mixed, &Frontier::new(), None),
            Err(VerifyError::SeqGap { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Authored chains verify in any delivery order; any tampered or missing op is refused.
        #[test]
        fn authored_chains_verify_and_damage_is_caught(
            chains in crate::domain::oplog::test_support::arb_chains(6),
            pick in proptest::prelude::any::<proptest::sample::Index>(),
            damage in 0u8..3,
        ) {
            use crate::domain::oplog::test_support::author;
            let chains = author(&chains);
            let mut ops: Vec<OpRecord> = chains.iter().flatten().cloned().collect();
            ops.reverse();
            let f = verify_batch(&ops, &Frontier::new(), None).unwrap();
            for chain in &chains {
                if let Some(last) = chain.last() {
                    proptest::prop_assert_eq!(f.head(last.device()), Some(&ChainHead::of(last)));
                }
            }
            if ops.is_empty() {
                return Ok(());
            }
            let i = pick.index(ops.len());
            let victim = ops[i].clone();
            let is_last = chains.iter().any(|c| c.last() == Some(&victim));
            match damage {
                0 => ops[i] = tamper(&victim, |v| v["hlc"]["wall_ms"] = json!(7)),
                1 => ops[i] = tamper(&victim, |v| v["payload"] = json!({"plain": "forged"})),
                _ if !is_last => {
                    ops.remove(i);
                }
                _ => return Ok(()),
            }
            proptest::prop_assert!(verify_batch(&ops, &Frontier::new(), None).is_err());
        }
    }
}
