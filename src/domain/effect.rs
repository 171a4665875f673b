//! Side-effects: the durable record of every committed change, drained by consumers.
//!
//! Effects name *what* changed by id; the facts themselves (message content, session rows)
//! stay in the store, so the effect log stays small and never duplicates user content.

use serde::{Deserialize, Serialize};

use super::ids::{AgentId, EffectSeq, MessageId, RepositoryId, Seq, SessionId};
use super::runtime_status::RuntimeStatusEnvelope;

/// One committed change, as routed to the cold path, hot path and oplog tee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SideEffect {
    /// A repository was created.
    RepositoryCreated {
        /// Its id.
        repository_id: RepositoryId,
    },
    /// A repository (and its sessions) was deleted.
    RepositoryDeleted {
        /// Its id.
        repository_id: RepositoryId,
    },
    /// A session was created.
    SessionCreated {
        /// Its id.
        session_id: SessionId,
        /// Its repository.
        repository_id: RepositoryId,
    },
    /// A session was closed.
    SessionClosed {
        /// Its id.
        session_id: SessionId,
    },
    /// A session (and its messages) was deleted.
    SessionDeleted {
        /// Its id.
        session_id: SessionId,
    },
    /// A session's metadata (title) changed.
    SessionUpdated {
        /// Its id.
        session_id: SessionId,
    },
    /// A message was appended.
    MessageAppended {
        /// Its session.
        session_id: SessionId,
        /// Its id.
        message_id: MessageId,
        /// Its position in the session.
        seq: Seq,
    },
    /// An agent reported a status change (recorded, not synced: routing skips it).
    AgentStatusChanged {
        /// The session the agent works in.
        session_id: SessionId,
        /// The agent.
        agent_id: AgentId,
        /// Free-form status label reported by the agent runtime.
        status: String,
    },
    /// The session's runtime status changed (already coalesced newest-wins).
    RuntimeStatusUpdated {
        /// The new status.
        envelope: RuntimeStatusEnvelope,
    },
}

impl SideEffect {
    /// A short stable name for the variant (the `type` tag), for logs and storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RepositoryCreated { .. } => "repository_created",
            Self::RepositoryDeleted { .. } => "repository_deleted",
            Self::SessionCreated { .. } => "session_created",
            Self::SessionClosed { .. } => "session_closed",
            Self::SessionDeleted { .. } => "session_deleted",
            Self::SessionUpdated { .. } => "session_updated",
            Self::MessageAppended { .. } => "message_appended",
            Self::AgentStatusChanged { .. } => "agent_status_changed",
            Self::RuntimeStatusUpdated { .. } => "runtime_status_updated",
        }
    }

    /// The session this effect concerns, if any.
    pub fn session_id(&self) -> Option<SessionId> {
        match self {
            Self::RepositoryCreated { .. } | Self::RepositoryDeleted { .. } => None,
            Self::SessionCreated { session_id, .. }
            | Self::SessionClosed { session_id }
            | Self::SessionDeleted { session_id }
            | Self::SessionUpdated { session_id }
            | Self::MessageAppended { session_id, .. }
            | Self::AgentStatusChanged { session_id, .. } => Some(*session_id),
            Self::RuntimeStatusUpdated { envelope } => Some(envelope.session_id),
        }
    }
}

/// A side-effect with its durable position in the effect log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectRecord {
    /// Position in the log; strictly increasing.
    pub seq: EffectSeq,
    /// What happened.
    pub effect: SideEffect,
    /// When it was committed, in Unix milliseconds.
    pub committed_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn effects_round_trip_through_json_with_their_kind_as_tag() {
        let e = SideEffect::MessageAppended {
            session_id: SessionId::from_uuid(Uuid::from_u128(1)).unwrap(),
            message_id: MessageId::from_uuid(Uuid::from_u128(2)).unwrap(),
            seq: Seq::new(3),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.kind());
        assert_eq!(serde_json::from_value::<SideEffect>(v).unwrap(), e);
    }
}
