//! Crash safety: every message the engine acknowledged survives a `SIGKILL` at any moment.
//!
//! Each cycle starts `tandem debug append-loop` on one shared database file, waits for the k-th
//! `ack` line (k random in 0..=300; 0 kills right after spawn), kills the process, drains the
//! lines it had already written, and then checks the database from the outside: integrity,
//! silent recovery, every acknowledged message present and identical, contiguous seqs, and a
//! one-to-one match between stored messages and `MessageAppended` effect records.
//!
//! `TANDEM_CRASH_CYCLES` (default 50) sets the number of cycles and `TANDEM_CRASH_SEED` the seed
//! (default: derived from the time). The seed is printed at the start and on every failure.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::child::{spawn_reader, spawn_stderr, ChildGuard, Line};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tandem::adapters::sink::RecordingSink;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::app::{Engine, LiveEvent};
use tandem::domain::{EffectSeq, MessageId, Seq, SessionId, SideEffect};
use tandem::ports::Store;

/// How long one cycle may wait for the next line before the test fails.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest k (acks before the kill).
const MAX_ACKS_PER_CYCLE: u32 = 300;

/// One acknowledged message, as printed by the crash writer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    session: SessionId,
    seq: Seq,
    id: MessageId,
    content: String,
    cycle: u64,
}

/// Prints the seed if the test panics anywhere, so any failure is reproducible.
struct SeedReporter {
    seed: u64,
}

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash_safety FAILED; reproduce with TANDEM_CRASH_SEED={}",
                self.seed
            );
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a u64")),
    )
}

fn parse_ack(line: &str, cycle: u64) -> Result<Ack, String> {
    let parts: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
    if parts.len() != 5 || parts[0] != "ack" {
        return Err(format!("malformed ack line {line:?}"));
    }
    let session = SessionId::parse(parts[1]).map_err(|e| format!("{e} in {line:?}"))?;
    let seq = parts[2]
        .parse::<u64>()
        .map(Seq::new)
        .map_err(|e| format!("{e} in {line:?}"))?;
    let id = MessageId::parse(parts[3]).map_err(|e| format!("{e} in {line:?}"))?;
    Ok(Ack {
        session,
        seq,
        id,
        content: parts[4].to_owned(),
        cycle,
    })
}

/// Totals of one verification.
struct Checked {
    messages: usize,
    effects: usize,
    sessions: usize,
}

