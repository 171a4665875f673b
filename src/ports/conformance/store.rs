//! Conformance suite for [`Store`]: one function per contract clause of
//! [`ports::store`](crate::ports::store), each named after its clause.
//!
//! Adapter authors run it with [`store_conformance_tests!`](crate::store_conformance_tests),
//! which stamps one `#[test]` per clause:
//!
//! ```
//! tandem::store_conformance_tests!(sqlite_memory, || {
//!     Box::new(tandem::adapters::sqlite::SqliteStore::open_in_memory(Default::default()).unwrap())
//! });
//! # fn main() {}
//! ```
//!
//! Each function receives a fresh, empty store and panics with a clause-specific message when
//! the store breaks the contract.

use uuid::Uuid;

use crate::domain::{
    ConsumerName, DeviceId, DomainError, EffectSeq, Message, MessageId, Repository, RepositoryId,
    Role, RuntimeState, RuntimeStatus, RuntimeStatusEnvelope, Seq, Session, SessionId,
    SessionStatus, SideEffect,
};
use crate::ports::{Fact, Store, StoreError, WriteBatch};

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __store_clauses {
    ($m:ident) => {
        $m!(commit_is_atomic);
        $m!(effect_seqs_strictly_increase);
        $m!(message_seqs_are_contiguous);
        $m!(append_to_closed_session_fails);
        $m!(duplicate_ids_are_refused);
        $m!(session_requires_repository);
        $m!(delete_cascades);
        $m!(load_returns_everything_committed);
        $m!(effects_after_pages_in_order);
        $m!(cursors_are_independent);
        $m!(cursor_never_moves_backwards);
        $m!(cursor_cannot_pass_the_head);
        $m!(messages_after_pages_in_order);
        $m!(local_device_id_is_sticky);
    };
}

/// Stamps a test module `$name` with one `#[test]` per [`Store`] contract clause, each run on a
/// fresh store from `$factory`: a closure returning a fixture that dereferences to the store
/// (a `Box<YourStore>`, or a guard that also owns a temp dir and cleans it up on drop).
#[macro_export]
macro_rules! store_conformance_tests {
    ($name:ident, $factory:expr) => {
        $crate::__conformance_tests!($name, $factory, store, __store_clauses, *);
    };
}

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0xC0F0_0000_0000_0000_0000_0000_0000_0000 | n)
}

fn device() -> DeviceId {
    DeviceId::from_uuid(uuid(0xD)).expect("non-nil")
}

fn repo(n: u128) -> Repository {
    Repository {
        id: RepositoryId::from_uuid(uuid(0x1000 + n)).expect("non-nil"),
        name: format!("repo-{n}"),
        remote_url: None,
        created_at_ms: 1,
        updated_at_ms: 1,
    }
}

fn session(n: u128, repository: &Repository) -> Session {
    Session {
        id: SessionId::from_uuid(uuid(0x2000 + n)).expect("non-nil"),
        repository_id: repository.id,
        title: format!("session-{n}"),
        status: SessionStatus::Active,
        created_at_ms: 2,
        updated_at_ms: 2,
        closed_at_ms: None,
    }
}

fn message(session: &Session, seq: u64, n: u128) -> Message {
    Message {
        id: MessageId::from_uuid(uuid(0x3_0000 + n)).expect("non-nil"),
        session_id: session.id,
        seq: Seq::new(seq),
        role: Role::User,
        content: format!("message {n} at seq {seq}"),
        created_at_ms: 3,
        origin: device(),
    }
}

fn commit(
    store: &dyn Store,
    facts: Vec<Fact>,
    effects: Vec<SideEffect>,
) -> Result<Vec<crate::domain::EffectRecord>, StoreError> {
    store.commit(&WriteBatch {
        facts,
        effects,
        committed_at_ms: 10,
    })
}

fn appended(m: &Message) -> SideEffect {
    SideEffect::MessageAppended {
        session_id: m.session_id,
        message_id: m.id,
        seq: m.seq,
    }
}

/// A store holding one repository and one active session.
fn seeded(store: &dyn Store) -> (Repository, Session) {
    let r = repo(1);
    let s = session(1, &r);
    commit(
        store,
        vec![
            Fact::InsertRepository(r.clone()),
            Fact::InsertSession(s.clone()),
        ],
        vec![
            SideEffect::RepositoryCreated {
                repository_id: r.id,
            },
            SideEffect::SessionCreated {
                session_id: s.id,
                repository_id: r.id,
            },
        ],
    )
    .expect("seeding commit");
    (r, s)
}

