//! The peer CRDT libraries doing the same job in memory: the workload's messages appended on a
//! document A (a list of message maps, committed in groups like tandem's appends) and synced to
//! a document B by each library's own incremental-update mechanism.
//!
//! - **yrs**: a `Y.Array` of maps, each message pushed as a JSON map (`Any::Map`, what Yjs'
//!   `yarray.push([{..}])` stores); one `transact_mut` per group; B's state vector is sent to A,
//!   A answers `encode_state_as_update_v1(sv_B)`, B decodes and `apply_update`s it. Messages
//!   are immutable, so they need no nested shared type; and a nested `Y.Map` per message would
//!   make yrs 0.28 quadratic (`push_back` walks the array's items to find the end, and shared
//!   types are never squashed into one item): measured 7.6 us per message at 2k messages,
//!   274 us at 16k, and no round of 100k finished in 15 CPU minutes.
//! - **automerge**: an `AutoCommit` document with a list of maps (scalar string fields); one
//!   `commit` per group; A's `save_incremental` is `load_incremental`ed by a fresh document B.
//!
//! Both check that B ends up holding every message, so a run that synced nothing fails loudly.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable as _;
use automerge::{AutoCommit, ObjType, ReadDoc as _, ROOT};
use yrs::updates::decoder::Decode as _;
use yrs::{Any, Array as _, Doc, ReadTxn as _, Transact as _, Update};

use super::workload::Message;

/// The name of the shared list in both libraries' documents.
const LIST: &str = "messages";

/// Time spent in one synced run.
#[derive(Debug, Clone, Copy)]
pub struct PeerRun {
    /// Appending every message on A (all groups).
    pub append: Duration,
    /// Encoding the update on A and applying it on B.
    pub sync: Duration,
}

impl PeerRun {
    /// Append plus sync.
    pub fn total(&self) -> Duration {
        self.append + self.sync
    }
}

fn yrs_map(m: &Message) -> Any {
    Any::from(HashMap::from([
        (
            "conversation_id".to_owned(),
            Any::from(m.conversation_id.as_str()),
        ),
        ("role".to_owned(), Any::from(m.role)),
        ("text".to_owned(), Any::from(m.text.as_str())),
    ]))
}

/// Appends `msgs` on a yrs document A in groups of `group` per transaction and syncs them to a
/// fresh document B. Returns the timings and the update A sent; panics if B misses messages.
pub fn yrs_run(msgs: &[Message], group: usize) -> (PeerRun, Vec<u8>) {
    let a = Doc::new();
    let list_a = a.get_or_insert_array(LIST);
    let started = Instant::now();
    for chunk in msgs.chunks(group.max(1)) {
        let mut txn = a.transact_mut();
        for m in chunk {
            list_a.push_back(&mut txn, yrs_map(m));
        }
    }
    let append = started.elapsed();

    let b = Doc::new();
    let list_b = b.get_or_insert_array(LIST);
    let started = Instant::now();
    let sv_b = b.transact().state_vector();
    let update = a.transact().encode_state_as_update_v1(&sv_b);
    yrs_apply(&b, &update);
    let sync = started.elapsed();

    let held = list_b.len(&b.transact()) as usize;
    assert_eq!(
        held,
        msgs.len(),
        "yrs: B holds {held} of {} messages",
        msgs.len()
    );
    black_box(&a);
    (PeerRun { append, sync }, update)
}

/// Decodes and applies a v1 update to `doc`.
pub fn yrs_apply(doc: &Doc, update: &[u8]) {
    let update = Update::decode_v1(update).expect("decode a yrs update");
    doc.transact_mut()
        .apply_update(update)
        .expect("apply a yrs update");
}

/// A fresh yrs document B with `update` applied; returns how many messages it holds.
pub fn yrs_receive(update: &[u8]) -> (Doc, usize) {
    let b = Doc::new();
    let list = b.get_or_insert_array(LIST);
    yrs_apply(&b, update);
    let held = list.len(&b.transact()) as usize;
    (b, held)
}

/// Appends `msgs` on an automerge document A, one commit per `group` messages, and loads A's
/// incremental save into a fresh document B. Returns the timings and the saved bytes; panics
/// if B misses messages.
pub fn automerge_run(msgs: &[Message], group: usize) -> (PeerRun, Vec<u8>) {
    let mut a = AutoCommit::new();
    let started = Instant::now();
    let list = a
        .put_object(ROOT, LIST, ObjType::List)
        .expect("create the message list");
    for (g, chunk) in msgs.chunks(group.max(1)).enumerate() {
        let base = g * group.max(1);
        for (k, m) in chunk.iter().enumerate() {
            let map = a
                .insert_object(&list, base + k, ObjType::Map)
                .expect("insert a message map");
            a.put(&map, "conversation_id", m.conversation_id.as_str())
                .expect("put conversation_id");
            a.put(&map, "role", m.role).expect("put role");
            a.put(&map, "text", m.text.as_str()).expect("put text");
        }
        a.commit();
    }
    let append = started.elapsed();

    let started = Instant::now();
    let bytes = a.save_incremental();
    let (b, held) = automerge_receive(&bytes);
    let sync = started.elapsed();

    assert_eq!(
        held,
        msgs.len(),
        "automerge: B holds {held} of {} messages",
        msgs.len()
    );
    black_box((&a, &b));
    (PeerRun { append, sync }, bytes)
}

/// A fresh automerge document B with `bytes` (an incremental save) loaded; returns how many
/// messages it holds.
pub fn automerge_receive(bytes: &[u8]) -> (AutoCommit, usize) {
    let mut b = AutoCommit::new();
    b.load_incremental(bytes)
        .expect("load an automerge incremental save");
    let held = match b.get(ROOT, LIST).expect("read the message list") {
        Some((_, id)) => b.length(&id),
        None => 0,
    };
    (b, held)
}
