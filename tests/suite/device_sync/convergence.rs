//! Devices converge to the same state whatever the order they pump in.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::memory::MemoryRelay;
use tandem::app::sync::SyncError;
use tandem::domain::oplog::{OpError, Scope, Surface};
use tandem::domain::Role;
use tandem::ports::Relay;

use super::harness::{clock, fact, org, pump_all, said, World};

#[tokio::test]
async fn two_devices_converge_on_a_conversation_and_facts() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;

    a.record_turn(Scope::Personal, "c1", said("hello"))
        .await
        .expect("turn");
    a.append(Scope::Personal, Surface::Knowledge, fact("sky", "blue"))
        .await
        .expect("fact");
    a.pump().await.expect("a pumps");
    let report = b.pump().await.expect("b pumps");
    assert_eq!((report.pulled, report.journaled, report.folded), (2, 2, 2));
    clock.advance(5);
    b.record_turn(
        Scope::Personal,
        "c1",
        tandem::domain::oplog::Turn::text(Role::Assistant, "hi there"),
    )
    .await
    .expect("turn");
    b.pump().await.expect("b pumps");
    let report = a.pump().await.expect("a pumps");
    assert_eq!(report.journaled, 1);

    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.transcript("c1"), b.transcript("c1"));
    let (messages, repairs) = b.resume("c1");
    assert_eq!(messages.len(), 2);
    assert_eq!(
        (messages[0].role, messages[1].role),
        (Role::User, Role::Assistant)
    );
    assert!(repairs.is_clean());
    assert!(b
        .state()
        .live_record(&Surface::Knowledge, &Scope::Personal, "sky")
        .is_some());
    // Both acknowledged everything: the stable frontier is the full frontier.
    let status = a.status().await.expect("status");
    assert_eq!(status.stable_frontier, status.journal_frontier);
    assert_eq!(status.roster.len(), 2);
    assert_eq!(status.state_hash, b.state_hash_hex());
}

#[tokio::test]
async fn a_group_commit_appends_many_ops_in_order() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let entries = (0..100)
        .map(|i| (Scope::Personal, Surface::Command, json!(format!("ls {i}"))))
        .collect();
    let ops = a.append_batch(entries).await.expect("batch");
    assert_eq!(ops.len(), 100);
    assert!(ops
        .windows(2)
        .all(|w| w[1].seq.get() == w[0].seq.get() + 1 && w[1].hlc > w[0].hlc));
    assert_eq!(a.state().events(&Surface::Command).count(), 100);
    let mut b = world.device(2, &clock).await;
    a.pump().await.expect("push");
    b.pump().await.expect("pull");
    assert_eq!(a.state_hash(), b.state_hash());
    // An invalid entry refuses the whole batch.
    let bad = vec![
        (Scope::Personal, Surface::Command, json!("fine")),
        (Scope::Personal, Surface::Knowledge, json!({"no": "key"})),
    ];
    let before = a.state_hash();
    assert!(matches!(
        a.append_batch(bad).await,
        Err(SyncError::Op(OpError::InvalidPayload { .. }))
    ));
    assert_eq!(a.state_hash(), before);
    assert_eq!(
        a.append(Scope::Personal, Surface::Command, json!("next"))
            .await
            .expect("append")
            .seq
            .get(),
        100
    );
}

/// Three devices write and pump in a random order for a while; once everyone has pumped twice
/// more, all three hold the same state.
async fn three_devices_converge(relay: Arc<dyn Relay>, seed: u64) {
    // Printed with the test's output when it fails.
    eprintln!("three_devices_converge seed={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = clock();
    let world = World::new(relay, Arc::clone(&clock));
    let mut devices = [
        world.device(1, &clock).await,
        world.device(2, &clock).await,
        world.device(3, &clock).await,
    ];
    for step in 0..60 {
        let i = rng.gen_range(0..devices.len());
        clock.advance(rng.gen_range(0..3));
        let d = &mut devices[i];
        match rng.gen_range(0..5) {
            0 => {
                d.pump().await.expect("pump");
            }
            1 => {
                d.record_turn(Scope::Personal, "c", said(&format!("turn {step}")))
                    .await
                    .expect("turn");
            }
            2 => {
                let key = format!("k{}", rng.gen_range(0..3));
                d.append(
                    Scope::Personal,
                    Surface::Knowledge,
                    fact(&key, &step.to_string()),
                )
                .await
                .expect("fact");
            }
            3 => {
                let pref = json!({"key": "theme", "value": step});
                d.append(org(), Surface::Preference, pref)
                    .await
                    .expect("preference");
            }
            _ => {
                d.append(Scope::Personal, Surface::Command, json!(step))
                    .await
                    .expect("command");
            }
        }
    }
    let [a, b, c] = &mut devices;
    pump_all(&mut [a, b, c], 2).await;
    assert_eq!(a.state_hash(), b.state_hash(), "seed {seed}");
    assert_eq!(b.state_hash(), c.state_hash(), "seed {seed}");
    assert_eq!(a.frontier(), c.frontier(), "seed {seed}");
    assert!(!a.state().is_empty(), "seed {seed}");
}

#[tokio::test]
async fn three_devices_converge_in_any_pump_order_over_memory() {
    for seed in [1u64, 7, 42, 20_240_601] {
        three_devices_converge(Arc::new(MemoryRelay::new()), seed).await;
    }
}

#[tokio::test]
async fn three_devices_converge_in_any_pump_order_over_a_shared_directory() {
    for seed in [3u64, 99] {
        let dir = tempfile::tempdir().expect("temp dir");
        let relay = FsRelay::open(dir.path()).expect("fs relay");
        three_devices_converge(Arc::new(relay), seed).await;
    }
}
