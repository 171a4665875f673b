//! The fold: verified, decrypted ops in, one deterministic [`State`] out.
//!
//! The fold is clock-free and order-free. [`State`] is a function of the *set* of ops folded
//! into it, so every device that holds the same ops holds the same state, whatever order they
//! arrived in and however often they were re-delivered:
//!
//! - **event streams** (conversation, trajectory, run, command) keep every op as an
//!   [`EventEntry`], keyed and ordered by `(hlc, op_id)`; re-folding inserts the same key;
//! - **last-writer-wins** surfaces keep, per record address `(surface, scope, key)`, the
//!   [`RecordEntry`] of the op with the greatest `(hlc, op_id)`, tombstones included; the
//!   maximum of a set does not depend on the order it is taken in;
//! - the **intent** surface feeds the [`IntentLedger`], which resolves each intent from the set
//!   of its ops.
//!
//! Scope partitions last-writer-wins records: a personal preference and an org preference with
//! the same key are two records (they are sealed with different keys and seen by different
//! people).
//!
//! Entries hold their payload as a [`Payload`]: the canonical JSON text, which is what the
//! state encodes and hashes, read back with [`Payload::to_value`] or [`Payload::parse`].
//!
//! Payload shapes are checked per surface (see the `payload` module) and a misfit is a
//! [`FoldError`], never silently skipped. [`State::apply_all`] checks every op before changing
//! anything, so a refused batch leaves the state untouched. Sealed ops must be opened first
//! ([`OpRecord::opened`]).
//!
//! [`state_hash`] is SHA-256 over `lp("tandem-state-v1") || lp(canonical state bytes)` (the
//! binary state layout of the `state_binary` module), identical on every device holding the
//! same ops. The tag names the hash, not the layout: the bytes start with their layout's own
//! marker.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::canonical::Framer;
use super::hlc::Hlc;
use super::intent::{IntentEntry, IntentLedger};
use super::op::{OpId, OpPayload, OpRecord};
use super::payload::{payload_fields, Payload, PayloadError, PayloadFields};
use super::scope::Scope;
use super::surface::{FoldTier, Surface};
use super::transcript::ConversationTurn;

/// Domain-separation tag of the state hash.
pub const STATE_HASH_TAG: &str = "tandem-state-v1";

/// Why an op could not be folded. Never carries payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The op is still sealed; open it before folding.
    #[error("op {op_id} is sealed; decrypt it before folding")]
    Sealed {
        /// The op.
        op_id: OpId,
    },
    /// A last-writer-wins op has no record key.
    #[error("op {op_id} on {surface} has no \"key\" field")]
    MissingKey {
        /// The op.
        op_id: OpId,
        /// Its surface.
        surface: Surface,
    },
    /// The payload does not fit the surface.
    #[error("op {op_id} on {surface}: {source}")]
    InvalidPayload {
        /// The op.
        op_id: OpId,
        /// Its surface.
        surface: Surface,
        /// What was wrong.
        source: PayloadError,
    },
}

/// One entry of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    /// The op.
    pub op_id: OpId,
    /// Its stamp.
    pub hlc: Hlc,
    /// Its scope.
    pub scope: Scope,
    /// Its payload.
    pub payload: Payload,
}

/// The current write of one last-writer-wins record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    /// The winning op.
    pub op_id: OpId,
    /// Its stamp.
    pub hlc: Hlc,
    /// The record's scope.
    pub scope: Scope,
    /// The record key.
    pub key: String,
    /// Whether the winning write is a tombstone.
    pub deleted: bool,
    /// The winning payload (including `"key"` and `"deleted"`).
    pub payload: Payload,
}

/// The address of a last-writer-wins record.
type RecordAddr = (Surface, Scope, String);

/// What one op contributes, checked and ready to insert.
pub(super) struct Prepared {
    pub(super) surface: Surface,
    pub(super) item: Item,
}

