//! State bytes, layout 1: the JSON layout of a [`State`], and decoding of either layout.
//!
//! A state has two spellings. The canonical bytes, which state hashes and checkpoints are
//! over, are layout 2, the binary layout of the `state_binary` module
//! ([`State::to_canonical_bytes`]). Layout 1, described here, is the same content as JSON:
//! [`State::to_canonical_json`] shows a state this way, and checkpoints written before layout 2
//! hold it. [`State::from_canonical_bytes`] reads both, telling them apart by the first byte
//! (`{` for layout 1).
//!
//! Layout 1 is the canonical JSON (see the `canonical` module) of
//!
//! ```text
//! {
//!   "events":  { "<surface>": [entry, ...] },                       entries by (hlc, op_id)
//!   "intents": { "<intent_id>": [entry, ...] },                     entries by (hlc, op_id)
//!   "records": { "<surface>": { "<scope>": { "<key>": entry } } },  the winning write only
//!   "v": 1
//! }
//! entry = { "hlc": {"counter": c, "device": "<uuid>", "wall_ms": w},
//!           "op_id": "<64 hex>", "payload": <plaintext payload>, "scope": "<scope>" }
//! ```
//!
//! Every key is a string and canonical JSON sorts object keys, so the layout does not depend on
//! the order of any Rust enum or map. The four top-level keys are always present; a surface,
//! scope or intent without entries is absent.
//!
//! Decoding ([`State::from_canonical_bytes`]), in either layout, re-folds every entry through
//! the same checks as the fold and then requires the re-encoding in the same layout to equal
//! the input byte for byte. Anything that is not exactly what some state would encode to
//! (unknown fields, wrong order, an entry filed under the wrong key, a payload the fold would
//! refuse, a losing write) is refused.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde_json::error::Category;
use serde_json::Value;

use super::canonical::{write_display, write_hex, write_json_string};
use super::fold::{prepare, EventEntry, FoldError, Item, Prepared, RecordEntry, State};
use super::hlc::Hlc;
use super::intent::IntentView;
use super::op::OpId;
use super::payload::Payload;
use super::scope::Scope;
use super::state_binary::Input;
use super::surface::Surface;

/// About how many bytes [`State::from_canonical_bytes`] re-encodes before comparing them with
/// its input.
const COMPARE_CHUNK: usize = 64 * 1024;

/// From this many entries on, [`State::from_canonical_bytes`] re-encodes the state in two
/// halves on two threads, and reads a binary event stream of this many entries in two
/// halves; below it, a thread costs more than it saves.
pub(super) const PARALLEL_MIN_ENTRIES: usize = 4096;

/// The version of the state layout [`State::to_canonical_bytes`] writes: the binary layout
/// (see the `state_binary` module).
pub const STATE_LAYOUT_VERSION: u64 = 2;

/// The version of the JSON layout: what [`State::to_canonical_json`] shows, and what
/// checkpoints written before the binary layout hold ([`State::from_canonical_bytes`] still
/// reads them).
pub const JSON_STATE_LAYOUT_VERSION: u64 = 1;

/// One of the two spellings of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Layout 1, canonical JSON (this module's docs).
    Json,
    /// Layout 2, binary (the `state_binary` module's docs).
    Binary,
}

