//! `cargo bench --bench engine`: the session engine against the physical floor of the same
//! raw parts (ARCHITECTURE.md §8).
//!
//! Every baseline is plain rusqlite on a database with the **same schema** (created by opening
//! a [`SqliteStore`], which runs the embedded migrations) and the **same PRAGMAs** (WAL,
//! `foreign_keys=ON`, `busy_timeout`, the same `synchronous`), doing only what the engine's
//! commit durably needs: claim the seq on the session row, insert the message, insert its
//! effect record with the byte-identical JSON payload — in one `BEGIN IMMEDIATE` transaction
//! with cached prepared statements. Writing rows give each side its own fresh database file;
//! read rows share one file so both sides see the same page layout.
//!
//! Subject and baseline run in two worker processes driven round by round from the parent (see
//! `support`): in one process they share SQLite's page-cache LRU and disturb each other.
//!
//! Rows (goal = target `subject / baseline`):
//!
//! | row | subject | baseline | goal |
//! |---|---|---|---|
//! | `append_full` | `append_message`, `synchronous=FULL` | raw 1-message txn, FULL | 1.1 |
//! | `append_normal` | `append_message`, `synchronous=NORMAL` | raw 1-message txn, NORMAL | 1.3 |
//! | `append_batch_50` / `_1000` | `append_messages` (50 / 1000) | raw txn of 50 / 1000 | 1.4 |
//! | `recovery_100k` / `_1m` | `SqliteStore::open` + `Engine::builder(..).open()` | raw full scan into owned rows | 1.5 |
//! | `read_transcript_10k` | `engine.transcript(session)` | raw `WHERE session_id = ? ORDER BY seq` | 0.1 |
//! | `append_p99_stalled_consumer` | p99 `append_message` with a never-read subscriber and a never-acking consumer | p99 with neither | 1.1 |
//!
//! `TANDEM_BENCH_QUICK=1` shrinks every N (recovery uses 10k / 100k messages under the same row
//! names; the JSON records the real `n`). `TANDEM_BENCH_ONLY=<substring>[,..]` runs some rows.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use tandem::app::{Engine, LiveEvent};
use tandem::domain::{ConsumerName, MessageId, NewMessage, Role, Seq, SessionId, SideEffect};
use uuid::Uuid;

use support::{
    interleaved, median, percentile, raw_connection, serve, time_per_op, Row, Side, Suite, Unit,
    Worker, WorkerRole,
};

/// Message content: ~200 bytes of prose, the same on both sides.
const CONTENT: &str = "The build failed in the linker step: undefined reference to \
`sqlite3_wal_checkpoint_v2`. I rebuilt with the bundled feature, cleared target/, and the \
error is gone; next I will rerun the integration suite.";

/// Sessions the recovery corpora are spread over.
const CORPUS_SESSIONS: usize = 100;

const UPDATE_SESSION: &str = "UPDATE sessions SET last_seq = ?2 \
     WHERE id = ?1 AND status = 'active' AND last_seq = ?2 - 1";
const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, session_id, seq, role, content, created_at_ms, origin) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const INSERT_EFFECT: &str =
    "INSERT INTO effects (kind, payload, committed_at_ms) VALUES (?1, ?2, ?3)";
const SELECT_ALL: &str =
    "SELECT id, session_id, seq, role, content, created_at_ms, origin FROM messages";
const SELECT_SESSION: &str = "SELECT id, session_id, seq, role, content, created_at_ms, origin \
     FROM messages WHERE session_id = ?1 ORDER BY seq";

/// Sizes of one run (the parent and its workers derive the same values).
struct Params {
    full_ops: usize,
    full_rounds: usize,
    normal_ops: usize,
    normal_rounds: usize,
    batch_messages: usize,
    batch_rounds: usize,
    recovery_small: usize,
    recovery_small_rounds: usize,
    recovery_large: usize,
    recovery_large_rounds: usize,
    transcript_len: usize,
    transcript_rounds: usize,
    transcript_subject_reps: usize,
    transcript_baseline_reps: usize,
    p99_calls_per_round: usize,
    p99_rounds: usize,
    p99_warmup: usize,
}

impl Params {
    fn get() -> Self {
        if support::quick() {
            Self::quick()
        } else {
            Self::full()
        }
    }

