//! Lost replies and retries: the next pump converges with no duplicate.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tandem::adapters::memory::MemoryRelay;
use tandem::app::sync::SyncError;
use tandem::domain::oplog::{Scope, Surface};
use tandem::ports::RelayError;

use super::harness::{clock, FaultyRelay, World};

#[tokio::test]
async fn a_lost_push_reply_is_retried_and_deduplicated() {
    let clock = clock();
    let faulty = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&faulty) as _, Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    for i in 0..3 {
        a.append(Scope::Personal, Surface::Command, json!(i))
            .await
            .expect("append");
    }
    faulty.lose_push_replies.store(1, Ordering::SeqCst);
    let err = a.pump().await.expect_err("lost reply");
    assert!(
        matches!(err, SyncError::Relay(RelayError::Backend(_))),
        "{err}"
    );
    assert!(err.is_transient());
    let report = a.pump().await.expect("retry");
    assert_eq!((report.pushed, report.push_duplicates), (0, 3));
    let report = b.pump().await.expect("b pulls");
    assert_eq!(report.journaled, 3, "each op once");
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(b.state().events(&Surface::Command).count(), 3);
}

#[tokio::test]
async fn a_lost_ack_reply_leaves_the_pulled_ops_journaled_once() {
    let clock = clock();
    let faulty = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&faulty) as _, Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    a.append(Scope::Personal, Surface::Command, json!("x"))
        .await
        .expect("append");
    a.pump().await.expect("a pumps");
    faulty.lose_ack_replies.store(1, Ordering::SeqCst);
    assert!(b.pump().await.is_err());
    assert_eq!(
        b.state_hash(),
        a.state_hash(),
        "journaled and folded before the ack"
    );
    let report = b.pump().await.expect("retry");
    assert_eq!((report.pulled, report.journaled), (0, 0));
    assert_eq!(&report.acked, a.frontier());
}

#[tokio::test]
async fn reopening_after_a_lost_push_reply_resends_from_the_durable_cursor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a.db");
    let clock = clock();
    let faulty = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&faulty) as _, Arc::clone(&clock));
    let open = || {
        world.device_on(
            1,
            super::harness::file_journal(&path),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
    };
    let mut a = open().await;
    a.append(Scope::Personal, Surface::Command, json!("once"))
        .await
        .expect("append");
    faulty.lose_push_replies.store(1, Ordering::SeqCst);
    assert!(a.pump().await.is_err());
    drop(a);
    let mut a = open().await;
    let report = a.pump().await.expect("pump after reopen");
    assert_eq!((report.pushed, report.push_duplicates), (0, 1));
    let mut b = world.device(2, &clock).await;
    b.pump().await.expect("b pulls");
    assert_eq!(b.state().events(&Surface::Command).count(), 1);
}