/// Checks the database after a kill; `Err` describes the first broken property.
fn verify(db: &Path, acks: &HashMap<MessageId, Ack>) -> Result<Checked, String> {
    let store = Arc::new(
        SqliteStore::open(db, SqliteOptions::default()).map_err(|e| format!("reopen: {e}"))?,
    );
    let verdict = store
        .integrity_check()
        .map_err(|e| format!("integrity_check: {e}"))?;
    if verdict != "ok" {
        return Err(format!("integrity_check says {verdict:?}"));
    }

    // Recovery is silent: nothing emitted, nothing for a subscriber.
    let sink = Arc::new(RecordingSink::new());
    let engine = Engine::builder(store.clone())
        .sink(sink.clone())
        .open()
        .map_err(|e| format!("open engine: {e}"))?;
    if !sink.is_empty() {
        return Err(format!(
            "recovery emitted {} effect(s): {:?}",
            sink.len(),
            sink.effects()
        ));
    }
    let sessions = engine.sessions();
    for s in &sessions {
        let mut sub = engine
            .subscribe(s.id)
            .map_err(|e| format!("subscribe {}: {e}", s.id))?;
        if !s.is_active() {
            // A closed session's subscription always starts with Closed (documented), not an
            // event of the recovery.
            match sub.try_recv() {
                Some(LiveEvent::Closed) => {}
                other => return Err(format!("closed session {} subscription: {other:?}", s.id)),
            }
        }
        if let Some(ev) = sub.try_recv() {
            return Err(format!(
                "a subscriber of {} saw {ev:?} right after recovery",
                s.id
            ));
        }
    }
    if !sink.is_empty() {
        return Err("subscribing emitted effects".into());
    }

    // Every transcript is contiguous from 1 and matches the store.
    let mut transcripts = HashMap::new();
    // Every message the store holds, by id (read back with `messages_after`, not the views).
    let mut stored: HashMap<MessageId, (SessionId, Seq)> = HashMap::new();
    let mut total = 0usize;
    for s in &sessions {
        let t = engine
            .transcript(s.id)
            .map_err(|e| format!("transcript {}: {e}", s.id))?;
        for (i, m) in t.iter().enumerate() {
            if m.seq != Seq::new(i as u64 + 1) || m.session_id != s.id {
                return Err(format!(
                    "session {} transcript position {i} holds seq {} of session {}",
                    s.id, m.seq, m.session_id
                ));
            }
        }
        let in_store = store
            .messages_after(s.id, Seq::ZERO, usize::MAX)
            .map_err(|e| format!("messages_after {}: {e}", s.id))?;
        if in_store.len() != t.len() || in_store.iter().zip(&t).any(|(a, b)| a != &**b) {
            return Err(format!(
                "session {}: the engine's transcript ({} messages) differs from the store ({})",
                s.id,
                t.len(),
                in_store.len()
            ));
        }
        for m in &in_store {
            if stored.insert(m.id, (m.session_id, m.seq)).is_some() {
                return Err(format!("message id {} is stored twice", m.id));
            }
        }
        total += t.len();
        transcripts.insert(s.id, t);
    }

    // Every acknowledged message is there, identical.
    for ack in acks.values() {
        let t = transcripts.get(&ack.session).ok_or_else(|| {
            format!(
                "acked message {} (cycle {}): session {} is gone",
                ack.id, ack.cycle, ack.session
            )
        })?;
        let idx = usize::try_from(ack.seq.get()).unwrap_or(usize::MAX);
        let m = idx.checked_sub(1).and_then(|i| t.get(i)).ok_or_else(|| {
            format!(
                "acked message {} (cycle {}) at seq {} of {} is missing: the session has {} \
                     messages",
                ack.id,
                ack.cycle,
                ack.seq,
                ack.session,
                t.len()
            )
        })?;
        if m.id != ack.id || m.content != ack.content {
            return Err(format!(
                "acked message {} (cycle {}) at {}#{}: stored id {} / content equal: {}",
                ack.id,
                ack.cycle,
                ack.session,
                ack.seq,
                m.id,
                m.content == ack.content
            ));
        }
        let direct = store
            .message(ack.id)
            .map_err(|e| format!("store.message {}: {e}", ack.id))?
            .ok_or_else(|| {
                format!(
                    "acked message {} (cycle {}) not found by id",
                    ack.id, ack.cycle
                )
            })?;
        if direct.session_id != ack.session
            || direct.seq != ack.seq
            || direct.content != ack.content
        {
            return Err(format!(
                "acked message {} (cycle {}): store.message returns {}#{} (acked {}#{}), content \
                 equal: {}",
                ack.id,
                ack.cycle,
                direct.session_id,
                direct.seq,
                ack.session,
                ack.seq,
                direct.content == ack.content
            ));
        }
    }

    // The effect log and the messages match one to one.
    let effects = engine
        .effect_log()
        .read_after(EffectSeq::ZERO, usize::MAX)
        .map_err(|e| format!("read effect log: {e}"))?;
    let mut appended: HashMap<MessageId, usize> = HashMap::new();
    let mut previous = EffectSeq::ZERO;
    for r in &effects {
        if r.seq <= previous {
            return Err(format!(
                "effect seqs not increasing: {} after {previous}",
                r.seq
            ));
        }
        previous = r.seq;
        if let SideEffect::MessageAppended {
            session_id,
            message_id,
            seq,
        } = &r.effect
        {
            let (stored_session, stored_seq) = stored.get(message_id).ok_or_else(|| {
                format!(
                    "effect {} names message {message_id}, which is not stored",
                    r.seq
                )
            })?;
            if stored_session != session_id || stored_seq != seq {
                return Err(format!(
                    "effect {} says {message_id} is {session_id}#{seq}; the store has \
                     {stored_session}#{stored_seq}",
                    r.seq
                ));
            }
            *appended.entry(*message_id).or_default() += 1;
        }
    }
    for t in transcripts.values() {
        for m in t {
            match appended.get(&m.id) {
                Some(1) => {}
                n => {
                    return Err(format!(
                        "message {} ({}#{}) has {} MessageAppended effect(s)",
                        m.id,
                        m.session_id,
                        m.seq,
                        n.copied().unwrap_or(0)
                    ))
                }
            }
        }
    }
    if appended.len() != total {
        return Err(format!(
            "{} messages have MessageAppended effects but {total} are stored",
            appended.len()
        ));
    }
    Ok(Checked {
        messages: total,
        effects: effects.len(),
        sessions: sessions.len(),
    })
}

