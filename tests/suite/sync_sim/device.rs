//! One simulated device: its journal file, skewed clock, relay line, session, and what it was
//! ever told is durable.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions, Synchronous};
use tandem::adapters::system::ManualClock;
use tandem::app::sync::{AppendedOp, DeviceSync, SyncConfig};
use tandem::domain::ids::DeviceId;
use tandem::domain::oplog::{ChainTip, Frontier, OpId, State, Surface};
use tandem::ports::{Clock, Journal, KeyProvider, LeaseCoordinator, Relay};
use uuid::Uuid;

use super::relay::SimRelay;

/// An op this device's `append` acknowledged.
#[derive(Debug, Clone)]
pub struct OwnOp {
    /// What `append` returned.
    pub op: AppendedOp,
    /// Whether its surface is an event stream (each op stays visible in the fold by id).
    pub event: bool,
}

/// What every device shares.
#[derive(Clone)]
pub struct Shared {
    pub relay: Arc<dyn Relay>,
    pub leases: Arc<dyn LeaseCoordinator>,
    pub keys: Arc<dyn KeyProvider>,
    pub config: SyncConfig,
    pub seed: u64,
}

/// One device of the simulation.
pub struct SimDevice {
    /// Its index in the world.
    pub n: usize,
    /// Its id.
    pub id: DeviceId,
    /// Its clock (true time plus `skew_ms`).
    pub clock: Arc<ManualClock>,
    /// How far its clock is off true time.
    pub skew_ms: i64,
    /// Its line to the relay.
    pub relay: Arc<SimRelay>,
    /// Its journal (kept to check what is durable).
    pub journal: Arc<SqliteJournal>,
    /// The session.
    pub sync: DeviceSync,
    /// Steps left in the current partition (0: connected).
    pub partition_left: usize,
    /// Per chain, the highest head any pump acknowledged to the relay.
    pub acked: Frontier,
    /// Every op `append` acknowledged.
    pub own: Vec<OwnOp>,
    path: PathBuf,
    opens: u64,
}

/// Device `n`'s id.
pub fn device_id(n: usize) -> DeviceId {
    let n = u128::try_from(n).expect("small index") + 1;
    DeviceId::from_uuid(Uuid::from_u128(0x51_3000_0000_0000_0000_0000_0000_0000 | n))
        .expect("non-nil")
}

fn journal_options() -> SqliteOptions {
    // A simulated kill drops the process's objects, not the OS page cache: WAL with
    // synchronous=NORMAL is durable against it, and keeps the simulation fast.
    SqliteOptions::default().synchronous(Synchronous::Normal)
}

impl SimDevice {
    /// Opens device `n` with a fresh journal at `path`.
    pub async fn open(
        n: usize,
        path: PathBuf,
        shared: &Shared,
        now_ms: i64,
    ) -> Result<Self, String> {
        let clock = Arc::new(ManualClock::new(now_ms));
        let relay = Arc::new(SimRelay::new(Arc::clone(&shared.relay)));
        let journal = Arc::new(
            SqliteJournal::open(&path, journal_options()).map_err(|e| format!("journal: {e}"))?,
        );
        let sync = session(n, &journal, &relay, &clock, shared, 0).await?;
        Ok(Self {
            n,
            id: device_id(n),
            clock,
            skew_ms: 0,
            relay,
            journal,
            sync,
            partition_left: 0,
            acked: Frontier::new(),
            own: Vec::new(),
            path,
            opens: 1,
        })
    }

    /// Drops the session and the journal, as a killed process would, and opens both again
    /// from the file.
    pub async fn kill_and_reopen(&mut self, shared: &Shared) -> Result<(), String> {
        let journal = Arc::new(
            SqliteJournal::open(&self.path, journal_options())
                .map_err(|e| format!("reopen journal: {e}"))?,
        );
        let sync = session(
            self.n,
            &journal,
            &self.relay,
            &self.clock,
            shared,
            self.opens,
        )
        .await?;
        // The old session and journal connection are dropped here; the new ones were opened
        // first only because the fields must always hold values. Neither old one is used
        // after the kill, and SQLite lets two connections share the file meanwhile.
        self.sync = sync;
        self.journal = journal;
        self.opens += 1;
        Ok(())
    }

    /// Sets the device clock to `true_ms` plus its skew.
    pub fn tick_clock(&self, true_ms: i64) {
        self.clock.set(true_ms + self.skew_ms);
    }

    /// The device clock in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records appended ops.
    pub fn remember(&mut self, ops: &[AppendedOp], surfaces: &[Surface]) {
        for (op, surface) in ops.iter().zip(surfaces) {
            self.own.push(OwnOp {
                op: *op,
                event: is_event(surface),
            });
        }
    }

    /// Raises the acknowledged frontier to `acked`, per chain.
    pub fn note_acked(&mut self, acked: &Frontier) {
        for (device, head) in acked.iter() {
            if self.acked.head(*device).is_none_or(|h| h.seq < head.seq) {
                self.acked.set(ChainTip {
                    device: *device,
                    head: Some(*head),
                });
            }
        }
    }
}

/// Opens a session over `journal`; each open draws nonces from its own seeded stream.
async fn session(
    n: usize,
    journal: &Arc<SqliteJournal>,
    relay: &Arc<SimRelay>,
    clock: &Arc<ManualClock>,
    shared: &Shared,
    opens: u64,
) -> Result<DeviceSync, String> {
    let nonce_seed = shared
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((n as u64) << 32 | opens);
    DeviceSync::builder(
        Arc::clone(journal) as Arc<dyn Journal>,
        Arc::clone(relay) as _,
        Arc::clone(&shared.leases),
        Arc::clone(&shared.keys),
    )
    .clock(Arc::clone(clock) as Arc<dyn Clock>)
    .device_candidate(device_id(n))
    .rng(Box::new(StdRng::seed_from_u64(nonce_seed)))
    .config(shared.config)
    .open()
    .await
    .map_err(|e| format!("open device {n}: {e}"))
}

/// Whether ops on `surface` stay individually visible in the fold.
pub fn is_event(surface: &Surface) -> bool {
    matches!(
        surface,
        Surface::Conversation | Surface::Trajectory | Surface::Run | Surface::Command
    )
}

/// Every event-stream op id in `state`.
pub fn event_ids(state: &State) -> HashSet<OpId> {
    [
        Surface::Conversation,
        Surface::Trajectory,
        Surface::Run,
        Surface::Command,
    ]
    .iter()
    .flat_map(|s| state.events(s).map(|e| e.op_id))
    .collect()
}
