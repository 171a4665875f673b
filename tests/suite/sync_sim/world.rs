//! The simulated world: devices over one relay and one lease coordinator, driven by a seeded
//! RNG one step at a time, with the invariants checked after every step.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tandem::adapters::fs_relay::{FsRelay, FsRelayOptions};
use tandem::adapters::keys::StaticKeyProvider;
use tandem::adapters::memory::{InMemoryLeaseCoordinator, MemoryRelay};
use tandem::adapters::system::ManualClock;
use tandem::app::sync::{SyncConfig, SyncError};
use tandem::domain::crypto::{KeyEpoch, SessionKey};
use tandem::domain::ids::Seq;
use tandem::domain::ids::{Epoch, RunId};
use tandem::domain::oplog::{Intent, IntentId, IntentStatus, Scope, Surface, Turn, VerifyError};
use tandem::domain::Role;
use tandem::ports::{BatchLimit, PullCursors, Relay};
use uuid::Uuid;

use super::checks;
use super::device::{Shared, SimDevice};
use super::stats::Stats;

/// Wall time the true clock starts at.
const T0: i64 = 1_700_000_000_000;
/// The largest clock skew of a device: twice this stays within the drift bound, so no honest
/// op is ever refused as far-future.
pub const MAX_SKEW_MS: i64 = 20_000;
/// How far past the drift bound a runaway clock may run ahead of true time: its ops are
/// refused as far-future (their chain held back) until the others' clocks catch up.
const MAX_RUNAWAY_MS: i64 = 30_000;
/// The drift bound the devices enforce.
const MAX_DRIFT_MS: u64 = 60_000;
/// Devices silent for longer are evicted from the stable frontier (about 60 steps).
pub const EVICTION_HORIZON_MS: u64 = 45_000;
/// The one resource leases are taken on.
pub const AGENT: &str = "agent:sim";
/// How many step descriptions a failure report shows.
const TRACE: usize = 40;

/// A run the world knows of, and who (if anyone) got `proceed` for it.
pub struct Run {
    pub id: RunId,
    pub intent: IntentId,
    pub proceeded: Option<(usize, Epoch)>,
}

/// The world of one seed.
pub struct World {
    pub seed: u64,
    pub rng: StdRng,
    pub step: usize,
    pub true_ms: i64,
    pub shared: Shared,
    pub relay: Arc<dyn Relay>,
    pub devices: Vec<SimDevice>,
    true_clock: Arc<ManualClock>,
    /// Every run created so far.
    pub runs: Vec<Run>,
    /// Every epoch a lease was ever granted at.
    pub epochs: Vec<Epoch>,
    counter: u64,
    last_pump_more: bool,
    trace: VecDeque<String>,
    pub stats: Stats,
    _dir: tempfile::TempDir,
}

/// Which relay the devices of a world share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// A [`MemoryRelay`].
    Memory,
    /// An [`FsRelay`] in the world's temp dir, with small segments so gc deletes some.
    Fs,
}

