//! Messages: the ordered turns of a session.

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::ids::{DeviceId, MessageId, Seq, SessionId};

/// Largest accepted message content, in bytes (16 MiB).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024 * 1024;

/// Who authored a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The human.
    User,
    /// The model.
    Assistant,
    /// System instructions.
    System,
    /// A tool's output.
    Tool,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::System => "system",
            Self::Tool => "tool",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "system" => Ok(Self::System),
            "tool" => Ok(Self::Tool),
            other => Err(DomainError::InvalidValue {
                what: "role",
                reason: format!("unknown role {other:?}"),
            }),
        }
    }
}

/// A committed message. `seq` is contiguous per session, starting at 1.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Globally unique id.
    pub id: MessageId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Position in the session, from 1 with no gaps.
    pub seq: Seq,
    /// Author role.
    pub role: Role,
    /// The content (plaintext locally; sealed before it leaves the device).
    pub content: String,
    /// When it was committed, in Unix milliseconds.
    pub created_at_ms: i64,
    /// The device that authored it.
    pub origin: DeviceId,
}

// Message content is user data: keep it out of logs and `Debug` output.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("session_id", &self.session_id)
            .field("seq", &self.seq)
            .field("role", &self.role)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("created_at_ms", &self.created_at_ms)
            .field("origin", &self.origin)
            .finish()
    }
}

/// A message the caller wants to append; the engine assigns seq, time and origin.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Caller-chosen id (for idempotent retries); the engine generates one when `None`.
    pub id: Option<MessageId>,
    /// Author role.
    pub role: Role,
    /// The content.
    pub content: String,
}

impl NewMessage {
    /// A message with a generated id.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            id: None,
            role,
            content: content.into(),
        }
    }

    /// Sets a caller-chosen id.
    #[must_use]
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Checks the content size against [`MAX_CONTENT_BYTES`].
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.content.len() > MAX_CONTENT_BYTES {
            return Err(DomainError::ContentTooLarge {
                len: self.content.len(),
                max: MAX_CONTENT_BYTES,
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn debug_never_shows_content() {
        let m = Message {
            id: MessageId::from_uuid(Uuid::from_u128(1)).unwrap(),
            session_id: SessionId::from_uuid(Uuid::from_u128(2)).unwrap(),
            seq: Seq::new(1),
            role: Role::User,
            content: "canary-secret".into(),
            created_at_ms: 0,
            origin: DeviceId::from_uuid(Uuid::from_u128(3)).unwrap(),
        };
        assert!(!format!("{m:?}").contains("canary"));
        assert!(!format!("{:?}", NewMessage::new(Role::User, "canary")).contains("canary"));
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::User, Role::Assistant, Role::System, Role::Tool] {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("robot").is_err());
    }

    #[test]
    fn oversized_content_is_refused() {
        let big = NewMessage::new(Role::Tool, "x".repeat(MAX_CONTENT_BYTES + 1));
        assert!(matches!(
            big.validate(),
            Err(DomainError::ContentTooLarge { .. })
        ));
    }
}
