//! [`SqliteLeaseCoordinator`]: durable execution leases in the local SQLite database.
//!
//! Each resource is one row of the `leases` table: the current lease (holder, epoch, expiry;
//! all NULL once released) and the highest epoch ever issued, which a release keeps. Every
//! transition is one `BEGIN IMMEDIATE` transaction: read the row, apply the pure [`LeaseSlot`]
//! transition at the clock's time, write the row back. The write lock taken by `IMMEDIATE`
//! serialises transitions across every connection to the file, so the coordinator is
//! linearizable across the processes of one host, and epochs survive restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::domain::ids::{DeviceId, Epoch};
use crate::domain::oplog::{Lease, LeaseError, LeaseSlot};
use crate::ports::{Clock, LeaseCoordinator, LeaseCoordinatorError, StoreError};

use super::connection::{open_file, SqliteOptions};
use super::error::map_sqlite;
use super::schema::migrate;

const SELECT_SLOT: &str =
    "SELECT holder, epoch, expires_at_ms, highest_epoch FROM leases WHERE resource = ?1";
const UPSERT_SLOT: &str = "INSERT INTO leases (resource, holder, epoch, expires_at_ms, \
     highest_epoch) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (resource) DO UPDATE SET \
     holder = excluded.holder, epoch = excluded.epoch, expires_at_ms = excluded.expires_at_ms, \
     highest_epoch = excluded.highest_epoch";

/// The largest time SQLite's signed 64-bit `INTEGER` holds, in Unix milliseconds.
const MAX_STORED_MS: u64 = i64::MAX as u64;

/// A durable [`LeaseCoordinator`] over the local SQLite database, safe to share between the
/// processes of one host.
///
/// Opening it applies the local migrations, so it can share a file with
/// [`SqliteStore`](super::SqliteStore) (each keeps its own connection). Calls run on tokio's
/// blocking pool; they need a tokio runtime but never block it. A call whose future is dropped
/// still completes its transaction: an acquire abandoned that way holds the resource until its
/// lease expires.
///
/// Expiry times are stored as SQLite integers, so a time-to-live reaching past
/// `i64::MAX` milliseconds (about 292 million years) is shortened to end there.
pub struct SqliteLeaseCoordinator {
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteLeaseCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLeaseCoordinator")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Why the SQLite backend failed (as opposed to a refused transition).
#[derive(Debug, thiserror::Error)]
enum SqliteLeaseError {
    /// Opening, migrating, locking or writing the database failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A stored row cannot be read back as a lease.
    #[error("stored lease of resource {resource:?} is invalid: {reason}")]
    InvalidRow {
        /// The resource.
        resource: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value to store does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} does not fit an SQLite integer")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The blocking task running the transaction panicked or was cancelled.
    #[error("the lease worker task failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl From<rusqlite::Error> for SqliteLeaseError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(map_sqlite(e))
    }
}

impl From<SqliteLeaseError> for LeaseCoordinatorError {
    fn from(e: SqliteLeaseError) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// A transition's outcome: refused (nothing changed) or the value, inside a backend result.
type Outcome<T> = Result<Result<T, LeaseError>, SqliteLeaseError>;

impl SqliteLeaseCoordinator {
    /// Opens (creating if needed) the database file at `path` with default
    /// [`SqliteOptions`], asserts its PRAGMAs and applies pending migrations. Leases expire by
    /// `clock`. Blocking: call it before entering, or off, the async runtime.
    pub fn open(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseCoordinatorError> {
        Self::open_with_options(path, SqliteOptions::default(), clock)
    }

    /// Like [`open`](Self::open), with explicit durability and busy-timeout options.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseCoordinatorError> {
        let path = path.as_ref();
        let mut conn = open_file(path, &options).map_err(SqliteLeaseError::from)?;
        migrate(&mut conn).map_err(SqliteLeaseError::from)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            clock,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the blocking pool with the connection locked and the clock at hand.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &dyn Clock) -> Outcome<T> + Send + 'static,
    ) -> Result<T, LeaseCoordinatorError> {
        let conn = Arc::clone(&self.conn);
        let clock = Arc::clone(&self.clock);
        let outcome = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (an open
            // transaction rolls back on drop), so a poisoned lock is safe to keep using.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn, clock.as_ref())
        })
        .await
        .map_err(SqliteLeaseError::Worker)?;
        Ok(outcome??)
    }

    /// One transition on `resource` in one `BEGIN IMMEDIATE` transaction: read the slot, apply
    /// the pure transition at the clock's time (read once the write lock is held, so times
    /// follow the order of transitions), write the slot back. A refusal rolls back.
    async fn transition<T: Send + 'static>(
        &self,
        resource: &str,
        apply: impl FnOnce(&mut LeaseSlot, u64) -> Result<T, LeaseError> + Send + 'static,
    ) -> Result<T, LeaseCoordinatorError> {
        let resource = resource.to_owned();
        self.run(move |conn, clock| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now_ms = u64::try_from(clock.now_ms()).unwrap_or(0);
            let mut slot =
                read_slot(&tx, &resource)?.unwrap_or_else(|| LeaseSlot::new(resource.as_str()));
            let out = match apply(&mut slot, now_ms) {
                Ok(out) => out,
                Err(refused) => return Ok(Err(refused)),
            };
            write_slot(&tx, &slot)?;
            tx.commit()?;
            Ok(Ok(out))
        })
        .await
    }
}

/// `ttl_ms` shortened so that `now_ms + ttl_ms` fits an SQLite integer.
fn storable_ttl(now_ms: u64, ttl_ms: u64) -> u64 {
    ttl_ms.min(MAX_STORED_MS.saturating_sub(now_ms))
}