impl World {
    /// A world of 3–5 devices for `seed`, sharing a relay of `kind`.
    pub async fn new(seed: u64, kind: RelayKind) -> Result<Self, String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let relay: Arc<dyn Relay> = match kind {
            RelayKind::Memory => Arc::new(MemoryRelay::new()),
            RelayKind::Fs => {
                let options = FsRelayOptions { segment_ops: 4 };
                let relay = FsRelay::open_with(dir.path().join("relay"), options)
                    .map_err(|e| format!("open the relay: {e}"))?;
                Arc::new(relay)
            }
        };
        let true_clock = Arc::new(ManualClock::new(T0));
        let keys = StaticKeyProvider::new()
            .with_key(
                Scope::Personal,
                KeyEpoch::FIRST,
                SessionKey::from_bytes(rng.gen()),
            )
            .with_key(org(), KeyEpoch::FIRST, SessionKey::from_bytes(rng.gen()));
        let shared = Shared {
            relay: Arc::clone(&relay),
            leases: Arc::new(InMemoryLeaseCoordinator::new(true_clock.clone())),
            keys: Arc::new(keys),
            config: SyncConfig {
                // Odd seeds run without end-to-end encryption: both modes are supported.
                e2e: seed.is_multiple_of(2),
                max_drift_ms: MAX_DRIFT_MS,
                eviction_horizon_ms: EVICTION_HORIZON_MS,
                // Small batches so pumps take several relay calls: more places to crash.
                push_batch: 8,
                pull_batch: 16,
                ..SyncConfig::default()
            },
            seed,
        };
        let n = rng.gen_range(3..=5);
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.path().join(format!("device-{i}.db"));
            devices.push(SimDevice::open(i, path, &shared, T0).await?);
        }
        Ok(Self {
            seed,
            rng,
            step: 0,
            true_ms: T0,
            shared,
            relay,
            devices,
            true_clock,
            runs: Vec::new(),
            epochs: Vec::new(),
            counter: 0,
            last_pump_more: false,
            trace: VecDeque::with_capacity(TRACE),
            stats: Stats::default(),
            _dir: dir,
        })
    }

    /// Notes what a step did, for failure reports.
    pub fn note(&mut self, what: impl std::fmt::Display) {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("step {}: {what}", self.step));
    }

    /// The failure report: `msg` and the last steps.
    pub fn fail(&self, msg: impl std::fmt::Display) -> String {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        format!(
            "seed {} ({} devices), step {}: {msg}\nlast steps:\n  {}",
            self.seed,
            self.devices.len(),
            self.step,
            trace.join("\n  ")
        )
    }

    /// Runs `steps` random steps, checking the invariants after each.
    pub async fn run(&mut self, steps: usize) -> Result<(), String> {
        for step in 0..steps {
            self.step = step;
            self.advance_time();
            let d = self.rng.gen_range(0..self.devices.len());
            let roll = self.rng.gen_range(0..100);
            match roll {
                0..=29 => self.append(d).await?,
                30..=37 => self.intent(d).await?,
                38..=57 => self.pump(d).await?,
                58..=62 => self.pump_in_some_order().await?,
                63..=66 => self.partition(d),
                67..=71 => self.kill(d).await?,
                72..=76 => self.crash_mid_pump(d).await?,
                77..=79 => self.skew(d),
                80..=84 => self.checkpoint(d).await?,
                85..=86 => self.rebase(d).await?,
                _ => self.dispatch(d).await?,
            }
            self.stats.steps += 1;
            checks::same_frontier_same_hash(self)?;
        }
        Ok(())
    }

    fn advance_time(&mut self) {
        self.true_ms += self.rng.gen_range(0..1_500);
        self.true_clock.set(self.true_ms);
        for device in &mut self.devices {
            if device.partition_left > 0 {
                device.partition_left -= 1;
                if device.partition_left == 0 {
                    device.relay.set_partitioned(false);
                }
            }
            device.tick_clock(self.true_ms);
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn scope(&mut self) -> Scope {
        if self.rng.gen_bool(0.7) {
            Scope::Personal
        } else {
            org()
        }
    }

    /// One random entry to append.
    fn entry(&mut self, d: usize) -> (Scope, Surface, Value) {
        let scope = self.scope();
        let n = self.next();
        let pick = self.rng.gen_range(0..6);
        let (surface, payload) = match pick {
            0 | 1 => {
                let role = *[Role::User, Role::Assistant, Role::Tool, Role::System]
                    .choose(&mut self.rng)
                    .unwrap_or(&Role::User);
                let turn = Turn::text(role, format!("d{d} says {n}"));
                let conversation = format!("c{}", self.rng.gen_range(0..3));
                let payload = tandem::domain::oplog::ConversationTurn {
                    conversation_id: conversation,
                    turn,
                }
                .to_payload();
                (Surface::Conversation, payload)
            }
            2 => {
                let key = format!("k{}", self.rng.gen_range(0..5));
                if self.rng.gen_bool(0.2) {
                    (Surface::Knowledge, json!({"key": key, "deleted": true}))
                } else {
                    (Surface::Knowledge, json!({"key": key, "body": n}))
                }
            }
            3 => (
                Surface::Preference,
                json!({"key": format!("p{}", self.rng.gen_range(0..3)), "value": n}),
            ),
            4 => (Surface::Run, json!({"device": d, "n": n})),
            _ => (Surface::Command, json!(format!("make test # {n}"))),
        };
        (scope, surface, payload)
    }

    pub async fn append(&mut self, d: usize) -> Result<(), String> {
        let count = if self.rng.gen_bool(0.3) {
            self.rng.gen_range(2..=4)
        } else {
            1
        };
        let entries: Vec<_> = (0..count).map(|_| self.entry(d)).collect();
        let surfaces: Vec<Surface> = entries.iter().map(|(_, s, _)| s.clone()).collect();
        let ops = self.devices[d]
            .sync
            .append_batch(entries)
            .await
            .map_err(|e| self.fail(format!("device {d} append: {e}")))?;
        self.devices[d].remember(&ops, &surfaces);
        self.stats.appended += ops.len();
        self.note(format!(
            "device {d} appended {} op(s): {surfaces:?}",
            ops.len()
        ));
        Ok(())
    }

    /// A new run (a pending intent and a run event), or a status change of a known run.
    async fn intent(&mut self, d: usize) -> Result<(), String> {
        let (run_id, intent_id, status) = if self.runs.is_empty() || self.rng.gen_bool(0.5) {
            let id = RunId::from_uuid(Uuid::from_u128(self.rng.gen::<u128>() | 1))
                .map_err(|e| e.to_string())?;
            let intent = IntentId::parse(&format!("sim:{id}")).map_err(|e| e.to_string())?;
            self.runs.push(Run {
                id,
                intent: intent.clone(),
                proceeded: None,
            });
            (id, intent, IntentStatus::Pending)
        } else {
            let run = &self.runs[self.rng.gen_range(0..self.runs.len())];
            let status = *[
                IntentStatus::Pending,
                IntentStatus::Cancelled,
                IntentStatus::Failed,
            ]
            .choose(&mut self.rng)
            .unwrap_or(&IntentStatus::Pending);
            (run.id, run.intent.clone(), status)
        };
        let intent = Intent {
            intent_id,
            run_id,
            status,
        };
        let scope = self.scope();
        let device = &mut self.devices[d];
        let recorded = device
            .sync
            .record_intent(scope.clone(), &intent)
            .await
            .map_err(|e| format!("device {d} record_intent: {e}"))?;
        if let Some(op) = recorded {
            device.remember(&[op], &[Surface::Intent]);
            self.stats.appended += 1;
        }
        if status == IntentStatus::Pending {
            let op = device
                .sync
                .append(scope, Surface::Run, json!({"run": run_id.to_string()}))
                .await
                .map_err(|e| format!("device {d} append run: {e}"))?;
            device.remember(&[op], &[Surface::Run]);
            self.stats.appended += 1;
        }
        self.note(format!(
            "device {d} intent {} {} (recorded: {})",
            intent.intent_id,
            status.as_str(),
            recorded.is_some()
        ));
        Ok(())
    }

    /// Pumps device `d`: a partitioned one must fail without changing anything.
    pub async fn pump(&mut self, d: usize) -> Result<(), String> {
        let partitioned = self.devices[d].relay.is_partitioned();
        let before = partitioned.then(|| {
            (
                self.devices[d].sync.state_hash(),
                self.devices[d].sync.frontier().clone(),
            )
        });
        let result = self.devices[d].sync.pump().await;
        match (result, partitioned) {
            (Ok(report), false) => {
                self.stats.pumps += 1;
                self.last_pump_more = report.more;
                self.stats.rebased_by_pull += usize::from(report.rebased);
                self.stats.pulled += report.journaled;
                self.devices[d].note_acked(&report.acked);
                self.note(format!(
                    "device {d} pumped: pushed {} pulled {} journaled {} rebased {} more {}",
                    report.pushed, report.pulled, report.journaled, report.rebased, report.more
                ));
                Ok(())
            }
            (Err(e), true) if e.is_transient() => {
                let after = (
                    self.devices[d].sync.state_hash(),
                    self.devices[d].sync.frontier().clone(),
                );
                if Some(after) != before {
                    return Err(self.fail(format!(
                        "device {d}: a pump that reached no relay changed the session"
                    )));
                }
                self.stats.partitioned_pumps += 1;
                self.note(format!("device {d} is partitioned: pump failed ({e})"));
                Ok(())
            }
            (Ok(_), true) => Err(self.fail(format!("device {d} pumped through a partition"))),
            (Err(e), false) if is_held_back(&e) => self.held_back(d, &e).await,
            (Err(e), _) => Err(self.fail(format!("device {d} pump: {e}"))),
        }
    }

    /// Checks and records a pump that held back a chain stamped too far ahead (a runaway
    /// clock): it must have taken everything the relay holds of every other chain, and
    /// acknowledged its frontier.
    async fn held_back(&mut self, d: usize, e: &SyncError) -> Result<(), String> {
        self.stats.held_pumps += 1;
        self.last_pump_more = false;
        self.note(format!("device {d} pumped, holding a chain back ({e})"));
        let status = self.devices[d]
            .sync
            .status()
            .await
            .map_err(|e| self.fail(format!("device {d} status: {e}")))?;
        if status.held_back.is_empty() {
            return Err(self.fail(format!("device {d}: a held pump lists no held chain")));
        }
        // What the relay still has for this device past its journal, held chains skipped.
        let mut cursors: PullCursors = status
            .journal_frontier
            .iter()
            .map(|(device, head)| (*device, head.seq.next()))
            .collect();
        for device in &status.held_back {
            cursors.insert(*device, Seq::new(u64::MAX));
        }
        let now = u64::try_from(self.devices[d].now_ms()).unwrap_or(0);
        let left = self
            .shared
            .relay
            .pull(
                self.devices[d].id,
                &cursors,
                BatchLimit::ops(usize::MAX),
                now,
            )
            .await
            .map_err(|e| self.fail(format!("relay pull: {e}")))?;
        if let Some((chain, ops)) = left.ops.iter().next() {
            return Err(self.fail(format!(
                "device {d}: a pump holding {:?} back left {} op(s) of chain {chain} behind",
                status.held_back,
                ops.len()
            )));
        }
        self.devices[d].note_acked(&status.journal_frontier);
        Ok(())
    }

    /// Pumps device `d` until a pump reports nothing more waiting (a connected device).
    pub async fn pump_fully(&mut self, d: usize) -> Result<(), String> {
        for _ in 0..16 {
            self.pump(d).await?;
            if !self.last_pump_more {
                return Ok(());
            }
        }
        Err(self.fail(format!("device {d}: 16 pumps and still more waiting")))
    }

    async fn pump_in_some_order(&mut self) -> Result<(), String> {
        let mut order: Vec<usize> = (0..self.devices.len()).collect();
        order.shuffle(&mut self.rng);
        let skip = self.rng.gen_range(0..order.len());
        for &d in &order[skip..] {
            self.pump(d).await?;
        }
        Ok(())
    }

    fn partition(&mut self, d: usize) {
        let device = &mut self.devices[d];
        if device.partition_left > 0 {
            device.partition_left = 0;
            device.relay.set_partitioned(false);
            self.note(format!("device {d} healed"));
        } else {
            let steps = self.rng.gen_range(3..80);
            let device = &mut self.devices[d];
            device.partition_left = steps;
            device.relay.set_partitioned(true);
            self.stats.partitions += 1;
            self.note(format!("device {d} partitioned for {steps} steps"));
        }
    }

    /// Drops device `d`'s session and journal and reopens them from the file.
    pub async fn kill(&mut self, d: usize) -> Result<(), String> {
        let before = (
            self.devices[d].sync.state_hash(),
            self.devices[d].sync.frontier().clone(),
        );
        let shared = self.shared.clone();
        self.devices[d]
            .kill_and_reopen(&shared)
            .await
            .map_err(|e| self.fail(e))?;
        self.stats.kills += 1;
        self.note(format!("device {d} killed and reopened"));
        let after = (
            self.devices[d].sync.state_hash(),
            self.devices[d].sync.frontier().clone(),
        );
        if after.1 != before.1 {
            return Err(self.fail(format!(
                "device {d}: reopening changed the frontier from {:?} to {:?}",
                before.1, after.1
            )));
        }
        if after.0 != before.0 {
            return Err(self.fail(format!(
                "device {d}: reopening rebuilt another state than the one it had"
            )));
        }
        checks::nothing_acknowledged_lost(self, d).await
    }

    /// Lets the relay apply the k-th call of a pump, loses its reply, and kills the device.
    async fn crash_mid_pump(&mut self, d: usize) -> Result<(), String> {
        if self.devices[d].relay.is_partitioned() {
            return self.pump(d).await;
        }
        let k = self.rng.gen_range(0..8);
        self.devices[d].relay.crash_after(k);
        let result = self.devices[d].sync.pump().await;
        let crashed = self.devices[d].relay.disarm();
        match (result, crashed) {
            (Ok(report), false) => {
                self.devices[d].note_acked(&report.acked);
                self.note(format!("device {d} pumped before call {k} came"));
                Ok(())
            }
            (Err(_), true) => {
                self.stats.crashes_mid_pump += 1;
                self.note(format!("device {d} crashed after relay call {k} of a pump"));
                self.kill(d).await
            }
            (Ok(_), true) => Err(self.fail(format!(
                "device {d}: the pump succeeded although relay call {k} failed"
            ))),
            (Err(e), false) if is_held_back(&e) => self.held_back(d, &e).await,
            (Err(e), false) => Err(self.fail(format!("device {d} pump: {e}"))),
        }
    }

    /// Sets device `d`'s clock skew: mostly within the bound, sometimes a runaway clock
    /// ahead of it.
    fn skew(&mut self, d: usize) {
        let skew = if self.rng.gen_bool(0.25) {
            self.stats.runaway_clocks += 1;
            MAX_DRIFT_MS as i64 + self.rng.gen_range(1_000..=MAX_RUNAWAY_MS)
        } else {
            self.rng.gen_range(-MAX_SKEW_MS..=MAX_SKEW_MS)
        };
        self.devices[d].skew_ms = skew;
        self.devices[d].tick_clock(self.true_ms);
        self.note(format!("device {d} clock skew {skew} ms"));
    }

    /// Publishes a checkpoint from device `d` and, sometimes, collects the relay's garbage.
    async fn checkpoint(&mut self, d: usize) -> Result<(), String> {
        if self.devices[d].relay.is_partitioned() {
            return self.pump(d).await;
        }
        let published = self.devices[d]
            .sync
            .publish_checkpoint()
            .await
            .map_err(|e| self.fail(format!("device {d} publish_checkpoint: {e}")))?;
        self.stats.checkpoints += usize::from(published.is_some());
        let collected = if published.is_some() && self.rng.gen_bool(0.6) {
            let now = u64::try_from(self.true_ms).unwrap_or(0);
            let gc = self
                .relay
                .gc(now, EVICTION_HORIZON_MS)
                .await
                .map_err(|e| self.fail(format!("gc: {e}")))?;
            self.stats.gc_deleted += gc.deleted;
            Some(gc.deleted)
        } else {
            None
        };
        self.note(format!(
            "device {d} published checkpoint {published:?}; gc deleted {collected:?}"
        ));
        Ok(())
    }

    async fn rebase(&mut self, d: usize) -> Result<(), String> {
        if self.devices[d].relay.is_partitioned() {
            return self.pump(d).await;
        }
        let changed = self.devices[d]
            .sync
            .rebase()
            .await
            .map_err(|e| self.fail(format!("device {d} rebase: {e}")))?;
        self.stats.rebases += usize::from(changed);
        self.note(format!("device {d} rebase: changed {changed}"));
        checks::nothing_acknowledged_lost(self, d).await
    }

    /// Heals every partition and pumps every device, in rounds, until all hold the same
    /// frontier; fails if that takes more than `max_rounds`.
    pub async fn heal_and_converge(&mut self, max_rounds: usize) -> Result<usize, String> {
        // Every clock back within the bound, and true time past every stamp a runaway clock
        // gave, so no chain is held back any more.
        self.true_ms += MAX_DRIFT_MS as i64 + MAX_RUNAWAY_MS;
        self.true_clock.set(self.true_ms);
        for device in &mut self.devices {
            device.partition_left = 0;
            device.relay.set_partitioned(false);
            device.relay.disarm();
            device.skew_ms = device.skew_ms.min(MAX_SKEW_MS);
            device.tick_clock(self.true_ms);
        }
        self.note("every partition healed, every clock within the bound");
        for round in 1..=max_rounds {
            for d in 0..self.devices.len() {
                self.pump(d).await?;
            }
            let first = self.devices[0].sync.frontier().clone();
            if self.devices.iter().all(|x| *x.sync.frontier() == first) {
                return Ok(round);
            }
        }
        let frontiers: BTreeMap<usize, String> = self
            .devices
            .iter()
            .map(|x| (x.n, format!("{:?}", x.sync.frontier())))
            .collect();
        Err(self.fail(format!(
            "no convergence within {max_rounds} rounds after healing: {frontiers:?}"
        )))
    }
}

/// The shared org scope.
pub fn org() -> Scope {
    Scope::shared("acme").expect("valid org")
}

/// Whether a pump failed only because it held back a chain stamped too far ahead: it took
/// every other chain, and the held one comes through once local time catches up.
fn is_held_back(e: &SyncError) -> bool {
    matches!(e, SyncError::Verify(VerifyError::TooFarInFuture { .. }))
}
