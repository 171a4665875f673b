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

use serde_json::Value;

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
}

/// Checks that `payload` fits `surface` (see the module docs).
pub fn validate_payload(surface: &Surface, payload: &Value) -> Result<(), PayloadError> {
    match surface.tier() {
        FoldTier::EventStream if *surface == Surface::Conversation => {
            ConversationTurn::check_payload(payload)
        }
        FoldTier::EventStream => Ok(()),
        FoldTier::LastWriterWins => record_fields(payload).map(|_| ()),
        FoldTier::Leased => Intent::from_payload(payload).map(|_| ()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
