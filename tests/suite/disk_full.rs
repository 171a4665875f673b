//! Disk full: a write that cannot get space fails cleanly and is retried successfully.
//!
//! A scripted workload covers every kind of engine write. Before each step the database is capped
//! at its current size (`set_page_limit(Some(page_count))`), so any write that needs a new page
//! fails. The step must then return the typed, transient `EngineError::Store(StoreError::DiskFull)`
//! and leave no trace: the views, the store, the effect log head, the sink and live subscribers
//! are all unchanged. With the cap lifted, the same step must succeed, emit exactly its
//! effect(s), and the views must reflect it (and agree with the store).
//!
//! # Making every step need a new page
//!
//! Large payloads guarantee growth for the steps that write them: the repository's remote URL,
//! message contents, the runtime status error message and the agent status (all 6–20 KB, so
//! they spill into overflow pages). Titles are at most 1024 bytes and several steps write only
//! small rows (close, the small create/delete steps), which could fit into free space left in
//! existing pages. So before every step the test also *fills* the database (with the cap
//! lifted): it uses up the freelist, then appends agent-status effects sized from SQLite's
//! `dbstat` table until the rightmost leaf of the `effects` table has fewer than
//! [`FILLED_TAIL_MAX_UNUSED`] bytes free. Every engine write appends at least one effect row
//! (the smallest, `session_closed`, needs over 100 bytes) at the end of that table, so with an
//! empty freelist and a full tail page every step needs a new page, and the test asserts that
//! precondition rather than hoping for it.
//!
//! # Steps that legitimately succeed under the cap
//!
//! Deleting something that owns overflow pages frees those pages inside the same transaction,
//! and SQLite reuses them for the effect row: such a delete does not need to grow the file, so
//! it *succeeds* under the cap. That is correct behaviour (a full disk must not prevent freeing
//! space). The last two steps, `DeleteMainSession` (its messages and runtime status hold
//! overflow pages) and `DeleteMainRepository` (its remote URL does), exercise exactly that: they
//! must succeed under the cap, without growing the file, emitting exactly their effect. The
//! other delete steps delete rows that own no whole page (`DeleteSmallSession`,
//! `DeleteSmallRepository`) and must fail like every other step.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use tandem::app::{Engine, EngineError, LiveEvent, Subscription};
use tandem::domain::{
    AgentId, EffectRecord, EffectSeq, Message, NewMessage, Repository, RepositoryId, Role,
    RuntimeState, RuntimeStatus, RuntimeStatusEnvelope, Session, SessionId, SessionStatus,
    SideEffect, MAX_TITLE_BYTES,
};
use tandem::ports::{Store, StoreContents, StoreError};

use crate::support::Harness;

/// After filling, the rightmost `effects` leaf has fewer free bytes than this: less than any
/// effect row needs (a cell plus its 2-byte pointer; the smallest effect row is over 100 bytes).
const FILLED_TAIL_MAX_UNUSED: i64 = 48;

/// Size of a b-tree leaf page header, in bytes.
const LEAF_HEADER: i64 = 8;

/// The scripted workload, in order.
const STEPS: &[Step] = &[
    Step::CreateMainRepository,
    Step::CreateMainSession,
    Step::AppendOne,
    Step::AppendBatch,
    Step::RetitleMain,
    Step::SetRuntimeStatus,
    Step::ReportAgentStatus,
    Step::CreateSessionToClose,
    Step::CloseSession,
    Step::CreateSmallRepository,
    Step::CreateSmallSession,
    Step::DeleteSmallSession,
    Step::DeleteSmallRepository,
    Step::DeleteMainSession,
    Step::DeleteMainRepository,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `create_repository` with a 1024-byte name and an 8 KB remote URL.
    CreateMainRepository,
    /// `create_session` with a 1024-byte title.
    CreateMainSession,
    /// `append_message` of 12 KB.
    AppendOne,
    /// `append_messages` of five messages of 6–20 KB.
    AppendBatch,
    /// `update_session_title` to another 1024-byte title.
    RetitleMain,
    /// `update_runtime_status` with a 10 KB error message.
    SetRuntimeStatus,
    /// `report_agent_status` with an 8 KB status.
    ReportAgentStatus,
    /// `create_session` (1024-byte title) of the session closed next.
    CreateSessionToClose,
    /// `close_session`.
    CloseSession,
    /// `create_repository` with a short name and no remote.
    CreateSmallRepository,
    /// `create_session` with a short title, in the main repository.
    CreateSmallSession,
    /// `delete_session` of the small, empty session.
    DeleteSmallSession,
    /// `delete_repository` of the small repository (no sessions).
    DeleteSmallRepository,
    /// `delete_session` of the main session (frees its messages' pages).
    DeleteMainSession,
    /// `delete_repository` of the main repository (frees its remote URL's pages, cascades to
    /// the closed session).
    DeleteMainRepository,
}