    fn full() -> Self {
        Self {
            full_ops: 5_000,
            full_rounds: 50,
            normal_ops: 30_000,
            normal_rounds: 30,
            batch_messages: 100_000,
            batch_rounds: 20,
            recovery_small: 100_000,
            recovery_small_rounds: 15,
            recovery_large: 1_000_000,
            recovery_large_rounds: 7,
            transcript_len: 10_000,
            transcript_rounds: 30,
            transcript_subject_reps: 200,
            transcript_baseline_reps: 5,
            p99_calls_per_round: 1_000,
            p99_rounds: 60,
            p99_warmup: 3_000,
        }
    }

    fn quick() -> Self {
        Self {
            full_ops: 150,
            full_rounds: 5,
            normal_ops: 2_000,
            normal_rounds: 10,
            batch_messages: 10_000,
            batch_rounds: 10,
            recovery_small: 10_000,
            recovery_small_rounds: 5,
            recovery_large: 100_000,
            recovery_large_rounds: 3,
            transcript_len: 10_000,
            transcript_rounds: 10,
            transcript_subject_reps: 50,
            transcript_baseline_reps: 2,
            p99_calls_per_round: 300,
            p99_rounds: 10,
            p99_warmup: 1_500,
        }
    }
}

fn main() {
    if let Some(role) = support::worker_role() {
        worker(&role);
        return;
    }
    let mut suite = Suite::new("engine");
    let p = Params::get();
    check_effect_payload_shape();

    if suite.wants("append_full") {
        append_single(&mut suite, "append_full", p.full_ops, p.full_rounds, 1.1);
    }
    if suite.wants("append_normal") {
        append_single(
            &mut suite,
            "append_normal",
            p.normal_ops,
            p.normal_rounds,
            1.3,
        );
    }
    for size in [50, 1000] {
        let name = format!("append_batch_{size}");
        if suite.wants(&name) {
            append_batch(&mut suite, &name, &p);
        }
    }
    if suite.wants("recovery_100k") {
        recovery(
            &mut suite,
            "recovery_100k",
            p.recovery_small,
            p.recovery_small_rounds,
        );
    }
    if suite.wants("recovery_1m") {
        recovery(
            &mut suite,
            "recovery_1m",
            p.recovery_large,
            p.recovery_large_rounds,
        );
    }
    if suite.wants("read_transcript_10k") {
        read_transcript(&mut suite, &p);
    }
    if suite.wants("append_p99_stalled_consumer") {
        append_p99_stalled(&mut suite, &p);
    }
    suite.finish();
}

/// Entry point of a worker process: builds one side's fixture and serves its rounds.
fn worker(role: &WorkerRole) {
    let p = Params::get();
    match role.row.as_str() {
        "append_full" => single_worker(role, Synchronous::Full, p.full_ops, p.full_rounds),
        "append_normal" => single_worker(role, Synchronous::Normal, p.normal_ops, p.normal_rounds),
        "append_batch_50" => batch_worker(role, 50, &p),
        "append_batch_1000" => batch_worker(role, 1000, &p),
        "recovery_100k" | "recovery_1m" => recovery_worker(role),
        "read_transcript_10k" => transcript_worker(role, &p),
        "append_p99_stalled_consumer" => p99_worker(role, &p),
        other => panic!("no worker for row {other:?}"),
    }
}

// ----- fixtures -----------------------------------------------------------------------------

fn options(sync: Synchronous) -> SqliteOptions {
    SqliteOptions::default().synchronous(sync)
}

