//! The durable copies the design asks for, and nothing else: a lower bound on the subject of
//! the sync rows that no implementation of the design can go under.
//!
//! Every op of the subject is stored durably three times: in A's journal (a SQLite table, 100
//! ops per transaction as A appends them), in the relay (A's push: appended to a segment and
//! an index, both fsynced, then a small manifest replaced atomically, once per push batch) and
//! in B's journal (one SQLite transaction per pulled page). This side does exactly that with
//! the subject's own stored records (E2E-sealed ops in their binary form, built before the
//! clock starts), through the same PRAGMAs and the same page sizes, one segment file for the
//! whole run (FsRelay rolls segments every 1,024 ops). What it leaves out is everything the
//! subject computes: canonical JSON, sealing, op ids, chain verification on push, pull and
//! ingest, opening, payload checks and the fold.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use rusqlite::{params, Connection, TransactionBehavior};
use tandem::adapters::sqlite::Synchronous;
use tandem::domain::crypto::{KeyEpoch, SessionKey};
use tandem::domain::ids::DeviceId;
use tandem::domain::oplog::{author_sealed, encode_op_into, OpAuthor, Scope, Surface};

use super::subject::payload;
use super::workload::Message;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS ops (
    device TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    record BLOB    NOT NULL,
    UNIQUE (device, seq)
)";
const INSERT: &str = "INSERT INTO ops (device, seq, record) VALUES (?1, ?2, ?3)";
const SELECT: &str = "SELECT record FROM ops WHERE device = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3";

/// The stored record of every message, sealed as device A would seal it (untimed set-up).
pub fn records(msgs: &[Message]) -> (String, Vec<Vec<u8>>) {
    let device = DeviceId::from_uuid(uuid::Uuid::now_v7()).expect("a device id");
    let key = SessionKey::generate(&mut OsRng);
    let mut author = OpAuthor::new(device);
    let now = 1_700_000_000_000;
    let records = msgs
        .iter()
        .map(|m| {
            let op = author_sealed(
                &mut author,
                now,
                Scope::Personal,
                Surface::Conversation,
                &payload(m),
                KeyEpoch::new(1),
                &key,
                &mut OsRng,
            )
            .expect("seal a message");
            let mut record = Vec::with_capacity(512);
            encode_op_into(&op, &mut record);
            record
        })
        .collect();
    (device.to_string(), records)
}

/// Time spent by each step of one run.
#[derive(Debug, Clone, Copy)]
pub struct CopiesRun {
    /// A: inserting every record, `group` per transaction.
    pub append: Duration,
    /// A: reading the records back a page at a time and writing them to the relay files.
    pub push: Duration,
    /// B: reading the relay files a page at a time and inserting the records.
    pub pull: Duration,
}

impl CopiesRun {
    /// All three steps.
    pub fn total(&self) -> Duration {
        self.append + self.push + self.pull
    }
}

fn table(path: &Path, sync: Synchronous) -> Connection {
    let conn = crate::support::raw_connection(path, sync);
    conn.execute(CREATE, []).expect("create the ops table");
    conn
}

fn seq(i: usize) -> i64 {
    i64::try_from(i).expect("seq fits")
}

