//! The routing table: what each committed side-effect means to each effect consumer.
//!
//! Every consumer of the effect log (the cold path to the cloud tables, the hot path to the
//! realtime channels, the oplog tee for device sync) asks [`route`] what to do with an effect,
//! so the table lives in one place and every consumer agrees on it.
//!
//! | effect                 | cold path                        | hot path          | oplog tee   |
//! |------------------------|----------------------------------|-------------------|-------------|
//! | `RepositoryCreated`    | upsert repository (metadata)     | –                 | –           |
//! | `RepositoryDeleted`    | delete repository                | –                 | –           |
//! | `SessionCreated`       | upsert session (metadata)        | –                 | –           |
//! | `SessionClosed`        | end session                      | –                 | –           |
//! | `SessionDeleted`       | delete session                   | –                 | –           |
//! | `SessionUpdated`       | upsert session (metadata)        | –                 | –           |
//! | `MessageAppended`      | message batch                    | publish message   | record turn |
//! | `AgentStatusChanged`   | skipped                          | –                 | –           |
//! | `RuntimeStatusUpdated` | coalesced runtime status update  | status object-set | –           |
//!
//! "(metadata)" marks the rows an effect does not carry: the consumer looks them up through a
//! metadata provider. Unlike the original design, a repository creation is synced too (the
//! provider has its name), so a session row never points at a repository the cloud lacks.

use super::effect::SideEffect;
use super::ids::{MessageId, RepositoryId, Seq, SessionId};
use super::runtime_status::RuntimeStatusEnvelope;

/// What the cold path (the durable cloud copy) does with an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdRoute {
    /// Upsert the repository row (name and URL come from the metadata provider).
    UpsertRepository(RepositoryId),
    /// Delete the repository row.
    DeleteRepository(RepositoryId),
    /// Upsert the session row (title and times come from the metadata provider).
    UpsertSession(SessionId),
    /// Mark the session ended.
    EndSession(SessionId),
    /// Delete the session row.
    DeleteSession(SessionId),
    /// Seal the message and add it to the next message batch.
    Message {
        /// Its session.
        session_id: SessionId,
        /// Its id.
        message_id: MessageId,
        /// Its position in the session.
        seq: Seq,
    },
    /// Coalesce (newest wins per session) into a runtime status update.
    RuntimeStatus(RuntimeStatusEnvelope),
    /// Nothing to do.
    Skip,
}

/// What the hot path (realtime channels) does with an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotRoute {
    /// Publish the sealed message on the session's conversation channel.
    PublishMessage {
        /// Its session.
        session_id: SessionId,
        /// Its id.
        message_id: MessageId,
        /// Its position in the session.
        seq: Seq,
    },
    /// Set the session's status object.
    SetStatus(RuntimeStatusEnvelope),
    /// Nothing to do.
    Skip,
}

/// What the oplog tee (device sync) does with an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeRoute {
    /// Record the message as a conversation turn.
    RecordTurn {
        /// Its session.
        session_id: SessionId,
        /// Its id.
        message_id: MessageId,
        /// Its position in the session.
        seq: Seq,
    },
    /// Nothing to do.
    Skip,
}

/// One effect's meaning for every consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// For the cold path.
    pub cold: ColdRoute,
    /// For the hot path.
    pub hot: HotRoute,
    /// For the oplog tee.
    pub tee: TeeRoute,
}

impl Route {
    /// A route that only concerns the cold path.
    fn cold_only(cold: ColdRoute) -> Self {
        Self {
            cold,
            hot: HotRoute::Skip,
            tee: TeeRoute::Skip,
        }
    }

    /// Whether no consumer has anything to do.
    pub fn is_skipped(&self) -> bool {
        self.cold == ColdRoute::Skip && self.hot == HotRoute::Skip && self.tee == TeeRoute::Skip
    }
}

