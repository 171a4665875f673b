//! The crash writer: a deterministic append workload that acknowledges every committed message.
//!
//! Run by the hidden `tandem debug append-loop --db PATH --seed N [--max N]` subcommand. The
//! crash-safety test starts it, kills it with `SIGKILL` at random moments and then checks that
//! every message it acknowledged survived.
//!
//! The workload is driven by a small deterministic PRNG (splitmix64) seeded with `seed`:
//!
//! - ~80%: append one message to a random active session;
//! - ~10%: append a batch of 2..=20 messages in one transaction (group commit);
//! - ~5%: create a session;
//! - ~5%: close a session (at least one active session is always kept).
//!
//! After each engine call returns `Ok`, one line per committed message is written and flushed:
//!
//! ```text
//! ack <session_id> <seq> <message_id> <content>
//! ```
//!
//! The content never contains spaces or newlines, so a line splits cleanly on spaces. Each line
//! is written with a single `write_all` of the whole line followed by a flush, so a reader sees
//! either a complete line or (if the process dies mid-write) a line without its newline, which
//! is not an acknowledgement. Every complete `ack` line names a message the engine reported as
//! committed.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::adapters::sqlite::{SqliteOptions, SqliteStore};
use crate::app::Engine;
use crate::domain::{Message, NewMessage, RepositoryId, Role, SessionId};

/// Name of the repository the crash writer creates when the database has none.
const REPOSITORY_NAME: &str = "crash-writer";

/// Smallest message content, in bytes.
const MIN_CONTENT: usize = 50;
/// Largest message content, in bytes.
const MAX_CONTENT: usize = 400;
/// Largest batch appended in one transaction.
const MAX_BATCH: u64 = 20;

/// Runs the append workload on the database at `db`, seeded with `seed`, until `max` messages
/// were committed (forever when `None`), writing one `ack` line per committed message to `out`.
///
/// Reuses the repository and active sessions a previous run left; creates a repository and a
/// session when there are none.
///
/// # Errors
///
/// Returns the first failure to open the store, to commit a write or to write to `out`.
pub fn run(
    db: &Path,
    seed: u64,
    max: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(SqliteStore::open(db, SqliteOptions::default())?);
    let engine = Engine::builder(store).open()?;
    let mut rng = SplitMix64::new(seed);

    let repository = match engine.repositories().first() {
        Some(r) => r.id,
        None => engine.create_repository(REPOSITORY_NAME, None)?.id,
    };
    let mut active: Vec<SessionId> = engine
        .sessions()
        .into_iter()
        .filter(|s| s.is_active())
        .map(|s| s.id)
        .collect();
    if active.is_empty() {
        active.push(new_session(&engine, repository, seed, 0)?);
    }

    let mut written: u64 = 0;
    let mut counter: u64 = 0;
    let mut sessions_made: u64 = 0;
    loop {
        let remaining = match max {
            Some(m) if written >= m => return Ok(()),
            Some(m) => m - written,
            None => u64::MAX,
        };
        let roll = rng.below(100);
        if roll < 80 {
            let session = active[rng.index(active.len())];
            counter += 1;
            let message = NewMessage::new(Role::User, content(&mut rng, seed, counter));
            let committed = engine.append_message(session, message)?;
            ack(out, std::slice::from_ref(&committed))?;
            written += 1;
        } else if roll < 90 {
            let session = active[rng.index(active.len())];
            let size = (2 + rng.below(MAX_BATCH - 1)).min(remaining);
            let batch: Vec<NewMessage> = (0..size)
                .map(|_| {
                    counter += 1;
                    NewMessage::new(Role::Assistant, content(&mut rng, seed, counter))
                })
                .collect();
            let committed = engine.append_messages(session, batch)?;
            ack(out, &committed)?;
            written += committed.len() as u64;
        } else if roll < 95 {
            sessions_made += 1;
            active.push(new_session(&engine, repository, seed, sessions_made)?);
        } else if active.len() > 1 {
            let i = rng.index(active.len());
            engine.close_session(active[i])?;
            active.swap_remove(i);
        }
    }
}

/// Creates an active session with a deterministic title.
fn new_session(
    engine: &Engine,
    repository: RepositoryId,
    seed: u64,
    n: u64,
) -> Result<SessionId, Box<dyn std::error::Error>> {
    Ok(engine
        .create_session(repository, &format!("crash-writer seed {seed} session {n}"))?
        .id)
}

/// Writes one `ack` line per committed message, each with a single write, then flushes.
fn ack(out: &mut dyn Write, committed: &[Arc<Message>]) -> std::io::Result<()> {
    for m in committed {
        let line = format!("ack {} {} {} {}\n", m.session_id, m.seq, m.id, m.content);
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// Deterministic content embedding the seed and counter, padded to 50–400 bytes with
/// characters that are neither spaces nor newlines.
fn content(rng: &mut SplitMix64, seed: u64, counter: u64) -> String {
    const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let span = (MAX_CONTENT - MIN_CONTENT + 1) as u64;
    let len = MIN_CONTENT + rng.below(span) as usize;
    let mut s = format!("seed{seed}-msg{counter}-");
    while s.len() < len {
        s.push(char::from(PAD[rng.index(PAD.len())]));
    }
    s
}

/// splitmix64: a tiny, fast, deterministic PRNG (not for cryptography).
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`; the tiny modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index in `0..len` (`len > 0`).
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference values for seed 1234567 (from the published splitmix64 C code).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn content_is_bounded_and_has_no_whitespace() {
        let mut r = SplitMix64::new(7);
        for n in 0..500 {
            let c = content(&mut r, 7, n);
            assert!(
                (MIN_CONTENT..=MAX_CONTENT).contains(&c.len()),
                "{}",
                c.len()
            );
            assert!(!c.contains(char::is_whitespace));
            assert!(c.starts_with(&format!("seed7-msg{n}-")));
        }
    }

    #[test]
    fn max_bounds_the_number_of_acks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("t.db");
        let mut out = Vec::new();
        run(&db, 3, Some(40), &mut out).expect("first run");
        run(&db, 4, Some(25), &mut out).expect("second run reuses the database");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 65);
        for l in lines {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 5, "{l}");
            assert_eq!(parts[0], "ack");
        }
    }
}
