//! [`SqliteJournal`]: the device-sync [`Journal`] in the local SQLite database.
//!
//! The journal lives in the same database file as the [`SqliteStore`]
//! (schema migrations 2 and 5: `oplog_ops`, `oplog_heads`, `oplog_push_cursors`, `oplog_base`;
//! ops in their compact binary form, see [`crate::domain::oplog::op_codec`]) on a
//! connection of its own, so sync work never queues behind the session engine's writer lock;
//! SQLite's WAL serialises the two writers. The device id is the store's own `meta` row, so
//! the engine and device sync agree on who this device is.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction: a pulled batch's ops and the heads they
//! advance commit together or not at all, and a crash at any point leaves the journal at a
//! committed state from which the next pump resumes.
//!
//! A file-backed journal keeps its base checkpoint's state, which can be tens of megabytes, in
//! a file beside the database rather than in `oplog_base` (schema migration 6; see
//! [`base_file`](super::base_file)). The file is durable before the row naming it commits, so
//! the two never disagree after a crash. An in-memory journal keeps the state inline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::MutexGuard;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{ChainHead, Checkpoint, CheckpointId, Frontier, OpId, OpRecord};
use crate::ports::{BatchLimit, Journal, JournalCommit, JournalError, StoreError};

use super::base_file::BaseFiles;
use super::connection::SqliteOptions;
use super::error::map_sqlite;
use super::handle::DbHandle;
use super::oplog_rows::{
    checkpoint_from_sql, checkpoint_to_sql, frontier_from_sql, head_from_row, op_from_sql,
    op_id_from_sql, op_to_sql, seq_from_sql, seq_to_sql, stored_len, HeadRow,
};
use super::SqliteStore;

const SELECT_HEADS: &str = "SELECT device, seq, op_id, hlc_wall_ms, hlc_counter FROM oplog_heads";
const SELECT_HEAD: &str =
    "SELECT device, seq, op_id, hlc_wall_ms, hlc_counter FROM oplog_heads WHERE device = ?1";
const UPSERT_HEAD: &str = "INSERT INTO oplog_heads (device, seq, op_id, hlc_wall_ms, hlc_counter) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device) DO UPDATE SET seq = excluded.seq, \
     op_id = excluded.op_id, hlc_wall_ms = excluded.hlc_wall_ms, hlc_counter = excluded.hlc_counter";
const SELECT_RECORD_AT: &str = "SELECT record FROM oplog_ops WHERE device = ?1 AND seq = ?2";
const INSERT_OP: &str = "INSERT INTO oplog_ops (device, seq, record) VALUES (?1, ?2, ?3)";
const SELECT_OPS_FROM: &str =
    "SELECT record FROM oplog_ops WHERE device = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3";
const DELETE_OPS_UP_TO: &str = "DELETE FROM oplog_ops WHERE device = ?1 AND seq <= ?2";
const SELECT_CURSOR: &str = "SELECT next_seq FROM oplog_push_cursors WHERE device = ?1";
const UPSERT_CURSOR: &str = "INSERT INTO oplog_push_cursors (device, next_seq) VALUES (?1, ?2) \
     ON CONFLICT (device) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)";
const SELECT_BASE: &str = "SELECT checkpoint_id, frontier, state_hash, state, state_file \
     FROM oplog_base WHERE singleton = 1";
const SELECT_BASE_ID: &str = "SELECT checkpoint_id FROM oplog_base WHERE singleton = 1";
const SELECT_BASE_FRONTIER: &str = "SELECT frontier FROM oplog_base WHERE singleton = 1";
const UPSERT_BASE: &str =
    "INSERT INTO oplog_base (singleton, checkpoint_id, frontier, state_hash, state, state_file) \
     VALUES (1, ?1, ?2, ?3, ?4, ?5) ON CONFLICT (singleton) DO UPDATE SET \
     checkpoint_id = excluded.checkpoint_id, frontier = excluded.frontier, \
     state_hash = excluded.state_hash, state = excluded.state, state_file = excluded.state_file";