fn sync_name(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

/// A fresh temp dir (on the same disk as everything else under `/tmp`).
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tandem-bench-")
        .tempdir()
        .expect("temp dir")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Opens the store and the engine over `path`.
fn open_engine(path: &Path, sync: Synchronous) -> Engine {
    let store = SqliteStore::open(path, options(sync)).expect("open store");
    Engine::builder(Arc::new(store))
        .open()
        .expect("open engine")
}

/// A database at `path` with the real schema, one repository and `sessions` active sessions,
/// created through the engine so the rows are exactly what tandem writes. Returns the engine.
fn engine_with_sessions(
    path: &Path,
    sync: Synchronous,
    sessions: usize,
) -> (Engine, Vec<SessionId>) {
    let engine = open_engine(path, sync);
    let repo = engine
        .create_repository("bench", Some("git@example.com:bench/bench.git"))
        .expect("create repository");
    let ids = (0..sessions)
        .map(|i| {
            engine
                .create_session(repo.id, &format!("bench session {i}"))
                .expect("create session")
                .id
        })
        .collect();
    (engine, ids)
}

/// The effect payload exactly as the engine stores it (`serde_json` of
/// `SideEffect::MessageAppended`), written with one `format!`.
fn effect_payload(session: &str, message: &str, seq: i64) -> String {
    format!(
        r#"{{"type":"message_appended","session_id":"{session}","message_id":"{message}","seq":{seq}}}"#
    )
}

/// Guards the baselines' honesty: the raw payload must be byte-identical to the engine's.
fn check_effect_payload_shape() {
    let session = SessionId::from_uuid(Uuid::now_v7()).expect("session id");
    let message = MessageId::from_uuid(Uuid::now_v7()).expect("message id");
    let engine = serde_json::to_string(&SideEffect::MessageAppended {
        session_id: session,
        message_id: message,
        seq: Seq::new(1234),
    })
    .expect("serialize effect");
    let raw = effect_payload(&session.to_string(), &message.to_string(), 1234);
    assert_eq!(
        raw, engine,
        "baseline effect payload differs from the engine's"
    );
}

/// A message row as a plain struct with owned strings (what a raw reader materialises).
#[allow(dead_code)] // fields exist to be materialised, not read
#[derive(Debug)]
struct RawMessage {
    id: String,
    session_id: String,
    seq: i64,
    role: String,
    content: String,
    created_at_ms: i64,
    origin: String,
}

fn raw_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok(RawMessage {
        id: r.get(0)?,
        session_id: r.get(1)?,
        seq: r.get(2)?,
        role: r.get(3)?,
        content: r.get(4)?,
        created_at_ms: r.get(5)?,
        origin: r.get(6)?,
    })
}

/// The baseline writer: one session, appended to with the three statements the engine's
/// commit needs.
struct RawWriter {
    conn: Connection,
    session: String,
    origin: String,
    last_seq: i64,
}

impl RawWriter {
    /// A fresh database at `path` with the real schema and one active session (created through
    /// the engine, which is then closed), reopened as a raw connection.
    fn create(path: &Path, sync: Synchronous) -> Self {
        let (engine, sessions) = engine_with_sessions(path, sync, 1);
        let origin = engine.device_id().to_string();
        drop(engine);
        Self {
            conn: raw_connection(path, sync),
            session: sessions[0].to_string(),
            origin,
            last_seq: 0,
        }
    }

    /// Appends `count` messages in one transaction, each with its seq claim and effect record.
    fn append(&mut self, count: usize) {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        let now = now_ms();
        for _ in 0..count {
            self.last_seq += 1;
            let seq = self.last_seq;
            let mut buf = Uuid::encode_buffer();
            let id: &str = Uuid::now_v7().hyphenated().encode_lower(&mut buf);
            let claimed = tx
                .prepare_cached(UPDATE_SESSION)
                .and_then(|mut s| s.execute(params![self.session, seq]))
                .expect("claim seq");
            assert_eq!(claimed, 1, "seq claim refused");
            tx.prepare_cached(INSERT_MESSAGE)
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        self.session,
                        seq,
                        "user",
                        CONTENT,
                        now,
                        self.origin
                    ])
                })
                .expect("insert message");
            let payload = effect_payload(&self.session, id, seq);
            tx.prepare_cached(INSERT_EFFECT)
                .and_then(|mut s| s.execute(params!["message_appended", payload, now]))
                .expect("insert effect");
            black_box(tx.last_insert_rowid());
        }
        tx.commit().expect("commit");
    }
}

fn new_messages(count: usize) -> Vec<NewMessage> {
    (0..count)
        .map(|_| NewMessage::new(Role::User, CONTENT))
        .collect()
}

/// Messages and effects in a database file (a sanity check that both sides did the same work).
fn counts(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).expect("open for counts");
    let m = conn
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .expect("count messages");
    let e = conn
        .query_row(
            "SELECT COUNT(*) FROM effects WHERE kind = 'message_appended'",
            [],
            |r| r.get(0),
        )
        .expect("count effects");
    (m, e)
}

/// `messages=<n> effects=<n>` of a database file: the parent compares both sides' reports.
fn counts_text(path: &Path) -> String {
    let (m, e) = counts(path);
    format!("messages={m} effects={e}")
}

