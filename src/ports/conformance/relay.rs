//! Conformance suite for [`Relay`]: one function per contract clause of
//! [`ports::relay`](crate::ports::relay), each named after its clause.
//!
//! Adapter authors run it with [`relay_conformance_tests!`](crate::relay_conformance_tests),
//! which stamps one `#[tokio::test]` per clause:
//!
//! ```
//! tandem::relay_conformance_tests!(memory, || {
//!     Box::new(tandem::adapters::memory::MemoryRelay::new())
//! });
//! # fn main() {}
//! ```
//!
//! Each function receives a fresh, empty relay and panics with a clause-specific message when
//! the relay breaks the contract. Adapters that compact in units (segments) must compact units
//! of at most two ops, so the gc clauses see something deleted.
//!
//! The op builders ([`device`], [`chain`], [`rival_chain`], [`checkpoint`], [`tampered`]) are
//! public so adapter-specific tests can build the same inputs.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    fold, ChainHead, ChainTip, Checkpoint, CheckpointError, Frontier, Hlc, OpAuthor, OpId,
    OpPayload, OpRecord, Scope, Surface, VerifyError,
};
use crate::ports::{PullBatch, PullCursors, Relay, RelayError, RosterEntry};

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __relay_clauses {
    ($m:ident) => {
        $m!(register_is_idempotent);
        $m!(push_requires_registration);
        $m!(push_accepts_own_ops_only);
        $m!(push_is_chain_checked);
        $m!(repush_is_deduplicated);
        $m!(fork_is_refused);
        $m!(pull_resumes_from_cursors);
        $m!(pull_after_gc_reports_compaction);
        $m!(roster_tracks_last_seen_and_acks);
        $m!(ack_never_moves_backwards);
        $m!(stable_frontier_is_the_minimum_ack);
        $m!(checkpoints_are_verified_and_latest_wins);
        $m!(gc_keeps_everything_not_covered);
    };
}

/// Stamps a test module `$name` with one `#[tokio::test]` per [`Relay`] contract clause, each
/// run on a fresh relay from `$factory`: a closure returning a fixture that dereferences to the
/// relay (a `Box<YourRelay>`, or a guard that also owns a temp dir and cleans it up on drop).
#[macro_export]
macro_rules! relay_conformance_tests {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            macro_rules! clause {
                ($clause:ident) => {
                    #[::tokio::test]
                    async fn $clause() {
                        let factory = $factory;
                        let fixture = factory();
                        $crate::ports::conformance::relay::$clause(&*fixture).await;
                    }
                };
            }
            $crate::__relay_clauses!(clause);
        }
    };
}

/// Device `n` (n > 0), a fixed id for tests.
pub fn device(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0xDE71_CE00_0000_7000_8000_0000_0000_0000 | n,
    ))
    .expect("non-nil device id")
}

fn authored(device: DeviceId, n: usize, first_wall_ms: u64, tag: &str) -> Vec<OpRecord> {
    let mut author = OpAuthor::new(device);
    (0..n)
        .map(|i| {
            author
                .append(
                    first_wall_ms + i as u64,
                    Scope::Personal,
                    Surface::Run,
                    OpPayload::Plain(json!({ "step": i, "tag": tag })),
                )
                .expect("authoring a valid op")
        })
        .collect()
}

/// A valid chain of `n` ops authored by `device`, stamped from `first_wall_ms` one millisecond
/// apart.
pub fn chain(device: DeviceId, n: usize, first_wall_ms: u64) -> Vec<OpRecord> {
    authored(device, n, first_wall_ms, "main")
}

/// Another valid chain of the same device: same seqs, different ops (a fork of [`chain`]).
pub fn rival_chain(device: DeviceId, n: usize, first_wall_ms: u64) -> Vec<OpRecord> {
    authored(device, n, first_wall_ms, "rival")
}

