//! Runtime status of a coding session and its newest-wins coalescing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ids::{DeviceId, SessionId};

/// What the agent of a session is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeState {
    /// Working.
    Running,
    /// Idle, ready for input.
    Idle,
    /// Waiting (for the user, a tool, an approval).
    Waiting,
    /// The runtime cannot be reached.
    NotAvailable,
    /// Failed; see `error_message`.
    Error,
}

/// The `coding_session` part of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// Current state.
    pub status: RuntimeState,
    /// Error detail when `status` is `error`.
    pub error_message: Option<String>,
}

/// The schema version written into every envelope.
pub const RUNTIME_STATUS_SCHEMA_VERSION: u32 = 1;

/// The published shape of a runtime status (cold `runtime_status` column and hot object-set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatusEnvelope {
    /// Always [`RUNTIME_STATUS_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The status itself.
    pub coding_session: RuntimeStatus,
    /// The device that observed it.
    pub device_id: DeviceId,
    /// The session it describes.
    pub session_id: SessionId,
    /// When it was observed, in Unix milliseconds; newest wins.
    pub updated_at_ms: i64,
}

impl RuntimeStatusEnvelope {
    /// Builds a version-1 envelope.
    pub fn new(
        session_id: SessionId,
        device_id: DeviceId,
        status: RuntimeStatus,
        updated_at_ms: i64,
    ) -> Self {
        Self {
            schema_version: RUNTIME_STATUS_SCHEMA_VERSION,
            coding_session: status,
            device_id,
            session_id,
            updated_at_ms,
        }
    }

    /// Whether `self` should replace `current`: strictly newer `updated_at_ms` wins; an equal or
    /// older stamp is stale and dropped, so replays and reordering cannot move a status back.
    pub fn supersedes(&self, current: Option<&RuntimeStatusEnvelope>) -> bool {
        current.is_none_or(|c| self.updated_at_ms > c.updated_at_ms)
    }
}

/// Keeps only the newest envelope per session until drained (for publishers that rate-limit).
#[derive(Debug, Default)]
pub struct RuntimeStatusCoalescer {
    pending: HashMap<SessionId, RuntimeStatusEnvelope>,
}

impl RuntimeStatusCoalescer {
    /// Offers an envelope; returns whether it was kept (newer than what was pending).
    pub fn offer(&mut self, envelope: RuntimeStatusEnvelope) -> bool {
        let current = self.pending.get(&envelope.session_id);
        if envelope.supersedes(current) {
            self.pending.insert(envelope.session_id, envelope);
            true
        } else {
            false
        }
    }

    /// Takes every pending envelope, ordered by session for determinism.
    pub fn drain(&mut self) -> Vec<RuntimeStatusEnvelope> {
        let mut out: Vec<_> = self.pending.drain().map(|(_, v)| v).collect();
        out.sort_by_key(|e| e.session_id);
        out
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn env(session: u128, at: i64, state: RuntimeState) -> RuntimeStatusEnvelope {
        RuntimeStatusEnvelope::new(
            SessionId::from_uuid(Uuid::from_u128(session)).unwrap(),
            DeviceId::from_uuid(Uuid::from_u128(9)).unwrap(),
            RuntimeStatus {
                status: state,
                error_message: None,
            },
            at,
        )
    }

    #[test]
    fn envelope_serialises_to_the_published_shape() {
        let v = serde_json::to_value(env(1, 5, RuntimeState::NotAvailable)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["coding_session"]["status"], "not-available");
        assert!(v["coding_session"]["error_message"].is_null());
        assert_eq!(v["updated_at_ms"], 5);
    }

    #[test]
    fn newest_wins_and_stale_is_dropped() {
        let mut c = RuntimeStatusCoalescer::default();
        assert!(c.offer(env(1, 10, RuntimeState::Running)));
        assert!(!c.offer(env(1, 9, RuntimeState::Idle)), "older is stale");
        assert!(
            !c.offer(env(1, 10, RuntimeState::Idle)),
            "equal stamp is stale"
        );
        assert!(c.offer(env(1, 11, RuntimeState::Waiting)));
        assert!(c.offer(env(2, 1, RuntimeState::Idle)));
        let drained = c.drain();
        assert_eq!(drained.len(), 2);
        assert_eq!(
            drained
                .iter()
                .find(|e| e.updated_at_ms == 11)
                .unwrap()
                .coding_session
                .status,
            RuntimeState::Waiting
        );
        assert!(c.is_empty());
    }
}
