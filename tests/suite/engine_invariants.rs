//! Engine invariants, one named test each.

use std::sync::{Arc, Mutex};
use std::thread;

use tandem::adapters::sqlite::SqliteStore;
use tandem::app::{Engine, EngineConfig, EngineError, LiveEvent, StatusUpdate};
use tandem::domain::{
    AgentId, ConsumerName, DomainError, EffectRecord, EffectSeq, MessageId, NewMessage, Role,
    RuntimeState, RuntimeStatus, RuntimeStatusEnvelope, Seq, SideEffect,
};
use tandem::ports::{SideEffectSink, Store};

use crate::support::{Harness, TempStore};

fn msg(text: &str) -> NewMessage {
    NewMessage::new(Role::User, text)
}

/// A sink that checks, through an independent connection, that every emitted message is
/// already committed.
#[derive(Debug)]
struct CommittedCheckSink {
    observer: Arc<SqliteStore>,
    checked: Mutex<usize>,
    violations: Mutex<Vec<String>>,
}

impl SideEffectSink for CommittedCheckSink {
    fn emit(&self, effect: &EffectRecord) {
        if let SideEffect::MessageAppended { message_id, .. } = effect.effect {
            *self.checked.lock().unwrap() += 1;
            if self.observer.message(message_id).unwrap().is_none() {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("{message_id} emitted before commit"));
            }
        }
        let head = self.observer.effect_head().unwrap();
        if head < effect.seq {
            self.violations
                .lock()
                .unwrap()
                .push(format!("effect {} emitted before commit", effect.seq));
        }
    }
}

