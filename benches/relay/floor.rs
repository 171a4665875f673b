//! The physical floor of device sync, built from the same raw parts and nothing else: device A
//! appends each message as one JSON line to a file (flushed per group, and `fdatasync`ed per
//! group under `synchronous=FULL`, as a group commit would be), device B reads the file back,
//! parses every line, and inserts the messages into SQLite with plain rusqlite statements, the
//! same PRAGMAs as tandem's store and one transaction per pulled page. No hashing, no
//! verification, no crypto, no fold.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};
use tandem::adapters::sqlite::Synchronous;

use super::workload::Message;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS messages (
    seq             INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    role            TEXT NOT NULL,
    text            TEXT NOT NULL
)";
const INSERT: &str =
    "INSERT INTO messages (seq, conversation_id, role, text) VALUES (?1, ?2, ?3, ?4)";

#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    conversation_id: &'a str,
    role: &'a str,
    text: &'a str,
}

#[derive(Deserialize)]
struct LineIn {
    seq: u64,
    conversation_id: String,
    role: String,
    text: String,
}

/// Time spent by each device in one floor run.
#[derive(Debug, Clone, Copy)]
pub struct FloorRun {
    /// A: serialising and appending every line (with the per-group flush/sync).
    pub append: Duration,
    /// B: reading, parsing and inserting every line.
    pub fold: Duration,
}

impl FloorRun {
    /// Both devices' time.
    pub fn total(&self) -> Duration {
        self.append + self.fold
    }
}

/// A plain rusqlite connection with the PRAGMAs tandem's store sets, holding the floor table.
pub fn floor_connection(path: &Path, sync: Synchronous) -> Connection {
    let conn = crate::support::raw_connection(path, sync);
    conn.execute(CREATE, []).expect("create the floor table");
    conn
}

/// Device A of the floor: appends `msgs` to the JSONL file at `path` in groups of `group`.
pub fn append(path: &Path, msgs: &[Message], first_seq: u64, group: usize, sync: Synchronous) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the JSONL file");
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut seq = first_seq;
    for chunk in msgs.chunks(group.max(1)) {
        for m in chunk {
            let line = LineOut {
                seq,
                conversation_id: &m.conversation_id,
                role: m.role,
                text: &m.text,
            };
            serde_json::to_writer(&mut out, &line).expect("serialise a line");
            out.write_all(b"\n").expect("append a line");
            seq += 1;
        }
        out.flush().expect("flush a group");
        if sync == Synchronous::Full {
            out.get_ref().sync_data().expect("fdatasync a group");
        }
    }
}

/// Device B of the floor: reads every line of `path`, parses it and inserts it into `conn`,
/// one transaction per `page` lines. Returns how many messages it inserted.
pub fn fold(path: &Path, conn: &mut Connection, page: usize) -> usize {
    let mut lines = BufReader::with_capacity(64 * 1024, File::open(path).expect("open JSONL"))
        .lines()
        .peekable();
    let mut inserted = 0;
    while lines.peek().is_some() {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut stmt = tx.prepare_cached(INSERT).expect("prepare insert");
            for line in lines.by_ref().take(page.max(1)) {
                let line = line.expect("read a line");
                let m: LineIn = serde_json::from_str(&line).expect("parse a line");
                stmt.execute(params![m.seq, m.conversation_id, m.role, m.text])
                    .expect("insert a message");
                inserted += 1;
            }
        }
        tx.commit().expect("commit a page");
    }
    inserted
}

/// One floor run in a fresh directory: A appends `msgs`, B folds them into a fresh database
/// (opened before the clock starts, as the subject's devices are).
pub fn run(dir: &Path, msgs: &[Message], group: usize, page: usize, sync: Synchronous) -> FloorRun {
    let log = dir.join("a.jsonl");
    let mut conn = floor_connection(&dir.join("b.db"), sync);
    let started = Instant::now();
    append(&log, msgs, 0, group, sync);
    let append_time = started.elapsed();
    let started = Instant::now();
    let inserted = fold(&log, &mut conn, page);
    let fold_time = started.elapsed();
    assert_eq!(
        inserted,
        msgs.len(),
        "floor: B folded {inserted} of {}",
        msgs.len()
    );
    FloorRun {
        append: append_time,
        fold: fold_time,
    }
}