fn consumer(name: &str) -> ConsumerName {
    ConsumerName::parse(name).expect("valid consumer name")
}

/// `commit_is_atomic`
pub fn commit_is_atomic(store: &dyn Store) {
    let (_, s) = seeded(store);
    let before = store.load().expect("load");
    let head = store.effect_head().expect("head");
    let ok = message(&s, 1, 1);
    let bad = message(&s, 3, 2); // gap: must fail, taking `ok` down with it
    let err = commit(
        store,
        vec![
            Fact::AppendMessage(ok.clone()),
            Fact::AppendMessage(bad.clone()),
        ],
        vec![appended(&ok), appended(&bad)],
    )
    .expect_err("a batch with an invalid fact must fail");
    assert!(
        matches!(err, StoreError::SeqConflict { .. }),
        "unexpected error {err:?}"
    );
    assert_eq!(
        store.load().expect("load"),
        before,
        "a failed commit left facts behind"
    );
    assert_eq!(
        store.effect_head().expect("head"),
        head,
        "a failed commit left effects behind"
    );
    assert_eq!(store.message(ok.id).expect("message"), None);
}

/// `effect_seqs_strictly_increase`
pub fn effect_seqs_strictly_increase(store: &dyn Store) {
    let (_, s) = seeded(store);
    let mut last = store.effect_head().expect("head");
    for i in 1..=5u64 {
        let m = message(&s, i, u128::from(i));
        let recs = commit(
            store,
            vec![Fact::AppendMessage(m.clone())],
            vec![appended(&m), appended(&m)],
        )
        .expect("commit");
        assert_eq!(recs.len(), 2);
        for r in recs {
            assert!(
                r.seq > last,
                "effect seq {} did not increase past {}",
                r.seq,
                last
            );
            last = r.seq;
        }
    }
    assert_eq!(store.effect_head().expect("head"), last);
}

/// `message_seqs_are_contiguous`
pub fn message_seqs_are_contiguous(store: &dyn Store) {
    let (_, s) = seeded(store);
    let zero = message(&s, 0, 1);
    assert!(
        commit(store, vec![Fact::AppendMessage(zero)], vec![]).is_err(),
        "seq 0 accepted"
    );
    let gap = message(&s, 2, 2);
    match commit(store, vec![Fact::AppendMessage(gap)], vec![]) {
        Err(StoreError::SeqConflict { expected, got, .. }) => {
            assert_eq!((expected, got), (Seq::new(1), Seq::new(2)));
        }
        other => panic!("a gap must be a SeqConflict, got {other:?}"),
    }
    let first = message(&s, 1, 3);
    commit(store, vec![Fact::AppendMessage(first)], vec![]).expect("seq 1");
    let dup_seq = message(&s, 1, 4);
    assert!(matches!(
        commit(store, vec![Fact::AppendMessage(dup_seq)], vec![]),
        Err(StoreError::SeqConflict { .. })
    ));
    let second = message(&s, 2, 5);
    commit(store, vec![Fact::AppendMessage(second)], vec![]).expect("seq 2");
}

/// `append_to_closed_session_fails`
pub fn append_to_closed_session_fails(store: &dyn Store) {
    let (r, s) = seeded(store);
    let closed = Session {
        status: SessionStatus::Closed,
        closed_at_ms: Some(5),
        ..s.clone()
    };
    commit(store, vec![Fact::UpdateSession(closed)], vec![]).expect("close");
    let m = message(&s, 1, 1);
    match commit(store, vec![Fact::AppendMessage(m)], vec![]) {
        Err(StoreError::Rejected(DomainError::SessionClosed(id))) => assert_eq!(id, s.id),
        other => panic!("expected SessionClosed, got {other:?}"),
    }
    let unknown = session(99, &r);
    let m = message(&unknown, 1, 2);
    match commit(store, vec![Fact::AppendMessage(m)], vec![]) {
        Err(StoreError::Rejected(DomainError::SessionNotFound(id))) => assert_eq!(id, unknown.id),
        other => panic!("expected SessionNotFound, got {other:?}"),
    }
}