/// `op` as a tampered wire copy: its payload changed, its claimed id kept.
pub fn tampered(op: &OpRecord) -> OpRecord {
    let mut value = serde_json::to_value(op).expect("an op serializes");
    value["payload"] = json!({ "plain": { "step": 999, "tag": "forged" } });
    serde_json::from_value(value).expect("a tampered op still parses")
}

/// The frontier whose heads are the last op of each chain.
pub fn frontier_of(chains: &[&[OpRecord]]) -> Frontier {
    let mut frontier = Frontier::new();
    for ops in chains {
        if let Some(last) = ops.last() {
            frontier.set(ChainTip {
                device: last.device(),
                head: Some(ChainHead::of(last)),
            });
        }
    }
    frontier
}

/// A checkpoint of exactly the given chain prefixes (each from seq 0).
pub fn checkpoint(chains: &[&[OpRecord]]) -> Checkpoint {
    let state = fold(chains.iter().flat_map(|c| c.iter())).expect("test ops fold");
    Checkpoint::new(frontier_of(chains), &state)
}

/// Everything from `cursors` on, read by the registered device `reader` at `now_ms`.
async fn pull_all(
    relay: &dyn Relay,
    reader: DeviceId,
    cursors: &PullCursors,
    now_ms: u64,
) -> PullBatch {
    relay
        .pull(reader, cursors, usize::MAX, now_ms)
        .await
        .expect("pull")
}

fn ops_of(batch: &PullBatch, device: DeviceId) -> Vec<OpRecord> {
    batch.ops.get(&device).cloned().unwrap_or_default()
}

/// `device`'s whole stored chain, read by `device` itself (registered) at `now_ms`.
async fn stored(relay: &dyn Relay, device: DeviceId, now_ms: u64) -> Vec<OpRecord> {
    ops_of(
        &pull_all(relay, device, &PullCursors::new(), now_ms).await,
        device,
    )
}

async fn entry(relay: &dyn Relay, device: DeviceId) -> RosterEntry {
    relay
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .find(|e| e.device == device)
        .unwrap_or_else(|| panic!("device {device} missing from the roster"))
}

async fn setup(relay: &dyn Relay, devices: &[DeviceId], now_ms: u64) {
    for d in devices {
        relay.register(*d, now_ms).await.expect("register");
    }
}

async fn push(relay: &dyn Relay, device: DeviceId, ops: &[OpRecord]) -> (usize, usize) {
    let out = relay.push(device, ops, 1).await.expect("push");
    (out.accepted, out.duplicates)
}

/// `register_is_idempotent`
pub async fn register_is_idempotent(relay: &dyn Relay) {
    let a = device(1);
    relay.register(a, 10).await.expect("first register");
    let first = entry(relay, a).await;
    assert_eq!(
        (
            first.registered_at_ms,
            first.last_seen_ms,
            first.acked.len()
        ),
        (10, 10, 0),
        "a new device starts with its registration time and no acks"
    );
    let ops = chain(a, 2, 1_000);
    push(relay, a, &ops).await;
    relay.ack(a, &frontier_of(&[&ops]), 15).await.expect("ack");
    relay.register(a, 20).await.expect("second register");
    let roster = relay.roster().await.expect("roster");
    assert_eq!(roster.len(), 1, "registering twice added a second entry");
    let again = &roster[0];
    assert_eq!(
        again.registered_at_ms, 10,
        "re-register changed the registration time"
    );
    assert_eq!(
        again.last_seen_ms, 20,
        "re-register did not refresh last-seen"
    );
    assert_eq!(
        again.acked,
        frontier_of(&[&ops]),
        "re-register dropped the acks"
    );
    assert_eq!(
        stored(relay, a, 20).await,
        ops,
        "re-register touched the chain"
    );
}

