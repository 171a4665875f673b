//! Checkpoints, rebase, reopen, and what the relay's files never contain.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::memory::MemoryRelay;
use tandem::adapters::system::ManualClock;
use tandem::app::sync::{DeviceSync, SyncConfig, SyncError};
use tandem::domain::oplog::{Checkpoint, Scope, Surface};
use tandem::ports::{Clock, Relay, RelayError};

use super::harness::{clock, fact, file_journal, memory_journal, org, said, World};

/// A manual clock and a world of devices over a fresh in-memory relay (returned too, for gc
/// and checkpoint reads).
fn memory_world() -> (Arc<ManualClock>, Arc<MemoryRelay>, World) {
    let clock = clock();
    let relay = Arc::new(MemoryRelay::new());
    let world = World::new(Arc::clone(&relay) as Arc<dyn Relay>, Arc::clone(&clock));
    (clock, relay, world)
}

async fn chatter(d: &mut DeviceSync, tag: &str, n: usize) {
    for i in 0..n {
        d.record_turn(Scope::Personal, "c", said(&format!("{tag} {i}")))
            .await
            .expect("turn");
        d.append(
            Scope::Personal,
            Surface::Knowledge,
            fact(&format!("{tag}{}", i % 3), tag),
        )
        .await
        .expect("fact");
    }
}

#[tokio::test]
async fn a_new_device_rebased_on_a_checkpoint_plus_the_tail_equals_full_replay() {
    let (clock, relay, world) = memory_world();
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    assert_eq!(
        a.publish_checkpoint().await.expect("publish"),
        None,
        "nothing stable yet"
    );

    chatter(&mut a, "a", 10).await;
    chatter(&mut b, "b", 5).await;
    for _ in 0..2 {
        a.pump().await.expect("a pumps");
        b.pump().await.expect("b pumps");
    }
    let id = a
        .publish_checkpoint()
        .await
        .expect("publish")
        .expect("a checkpoint at the stable frontier");
    assert_eq!(a.publish_checkpoint().await.expect("again"), Some(id));
    let now = u64::try_from(clock.now_ms()).expect("positive");
    let gc = relay.gc(now, u64::MAX / 2).await.expect("gc");
    assert_eq!(gc.deleted, 30, "every op is covered");

    clock.advance(10);
    chatter(&mut a, "tail", 3).await;
    a.pump().await.expect("a pumps the tail");

    let mut c = world.device(3, &clock).await;
    let report = c.pump().await.expect("c bootstraps");
    assert!(report.rebased, "the compacted pull made c rebase");
    assert_eq!(report.journaled, 6, "only the tail was pulled");
    assert_eq!(c.base_checkpoint(), Some(id));
    assert_eq!(
        c.state_hash(),
        a.state_hash(),
        "checkpoint + tail == full replay"
    );
    assert_eq!(c.transcript("c"), a.transcript("c"));
    assert_eq!(c.frontier(), a.frontier());
    assert!(!c.rebase().await.expect("rebase again"), "already the base");
}

/// A device whose base checkpoint ends a chain exactly where the stable frontier does, while
/// its journal holds later ops of that chain, publishes the checkpoint at the stable frontier
/// (it used to refuse, mistaking the first journaled op after the base for a fork).
#[tokio::test]
async fn a_checkpoint_at_the_stable_frontier_can_start_at_the_devices_own_base() {
    let (clock, relay, world) = memory_world();
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    chatter(&mut a, "a", 3).await;
    a.pump().await.expect("a pushes");
    b.pump().await.expect("b acknowledges a's ops");
    let first = a
        .publish_checkpoint()
        .await
        .expect("publish")
        .expect("a checkpoint of a's chain");
    let now = u64::try_from(clock.now_ms()).expect("positive");
    assert!(relay.gc(now, u64::MAX / 2).await.expect("gc").deleted > 0);

    // b starts its chain but hears no more of a's; a writes on past the checkpoint.
    chatter(&mut b, "b", 1).await;
    b.pump().await.expect("b pushes");
    chatter(&mut a, "tail", 2).await;
    a.pump().await.expect("a pushes its tail and pulls b's ops");

    // c starts from the checkpoint and holds a's tail in its journal.
    let mut c = world.device(3, &clock).await;
    assert!(c.pump().await.expect("c bootstraps").rebased);
    assert_eq!(c.base_checkpoint(), Some(first));

    // The stable frontier: a's chain where the checkpoint ends it (b has heard no more), b's
    // whole chain. b holds exactly that.
    let id = c
        .publish_checkpoint()
        .await
        .expect("publish at a chain's base head")
        .expect("a new checkpoint");
    assert_ne!(id, first);
    let published = relay
        .latest_checkpoint()
        .await
        .expect("read")
        .expect("present");
    assert_eq!(published.id(), id);
    assert_eq!(&published.frontier().clone(), b.frontier());
    assert_eq!(published.state_hash(), b.state_hash());
}

