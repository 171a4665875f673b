//! Turning the effects after the cursor into the next unit of work (no I/O).
//!
//! A unit always starts at the first effect after the cursor, so the cursor can move to the
//! unit's `through` as soon as the unit is done, and never past anything undone:
//!
//! - a run of effects the cold path skips → advance past them;
//! - a run of `MessageAppended` (skipped effects in between ride along) → one batch of at
//!   most `batch_size` messages. While the run reaches the end of the log and the batch is
//!   not full, more messages may still come: the plan says *wait*, and the consumer waits at
//!   most the flush interval before forcing the partial batch;
//! - a run of `RuntimeStatusUpdated` → the newest envelope per session, after a short window
//!   for more updates (coalescing);
//! - anything else → that one effect.

use std::collections::HashMap;

use crate::domain::routing::{route, ColdRoute};
use crate::domain::{
    EffectRecord, EffectSeq, MessageId, RuntimeStatusEnvelope, Seq, SessionId, SideEffect,
};

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageItem {
    pub(crate) effect_seq: EffectSeq,
    pub(crate) session_id: SessionId,
    pub(crate) message_id: MessageId,
    pub(crate) seq: Seq,
}

/// The newest runtime status of one session within a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusItem {
    pub(crate) effect_seq: EffectSeq,
    pub(crate) envelope: RuntimeStatusEnvelope,
}

/// What a unit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    /// Nothing: advance past skipped effects.
    Skip,
    /// Seal and upsert these messages in one call.
    Messages(Vec<MessageItem>),
    /// Send these statuses (one per session).
    Statuses(Vec<StatusItem>),
    /// One repository or session effect.
    Single(EffectRecord),
}

/// A unit of work and the cursor position it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) work: Work,
    /// The last effect the unit covers.
    pub(crate) through: EffectSeq,
}

impl Unit {
    /// A unit for one effect on its own (dead-letter replay).
    pub(crate) fn for_effect(record: EffectRecord) -> Self {
        let through = record.seq;
        let work = match route(&record.effect).cold {
            ColdRoute::Skip => Work::Skip,
            ColdRoute::Message {
                session_id,
                message_id,
                seq,
            } => Work::Messages(vec![MessageItem {
                effect_seq: record.seq,
                session_id,
                message_id,
                seq,
            }]),
            ColdRoute::RuntimeStatus(envelope) => Work::Statuses(vec![StatusItem {
                effect_seq: record.seq,
                envelope,
            }]),
            _ => Work::Single(record),
        };
        Self { work, through }
    }

    /// How many effects the unit delivers (skipped and superseded ones not counted).
    pub(crate) fn len(&self) -> usize {
        match &self.work {
            Work::Skip => 0,
            Work::Messages(items) => items.len(),
            Work::Statuses(items) => items.len(),
            Work::Single(_) => 1,
        }
    }

    /// The effects to dead-letter if the unit fails for good, with their positions.
    pub(crate) fn effects(&self) -> Vec<(EffectSeq, SideEffect)> {
        match &self.work {
            Work::Skip => Vec::new(),
            Work::Messages(items) => items
                .iter()
                .map(|m| {
                    (
                        m.effect_seq,
                        SideEffect::MessageAppended {
                            session_id: m.session_id,
                            message_id: m.message_id,
                            seq: m.seq,
                        },
                    )
                })
                .collect(),
            Work::Statuses(items) => items
                .iter()
                .map(|s| {
                    (
                        s.effect_seq,
                        SideEffect::RuntimeStatusUpdated {
                            envelope: s.envelope.clone(),
                        },
                    )
                })
                .collect(),
            Work::Single(record) => vec![(record.seq, record.effect.clone())],
        }
    }
}

/// Which gathering window a plan is waiting in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// A partial message batch.
    Messages,
    /// Runtime status updates being coalesced.
    Statuses,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing after the cursor.
    Empty,
    /// A unit that may still grow: wait for its window (unless forced).
    Window {
        /// Which window.
        kind: WindowKind,
        /// The first effect of the unit (a new head restarts the window).
        head: EffectSeq,
    },
    /// A unit ready to run.
    Ready(Unit),
}