/// Why bytes could not be decoded into a [`State`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    /// Not JSON at all.
    #[error("state bytes are not JSON")]
    NotJson,
    /// JSON, but not the state layout.
    #[error("state bytes do not match the state layout")]
    Layout,
    /// A layout version this build does not know.
    #[error("unsupported state layout version {0}")]
    UnsupportedVersion(u64),
    /// A key that does not parse (which kind of key is named).
    #[error("invalid {0} key in state bytes")]
    InvalidKey(&'static str),
    /// An entry the fold refuses.
    #[error("invalid entry in state bytes: {0}")]
    InvalidEntry(#[from] FoldError),
    /// Decodable, but not the canonical encoding of the state it decodes to.
    #[error("state bytes are not canonical")]
    NonCanonical,
    /// Neither layout: the bytes start with neither `{` nor the binary layout's magic.
    #[error("state bytes are in no known layout")]
    UnknownLayout,
    /// Binary layout bytes that do not decode (truncated, trailing bytes, a payload that is
    /// not JSON, ...): a fixed description, never quoting the bytes.
    #[error("malformed state bytes: {0}")]
    Malformed(&'static str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    v: u64,
    #[serde(default)]
    events: BTreeMap<String, Vec<EntryDoc>>,
    #[serde(default)]
    intents: BTreeMap<String, Vec<EntryDoc>>,
    #[serde(default)]
    records: BTreeMap<String, BTreeMap<String, BTreeMap<String, EntryDoc>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    hlc: Hlc,
    op_id: OpId,
    payload: Value,
    scope: Scope,
}

impl EntryDoc {
    /// Checks the entry as the fold checks an op on `surface`.
    fn prepare(self, surface: &Surface) -> Result<Prepared, FoldError> {
        prepare(self.op_id, self.hlc, &self.scope, surface, &self.payload)
    }
}

impl State {
    /// The state as JSON, layout 1 (see the module docs): a readable view of the state, with
    /// every payload in plaintext. The canonical bytes that state hashes and checkpoints use
    /// are the binary layout ([`State::to_canonical_bytes`]).
    pub fn to_canonical_json(&self) -> Value {
        serde_json::from_slice(&self.json_layout_bytes())
            .expect("the state writer emits valid JSON")
    }

    /// The canonical bytes of the state: the binary layout (see the `state_binary` module),
    /// written straight from the state. State hashes and checkpoints are over these bytes.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        self.layout_bytes(Layout::Binary)
    }

    /// The canonical JSON bytes of layout 1 (see the module docs).
    pub(super) fn json_layout_bytes(&self) -> Vec<u8> {
        self.layout_bytes(Layout::Json)
    }

    fn layout_bytes(&self, layout: Layout) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        self.write_window(layout, 0..usize::MAX, &mut out);
        out
    }

    /// Appends the part of the encoding in `layout` that `window` selects (see [`Writer`])
    /// to `out`.
    fn write_window(&self, layout: Layout, window: Range<usize>, out: &mut Vec<u8>) {
        self.write_layout(layout, &mut Writer::new(out, &mut |_| {}, window));
    }

    fn write_layout(&self, layout: Layout, w: &mut Writer<'_>) {
        match layout {
            Layout::Json => self.write_json_layout(w),
            Layout::Binary => self.write_binary_layout(w),
        }
    }

    /// Whether `bytes` are exactly this state's encoding in `layout`. A large state is
    /// re-encoded in two halves at once: the first half is compared as it is written, the
    /// second is written on a second thread and compared against the end of `bytes`.
    pub(super) fn encodes_to(&self, bytes: &[u8], layout: Layout) -> bool {
        let entries = self.entry_count();
        if entries < PARALLEL_MIN_ENTRIES {
            return self.compare_window(layout, 0..usize::MAX, bytes) == Some(bytes.len());
        }
        let half = entries / 2;
        std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                // Reserved at the input's size (only what is written is touched): growing a
                // buffer of tens of megabytes by doubling would copy it over and over.
                let mut out = Vec::with_capacity(bytes.len());
                self.write_window(layout, half..usize::MAX, &mut out);
                out
            });
            let first = self.compare_window(layout, 0..half, bytes);
            let second = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            first.is_some_and(|len| bytes.get(len..) == Some(&second[..]))
        })
    }

    /// Writes the part of the encoding that `window` selects (see [`Writer`]) and compares it
    /// with the start of `bytes` as it is written, in chunks of about [`COMPARE_CHUNK`] bytes.
    /// Returns the part's length if every byte of it matched.
    fn compare_window(&self, layout: Layout, window: Range<usize>, bytes: &[u8]) -> Option<usize> {
        let (mut pos, mut same) = (0, true);
        let mut compare = |chunk: &mut Vec<u8>| {
            let end = pos + chunk.len();
            same &= bytes.get(pos..end) == Some(&chunk[..]);
            pos = end;
            chunk.clear();
        };
        let mut buf = Vec::with_capacity(2 * COMPARE_CHUNK);
        let mut flush = |chunk: &mut Vec<u8>| {
            if chunk.len() >= COMPARE_CHUNK {
                compare(chunk);
            }
        };
        self.write_layout(layout, &mut Writer::new(&mut buf, &mut flush, window));
        compare(&mut buf);
        same.then_some(pos)
    }

    /// How many entries the encoding holds: every event, intent entry and record.
    fn entry_count(&self) -> usize {
        let events: usize = self.events.values().map(BTreeMap::len).sum();
        let intents: usize = self
            .intents
            .views()
            .map(|v| self.intents.entries(&v.intent_id).count())
            .sum();
        events + intents + self.records.len()
    }

    /// The event streams by surface name, in byte order of the names.
    pub(super) fn events_by_name(&self) -> Vec<(String, &EventStream)> {
        sorted_by_name(self.events.iter().map(|(s, st)| (s.to_string(), st)))
    }

    /// The intents by id text, in byte order.
    pub(super) fn intents_by_name(&self) -> Vec<(String, &IntentView)> {
        sorted_by_name(self.intents.views().map(|v| (v.intent_id.to_string(), v)))
    }

    /// The records by surface name, then scope text, then key, each level in byte order.
    pub(super) fn records_by_name(&self) -> RecordsByName<'_> {
        let mut records = RecordsByName::new();
        for ((surface, scope, key), r) in &self.records {
            records
                .entry(surface.to_string())
                .or_default()
                .entry(scope.to_string())
                .or_default()
                .insert(key.as_str(), r);
        }
        // BTreeMap<String, _> iterates in byte order of the keys: canonical order.
        records
    }

    /// Adds the decoded entries of the event stream of `surface`, in one pass. An entry the
    /// fold would not file there is filed as the fold would, for the re-encoding to refuse.
    pub(super) fn insert_decoded_stream(&mut self, surface: Surface, entries: Vec<Prepared>) {
        let mut stream = Vec::with_capacity(entries.len());
        for prepared in entries {
            match prepared.item {
                Item::Event(event) => stream.push(event),
                item => {
                    self.insert(Prepared {
                        surface: prepared.surface,
                        item,
                    });
                }
            }
        }
        self.insert_stream(surface, stream);
    }

    /// Writes layout 1 through `w`, entry by entry.
    fn write_json_layout(&self, w: &mut Writer<'_>) {
        w.raw(b"{\"events\":{");
        for (i, (surface, stream)) in self.events_by_name().into_iter().enumerate() {
            w.key(i, &surface);
            w.entries(
                stream
                    .values()
                    .map(|e| (&e.op_id, &e.hlc, &e.scope, &e.payload)),
            );
        }
        w.raw(b"},\"intents\":{");
        for (i, (name, view)) in self.intents_by_name().into_iter().enumerate() {
            w.key(i, &name);
            w.entries(
                self.intents
                    .entries(&view.intent_id)
                    .map(|e| (&e.op_id, &e.hlc, &e.scope, &e.payload)),
            );
        }
        w.raw(b"},\"records\":{");
        for (i, (surface, by_scope)) in self.records_by_name().iter().enumerate() {
            w.key(i, surface);
            w.raw(b"{");
            for (j, (scope, by_key)) in by_scope.iter().enumerate() {
                w.key(j, scope);
                w.raw(b"{");
                for (k, (key, r)) in by_key.iter().enumerate() {
                    w.entry(|out| {
                        write_key(out, k, key);
                        write_entry(out, &r.op_id, &r.hlc, &r.scope, &r.payload);
                    });
                }
                w.raw(b"}");
            }
            w.raw(b"}");
        }
        w.raw(b"},\"v\":");
        w.raw(JSON_STATE_LAYOUT_VERSION.to_string().as_bytes());
        w.raw(b"}");
    }

    /// Decodes state bytes in either layout, refusing anything that is not exactly what some
    /// state encodes to in that layout.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        Self::decode(Input::Copied(bytes))
    }

    /// Decodes either layout, telling them apart by the first byte. With
    /// [`Input::Shared`] the payloads of a binary-layout state share the buffer instead of
    /// each being copied out of it, so decoding allocates far less and the decoded state
    /// holds on to the whole buffer.
    pub(super) fn decode(input: Input<'_>) -> Result<Self, StateDecodeError> {
        if input.bytes().first() == Some(&b'{') {
            Self::decode_json_layout(input.bytes())
        } else {
            Self::decode_binary_layout(input)
        }
    }

    /// Decodes layout 1.
    fn decode_json_layout(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        // UTF-8 is checked once for the whole input (fast on mostly-ASCII text) rather than
        // string by string while parsing.
        let text = std::str::from_utf8(bytes).map_err(|_| StateDecodeError::NotJson)?;
        let doc: Doc = serde_json::from_str(text).map_err(|e| match e.classify() {
            Category::Data => StateDecodeError::Layout,
            Category::Io | Category::Syntax | Category::Eof => StateDecodeError::NotJson,
        })?;
        if doc.v != JSON_STATE_LAYOUT_VERSION {
            return Err(StateDecodeError::UnsupportedVersion(doc.v));
        }
        let mut state = State::new();
        for (surface, entries) in doc.events {
            let surface = parse_surface(&surface)?;
            let prepared = entries
                .into_iter()
                .map(|e| e.prepare(&surface))
                .collect::<Result<_, _>>()?;
            state.insert_decoded_stream(surface, prepared);
        }
        for (_, entries) in doc.intents {
            for e in entries {
                state.insert(e.prepare(&Surface::Intent)?);
            }
        }
        for (surface, by_scope) in doc.records {
            let surface = parse_surface(&surface)?;
            for (_, by_key) in by_scope {
                for (_, e) in by_key {
                    state.insert(e.prepare(&surface)?);
                }
            }
        }
        if !state.encodes_to(bytes, Layout::Json) {
            return Err(StateDecodeError::NonCanonical);
        }
        Ok(state)
    }
}