/// What a step must do while the database is capped at its current size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnderCap {
    /// Needs a new page: fails with `DiskFull` and changes nothing.
    DiskFull,
    /// Frees pages and reuses them: succeeds without growing the file.
    Succeeds,
}

impl Step {
    fn under_cap(self) -> UnderCap {
        match self {
            Self::DeleteMainSession | Self::DeleteMainRepository => UnderCap::Succeeds,
            _ => UnderCap::DiskFull,
        }
    }
}

/// Ids produced by earlier steps.
#[derive(Debug, Default)]
struct Ctx {
    main_repo: Option<RepositoryId>,
    small_repo: Option<RepositoryId>,
    main: Option<SessionId>,
    to_close: Option<SessionId>,
    small: Option<SessionId>,
}

/// Everything a reader of the engine can see, normalised for comparison.
#[derive(Clone, PartialEq, Eq)]
struct Dump {
    repositories: Vec<Repository>,
    sessions: Vec<(Session, Vec<Message>, Option<RuntimeStatusEnvelope>)>,
}

/// Compact: the payloads are kilobytes long, so only their sizes are shown.
impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Dump {{")?;
        for r in &self.repositories {
            writeln!(
                f,
                "  repository {} name {}B remote {:?}B at {}/{}",
                r.id,
                r.name.len(),
                r.remote_url.as_ref().map(String::len),
                r.created_at_ms,
                r.updated_at_ms
            )?;
        }
        for (s, msgs, status) in &self.sessions {
            writeln!(
                f,
                "  session {} of {} title {}B {:?} at {}/{}/{:?}",
                s.id,
                s.repository_id,
                s.title.len(),
                s.status,
                s.created_at_ms,
                s.updated_at_ms,
                s.closed_at_ms
            )?;
            for m in msgs {
                writeln!(
                    f,
                    "    #{} {} {}B at {}",
                    m.seq,
                    m.id,
                    m.content.len(),
                    m.created_at_ms
                )?;
            }
            if let Some(e) = status {
                writeln!(
                    f,
                    "    runtime {:?} error {:?}B at {}",
                    e.coding_session.status,
                    e.coding_session.error_message.as_ref().map(String::len),
                    e.updated_at_ms
                )?;
            }
        }
        write!(f, "}}")
    }
}

/// An effect, with its long strings reduced to their sizes.
fn brief(effect: &SideEffect) -> String {
    match effect {
        SideEffect::AgentStatusChanged {
            session_id, status, ..
        } => format!("agent_status_changed {session_id} {}B", status.len()),
        SideEffect::RuntimeStatusUpdated { envelope } => format!(
            "runtime_status_updated {} at {}",
            envelope.session_id, envelope.updated_at_ms
        ),
        other => format!("{other:?}"),
    }
}

/// The engine's visible state: repositories(), sessions(), every transcript, runtime statuses.
fn dump(engine: &Engine) -> Dump {
    let mut repositories = engine.repositories();
    repositories.sort_by_key(|r| r.id);
    let mut sessions: Vec<_> = engine
        .sessions()
        .into_iter()
        .map(|s| {
            let transcript = engine
                .transcript(s.id)
                .expect("transcript of a listed session")
                .iter()
                .map(|m| (**m).clone())
                .collect();
            let status = engine.runtime_status(s.id);
            (s, transcript, status)
        })
        .collect();
    sessions.sort_by_key(|(s, ..)| s.id);
    Dump {
        repositories,
        sessions,
    }
}

