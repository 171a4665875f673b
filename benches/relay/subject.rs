//! The subject: tandem's device sync as an application runs it. Each device is a
//! [`DeviceSync`] over its own [`SqliteJournal`] file, a [`FileKeyProvider`] over a shared key
//! file (the personal scope key, created by device A), an in-memory lease coordinator and one
//! [`FsRelay`] directory; E2E is on, clocks, ids and nonces are the production defaults, and
//! the sync settings are [`SyncConfig::default`]. The async API is driven from a
//! current-thread tokio runtime (journal, crypto and relay work runs on its blocking pool).
//!
//! A "pump until done" calls [`DeviceSync::pump`] until it no longer reports `more` (a pump
//! moves at most `max_rounds` batches each way).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::keys::FileKeyProvider;
use tandem::adapters::memory::InMemoryLeaseCoordinator;
use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions, Synchronous};
use tandem::adapters::system::SystemClock;
use tandem::app::sync::{DeviceSync, PumpReport, SyncConfig};
use tandem::domain::oplog::{ConversationTurn, Scope, Surface, Turn};
use tandem::domain::Role;
use tandem::ports::{Clock, KeyProvider, Relay};
use tokio::runtime::Runtime;

use crate::support::{serve, worker_progress, Side, Unit, WorkerRole};
use crate::workload::{self, Message};
use crate::{BootstrapParams, PushPullParams};

/// Ops per pull call (the default [`SyncConfig::pull_batch`]); the floor commits its inserts in
/// pages of the same size.
pub fn pull_page() -> usize {
    SyncConfig::default().pull_batch
}

/// A current-thread runtime with the blocking pool the session needs.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The files of one sync world: relay directory, key file, one journal per device.
#[derive(Debug, Clone)]
pub struct World {
    dir: PathBuf,
}

impl World {
    /// A world rooted at `dir` (created if missing).
    pub fn at(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("world dir");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The relay directory.
    pub fn relay_dir(&self) -> PathBuf {
        self.dir.join("relay")
    }

    /// The shared key file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("keys.json")
    }

    /// Opens device `name` (its journal is `<name>.db`), creating the personal key on first
    /// use of the key file.
    pub async fn device(&self, name: &str, sync: Synchronous) -> DeviceSync {
        self.device_on(name, &self.relay_dir(), sync).await
    }