// ----- append rows --------------------------------------------------------------------------

/// Round shape of a single-append row: appends per round and warm-up appends.
fn single_shape(ops: usize, rounds: usize) -> (usize, usize) {
    let per_round = (ops / rounds).max(1);
    (per_round, (per_round / 2).max(10))
}

/// `append_full` / `append_normal`: one message per transaction.
fn append_single(suite: &mut Suite, name: &str, ops: usize, rounds: usize, goal: f64) {
    let (per_round, _) = single_shape(ops, rounds);
    let sync = if name == "append_full" {
        Synchronous::Full
    } else {
        Synchronous::Normal
    };
    suite.progress(&format!(
        "{name}: {} single appends per side, {rounds} rounds",
        per_round * rounds
    ));
    let (mut s, mut b) = Worker::pair(name, "");
    let (subject, baseline) = interleaved(rounds, || s.sample(), || b.sample());
    let (done_s, done_b) = (s.finish(), b.finish());
    assert_eq!(done_s, done_b, "{name}: the sides did different work");
    suite.push(Row::new(
        name,
        subject,
        baseline,
        goal,
        Unit::Micros.label(),
        (per_round * rounds) as u64,
        format!(
            "synchronous={} WAL; per append; median of {rounds} rounds x {per_round}",
            sync_name(sync)
        ),
    ));
}

fn single_worker(role: &WorkerRole, sync: Synchronous, ops: usize, rounds: usize) {
    let (per_round, warmup) = single_shape(ops, rounds);
    let dir = temp_dir();
    let path = dir.path().join("tandem.db");
    match role.side {
        Side::Subject => {
            let (engine, sessions) = engine_with_sessions(&path, sync, 1);
            let session = sessions[0];
            let append = || {
                black_box(
                    engine
                        .append_message(session, NewMessage::new(Role::User, CONTENT))
                        .expect("append"),
                );
            };
            (0..warmup).for_each(|_| append());
            serve(
                || vec![time_per_op(Unit::Micros, per_round, append)],
                || counts_text(&path),
            );
        }
        Side::Baseline => {
            let mut raw = RawWriter::create(&path, sync);
            (0..warmup).for_each(|_| raw.append(1));
            serve(
                || vec![time_per_op(Unit::Micros, per_round, || raw.append(1))],
                || counts_text(&path),
            );
        }
    }
}

/// Batch size of an `append_batch_<size>` row.
fn batch_size(name: &str) -> usize {
    name.trim_start_matches("append_batch_")
        .parse()
        .expect("batch size in the row name")
}

/// Round shape of a batch row: batches per round and warm-up batches.
fn batch_shape(size: usize, p: &Params) -> (usize, usize) {
    let calls = (p.batch_messages / size).max(p.batch_rounds);
    let per_round = (calls / p.batch_rounds).max(1);
    (per_round, per_round.div_ceil(2))
}

/// `append_batch_<size>`: `append_messages` with `size` messages per call vs one raw
/// transaction per batch.
fn append_batch(suite: &mut Suite, name: &str, p: &Params) {
    let size = batch_size(name);
    let rounds = p.batch_rounds;
    let (per_round, _) = batch_shape(size, p);
    let n = per_round * rounds * size;
    suite.progress(&format!(
        "{name}: {n} messages per side in batches of {size}, {rounds} rounds"
    ));
    let (mut s, mut b) = Worker::pair(name, "");
    let (subject, baseline) = interleaved(rounds, || s.sample(), || b.sample());
    let (done_s, done_b) = (s.finish(), b.finish());
    assert_eq!(done_s, done_b, "{name}: the sides did different work");
    suite.push(Row::new(
        name,
        subject,
        baseline,
        1.4,
        Unit::Micros.label(),
        n as u64,
        format!(
            "synchronous=NORMAL WAL; per message, {size} per txn; median of {rounds} rounds x {per_round} batches"
        ),
    ));
}