/// What the store holds, in the same shape.
fn store_dump(store: &dyn Store) -> Dump {
    let StoreContents {
        mut repositories,
        sessions,
        runtime_statuses,
    } = store.load().expect("load");
    repositories.sort_by_key(|r| r.id);
    let mut runtime: HashMap<SessionId, RuntimeStatusEnvelope> = runtime_statuses
        .into_iter()
        .map(|e| (e.session_id, e))
        .collect();
    let mut sessions: Vec<_> = sessions
        .into_iter()
        .map(|(s, msgs)| {
            let status = runtime.remove(&s.id);
            (s, msgs, status)
        })
        .collect();
    sessions.sort_by_key(|(s, ..)| s.id);
    assert!(
        runtime.is_empty(),
        "runtime statuses without a session: {runtime:?}"
    );
    Dump {
        repositories,
        sessions,
    }
}

/// Deterministic ASCII text of exactly `len` bytes.
fn text(tag: &str, len: usize) -> String {
    let mut s = String::with_capacity(len + 32);
    let mut i = 0u32;
    while s.len() < len {
        let _ = write!(s, "{tag}-{i:05}|");
        i += 1;
    }
    s.truncate(len);
    s
}

fn main_title(n: u8) -> String {
    text(&format!("title{n}"), MAX_TITLE_BYTES)
}

/// Reads page-level facts through a separate read-only connection (test introspection only).
struct Probe {
    conn: Connection,
}

impl Probe {
    fn open(path: &Path) -> Self {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open probe connection");
        Self { conn }
    }

    fn page_size(&self) -> i64 {
        self.conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page_size")
    }

    fn freelist_count(&self) -> i64 {
        self.conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .expect("freelist_count")
    }

    /// The rightmost leaf of the `effects` table (where every new effect row lands): its page
    /// number and free bytes.
    fn effects_tail(&self) -> (i64, i64) {
        self.conn
            .query_row(
                "SELECT pageno, unused FROM dbstat \
                 WHERE name = 'effects' AND pagetype = 'leaf' ORDER BY path DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("dbstat")
    }
}

/// The test rig: an engine over a file store with a recording sink, plus the filler session.
struct Rig {
    h: Harness,
    probe: Probe,
    filler: SessionId,
    agent: AgentId,
}

impl Rig {
    fn new() -> Self {
        let h = Harness::new();
        let repo = h
            .engine
            .create_repository("filler", None)
            .expect("filler repository");
        let filler = h
            .engine
            .create_session(repo.id, "filler")
            .expect("filler session")
            .id;
        let probe = Probe::open(&h.db.path());
        let agent = AgentId::from_uuid(Uuid::from_u128(0xA6E7)).expect("agent id");
        Self {
            h,
            probe,
            filler,
            agent,
        }
    }

    /// Makes the next write need a new page: empties the freelist and fills the tail page of
    /// the effect log, using agent-status effects (which touch no other table). Runs uncapped.
    fn fill(&self) {
        self.h.db.set_page_limit(None).expect("lift the cap");
        let page = self.probe.page_size();
        for _ in 0..32 {
            let free = self.probe.freelist_count();
            if free == 0 {
                break;
            }
            // An overflow chain takes its pages from the freelist first.
            let len = usize::try_from(free * page).expect("size");
            self.filler_effect(len);
        }
        assert_eq!(
            self.probe.freelist_count(),
            0,
            "could not empty the freelist"
        );

        // Bytes an agent-status effect row costs beyond its status text; calibrated as we go.
        let mut base: i64 = 200;
        for _ in 0..64 {
            let (tail, unused) = self.probe.effects_tail();
            if unused < FILLED_TAIL_MAX_UNUSED {
                assert_eq!(self.probe.freelist_count(), 0);
                return;
            }
            // Leave a few bytes if it fits; otherwise overflow into a fresh tail page.
            let len = if unused >= base + 16 {
                unused - base - 8
            } else {
                unused + 64
            };
            self.filler_effect(usize::try_from(len).expect("len"));
            let (tail2, unused2) = self.probe.effects_tail();
            // Same page: it cost `unused - unused2`. A fresh tail page (SQLite appends a page
            // holding just the new row when the row does not fit): it cost what that page uses.
            let cost = if tail2 == tail {
                unused - unused2
            } else {
                page - LEAF_HEADER - unused2
            };
            if (40..=400).contains(&(cost - len)) {
                base = cost - len;
            }
        }
        panic!("could not fill the effects tail page");
    }