#[tokio::test]
async fn an_evicted_straggler_rebases_keeping_its_own_tail() {
    let (clock, relay, world) = memory_world();
    let config = SyncConfig {
        eviction_horizon_ms: 1_000,
        ..SyncConfig::default()
    };
    let mut a = world.device_with(1, memory_journal(), &clock, config).await;
    let mut b = world.device_with(2, memory_journal(), &clock, config).await;
    chatter(&mut a, "a", 4).await;
    chatter(&mut b, "b", 4).await;
    for _ in 0..2 {
        a.pump().await.expect("a pumps");
        b.pump().await.expect("b pumps");
    }
    // b goes quiet; a carries on past the eviction horizon.
    clock.advance(5_000);
    chatter(&mut a, "later", 4).await;
    a.pump().await.expect("a pumps");
    a.publish_checkpoint()
        .await
        .expect("publish")
        .expect("checkpoint");
    let now = u64::try_from(clock.now_ms()).expect("positive");
    assert!(relay.gc(now, 1_000).await.expect("gc").deleted > 0);

    // b wrote more while offline, then comes back.
    chatter(&mut b, "offline", 2).await;
    let report = b.pump().await.expect("b catches up");
    assert!(report.rebased);
    a.pump().await.expect("a pulls b's offline ops");
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(b.transcript("c").len(), a.transcript("c").len());
}

