//! What a device refuses: tampered ops, far-future stamps, wrong keys, plaintext under E2E.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem::adapters::keys::StaticKeyProvider;
use tandem::adapters::memory::MemoryRelay;
use tandem::adapters::system::ManualClock;
use tandem::app::sync::DeviceSync;
use tandem::app::sync::SyncError;
use tandem::domain::crypto::{seal_with_aad, KeyEpoch, SessionKey};
use tandem::domain::ids::Seq;
use tandem::domain::oplog::Frontier;
use tandem::domain::oplog::{
    op_header_bytes, op_seal_aad, FoldError, Hlc, OpPayload, OpRecord, PayloadError, Scope,
    SealError, Surface, VerifyError,
};
use tandem::ports::{KeyError, KeyProvider, Relay};

use super::harness::{
    clock, dev, fact, keys, memory_journal, org, said, with_a_runaway_clock, FaultyRelay, World,
    RUNAWAY_MS, T0,
};

/// Devices 1 and 2 of `world`, both holding device 1's first turn.
async fn a_synced_pair(world: &World, clock: &Arc<ManualClock>) -> (DeviceSync, DeviceSync) {
    let mut a = world.device(1, clock).await;
    let mut b = world.device(2, clock).await;
    a.record_turn(Scope::Personal, "c", said("first"))
        .await
        .expect("turn");
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    (a, b)
}

/// Asserts that `device` still holds `hash` and `frontier`, in memory and in its journal.
async fn assert_unchanged(device: &mut DeviceSync, hash: [u8; 32], frontier: &Frontier) {
    assert_eq!(device.state_hash(), hash, "state changed");
    assert_eq!(device.frontier(), frontier, "frontier changed");
    let durable = device.status().await.expect("status").journal_frontier;
    assert_eq!(&durable, frontier, "journal changed");
}

#[tokio::test]
async fn a_tampered_pulled_op_is_refused_and_changes_nothing() {
    let clock = clock();
    let faulty = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&faulty) as _, Arc::clone(&clock));
    let (mut a, mut b) = a_synced_pair(&world, &clock).await;
    a.append(Scope::Personal, Surface::Knowledge, fact("k", "v"))
        .await
        .expect("fact");
    a.pump().await.expect("a pumps");

    let (hash, frontier) = (b.state_hash(), b.frontier().clone());
    faulty.tamper.store(true, Ordering::SeqCst);
    let err = b.pump().await.expect_err("tampered op");
    assert!(
        matches!(err, SyncError::Verify(VerifyError::OpIdMismatch { .. })),
        "{err}"
    );
    assert_unchanged(&mut b, hash, &frontier).await;

    faulty.tamper.store(false, Ordering::SeqCst);
    b.pump().await.expect("clean pump");
    assert_eq!(a.state_hash(), b.state_hash());
}

