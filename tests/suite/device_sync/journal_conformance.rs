//! The Journal conformance suite on every journal adapter, plus what only a file can show.

use std::ops::Deref;

use serde_json::json;
use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions, SqliteStore};
use tandem::domain::ids::{DeviceId, Seq};
use tandem::domain::oplog::{OpAuthor, OpPayload, Scope, Surface};
use tandem::ports::{BatchLimit, Journal, Store};

/// A file journal in a temp dir that lives as long as the journal.
pub struct TempJournal {
    _dir: tempfile::TempDir,
    journal: SqliteJournal,
}

impl Deref for TempJournal {
    type Target = SqliteJournal;
    fn deref(&self) -> &SqliteJournal {
        &self.journal
    }
}

fn temp_journal() -> TempJournal {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = SqliteJournal::open(dir.path().join("tandem.db"), SqliteOptions::default())
        .expect("open journal");
    TempJournal { _dir: dir, journal }
}

fn memory_journal() -> Box<SqliteJournal> {
    Box::new(SqliteJournal::open_in_memory(SqliteOptions::default()).expect("open in memory"))
}

tandem::journal_conformance_tests!(sqlite_memory, memory_journal);
tandem::journal_conformance_tests!(sqlite_file, temp_journal);

#[test]
fn the_journal_shares_the_store_file_and_device_id_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tandem.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("store");
    let device = DeviceId::parse("018f2b6e-0000-7000-8000-0000000000d1").expect("id");
    let other = DeviceId::parse("018f2b6e-0000-7000-8000-0000000000d2").expect("id");
    assert_eq!(store.local_device_id(device).expect("store id"), device);
    let journal = SqliteJournal::beside(&store).expect("journal beside the store");
    assert_eq!(journal.local_device_id(other).expect("journal id"), device);

    let mut author = OpAuthor::new(device);
    let ops: Vec<_> = (0..3)
        .map(|i| {
            author
                .append(
                    10 + i,
                    Scope::Personal,
                    Surface::Run,
                    OpPayload::Plain(json!(i)),
                )
                .expect("op")
        })
        .collect();
    journal.commit(&ops).expect("commit");
    journal
        .advance_push_cursor(device, Seq::new(2))
        .expect("cursor");
    let frontier = journal.frontier().expect("frontier");
    drop(journal);
    drop(store);

    let reopened = SqliteJournal::open(&path, SqliteOptions::default()).expect("reopen");
    assert_eq!(reopened.frontier().expect("frontier"), frontier);
    assert_eq!(
        reopened
            .ops_from(device, Seq::ZERO, BatchLimit::ops(10))
            .expect("ops"),
        ops
    );
    assert_eq!(reopened.push_cursor(device).expect("cursor"), Seq::new(2));
    let in_memory = SqliteStore::open_in_memory(SqliteOptions::default()).expect("memory store");
    assert!(SqliteJournal::beside(&in_memory).is_err());
}