/// Plans the next unit from `effects` (the effects right after the cursor, in order).
/// `force` turns a would-be window into a ready unit.
pub(crate) fn plan(effects: &[EffectRecord], batch_size: usize, force: bool) -> Plan {
    let Some(first) = effects.first() else {
        return Plan::Empty;
    };
    match route(&first.effect).cold {
        ColdRoute::Skip => {
            let through = effects
                .iter()
                .take_while(|r| route(&r.effect).cold == ColdRoute::Skip)
                .last()
                .map_or(first.seq, |r| r.seq);
            Plan::Ready(Unit {
                work: Work::Skip,
                through,
            })
        }
        ColdRoute::Message { .. } => plan_messages(effects, batch_size.max(1), force),
        ColdRoute::RuntimeStatus(_) => plan_statuses(effects, force),
        _ => Plan::Ready(Unit {
            work: Work::Single(first.clone()),
            through: first.seq,
        }),
    }
}

fn plan_messages(effects: &[EffectRecord], batch_size: usize, force: bool) -> Plan {
    let mut items = Vec::new();
    let mut closed = false;
    for record in effects {
        match route(&record.effect).cold {
            ColdRoute::Message {
                session_id,
                message_id,
                seq,
            } => {
                if items.len() == batch_size {
                    closed = true;
                    break;
                }
                items.push(MessageItem {
                    effect_seq: record.seq,
                    session_id,
                    message_id,
                    seq,
                });
            }
            ColdRoute::Skip => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    let full = items.len() >= batch_size;
    let through = items.last().map_or(EffectSeq::ZERO, |m| m.effect_seq);
    match items.first() {
        Some(head) if !(full || closed || force) => Plan::Window {
            kind: WindowKind::Messages,
            head: head.effect_seq,
        },
        _ => Plan::Ready(Unit {
            work: Work::Messages(items),
            through,
        }),
    }
}

fn plan_statuses(effects: &[EffectRecord], force: bool) -> Plan {
    let mut newest: HashMap<SessionId, StatusItem> = HashMap::new();
    let mut closed = false;
    let mut through = EffectSeq::ZERO;
    let mut head = None;
    for record in effects {
        match route(&record.effect).cold {
            ColdRoute::RuntimeStatus(envelope) => {
                head.get_or_insert(record.seq);
                through = record.seq;
                let current = newest.get(&envelope.session_id).map(|s| &s.envelope);
                if envelope.supersedes(current) {
                    newest.insert(
                        envelope.session_id,
                        StatusItem {
                            effect_seq: record.seq,
                            envelope,
                        },
                    );
                }
            }
            ColdRoute::Skip => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    match head {
        Some(head) if !(closed || force) => Plan::Window {
            kind: WindowKind::Statuses,
            head,
        },
        _ => {
            let mut items: Vec<_> = newest.into_values().collect();
            items.sort_by_key(|s| s.effect_seq);
            Plan::Ready(Unit {
                work: Work::Statuses(items),
                through,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::{AgentId, DeviceId, RuntimeState, RuntimeStatus};

    fn sid(n: u128) -> SessionId {
        SessionId::from_uuid(Uuid::from_u128(n)).unwrap()
    }

    fn rec(seq: u64, effect: SideEffect) -> EffectRecord {
        EffectRecord {
            seq: EffectSeq::new(seq),
            effect,
            committed_at_ms: 0,
        }
    }

    fn msg(seq: u64) -> EffectRecord {
        rec(
            seq,
            SideEffect::MessageAppended {
                session_id: sid(1),
                message_id: MessageId::from_uuid(Uuid::from_u128(1000 + u128::from(seq))).unwrap(),
                seq: Seq::new(seq),
            },
        )
    }

    fn skip(seq: u64) -> EffectRecord {
        rec(
            seq,
            SideEffect::AgentStatusChanged {
                session_id: sid(1),
                agent_id: AgentId::from_uuid(Uuid::from_u128(7)).unwrap(),
                status: "x".into(),
            },
        )
    }

    fn status(seq: u64, session: u128, at: i64, state: RuntimeState) -> EffectRecord {
        rec(
            seq,
            SideEffect::RuntimeStatusUpdated {
                envelope: RuntimeStatusEnvelope::new(
                    sid(session),
                    DeviceId::from_uuid(Uuid::from_u128(9)).unwrap(),
                    RuntimeStatus {
                        status: state,
                        error_message: None,
                    },
                    at,
                ),
            },
        )
    }

    fn closed(seq: u64) -> EffectRecord {
        rec(seq, SideEffect::SessionClosed { session_id: sid(1) })
    }

    fn ready(plan: Plan) -> Unit {
        match plan {
            Plan::Ready(unit) => unit,
            other => panic!("expected a ready unit, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_log_has_nothing_to_do() {
        assert_eq!(plan(&[], 50, false), Plan::Empty);
    }

    #[test]
    fn leading_skipped_effects_are_passed_over_together() {
        let unit = ready(plan(&[skip(1), skip(2), msg(3)], 50, false));
        assert_eq!(unit.work, Work::Skip);
        assert_eq!(unit.through, EffectSeq::new(2));
        assert_eq!(unit.len(), 0);
    }

    #[test]
    fn a_partial_batch_at_the_end_of_the_log_waits_unless_forced() {
        let effects = [msg(1), skip(2), msg(3)];
        assert_eq!(
            plan(&effects, 50, false),
            Plan::Window {
                kind: WindowKind::Messages,
                head: EffectSeq::new(1)
            }
        );
        let unit = ready(plan(&effects, 50, true));
        assert_eq!(unit.len(), 2);
        assert_eq!(unit.through, EffectSeq::new(3));
    }

    #[test]
    fn a_full_batch_is_ready_and_never_exceeds_the_size() {
        let effects: Vec<_> = (1..=7).map(msg).collect();
        let unit = ready(plan(&effects, 3, false));
        assert_eq!(unit.len(), 3);
        assert_eq!(unit.through, EffectSeq::new(3));
        let unit = ready(plan(&effects[..3], 3, false));
        assert_eq!(unit.len(), 3, "exactly full is ready too");
    }

    #[test]
    fn a_batch_closed_by_another_effect_is_ready() {
        let unit = ready(plan(&[msg(1), msg(2), closed(3), msg(4)], 50, false));
        assert_eq!(unit.len(), 2);
        assert_eq!(unit.through, EffectSeq::new(2));
    }

    #[test]
    fn statuses_coalesce_to_the_newest_per_session() {
        let effects = [
            status(1, 1, 10, RuntimeState::Running),
            status(2, 2, 5, RuntimeState::Idle),
            status(3, 1, 30, RuntimeState::Waiting),
            status(4, 1, 20, RuntimeState::Error),
            closed(5),
        ];
        let unit = ready(plan(&effects, 50, false));
        assert_eq!(unit.through, EffectSeq::new(4));
        let Work::Statuses(items) = &unit.work else {
            panic!("statuses expected")
        };
        let kept: Vec<_> = items
            .iter()
            .map(|s| (s.effect_seq.get(), s.envelope.coding_session.status))
            .collect();
        assert_eq!(
            kept,
            [(2, RuntimeState::Idle), (3, RuntimeState::Waiting)],
            "newest wins, stale dropped"
        );
        assert_eq!(
            plan(&effects[..2], 50, false),
            Plan::Window {
                kind: WindowKind::Statuses,
                head: EffectSeq::new(1)
            }
        );
    }

    #[test]
    fn other_effects_run_one_at_a_time() {
        let unit = ready(plan(&[closed(4), closed(5)], 50, false));
        assert_eq!(unit.work, Work::Single(closed(4)));
        assert_eq!(unit.through, EffectSeq::new(4));
    }

    #[test]
    fn a_replayed_effect_is_a_unit_of_its_own() {
        let unit = Unit::for_effect(msg(9));
        assert_eq!(unit.len(), 1);
        assert_eq!(unit.effects(), vec![(EffectSeq::new(9), msg(9).effect)]);
        let unit = Unit::for_effect(status(3, 1, 1, RuntimeState::Idle));
        assert_eq!(
            unit.effects()[0].1,
            status(3, 1, 1, RuntimeState::Idle).effect
        );
    }
}