/// `duplicate_ids_are_refused`
pub fn duplicate_ids_are_refused(store: &dyn Store) {
    let (r, s) = seeded(store);
    assert!(matches!(
        commit(store, vec![Fact::InsertRepository(r)], vec![]),
        Err(StoreError::Rejected(DomainError::RepositoryExists(_)))
    ));
    assert!(matches!(
        commit(store, vec![Fact::InsertSession(s.clone())], vec![]),
        Err(StoreError::Rejected(DomainError::SessionExists(_)))
    ));
    let m = message(&s, 1, 1);
    commit(store, vec![Fact::AppendMessage(m.clone())], vec![]).expect("first");
    let again = Message {
        seq: Seq::new(2),
        ..m
    };
    assert!(matches!(
        commit(store, vec![Fact::AppendMessage(again)], vec![]),
        Err(StoreError::Rejected(DomainError::DuplicateMessage(_)))
    ));
}

/// `session_requires_repository`
pub fn session_requires_repository(store: &dyn Store) {
    let orphan = session(1, &repo(42));
    match commit(store, vec![Fact::InsertSession(orphan)], vec![]) {
        Err(StoreError::Rejected(DomainError::RepositoryNotFound(id))) => {
            assert_eq!(id, repo(42).id);
        }
        other => panic!("expected RepositoryNotFound, got {other:?}"),
    }
}

/// `delete_cascades`
pub fn delete_cascades(store: &dyn Store) {
    let (r, s) = seeded(store);
    let s2 = session(2, &r);
    let m = message(&s, 1, 1);
    let m2 = message(&s2, 1, 2);
    let status = RuntimeStatusEnvelope::new(
        s.id,
        device(),
        RuntimeStatus {
            status: RuntimeState::Running,
            error_message: None,
        },
        4,
    );
    commit(
        store,
        vec![
            Fact::InsertSession(s2.clone()),
            Fact::AppendMessage(m.clone()),
            Fact::AppendMessage(m2.clone()),
            Fact::PutRuntimeStatus(status),
        ],
        vec![],
    )
    .expect("setup");
    commit(store, vec![Fact::DeleteSession(s2.id)], vec![]).expect("delete session");
    assert_eq!(
        store.message(m2.id).expect("read"),
        None,
        "session delete kept its messages"
    );
    assert!(store.message(m.id).expect("read").is_some());
    commit(store, vec![Fact::DeleteRepository(r.id)], vec![]).expect("delete repository");
    let after = store.load().expect("load");
    assert!(after.repositories.is_empty() && after.sessions.is_empty());
    assert!(
        after.runtime_statuses.is_empty(),
        "repository delete kept runtime status"
    );
    assert_eq!(
        store.message(m.id).expect("read"),
        None,
        "repository delete kept messages"
    );
    assert!(matches!(
        commit(store, vec![Fact::DeleteSession(s.id)], vec![]),
        Err(StoreError::Rejected(DomainError::SessionNotFound(_)))
    ));
}

/// `load_returns_everything_committed`
pub fn load_returns_everything_committed(store: &dyn Store) {
    let (r, s) = seeded(store);
    let msgs: Vec<Message> = (1..=3).map(|i| message(&s, i, u128::from(i))).collect();
    let status = RuntimeStatusEnvelope::new(
        s.id,
        device(),
        RuntimeStatus {
            status: RuntimeState::Error,
            error_message: Some("boom".into()),
        },
        7,
    );
    let mut facts: Vec<Fact> = msgs.iter().cloned().map(Fact::AppendMessage).collect();
    facts.push(Fact::PutRuntimeStatus(status.clone()));
    commit(store, facts, vec![]).expect("commit");
    let loaded = store.load().expect("load");
    assert_eq!(loaded.repositories, vec![r]);
    assert_eq!(loaded.sessions, vec![(s, msgs)]);
    assert_eq!(loaded.runtime_statuses, vec![status]);
}

