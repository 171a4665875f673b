//! Large messages move in batches bounded by bytes as well as by count.

use std::sync::Arc;

use tandem::adapters::memory::MemoryRelay;
use tandem::app::sync::{DeviceSync, SyncConfig};
use tandem::domain::oplog::Scope;
use tandem::ports::{Journal, Relay};

use super::harness::{clock, memory_journal, said, FaultyRelay, PagingJournal, World};

const BUDGET: usize = 256 * 1024;

fn budget() -> SyncConfig {
    SyncConfig {
        batch_bytes: BUDGET,
        ..SyncConfig::default()
    }
}

/// Twelve turns of 60 kB, then one of 600 kB: more than the whole budget on its own.
async fn record_large_turns(device: &mut DeviceSync) {
    for i in 0..12 {
        let text = format!("{i:02}{}", "x".repeat(60_000));
        device
            .record_turn(Scope::Personal, "c1", said(&text))
            .await
            .expect("turn");
    }
    device
        .record_turn(Scope::Personal, "c1", said(&"y".repeat(600_000)))
        .await
        .expect("large turn");
}

/// Fails unless every batch of more than one op fits the budget.
fn assert_within_budget(what: &str, batches: &[(usize, usize)]) {
    for &(ops, bytes) in batches {
        assert!(
            bytes <= BUDGET || ops == 1,
            "a {what} of {ops} ops and {bytes} bytes passed the {BUDGET}-byte budget"
        );
    }
}

#[tokio::test]
async fn large_messages_move_in_batches_within_the_byte_budget() {
    let clock = clock();
    let relay = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&relay) as Arc<dyn Relay>, Arc::clone(&clock));
    let config = budget();
    let mut a = world.device_with(1, memory_journal(), &clock, config).await;
    let mut b = world.device_with(2, memory_journal(), &clock, config).await;
    record_large_turns(&mut a).await;
    let pushed = a.pump().await.expect("a pumps");
    assert_eq!((pushed.pushed, pushed.more), (13, false));
    let pulled = b.pump().await.expect("b pumps");
    assert_eq!((pulled.journaled, pulled.more), (13, false));
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.transcript("c1"), b.transcript("c1"));

    for (what, batches) in [("push", &relay.pushes), ("pull", &relay.pulls)] {
        let batches = batches.lock().expect("batches").clone();
        let moved: usize = batches.iter().map(|(ops, _)| ops).sum();
        assert_eq!(moved, 13, "every {what}ed op once: {batches:?}");
        assert!(
            batches.len() >= 4,
            "a {what} of 1.3 MB in {} batches: {batches:?}",
            batches.len()
        );
        assert_within_budget(what, &batches);
    }
}

#[tokio::test]
async fn replays_read_the_journal_in_pages_within_the_byte_budget() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let journal = Arc::new(PagingJournal::new(memory_journal()));
    let mut a = world
        .device_with(
            1,
            Arc::clone(&journal) as Arc<dyn Journal>,
            &clock,
            budget(),
        )
        .await;
    let mut b = world
        .device_with(2, memory_journal(), &clock, budget())
        .await;
    record_large_turns(&mut a).await;
    a.pump().await.expect("a pushes");
    b.pump().await.expect("b pulls");
    a.pump().await.expect("a sees b's ack");
    let pages =
        |journal: &PagingJournal| std::mem::take(&mut *journal.pages.lock().expect("pages"));
    pages(&journal);

    // Publishing folds the journal up to the stable frontier again.
    let published = a.publish_checkpoint().await.expect("publish");
    assert!(published.is_some(), "a checkpoint at the stable frontier");
    let read = pages(&journal);
    assert_within_budget("checkpoint page", &read);
    let paged: usize = read.iter().map(|(ops, _)| ops).sum();
    assert!(
        paged >= 13,
        "the checkpoint fold read {paged} of 13 ops: {read:?}"
    );

    // Reopening rebuilds the fold from the journal.
    let hash = a.state_hash();
    drop(a);
    let a = world
        .device_with(
            1,
            Arc::clone(&journal) as Arc<dyn Journal>,
            &clock,
            budget(),
        )
        .await;
    assert_eq!(a.state_hash(), hash);
    let read = pages(&journal);
    assert_within_budget("replay page", &read);
    let paged: usize = read.iter().map(|(ops, _)| ops).sum();
    assert!(paged >= 13, "the replay read {paged} of 13 ops: {read:?}");
    assert!(
        read.len() >= 4,
        "1.3 MB replayed in {} pages: {read:?}",
        read.len()
    );
}
