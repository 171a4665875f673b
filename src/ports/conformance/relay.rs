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
    encoded_len, fold, ChainHead, ChainTip, Checkpoint, CheckpointError, Frontier, Hlc, OpAuthor,
    OpId, OpPayload, OpRecord, Scope, Surface, VerifyError, SEALED_NONCE_LEN,
};
use crate::ports::{
    BatchLimit, PullBatch, PullCursors, Relay, RelayError, RosterEntry, LAST_SEEN_RESOLUTION_MS,
};

mod pull;
mod push;
mod roster;

pub use self::pull::{
    gc_keeps_everything_not_covered, pull_after_gc_reports_compaction,
    pull_honours_the_byte_budget, pull_resumes_from_cursors,
};
pub use self::push::{
    fork_is_refused, push_accepts_own_ops_only, push_is_chain_checked, push_requires_registration,
    register_is_idempotent, repush_is_deduplicated,
};
pub use self::roster::{
    ack_never_moves_backwards, checkpoints_are_verified_and_latest_wins,
    roster_tracks_last_seen_and_acks, stable_frontier_is_the_minimum_ack,
};

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
        $m!(pull_honours_the_byte_budget);
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

/// `n` personal ops authored by `device` on `surface`, stamped from `first_wall_ms` one
/// millisecond apart, op `i` carrying `payload(i)`.
fn authored_with(
    device: DeviceId,
    n: usize,
    first_wall_ms: u64,
    surface: &Surface,
    payload: impl Fn(usize) -> OpPayload,
) -> Vec<OpRecord> {
    let mut author = OpAuthor::new(device);
    (0..n)
        .map(|i| {
            author
                .append(
                    first_wall_ms + i as u64,
                    Scope::Personal,
                    surface.clone(),
                    payload(i),
                )
                .expect("authoring a valid op")
        })
        .collect()
}

fn authored(device: DeviceId, n: usize, first_wall_ms: u64, tag: &str) -> Vec<OpRecord> {
    authored_with(device, n, first_wall_ms, &Surface::Run, |i| {
        OpPayload::Plain(json!({ "step": i, "tag": tag }))
    })
}

/// A valid chain of `n` ops authored by `device`, stamped from `first_wall_ms` one millisecond
/// apart.
pub fn chain(device: DeviceId, n: usize, first_wall_ms: u64) -> Vec<OpRecord> {
    authored(device, n, first_wall_ms, "main")
}

/// A valid chain of `n` ops authored by `device` whose payloads are sealed-looking blobs of
/// `payload_bytes` bytes each (relays and journals never open payloads), for byte budgets.
pub fn bulky_chain(
    device: DeviceId,
    n: usize,
    first_wall_ms: u64,
    payload_bytes: usize,
) -> Vec<OpRecord> {
    authored_with(device, n, first_wall_ms, &Surface::Conversation, |i| {
        OpPayload::Sealed {
            key_epoch: 1,
            nonce: [0x5E; SEALED_NONCE_LEN],
            ciphertext: vec![i as u8; payload_bytes],
        }
    })
}

/// The summed encoded size of `ops`, as [`BatchLimit`] measures it.
pub fn encoded_size(ops: &[OpRecord]) -> usize {
    ops.iter().map(encoded_len).sum()
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
        .pull(reader, cursors, BatchLimit::ops(usize::MAX), now_ms)
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