/// `push_requires_registration`
pub async fn push_requires_registration(relay: &dyn Relay) {
    let a = device(1);
    let ops = chain(a, 2, 1_000);
    match relay.push(a, &ops, 1).await {
        Err(RelayError::NotRegistered(d)) => assert_eq!(d, a),
        other => panic!("push by an unregistered device must be NotRegistered, got {other:?}"),
    }
    match relay.ack(a, &frontier_of(&[&ops]), 1).await {
        Err(RelayError::NotRegistered(d)) => assert_eq!(d, a),
        other => panic!("ack by an unregistered device must be NotRegistered, got {other:?}"),
    }
    assert!(
        relay.roster().await.expect("roster").is_empty(),
        "a refused call registered the device"
    );
    relay.register(a, 2).await.expect("register");
    assert!(
        stored(relay, a, 2).await.is_empty(),
        "a refused push stored ops"
    );
    assert_eq!(push(relay, a, &ops).await, (2, 0));
}

/// `push_accepts_own_ops_only`
pub async fn push_accepts_own_ops_only(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 1).await;
    let mine = chain(a, 2, 1_000);
    let theirs = chain(b, 2, 1_000);
    for batch in [theirs.clone(), vec![mine[0].clone(), theirs[0].clone()]] {
        match relay.push(a, &batch, 1).await {
            Err(RelayError::ForeignOp { pusher, author }) => {
                assert_eq!(
                    (pusher, author),
                    (a, b),
                    "ForeignOp names the wrong devices"
                );
            }
            other => panic!("pushing another device's op must be ForeignOp, got {other:?}"),
        }
    }
    assert!(
        stored(relay, a, 1).await.is_empty(),
        "a refused push stored ops of a"
    );
    assert!(
        stored(relay, b, 1).await.is_empty(),
        "a refused push stored ops of b"
    );
    assert_eq!(push(relay, a, &mine).await, (2, 0));
    assert_eq!(push(relay, b, &theirs).await, (2, 0));
}