/// The SQLite-backed journal. See the module docs.
pub struct SqliteJournal {
    db: DbHandle,
    /// Where the base checkpoint's state lives for a file-backed database (see
    /// [`base_file`](super::base_file)); `None` in memory, where it stays inline.
    base_files: Option<BaseFiles>,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) the database file at `path`, asserts its PRAGMAs and applies
    /// pending migrations. Use the store's file to keep everything in one database.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, JournalError> {
        let path = path.as_ref();
        let journal = Self {
            db: DbHandle::open(path, &options)?,
            base_files: Some(BaseFiles::beside(path)),
        };
        journal.discard_stale_base_files()?;
        Ok(journal)
    }

    /// Opens the journal in `store`'s database file, with the store's options. An in-memory
    /// store has no file to share: that is [`StoreError::Incompatible`].
    pub fn beside(store: &SqliteStore) -> Result<Self, JournalError> {
        let path = store.path().ok_or_else(|| {
            StoreError::Incompatible("an in-memory store has no file to share".into())
        })?;
        Self::open(path, store.options())
    }

    /// Opens a private in-memory journal. **Test and development only**: nothing survives the
    /// process.
    pub fn open_in_memory(options: SqliteOptions) -> Result<Self, JournalError> {
        Ok(Self {
            db: DbHandle::open_in_memory(&options)?,
            base_files: None,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.db.path()
    }

    /// Removes base state files no row names: left by a crash, by a staging never installed,
    /// or by the base an install replaced. Runs under the write lock, so it cannot remove a
    /// file between another connection's check for it and its install's commit.
    fn discard_stale_base_files(&self) -> Result<(), JournalError> {
        // Nothing to look at (and no write lock to take) before the first staging or install.
        let Some(files) = self.base_files.as_ref().filter(|f| f.exist()) else {
            return Ok(());
        };
        self.write(|tx| {
            let id: Option<String> = tx
                .query_row(SELECT_BASE_ID, [], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            let id = id.map(|id| parse_checkpoint_id(&id)).transpose()?;
            files.discard_except(id);
            Ok(())
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    fn write<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_sqlite)?;
        let out = work(&tx)?;
        tx.commit().map_err(map_sqlite)?;
        Ok(out)
    }
}

fn sql(e: rusqlite::Error) -> JournalError {
    JournalError::Store(map_sqlite(e))
}

fn exec(
    conn: &Connection,
    statement: &str,
    args: impl rusqlite::Params,
) -> Result<usize, JournalError> {
    conn.prepare_cached(statement)
        .and_then(|mut s| s.execute(args))
        .map_err(sql)
}

fn head_of(conn: &Connection, device: DeviceId) -> Result<Option<ChainHead>, JournalError> {
    let mut stmt = conn.prepare_cached(SELECT_HEAD).map_err(sql)?;
    let mut rows = stmt.query([device.to_string()]).map_err(sql)?;
    match rows.next().map_err(sql)? {
        Some(row) => Ok(Some(head_from_row(row)?.1)),
        None => Ok(None),
    }
}

fn put_head(conn: &Connection, device: DeviceId, head: &ChainHead) -> Result<(), JournalError> {
    let row = HeadRow::of(device, head)?;
    exec(
        conn,
        UPSERT_HEAD,
        params![row.device, row.seq, row.op_id, row.wall, row.counter],
    )?;
    Ok(())
}

fn op_id_at(conn: &Connection, device: DeviceId, seq: Seq) -> Result<Option<OpId>, JournalError> {
    let seq = seq_to_sql(seq)?;
    let mut stmt = conn.prepare_cached(SELECT_RECORD_AT).map_err(sql)?;
    let mut rows = stmt.query(params![device.to_string(), seq]).map_err(sql)?;
    match rows.next().map_err(sql)? {
        Some(row) => Ok(Some(op_id_from_sql(row.get_ref(0).map_err(sql)?)?)),
        None => Ok(None),
    }
}

fn base_of(
    conn: &Connection,
    files: Option<&BaseFiles>,
) -> Result<Option<Checkpoint>, JournalError> {
    let row: Option<(String, String, String, Vec<u8>, bool)> = conn
        .prepare_cached(SELECT_BASE)
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .map_err(sql)?;
    let Some((id, frontier, hash, mut state, in_file)) = row else {
        return Ok(None);
    };
    if in_file {
        let files = files.ok_or_else(|| {
            JournalError::Store(StoreError::Corrupt(
                "the base checkpoint's state is in a file, but this journal has none".into(),
            ))
        })?;
        state = files.read(parse_checkpoint_id(&id)?)?;
    }
    Ok(Some(checkpoint_from_sql(&id, &frontier, &hash, state)?))
}

/// The base checkpoint's frontier, without reading its state (which can be large).
fn base_frontier_of(conn: &Connection) -> Result<Option<Frontier>, JournalError> {
    let row: Option<String> = conn
        .prepare_cached(SELECT_BASE_FRONTIER)
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(sql)?;
    row.map(|frontier| frontier_from_sql(&frontier))
        .transpose()
        .map_err(JournalError::from)
}

fn parse_checkpoint_id(id: &str) -> Result<CheckpointId, JournalError> {
    CheckpointId::parse(id)
        .map_err(|e| JournalError::Store(StoreError::Decode(format!("stored checkpoint id: {e}"))))
}

/// Stores one chain's ops (sorted by seq) after `head`; returns the new head and counts.
fn commit_chain(
    tx: &Transaction<'_>,
    device: DeviceId,
    ops: &[&OpRecord],
    base: Option<&ChainHead>,
    counts: &mut JournalCommit,
) -> Result<(), JournalError> {
    let mut head = head_of(tx, device)?;
    let mut moved = false;
    let device_text = device.to_string();
    let mut record = Vec::with_capacity(512);
    let mut insert = tx.prepare_cached(INSERT_OP).map_err(sql)?;
    for op in ops {
        let next = head.map_or(Seq::ZERO, |h| h.seq.next());
        if op.seq() < next {
            match op_id_at(tx, device, op.seq())? {
                Some(held) if held != op.op_id() => {
                    return Err(JournalError::Fork {
                        device,
                        seq: op.seq(),
                        held,
                        offered: op.op_id(),
                    })
                }
                Some(_) => {}
                // Below the base checkpoint: only the base's head can still be compared.
                None => {
                    if let Some(b) = base.filter(|b| b.seq == op.seq() && b.op_id != op.op_id()) {
                        return Err(JournalError::Fork {
                            device,
                            seq: op.seq(),
                            held: b.op_id,
                            offered: op.op_id(),
                        });
                    }
                }
            }
            counts.duplicates += 1;
            continue;
        }
        if op.seq() > next {
            return Err(JournalError::Gap {
                device,
                expected: next,
                found: op.seq(),
            });
        }
        if op.prev() != head.map(|h| h.op_id) {
            return Err(JournalError::BrokenPrev {
                device,
                seq: op.seq(),
            });
        }
        op_to_sql(op, &mut record);
        insert
            .execute(params![device_text, seq_to_sql(op.seq())?, record])
            .map_err(sql)?;
        head = Some(ChainHead::of(op));
        moved = true;
        counts.inserted += 1;
    }
    if let (true, Some(h)) = (moved, head) {
        put_head(tx, device, &h)?;
    }
    Ok(())
}

impl Journal for SqliteJournal {
    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, JournalError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('device_id', ?1) ON CONFLICT (key) DO NOTHING",
                [candidate.to_string()],
            )
            .map_err(sql)?;
            let stored: String = tx
                .query_row("SELECT value FROM meta WHERE key = 'device_id'", [], |r| {
                    r.get(0)
                })
                .map_err(sql)?;
            DeviceId::parse(&stored)
                .map_err(|e| JournalError::Store(StoreError::Decode(e.to_string())))
        })
    }

    fn commit(&self, ops: &[OpRecord]) -> Result<JournalCommit, JournalError> {
        let mut by_device: BTreeMap<DeviceId, Vec<&OpRecord>> = BTreeMap::new();
        for op in ops {
            by_device.entry(op.device()).or_default().push(op);
        }
        for chain in by_device.values_mut() {
            chain.sort_by_key(|op| op.seq());
        }
        self.write(|tx| {
            let base = base_frontier_of(tx)?;
            let mut counts = JournalCommit::default();
            for (device, chain) in &by_device {
                let base_head = base.as_ref().and_then(|b| b.head(*device));
                commit_chain(tx, *device, chain, base_head, &mut counts)?;
            }
            Ok(counts)
        })
    }

    fn frontier(&self) -> Result<Frontier, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(SELECT_HEADS).map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        let mut frontier = Frontier::new();
        while let Some(row) = rows.next().map_err(sql)? {
            let (device, head) = head_from_row(row)?;
            frontier.set(crate::domain::oplog::ChainTip {
                device,
                head: Some(head),
            });
        }
        Ok(frontier)
    }

    fn ops_from(
        &self,
        device: DeviceId,
        from: Seq,
        limit: BatchLimit,
    ) -> Result<Vec<OpRecord>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(SELECT_OPS_FROM).map_err(sql)?;
        let max_rows = i64::try_from(limit.ops).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![device.to_string(), seq_to_sql(from)?, max_rows])
            .map_err(sql)?;
        let mut fill = limit.fill();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            let stored = row.get_ref(0).map_err(sql)?;
            // A binary record's length is the op's encoded size; a legacy JSON row counts its
            // text, which is longer, so such a batch only comes out smaller.
            if !fill.admit(|| stored_len(stored)) {
                break;
            }
            out.push(op_from_sql(stored)?);
        }
        Ok(out)
    }

    fn push_cursor(&self, device: DeviceId) -> Result<Seq, JournalError> {
        let conn = self.conn();
        let next: Option<i64> = conn
            .prepare_cached(SELECT_CURSOR)
            .and_then(|mut s| s.query_row([device.to_string()], |r| r.get(0)).optional())
            .map_err(sql)?;
        Ok(next.map(seq_from_sql).transpose()?.unwrap_or(Seq::ZERO))
    }

    fn advance_push_cursor(&self, device: DeviceId, next: Seq) -> Result<(), JournalError> {
        self.write(|tx| {
            let chain_next = head_of(tx, device)?.map_or(Seq::ZERO, |h| h.seq.next());
            if next > chain_next {
                return Err(JournalError::CursorBeyondHead {
                    device,
                    next: chain_next,
                    requested: next,
                });
            }
            exec(
                tx,
                UPSERT_CURSOR,
                params![device.to_string(), seq_to_sql(next)?],
            )?;
            Ok(())
        })
    }

    fn base_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        base_of(&self.conn(), self.base_files.as_ref())
    }

    fn stage_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        match &self.base_files {
            Some(files) => files.write(checkpoint),
            None => Ok(()),
        }
    }

    fn discard_staged(&self) -> Result<(), JournalError> {
        self.discard_stale_base_files()
    }

    fn install_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        let (id, frontier, hash, state) = checkpoint_to_sql(checkpoint)?;
        let (state, in_file): (&[u8], bool) = match &self.base_files {
            Some(_) => (&[], true),
            None => (state, false),
        };
        let installed = self.write(|tx| {
            if let Some(old) = base_frontier_of(tx)? {
                for (device, held) in old.iter() {
                    match checkpoint.frontier().head(*device) {
                        Some(h) if h.seq > held.seq => {}
                        Some(h) if h.seq == held.seq && h.op_id == held.op_id => {}
                        Some(h) if h.seq == held.seq => {
                            return Err(JournalError::Fork {
                                device: *device,
                                seq: h.seq,
                                held: held.op_id,
                                offered: h.op_id,
                            })
                        }
                        other => {
                            return Err(JournalError::BaseRegression {
                                device: *device,
                                held: held.seq,
                                offered: other.map(|h| h.seq),
                            })
                        }
                    }
                }
            }
            for (device, cp_head) in checkpoint.frontier().iter() {
                let local = head_of(tx, *device)?;
                if local.is_some_and(|l| l.seq >= cp_head.seq) {
                    if let Some(held) = op_id_at(tx, *device, cp_head.seq)? {
                        if held != cp_head.op_id {
                            return Err(JournalError::Fork {
                                device: *device,
                                seq: cp_head.seq,
                                held,
                                offered: cp_head.op_id,
                            });
                        }
                    }
                } else {
                    put_head(tx, *device, cp_head)?;
                }
                let device = device.to_string();
                let (seq, next) = (seq_to_sql(cp_head.seq)?, seq_to_sql(cp_head.seq.next())?);
                exec(tx, DELETE_OPS_UP_TO, params![device, seq])?;
                exec(tx, UPSERT_CURSOR, params![device, next])?;
            }
            if let Some(files) = &self.base_files {
                // The state file (possibly staged earlier) is durable before the row naming
                // it commits. Checked under the write lock: no discard can interleave.
                files.ensure(checkpoint)?;
            }
            exec(tx, UPSERT_BASE, params![id, frontier, hash, state, in_file])?;
            Ok(())
        });
        // The old base's file (or, after a refusal, the one written for this checkpoint) is
        // named by no row any more. Removing it is housekeeping: a failure only leaves a file
        // for the next open to remove.
        if let Err(e) = self.discard_stale_base_files() {
            tracing::debug!(error = %e, "could not remove stale base state files");
        }
        installed
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::adapters::sqlite::connection::open_file;
    use crate::adapters::sqlite::schema::migrate_to;
    use crate::domain::oplog::{OpAuthor, OpPayload, Scope, Surface};

    fn chain(n: u64) -> Vec<OpRecord> {
        let device = DeviceId::from_uuid(Uuid::from_u128(0xA)).unwrap();
        let mut author = OpAuthor::new(device);
        (0..n)
            .map(|i| {
                let payload = OpPayload::Plain(json!({"i": i, "text": "legacy row"}));
                author
                    .append(1_000 + i, Scope::Personal, Surface::Run, payload)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn version_2_json_rows_survive_the_move_to_binary_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let ops = chain(5);
        {
            // The database as a version-4 build left it: ops as JSON text with their id.
            let mut conn = open_file(&path, &SqliteOptions::default()).unwrap();
            migrate_to(&mut conn, 4).unwrap();
            for op in &ops[..3] {
                conn.execute(
                    "INSERT INTO oplog_ops (device, seq, op_id, record) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        op.device().to_string(),
                        seq_to_sql(op.seq()).unwrap(),
                        op.op_id().to_string(),
                        serde_json::to_string(op).unwrap()
                    ],
                )
                .unwrap();
            }
            put_head(&conn, ops[0].device(), &ChainHead::of(&ops[2])).unwrap();
        }
        let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
        let device = ops[0].device();
        assert_eq!(
            journal
                .ops_from(device, Seq::ZERO, BatchLimit::ops(10))
                .unwrap(),
            &ops[..3]
        );
        // A re-delivered legacy op is a duplicate; a different op at its seq is a fork.
        let counts = journal.commit(&ops).unwrap();
        assert_eq!((counts.duplicates, counts.inserted), (3, 2));
        assert_eq!(
            journal
                .ops_from(device, Seq::ZERO, BatchLimit::ops(10))
                .unwrap(),
            ops
        );
        let forged = OpRecord::new(
            ops[1].hlc(),
            Seq::new(1),
            Some(ops[0].op_id()),
            Scope::Personal,
            Surface::Run,
            OpPayload::Plain(json!("other")),
        )
        .unwrap();
        assert!(matches!(
            journal.commit(&[forged]),
            Err(JournalError::Fork { held, .. }) if held == ops[1].op_id()
        ));
        let kinds: Vec<String> = journal
            .conn()
            .prepare("SELECT typeof(record) FROM oplog_ops ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, ["text", "text", "text", "blob", "blob"]);
    }

    /// A checkpoint at `ops[at]` with a state of some size.
    fn checkpoint_at(ops: &[OpRecord], at: usize) -> Checkpoint {
        let state = crate::domain::oplog::fold(&ops[..=at]).unwrap();
        let mut frontier = Frontier::new();
        for op in &ops[..=at] {
            assert!(frontier.advance(op));
        }
        Checkpoint::new(frontier, &state)
    }

    fn base_dir(path: &Path) -> std::path::PathBuf {
        path.with_file_name("j.db-base")
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn a_file_backed_base_lives_in_one_file_beside_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let ops = chain(6);
        let (first, second) = (checkpoint_at(&ops, 2), checkpoint_at(&ops, 4));
        {
            let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
            journal.commit(&ops).unwrap();
            journal.install_base(&first).unwrap();
            assert_eq!(
                files_in(&base_dir(&path)),
                [format!("{}.state", first.id())]
            );
            journal.stage_base(&second).unwrap();
            journal.install_base(&second).unwrap();
            // The row holds no state; the replaced base's file is gone.
            let (inline, in_file): (Vec<u8>, bool) = journal
                .conn()
                .query_row("SELECT state, state_file FROM oplog_base", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert!(inline.is_empty() && in_file);
            assert_eq!(
                files_in(&base_dir(&path)),
                [format!("{}.state", second.id())]
            );
        }
        let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
        let base = journal.base_checkpoint().unwrap().unwrap();
        assert_eq!(base, second);
        base.verify().unwrap();
        assert_eq!(
            journal
                .ops_from(ops[0].device(), Seq::ZERO, BatchLimit::ops(10))
                .unwrap(),
            ops[5..]
        );
    }

    #[test]
    fn files_no_row_names_are_removed_on_open_and_a_missing_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let ops = chain(6);
        let (base, staged) = (checkpoint_at(&ops, 2), checkpoint_at(&ops, 4));
        {
            let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
            journal.commit(&ops).unwrap();
            journal.install_base(&base).unwrap();
            // A crash after staging, before the install committed; one mid-write an hour and
            // more ago; and a staging still being written by another process.
            journal.stage_base(&staged).unwrap();
            let temp = |name: &str, age_s: u64| {
                let file = std::fs::File::create(base_dir(&path).join(name)).unwrap();
                let at = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
                file.set_modified(at).unwrap();
            };
            temp(".tmp-x.state-1-0", 7_200);
            temp(".tmp-y.state-2-0", 5);
            assert_eq!(files_in(&base_dir(&path)).len(), 4);
        }
        let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(
            files_in(&base_dir(&path)),
            [
                ".tmp-y.state-2-0".to_string(),
                format!("{}.state", base.id())
            ]
        );
        assert_eq!(journal.base_checkpoint().unwrap(), Some(base.clone()));
        // The base's file lost: a typed error naming it, not a panic or an empty state.
        std::fs::remove_file(base_dir(&path).join(format!("{}.state", base.id()))).unwrap();
        match journal.base_checkpoint() {
            Err(JournalError::Store(StoreError::Corrupt(m))) => {
                assert!(m.contains("missing"), "{m}");
            }
            other => panic!("expected a corrupt-store error, got {other:?}"),
        }
    }

    #[test]
    fn an_inline_base_from_version_5_still_reads_and_in_memory_bases_stay_inline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let ops = chain(4);
        let cp = checkpoint_at(&ops, 1);
        {
            let mut conn = open_file(&path, &SqliteOptions::default()).unwrap();
            migrate_to(&mut conn, 5).unwrap();
            let (id, frontier, hash, state) = checkpoint_to_sql(&cp).unwrap();
            conn.execute(
                "INSERT INTO oplog_base (singleton, checkpoint_id, frontier, state_hash, state) \
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![id, frontier, hash, state],
            )
            .unwrap();
        }
        let journal = SqliteJournal::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(journal.base_checkpoint().unwrap(), Some(cp.clone()));
        assert!(files_in(&base_dir(&path)).is_empty());

        let memory = SqliteJournal::open_in_memory(SqliteOptions::default()).unwrap();
        memory.commit(&ops).unwrap();
        memory.stage_base(&cp).unwrap();
        memory.install_base(&cp).unwrap();
        assert_eq!(memory.base_checkpoint().unwrap(), Some(cp));
    }
}