pub(super) enum Item {
    Event(EventEntry),
    Record(RecordEntry),
    Intent(IntentEntry),
}

/// Checks one op's parts and turns them into an insertable item.
pub(super) fn prepare(
    op_id: OpId,
    hlc: Hlc,
    scope: &Scope,
    surface: &Surface,
    payload: &Value,
) -> Result<Prepared, FoldError> {
    let fields = payload_fields(surface, payload).map_err(|e| invalid(op_id, surface, e))?;
    Ok(assemble(
        op_id,
        hlc,
        scope,
        surface,
        fields,
        Payload::from_value(payload),
    ))
}

/// [`prepare`] for a payload held as text already checked to be canonical JSON (as a decoded
/// state holds it): only what the surface needs is parsed, and the text is kept.
pub(super) fn prepare_text(
    op_id: OpId,
    hlc: Hlc,
    scope: &Scope,
    surface: &Surface,
    payload: Payload,
) -> Result<Prepared, FoldError> {
    let invalid = |e| invalid(op_id, surface, e);
    let item = match surface.tier() {
        FoldTier::EventStream if *surface == Surface::Conversation => {
            ConversationTurn::check_text(payload.as_str()).map_err(invalid)?;
            assemble(op_id, hlc, scope, surface, PayloadFields::Event, payload)
        }
        FoldTier::EventStream => {
            assemble(op_id, hlc, scope, surface, PayloadFields::Event, payload)
        }
        // Records and intents are few: they are read from a parsed tree, as an op's are.
        FoldTier::LastWriterWins | FoldTier::Leased => {
            let value = payload.to_value();
            let fields = payload_fields(surface, &value).map_err(invalid)?;
            assemble(op_id, hlc, scope, surface, fields, payload)
        }
    };
    Ok(item)
}

/// The fold's error for a payload that does not fit `surface`.
fn invalid(op_id: OpId, surface: &Surface, source: PayloadError) -> FoldError {
    match source {
        PayloadError::MissingKey => FoldError::MissingKey {
            op_id,
            surface: surface.clone(),
        },
        source => FoldError::InvalidPayload {
            op_id,
            surface: surface.clone(),
            source,
        },
    }
}

/// The item for a checked payload and what was read from it.
fn assemble(
    op_id: OpId,
    hlc: Hlc,
    scope: &Scope,
    surface: &Surface,
    fields: PayloadFields<'_>,
    payload: Payload,
) -> Prepared {
    let scope = scope.clone();
    let item = match fields {
        PayloadFields::Event => Item::Event(EventEntry {
            op_id,
            hlc,
            scope,
            payload,
        }),
        PayloadFields::Record { key, deleted } => Item::Record(RecordEntry {
            op_id,
            hlc,
            scope,
            key: key.to_owned(),
            deleted,
            payload,
        }),
        PayloadFields::Intent(intent) => Item::Intent(IntentEntry {
            op_id,
            hlc,
            scope,
            intent,
            payload,
        }),
    };
    Prepared {
        surface: surface.clone(),
        item,
    }
}

/// An op checked against its surface and ready to fold, its payload kept as canonical JSON
/// text: what the sync session folds. Opening a sealed op gives its plaintext as text
/// ([`super::seal::open_op_text`]), which is checked here without building a JSON tree;
/// [`State::apply_ready`] then cannot fail.
pub(crate) struct ReadyOp {
    hlc: Hlc,
    prepared: Prepared,
}

impl ReadyOp {
    /// `op`'s header with `text`, its payload in clear as canonical JSON (as
    /// [`super::seal::open_op_text`] returns it), checked against the op's surface.
    pub(crate) fn from_text(op: &OpRecord, text: &str) -> Result<Self, FoldError> {
        let payload = Payload::from_checked_text(text);
        let prepared = prepare_text(op.op_id(), op.hlc(), op.scope(), op.surface(), payload)?;
        Ok(Self {
            hlc: op.hlc(),
            prepared,
        })
    }