/// `push_is_chain_checked`
pub async fn push_is_chain_checked(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 5, 1_000);
    let refuse = |batch: Vec<OpRecord>, what: &'static str| async move {
        let err = relay
            .push(a, &batch, 1)
            .await
            .expect_err(&format!("{what} must be refused"));
        (err, what)
    };
    // Not starting at the next seq.
    match refuse(ops[1..3].to_vec(), "a batch past the next seq").await {
        (
            RelayError::Gap {
                device,
                expected,
                got,
            },
            _,
        ) => {
            assert_eq!((device, expected, got), (a, Seq::ZERO, Seq::new(1)));
        }
        (other, what) => panic!("{what}: expected Gap, got {other:?}"),
    }
    // A hole inside the batch.
    match refuse(vec![ops[0].clone(), ops[2].clone()], "a batch with a hole").await {
        (RelayError::Verify(VerifyError::SeqGap { .. }) | RelayError::Gap { .. }, _) => {}
        (other, what) => panic!("{what}: expected Verify(SeqGap) or Gap, got {other:?}"),
    }
    // Tampered content.
    match refuse(vec![tampered(&ops[0])], "a tampered op").await {
        (RelayError::Verify(VerifyError::OpIdMismatch { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(OpIdMismatch), got {other:?}"),
    }
    assert!(
        stored(relay, a, 1).await.is_empty(),
        "a refused push stored ops"
    );
    assert_eq!(push(relay, a, &ops[..2]).await, (2, 0));
    // A well-formed op that does not link to the stored head.
    let unlinked = OpRecord::new(
        Hlc::new(5_000, 0, a),
        Seq::new(2),
        Some(OpId::from_bytes([7; 32])),
        Scope::Personal,
        Surface::Run,
        OpPayload::Plain(json!({ "step": 2 })),
    )
    .expect("well-formed op");
    match refuse(vec![unlinked], "an op not linked to the head").await {
        (RelayError::Verify(VerifyError::BrokenPrev { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(BrokenPrev), got {other:?}"),
    }
    // A stamp that does not increase.
    let stale = OpRecord::new(
        ops[1].hlc(),
        Seq::new(2),
        Some(ops[1].op_id()),
        Scope::Personal,
        Surface::Run,
        OpPayload::Plain(json!({ "step": 2 })),
    )
    .expect("well-formed op");
    match refuse(vec![stale], "an op with a stale stamp").await {
        (RelayError::Verify(VerifyError::HlcNotIncreasing { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(HlcNotIncreasing), got {other:?}"),
    }
    // A gap after the stored head, and a good op followed by a bad one (all or nothing).
    match refuse(ops[3..].to_vec(), "a batch leaving a gap").await {
        (RelayError::Gap { expected, got, .. }, _) => {
            assert_eq!((expected, got), (Seq::new(2), Seq::new(3)));
        }
        (other, what) => panic!("{what}: expected Gap, got {other:?}"),
    }
    let half_bad = vec![ops[2].clone(), tampered(&ops[3])];
    assert!(
        matches!(
            refuse(half_bad, "a batch ending in a tampered op").await.0,
            RelayError::Verify(_)
        ),
        "a batch ending in a tampered op must be a Verify error"
    );
    assert_eq!(
        stored(relay, a, 1).await,
        ops[..2].to_vec(),
        "refused pushes changed the stored chain"
    );
    assert_eq!(push(relay, a, &ops[2..]).await, (3, 0));
    assert_eq!(stored(relay, a, 1).await, ops);
}

/// `repush_is_deduplicated`
pub async fn repush_is_deduplicated(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 5, 1_000);
    assert_eq!(push(relay, a, &ops[..3]).await, (3, 0), "first push");
    assert_eq!(push(relay, a, &ops[..3]).await, (0, 3), "identical re-push");
    assert_eq!(push(relay, a, &ops[1..]).await, (2, 2), "overlapping push");
    assert_eq!(
        push(relay, a, &ops[4..]).await,
        (0, 1),
        "re-push of the head"
    );
    assert_eq!(push(relay, a, &[]).await, (0, 0), "empty push");
    match relay.push(a, &[tampered(&ops[1])], 1).await {
        Err(RelayError::Verify(VerifyError::OpIdMismatch { .. })) => {}
        other => panic!("a tampered re-delivery must be Verify(OpIdMismatch), got {other:?}"),
    }
    assert_eq!(
        stored(relay, a, 1).await,
        ops,
        "a re-push stored something twice"
    );
}

/// `fork_is_refused`
pub async fn fork_is_refused(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 4, 1_000);
    let rival = rival_chain(a, 4, 1_000);
    push(relay, a, &ops[..3]).await;
    for (batch, seq) in [
        (rival[..1].to_vec(), 0),
        (vec![ops[0].clone(), rival[1].clone()], 1),
        (rival[..].to_vec(), 0),
        (vec![rival[2].clone()], 2),
    ] {
        match relay.push(a, &batch, 1).await {
            Err(RelayError::Fork {
                device,
                seq: at,
                held,
                offered,
            }) => {
                let i = usize::try_from(seq).expect("small seq");
                assert_eq!(
                    (device, at, held, offered),
                    (a, Seq::new(seq), ops[i].op_id(), rival[i].op_id()),
                    "Fork names the wrong op"
                );
            }
            other => panic!("a different op at seq {seq} must be a Fork, got {other:?}"),
        }
    }
    assert_eq!(
        stored(relay, a, 1).await,
        ops[..3].to_vec(),
        "a fork changed the chain"
    );
    assert_eq!(push(relay, a, &ops[3..]).await, (1, 0));
}

/// `pull_resumes_from_cursors`
pub async fn pull_resumes_from_cursors(relay: &dyn Relay) {
    let (a, b, reader) = (device(1), device(2), device(3));
    setup(relay, &[a, b, reader], 1).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;

    let all = pull_all(relay, reader, &PullCursors::new(), 1).await;
    assert_eq!(
        ops_of(&all, a),
        ops_a,
        "a pull from scratch must return a's whole chain"
    );
    assert_eq!(
        ops_of(&all, b),
        ops_b,
        "a pull from scratch must return b's whole chain"
    );
    assert!(!all.more, "nothing remains after a full pull");
    assert_eq!(all.len(), 8);

    let cursors = PullCursors::from([(a, Seq::new(2)), (b, Seq::new(3)), (device(9), Seq::ZERO)]);
    let tail = pull_all(relay, reader, &cursors, 1).await;
    assert_eq!(
        ops_of(&tail, a),
        ops_a[2..].to_vec(),
        "a pull must resume at the cursor"
    );
    assert!(
        ops_of(&tail, b).is_empty(),
        "a cursor at the head returns nothing"
    );
    assert!(!tail.more);

    let past = PullCursors::from([(a, Seq::new(50)), (b, Seq::new(50))]);
    assert!(
        pull_all(relay, reader, &past, 1).await.is_empty(),
        "cursors past the head"
    );

    let none = relay
        .pull(reader, &PullCursors::new(), 0, 1)
        .await
        .expect("pull with limit 0");
    assert!(
        none.is_empty() && none.more,
        "limit 0 returns nothing and says more remain"
    );

    let exact = relay
        .pull(reader, &PullCursors::new(), 8, 1)
        .await
        .expect("pull");
    assert_eq!(
        (exact.len(), exact.more),
        (8, false),
        "a limit equal to what remains"
    );

    // Page through with a small limit: every op exactly once, in seq order per device.
    let mut cursors = PullCursors::new();
    let mut seen: BTreeMap<DeviceId, Vec<OpRecord>> = BTreeMap::new();
    for page in 0..20 {
        let batch = relay.pull(reader, &cursors, 3, 1).await.expect("pull page");
        assert!(
            batch.len() <= 3,
            "page {page} returned {} ops over the limit",
            batch.len()
        );
        for (d, ops) in &batch.ops {
            let from = cursors.get(d).copied().unwrap_or(Seq::ZERO);
            if let Some(first) = ops.first() {
                assert_eq!(
                    first.seq(),
                    from,
                    "page {page}: device {d} did not start at its cursor"
                );
                cursors.insert(*d, ops[ops.len() - 1].seq().next());
            }
            seen.entry(*d).or_default().extend(ops.iter().cloned());
        }
        if !batch.more {
            break;
        }
        assert!(
            !batch.is_empty(),
            "page {page}: more is set but nothing was returned"
        );
    }
    assert_eq!(
        seen.get(&a),
        Some(&ops_a),
        "paging lost or repeated ops of a"
    );
    assert_eq!(
        seen.get(&b),
        Some(&ops_b),
        "paging lost or repeated ops of b"
    );
}

/// Pushes `a` (6 ops) and `b` (4 ops), acknowledges everything from both devices, puts a
/// checkpoint covering `a` up to seq 3 and all of `b`, and runs gc.
async fn compacted(relay: &dyn Relay) -> (Vec<OpRecord>, Vec<OpRecord>) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 100).await;
    let ops_a = chain(a, 6, 1_000);
    let ops_b = chain(b, 4, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    let everything = frontier_of(&[&ops_a, &ops_b]);
    relay.ack(a, &everything, 100).await.expect("ack a");
    relay.ack(b, &everything, 100).await.expect("ack b");
    relay
        .put_checkpoint(&checkpoint(&[&ops_a[..4], &ops_b]))
        .await
        .expect("put checkpoint");
    let report = relay.gc(100, 1_000).await.expect("gc");
    assert!(
        report.deleted > 0,
        "gc deleted nothing though ops were covered"
    );
    let kept: usize = report
        .first_kept
        .values()
        .map(|s| usize::try_from(s.get()).expect("small seq"))
        .sum();
    assert_eq!(
        report.deleted, kept,
        "the report's counts disagree: {report:?}"
    );
    (ops_a, ops_b)
}

/// `pull_after_gc_reports_compaction`
pub async fn pull_after_gc_reports_compaction(relay: &dyn Relay) {
    let (a, b, reader) = (device(1), device(2), device(3));
    let (ops_a, ops_b) = compacted(relay).await;
    relay.register(reader, 100).await.expect("register reader");
    // Every chain that lost ops reports its first stored seq to a cursor below it.
    let mut first = BTreeMap::new();
    for d in [a, b] {
        let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4)), (d, Seq::ZERO)]);
        match relay.pull(reader, &cursors, 100, 100).await {
            Err(RelayError::Compacted {
                device,
                first_available,
            }) => {
                assert_eq!(device, d, "Compacted names the wrong chain");
                first.insert(d, first_available);
            }
            Ok(_) => {}
            Err(other) => panic!("a cursor below the first stored op: {other:?}"),
        }
    }
    assert!(
        !first.is_empty(),
        "no chain reports compaction after gc deleted ops"
    );
    for (d, ops) in [(a, &ops_a), (b, &ops_b)] {
        let Some(&from) = first.get(&d) else { continue };
        assert!(from.get() > 0, "Compacted at seq 0");
        let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4)), (d, from)]);
        let batch = relay
            .pull(reader, &cursors, 100, 100)
            .await
            .expect("pull at first stored");
        let i = usize::try_from(from.get()).expect("small seq");
        assert_eq!(
            ops_of(&batch, d),
            ops[i..].to_vec(),
            "pull at the first stored seq"
        );
        let below = PullCursors::from([
            (a, Seq::new(6)),
            (b, Seq::new(4)),
            (d, Seq::new(from.get() - 1)),
        ]);
        assert!(
            matches!(
                relay.pull(reader, &below, 100, 100).await,
                Err(RelayError::Compacted { first_available, .. }) if first_available == from
            ),
            "a cursor one below the first stored seq must be Compacted"
        );
    }
    // A compacted chain keeps its head: the device continues it, and re-pushing compacted ops
    // is a harmless duplicate.
    let more_b = chain(b, 5, 2_000);
    assert_eq!(
        push(relay, b, &more_b).await,
        (1, 4),
        "continuing a compacted chain"
    );
    let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4))]);
    let batch = relay.pull(reader, &cursors, 100, 100).await.expect("pull");
    assert_eq!(
        ops_of(&batch, b),
        more_b[4..].to_vec(),
        "the op pushed after gc"
    );
}