fn batch_worker(role: &WorkerRole, size: usize, p: &Params) {
    let (per_round, warmup) = batch_shape(size, p);
    let sync = Synchronous::Normal;
    let dir = temp_dir();
    let path = dir.path().join("tandem.db");
    match role.side {
        Side::Subject => {
            let (engine, sessions) = engine_with_sessions(&path, sync, 1);
            let session = sessions[0];
            let append = || {
                black_box(
                    engine
                        .append_messages(session, new_messages(size))
                        .expect("append batch"),
                );
            };
            (0..warmup).for_each(|_| append());
            serve(
                || vec![time_per_op(Unit::Micros, per_round, append) / size as f64],
                || counts_text(&path),
            );
        }
        Side::Baseline => {
            let mut raw = RawWriter::create(&path, sync);
            (0..warmup).for_each(|_| raw.append(size));
            serve(
                || vec![time_per_op(Unit::Micros, per_round, || raw.append(size)) / size as f64],
                || counts_text(&path),
            );
        }
    }
}

// ----- recovery -----------------------------------------------------------------------------
// ----- recovery -----------------------------------------------------------------------------

/// Builds a recovery corpus: `messages` messages round-robin over [`CORPUS_SESSIONS`]
/// sessions, each with its effect record, written raw in large transactions (setup, untimed).
fn build_corpus(suite: &Suite, path: &Path, messages: usize) {
    let sync = Synchronous::Normal;
    let (engine, sessions) = engine_with_sessions(path, sync, CORPUS_SESSIONS);
    let origin = engine.device_id().to_string();
    drop(engine);
    let sessions: Vec<String> = sessions.iter().map(ToString::to_string).collect();
    let mut last = vec![0_i64; sessions.len()];
    let mut conn = raw_connection(path, sync);
    let started = Instant::now();
    let chunk = 50_000;
    let mut done = 0;
    let base_ms = now_ms() - messages as i64;
    while done < messages {
        let end = (done + chunk).min(messages);
        let tx = conn.transaction().expect("begin corpus chunk");
        {
            let mut msg = tx.prepare_cached(INSERT_MESSAGE).expect("prepare");
            let mut eff = tx.prepare_cached(INSERT_EFFECT).expect("prepare");
            for i in done..end {
                let s = i % sessions.len();
                last[s] += 1;
                let mut buf = Uuid::encode_buffer();
                let id: &str = Uuid::now_v7().hyphenated().encode_lower(&mut buf);
                let at = base_ms + i as i64;
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                msg.execute(params![id, sessions[s], last[s], role, CONTENT, at, origin])
                    .expect("insert corpus message");
                eff.execute(params![
                    "message_appended",
                    effect_payload(&sessions[s], id, last[s]),
                    at
                ])
                .expect("insert corpus effect");
            }
        }
        tx.commit().expect("commit corpus chunk");
        done = end;
        if done % (messages / 5).max(chunk) == 0 || done == messages {
            suite.progress(&format!(
                "  corpus: {done}/{messages} messages ({:.1}s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    {
        let tx = conn.transaction().expect("begin last_seq");
        for (s, id) in sessions.iter().enumerate() {
            tx.execute(
                "UPDATE sessions SET last_seq = ?2 WHERE id = ?1",
                params![id, last[s]],
            )
            .expect("set last_seq");
        }
        tx.commit().expect("commit last_seq");
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// `recovery_*`: open store + engine (views rebuilt) vs a raw full scan into owned rows, both on
/// the same corpus file, built once here in the parent.
fn recovery(suite: &mut Suite, name: &str, messages: usize, rounds: usize) {
    suite.progress(&format!(
        "{name}: building a corpus of {messages} messages over {CORPUS_SESSIONS} sessions"
    ));
    let dir = temp_dir();
    let path = dir.path().join("corpus.db");
    build_corpus(suite, &path, messages);
    let db_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    suite.progress(&format!(
        "{name}: corpus is {db_mb:.0} MB; timing {rounds} rounds"
    ));
    let arg = path.to_str().expect("UTF-8 temp path");
    let (mut s, mut b) = Worker::pair(name, arg);
    let (subject, baseline) = interleaved(rounds, || s.sample(), || b.sample());
    let expected = format!("messages={messages}");
    assert_eq!(
        s.finish(),
        expected,
        "{name}: the engine did not recover every message"
    );
    assert_eq!(
        b.finish(),
        expected,
        "{name}: the scan did not read every message"
    );
    suite.push(Row::new(
        name,
        subject,
        baseline,
        1.5,
        Unit::Millis.label(),
        messages as u64,
        format!(
            "n = messages over {CORPUS_SESSIONS} sessions ({db_mb:.0} MB file, warm OS cache); per open; median of {rounds}"
        ),
    ));
}

/// Opens the store and the engine (views rebuilt); the loaded engine is dropped untimed.
fn recovery_worker(role: &WorkerRole) {
    let path = Path::new(&role.arg);
    let sync = Synchronous::Full;
    match role.side {
        Side::Subject => {
            let open = || -> (Duration, Engine) {
                let start = Instant::now();
                let engine = open_engine(path, sync);
                (start.elapsed(), engine)
            };
            // Warm-up, and the count the parent checks.
            let (_, engine) = open();
            let loaded: usize = engine
                .sessions()
                .iter()
                .map(|s| engine.transcript(s.id).expect("transcript").len())
                .sum();
            drop(engine);
            serve(
                || {
                    let (t, engine) = open();
                    drop(black_box(engine));
                    vec![Unit::Millis.of(t)]
                },
                || format!("messages={loaded}"),
            );
        }
        Side::Baseline => {
            let scan = || -> (Duration, Vec<RawMessage>) {
                let start = Instant::now();
                let conn = raw_connection(path, sync);
                let rows: Vec<RawMessage> = {
                    let mut stmt = conn.prepare(SELECT_ALL).expect("prepare scan");
                    stmt.query_map([], raw_message)
                        .expect("scan")
                        .collect::<Result<_, _>>()
                        .expect("decode")
                };
                drop(conn);
                (start.elapsed(), rows)
            };
            let (_, rows) = scan();
            let loaded = rows.len();
            drop(rows);
            serve(
                || {
                    let (t, rows) = scan();
                    drop(black_box(rows));
                    vec![Unit::Millis.of(t)]
                },
                || format!("messages={loaded}"),
            );
        }
    }
}

// ----- reads --------------------------------------------------------------------------------

/// `read_transcript_10k`: the views vs an indexed raw read of the same session.
fn read_transcript(suite: &mut Suite, p: &Params) {
    let name = "read_transcript_10k";
    let len = p.transcript_len;
    suite.progress(&format!("{name}: one session of {len} messages"));
    let dir = temp_dir();
    let path = dir.path().join("transcript.db");
    {
        let (engine, sessions) = engine_with_sessions(&path, Synchronous::Normal, 1);
        let mut left = len;
        while left > 0 {
            let k = left.min(1000);
            engine
                .append_messages(sessions[0], new_messages(k))
                .expect("fill transcript");
            left -= k;
        }
    }
    let arg = path.to_str().expect("UTF-8 temp path");
    let (mut s, mut b) = Worker::pair(name, arg);
    let (subject, baseline) = interleaved(p.transcript_rounds, || s.sample(), || b.sample());
    let expected = format!("len={len}");
    assert_eq!(s.finish(), expected);
    assert_eq!(b.finish(), expected);
    suite.push(Row::new(
        name,
        subject,
        baseline,
        0.1,
        Unit::Micros.label(),
        len as u64,
        format!(
            "n = session length; per read incl. dropping the result; median of {} rounds",
            p.transcript_rounds
        ),
    ));
}

fn transcript_worker(role: &WorkerRole, p: &Params) {
    let path = Path::new(&role.arg);
    let sync = Synchronous::Normal;
    match role.side {
        Side::Subject => {
            // Recovered views, as after a restart (snapshot rather than delta).
            let engine = open_engine(path, sync);
            let session = engine.sessions()[0].id;
            let len = engine.transcript(session).expect("transcript").len();
            serve(
                || {
                    vec![time_per_op(Unit::Micros, p.transcript_subject_reps, || {
                        drop(black_box(engine.transcript(session).expect("transcript")));
                    })]
                },
                || format!("len={len}"),
            );
        }
        Side::Baseline => {
            let conn = raw_connection(path, sync);
            let session: String = conn
                .query_row("SELECT id FROM sessions", [], |r| r.get(0))
                .expect("the session");
            let read = || -> Vec<RawMessage> {
                let mut stmt = conn.prepare_cached(SELECT_SESSION).expect("prepare");
                stmt.query_map([&session], raw_message)
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("decode")
            };
            let len = read().len();
            serve(
                || {
                    vec![time_per_op(
                        Unit::Micros,
                        p.transcript_baseline_reps,
                        || {
                            drop(black_box(read()));
                        },
                    )]
                },
                || format!("len={len}"),
            );
        }
    }
}

// ----- tail latency under a stalled consumer ------------------------------------------------

/// `append_p99_stalled_consumer`: p99 single-append latency with a live subscriber that never
/// reads and an effect-log consumer that keeps re-reading without ever acking, vs an identical
/// engine with neither. Latencies of every call are pooled across rounds.
fn append_p99_stalled(suite: &mut Suite, p: &Params) {
    let name = "append_p99_stalled_consumer";
    let rounds = p.p99_rounds;
    suite.progress(&format!(
        "{name}: {rounds} rounds x {} appends per side",
        p.p99_calls_per_round
    ));
    let (mut s, mut b) = Worker::pair(name, "");
    let mut s_lat = Vec::with_capacity(rounds * p.p99_calls_per_round);
    let mut b_lat = Vec::with_capacity(rounds * p.p99_calls_per_round);
    let (round_s, round_b) = interleaved(
        rounds,
        || {
            let mut lat = s.round();
            s_lat.extend_from_slice(&lat);
            percentile(&mut lat, 99.0)
        },
        || {
            let mut lat = b.round();
            b_lat.extend_from_slice(&lat);
            percentile(&mut lat, 99.0)
        },
    );
    let stalled = s.finish();
    b.finish();
    let n = s_lat.len();
    let subject = percentile(&mut s_lat, 99.0);
    let baseline = percentile(&mut b_lat, 99.0);
    let (s_med, b_med) = (median(&mut s_lat), median(&mut b_lat));
    suite.push(Row::new(
        name,
        subject,
        baseline,
        1.1,
        Unit::Micros.label(),
        n as u64,
        format!(
            "synchronous=NORMAL WAL; p99 of all calls over {rounds} rounds (median round p99 {round_s:.1} vs {round_b:.1}; p50 {s_med:.1} vs {b_med:.1}); stalled = subscriber never read + consumer re-reading every 5 ms, never acking ({stalled})"
        ),
    ));
}

fn p99_worker(role: &WorkerRole, p: &Params) {
    let sync = Synchronous::Normal;
    let dir = temp_dir();
    let (engine, sessions) = engine_with_sessions(&dir.path().join("tandem.db"), sync, 1);
    let session = sessions[0];
    let timed = |calls: usize| -> Vec<f64> {
        (0..calls)
            .map(|_| {
                let msg = NewMessage::new(Role::User, CONTENT);
                let start = Instant::now();
                let m = engine.append_message(session, msg).expect("append");
                let t = Unit::Micros.of(start.elapsed());
                drop(black_box(m));
                t
            })
            .collect()
    };
    match role.side {
        Side::Baseline => {
            timed(p.p99_warmup);
            serve(|| timed(p.p99_calls_per_round), String::new);
        }
        Side::Subject => {
            let mut subscription = engine.subscribe(session).expect("subscribe");
            let consumer = engine
                .effect_log()
                .consumer(ConsumerName::parse("stalled-bench").expect("consumer name"));
            let active = AtomicBool::new(false);
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                // The stuck consumer: like a cold path whose uploads keep failing, it re-reads
                // the batch after its cursor every 5 ms and never acknowledges anything. It is
                // parked while the other process runs the baseline's rounds.
                let poller = scope.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        if active.load(Ordering::SeqCst) {
                            black_box(consumer.read(50).expect("consumer read"));
                            std::thread::sleep(Duration::from_millis(5));
                        } else {
                            std::thread::park();
                        }
                    }
                });
                let run = |calls: usize| {
                    active.store(true, Ordering::SeqCst);
                    poller.thread().unpark();
                    let lat = timed(calls);
                    active.store(false, Ordering::SeqCst);
                    lat
                };
                // Warm-up runs well past the live ring's capacity: the subscriber already lags.
                run(p.p99_warmup);
                serve(
                    || run(p.p99_calls_per_round),
                    || {
                        let lagged =
                            matches!(subscription.try_recv(), Some(LiveEvent::Lagged { .. }));
                        assert!(lagged, "the never-read subscriber should have lagged");
                        let unacked = consumer.lag().expect("consumer lag");
                        assert!(unacked > 0, "the consumer should be behind");
                        format!("{unacked} effects unacked")
                    },
                );
                stop.store(true, Ordering::SeqCst);
                poller.thread().unpark();
            });
        }
    }
}
