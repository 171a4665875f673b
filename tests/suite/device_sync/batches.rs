//! Large messages move in batches bounded by bytes as well as by count.

use std::sync::Arc;

use tandem::adapters::memory::MemoryRelay;
use tandem::app::sync::SyncConfig;
use tandem::domain::oplog::Scope;
use tandem::ports::Relay;

use super::harness::{clock, said, FaultyRelay, World};

const BUDGET: usize = 256 * 1024;

#[tokio::test]
async fn large_messages_move_in_batches_within_the_byte_budget() {
    let clock = clock();
    let relay = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&relay) as Arc<dyn Relay>, Arc::clone(&clock));
    let config = SyncConfig {
        batch_bytes: BUDGET,
        ..SyncConfig::default()
    };
    let mut a = world.device_with(1, &clock, config).await;
    let mut b = world.device_with(2, &clock, config).await;

    // Twelve turns of 60 kB, then one of 600 kB: more than the whole budget on its own.
    for i in 0..12 {
        let text = format!("{i:02}{}", "x".repeat(60_000));
        a.record_turn(Scope::Personal, "c1", said(&text))
            .await
            .expect("turn");
    }
    a.record_turn(Scope::Personal, "c1", said(&"y".repeat(600_000)))
        .await
        .expect("large turn");
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
        for (ops, bytes) in batches {
            assert!(
                bytes <= BUDGET || ops == 1,
                "a {what} of {ops} ops and {bytes} bytes passed the {BUDGET}-byte budget"
            );
        }
    }
}