#[tokio::test]
async fn reopening_from_the_database_file_preserves_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tandem.db");
    let (clock, relay, world) = memory_world();
    let reopen = |candidate| {
        world.device_on(
            candidate,
            file_journal(&path),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
    };
    let mut a = reopen(1).await;
    let mut b = world.device(2, &clock).await;
    chatter(&mut a, "a", 3).await;
    chatter(&mut b, "b", 3).await;
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    a.pump().await.expect("a pumps");
    a.publish_checkpoint().await.expect("publish");
    let (hash, frontier, device) = (a.state_hash(), a.frontier().clone(), a.device_id());
    drop(a);

    let mut a = reopen(99).await;
    assert_eq!(
        a.device_id(),
        device,
        "the persisted id wins over a new candidate"
    );
    assert_eq!(a.state_hash(), hash);
    assert_eq!(a.frontier(), &frontier);
    let next = a
        .append(Scope::Personal, Surface::Command, json!("after reopen"))
        .await
        .expect("append");
    assert_eq!(next.seq.get(), 6, "the chain continues");
    assert!(next.hlc > frontier.head(device).expect("own head").hlc);
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    assert_eq!(a.state_hash(), b.state_hash());

    // A rebased journal reopens onto its base checkpoint.
    let c_path = dir.path().join("c.db");
    relay
        .gc(
            u64::try_from(clock.now_ms()).expect("positive"),
            u64::MAX / 2,
        )
        .await
        .expect("gc");
    let mut c = world
        .device_on(
            3,
            file_journal(&c_path),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
        .await;
    c.pump().await.expect("c bootstraps");
    let (c_hash, c_base) = (c.state_hash(), c.base_checkpoint());
    assert!(c_base.is_some());
    drop(c);
    let c = world
        .device_on(
            3,
            file_journal(&c_path),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
        .await;
    assert_eq!((c.state_hash(), c.base_checkpoint()), (c_hash, c_base));
    assert_eq!(c.state_hash(), a.state_hash());
}

#[tokio::test]
async fn a_checkpoint_that_fails_to_open_leaves_no_staged_state_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (clock, relay, world) = memory_world();
    let mut a = world.device(1, &clock).await;
    chatter(&mut a, "a", 4).await;
    a.pump().await.expect("a pumps");
    // A plaintext checkpoint of a's fold: its id verifies, but an E2E device must refuse it.
    let plain = Checkpoint::new(a.frontier().clone(), a.state());
    relay.put_checkpoint(&plain).await.expect("put");

    let mut c = world
        .device_on(
            3,
            file_journal(&dir.path().join("c.db")),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
        .await;
    let before = (c.state_hash(), c.frontier().clone(), c.base_checkpoint());
    let err = c
        .rebase()
        .await
        .expect_err("a plaintext checkpoint under E2E");
    assert!(
        matches!(err, SyncError::PlaintextCheckpoint { id } if id == plain.id()),
        "{err:?}"
    );
    let mut staged = Vec::new();
    files_under(&dir.path().join("c.db-base"), &mut staged);
    assert_eq!(
        staged,
        Vec::<std::path::PathBuf>::new(),
        "the staged state is gone"
    );
    assert_eq!(
        (c.state_hash(), c.frontier().clone(), c.base_checkpoint()),
        before
    );
    // The device still syncs from the ops themselves.
    let report = c.pump().await.expect("c pumps");
    assert_eq!(report.journaled, 8);
    assert_eq!(c.state_hash(), a.state_hash());
}

#[tokio::test]
async fn a_damaged_checkpoint_file_is_replaced_by_the_next_publish() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = Arc::new(FsRelay::open(dir.path()).expect("fs relay"));
    let clock = clock();
    let world = World::new(Arc::clone(&relay) as Arc<dyn Relay>, Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    chatter(&mut a, "a", 4).await;
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    a.pump().await.expect("a pumps");
    let first = a.publish_checkpoint().await.expect("publish");
    assert!(first.is_some());

    // One flipped byte in the middle of the stored checkpoint.
    let path = dir.path().join("checkpoint.json");
    let mut bytes = std::fs::read(&path).expect("read the checkpoint file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, &bytes).expect("damage it");
    let now = || u64::try_from(clock.now_ms()).expect("positive");
    let horizon = SyncConfig::default().eviction_horizon_ms;
    assert!(
        matches!(relay.latest_checkpoint().await, Err(RelayError::Corrupt(_))),
        "the damage is caught on read"
    );
    assert!(
        relay.gc(now(), horizon).await.is_err(),
        "gc needs a readable checkpoint"
    );

    // The same stable frontier: the next publish writes the same checkpoint afresh.
    assert_eq!(a.publish_checkpoint().await.expect("publish again"), first);
    let stored = relay.latest_checkpoint().await.expect("readable again");
    assert_eq!(stored.map(|cp| cp.id()), first);
    relay.gc(now(), horizon).await.expect("gc runs again");
    let mut c = world.device(3, &clock).await;
    c.pump().await.expect("c pumps");
    assert_eq!(c.state_hash(), a.state_hash());
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn holds(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).expect("read file");
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn e2e_canary_never_reaches_the_relay_directory() {
    const CANARY: &str = "canary-3c9f1e7b-never-in-clear";
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    let relay = Arc::new(FsRelay::open(&relay_dir).expect("fs relay"));
    let clock = clock();
    let world = World::new(relay as Arc<dyn Relay>, Arc::clone(&clock));
    let a_db = dir.path().join("a.db");
    let mut a = world
        .device_on(
            1,
            file_journal(&a_db),
            Arc::clone(&clock),
            Arc::clone(&world.keys),
            true,
        )
        .await;
    let mut b = world.device(2, &clock).await;

    a.record_turn(Scope::Personal, "c", said(&format!("the word is {CANARY}")))
        .await
        .expect("turn");
    a.append(
        org(),
        Surface::Preference,
        json!({"key": "motto", "value": CANARY}),
    )
    .await
    .expect("preference");
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    a.pump().await.expect("a acks");
    a.publish_checkpoint()
        .await
        .expect("publish")
        .expect("checkpoint");

    let turns = b.transcript("c");
    assert_eq!(turns.len(), 1);
    assert!(turns[0].text.contains(CANARY), "b reads the canary");

    let mut files = Vec::new();
    files_under(&relay_dir, &mut files);
    assert!(files.len() >= 3, "the relay wrote its files: {files:?}");
    // Positive control: the cleartext headers (the device id) are found by the same scan.
    let header = a.device_id().to_string();
    assert!(files.iter().any(|f| holds(f, header.as_bytes())));
    for file in &files {
        assert!(
            !holds(file, CANARY.as_bytes()),
            "canary in clear in {}",
            file.display()
        );
    }
    // The journal stores ops as exchanged, so the local database is sealed at rest too.
    let mut local = Vec::new();
    files_under(dir.path(), &mut local);
    let journal_files: Vec<_> = local
        .iter()
        .filter(|f| f.to_string_lossy().starts_with(&*a_db.to_string_lossy()))
        .collect();
    assert!(!journal_files.is_empty(), "the journal files exist");
    for file in journal_files {
        assert!(
            !holds(file, CANARY.as_bytes()),
            "canary in clear in {}",
            file.display()
        );
    }
}