/// One event stream, keyed as the fold keys it.
pub(super) type EventStream = BTreeMap<(Hlc, OpId), EventEntry>;

/// Records grouped by surface name, scope text and key.
pub(super) type RecordsByName<'a> =
    BTreeMap<String, BTreeMap<String, BTreeMap<&'a str, &'a RecordEntry>>>;

/// Named items in byte order of their names (canonical JSON's key order).
fn sorted_by_name<T>(items: impl Iterator<Item = (String, T)>) -> Vec<(String, T)> {
    let mut items: Vec<(String, T)> = items.collect();
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    items
}

/// `,"key":` (without the comma before the first member).
fn write_key(out: &mut Vec<u8>, index: usize, key: &str) {
    if index > 0 {
        out.push(b',');
    }
    write_json_string(key, out);
    out.push(b':');
}

/// Writes the canonical bytes, or one part of them: the encoding is cut into slots, one per
/// entry (in encoding order), each holding its entry and every byte written after the entry
/// before it; the last slot holds what follows the last entry. Only the slots in `window` are
/// written, so the parts for `0..k` and `k..` joined are the whole encoding.
pub(super) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Called with `out` after each entry written; may take the bytes and clear `out`.
    flush: &'a mut dyn FnMut(&mut Vec<u8>),
    /// The slot being written: the number of entries before it.
    slot: usize,
    window: Range<usize>,
}

