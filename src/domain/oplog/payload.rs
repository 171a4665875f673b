//! Payload shapes: what a plaintext payload must look like on each surface.
//!
//! The fold refuses an op whose payload does not fit its surface (with a typed error, never by
//! skipping it), and the author checks the same rules before writing, so a malformed op never
//! enters a chain. The rules, by [`FoldTier`]:
//!
//! - **Event streams** accept any JSON value, except `conversation`, whose payload must be a
//!   conversation turn (see the `transcript` module: `conversation_id`, `role`, `text`,
//!   `tool_calls`, `tool_call_id`).
//! - **Last-writer-wins** payloads must be JSON objects with a non-empty string field
//!   [`RECORD_KEY_FIELD`] (`"key"`): the record key. An optional boolean field
//!   [`TOMBSTONE_FIELD`] (`"deleted"`) set to `true` makes the op a tombstone: it wins like any
//!   write and marks the record deleted. Everything else in the object is the record's value.
//! - **Leased** (intent) payloads must be intents (see the `intent` module).
//!
//! Every surface also refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`] arrays and
//! objects: `serde_json` cannot read such text back, so no other device could open the op.
//!
//! A folded payload is kept as a [`Payload`]: its canonical JSON text, the bytes state hashes
//! and checkpoints are made of, parsed again only when something reads it.

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::Value;

use super::canonical::{canonical_json, canonical_json_text};
use super::intent::Intent;
use super::surface::{FoldTier, Surface};
use super::transcript::ConversationTurn;

/// The payload field holding a last-writer-wins record's key.
pub const RECORD_KEY_FIELD: &str = "key";
/// The payload field that, set to `true`, marks a last-writer-wins write as a tombstone.
pub const TOMBSTONE_FIELD: &str = "deleted";

/// Why a plaintext payload does not fit its surface. Never carries payload content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The surface needs a JSON object.
    #[error("payload must be a JSON object")]
    NotAnObject,
    /// A last-writer-wins payload has no `"key"` field.
    #[error("payload has no \"key\" field")]
    MissingKey,
    /// The `"key"` field is not a non-empty string.
    #[error("\"key\" must be a non-empty string")]
    InvalidKey,
    /// The `"deleted"` field is present but not a boolean.
    #[error("\"deleted\" must be a boolean")]
    InvalidTombstone,
    /// Not a valid intent.
    #[error("invalid intent: {0}")]
    InvalidIntent(&'static str),
    /// Not a valid conversation turn.
    #[error("invalid conversation turn: {0}")]
    InvalidTurn(&'static str),
    /// Arrays and objects nest deeper than [`MAX_PAYLOAD_DEPTH`].
    #[error("payload nests arrays and objects more than {MAX_PAYLOAD_DEPTH} deep")]
    TooDeep,
}

/// How deep arrays and objects may nest in a payload: as deep as `serde_json` reads back.
pub const MAX_PAYLOAD_DEPTH: usize = 127;

/// Checks that `payload` fits `surface` (see the module docs).
pub fn validate_payload(surface: &Surface, payload: &Value) -> Result<(), PayloadError> {
    payload_fields(surface, payload).map(|_| ())
}

/// What the fold reads out of a payload that fits its surface, besides the payload itself.
pub(super) enum PayloadFields<'a> {
    /// An event: nothing more.
    Event,
    /// A last-writer-wins write: its record key and whether it is a tombstone.
    Record {
        /// The record key.
        key: &'a str,
        /// Whether the write is a tombstone.
        deleted: bool,
    },
    /// An intent, as read.
    Intent(Intent),
}

/// Checks that `payload` fits `surface` and reads what the fold needs from it.
pub(super) fn payload_fields<'a>(
    surface: &Surface,
    payload: &'a Value,
) -> Result<PayloadFields<'a>, PayloadError> {
    if exceeds_depth(payload, MAX_PAYLOAD_DEPTH) {
        return Err(PayloadError::TooDeep);
    }
    match surface.tier() {
        FoldTier::EventStream if *surface == Surface::Conversation => {
            ConversationTurn::check_payload(payload).map(|()| PayloadFields::Event)
        }
        FoldTier::EventStream => Ok(PayloadFields::Event),
        FoldTier::LastWriterWins => {
            record_fields(payload).map(|(key, deleted)| PayloadFields::Record { key, deleted })
        }
        FoldTier::Leased => Intent::from_payload(payload).map(PayloadFields::Intent),
    }
}