#[tokio::test]
async fn a_readdressed_ciphertext_verifies_as_a_chain_but_does_not_open() {
    let clock = clock();
    let faulty = Arc::new(FaultyRelay::new(Arc::new(MemoryRelay::new())));
    let world = World::new(Arc::clone(&faulty) as _, Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;
    a.record_turn(Scope::Personal, "c", said("only"))
        .await
        .expect("turn");
    a.pump().await.expect("a pumps");
    faulty.readdress.store(true, Ordering::SeqCst);
    let err = b.pump().await.expect_err("re-addressed op");
    assert!(
        matches!(err, SyncError::Seal(SealError::Decrypt { .. })),
        "{err}"
    );
    assert!(b.state().is_empty());
    assert!(b.frontier().is_empty());
}

#[tokio::test]
async fn far_future_stamps_are_refused_until_local_time_catches_up() {
    let (clock_a, _world, mut a, mut b) = with_a_runaway_clock().await;
    b.record_turn(Scope::Personal, "c", said("from the future"))
        .await
        .expect("turn");
    b.pump().await.expect("b pumps");
    let err = a.pump().await.expect_err("far-future op");
    assert!(
        matches!(err, SyncError::Verify(VerifyError::TooFarInFuture { .. })),
        "{err}"
    );
    assert!(a.state().is_empty() && a.frontier().is_empty());
    // A's own stamps were not dragged ahead by the refused op.
    let own = a
        .append(
            Scope::Personal,
            tandem::domain::oplog::Surface::Command,
            serde_json::json!("x"),
        )
        .await
        .expect("append");
    assert!(own.hlc.wall_ms < super::harness::T0 as u64 + 1_000);
    clock_a.advance(20_000);
    a.pump().await.expect("within the bound now");
    assert_eq!(a.transcript("c").len(), 1);
}

#[tokio::test]
async fn a_chain_stamped_too_far_ahead_does_not_hold_back_the_others() {
    let clock_a = clock();
    let clock_b = clock();
    let relay = Arc::new(MemoryRelay::new());
    let world = World::new(Arc::clone(&relay) as _, Arc::clone(&clock_a));
    let mut a = world.device(1, &clock_a).await;
    let mut b = world.device(2, &clock_b).await;
    let mut c = world.device(3, &clock_a).await;
    // B's first op is on time; C's chain (after B's in the relay's order) is on time too.
    b.record_turn(Scope::Personal, "b", said("on time"))
        .await
        .expect("turn");
    b.pump().await.expect("b pumps");
    a.pump().await.expect("a takes b's first op");
    // B's clock jumps ahead of A's by more than the bound.
    clock_b.advance(RUNAWAY_MS);
    b.record_turn(Scope::Personal, "b", said("from the future"))
        .await
        .expect("turn");
    b.pump().await.expect("b pumps");
    for i in 0..3 {
        c.record_turn(Scope::Personal, "c", said(&format!("c {i}")))
            .await
            .expect("turn");
    }
    assert!(
        matches!(
            c.pump().await,
            Err(SyncError::Verify(VerifyError::TooFarInFuture { .. }))
        ),
        "c pushes its own ops and holds b's chain back too"
    );

    let err = a.pump().await.expect_err("b's chain is held back");
    assert!(
        matches!(err, SyncError::Verify(VerifyError::TooFarInFuture { device, .. }) if device == b.device_id()),
        "{err}"
    );
    assert_eq!(a.transcript("c").len(), 3, "c's chain was taken");
    assert_eq!(
        a.transcript("b").len(),
        1,
        "b's chain stops before the far-future op"
    );
    let acked = relay
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .find(|e| e.device == a.device_id())
        .expect("a is registered")
        .acked;
    assert_eq!(acked, *a.frontier(), "what a took is acknowledged");
    assert_eq!(acked.head(c.device_id()).map(|h| h.seq.get()), Some(2));

    // Once local time is within the bound, the rest of b's chain comes through.
    clock_a.advance(20_000);
    a.pump().await.expect("within the bound now");
    assert_eq!(a.transcript("b").len(), 2);
    b.pump().await.expect("b pumps");
    c.pump().await.expect("c pumps");
    assert_eq!(a.state_hash(), c.state_hash());
}

#[tokio::test]
async fn a_chain_sealed_under_a_key_not_held_yet_does_not_hold_back_the_others() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    // A holds the personal key only; the org key has not reached it yet.
    let personal_only = Arc::new(StaticKeyProvider::new().with_key(
        Scope::Personal,
        KeyEpoch::FIRST,
        SessionKey::from_bytes([1; 32]),
    ));
    let mut a = world
        .device_on(
            1,
            memory_journal(),
            Arc::clone(&clock),
            Arc::clone(&personal_only) as Arc<dyn KeyProvider>,
            true,
        )
        .await;
    let mut b = world.device(2, &clock).await;
    let mut c = world.device(3, &clock).await;
    b.record_turn(Scope::Personal, "b", said("personal"))
        .await
        .expect("turn");
    b.record_turn(org(), "b-org", said("for the org"))
        .await
        .expect("turn");
    c.record_turn(Scope::Personal, "c", said("personal"))
        .await
        .expect("turn");
    b.pump().await.expect("b pumps");
    c.pump().await.expect("c pumps");

    let err = a.pump().await.expect_err("b's org op cannot be opened yet");
    assert!(
        matches!(
            err,
            SyncError::Keys(KeyError::UnknownEpoch { .. } | KeyError::NoKey { .. })
        ),
        "{err}"
    );
    assert_eq!(a.transcript("c").len(), 1, "c's chain was taken");
    assert_eq!(
        a.transcript("b").len(),
        1,
        "b's chain up to the org op was taken"
    );
    assert_eq!(
        a.frontier().head(b.device_id()).map(|h| h.seq.get()),
        Some(0)
    );
    assert!(!err.to_string().contains("for the org"));

    // Once the org key arrives, the rest of b's chain comes through.
    personal_only
        .insert(
            org(),
            KeyEpoch::FIRST,
            SessionKey::from_bytes([1 ^ 0x5a; 32]),
        )
        .expect("the org key arrives");
    a.pump().await.expect("a takes the rest");
    assert_eq!(a.transcript("b-org").len(), 1);
    b.pump().await.expect("b pumps");
    c.pump().await.expect("c pumps");
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.state_hash(), c.state_hash());
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_a_typed_error() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    a.record_turn(Scope::Personal, "c", said("secret"))
        .await
        .expect("turn");
    a.pump().await.expect("a pumps");

    let mut wrong = world
        .device_on(2, memory_journal(), Arc::clone(&clock), keys(9), true)
        .await;
    let err = wrong.pump().await.expect_err("wrong key");
    assert!(
        matches!(err, SyncError::Seal(SealError::Decrypt { .. })),
        "{err}"
    );
    assert!(wrong.state().is_empty() && wrong.frontier().is_empty());

    let later_epoch_only: Arc<dyn KeyProvider> = Arc::new(StaticKeyProvider::new().with_key(
        Scope::Personal,
        KeyEpoch::new(2),
        SessionKey::from_bytes([1; 32]),
    ));
    let mut missing = world
        .device_on(
            3,
            memory_journal(),
            Arc::clone(&clock),
            later_epoch_only,
            true,
        )
        .await;
    let err = missing.pump().await.expect_err("missing epoch");
    assert!(
        matches!(err, SyncError::Keys(KeyError::UnknownEpoch { .. })),
        "{err}"
    );
    assert!(!err.to_string().contains("secret"));
}

