//! Fixtures for the device-sync tests: devices over one relay, shared keys, a manual clock,
//! and relays that misbehave on purpose.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tandem::adapters::keys::StaticKeyProvider;
use tandem::adapters::memory::{InMemoryLeaseCoordinator, MemoryRelay};
use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions};
use tandem::adapters::system::ManualClock;
use tandem::app::sync::{DeviceSync, SyncConfig};
use tandem::domain::crypto::{KeyEpoch, SessionKey};
use tandem::domain::ids::{DeviceId, Seq};
use tandem::domain::oplog::{encoded_len, Checkpoint, Frontier, OpPayload, OpRecord, Scope};
use tandem::domain::oplog::{Turn, DEFAULT_MAX_DRIFT_MS};
use tandem::domain::Role;
use tandem::ports::{
    BatchLimit, Clock, GcReport, Journal, JournalCommit, JournalError, KeyProvider,
    LeaseCoordinator, PullBatch, PullCursors, PushOutcome, Relay, RelayError, RosterEntry,
};
use uuid::Uuid;

/// A fixed wall time the manual clocks start at.
pub const T0: i64 = 1_700_000_000_000;

/// Device `n`.
pub fn dev(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0xDE71_CE00_0000_0000_0000_0000_0000_0000 | n,
    ))
    .expect("non-nil")
}

/// The org scope the tests share.
pub fn org() -> Scope {
    Scope::shared("acme").expect("valid org")
}

/// Keys for the personal scope and `shared:acme`, built from `seed` (same seed, same keys).
pub fn keys(seed: u8) -> Arc<StaticKeyProvider> {
    Arc::new(
        StaticKeyProvider::new()
            .with_key(
                Scope::Personal,
                KeyEpoch::FIRST,
                SessionKey::from_bytes([seed; 32]),
            )
            .with_key(
                org(),
                KeyEpoch::FIRST,
                SessionKey::from_bytes([seed ^ 0x5a; 32]),
            ),
    )
}

/// What every device of one test shares.
pub struct World {
    /// The relay.
    pub relay: Arc<dyn Relay>,
    /// The lease coordinator.
    pub leases: Arc<dyn LeaseCoordinator>,
    /// The keys.
    pub keys: Arc<dyn KeyProvider>,
}

impl World {
    /// A world over `relay` with shared keys and an in-memory coordinator on `clock`.
    pub fn new(relay: Arc<dyn Relay>, clock: Arc<ManualClock>) -> Self {
        Self {
            relay,
            leases: Arc::new(InMemoryLeaseCoordinator::new(clock)),
            keys: keys(1),
        }
    }

    /// Opens device `n` on `journal` with its own clock and a seeded nonce RNG.
    pub async fn device_on(
        &self,
        n: u128,
        journal: Arc<dyn Journal>,
        clock: Arc<ManualClock>,
        keys: Arc<dyn KeyProvider>,
        e2e: bool,
    ) -> DeviceSync {
        let config = SyncConfig {
            e2e,
            ..SyncConfig::default()
        };
        self.open_device(n, journal, clock, keys, config).await
    }

    /// Device `n` on `journal`, shared keys, with `config`.
    pub async fn device_with(
        &self,
        n: u128,
        journal: Arc<dyn Journal>,
        clock: &Arc<ManualClock>,
        config: SyncConfig,
    ) -> DeviceSync {
        let keys = Arc::clone(&self.keys);
        self.open_device(n, journal, Arc::clone(clock), keys, config)
            .await
    }

    /// Opens device `n` with everything given and a nonce RNG seeded by `n`.
    async fn open_device(
        &self,
        n: u128,
        journal: Arc<dyn Journal>,
        clock: Arc<ManualClock>,
        keys: Arc<dyn KeyProvider>,
        config: SyncConfig,
    ) -> DeviceSync {
        DeviceSync::builder(
            journal,
            Arc::clone(&self.relay),
            Arc::clone(&self.leases),
            keys,
        )
        .clock(clock as Arc<dyn Clock>)
        .device_candidate(dev(n))
        .rng(Box::new(StdRng::seed_from_u64(n as u64)))
        .config(config)
        .open()
        .await
        .expect("open device")
    }

