//! Epochs and leases survive closing and reopening the SQLite coordinator, and the coordinator
//! shares its database file with the store.

use std::sync::Arc;

use tandem::adapters::sqlite::{SqliteOptions, SqliteStore, SCHEMA_VERSION};
use tandem::adapters::system::ManualClock;
use tandem::domain::oplog::LeaseError;
use tandem::domain::{DeviceId, Epoch};
use tandem::ports::{LeaseCoordinator, LeaseCoordinatorError, Store};
use uuid::Uuid;

use super::fixtures::{open, T0};

const RESOURCE: &str = "agent-durable";
const TTL: u64 = 500;

fn device(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(n)).expect("non-nil")
}

#[tokio::test]
async fn epochs_keep_increasing_across_reopen_after_release_and_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tandem.db");
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (device(1), device(2));
    let mut expected = Epoch::ZERO;

    // Twelve close/reopen cycles, ending each lease a different way; every reopen is a fresh
    // connection, as a restarted process would have.
    for cycle in 0..12u64 {
        let holder = if cycle % 2 == 0 { a } else { b };
        let other = if cycle % 2 == 0 { b } else { a };
        let lease = {
            let c = open(&path, &clock);
            let lease = c.acquire(RESOURCE, holder, TTL).await.expect("acquire");
            expected = expected.next();
            assert_eq!(
                lease.epoch, expected,
                "cycle {cycle}: epoch reused or skipped"
            );
            lease
        };

        let c = open(&path, &clock);
        assert_eq!(
            c.current(RESOURCE).await.expect("current"),
            Some(lease.clone()),
            "cycle {cycle}: the live lease did not survive the reopen"
        );
        match c.acquire(RESOURCE, other, TTL).await {
            Err(LeaseCoordinatorError::Refused(LeaseError::Held {
                holder: h, epoch, ..
            })) => {
                assert_eq!((h, epoch), (holder, lease.epoch));
            }
            other => panic!("cycle {cycle}: a reopened live lease must be held, got {other:?}"),
        }
        // Each arm ends with the coordinator closed.
        match cycle % 3 {
            0 => {
                c.release(RESOURCE, holder, lease.epoch)
                    .await
                    .expect("release");
                drop(c);
            }
            1 => {
                clock.advance(TTL as i64);
                drop(c);
            }
            _ => {
                let renewed = c
                    .renew(RESOURCE, holder, lease.epoch, TTL)
                    .await
                    .expect("renew");
                assert_eq!(renewed.epoch, lease.epoch);
                drop(c);
                let c = open(&path, &clock);
                assert_eq!(c.current(RESOURCE).await.expect("current"), Some(renewed));
                clock.advance(TTL as i64);
                c.release(RESOURCE, holder, lease.epoch)
                    .await
                    .expect("the holder may release after expiry");
            }
        }

        let c = open(&path, &clock);
        let current = c.current(RESOURCE).await.expect("current");
        match cycle % 3 {
            1 => assert!(
                current.is_some_and(|l| l.epoch == lease.epoch && l.is_expired(clock_ms(&clock))),
                "cycle {cycle}: an expired lease is still reported after a reopen"
            ),
            _ => assert_eq!(current, None, "cycle {cycle}: a release did not survive"),
        }
    }
    assert_eq!(expected, Epoch::new(12));
}

fn clock_ms(clock: &ManualClock) -> u64 {
    use tandem::ports::Clock;
    u64::try_from(clock.now_ms()).expect("positive")
}

#[tokio::test]
async fn the_coordinator_and_the_store_share_one_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tandem.db");
    let clock = Arc::new(ManualClock::new(T0));

    // The store creates the file; the coordinator opens it as it is.
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("store");
    let me = store.local_device_id(device(9)).expect("device id");
    let c = open(&path, &clock);
    let lease = c.acquire(RESOURCE, me, TTL).await.expect("acquire");
    drop((store, c));

    // The coordinator creates a file; the store opens it, and both work side by side.
    let other = dir.path().join("leases-first.db");
    let c = open(&other, &clock);
    let first = c.acquire(RESOURCE, me, TTL).await.expect("acquire");
    let store = SqliteStore::open(&other, SqliteOptions::default()).expect("store");
    assert_eq!(
        store.local_device_id(device(8)).expect("device id"),
        device(8)
    );
    c.release(RESOURCE, me, first.epoch).await.expect("release");
    assert_eq!(
        c.acquire(RESOURCE, me, TTL).await.expect("acquire").epoch,
        Epoch::new(2)
    );

    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen store");
    assert_eq!(store.local_device_id(device(7)).expect("device id"), me);
    let c = open(&path, &clock);
    assert_eq!(c.current(RESOURCE).await.expect("current"), Some(lease));

    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, SCHEMA_VERSION);
}