    /// A plaintext op, checked against its surface; a sealed op is [`FoldError::Sealed`].
    pub(crate) fn from_plain(op: &OpRecord) -> Result<Self, FoldError> {
        Ok(Self {
            hlc: op.hlc(),
            prepared: prepare_op(op)?,
        })
    }

    /// The op's stamp.
    pub(crate) fn hlc(&self) -> Hlc {
        self.hlc
    }
}

fn prepare_op(op: &OpRecord) -> Result<Prepared, FoldError> {
    match op.payload() {
        OpPayload::Plain(value) => prepare(op.op_id(), op.hlc(), op.scope(), op.surface(), value),
        OpPayload::Sealed { .. } => Err(FoldError::Sealed { op_id: op.op_id() }),
    }
}

/// [`prepare_op`] for an op given up: its scope and surface move instead of being copied,
/// and its parsed payload is freed once its text is taken.
fn prepare_owned(op: OpRecord) -> Result<Prepared, FoldError> {
    let (op_id, hlc) = (op.op_id(), op.hlc());
    let (scope, surface, payload) = op.into_parts();
    match payload {
        OpPayload::Plain(value) => prepare(op_id, hlc, &scope, &surface, &value),
        OpPayload::Sealed { .. } => Err(FoldError::Sealed { op_id }),
    }
}

/// How many ops of a batch changed the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldSummary {
    /// Ops that changed the state.
    pub changed: usize,
    /// Ops that changed nothing (already folded, or outdated last-writer-wins writes).
    pub unchanged: usize,
}

/// The folded state of a set of ops. See the module docs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct State {
    pub(super) events: BTreeMap<Surface, BTreeMap<(Hlc, OpId), EventEntry>>,
    pub(super) records: BTreeMap<RecordAddr, RecordEntry>,
    pub(super) intents: IntentLedger,
}

impl State {
    /// The empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one op; returns whether the state changed. On error nothing changes.
    pub fn apply(&mut self, op: &OpRecord) -> Result<bool, FoldError> {
        let prepared = prepare_op(op)?;
        Ok(self.insert(prepared))
    }