/// Routes one effect (see the table in the module docs).
pub fn route(effect: &SideEffect) -> Route {
    match effect {
        SideEffect::RepositoryCreated { repository_id } => {
            Route::cold_only(ColdRoute::UpsertRepository(*repository_id))
        }
        SideEffect::RepositoryDeleted { repository_id } => {
            Route::cold_only(ColdRoute::DeleteRepository(*repository_id))
        }
        SideEffect::SessionCreated { session_id, .. }
        | SideEffect::SessionUpdated { session_id } => {
            Route::cold_only(ColdRoute::UpsertSession(*session_id))
        }
        SideEffect::SessionClosed { session_id } => {
            Route::cold_only(ColdRoute::EndSession(*session_id))
        }
        SideEffect::SessionDeleted { session_id } => {
            Route::cold_only(ColdRoute::DeleteSession(*session_id))
        }
        SideEffect::MessageAppended {
            session_id,
            message_id,
            seq,
        } => Route {
            cold: ColdRoute::Message {
                session_id: *session_id,
                message_id: *message_id,
                seq: *seq,
            },
            hot: HotRoute::PublishMessage {
                session_id: *session_id,
                message_id: *message_id,
                seq: *seq,
            },
            tee: TeeRoute::RecordTurn {
                session_id: *session_id,
                message_id: *message_id,
                seq: *seq,
            },
        },
        SideEffect::AgentStatusChanged { .. } => Route::cold_only(ColdRoute::Skip),
        SideEffect::RuntimeStatusUpdated { envelope } => Route {
            cold: ColdRoute::RuntimeStatus(envelope.clone()),
            hot: HotRoute::SetStatus(envelope.clone()),
            tee: TeeRoute::Skip,
        },
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::ids::{AgentId, DeviceId};
    use crate::domain::runtime_status::{RuntimeState, RuntimeStatus};

    fn sid() -> SessionId {
        SessionId::from_uuid(Uuid::from_u128(1)).unwrap()
    }
    fn rid() -> RepositoryId {
        RepositoryId::from_uuid(Uuid::from_u128(2)).unwrap()
    }
    fn mid() -> MessageId {
        MessageId::from_uuid(Uuid::from_u128(3)).unwrap()
    }

    #[test]
    fn repository_created_upserts_the_repository_only_cold() {
        let r = route(&SideEffect::RepositoryCreated {
            repository_id: rid(),
        });
        assert_eq!(r, Route::cold_only(ColdRoute::UpsertRepository(rid())));
    }

    #[test]
    fn repository_deleted_deletes_it_cold() {
        let r = route(&SideEffect::RepositoryDeleted {
            repository_id: rid(),
        });
        assert_eq!(r, Route::cold_only(ColdRoute::DeleteRepository(rid())));
    }

    #[test]
    fn session_created_and_updated_upsert_the_session() {
        let created = route(&SideEffect::SessionCreated {
            session_id: sid(),
            repository_id: rid(),
        });
        let updated = route(&SideEffect::SessionUpdated { session_id: sid() });
        let expected = Route::cold_only(ColdRoute::UpsertSession(sid()));
        assert_eq!(created, expected);
        assert_eq!(updated, expected);
    }

    #[test]
    fn session_closed_ends_it() {
        let r = route(&SideEffect::SessionClosed { session_id: sid() });
        assert_eq!(r, Route::cold_only(ColdRoute::EndSession(sid())));
    }

    #[test]
    fn session_deleted_deletes_it() {
        let r = route(&SideEffect::SessionDeleted { session_id: sid() });
        assert_eq!(r, Route::cold_only(ColdRoute::DeleteSession(sid())));
    }

    #[test]
    fn message_appended_goes_to_all_three_consumers() {
        let r = route(&SideEffect::MessageAppended {
            session_id: sid(),
            message_id: mid(),
            seq: Seq::new(7),
        });
        assert_eq!(
            r.cold,
            ColdRoute::Message {
                session_id: sid(),
                message_id: mid(),
                seq: Seq::new(7)
            }
        );
        assert_eq!(
            r.hot,
            HotRoute::PublishMessage {
                session_id: sid(),
                message_id: mid(),
                seq: Seq::new(7)
            }
        );
        assert_eq!(
            r.tee,
            TeeRoute::RecordTurn {
                session_id: sid(),
                message_id: mid(),
                seq: Seq::new(7)
            }
        );
        assert!(!r.is_skipped());
    }

    #[test]
    fn agent_status_changed_is_skipped_everywhere() {
        let r = route(&SideEffect::AgentStatusChanged {
            session_id: sid(),
            agent_id: AgentId::from_uuid(Uuid::from_u128(4)).unwrap(),
            status: "thinking".into(),
        });
        assert!(r.is_skipped());
        assert_eq!(r.cold, ColdRoute::Skip);
    }

    #[test]
    fn runtime_status_is_coalesced_cold_and_set_hot() {
        let envelope = RuntimeStatusEnvelope::new(
            sid(),
            DeviceId::from_uuid(Uuid::from_u128(5)).unwrap(),
            RuntimeStatus {
                status: RuntimeState::Running,
                error_message: None,
            },
            42,
        );
        let r = route(&SideEffect::RuntimeStatusUpdated {
            envelope: envelope.clone(),
        });
        assert_eq!(r.cold, ColdRoute::RuntimeStatus(envelope.clone()));
        assert_eq!(r.hot, HotRoute::SetStatus(envelope));
        assert_eq!(r.tee, TeeRoute::Skip);
    }
}