    fn filler_effect(&self, len: usize) {
        self.h
            .engine
            .report_agent_status(self.filler, self.agent, &"f".repeat(len))
            .expect("filler effect (uncapped)");
    }
}

/// Runs `step`; on success checks that the views reflect it and returns the effects it must
/// have emitted. Updates `ctx` only on success.
fn apply(step: Step, rig: &Rig, ctx: &mut Ctx) -> Result<Vec<SideEffect>, EngineError> {
    let e = &*rig.h.engine;
    let effects = match step {
        Step::CreateMainRepository => {
            let url = format!("https://{}", text("remote", 8 * 1024));
            let r = e.create_repository(&text("repo", MAX_TITLE_BYTES), Some(&url))?;
            assert_eq!(e.repository(r.id).as_ref(), Some(&r));
            assert_eq!(r.remote_url.as_deref(), Some(url.as_str()));
            ctx.main_repo = Some(r.id);
            vec![SideEffect::RepositoryCreated {
                repository_id: r.id,
            }]
        }
        Step::CreateMainSession | Step::CreateSessionToClose | Step::CreateSmallSession => {
            let repo = ctx.main_repo.expect("main repository");
            let title = match step {
                Step::CreateMainSession => main_title(1),
                Step::CreateSessionToClose => main_title(9),
                _ => "small".to_owned(),
            };
            let s = e.create_session(repo, &title)?;
            assert_eq!(e.session(s.id).as_ref(), Some(&s));
            assert_eq!(s.title, title);
            assert!(s.is_active());
            assert!(e.transcript(s.id)?.is_empty());
            let slot = match step {
                Step::CreateMainSession => &mut ctx.main,
                Step::CreateSessionToClose => &mut ctx.to_close,
                _ => &mut ctx.small,
            };
            *slot = Some(s.id);
            vec![SideEffect::SessionCreated {
                session_id: s.id,
                repository_id: repo,
            }]
        }
        Step::AppendOne | Step::AppendBatch => {
            let s = ctx.main.expect("main session");
            let sizes: &[usize] = if step == Step::AppendOne {
                &[12 * 1024]
            } else {
                &[6 * 1024, 20 * 1024, 9 * 1024, 15 * 1024, 7 * 1024]
            };
            let before = e.last_seq(s)?;
            let batch: Vec<NewMessage> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| NewMessage::new(Role::Tool, text(&format!("msg{i}"), n)))
                .collect();
            let contents: Vec<String> = batch.iter().map(|m| m.content.clone()).collect();
            let committed = if step == Step::AppendOne {
                vec![e.append_message(s, batch.into_iter().next().expect("one"))?]
            } else {
                e.append_messages(s, batch)?
            };
            let transcript = e.transcript(s)?;
            assert_eq!(transcript.len() as u64, before.get() + sizes.len() as u64);
            let tail = &transcript[transcript.len() - sizes.len()..];
            for ((m, t), content) in committed.iter().zip(tail).zip(&contents) {
                assert_eq!(m, t);
                assert_eq!(&m.content, content);
            }
            committed
                .iter()
                .map(|m| SideEffect::MessageAppended {
                    session_id: s,
                    message_id: m.id,
                    seq: m.seq,
                })
                .collect()
        }
        Step::RetitleMain => {
            let s = ctx.main.expect("main session");
            let title = main_title(2);
            let updated = e.update_session_title(s, &title)?;
            assert_eq!(e.session(s).as_ref(), Some(&updated));
            assert_eq!(updated.title, title);
            vec![SideEffect::SessionUpdated { session_id: s }]
        }
        Step::SetRuntimeStatus => {
            let s = ctx.main.expect("main session");
            let status = RuntimeStatus {
                status: RuntimeState::Error,
                error_message: Some(text("error", 10 * 1024)),
            };
            let seq = e.update_runtime_status(s, status.clone())?;
            let envelope = e.runtime_status(s).expect("runtime status in the views");
            assert_eq!(envelope.coding_session, status);
            assert_eq!(seq, e.effect_log().head()?);
            vec![SideEffect::RuntimeStatusUpdated { envelope }]
        }
        Step::ReportAgentStatus => {
            let s = ctx.main.expect("main session");
            let status = text("agent-status", 8 * 1024);
            let seq = e.report_agent_status(s, rig.agent, &status)?;
            assert_eq!(seq, e.effect_log().head()?);
            vec![SideEffect::AgentStatusChanged {
                session_id: s,
                agent_id: rig.agent,
                status,
            }]
        }
        Step::CloseSession => {
            let s = ctx.to_close.expect("session to close");
            let closed = e.close_session(s)?;
            assert_eq!(closed.status, SessionStatus::Closed);
            assert!(closed.closed_at_ms.is_some());
            assert_eq!(e.session(s).as_ref(), Some(&closed));
            vec![SideEffect::SessionClosed { session_id: s }]
        }
        Step::CreateSmallRepository => {
            let r = e.create_repository("small", None)?;
            assert_eq!(e.repository(r.id).as_ref(), Some(&r));
            ctx.small_repo = Some(r.id);
            vec![SideEffect::RepositoryCreated {
                repository_id: r.id,
            }]
        }
        Step::DeleteSmallSession | Step::DeleteMainSession => {
            let slot = if step == Step::DeleteSmallSession {
                &mut ctx.small
            } else {
                &mut ctx.main
            };
            let s = slot.expect("session to delete");
            e.delete_session(s)?;
            assert!(e.session(s).is_none());
            assert!(e.runtime_status(s).is_none());
            assert!(e.transcript(s).is_err());
            *slot = None;
            vec![SideEffect::SessionDeleted { session_id: s }]
        }
        Step::DeleteSmallRepository | Step::DeleteMainRepository => {
            let slot = if step == Step::DeleteSmallRepository {
                &mut ctx.small_repo
            } else {
                &mut ctx.main_repo
            };
            let r = slot.expect("repository to delete");
            e.delete_repository(r)?;
            assert!(e.repository(r).is_none());
            assert!(e.sessions().iter().all(|s| s.repository_id != r));
            *slot = None;
            if step == Step::DeleteMainRepository {
                ctx.to_close = None;
            }
            vec![SideEffect::RepositoryDeleted { repository_id: r }]
        }
    };
    Ok(effects)
}