    /// Folds a batch: every op is checked first, so on error nothing changes.
    pub fn apply_all<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a OpRecord>,
    ) -> Result<FoldSummary, FoldError> {
        let prepared = ops
            .into_iter()
            .map(prepare_op)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.insert_all(prepared))
    }

    /// [`State::apply_all`] for ops the caller no longer needs: each op is taken apart as it
    /// is checked, so its parsed payload is freed as soon as its text is kept. On error
    /// nothing changes.
    pub fn apply_all_owned(&mut self, ops: Vec<OpRecord>) -> Result<FoldSummary, FoldError> {
        let prepared = ops
            .into_iter()
            .map(prepare_owned)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.insert_all(prepared))
    }

    /// Folds ops already checked against their surfaces (see [`ReadyOp`]).
    pub(crate) fn apply_ready(&mut self, ops: Vec<ReadyOp>) -> FoldSummary {
        self.insert_all(ops.into_iter().map(|op| op.prepared))
    }

    fn insert_all(&mut self, prepared: impl IntoIterator<Item = Prepared>) -> FoldSummary {
        let mut summary = FoldSummary::default();
        for p in prepared {
            if self.insert(p) {
                summary.changed += 1;
            } else {
                summary.unchanged += 1;
            }
        }
        summary
    }

    pub(super) fn insert(&mut self, prepared: Prepared) -> bool {
        match prepared.item {
            Item::Event(e) => {
                let stream = self.events.entry(prepared.surface).or_default();
                let key = (e.hlc, e.op_id);
                if stream.contains_key(&key) {
                    return false;
                }
                stream.insert(key, e);
                true
            }
            Item::Record(r) => {
                let addr = (prepared.surface, r.scope.clone(), r.key.clone());
                match self.records.get(&addr) {
                    Some(current) if (current.hlc, current.op_id) >= (r.hlc, r.op_id) => false,
                    _ => {
                        self.records.insert(addr, r);
                        true
                    }
                }
            }
            Item::Intent(i) => self.intents.insert(i),
        }
    }

    /// Adds a whole event stream for `surface` at once, built in one pass instead of one
    /// tree descent per entry (decoding a checkpoint adds every stream this way). Entries
    /// should come in `(hlc, op_id)` order; of entries with the same key only one is kept.
    pub(super) fn insert_stream(&mut self, surface: Surface, entries: Vec<EventEntry>) {
        let stream = entries.into_iter().map(|e| ((e.hlc, e.op_id), e));
        match self.events.get_mut(&surface) {
            Some(held) => held.extend(stream),
            None => {
                self.events.insert(surface, stream.collect());
            }
        }
    }

    /// The entries of an event-stream surface in `(hlc, op_id)` order (empty for other tiers).
    pub fn events(&self, surface: &Surface) -> impl Iterator<Item = &EventEntry> {
        self.events
            .get(surface)
            .into_iter()
            .flat_map(|stream| stream.values())
    }

    /// The current write of one record, tombstone or not.
    pub fn record(&self, surface: &Surface, scope: &Scope, key: &str) -> Option<&RecordEntry> {
        self.records
            .get(&(surface.clone(), scope.clone(), key.to_owned()))
    }

    /// The live (not deleted) value of one record.
    pub fn live_record(&self, surface: &Surface, scope: &Scope, key: &str) -> Option<&Payload> {
        self.record(surface, scope, key)
            .filter(|r| !r.deleted)
            .map(|r| &r.payload)
    }

    /// Every record of a surface, tombstones included, by scope then key.
    pub fn records(&self, surface: &Surface) -> impl Iterator<Item = &RecordEntry> {
        let surface = surface.clone();
        self.records
            .iter()
            .filter(move |((s, _, _), _)| *s == surface)
            .map(|(_, r)| r)
    }

    /// The intent ledger.
    pub fn intents(&self) -> &IntentLedger {
        &self.intents
    }

    /// Whether nothing was folded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.records.is_empty() && self.intents.is_empty()
    }
}

// The state holds user data: `Debug` shows sizes only.
impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: usize = self.events.values().map(BTreeMap::len).sum();
        f.debug_struct("State")
            .field("events", &events)
            .field("records", &self.records.len())
            .field("intents", &self.intents.len())
            .finish()
    }
}

/// Folds `ops` into a new state (see [`State::apply_all`]).
pub fn fold<'a>(ops: impl IntoIterator<Item = &'a OpRecord>) -> Result<State, FoldError> {
    let mut state = State::new();
    state.apply_all(ops)?;
    Ok(state)
}

/// The state hash: SHA-256 over `lp("tandem-state-v1") || lp(canonical state bytes)`.
pub fn state_hash(state: &State) -> [u8; 32] {
    hash_state_bytes(&state.to_canonical_bytes())
}