#[test]
fn every_append_is_in_sqlite_before_any_effect_or_notification() {
    let db = TempStore::new();
    let sink = Arc::new(CommittedCheckSink {
        observer: db.reopen(),
        checked: Mutex::new(0),
        violations: Mutex::new(Vec::new()),
    });
    let engine = Arc::new(Engine::builder(db.arc()).sink(sink.clone()).open().unwrap());
    let repo = engine.create_repository("r", None).unwrap();
    let session = engine.create_session(repo.id, "s").unwrap();

    let observer = db.reopen();
    let mut sub = engine.subscribe(session.id).unwrap();
    let watcher = thread::spawn(move || {
        let mut seen = 0;
        while seen < 60 {
            match sub.recv() {
                LiveEvent::Message(m) => {
                    assert!(
                        observer.message(m.id).unwrap().is_some(),
                        "notified before commit"
                    );
                    seen += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    for i in 0..30 {
        engine
            .append_message(session.id, msg(&format!("single {i}")))
            .unwrap();
    }
    for i in 0..3 {
        engine
            .append_messages(
                session.id,
                (0..10).map(|j| msg(&format!("b{i}.{j}"))).collect(),
            )
            .unwrap();
    }
    watcher.join().unwrap();
    assert_eq!(*sink.checked.lock().unwrap(), 60);
    assert!(
        sink.violations.lock().unwrap().is_empty(),
        "{:?}",
        sink.violations.lock().unwrap()
    );
}

#[test]
fn effect_rows_exist_only_for_committed_facts() {
    let h = Harness::new();
    let (_, s) = h.session();
    let existing = h.engine.append_message(s.id, msg("one")).unwrap();
    let head = h.db.effect_head().unwrap();
    let emitted = h.sink.len();

    // A batch whose second message reuses a committed id fails as a whole.
    let dup = vec![msg("fresh"), msg("dup").with_id(existing.id)];
    let err = h.engine.append_messages(s.id, dup).unwrap_err();
    assert!(
        matches!(err, EngineError::Rejected(DomainError::DuplicateMessage(id)) if id == existing.id)
    );
    // Unknown session, empty batch, oversized title: refused before the store.
    let unknown = tandem::domain::SessionId::parse("00000000-0000-0000-0000-00000000abcd").unwrap();
    assert!(matches!(
        h.engine.append_message(unknown, msg("x")),
        Err(EngineError::Rejected(DomainError::SessionNotFound(_)))
    ));
    assert!(matches!(
        h.engine.append_messages(s.id, vec![]),
        Err(EngineError::Rejected(DomainError::EmptyBatch))
    ));
    assert!(h
        .engine
        .update_session_title(s.id, &"t".repeat(5000))
        .is_err());

    assert_eq!(
        h.db.effect_head().unwrap(),
        head,
        "a failed write left an effect row"
    );
    assert_eq!(h.sink.len(), emitted, "a failed write emitted");
    assert_eq!(h.engine.transcript(s.id).unwrap().len(), 1);
    // Every MessageAppended row names a committed message at its seq.
    for rec in h.db.effects_after(EffectSeq::ZERO, 1000).unwrap() {
        if let SideEffect::MessageAppended {
            message_id, seq, ..
        } = rec.effect
        {
            assert_eq!(h.db.message(message_id).unwrap().unwrap().seq, seq);
        }
    }
}

#[test]
fn recovery_emits_no_effect_and_notifies_no_subscriber() {
    let h = Harness::new();
    let (_, s) = h.session();
    h.engine
        .append_messages(s.id, vec![msg("a"), msg("b")])
        .unwrap();
    h.engine
        .update_runtime_status(
            s.id,
            RuntimeStatus {
                status: RuntimeState::Idle,
                error_message: None,
            },
        )
        .unwrap();
    let (_, closed) = h.session();
    h.engine.close_session(closed.id).unwrap();
    assert!(!h.sink.is_empty());

    let (reopened, sink) = h.reopen();
    assert!(sink.is_empty(), "recovery emitted {:?}", sink.effects());
    let mut sub = reopened.subscribe(s.id).unwrap();
    assert_eq!(sub.try_recv(), None, "recovery notified a subscriber");
    reopened.refresh_snapshot().unwrap();
    assert_eq!(sub.try_recv(), None, "refresh notified a subscriber");
    assert!(sink.is_empty(), "refresh emitted");
    // The views are back.
    assert_eq!(reopened.sessions(), h.engine.sessions());
    assert_eq!(
        reopened.transcript(s.id).unwrap(),
        h.engine.transcript(s.id).unwrap()
    );
    assert_eq!(reopened.runtime_status(s.id), h.engine.runtime_status(s.id));
    assert_eq!(
        reopened.device_id(),
        h.engine.device_id(),
        "device id must persist"
    );
}

#[test]
fn snapshot_plus_delta_equals_full_history() {
    let h = Harness::new();
    let (_, s) = h.session();
    let (_, other) = h.session();
    for i in 0..25 {
        h.engine
            .append_message(s.id, msg(&format!("before {i}")))
            .unwrap();
    }
    h.engine.append_message(other.id, msg("elsewhere")).unwrap();
    h.engine.refresh_snapshot().unwrap();
    assert_eq!(
        h.engine.delta_len(s.id).unwrap(),
        0,
        "refresh absorbs the delta"
    );
    for i in 0..17 {
        h.engine
            .append_message(s.id, msg(&format!("after {i}")))
            .unwrap();
    }
    h.engine
        .append_messages(s.id, (0..8).map(|i| msg(&format!("batch {i}"))).collect())
        .unwrap();
    assert_eq!(h.engine.delta_len(s.id).unwrap(), 25);

    let from_views: Vec<_> = h
        .engine
        .transcript(s.id)
        .unwrap()
        .iter()
        .map(|m| (**m).clone())
        .collect();
    let from_sqlite = h.db.messages_after(s.id, Seq::ZERO, usize::MAX).unwrap();
    assert_eq!(from_views.len(), 50);
    assert_eq!(from_views, from_sqlite);
    // Reading from any point agrees too (the seam between snapshot and delta included).
    for after in [0u64, 10, 24, 25, 26, 49, 50, 60] {
        let v: Vec<_> = h
            .engine
            .messages_after(s.id, Seq::new(after))
            .unwrap()
            .iter()
            .map(|m| (**m).clone())
            .collect();
        assert_eq!(
            v,
            h.db.messages_after(s.id, Seq::new(after), usize::MAX)
                .unwrap(),
            "after {after}"
        );
    }
}

#[test]
fn seqs_are_contiguous_under_concurrent_appends() {
    let h = Harness::new();
    let (_, a) = h.session();
    let (_, b) = h.session();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&h.engine);
            thread::spawn(move || {
                for i in 0..50 {
                    let target = if (t + i) % 2 == 0 { a.id } else { b.id };
                    if i % 10 == 0 {
                        engine
                            .append_messages(target, vec![msg("x"), msg("y"), msg("z")])
                            .unwrap();
                    } else {
                        engine
                            .append_message(target, msg(&format!("t{t} m{i}")))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut total = 0;
    for s in [a.id, b.id] {
        let views = h.engine.transcript(s).unwrap();
        let stored = h.db.messages_after(s, Seq::ZERO, usize::MAX).unwrap();
        assert_eq!(views.len(), stored.len());
        for (i, (v, st)) in views.iter().zip(&stored).enumerate() {
            assert_eq!(v.seq, Seq::new(i as u64 + 1), "gap or reorder in the views");
            assert_eq!(**v, *st);
        }
        total += views.len();
    }
    assert_eq!(total, 4 * (45 + 5 * 3));
}

#[test]
fn closing_emits_exactly_one_effect() {
    let h = Harness::new();
    let (_, s) = h.session();
    h.sink.clear();
    let first = h.engine.close_session(s.id).unwrap();
    let second = h.engine.close_session(s.id).unwrap();
    assert_eq!(first, second, "closing twice changes nothing");
    let effects = h.sink.effects();
    assert_eq!(effects.len(), 1);
    assert_eq!(
        effects[0].effect,
        SideEffect::SessionClosed { session_id: s.id }
    );
    let closes =
        h.db.effects_after(EffectSeq::ZERO, 1000)
            .unwrap()
            .into_iter()
            .filter(|r| matches!(r.effect, SideEffect::SessionClosed { .. }))
            .count();
    assert_eq!(closes, 1);
}

#[test]
fn append_to_a_closed_session_errors_and_changes_nothing() {
    let h = Harness::new();
    let (_, s) = h.session();
    h.engine.append_message(s.id, msg("kept")).unwrap();
    h.engine.close_session(s.id).unwrap();
    let (head, emitted, before) = (
        h.db.effect_head().unwrap(),
        h.sink.len(),
        h.engine.transcript(s.id).unwrap(),
    );
    for attempt in [vec![msg("late")], vec![msg("late 1"), msg("late 2")]] {
        match h.engine.append_messages(s.id, attempt) {
            Err(EngineError::Rejected(DomainError::SessionClosed(id))) => assert_eq!(id, s.id),
            other => panic!("expected SessionClosed, got {other:?}"),
        }
    }
    assert_eq!(h.engine.transcript(s.id).unwrap(), before);
    assert_eq!(h.db.effect_head().unwrap(), head);
    assert_eq!(h.sink.len(), emitted);
    assert_eq!(h.db.messages_after(s.id, Seq::ZERO, 10).unwrap().len(), 1);
}

#[test]
fn a_slow_subscriber_gets_lagged_and_the_writer_never_waits() {
    let db = TempStore::new();
    let engine = Engine::builder(db.arc())
        .config(EngineConfig { live_capacity: 16 })
        .open()
        .unwrap();
    let repo = engine.create_repository("r", None).unwrap();
    let s = engine.create_session(repo.id, "s").unwrap();
    let mut slow = engine.subscribe(s.id).unwrap();
    let mut fast = engine.subscribe(s.id).unwrap();
    // The writer runs to completion on this thread while `slow` reads nothing: were the writer
    // able to block on a full subscriber, this loop would never finish.
    let mut fast_seen = 0;
    for i in 0..500u64 {
        engine.append_message(s.id, msg(&format!("m{i}"))).unwrap();
        while let Some(LiveEvent::Message(m)) = fast.try_recv() {
            fast_seen += 1;
            assert_eq!(m.seq, Seq::new(fast_seen));
        }
    }
    assert_eq!(
        fast_seen, 500,
        "a subscriber that keeps up sees everything in order"
    );
    match slow.try_recv() {
        Some(LiveEvent::Lagged {
            missed,
            resume_from_seq,
        }) => {
            assert_eq!(missed, 500 - 16);
            assert_eq!(resume_from_seq, Seq::new(1));
        }
        other => panic!("expected Lagged, got {other:?}"),
    }
    // Then the retained tail, in order, and the gap can be read back from the views.
    let tail: Vec<u64> = std::iter::from_fn(|| match slow.try_recv() {
        Some(LiveEvent::Message(m)) => Some(m.seq.get()),
        _ => None,
    })
    .collect();
    assert_eq!(tail, (485..=500).collect::<Vec<_>>());
    assert_eq!(engine.messages_after(s.id, Seq::ZERO).unwrap().len(), 500);
    engine.close_session(s.id).unwrap();
    assert_eq!(slow.try_recv(), Some(LiveEvent::Closed));
}

#[test]
fn subscribers_see_close_and_deletion() {
    let h = Harness::new();
    let (_, s) = h.session();
    let mut sub = h.engine.subscribe(s.id).unwrap();
    h.engine.append_message(s.id, msg("hi")).unwrap();
    h.engine.close_session(s.id).unwrap();
    assert!(matches!(sub.try_recv(), Some(LiveEvent::Message(m)) if m.content == "hi"));
    assert_eq!(sub.try_recv(), Some(LiveEvent::Closed));
    let mut late = h.engine.subscribe(s.id).unwrap();
    assert_eq!(
        late.try_recv(),
        Some(LiveEvent::Closed),
        "a closed session says so at once"
    );
    h.engine.delete_session(s.id).unwrap();
    assert_eq!(sub.try_recv(), Some(LiveEvent::Ended));
    assert!(matches!(
        h.engine.subscribe(s.id),
        Err(EngineError::Rejected(DomainError::SessionNotFound(_)))
    ));
}

#[test]
fn consumers_drain_the_durable_log_independently_even_when_emit_was_lost() {
    // The harness sink records, but consumers never rely on it: a NullSink engine works too.
    let db = TempStore::new();
    let engine = Engine::builder(db.arc()).open().unwrap();
    let repo = engine.create_repository("r", None).unwrap();
    let s = engine.create_session(repo.id, "s").unwrap();
    engine
        .append_messages(s.id, vec![msg("a"), msg("b"), msg("c")])
        .unwrap();
    let log = engine.effect_log();
    let cold = log.consumer(ConsumerName::parse("cold").unwrap());
    let hot = log.consumer(ConsumerName::parse("hot").unwrap());
    assert_eq!(cold.lag().unwrap(), 5);

    let first = cold.read(2).unwrap();
    assert_eq!(first.len(), 2);
    cold.ack(first[1].seq).unwrap();
    // A crash before the ack: re-reading yields the same records (at-least-once).
    let rest = cold.read(100).unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest, cold.read(100).unwrap());
    cold.ack(rest[2].seq).unwrap();
    assert_eq!(cold.lag().unwrap(), 0);
    assert_eq!(
        hot.read(100).unwrap().len(),
        5,
        "hot is unaffected by cold's progress"
    );
    assert!(
        cold.ack(EffectSeq::ZERO).is_err(),
        "a cursor never moves back"
    );

    // The cursor survives a restart.
    drop(engine);
    let reopened = Engine::builder(db.reopen()).open().unwrap();
    let cold = reopened
        .effect_log()
        .consumer(ConsumerName::parse("cold").unwrap());
    assert_eq!(cold.lag().unwrap(), 0);
    assert_eq!(reopened.effect_log().cursors().unwrap().len(), 1);
}

#[test]
fn runtime_status_is_coalesced_newest_wins() {
    let h = Harness::new();
    let (_, s) = h.session();
    let running = RuntimeStatus {
        status: RuntimeState::Running,
        error_message: None,
    };
    let idle = RuntimeStatus {
        status: RuntimeState::Idle,
        error_message: None,
    };
    // Two local updates in the same millisecond both apply, in order.
    h.engine
        .update_runtime_status(s.id, running.clone())
        .unwrap();
    h.engine.update_runtime_status(s.id, idle.clone()).unwrap();
    let current = h.engine.runtime_status(s.id).unwrap();
    assert_eq!(current.coding_session, idle);
    // An externally stamped, older envelope is dropped without a write.
    let head = h.db.effect_head().unwrap();
    let stale = RuntimeStatusEnvelope::new(
        s.id,
        h.engine.device_id(),
        running.clone(),
        current.updated_at_ms,
    );
    assert_eq!(
        h.engine.apply_runtime_status(stale).unwrap(),
        StatusUpdate::Stale
    );
    assert_eq!(h.db.effect_head().unwrap(), head);
    let newer = RuntimeStatusEnvelope::new(
        s.id,
        h.engine.device_id(),
        running,
        current.updated_at_ms + 5,
    );
    assert!(matches!(
        h.engine.apply_runtime_status(newer.clone()).unwrap(),
        StatusUpdate::Applied(_)
    ));
    assert_eq!(h.engine.runtime_status(s.id), Some(newer));
}

#[test]
fn every_write_kind_emits_its_effect_in_log_order() {
    let h = Harness::new();
    let (r, s) = h.session();
    h.engine.update_session_title(s.id, "renamed").unwrap();
    h.engine.append_message(s.id, msg("x")).unwrap();
    let agent = AgentId::parse("00000000-0000-0000-0000-0000000000a1").unwrap();
    h.engine
        .report_agent_status(s.id, agent, "thinking")
        .unwrap();
    h.engine
        .update_runtime_status(
            s.id,
            RuntimeStatus {
                status: RuntimeState::Error,
                error_message: Some("e".into()),
            },
        )
        .unwrap();
    h.engine.close_session(s.id).unwrap();
    h.engine.delete_session(s.id).unwrap();
    h.engine.delete_repository(r.id).unwrap();
    let kinds: Vec<&str> = h.sink.effects().iter().map(|e| e.effect.kind()).collect();
    assert_eq!(
        kinds,
        [
            "repository_created",
            "session_created",
            "session_updated",
            "message_appended",
            "agent_status_changed",
            "runtime_status_updated",
            "session_closed",
            "session_deleted",
            "repository_deleted"
        ]
    );
    assert_eq!(
        h.sink.effects(),
        h.db.effects_after(EffectSeq::ZERO, 100).unwrap(),
        "emitted = logged"
    );
    assert!(h.engine.repositories().is_empty() && h.engine.sessions().is_empty());
}

#[test]
fn caller_chosen_message_ids_make_retries_detectable() {
    let h = Harness::new();
    let (_, s) = h.session();
    let id = MessageId::parse("00000000-0000-0000-0000-00000000beef").unwrap();
    let first = h
        .engine
        .append_message(s.id, msg("once").with_id(id))
        .unwrap();
    assert_eq!(first.id, id);
    assert!(matches!(
        h.engine.append_message(s.id, msg("once").with_id(id)),
        Err(EngineError::Rejected(DomainError::DuplicateMessage(_)))
    ));
    assert_eq!(h.engine.last_seq(s.id).unwrap(), Seq::new(1));
}