/// `effects_after_pages_in_order`
pub fn effects_after_pages_in_order(store: &dyn Store) {
    let (_, s) = seeded(store);
    let msgs: Vec<Message> = (1..=7).map(|i| message(&s, i, u128::from(i))).collect();
    let effects: Vec<SideEffect> = msgs.iter().map(appended).collect();
    let facts = msgs.iter().cloned().map(Fact::AppendMessage).collect();
    let committed = commit(store, facts, effects).expect("commit");
    let all = store.effects_after(EffectSeq::ZERO, 1000).expect("read");
    assert_eq!(all.len(), 9, "two seeding effects plus seven appends");
    assert_eq!(&all[2..], &committed[..]);
    let mut cursor = EffectSeq::ZERO;
    let mut paged = Vec::new();
    loop {
        let page = store.effects_after(cursor, 4).expect("page");
        assert!(page.len() <= 4, "limit ignored");
        let Some(last) = page.last() else { break };
        assert!(page.iter().all(|r| r.seq > cursor));
        cursor = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// `cursors_are_independent`
pub fn cursors_are_independent(store: &dyn Store) {
    seeded(store);
    let (a, b) = (consumer("cold"), consumer("hot"));
    assert_eq!(store.cursor(&a).expect("cursor"), EffectSeq::ZERO);
    let head = store.effect_head().expect("head");
    store.advance_cursor(&a, head).expect("advance a");
    assert_eq!(store.cursor(&a).expect("cursor"), head);
    assert_eq!(
        store.cursor(&b).expect("cursor"),
        EffectSeq::ZERO,
        "b moved with a"
    );
    let first = store.effects_after(EffectSeq::ZERO, 1).expect("read")[0].seq;
    store.advance_cursor(&b, first).expect("advance b");
    let cursors = store.cursors().expect("cursors");
    assert_eq!(cursors, vec![(a, head), (b, first)]);
}

/// `cursor_never_moves_backwards`
pub fn cursor_never_moves_backwards(store: &dyn Store) {
    seeded(store);
    let c = consumer("cold");
    let head = store.effect_head().expect("head");
    store.advance_cursor(&c, head).expect("advance");
    store
        .advance_cursor(&c, head)
        .expect("same position is a no-op");
    match store.advance_cursor(&c, EffectSeq::ZERO) {
        Err(StoreError::CursorRegression {
            current, requested, ..
        }) => {
            assert_eq!((current, requested), (head, EffectSeq::ZERO));
        }
        other => panic!("expected CursorRegression, got {other:?}"),
    }
    assert_eq!(store.cursor(&c).expect("cursor"), head);
}

/// `cursor_cannot_pass_the_head`
pub fn cursor_cannot_pass_the_head(store: &dyn Store) {
    seeded(store);
    let c = consumer("cold");
    let head = store.effect_head().expect("head");
    assert!(matches!(
        store.advance_cursor(&c, head.next()),
        Err(StoreError::CursorBeyondHead { .. })
    ));
    assert_eq!(store.cursor(&c).expect("cursor"), EffectSeq::ZERO);
}

/// `messages_after_pages_in_order`
pub fn messages_after_pages_in_order(store: &dyn Store) {
    let (r, s) = seeded(store);
    let other = session(2, &r);
    let msgs: Vec<Message> = (1..=5).map(|i| message(&s, i, u128::from(i))).collect();
    let mut facts: Vec<Fact> = vec![Fact::InsertSession(other.clone())];
    facts.extend(msgs.iter().cloned().map(Fact::AppendMessage));
    facts.push(Fact::AppendMessage(message(&other, 1, 99)));
    commit(store, facts, vec![]).expect("commit");
    assert_eq!(
        store.messages_after(s.id, Seq::ZERO, 100).expect("read"),
        msgs
    );
    assert_eq!(
        store.messages_after(s.id, Seq::new(2), 2).expect("read"),
        msgs[2..4].to_vec()
    );
    assert!(store
        .messages_after(s.id, Seq::new(5), 10)
        .expect("read")
        .is_empty());
    assert_eq!(
        store.message(msgs[3].id).expect("read").as_ref(),
        Some(&msgs[3])
    );
}

/// `local_device_id_is_sticky`
pub fn local_device_id_is_sticky(store: &dyn Store) {
    let first = DeviceId::from_uuid(uuid(0xAA)).expect("non-nil");
    let second = DeviceId::from_uuid(uuid(0xBB)).expect("non-nil");
    assert_eq!(store.local_device_id(first).expect("first"), first);
    assert_eq!(store.local_device_id(second).expect("second"), first);
}