/// One run in the fresh directory `dir` (databases opened before the clock starts).
pub fn run(
    dir: &Path,
    device: &str,
    records: &[Vec<u8>],
    group: usize,
    page: usize,
    sync: Synchronous,
) -> CopiesRun {
    let mut a = table(&dir.join("a.db"), sync);
    let mut b = table(&dir.join("b.db"), sync);
    let started = Instant::now();
    for (chunk_no, chunk) in records.chunks(group.max(1)).enumerate() {
        let tx = a
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut insert = tx.prepare_cached(INSERT).expect("prepare");
            for (i, record) in chunk.iter().enumerate() {
                let s = seq(chunk_no * group.max(1) + i);
                insert
                    .execute(params![device, s, record])
                    .expect("insert on A");
            }
        }
        tx.commit().expect("commit on A");
    }
    let append = started.elapsed();

    let started = Instant::now();
    let relay = Relay::create(&dir.join("relay"));
    let mut next = 0;
    loop {
        let mut stmt = a.prepare_cached(SELECT).expect("prepare");
        let limit = seq(page);
        let batch: Vec<Vec<u8>> = stmt
            .query_map(params![device, seq(next), limit], |r| r.get(0))
            .expect("read A's page")
            .collect::<Result<_, _>>()
            .expect("read a record");
        if batch.is_empty() {
            break;
        }
        next += batch.len();
        relay.append(&batch, next);
    }
    let push = started.elapsed();

    let started = Instant::now();
    let mut from = 0;
    while from < next {
        let batch = relay.read(from, page);
        let tx = b
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        {
            let mut insert = tx.prepare_cached(INSERT).expect("prepare");
            for (i, record) in batch.iter().enumerate() {
                insert
                    .execute(params![device, seq(from + i), record])
                    .expect("insert on B");
            }
        }
        tx.commit().expect("commit on B");
        from += batch.len();
    }
    let pull = started.elapsed();
    let held: i64 = b
        .query_row("SELECT count(*) FROM ops", [], |r| r.get(0))
        .expect("count");
    assert_eq!(held, seq(records.len()), "B holds every record");
    CopiesRun { append, push, pull }
}

/// One chain's relay files: a segment of records, an index of their end offsets (u64,
/// big-endian) and a manifest naming the head.
struct Relay {
    segment: File,
    index: File,
    dir: std::path::PathBuf,
}

impl Relay {
    fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("relay dir");
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(dir.join(name))
                .expect("open a relay file")
        };
        Self {
            segment: open("segment"),
            index: open("index"),
            dir: dir.to_path_buf(),
        }
    }

    /// A push: appends and fsyncs the records and their index entries, then replaces the
    /// manifest (temp write, fsync, rename, fsync of the directory).
    fn append(&self, batch: &[Vec<u8>], head: usize) {
        let mut end = self.segment.metadata().expect("segment size").len();
        let mut log = Vec::with_capacity(batch.iter().map(Vec::len).sum());
        let mut index = Vec::with_capacity(batch.len() * 8);
        for record in batch {
            log.extend_from_slice(record);
            end += record.len() as u64;
            index.extend_from_slice(&end.to_be_bytes());
        }
        (&self.segment).write_all(&log).expect("append records");
        (&self.index).write_all(&index).expect("append the index");
        self.segment.sync_data().expect("fsync the segment");
        self.index.sync_data().expect("fsync the index");
        let temp = self.dir.join(".manifest.tmp");
        let mut manifest = File::create(&temp).expect("manifest temp");
        manifest
            .write_all(format!("{{\"head\":{head}}}").as_bytes())
            .expect("write the manifest");
        manifest.sync_all().expect("fsync the manifest");
        std::fs::rename(&temp, self.dir.join("manifest")).expect("rename the manifest");
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .expect("fsync the relay directory");
    }

    /// A pull: reads up to `limit` records from `from` through the index.
    fn read(&self, from: usize, limit: usize) -> Vec<Vec<u8>> {
        let mut index = Vec::new();
        let mut file = &self.index;
        file.seek(SeekFrom::Start(from.saturating_sub(1) as u64 * 8))
            .expect("seek the index");
        let entries = if from == 0 { limit } else { limit + 1 };
        file.take(entries as u64 * 8)
            .read_to_end(&mut index)
            .expect("read the index");
        let mut ends: Vec<u64> = index
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes(e.try_into().expect("8 bytes")))
            .collect();
        let start = if from == 0 { 0 } else { ends.remove(0) };
        let mut segment = &self.segment;
        let last = *ends.last().expect("records to read");
        segment.seek(SeekFrom::Start(start)).expect("seek");
        let mut bytes = vec![0; usize::try_from(last - start).expect("fits")];
        segment.read_exact(&mut bytes).expect("read records");
        let mut out = Vec::with_capacity(ends.len());
        let mut at = 0;
        for end in ends {
            let end = usize::try_from(end - start).expect("fits");
            out.push(bytes[at..end].to_vec());
            at = end;
        }
        out
    }
}