fn read_slot(conn: &Connection, resource: &str) -> Result<Option<LeaseSlot>, SqliteLeaseError> {
    type Row = (Option<String>, Option<i64>, Option<i64>, i64);
    let row: Option<Row> = conn
        .prepare_cached(SELECT_SLOT)?
        .query_row([resource], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((holder, epoch, expires_at_ms, highest_epoch)) = row else {
        return Ok(None);
    };
    let invalid = |reason: String| SqliteLeaseError::InvalidRow {
        resource: resource.to_owned(),
        reason,
    };
    let unsigned =
        |what: &str, v: i64| u64::try_from(v).map_err(|_| invalid(format!("negative {what}")));
    let current = match (holder, epoch, expires_at_ms) {
        (Some(holder), Some(epoch), Some(expires_at_ms)) => Some(Lease {
            resource: resource.to_owned(),
            holder: DeviceId::parse(&holder).map_err(|e| invalid(e.to_string()))?,
            epoch: Epoch::new(unsigned("epoch", epoch)?),
            expires_at_ms: unsigned("expiry", expires_at_ms)?,
        }),
        (None, None, None) => None,
        _ => return Err(invalid("a lease with missing columns".to_owned())),
    };
    let highest = Epoch::new(unsigned("highest epoch", highest_epoch)?);
    Ok(Some(LeaseSlot::restore(resource, current, highest)))
}

fn write_slot(conn: &Connection, slot: &LeaseSlot) -> Result<(), SqliteLeaseError> {
    let signed = |what: &'static str, value: u64| {
        i64::try_from(value).map_err(|_| SqliteLeaseError::OutOfRange { what, value })
    };
    let current = slot.current();
    let (holder, epoch, expires_at_ms) = match current {
        Some(l) => (
            Some(l.holder.to_string()),
            Some(signed("epoch", l.epoch.get())?),
            Some(signed("expiry", l.expires_at_ms)?),
        ),
        None => (None, None, None),
    };
    conn.prepare_cached(UPSERT_SLOT)?.execute(params![
        slot.resource(),
        holder,
        epoch,
        expires_at_ms,
        signed("highest epoch", slot.highest_epoch().get())?,
    ])?;
    Ok(())
}

#[async_trait]
impl LeaseCoordinator for SqliteLeaseCoordinator {
    async fn acquire(
        &self,
        resource: &str,
        holder: DeviceId,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError> {
        self.transition(resource, move |slot, now| {
            slot.acquire(holder, now, storable_ttl(now, ttl_ms))
        })
        .await
    }

    async fn renew(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError> {
        self.transition(resource, move |slot, now| {
            slot.renew(holder, epoch, now, storable_ttl(now, ttl_ms))
        })
        .await
    }

    async fn release(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
    ) -> Result<(), LeaseCoordinatorError> {
        self.transition(resource, move |slot, _| slot.release(holder, epoch))
            .await
    }

    async fn current(&self, resource: &str) -> Result<Option<Lease>, LeaseCoordinatorError> {
        let resource = resource.to_owned();
        self.run(move |conn, _| {
            let slot = read_slot(conn, &resource)?;
            Ok(Ok(slot.and_then(|s| s.current().cloned())))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::system::ManualClock;

    fn device() -> DeviceId {
        DeviceId::from_uuid(uuid::Uuid::from_u128(7)).expect("non-nil")
    }

    fn open(dir: &tempfile::TempDir, now_ms: i64) -> SqliteLeaseCoordinator {
        let clock = Arc::new(ManualClock::new(now_ms));
        SqliteLeaseCoordinator::open(dir.path().join("tandem.db"), clock).expect("open")
    }

    #[tokio::test]
    async fn an_endless_ttl_is_stored_as_the_largest_sqlite_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = open(&dir, 1_000);
        let lease = c.acquire("r", device(), u64::MAX).await.expect("acquire");
        assert_eq!(lease.expires_at_ms, MAX_STORED_MS);
        assert_eq!(c.current("r").await.expect("current"), Some(lease.clone()));
        let renewed = c
            .renew("r", device(), lease.epoch, u64::MAX)
            .await
            .expect("renew");
        assert_eq!(renewed, lease);
    }

    #[tokio::test]
    async fn an_invalid_row_is_a_backend_error_not_a_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = open(&dir, 1_000);
        c.conn
            .lock()
            .expect("lock")
            .execute(
                "INSERT INTO leases VALUES ('r', 'not-a-device', 1, 5, 1)",
                [],
            )
            .expect("insert");
        let err = c.current("r").await.expect_err("invalid holder");
        assert!(
            matches!(err, LeaseCoordinatorError::Backend(_)),
            "unexpected {err:?}"
        );
        assert!(err.to_string().contains("invalid"), "{err}");
        let err = c
            .acquire("r", device(), 10)
            .await
            .expect_err("no transition");
        assert!(matches!(err, LeaseCoordinatorError::Backend(_)));
    }

    #[tokio::test]
    async fn the_schema_refuses_a_half_written_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = open(&dir, 1_000);
        let conn = c.conn.lock().expect("lock");
        for row in [
            "('r', NULL, 1, 5, 1)",
            "('r', 'x', NULL, 5, 1)",
            "('r', 'x', 2, 5, 1)",
        ] {
            let sql = format!("INSERT INTO leases VALUES {row}");
            assert!(conn.execute(&sql, []).is_err(), "{row} was accepted");
        }
    }
}