/// Whether arrays and objects nest more than `depth` deep in `value`.
fn exceeds_depth(value: &Value, depth: usize) -> bool {
    let deeper = |child: &Value| exceeds_depth(child, depth - 1);
    match value {
        Value::Array(items) => depth == 0 || items.iter().any(deeper),
        Value::Object(members) => depth == 0 || members.values().any(deeper),
        _ => false,
    }
}

/// Reads a last-writer-wins payload's record key and tombstone flag.
pub fn record_fields(payload: &Value) -> Result<(&str, bool), PayloadError> {
    let object = payload.as_object().ok_or(PayloadError::NotAnObject)?;
    let key = match object.get(RECORD_KEY_FIELD) {
        None => return Err(PayloadError::MissingKey),
        Some(Value::String(k)) if !k.is_empty() => k.as_str(),
        Some(_) => return Err(PayloadError::InvalidKey),
    };
    let deleted = match object.get(TOMBSTONE_FIELD) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(PayloadError::InvalidTombstone),
    };
    Ok((key, deleted))
}

/// A folded op's plaintext payload, held as its canonical JSON text (see the `canonical`
/// module): the exact bytes a state hash covers, kept instead of a parsed tree so a state is
/// smaller and encodes without re-serializing. [`Payload::to_value`] and [`Payload::parse`]
/// read it on demand.
///
/// The payloads of a state decoded from an opened checkpoint share that checkpoint's
/// plaintext instead of each holding a copy: the buffer lives as long as any of them does.
///
/// `Debug` shows the size only: a payload is user data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(ByteString);

impl Payload {
    /// The payload of `value`, written in canonical JSON. For values the fold accepted:
    /// deeper nesting than [`MAX_PAYLOAD_DEPTH`] would not read back.
    pub(super) fn from_value(value: &Value) -> Self {
        Self(canonical_json_text(value).into())
    }

    /// Text already checked to be canonical JSON that `serde_json` reads back.
    pub(super) fn from_checked_text(text: &str) -> Self {
        Self(text.into())
    }

    /// Canonical JSON, already checked, lying within `buffer`: the payload holds a share of
    /// `buffer` instead of a copy. `None` if `json` is not UTF-8 (the one check made here).
    ///
    /// # Panics
    /// If `json` is not a part of `buffer`'s memory.
    pub(super) fn from_checked_slice(buffer: &Bytes, json: &[u8]) -> Option<Self> {
        ByteString::try_from(buffer.slice_ref(json)).ok().map(Self)
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The payload as a JSON tree, parsed from its text.
    pub fn to_value(&self) -> Value {
        // Only the fold makes payloads, and only of text that parses: canonical JSON of a
        // `Value` it accepted (no deeper than `MAX_PAYLOAD_DEPTH`), or text checked on the way
        // in.
        serde_json::from_str(&self.0).expect("a payload's text is JSON serde_json reads")
    }

    /// The payload read as `T`, borrowing from the text where `T` allows.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.as_str().as_bytes() == canonical_json(other).as_slice()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `depth` arrays, one inside the other.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]))
    }

    #[test]
    fn the_depth_limit_is_where_serde_json_stops_reading() {
        let reads = |v: &Value| serde_json::from_slice::<Value>(&canonical_json(v)).is_ok();
        assert!(reads(&nested(MAX_PAYLOAD_DEPTH)));
        assert!(!reads(&nested(MAX_PAYLOAD_DEPTH + 1)));
        for surface in [Surface::Knowledge, Surface::Trajectory] {
            assert_eq!(
                payload_fields(&surface, &nested(MAX_PAYLOAD_DEPTH + 1)).err(),
                Some(PayloadError::TooDeep)
            );
        }
        assert!(validate_payload(&Surface::Trajectory, &nested(MAX_PAYLOAD_DEPTH)).is_ok());
        // Objects count as arrays do, and so does a deep member after shallow ones.
        let deep_member = json!({"a": 1, "b": nested(MAX_PAYLOAD_DEPTH)});
        assert_eq!(
            validate_payload(&Surface::Trajectory, &deep_member),
            Err(PayloadError::TooDeep)
        );
        let wide = json!({"a": nested(MAX_PAYLOAD_DEPTH - 1), "b": [1, 2]});
        assert!(reads(&wide));
        assert!(validate_payload(&Surface::Trajectory, &wide).is_ok());
    }

