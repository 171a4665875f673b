//! The relay rules every [`Relay`](crate::ports::Relay) adapter applies the same way, kept in
//! one place so the in-memory and the file-system relays cannot drift apart: push planning
//! (own ops only, re-push deduplication, fork, gap and chain checks), roster refreshes, ack
//! merging, the stable frontier, gc cuts and which checkpoint is the latest.
//!
//! Everything here is pure; an adapter hands in what it stores through [`HeldChain`].

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    check_against_held, verify_chain, ChainHead, ChainTip, Checkpoint, Frontier, OpRecord,
    VerifyError,
};
use crate::ports::relay::LAST_SEEN_RESOLUTION_MS;
use crate::ports::{RelayError, RosterEntry};

/// What a relay stores of one device's chain, as push planning needs it.
pub(crate) trait HeldChain {
    /// The head of the last op deleted by gc, if any was.
    fn base(&self) -> Option<ChainHead>;

    /// The head of the chain: the last op stored, or [`HeldChain::base`] if every op was
    /// compacted, or `None` before the first push.
    fn head(&self) -> Option<ChainHead>;

    /// The `n` stored ops from `from` on, verified as stored. Only called for ranges between
    /// [`first_stored`] and the head.
    fn held(&mut self, from: Seq, n: usize) -> Result<Vec<OpRecord>, RelayError>;
}

/// The first seq a chain still stores (one past its compaction base).
pub(crate) fn first_stored(base: Option<ChainHead>) -> Seq {
    base.map_or(Seq::ZERO, |b| b.seq.next())
}

/// The seq the next pushed op must have.
pub(crate) fn next_seq(head: Option<ChainHead>) -> Seq {
    head.map_or(Seq::ZERO, |h| h.seq.next())
}

/// What a checked push will store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushPlan {
    /// Ops the relay already holds (a repeated prefix of the batch).
    pub duplicates: usize,
    /// The chain's position after storing `ops[duplicates..]`.
    pub tip: ChainTip,
}

/// Maps a verification failure to the relay's error, naming a fork as such.
pub(crate) fn verify_error(err: VerifyError) -> RelayError {
    match err {
        VerifyError::Fork {
            device,
            seq,
            held,
            incoming,
        } => RelayError::Fork {
            device,
            seq,
            held,
            offered: incoming,
        },
        other => RelayError::Verify(other),
    }
}

/// Fails with [`RelayError::ForeignOp`] if any op is not `pusher`'s own.
pub(crate) fn check_own_ops(pusher: DeviceId, ops: &[OpRecord]) -> Result<(), RelayError> {
    match ops.iter().find(|op| op.device() != pusher) {
        Some(op) => Err(RelayError::ForeignOp {
            pusher,
            author: op.device(),
        }),
        None => Ok(()),
    }
}

/// Checks `ops` (pushed by `device`, already known to be its own) against the stored chain and
/// returns what to store: `ops[plan.duplicates..]`. Changes nothing.
///
/// The batch must be seq-contiguous. Its first op may not be past the next seq
/// ([`RelayError::Gap`]). Ops at held seqs must be byte-identical re-deliveries (recomputed
/// id equal to the held id, else [`RelayError::Fork`] or [`RelayError::Verify`]); ops at
/// compacted seqs can no longer be compared one by one, so they must recompute to their ids and
/// link into the batch, and the one at the compaction base must be the base op. The remaining
/// ops must continue the head ([`verify_chain`]: ids, seqs, prev links, increasing stamps).
pub(crate) fn plan_push(
    device: DeviceId,
    ops: &[OpRecord],
    chain: &mut impl HeldChain,
) -> Result<PushPlan, RelayError> {
    let head = chain.head();
    let tip = ChainTip { device, head };
    let Some(first) = ops.first() else {
        return Ok(PushPlan { duplicates: 0, tip });
    };
    for pair in ops.windows(2) {
        let expected = pair[0].seq().next();
        if pair[1].seq() != expected {
            return Err(RelayError::Verify(VerifyError::SeqGap {
                device,
                expected,
                found: pair[1].seq(),
            }));
        }
    }
    let next = next_seq(head);
    if first.seq() > next {
        return Err(RelayError::Gap {
            device,
            expected: next,
            got: first.seq(),
        });
    }
    let repeated = usize::try_from(next.get() - first.seq().get()).unwrap_or(usize::MAX);
    let duplicates = repeated.min(ops.len());
    check_repeated(device, &ops[..duplicates], chain)?;
    let tip = verify_chain(&ops[duplicates..], &tip, None).map_err(verify_error)?;
    Ok(PushPlan { duplicates, tip })
}