impl<'a> Writer<'a> {
    fn new(
        out: &'a mut Vec<u8>,
        flush: &'a mut dyn FnMut(&mut Vec<u8>),
        window: Range<usize>,
    ) -> Self {
        Self {
            out,
            flush,
            slot: 0,
            window,
        }
    }

    fn writing(&self) -> bool {
        self.window.contains(&self.slot)
    }

    /// Writes what `write` appends, if this slot is in the window.
    pub(super) fn put(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.writing() {
            write(self.out);
        }
    }

    /// Writes `bytes`, if this slot is in the window.
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        if self.writing() {
            self.out.extend_from_slice(bytes);
        }
    }

    fn key(&mut self, index: usize, key: &str) {
        if self.writing() {
            write_key(self.out, index, key);
        }
    }

    /// Writes one entry (with whatever precedes it in its container) and moves to the next
    /// slot.
    pub(super) fn entry(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.writing() {
            write(self.out);
            (self.flush)(self.out);
        }
        self.slot += 1;
    }

    fn entries<'e>(
        &mut self,
        entries: impl Iterator<Item = (&'e OpId, &'e Hlc, &'e Scope, &'e Payload)>,
    ) {
        self.raw(b"[");
        for (i, (op_id, hlc, scope, payload)) in entries.enumerate() {
            self.entry(|out| {
                if i > 0 {
                    out.push(b',');
                }
                write_entry(out, op_id, hlc, scope, payload);
            });
        }
        self.raw(b"]");
    }
}