#[tokio::test]
async fn plaintext_ops_are_refused_under_e2e() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut plain = world
        .device_on(1, memory_journal(), Arc::clone(&clock), keys(1), false)
        .await;
    let mut sealed = world.device(2, &clock).await;
    let mut also_plain = world
        .device_on(3, memory_journal(), Arc::clone(&clock), keys(1), false)
        .await;
    plain
        .record_turn(Scope::Personal, "c", said("in the clear"))
        .await
        .expect("turn");
    plain.pump().await.expect("push");
    let err = sealed.pump().await.expect_err("plaintext under e2e");
    assert!(matches!(err, SyncError::PlaintextRefused { .. }), "{err}");
    assert!(sealed.state().is_empty());
    // Without E2E, plaintext is accepted.
    also_plain.pump().await.expect("plain pump");
    assert_eq!(also_plain.state_hash(), plain.state_hash());
}

/// Op 0 of device `n`'s chain on `surface` (personal scope, stamped at [`T0`]) whose payload
/// is `plaintext` sealed by hand under the world's personal key: what a device holding the
/// key could write without the author's checks.
fn hand_sealed(n: u128, surface: Surface, plaintext: &[u8]) -> OpRecord {
    let hlc = Hlc::new(T0 as u64, 0, dev(n));
    let header = op_header_bytes(dev(n), Seq::ZERO, None, &hlc, &Scope::Personal, &surface);
    let aad = op_seal_aad(&header, KeyEpoch::FIRST);
    let key = SessionKey::from_bytes([1; 32]);
    let sealed = seal_with_aad(&key, &aad, plaintext, &mut StdRng::seed_from_u64(7)).expect("seal");
    let payload = OpPayload::Sealed {
        key_epoch: KeyEpoch::FIRST.get(),
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
    };
    OpRecord::new(hlc, Seq::ZERO, None, Scope::Personal, surface, payload).expect("op")
}

/// Registers device `n` on `relay` and pushes `op`, its whole chain.
async fn push_by_hand(relay: &dyn Relay, n: u128, op: OpRecord) {
    relay.register(dev(n), T0 as u64).await.expect("register");
    relay
        .push(dev(n), &[op], T0 as u64)
        .await
        .expect("the relay checks headers only");
}

#[tokio::test]
async fn a_sealed_op_that_does_not_fit_its_surface_is_refused_and_changes_nothing() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let (mut a, mut b) = a_synced_pair(&world, &clock).await;
    let (hash, frontier) = (b.state_hash(), b.frontier().clone());
    a.record_turn(Scope::Personal, "c", said("second"))
        .await
        .expect("turn");
    a.pump().await.expect("a pumps");
    // A turn without a role: it opens, but it is not a conversation turn.
    let misfit = hand_sealed(
        9,
        Surface::Conversation,
        br#"{"conversation_id":"c","text":"x"}"#,
    );
    push_by_hand(world.relay.as_ref(), 9, misfit.clone()).await;

    let err = b.pump().await.expect_err("a misfit payload");
    assert!(
        matches!(
            &err,
            SyncError::Fold(FoldError::InvalidPayload { op_id, source: PayloadError::InvalidTurn(_), .. })
                if *op_id == misfit.op_id()
        ),
        "{err}"
    );
    // The whole batch is refused: A's second turn came with it and is not journaled either.
    assert_unchanged(&mut b, hash, &frontier).await;
}