/// `roster_tracks_last_seen_and_acks`
pub async fn roster_tracks_last_seen_and_acks(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    relay.register(a, 100).await.expect("register a");
    relay.register(b, 110).await.expect("register b");
    let mut roster = relay.roster().await.expect("roster");
    roster.sort_by_key(|e| e.device);
    let expect = |device, registered_at_ms, last_seen_ms, acked| RosterEntry {
        device,
        registered_at_ms,
        last_seen_ms,
        acked,
    };
    assert_eq!(
        roster,
        vec![
            expect(a, 100, 100, Frontier::new()),
            expect(b, 110, 110, Frontier::new())
        ],
        "the roster after two registrations"
    );
    let ops = chain(a, 2, 1_000);
    relay.push(a, &ops, 120).await.expect("push");
    assert_eq!(
        entry(relay, a).await.last_seen_ms,
        120,
        "push must refresh last-seen"
    );
    relay
        .pull(b, &PullCursors::new(), 10, 130)
        .await
        .expect("pull");
    assert_eq!(
        entry(relay, b).await.last_seen_ms,
        130,
        "pull must refresh last-seen"
    );
    let acked = frontier_of(&[&ops]);
    relay.ack(b, &acked, 140).await.expect("ack");
    assert_eq!(
        entry(relay, b).await,
        expect(b, 110, 140, acked.clone()),
        "ack"
    );
    relay.register(a, 150).await.expect("register again");
    let mut roster = relay.roster().await.expect("roster");
    roster.sort_by_key(|e| e.device);
    assert_eq!(
        roster,
        vec![
            expect(a, 100, 150, Frontier::new()),
            expect(b, 110, 140, acked)
        ],
        "the final roster"
    );
}