/// One entry: `{"hlc": .., "op_id": .., "payload": .., "scope": ..}`, keys in canonical order.
fn write_entry(out: &mut Vec<u8>, op_id: &OpId, hlc: &Hlc, scope: &Scope, payload: &Payload) {
    out.extend_from_slice(b"{\"hlc\":{\"counter\":");
    write_display(out, hlc.counter);
    out.extend_from_slice(b",\"device\":\"");
    // A UUID's text form needs no escaping.
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(
        hlc.device
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"wall_ms\":");
    write_display(out, hlc.wall_ms);
    out.extend_from_slice(b"},\"op_id\":\"");
    write_hex(out, op_id.as_bytes());
    out.extend_from_slice(b"\",\"payload\":");
    out.extend_from_slice(payload.as_str().as_bytes());
    out.extend_from_slice(b",\"scope\":");
    match scope {
        Scope::Personal => out.extend_from_slice(b"\"personal\""),
        Scope::Shared { .. } => write_json_string(&scope.to_string(), out),
    }
    out.push(b'}');
}

pub(super) fn parse_surface(s: &str) -> Result<Surface, StateDecodeError> {
    Surface::parse(s).map_err(|_| StateDecodeError::InvalidKey("surface"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::author::OpAuthor;
    use crate::domain::oplog::canonical::canonical_json;
    use crate::domain::oplog::fold::fold;
    use crate::domain::oplog::test_support::{arb_chains, author, dev, user_turns};
    use crate::domain::oplog::OpPayload;
    use proptest::prelude::*;
    use serde_json::json;

    /// The fold of personal plaintext ops by one device, in the order given.
    fn fold_of(device: u128, ops: Vec<(Surface, Value)>) -> State {
        let mut a = OpAuthor::new(dev(device));
        let ops: Vec<_> = ops
            .into_iter()
            .map(|(surface, payload)| {
                a.append(1, Scope::Personal, surface, OpPayload::Plain(payload))
                    .unwrap()
            })
            .collect();
        fold(&ops).unwrap()
    }

    fn sample() -> State {
        fold_of(
            1,
            vec![
                (
                    Surface::Conversation,
                    json!({"conversation_id": "c", "role": "user", "text": "hi"}),
                ),
                (Surface::Knowledge, json!({"key": "k", "body": 1})),
                (
                    Surface::Intent,
                    json!({"intent_id": "i", "run_id": dev(9).to_string(), "status": "pending"}),
                ),
            ],
        )
    }

    fn text(s: &State) -> String {
        String::from_utf8(s.json_layout_bytes()).unwrap()
    }

    #[test]
    fn the_empty_state_encodes_to_a_fixed_string() {
        assert_eq!(
            text(&State::new()),
            r#"{"events":{},"intents":{},"records":{},"v":1}"#
        );
    }

    #[test]
    fn the_layout_is_as_documented() {
        let v: Value = serde_json::from_slice(&sample().json_layout_bytes()).unwrap();
        let event = &v["events"]["conversation"][0];
        assert_eq!(event["payload"]["text"], json!("hi"));
        assert_eq!(event["scope"], json!("personal"));
        assert_eq!(event["hlc"]["device"], json!(dev(1).to_string()));
        assert_eq!(
            v["records"]["knowledge"]["personal"]["k"]["payload"]["body"],
            json!(1)
        );
        assert_eq!(v["intents"]["i"][0]["payload"]["status"], json!("pending"));
        assert_eq!(v["v"], json!(1));
    }

    #[test]
    fn the_direct_writer_is_the_canonical_json_of_the_json_value() {
        let s = sample();
        assert_eq!(
            s.json_layout_bytes(),
            canonical_json(&s.to_canonical_json())
        );
    }

    #[test]
    fn states_round_trip() {
        let s = sample();
        assert_eq!(
            State::from_canonical_bytes(&s.json_layout_bytes()).unwrap(),
            s
        );
        let empty = State::new();
        assert_eq!(
            State::from_canonical_bytes(&empty.json_layout_bytes()).unwrap(),
            empty
        );
    }

    #[test]
    fn anything_but_the_exact_canonical_bytes_is_refused() {
        let bytes = sample().json_layout_bytes();
        let t = String::from_utf8(bytes).unwrap();
        let err = |s: &str| State::from_canonical_bytes(s.as_bytes()).unwrap_err();
        assert_eq!(err("{not json"), StateDecodeError::NotJson);
        assert_eq!(err("not json"), StateDecodeError::UnknownLayout);
        assert_eq!(err(r#"{"v":1,"extra":{}}"#), StateDecodeError::Layout);
        assert_eq!(
            err(r#"{"events":{},"intents":{},"records":{},"v":2}"#),
            StateDecodeError::UnsupportedVersion(2)
        );
        // Whitespace, missing groups.
        assert_eq!(
            err(&t.replacen(':', ": ", 1)),
            StateDecodeError::NonCanonical
        );
        assert_eq!(err(r#"{"v":1}"#), StateDecodeError::NonCanonical);
        assert_eq!(
            err(r#"{"events":{"email":[]},"intents":{},"records":{},"v":1}"#),
            StateDecodeError::InvalidKey("surface")
        );
        // An entry filed under the wrong key.
        assert_eq!(
            err(&t.replace(r#""k":{"#, r#""z":{"#)),
            StateDecodeError::NonCanonical
        );
        // A payload the fold refuses.
        let keyless = t.replace(r#""key":"k""#, r#""id":"k""#);
        assert!(matches!(
            State::from_canonical_bytes(keyless.as_bytes()),
            Err(StateDecodeError::InvalidEntry(FoldError::MissingKey { .. }))
        ));
    }

    #[test]
    fn the_chunked_comparison_sees_every_byte_of_a_large_state() {
        let ops = user_turns(3, 400, |i| format!("message {i} {}", "y".repeat(400)));
        let s = fold(&ops).unwrap();
        let bytes = s.json_layout_bytes();
        assert!(bytes.len() > 2 * COMPARE_CHUNK, "{} bytes", bytes.len());
        assert!(s.encodes_to(&bytes, Layout::Json));
        for at in [0, COMPARE_CHUNK - 1, COMPARE_CHUNK + 7, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(
                !s.encodes_to(&changed, Layout::Json),
                "a change at {at} went unseen"
            );
        }
        assert!(!s.encodes_to(&bytes[..bytes.len() - 1], Layout::Json));
        let mut longer = bytes;
        longer.push(b' ');
        assert!(!s.encodes_to(&longer, Layout::Json));
    }

    #[test]
    fn a_stream_out_of_order_duplicated_or_misfiled_is_refused() {
        let doc = fold_of(
            5,
            vec![
                (
                    Surface::Conversation,
                    json!({"conversation_id": "c", "role": "user", "text": "a"}),
                ),
                (
                    Surface::Conversation,
                    json!({"conversation_id": "c", "role": "assistant", "text": "b"}),
                ),
                (Surface::Knowledge, json!({"key": "k", "body": 1})),
            ],
        )
        .to_canonical_json();
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut d = doc.clone();
            edit(&mut d);
            State::from_canonical_bytes(&canonical_json(&d)).unwrap_err()
        };
        fn stream(d: &mut Value) -> &mut Vec<Value> {
            d["events"]["conversation"].as_array_mut().unwrap()
        }
        assert_eq!(
            refused(&|d| stream(d).reverse()),
            StateDecodeError::NonCanonical
        );
        assert_eq!(
            refused(&|d| {
                let first = stream(d)[0].clone();
                stream(d).insert(0, first);
            }),
            StateDecodeError::NonCanonical
        );
        assert_eq!(
            refused(&|d| {
                let record = d["records"]["knowledge"]["personal"]["k"].take();
                d["records"] = json!({});
                d["events"]["knowledge"] = json!([record]);
            }),
            StateDecodeError::NonCanonical
        );
    }

    fn window(s: &State, window: Range<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        s.write_window(Layout::Json, window, &mut out);
        out
    }

    #[test]
    fn the_parts_before_and_from_any_entry_join_into_the_whole_encoding() {
        let s = sample();
        let whole = s.json_layout_bytes();
        assert_eq!(s.entry_count(), 3);
        for k in 0..=4 {
            let joined = [window(&s, 0..k), window(&s, k..usize::MAX)].concat();
            assert_eq!(
                String::from_utf8(joined).unwrap(),
                String::from_utf8(whole.clone()).unwrap(),
                "cut before entry {k}"
            );
        }
    }

    #[test]
    fn a_state_compared_in_two_halves_is_still_checked_byte_for_byte() {
        let ops = user_turns(4, PARALLEL_MIN_ENTRIES + 10, |i| format!("m{i}"));
        let s = fold(&ops).unwrap();
        let bytes = s.json_layout_bytes();
        assert!(s.encodes_to(&bytes, Layout::Json));
        // Where the halves meet: the entry after the middle one starts with `,{"hlc"`.
        let middle = bytes.len() / 2;
        let seam = middle
            + bytes[middle..]
                .windows(7)
                .position(|w| w == b",{\"hlc\"")
                .unwrap();
        for at in [0, seam - 1, seam, seam + 1, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(
                !s.encodes_to(&changed, Layout::Json),
                "a change at {at} went unseen"
            );
        }
        assert!(!s.encodes_to(&bytes[..bytes.len() - 1], Layout::Json));
        assert!(!s.encodes_to(
            &[&bytes[..seam], b" ", &bytes[seam..]].concat(),
            Layout::Json
        ));
        assert!(!s.encodes_to(&[&bytes[..seam], &bytes[seam + 1..]].concat(), Layout::Json));
        assert_eq!(State::from_canonical_bytes(&bytes).unwrap(), s);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn folded_states_round_trip(chains in arb_chains(6)) {
            let ops: Vec<_> = author(&chains).into_iter().flatten().collect();
            let s = fold(&ops).unwrap();
            let bytes = s.json_layout_bytes();
            prop_assert_eq!(&bytes, &canonical_json(&s.to_canonical_json()));
            prop_assert_eq!(State::from_canonical_bytes(&bytes).unwrap(), s);
        }
    }
}