/// Checks the part of a batch the relay already holds or has compacted.
fn check_repeated(
    device: DeviceId,
    repeated: &[OpRecord],
    chain: &mut impl HeldChain,
) -> Result<(), RelayError> {
    let Some(first) = repeated.first() else {
        return Ok(());
    };
    let base = chain.base();
    let stored_from = first_stored(base);
    // Ops still stored: compare with what is held.
    let skip = usize::try_from(stored_from.get().saturating_sub(first.seq().get()))
        .unwrap_or(usize::MAX)
        .min(repeated.len());
    let (compacted, stored) = repeated.split_at(skip);
    if let Some(from) = stored.first() {
        let held = chain.held(from.seq(), stored.len())?;
        if held.len() != stored.len() {
            return Err(RelayError::Corrupt(format!(
                "chain {device}: {} ops expected from seq {}, {} read",
                stored.len(),
                from.seq(),
                held.len()
            )));
        }
        for (incoming, held) in stored.iter().zip(&held) {
            check_against_held(incoming, held).map_err(verify_error)?;
        }
    }
    // Ops already compacted: each must be what it claims and link to its successor.
    for (i, op) in compacted.iter().enumerate() {
        let computed = op.computed_id();
        if computed != op.op_id() {
            return Err(RelayError::Verify(VerifyError::OpIdMismatch {
                device,
                seq: op.seq(),
                claimed: op.op_id(),
                computed,
            }));
        }
        if let Some(b) = base.filter(|b| b.seq == op.seq() && b.op_id != op.op_id()) {
            return Err(RelayError::Fork {
                device,
                seq: b.seq,
                held: b.op_id,
                offered: op.op_id(),
            });
        }
        if let Some(succ) = repeated.get(i + 1) {
            if succ.prev() != Some(op.op_id()) {
                return Err(RelayError::Verify(VerifyError::BrokenPrev {
                    device,
                    seq: succ.seq(),
                    expected: Some(op.op_id()),
                    found: succ.prev(),
                }));
            }
        }
    }
    Ok(())
}

/// A roster entry for `device` registering at `now_ms`: a new one, or `existing` with its
/// last-seen time refreshed and its acks kept.
pub(crate) fn registered(
    existing: Option<RosterEntry>,
    device: DeviceId,
    now_ms: u64,
) -> RosterEntry {
    match existing {
        Some(mut entry) => {
            touch(&mut entry, now_ms);
            entry
        }
        None => RosterEntry {
            device,
            registered_at_ms: now_ms,
            last_seen_ms: now_ms,
            acked: Frontier::new(),
        },
    }
}

/// Refreshes the last-seen time; it never moves backwards. Returns whether it moved.
pub(crate) fn touch(entry: &mut RosterEntry, now_ms: u64) -> bool {
    if now_ms > entry.last_seen_ms {
        entry.last_seen_ms = now_ms;
        true
    } else {
        false
    }
}

/// The refresh of a push or pull: [`touch`], unless the stored time is less than
/// [`LAST_SEEN_RESOLUTION_MS`] old (so a burst of reads does not rewrite the roster).
pub(crate) fn touch_lazily(entry: &mut RosterEntry, now_ms: u64) -> bool {
    now_ms >= entry.last_seen_ms.saturating_add(LAST_SEEN_RESOLUTION_MS) && touch(entry, now_ms)
}