/// `ack_never_moves_backwards`
pub async fn ack_never_moves_backwards(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 1).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    relay
        .ack(b, &frontier_of(&[&ops_a[..4]]), 2)
        .await
        .expect("ack");
    relay
        .ack(b, &frontier_of(&[&ops_a[..2]]), 3)
        .await
        .expect("lower ack");
    assert_eq!(
        entry(relay, b).await.acked,
        frontier_of(&[&ops_a[..4]]),
        "a lower ack moved the acknowledged head backwards"
    );
    relay
        .ack(b, &frontier_of(&[&ops_b[..1]]), 4)
        .await
        .expect("ack another chain");
    relay.ack(b, &Frontier::new(), 5).await.expect("empty ack");
    relay
        .ack(b, &frontier_of(&[&ops_a[..3], &ops_b]), 6)
        .await
        .expect("mixed ack");
    assert_eq!(
        entry(relay, b).await.acked,
        frontier_of(&[&ops_a[..4], &ops_b]),
        "acks must merge per chain, keeping the higher head"
    );
}

/// `stable_frontier_is_the_minimum_ack`
pub async fn stable_frontier_is_the_minimum_ack(relay: &dyn Relay) {
    let (a, b, c) = (device(1), device(2), device(3));
    assert!(
        relay
            .stable_frontier(1_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "an empty roster has an empty stable frontier"
    );
    setup(relay, &[a, b, c], 1_000).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    assert!(
        relay
            .stable_frontier(1_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "nothing is stable before anyone acks"
    );
    relay
        .ack(a, &frontier_of(&[&ops_a, &ops_b]), 1_000)
        .await
        .expect("ack a");
    relay
        .ack(b, &frontier_of(&[&ops_a[..3], &ops_b[..2]]), 1_000)
        .await
        .expect("ack b");
    relay
        .ack(c, &frontier_of(&[&ops_a[..4]]), 1_000)
        .await
        .expect("ack c");
    assert_eq!(
        relay.stable_frontier(1_000, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3]]),
        "the minimum over every live device; b's chain is absent because c never acked it"
    );
    assert_eq!(
        relay.stable_frontier(1_100, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3]]),
        "a device seen exactly horizon_ms ago is still live"
    );
    relay.register(a, 1_500).await.expect("refresh a");
    relay.register(b, 1_500).await.expect("refresh b");
    assert_eq!(
        relay.stable_frontier(1_550, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3], &ops_b[..2]]),
        "c, unseen past the horizon, must be ignored"
    );
    assert!(
        relay
            .stable_frontier(5_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "with every device past the horizon nothing is stable"
    );
}