    /// Device `n` on a fresh in-memory journal, shared keys, E2E on.
    pub async fn device(&self, n: u128, clock: &Arc<ManualClock>) -> DeviceSync {
        self.device_on(
            n,
            memory_journal(),
            Arc::clone(clock),
            Arc::clone(&self.keys),
            true,
        )
        .await
    }
}

/// A manual clock at [`T0`].
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

/// How far a runaway clock runs ahead: 10 s past the default drift bound.
pub const RUNAWAY_MS: i64 = DEFAULT_MAX_DRIFT_MS as i64 + 10_000;

/// A world over a fresh in-memory relay (leases on the returned clock) with device 1 on that
/// clock and device 2 on a clock [`RUNAWAY_MS`] ahead of it: device 1 refuses device 2's ops
/// as far-future until its clock catches up.
pub async fn with_a_runaway_clock() -> (Arc<ManualClock>, World, DeviceSync, DeviceSync) {
    let (on_time, runaway) = (clock(), clock());
    runaway.advance(RUNAWAY_MS);
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&on_time));
    let a = world.device(1, &on_time).await;
    let b = world.device(2, &runaway).await;
    (on_time, world, a, b)
}

/// A fresh in-memory journal.
pub fn memory_journal() -> Arc<dyn Journal> {
    Arc::new(SqliteJournal::open_in_memory(SqliteOptions::default()).expect("journal"))
}

/// A journal in the database file at `path`.
pub fn file_journal(path: &Path) -> Arc<dyn Journal> {
    Arc::new(SqliteJournal::open(path, SqliteOptions::default()).expect("journal"))
}

/// A journal that records the size of every page read through [`Journal::ops_from`] and
/// otherwise passes every call through.
#[derive(Debug)]
pub struct PagingJournal {
    inner: Arc<dyn Journal>,
    /// Each `ops_from` answer so far: how many ops, and their encoded size.
    pub pages: Mutex<Vec<(usize, usize)>>,
}

impl PagingJournal {
    /// A recorder around `inner`.
    pub fn new(inner: Arc<dyn Journal>) -> Self {
        Self {
            inner,
            pages: Mutex::default(),
        }
    }
}

impl Journal for PagingJournal {
    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, JournalError> {
        self.inner.local_device_id(candidate)
    }

    fn commit(&self, ops: &[OpRecord]) -> Result<JournalCommit, JournalError> {
        self.inner.commit(ops)
    }

    fn frontier(&self) -> Result<Frontier, JournalError> {
        self.inner.frontier()
    }

    fn ops_from(
        &self,
        device: DeviceId,
        from: Seq,
        limit: BatchLimit,
    ) -> Result<Vec<OpRecord>, JournalError> {
        let ops = self.inner.ops_from(device, from, limit)?;
        let size = ops.iter().map(encoded_len).sum();
        self.pages.lock().expect("pages").push((ops.len(), size));
        Ok(ops)
    }

    fn push_cursor(&self, device: DeviceId) -> Result<Seq, JournalError> {
        self.inner.push_cursor(device)
    }

    fn advance_push_cursor(&self, device: DeviceId, next: Seq) -> Result<(), JournalError> {
        self.inner.advance_push_cursor(device, next)
    }

    fn base_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        self.inner.base_checkpoint()
    }

    fn install_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        self.inner.install_base(checkpoint)
    }

    fn stage_base(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        self.inner.stage_base(checkpoint)
    }

    fn discard_staged(&self) -> Result<(), JournalError> {
        self.inner.discard_staged()
    }
}

/// A user turn.
pub fn said(text: &str) -> Turn {
    Turn::text(Role::User, text)
}

/// A knowledge fact payload.
pub fn fact(key: &str, body: &str) -> Value {
    json!({"key": key, "body": body})
}

/// Pumps every device `rounds` times in order.
pub async fn pump_all(devices: &mut [&mut DeviceSync], rounds: usize) {
    for _ in 0..rounds {
        for d in devices.iter_mut() {
            d.pump().await.expect("pump");
        }
    }
}