#[tokio::test]
async fn a_sealed_op_of_json_that_is_not_canonical_folds_as_its_canonical_form() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut b = world.device(2, &clock).await;
    let mut c = world.device(3, &clock).await;
    let plaintext = br#"{ "text": "caf\u00e9", "role": "user", "conversation_id": "c" }"#;
    push_by_hand(
        world.relay.as_ref(),
        9,
        hand_sealed(9, Surface::Conversation, plaintext),
    )
    .await;
    b.pump().await.expect("b pumps");
    c.pump().await.expect("c pumps");

    let turns = b.transcript("c");
    assert_eq!(turns.len(), 1);
    let folded = b
        .state()
        .events(&Surface::Conversation)
        .next()
        .expect("the turn")
        .payload
        .clone();
    assert_eq!(
        folded.as_str(),
        r#"{"conversation_id":"c","role":"user","text":"café"}"#
    );
    assert_eq!(b.state_hash(), c.state_hash());
}

/// Log lines written while a [`LogCapture`]'s guard is held, on this thread.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures this thread's `tracing` events at INFO and above until the guard drops.
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// How many captured lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        let bytes = self.0.lock().expect("log buffer");
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }
}

#[tokio::test]
async fn a_clock_set_back_is_reported_while_its_stamps_stay_ahead() {
    const AHEAD: &str = "runs ahead of local time";
    let logs = LogCapture::default();
    let _guard = logs.start();
    let (clock_a, clock_b) = (clock(), clock());
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock_a));
    let mut a = world.device(1, &clock_a).await;
    let journal_b = memory_journal();
    let keys_b = Arc::clone(&world.keys);
    let mut b = world
        .device_on(
            2,
            Arc::clone(&journal_b),
            Arc::clone(&clock_b),
            keys_b,
            true,
        )
        .await;
    assert_eq!(b.status().await.expect("status").clock_ahead_ms, 0);

    // B's clock was wrong when it wrote a turn, and is set right afterwards.
    clock_b.advance(RUNAWAY_MS);
    b.record_turn(Scope::Personal, "b", said("while wrong"))
        .await
        .expect("turn");
    assert_eq!(
        b.clock_ahead_ms(),
        0,
        "within its own time, nothing is ahead"
    );
    clock_b.set(T0);
    assert_eq!(
        b.status().await.expect("status").clock_ahead_ms,
        RUNAWAY_MS as u64
    );
    assert_eq!(
        logs.count(AHEAD),
        0,
        "nothing authored since the clock went back"
    );

    // Its next ops are still stamped ahead: the warning comes once, not per append.
    for text in ["after", "and again"] {
        let op = b
            .record_turn(Scope::Personal, "b", said(text))
            .await
            .expect("turn");
        assert!(op.hlc.wall_ms >= (T0 + RUNAWAY_MS) as u64);
    }
    assert_eq!(logs.count(AHEAD), 1);
    b.pump().await.expect("b pumps");
    assert!(matches!(
        a.pump().await,
        Err(SyncError::Verify(VerifyError::TooFarInFuture { .. }))
    ));
    assert_eq!(
        a.status().await.expect("status").held_back,
        vec![b.device_id()]
    );

    // Reopened over its journal, B is still ahead, and says so.
    drop(b);
    let keys_b = Arc::clone(&world.keys);
    let mut b = world
        .device_on(2, journal_b, Arc::clone(&clock_b), keys_b, true)
        .await;
    assert!(b.clock_ahead_ms() >= RUNAWAY_MS as u64);
    assert_eq!(logs.count(AHEAD), 2);

    // Once local time has caught up, nothing is ahead or held back.
    clock_b.advance(RUNAWAY_MS + 1_000);
    clock_a.advance(RUNAWAY_MS + 1_000);
    assert_eq!(b.status().await.expect("status").clock_ahead_ms, 0);
    b.record_turn(Scope::Personal, "b", said("on time"))
        .await
        .expect("turn");
    assert_eq!(logs.count("back within the drift bound"), 1);
    b.pump().await.expect("b pumps");
    a.pump().await.expect("a takes b's chain");
    assert_eq!(a.transcript("b").len(), 4);
    assert!(a.status().await.expect("status").held_back.is_empty());
}