/// `checkpoints_are_verified_and_latest_wins`
pub async fn checkpoints_are_verified_and_latest_wins(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    let ops_a = chain(a, 4, 1_000);
    let ops_b = chain(b, 2, 2_000);
    assert_eq!(relay.latest_checkpoint().await.expect("latest"), None);
    let small = checkpoint(&[&ops_a[..2]]);
    let big = checkpoint(&[&ops_a, &ops_b]);
    let forged = Checkpoint::from_parts(
        small.id(),
        big.frontier().clone(),
        small.state_hash(),
        small.state_bytes().to_vec(),
    );
    match relay.put_checkpoint(&forged).await {
        Err(RelayError::Checkpoint(CheckpointError::IdMismatch { .. })) => {}
        other => panic!("a checkpoint whose id does not match must be refused, got {other:?}"),
    }
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        None,
        "a refused put stored"
    );
    relay.put_checkpoint(&small).await.expect("put small");
    relay.put_checkpoint(&small).await.expect("put small again");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(small.clone())
    );
    relay.put_checkpoint(&big).await.expect("put big");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(big.clone())
    );
    relay
        .put_checkpoint(&small)
        .await
        .expect("put small after big");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(big),
        "the checkpoint covering the most ops must stay the latest"
    );
}

/// `gc_keeps_everything_not_covered`
pub async fn gc_keeps_everything_not_covered(relay: &dyn Relay) {
    let (a, b, c, d) = (device(1), device(2), device(3), device(4));
    setup(relay, &[a, b, c], 1_000).await;
    let ops_a = chain(a, 6, 1_000);
    let ops_b = chain(b, 4, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    let everything = frontier_of(&[&ops_a, &ops_b]);
    relay.ack(a, &everything, 1_000).await.expect("ack a");
    relay.ack(b, &everything, 1_000).await.expect("ack b");
    relay
        .ack(c, &frontier_of(&[&ops_a[..2], &ops_b]), 1_000)
        .await
        .expect("ack c");
    let reader = d;

    let untouched = |report: crate::ports::GcReport, why: &str| {
        assert_eq!(report.deleted, 0, "gc deleted ops {why}");
        assert!(report.first_kept.is_empty(), "gc reported compaction {why}");
    };
    untouched(
        relay.gc(1_000, 500).await.expect("gc"),
        "without a checkpoint",
    );
    relay
        .put_checkpoint(&checkpoint(&[&ops_a[..4], &ops_b[..2]]))
        .await
        .expect("put checkpoint");
    // d is live and has acknowledged nothing: nothing is stable yet.
    relay.register(d, 1_000).await.expect("register d");
    untouched(
        relay.gc(1_000, 500).await.expect("gc"),
        "while a live device acked nothing",
    );
    let everything_pullable = pull_all(relay, reader, &PullCursors::new(), 1_000).await;
    assert_eq!(ops_of(&everything_pullable, a), ops_a);

    // d falls past the horizon; c still holds a back to seq 1.
    setup(relay, &[a, b, c], 2_000).await;
    let report = relay.gc(2_000, 500).await.expect("gc");
    let first = |dev: DeviceId| report.first_kept.get(&dev).copied().unwrap_or(Seq::ZERO);
    assert!(
        first(a) <= Seq::new(2),
        "gc deleted a's ops past c's ack: {report:?}"
    );
    assert!(
        first(b) <= Seq::new(2),
        "gc deleted b's ops past the checkpoint: {report:?}"
    );
    let total = first(a).get() + first(b).get();
    assert_eq!(
        report.deleted as u64, total,
        "the report's counts disagree: {report:?}"
    );
    let cursors = PullCursors::from([(a, first(a)), (b, first(b))]);
    let rest = pull_all(relay, reader, &cursors, 2_000).await;
    let from = |s: Seq| usize::try_from(s.get()).expect("small seq");
    assert_eq!(
        ops_of(&rest, a),
        ops_a[from(first(a))..].to_vec(),
        "uncovered ops of a lost"
    );
    assert_eq!(
        ops_of(&rest, b),
        ops_b[from(first(b))..].to_vec(),
        "uncovered ops of b lost"
    );

    // c falls past the horizon too: now only the checkpoint bounds gc.
    setup(relay, &[a, b], 3_000).await;
    let report = relay.gc(3_000, 500).await.expect("gc");
    let after = |dev: DeviceId, before: Seq| report.first_kept.get(&dev).copied().unwrap_or(before);
    let (fa, fb) = (after(a, first(a)), after(b, first(b)));
    assert!(
        fa <= Seq::new(4) && fb <= Seq::new(2),
        "gc passed the checkpoint: {report:?}"
    );
    let rest = pull_all(relay, reader, &PullCursors::from([(a, fa), (b, fb)]), 3_000).await;
    assert_eq!(
        ops_of(&rest, a),
        ops_a[from(fa)..].to_vec(),
        "uncovered ops of a lost"
    );
    assert_eq!(
        ops_of(&rest, b),
        ops_b[from(fb)..].to_vec(),
        "uncovered ops of b lost"
    );
}