/// Subscribes to every session, consuming the `Closed` a closed session's feed starts with.
fn subscribe_all(engine: &Engine) -> Vec<Subscription> {
    engine
        .sessions()
        .iter()
        .map(|s| {
            let mut sub = engine.subscribe(s.id).expect("subscribe");
            if !s.is_active() {
                assert_eq!(sub.try_recv(), Some(LiveEvent::Closed));
            }
            sub
        })
        .collect()
}

/// After a successful step: exactly the expected effects were emitted, in the log and the sink,
/// and the views agree with the store.
fn check_applied(
    step: Step,
    rig: &Rig,
    expected: &[SideEffect],
    sink_before: usize,
    head_before: EffectSeq,
    before: &Dump,
) {
    let emitted: Vec<EffectRecord> = rig.h.sink.effects()[sink_before..].to_vec();
    let got: Vec<&SideEffect> = emitted.iter().map(|r| &r.effect).collect();
    assert!(
        got == expected.iter().collect::<Vec<_>>(),
        "{step:?}: emitted {:?}, expected {:?}",
        got.iter().map(|e| brief(e)).collect::<Vec<_>>(),
        expected.iter().map(brief).collect::<Vec<_>>()
    );
    assert!(
        emitted.iter().all(|r| r.seq > head_before),
        "{step:?}: effect seqs must follow the previous head {head_before}"
    );
    let logged = rig
        .h
        .engine
        .effect_log()
        .read_after(head_before, 10_000)
        .expect("read the effect log");
    assert!(
        logged == emitted,
        "{step:?}: the log holds {:?}, the sink heard {:?}",
        logged
            .iter()
            .map(|r| (r.seq, brief(&r.effect)))
            .collect::<Vec<_>>(),
        emitted
            .iter()
            .map(|r| (r.seq, brief(&r.effect)))
            .collect::<Vec<_>>()
    );
    let after = dump(&rig.h.engine);
    // An agent status lives only in the effect log; every other step changes the views.
    if step == Step::ReportAgentStatus {
        assert_eq!(
            &after, before,
            "{step:?}: an agent status changed the views"
        );
    } else {
        assert_ne!(&after, before, "{step:?}: the views did not change");
    }
    assert_eq!(
        after,
        store_dump(&*rig.h.db.arc()),
        "{step:?}: views and store disagree"
    );
}