/// The state hash of already encoded canonical state bytes.
pub fn hash_state_bytes(canonical: &[u8]) -> [u8; 32] {
    // lp(tag) || lp(canonical), hashed as it streams (the state can be tens of megabytes).
    let mut f = Framer::hashing(STATE_HASH_TAG);
    f.field(canonical);
    f.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::author::OpAuthor;
    use crate::domain::oplog::intent::Intent;
    use crate::domain::oplog::test_support::{arb_chains, author, dev};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    fn op(a: &mut OpAuthor, now: u64, scope: Scope, surface: Surface, payload: Value) -> OpRecord {
        a.append(now, scope, surface, OpPayload::Plain(payload))
            .unwrap()
    }

    fn turn(text: &str) -> Value {
        json!({"conversation_id": "c1", "role": "user", "text": text})
    }

    #[test]
    fn identical_turns_stay_two_entries_in_stamp_order() {
        let mut a = OpAuthor::new(dev(1));
        let mut b = OpAuthor::new(dev(2));
        let x = op(
            &mut a,
            10,
            Scope::Personal,
            Surface::Conversation,
            turn("same"),
        );
        let y = op(
            &mut b,
            10,
            Scope::Personal,
            Surface::Conversation,
            turn("same"),
        );
        let z = op(
            &mut a,
            5,
            Scope::Personal,
            Surface::Conversation,
            turn("later"),
        );
        let s = fold([&z, &y, &x]).unwrap();
        // (10, 0, dev1) < (10, 0, dev2) < (10, 1, dev1): wall, then counter, then device.
        let ids: Vec<_> = s.events(&Surface::Conversation).map(|e| e.op_id).collect();
        assert_eq!(ids, vec![x.op_id(), y.op_id(), z.op_id()]);
        assert_eq!(s.events(&Surface::Run).count(), 0);
        assert_eq!(s.events(&Surface::Knowledge).count(), 0);
    }

    #[test]
    fn last_writer_wins_per_record_whatever_the_order() {
        let mut a = OpAuthor::new(dev(1));
        let mut b = OpAuthor::new(dev(2));
        let old = op(
            &mut a,
            10,
            Scope::Personal,
            Surface::Knowledge,
            json!({"key": "sky", "body": "green"}),
        );
        let new = op(
            &mut b,
            20,
            Scope::Personal,
            Surface::Knowledge,
            json!({"key": "sky", "body": "blue"}),
        );
        let other = op(
            &mut a,
            5,
            Scope::Personal,
            Surface::Knowledge,
            json!({"key": "sea", "body": "wet"}),
        );
        for order in [
            [&old, &new, &other],
            [&new, &other, &old],
            [&other, &old, &new],
        ] {
            let s = fold(order).unwrap();
            let r = s
                .record(&Surface::Knowledge, &Scope::Personal, "sky")
                .unwrap();
            assert_eq!(
                (r.op_id, r.payload.to_value()["body"].clone()),
                (new.op_id(), json!("blue"))
            );
            assert_eq!(s.records(&Surface::Knowledge).count(), 2);
        }
    }

    #[test]
    fn ties_on_wall_time_break_on_counter_then_device() {
        let mut a = OpAuthor::new(dev(1));
        let mut b = OpAuthor::new(dev(2));
        let pa = op(
            &mut a,
            10,
            Scope::Personal,
            Surface::Preference,
            json!({"key": "theme", "value": "dark"}),
        );
        let pb = op(
            &mut b,
            10,
            Scope::Personal,
            Surface::Preference,
            json!({"key": "theme", "value": "light"}),
        );
        assert_eq!(
            (pa.hlc().wall_ms, pa.hlc().counter),
            (pb.hlc().wall_ms, pb.hlc().counter)
        );
        let s = fold([&pb, &pa]).unwrap();
        assert_eq!(
            s.live_record(&Surface::Preference, &Scope::Personal, "theme")
                .map(Payload::to_value),
            Some(json!({"key": "theme", "value": "light"}))
        );
    }

    #[test]
    fn tombstones_win_like_writes_and_hide_the_value() {
        let mut a = OpAuthor::new(dev(1));
        let put = op(
            &mut a,
            10,
            Scope::Personal,
            Surface::Skill,
            json!({"key": "k", "v": 1}),
        );
        let del = op(
            &mut a,
            11,
            Scope::Personal,
            Surface::Skill,
            json!({"key": "k", "deleted": true}),
        );
        let s = fold([&del, &put]).unwrap();
        let r = s.record(&Surface::Skill, &Scope::Personal, "k").unwrap();
        assert!(r.deleted);
        assert_eq!(s.live_record(&Surface::Skill, &Scope::Personal, "k"), None);
        let put_again = op(
            &mut a,
            12,
            Scope::Personal,
            Surface::Skill,
            json!({"key": "k", "v": 2}),
        );
        let s = fold([&del, &put_again, &put]).unwrap();
        assert_eq!(
            s.live_record(&Surface::Skill, &Scope::Personal, "k")
                .unwrap()
                .to_value()["v"],
            json!(2)
        );
    }

    #[test]
    fn scopes_and_surfaces_partition_records() {
        let mut a = OpAuthor::new(dev(1));
        let acme = Scope::shared("acme").unwrap();
        let p = op(
            &mut a,
            1,
            Scope::Personal,
            Surface::Preference,
            json!({"key": "k", "v": "me"}),
        );
        let o = op(
            &mut a,
            2,
            acme.clone(),
            Surface::Preference,
            json!({"key": "k", "v": "org"}),
        );
        let reg = Surface::registry("agents").unwrap();
        let r = op(
            &mut a,
            3,
            Scope::Personal,
            reg.clone(),
            json!({"key": "k", "v": "reg"}),
        );
        let s = fold([&p, &o, &r]).unwrap();
        assert_eq!(
            s.live_record(&Surface::Preference, &Scope::Personal, "k")
                .unwrap()
                .to_value()["v"],
            json!("me")
        );
        assert_eq!(
            s.live_record(&Surface::Preference, &acme, "k")
                .unwrap()
                .to_value()["v"],
            json!("org")
        );
        assert_eq!(
            s.live_record(&reg, &Scope::Personal, "k")
                .unwrap()
                .to_value()["v"],
            json!("reg")
        );
        assert_eq!(s.records(&Surface::Preference).count(), 2);
    }

    #[test]
    fn intents_feed_the_ledger() {
        let mut a = OpAuthor::new(dev(1));
        let run = crate::domain::oplog::test_support::run(5);
        let mk = |status| Intent {
            intent_id: crate::domain::oplog::IntentId::parse("i").unwrap(),
            run_id: run,
            status,
        };
        let c = op(
            &mut a,
            1,
            Scope::Personal,
            Surface::Intent,
            mk(crate::domain::oplog::IntentStatus::Committed).to_payload(),
        );
        let p = op(
            &mut a,
            2,
            Scope::Personal,
            Surface::Intent,
            mk(crate::domain::oplog::IntentStatus::Pending).to_payload(),
        );
        let s = fold([&p, &c]).unwrap();
        assert!(s.intents().is_run_committed(&run));
        assert_eq!(s.intents().ignored().count(), 1);
    }

    #[test]
    fn refolding_is_a_no_op_and_reported_as_unchanged() {
        let mut a = OpAuthor::new(dev(1));
        let x = op(&mut a, 1, Scope::Personal, Surface::Run, json!({"step": 1}));
        let y = op(
            &mut a,
            2,
            Scope::Personal,
            Surface::Routing,
            json!({"key": "r"}),
        );
        let mut s = State::new();
        assert!(s.is_empty());
        assert_eq!(
            s.apply_all([&x, &y]).unwrap(),
            FoldSummary {
                changed: 2,
                unchanged: 0
            }
        );
        let before = s.clone();
        assert!(!s.apply(&x).unwrap());
        assert!(!s.apply(&y).unwrap());
        assert_eq!(
            s.apply_all([&y, &x]).unwrap(),
            FoldSummary {
                changed: 0,
                unchanged: 2
            }
        );
        assert_eq!(s, before);
        assert!(!s.is_empty());
    }

    #[test]
    fn ops_without_a_key_are_refused_not_skipped() {
        let ok = OpAuthor::new(dev(1))
            .append(1, Scope::Personal, Surface::Run, OpPayload::Plain(json!(1)))
            .unwrap();
        // Authors refuse such payloads, so build the op directly.
        let keyless = OpRecord::new(
            crate::domain::oplog::Hlc::new(2, 0, dev(1)),
            crate::domain::ids::Seq::new(1),
            Some(ok.op_id()),
            Scope::Personal,
            Surface::Declagent,
            OpPayload::Plain(json!({"name": "no key"})),
        )
        .unwrap();
        let mut s = State::new();
        let err = s.apply_all([&ok, &keyless]).unwrap_err();
        assert_eq!(
            err,
            FoldError::MissingKey {
                op_id: keyless.op_id(),
                surface: Surface::Declagent
            }
        );
        assert!(s.is_empty(), "a refused batch changes nothing");
        assert!(!err.to_string().contains("no key"));
    }

    /// Op 0 of device 1's chain, built directly: authors refuse payloads that misfit.
    fn genesis_op(surface: Surface, payload: OpPayload) -> OpRecord {
        OpRecord::new(
            crate::domain::oplog::Hlc::new(2, 0, dev(1)),
            crate::domain::ids::Seq::ZERO,
            None,
            Scope::Personal,
            surface,
            payload,
        )
        .unwrap()
    }

    /// [`genesis_op`] on the run surface with a (meaningless) sealed payload.
    fn sealed_genesis_op() -> OpRecord {
        let payload = OpPayload::Sealed {
            key_epoch: 1,
            nonce: [0; 24],
            ciphertext: vec![1, 2],
        };
        genesis_op(Surface::Run, payload)
    }

    #[test]
    fn malformed_and_sealed_payloads_are_refused() {
        let mk = genesis_op;
        let bad_turn = mk(
            Surface::Conversation,
            OpPayload::Plain(json!({"text": "secret"})),
        );
        assert!(matches!(
            State::new().apply(&bad_turn),
            Err(FoldError::InvalidPayload {
                source: PayloadError::InvalidTurn(_),
                ..
            })
        ));
        let bad_tomb = mk(
            Surface::Skill,
            OpPayload::Plain(json!({"key": "k", "deleted": 1})),
        );
        assert!(matches!(
            State::new().apply(&bad_tomb),
            Err(FoldError::InvalidPayload {
                source: PayloadError::InvalidTombstone,
                ..
            })
        ));
        let bad_intent = mk(
            Surface::Intent,
            OpPayload::Plain(json!({"status": "pending"})),
        );
        assert!(matches!(
            State::new().apply(&bad_intent),
            Err(FoldError::InvalidPayload { .. })
        ));
        let sealed = sealed_genesis_op();
        assert_eq!(
            State::new().apply(&sealed),
            Err(FoldError::Sealed {
                op_id: sealed.op_id()
            })
        );
        // Once opened, it folds under its original id.
        let opened = sealed.clone().opened(json!({"step": 1}));
        let s = fold([&opened]).unwrap();
        assert_eq!(
            s.events(&Surface::Run).next().unwrap().op_id,
            sealed.op_id()
        );
    }

    /// The op's payload as the canonical JSON text [`ReadyOp::from_text`] takes.
    fn canonical_text(op: &OpRecord) -> String {
        let value = op.payload().as_plain().expect("a plaintext op");
        crate::domain::oplog::canonical::canonical_json_text(value)
    }

    #[test]
    fn ready_ops_are_refused_as_the_fold_refuses_them() {
        let cases = [
            (Surface::Conversation, json!({"text": "secret"})),
            (
                Surface::Conversation,
                json!({"conversation_id": "c", "role": "user", "text": null}),
            ),
            (Surface::Declagent, json!({"name": "no key"})),
            (Surface::Skill, json!({"key": "k", "deleted": 1})),
            (Surface::Preference, json!(["not", "an", "object"])),
            (Surface::Intent, json!({"status": "pending"})),
        ];
        for (surface, payload) in cases {
            let op = genesis_op(surface, OpPayload::Plain(payload));
            let expected = State::new().apply(&op).unwrap_err();
            let from_text = ReadyOp::from_text(&op, &canonical_text(&op)).err();
            assert_eq!(from_text.as_ref(), Some(&expected), "{op:?}");
            assert_eq!(ReadyOp::from_plain(&op).err(), Some(expected));
        }
        let sealed = sealed_genesis_op();
        assert_eq!(
            ReadyOp::from_plain(&sealed).err(),
            Some(FoldError::Sealed {
                op_id: sealed.op_id()
            })
        );
    }

    #[test]
    fn state_hash_is_order_free_and_content_sensitive() {
        let mut a = OpAuthor::new(dev(1));
        let x = op(&mut a, 1, Scope::Personal, Surface::Command, json!("ls"));
        let y = op(&mut a, 2, Scope::Personal, Surface::Command, json!("pwd"));
        assert_eq!(
            state_hash(&fold([&x, &y]).unwrap()),
            state_hash(&fold([&y, &x]).unwrap())
        );
        assert_ne!(
            state_hash(&fold([&x]).unwrap()),
            state_hash(&fold([&x, &y]).unwrap())
        );
        assert_ne!(state_hash(&State::new()), state_hash(&fold([&x]).unwrap()));
        let dbg = format!("{:?}", fold([&x, &y]).unwrap());
        assert!(dbg.contains("events: 2") && !dbg.contains("pwd"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// (a) Any permutation, duplication or re-delivery of the same op set gives the same
        /// state hash.
        #[test]
        fn any_arrival_order_gives_the_same_state(chains in arb_chains(8), seed in any::<u64>()) {
            let ops: Vec<OpRecord> = author(&chains).into_iter().flatten().collect();
            let reference = fold(&ops).unwrap();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut delivery: Vec<&OpRecord> = ops.iter().collect();
            let repeats = rng.gen_range(0..=ops.len());
            for _ in 0..repeats {
                delivery.push(&ops[rng.gen_range(0..ops.len())]);
            }
            delivery.shuffle(&mut rng);
            // Delivered in several batches, as successive pumps would.
            let mut state = State::new();
            for batch in delivery.chunks(rng.gen_range(1..=delivery.len().max(1))) {
                state.apply_all(batch.iter().copied()).unwrap();
            }
            prop_assert_eq!(state_hash(&state), state_hash(&reference));
            prop_assert_eq!(state, reference);
        }

        /// (b) Folding is idempotent: re-folding any ops already folded changes nothing.
        #[test]
        fn fold_is_idempotent(chains in arb_chains(8), seed in any::<u64>()) {
            let ops: Vec<OpRecord> = author(&chains).into_iter().flatten().collect();
            let once = fold(&ops).unwrap();
            let mut twice = once.clone();
            let summary = twice.apply_all(&ops).unwrap();
            prop_assert_eq!(summary.changed, 0);
            prop_assert_eq!(&twice, &once);
            let mut rng = StdRng::seed_from_u64(seed);
            let subset: Vec<&OpRecord> = ops.iter().filter(|_| rng.gen_bool(0.5)).collect();
            for op in subset {
                prop_assert!(!twice.apply(op).unwrap());
            }
            prop_assert_eq!(state_hash(&twice), state_hash(&once));
        }

        /// Ops checked from their canonical text (as a sealed op opens) or from their tree
        /// fold to the state the ops themselves fold to, with the same summary.
        #[test]
        fn ready_ops_fold_as_the_ops_do(chains in arb_chains(8)) {
            let ops: Vec<OpRecord> = author(&chains).into_iter().flatten().collect();
            let mut reference = State::new();
            let expected = reference.apply_all(&ops).unwrap();
            let from_text = ops
                .iter()
                .map(|op| ReadyOp::from_text(op, &canonical_text(op)))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            prop_assert!(from_text.iter().zip(&ops).all(|(r, op)| r.hlc() == op.hlc()));
            let mut state = State::new();
            prop_assert_eq!(state.apply_ready(from_text), expected);
            prop_assert_eq!(&state, &reference);
            let from_plain = ops.iter().map(ReadyOp::from_plain).collect::<Result<Vec<_>, _>>();
            let mut state = State::new();
            prop_assert_eq!(state.apply_ready(from_plain.unwrap()), expected);
            prop_assert_eq!(state_hash(&state), state_hash(&reference));
        }
    }
}