    /// Opens device `name` over the relay in `relay_dir`.
    pub async fn device_on(&self, name: &str, relay_dir: &Path, sync: Synchronous) -> DeviceSync {
        let keys = FileKeyProvider::open(self.key_file()).expect("key file");
        // The first device creates the key; the others find it in the file.
        keys.current(&Scope::Personal).expect("personal key");
        let journal = SqliteJournal::open(
            self.dir.join(format!("{name}.db")),
            SqliteOptions::default().synchronous(sync),
        )
        .expect("journal");
        let relay: Arc<dyn Relay> = Arc::new(FsRelay::open(relay_dir).expect("relay"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        DeviceSync::builder(
            Arc::new(journal),
            relay,
            Arc::new(InMemoryLeaseCoordinator::new(clock)),
            Arc::new(keys),
        )
        .e2e(true)
        .open()
        .await
        .expect("open device")
    }
}

/// The op payload of a message: a conversation turn.
pub fn payload(m: &Message) -> Value {
    let role = if m.role == "user" {
        Role::User
    } else {
        Role::Assistant
    };
    ConversationTurn {
        conversation_id: m.conversation_id.clone(),
        turn: Turn::text(role, m.text.as_str()),
    }
    .to_payload()
}

/// Appends `msgs` on `device`, `group` ops per journal transaction.
pub async fn append(device: &mut DeviceSync, msgs: &[Message], group: usize) {
    for chunk in msgs.chunks(group.max(1)) {
        let entries = chunk
            .iter()
            .map(|m| (Scope::Personal, Surface::Conversation, payload(m)))
            .collect();
        device.append_batch(entries).await.expect("append a group");
    }
}

/// Pumps until a pump no longer reports `more`; returns the summed report counts.
pub async fn pump_until_done(device: &mut DeviceSync) -> PumpReport {
    let mut total = PumpReport::default();
    // Bounded: every pump moves up to max_rounds batches, and the workload is finite.
    for _ in 0..100_000 {
        let r = device.pump().await.expect("pump");
        total.pushed += r.pushed;
        total.pulled += r.pulled;
        total.journaled += r.journaled;
        total.folded += r.folded;
        total.rebased |= r.rebased;
        total.acked = r.acked;
        if !r.more {
            return total;
        }
    }
    panic!("pump never finished");
}

/// Conversation turns held in `device`'s fold.
pub fn held(device: &DeviceSync) -> usize {
    device.state().events(&Surface::Conversation).count()
}

/// Time spent by each step of one sync run.
#[derive(Debug, Clone, Copy)]
pub struct SyncRun {
    /// A: appending every message (group commits).
    pub append: Duration,
    /// A: pumping until its ops are on the relay.
    pub pump_a: Duration,
    /// B: pumping until it holds every op.
    pub pump_b: Duration,
}

impl SyncRun {
    /// All three steps.
    pub fn total(&self) -> Duration {
        self.append + self.pump_a + self.pump_b
    }
}

/// One sync run in the fresh world `dir`: devices A and B are opened (untimed), then A appends
/// `msgs`, A pumps, B pumps. Panics unless B holds every message.
pub fn sync_run(dir: &Path, msgs: &[Message], group: usize, sync: Synchronous) -> SyncRun {
    let world = World::at(dir);
    runtime().block_on(async {
        let mut a = world.device("a", sync).await;
        let mut b = world.device("b", sync).await;
        let started = Instant::now();
        append(&mut a, msgs, group).await;
        let append_time = started.elapsed();
        let started = Instant::now();
        let pushed = pump_until_done(&mut a).await.pushed;
        let pump_a = started.elapsed();
        let started = Instant::now();
        pump_until_done(&mut b).await;
        let pump_b = started.elapsed();
        assert_eq!(pushed, msgs.len(), "A pushed {pushed} of {}", msgs.len());
        let got = held(&b);
        assert_eq!(got, msgs.len(), "B holds {got} of {}", msgs.len());
        assert_eq!(a.state_hash(), b.state_hash(), "A and B disagree");
        SyncRun {
            append: append_time,
            pump_a,
            pump_b,
        }
    })
}

/// A fresh device in the world `dir` (an existing relay and key file) pumps until done;
/// returns how many messages it holds.
pub fn receive(dir: &Path, sync: Synchronous) -> usize {
    let world = World::at(dir);
    runtime().block_on(async {
        let mut b = world.device("receiver", sync).await;
        pump_until_done(&mut b).await;
        held(&b)
    })
}

/// Device A of the world `dir` appends `n` messages of `size` bytes each (one turn per
/// transaction) and pushes them.
pub fn push_large_messages(dir: &Path, n: usize, size: usize, sync: Synchronous) {
    let world = World::at(dir);
    runtime().block_on(async {
        let mut a = world.device("a", sync).await;
        for i in 0..n {
            let mut m = workload::message(i);
            m.text = m.text.repeat(size / m.text.len() + 1);
            m.text.truncate(size);
            append(&mut a, &[m], 1).await;
        }
        pump_until_done(&mut a).await;
    });
}

// ----- bootstrap ----------------------------------------------------------------------------

/// Builds the bootstrap fixture in `dir`: A appends `n - tail` messages and pumps, a second
/// device B pumps (so the stable frontier covers them), A publishes a checkpoint there, then
/// appends and pushes the `tail`. Leaves `relay/` (everything) and `relay-gc/` (a copy the
/// relay has garbage-collected down to what the checkpoint does not cover) and the key file.
/// Returns a note on what was built.
pub fn build_bootstrap_fixture(
    dir: &Path,
    p: &BootstrapParams,
    sync: Synchronous,
    progress: impl Fn(&str),
) -> String {
    let world = World::at(dir);
    let rt = runtime();
    rt.block_on(async {
        let started = Instant::now();
        let mut a = world.device("a", sync).await;
        let mut b = world.device("b", sync).await;
        let covered = p.n - p.tail;
        let step = 10_000;
        let mut done = 0;
        while done < covered {
            let end = (done + step).min(covered);
            append(&mut a, &workload::messages(done, end), 100).await;
            pump_until_done(&mut a).await;
            done = end;
            if done % 50_000 == 0 || done == covered {
                progress(&format!(
                    "  bootstrap fixture: {done}/{} ops on the relay ({:.1}s)",
                    p.n,
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        pump_until_done(&mut b).await;
        pump_until_done(&mut a).await;
        a.publish_checkpoint()
            .await
            .expect("publish")
            .expect("a checkpoint at the stable frontier");
        append(&mut a, &workload::messages(covered, p.n), 100).await;
        pump_until_done(&mut a).await;
        progress(&format!(
            "  bootstrap fixture: {} ops and a checkpoint at {covered} ({:.1}s)",
            p.n,
            started.elapsed().as_secs_f64()
        ));
    });
    let gc_dir = dir.join("relay-gc");
    workload::copy_dir(&world.relay_dir(), &gc_dir).expect("copy the relay");
    let report = rt.block_on(async {
        let relay = FsRelay::open(&gc_dir).expect("relay");
        let now = u64::try_from(SystemClock.now_ms()).unwrap_or(0);
        relay
            .gc(now, SyncConfig::default().eviction_horizon_ms)
            .await
            .expect("gc")
    });
    format!(
        "relay gc deleted {} covered ops; {:.1} MB of relay",
        report.deleted,
        workload::dir_bytes(&world.relay_dir()) as f64 / 1e6
    )
}

/// A bootstrap worker: every round a new device C opens a fresh journal over this side's copy
/// of the relay (untimed) and pumps until done (timed). The subject's copy was gc'd, so its
/// first pull finds the ops compacted and rebases from the checkpoint, then pulls the tail;
/// the baseline's copy holds every op and is replayed in full.
pub fn bootstrap_worker(role: &WorkerRole, side: Side, p: &BootstrapParams) {
    let root = PathBuf::from(&role.arg);
    let relay = root.join(side.as_str());
    let scratch = workload::temp_dir();
    let world = World::at(scratch.path());
    std::fs::copy(root.join("fixture").join("keys.json"), world.key_file()).expect("keys");
    let rt = runtime();
    let mut round = 0_usize;
    let mut run = || -> (f64, String, usize) {
        round += 1;
        let name = format!("c{round}");
        let (t, report, hash, got) = rt.block_on(async {
            let mut c = world.device_on(&name, &relay, SYNC).await;
            let started = Instant::now();
            let report = pump_until_done(&mut c).await;
            let t = started.elapsed();
            (t, report, c.state_hash_hex(), held(&c))
        });
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(scratch.path().join(format!("{name}.{ext}")));
        }
        // The journal's base checkpoint state file.
        let _ = std::fs::remove_dir_all(scratch.path().join(format!("{name}.db-base")));
        assert_eq!(got, p.n, "C holds {got} of {} messages", p.n);
        assert_eq!(
            report.rebased,
            side == Side::Subject,
            "the subject must rebase, the baseline replay"
        );
        (Unit::Millis.of(t), hash, report.journaled)
    };
    let (_, state, journaled) = run();
    worker_progress(
        role,
        &format!(
            "C journaled {journaled} ops (rebased: {})",
            side == Side::Subject
        ),
    );
    serve(
        || vec![run().0],
        || format!("state={state} journaled={journaled}"),
    );
}

const SYNC: Synchronous = crate::SYNC;

// ----- push/pull over a long history --------------------------------------------------------

/// A push/pull worker: builds A and B with `history` ops (A appends in group commits and
/// pumps, B pumps), then every round A appends `new_ops` (untimed) and pump A + pump B are
/// timed.
pub fn push_pull_worker(role: &WorkerRole, side: Side, p: &PushPullParams) {
    let history = match side {
        Side::Subject => p.history_large,
        Side::Baseline => p.history_small,
    };
    let scratch = workload::temp_dir();
    let world = World::at(scratch.path());
    let rt = runtime();
    let (mut a, mut b) = rt.block_on(async {
        let mut a = world.device("a", SYNC).await;
        let mut b = world.device("b", SYNC).await;
        build_history(role, &mut a, &mut b, history).await;
        (a, b)
    });
    let mut next = history;
    let mut run = || -> Vec<f64> {
        let msgs = workload::messages(next, next + p.new_ops);
        next += p.new_ops;
        rt.block_on(async {
            append(&mut a, &msgs, 100).await;
            let started = Instant::now();
            let pushed = pump_until_done(&mut a).await.pushed;
            let pump_a = started.elapsed();
            let started = Instant::now();
            let pulled = pump_until_done(&mut b).await.journaled;
            let pump_b = started.elapsed();
            assert_eq!((pushed, pulled), (msgs.len(), msgs.len()));
            vec![
                Unit::Millis.of(pump_a + pump_b),
                Unit::Millis.of(pump_a),
                Unit::Millis.of(pump_b),
            ]
        })
    };
    run();
    serve(run, || {
        format!(
            "history={history}: {:.0} MB relay",
            workload::dir_bytes(&world.relay_dir()) as f64 / 1e6
        )
    });
}

/// A appends `history` messages in group commits and both devices pump, in steps, with
/// progress on stderr.
async fn build_history(role: &WorkerRole, a: &mut DeviceSync, b: &mut DeviceSync, history: usize) {
    let started = Instant::now();
    let step = 20_000;
    let mut done = 0;
    while done < history {
        let end = (done + step).min(history);
        append(a, &workload::messages(done, end), 100).await;
        pump_until_done(a).await;
        pump_until_done(b).await;
        done = end;
        if done % 100_000 == 0 || done == history {
            worker_progress(
                role,
                &format!(
                    "history: {done}/{history} ops appended, pushed and pulled ({:.1}s)",
                    started.elapsed().as_secs_f64()
                ),
            );
        }
    }
    assert_eq!(held(b), history, "B holds the whole history");
}