#[test]
fn disk_full_fails_cleanly_and_retries() {
    let rig = Rig::new();
    let mut ctx = Ctx::default();
    let store = rig.h.db.arc();

    for &step in STEPS {
        rig.fill();
        let cap = store.page_count().expect("page_count");
        store.set_page_limit(Some(cap)).expect("cap");

        let before = dump(&rig.h.engine);
        assert_eq!(
            before,
            store_dump(&*store),
            "{step:?}: views and store disagree"
        );
        let sink_before = rig.h.sink.len();
        let head_before = rig.h.engine.effect_log().head().expect("head");
        let mut subs = subscribe_all(&rig.h.engine);

        match step.under_cap() {
            UnderCap::DiskFull => {
                let err = match apply(step, &rig, &mut ctx) {
                    Ok(effects) => panic!(
                        "{step:?} succeeded at the page cap ({cap} pages) and emitted {effects:?}"
                    ),
                    Err(err) => err,
                };
                assert!(
                    matches!(err, EngineError::Store(StoreError::DiskFull)),
                    "{step:?}: expected DiskFull, got {err:?}"
                );
                assert!(err.is_transient(), "{step:?}: DiskFull must be transient");
                assert_eq!(
                    dump(&rig.h.engine),
                    before,
                    "{step:?}: a failed write changed the views"
                );
                assert_eq!(
                    store_dump(&*store),
                    before,
                    "{step:?}: a failed write changed the store"
                );
                assert_eq!(
                    rig.h.sink.len(),
                    sink_before,
                    "{step:?}: a failed write emitted {:?}",
                    &rig.h.sink.effects()[sink_before..]
                );
                assert_eq!(
                    rig.h.engine.effect_log().head().expect("head"),
                    head_before,
                    "{step:?}: a failed write moved the effect log head"
                );
                for sub in &mut subs {
                    assert_eq!(
                        sub.try_recv(),
                        None,
                        "{step:?}: a subscriber of {} saw a failed write",
                        sub.session_id()
                    );
                }
                assert_eq!(store.page_count().expect("page_count"), cap);

                store.set_page_limit(None).expect("lift the cap");
                let expected = apply(step, &rig, &mut ctx).unwrap_or_else(|e| {
                    panic!("{step:?}: retry with space available failed: {e:?}")
                });
                check_applied(step, &rig, &expected, sink_before, head_before, &before);
                println!("{step:?}: DiskFull at {cap} pages, nothing changed; retry ok");
            }
            UnderCap::Succeeds => {
                let expected = apply(step, &rig, &mut ctx).unwrap_or_else(|e| {
                    panic!("{step:?} frees pages and must succeed under the cap: {e:?}")
                });
                assert!(store.page_count().expect("page_count") <= cap);
                store.set_page_limit(None).expect("lift the cap");
                check_applied(step, &rig, &expected, sink_before, head_before, &before);
                println!("{step:?}: freed pages, succeeded within the {cap}-page cap");
            }
        }
    }
    assert!(ctx.main.is_none() && ctx.main_repo.is_none() && ctx.small_repo.is_none());

    // A restarted process sees exactly the last in-memory state, on a healthy file.
    let last = dump(&rig.h.engine);
    let (engine, sink) = rig.h.reopen();
    let reopened = rig.h.db.reopen();
    assert_eq!(reopened.integrity_check().expect("integrity_check"), "ok");
    assert_eq!(dump(&engine), last);
    assert!(sink.is_empty(), "recovery emitted {:?}", sink.effects());
}