/// A relay wrapper that can flip one byte of the first sealed op a pull returns, and fail
/// the next push or ack after letting the inner relay perform it (a reply lost in a crash).
#[derive(Debug)]
pub struct FaultyRelay {
    inner: Arc<dyn Relay>,
    /// Flip a ciphertext byte in pulled ops while set.
    pub tamper: AtomicBool,
    /// Re-address the first pulled op's sealed payload (valid id, wrong header) while set.
    pub readdress: AtomicBool,
    /// Fail this many pushes after they were stored.
    pub lose_push_replies: AtomicUsize,
    /// Fail this many acks after they were stored.
    pub lose_ack_replies: AtomicUsize,
    /// Each push's ops so far: how many, and their encoded size.
    pub pushes: Mutex<Vec<(usize, usize)>>,
    /// Each pull's answer so far: how many ops, and their encoded size.
    pub pulls: Mutex<Vec<(usize, usize)>>,
}

impl FaultyRelay {
    /// A well-behaved wrapper of `inner` until told otherwise.
    pub fn new(inner: Arc<dyn Relay>) -> Self {
        Self {
            inner,
            tamper: AtomicBool::new(false),
            readdress: AtomicBool::new(false),
            lose_push_replies: AtomicUsize::new(0),
            lose_ack_replies: AtomicUsize::new(0),
            pushes: Mutex::default(),
            pulls: Mutex::default(),
        }
    }
}

fn lost() -> RelayError {
    RelayError::Backend("the reply was lost".into())
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// `op` with one ciphertext byte flipped, still claiming its old id.
pub fn flip_ciphertext(op: &OpRecord) -> OpRecord {
    let mut v = serde_json::to_value(op).expect("op json");
    let ct = v["payload"]["sealed"]["ciphertext"]
        .as_str()
        .expect("sealed op")
        .to_owned();
    let flipped = if ct.starts_with('0') { "1" } else { "0" };
    v["payload"]["sealed"]["ciphertext"] = json!(format!("{flipped}{}", &ct[1..]));
    serde_json::from_value(v).expect("still an op")
}

/// `op`'s sealed payload under another header with a correct id (seq 0 of its chain, one
/// millisecond later): passes chain verification, must fail to open.
pub fn readdress(op: &OpRecord) -> OpRecord {
    let mut hlc = op.hlc();
    hlc.wall_ms += 1;
    OpRecord::new(
        hlc,
        op.seq(),
        op.prev(),
        op.scope().clone(),
        op.surface().clone(),
        op.payload().clone(),
    )
    .expect("well-formed op")
}

#[async_trait]
impl Relay for FaultyRelay {
    async fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        self.inner.register(device, now_ms).await
    }

    async fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError> {
        let size = ops.iter().map(encoded_len).sum();
        self.pushes.lock().expect("pushes").push((ops.len(), size));
        let outcome = self.inner.push(device, ops, now_ms).await?;
        if take(&self.lose_push_replies) {
            return Err(lost());
        }
        Ok(outcome)
    }

    async fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError> {
        let mut batch = self.inner.pull(reader, cursors, limit, now_ms).await?;
        let size = batch.ops.values().flatten().map(encoded_len).sum();
        self.pulls.lock().expect("pulls").push((batch.len(), size));
        let tamper = self.tamper.load(Ordering::SeqCst);
        let readdress_first = self.readdress.load(Ordering::SeqCst);
        if tamper || readdress_first {
            let target = batch
                .ops
                .values_mut()
                .flat_map(|ops| ops.iter_mut())
                .find(|op| {
                    matches!(op.payload(), OpPayload::Sealed { .. }) && op.device() != reader
                });
            if let Some(op) = target {
                *op = if tamper {
                    flip_ciphertext(op)
                } else {
                    readdress(op)
                };
            }
        }
        Ok(batch)
    }

    async fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError> {
        self.inner.ack(device, frontier, now_ms).await?;
        if take(&self.lose_ack_replies) {
            return Err(lost());
        }
        Ok(())
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>, RelayError> {
        self.inner.roster().await
    }

    async fn stable_frontier(&self, now_ms: u64, horizon_ms: u64) -> Result<Frontier, RelayError> {
        self.inner.stable_frontier(now_ms, horizon_ms).await
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError> {
        self.inner.put_checkpoint(checkpoint).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError> {
        self.inner.latest_checkpoint().await
    }

    async fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError> {
        self.inner.gc(now_ms, horizon_ms).await
    }
}