    #[test]
    fn a_payload_keeps_its_canonical_text_and_reads_back() {
        let value = json!({"z": [1, 2.5, null], "a": "secret \"text\"\n", "key": "k"});
        let payload = Payload::from_value(&value);
        assert_eq!(payload.as_str().as_bytes(), canonical_json(&value));
        assert_eq!(payload.to_value(), value);
        assert_eq!(payload, value);
        assert_ne!(payload, json!({"a": 1}));
        #[derive(Deserialize, PartialEq, Debug)]
        struct Fields<'a> {
            key: &'a str,
            z: Vec<Option<f64>>,
        }
        assert_eq!(
            payload.parse::<Fields<'_>>().unwrap(),
            Fields {
                key: "k",
                z: vec![Some(1.0), Some(2.5), None]
            }
        );
        assert!(payload.parse::<Vec<u8>>().is_err());
        assert_eq!(
            Payload::from_checked_text(payload.as_str()),
            payload,
            "equal text, equal payloads"
        );
    }

    #[test]
    fn debug_shows_the_size_not_the_content() {
        let payload = Payload::from_value(&json!({"text": "secret"}));
        let shown = format!("{payload:?}");
        assert_eq!(shown, "Payload(17 bytes)");
        assert!(!shown.contains("secret"));
    }

    #[test]
    fn a_payload_sliced_from_a_buffer_shares_it_and_equals_a_copy() {
        let buffer = Bytes::from(b"\x01\x02{\"text\":\"hi\"}\x03".to_vec());
        let json = &buffer[2..15];
        let text = std::str::from_utf8(json).unwrap();
        let shared = Payload::from_checked_slice(&buffer, json).unwrap();
        assert_eq!(shared.as_str(), "{\"text\":\"hi\"}");
        assert!(buffer.as_ptr_range().contains(&shared.as_str().as_ptr()));
        let copied = Payload::from_checked_text(text);
        assert!(!buffer.as_ptr_range().contains(&copied.as_str().as_ptr()));
        assert_eq!(shared, copied);
        assert_eq!(shared, json!({"text": "hi"}));
        let hasher = std::hash::RandomState::new();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&hasher, &shared),
            std::hash::BuildHasher::hash_one(&hasher, &copied)
        );
        // The buffer outlives its owner while a payload shares it.
        drop(buffer);
        assert_eq!(shared.to_value(), json!({"text": "hi"}));
    }

    #[test]
    fn record_fields_are_read_and_checked() {
        assert_eq!(
            record_fields(&json!({"key": "k", "v": 1})),
            Ok(("k", false))
        );
        assert_eq!(
            record_fields(&json!({"key": "k", "deleted": true})),
            Ok(("k", true))
        );
        assert_eq!(
            record_fields(&json!({"key": "k", "deleted": false})),
            Ok(("k", false))
        );
        assert_eq!(record_fields(&json!([1])), Err(PayloadError::NotAnObject));
        assert_eq!(
            record_fields(&json!({"id": "k"})),
            Err(PayloadError::MissingKey)
        );
        assert_eq!(
            record_fields(&json!({"key": ""})),
            Err(PayloadError::InvalidKey)
        );
        assert_eq!(
            record_fields(&json!({"key": 5})),
            Err(PayloadError::InvalidKey)
        );
        assert_eq!(
            record_fields(&json!({"key": "k", "deleted": "yes"})),
            Err(PayloadError::InvalidTombstone)
        );
    }

    #[test]
    fn each_tier_has_its_rule() {
        assert_eq!(validate_payload(&Surface::Run, &json!("anything")), Ok(()));
        assert_eq!(validate_payload(&Surface::Command, &json!(null)), Ok(()));
        assert_eq!(
            validate_payload(&Surface::Knowledge, &json!({"body": "x"})),
            Err(PayloadError::MissingKey)
        );
        assert!(matches!(
            validate_payload(&Surface::Intent, &json!({"intent_id": "i"})),
            Err(PayloadError::InvalidIntent(_))
        ));
        assert!(matches!(
            validate_payload(&Surface::Conversation, &json!({"role": "user"})),
            Err(PayloadError::InvalidTurn(_))
        ));
        let turn = json!({"conversation_id": "c", "role": "user", "text": "hi"});
        assert_eq!(validate_payload(&Surface::Conversation, &turn), Ok(()));
        assert!(!PayloadError::InvalidIntent("x").to_string().is_empty());
    }
}