#[test]
fn crash_safety() {
    let cycles = env_u64("TANDEM_CRASH_CYCLES").unwrap_or(50);
    let seed = env_u64("TANDEM_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let _reporter = SeedReporter { seed };
    println!("crash_safety: TANDEM_CRASH_SEED={seed} TANDEM_CRASH_CYCLES={cycles}");
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acks: HashMap<MessageId, Ack> = HashMap::new();
    let mut partial_lines = 0u64;
    let mut last = None;

    for cycle in 0..cycles {
        let fail = |msg: String| -> ! {
            panic!("crash_safety (TANDEM_CRASH_SEED={seed}) cycle {cycle}: {msg}")
        };
        let cycle_started = Instant::now();
        let k = rng.gen_range(0..=MAX_ACKS_PER_CYCLE);
        let child_seed = seed.wrapping_add(cycle);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("debug")
            .arg("append-loop")
            .arg("--db")
            .arg(&db)
            .arg("--seed")
            .arg(child_seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(format!("spawn: {e}")));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut guard = ChildGuard(Some(child));
        let (rx, reader) = spawn_reader(stdout);
        let errors = spawn_stderr(stderr);

        let mut record = |line: Line, acks: &mut HashMap<MessageId, Ack>| match line {
            Line::Complete(l) => {
                let ack = parse_ack(&l, cycle).unwrap_or_else(|e| fail(e));
                if let Some(prev) = acks.insert(ack.id, ack.clone()) {
                    fail(format!(
                        "message {} acknowledged twice (cycles {} and {cycle})",
                        ack.id, prev.cycle
                    ));
                }
            }
            Line::Partial(p) => {
                partial_lines += 1;
                println!("cycle {cycle}: ignored a cut-off line of {} bytes", p.len());
            }
        };

        let before = acks.len();
        let child = guard.0.as_mut().expect("child");
        if k > 0 {
            let mut got = 0;
            while got < k {
                match rx.recv_timeout(RECV_TIMEOUT) {
                    Ok(line) => {
                        if matches!(line, Line::Complete(_)) {
                            got += 1;
                        }
                        record(line, &mut acks);
                    }
                    Err(RecvTimeoutError::Timeout) => fail(format!(
                        "no line within {RECV_TIMEOUT:?} after {got} of {k} acks"
                    )),
                    Err(RecvTimeoutError::Disconnected) => {
                        let status = child.wait();
                        let err = errors.join().unwrap_or_default();
                        fail(format!(
                            "the writer exited after {got} of {k} acks ({status:?}); stderr:\n{err}"
                        ))
                    }
                }
            }
        }
        // SIGKILL, right on the event.
        child.kill().unwrap_or_else(|e| fail(format!("kill: {e}")));
        let status = child.wait().unwrap_or_else(|e| fail(format!("wait: {e}")));
        guard.0 = None;
        // Lines written before the kill are acknowledged too.
        loop {
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(line) => record(line, &mut acks),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    fail("stdout stayed open after the writer was killed".into())
                }
            }
        }
        reader.join().expect("reader thread");
        let err = errors.join().unwrap_or_default();
        if !err.trim().is_empty() {
            println!("cycle {cycle}: writer stderr: {}", err.trim());
        }
        // The writer never stops on its own: it must have died of our SIGKILL, not of an error.
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(9) {
                fail(format!(
                    "the writer ended with {status}, not SIGKILL; stderr:\n{err}"
                ));
            }
        }

        let verify_started = Instant::now();
        let checked = verify(&db, &acks).unwrap_or_else(|e| fail(e));
        let verify_time = verify_started.elapsed();
        println!(
            "cycle {cycle}: k={k} acks+{} (total {}) {status}; db: {} sessions, {} messages, \
             {} effects; cycle {:.0?}, verify {verify_time:.0?}",
            acks.len() - before,
            acks.len(),
            checked.sessions,
            checked.messages,
            checked.effects,
            cycle_started.elapsed(),
        );
        last = Some(checked);
    }

    let (messages, effects) = last.map_or((0, 0), |c| (c.messages, c.effects));
    println!(
        "crash_safety: {cycles} cycles, {} acks, {messages} messages in the db, {effects} effects \
         in the log, {partial_lines} cut-off lines, {:.1?}; TANDEM_CRASH_SEED={seed}",
        acks.len(),
        started.elapsed()
    );
}