/// Merges an acknowledged frontier into the stored one, keeping per chain the higher head.
pub(crate) fn merge_ack(stored: &mut Frontier, acked: &Frontier) {
    for (device, head) in acked.iter() {
        if stored.head(*device).is_none_or(|h| head.seq > h.seq) {
            stored.set(ChainTip {
                device: *device,
                head: Some(*head),
            });
        }
    }
}

/// Per chain, the lowest head acknowledged by every device seen within `horizon_ms` of
/// `now_ms`; chains some such device has not acknowledged are absent, and with no such device
/// the frontier is empty.
pub(crate) fn stable_frontier<'a>(
    roster: impl IntoIterator<Item = &'a RosterEntry>,
    now_ms: u64,
    horizon_ms: u64,
) -> Frontier {
    let live: Vec<&RosterEntry> = roster
        .into_iter()
        .filter(|e| now_ms.saturating_sub(e.last_seen_ms) <= horizon_ms)
        .collect();
    let mut stable = Frontier::new();
    let Some((first, rest)) = live.split_first() else {
        return stable;
    };
    'chains: for (device, head) in first.acked.iter() {
        let mut lowest = *head;
        for entry in rest {
            match entry.acked.head(*device) {
                Some(h) if h.seq < lowest.seq => lowest = *h,
                Some(_) => {}
                None => continue 'chains,
            }
        }
        stable.set(ChainTip {
            device: *device,
            head: Some(lowest),
        });
    }
    stable
}

/// Per chain, the last op gc may delete: the lower of the checkpoint's and the stable head.
pub(crate) fn gc_cuts(checkpoint: &Frontier, stable: &Frontier) -> Vec<(DeviceId, ChainHead)> {
    checkpoint
        .iter()
        .filter_map(|(device, cp)| {
            let st = stable.head(*device)?;
            Some((*device, if st.seq < cp.seq { *st } else { *cp }))
        })
        .collect()
}

/// How many ops a checkpoint covers (the sum of its chain lengths).
pub(crate) fn coverage(checkpoint: &Checkpoint) -> u128 {
    checkpoint
        .frontier()
        .iter()
        .map(|(_, h)| u128::from(h.seq.get()) + 1)
        .sum()
}

/// Whether `offered` should replace `held` as the latest checkpoint: it covers strictly more
/// ops (on a tie the first stored stays, so re-putting is a no-op).
pub(crate) fn supersedes(offered: &Checkpoint, held: Option<&Checkpoint>) -> bool {
    held.is_none_or(|h| coverage(offered) > coverage(h))
}

/// Fails with [`RelayError::Compacted`] if `cursor` is below what a chain still stores.
pub(crate) fn check_cursor(
    device: DeviceId,
    base: Option<ChainHead>,
    cursor: Seq,
) -> Result<(), RelayError> {
    let first_available = first_stored(base);
    if cursor < first_available {
        return Err(RelayError::Compacted {
            device,
            first_available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance::relay::device;

    #[test]
    fn a_lazy_touch_moves_last_seen_only_past_the_resolution_and_never_back() {
        let mut entry = registered(None, device(1), 1_000);
        let res = LAST_SEEN_RESOLUTION_MS;
        assert!(!touch_lazily(&mut entry, 1_000 + res - 1));
        assert_eq!(entry.last_seen_ms, 1_000);
        assert!(touch_lazily(&mut entry, 1_000 + res));
        assert_eq!(entry.last_seen_ms, 1_000 + res);
        assert!(!touch_lazily(&mut entry, 0), "a clock that went back");
        // Register and ack refresh at once.
        assert!(touch(&mut entry, 1_001 + res));
        assert_eq!(entry.last_seen_ms, 1_001 + res);
        entry.last_seen_ms = u64::MAX - 1;
        assert!(
            touch_lazily(&mut entry, u64::MAX),
            "saturates instead of overflowing"
        );
    }
}
