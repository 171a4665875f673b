//! Two processes share one relay directory: each pushes its own chain in random batches
//! (sometimes repeating ops it already pushed), pulls the other's, and acks, concurrently.
//! Afterwards both chains are complete and verify, and the roster holds both devices with
//! their acks.
//!
//! The child processes re-run this test binary with only [`child_role`] selected and
//! `TANDEM_RELAY_CHILD` set; without it that test returns at once. `TANDEM_RELAY_SEED` fixes
//! the seed (default: from the time); it is printed on failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tandem::adapters::fs_relay::FsRelay;
use tandem::domain::oplog::{verify_chain, ChainTip, Frontier, OpRecord};
use tandem::domain::{DeviceId, Seq};
use tandem::ports::conformance::relay::{chain, device, frontier_of};
use tandem::ports::{PullCursors, Relay};

use super::support::{runtime, TempDir};

const CHILD_ENV: &str = "TANDEM_RELAY_CHILD";
const OPS_PER_DEVICE: usize = 200;
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn participant(i: u64) -> DeviceId {
    device(100 + u128::from(i))
}

fn chain_of(i: u64) -> Vec<OpRecord> {
    chain(participant(i), OPS_PER_DEVICE, 1_000 + i * 7)
}

/// One participant: pushes its chain, pulls the other's, acks what it holds.
async fn participate(dir: &Path, me: u64, seed: u64) {
    let relay = FsRelay::open(dir).expect("open relay");
    let (my_device, other) = (participant(me), participant(1 - me));
    let ops = chain_of(me);
    let mut rng = StdRng::seed_from_u64(seed ^ (me + 1));
    relay.register(my_device, 1).await.expect("register");
    let mut pushed = 0;
    let mut theirs: Vec<OpRecord> = Vec::new();
    let mut their_tip = ChainTip::genesis(other);
    // Bounded: every round pushes at least one new op.
    for round in 1..=OPS_PER_DEVICE as u64 {
        let n = rng.gen_range(1..=8).min(OPS_PER_DEVICE - pushed);
        let from = if rng.gen_bool(0.25) {
            pushed.saturating_sub(3)
        } else {
            pushed
        };
        let out = relay
            .push(my_device, &ops[from..pushed + n], round)
            .await
            .expect("push");
        assert_eq!(
            (out.accepted, out.duplicates),
            (n, pushed - from),
            "round {round}"
        );
        pushed += n;
        let cursors = PullCursors::from([
            (other, their_tip.next_seq()),
            (my_device, Seq::new(u64::MAX)),
        ]);
        let batch = relay
            .pull(my_device, &cursors, 64, round)
            .await
            .expect("pull");
        if let Some(new) = batch.ops.get(&other) {
            their_tip = verify_chain(new, &their_tip, None).expect("pulled ops verify");
            theirs.extend(new.iter().cloned());
        }
        let mut acked = frontier_of(&[&ops[..pushed]]);
        acked.set(their_tip);
        relay.ack(my_device, &acked, round).await.expect("ack");
        if pushed == OPS_PER_DEVICE {
            break;
        }
    }
    assert_eq!(pushed, OPS_PER_DEVICE, "the loop ended early");
}

/// The child role: does nothing unless started by the parent test.
#[test]
fn child_role() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let me: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("participant");
    let seed: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seed");
    let dir = PathBuf::from(parts.next().expect("relay dir"));
    runtime().block_on(participate(&dir, me, seed));
}

/// Kills and reaps a child if the test bails out while it runs.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_child(dir: &Path, me: u64, seed: u64) -> (ChildGuard, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "relay::concurrent::child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{me}|{seed}|{}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text); // closes when the child exits
    });
    (ChildGuard(Some(child)), rx)
}

fn seed() -> u64 {
    match std::env::var("TANDEM_RELAY_SEED") {
        Ok(s) => s.trim().parse().expect("TANDEM_RELAY_SEED must be a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7),
    }
}

/// Prints the seed if the test fails anywhere.
struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "relay concurrency test FAILED; reproduce with TANDEM_RELAY_SEED={}",
                self.0
            );
        }
    }
}

#[test]
fn two_processes_push_pull_and_ack_one_directory_without_losing_anything() {
    let seed = seed();
    let _report = SeedReporter(seed);
    let dir = TempDir::new();
    drop(dir.relay(16)); // small segments: many segment rollovers under contention
    let children: Vec<_> = (0..2).map(|i| spawn_child(dir.path(), i, seed)).collect();
    for (i, (mut guard, stderr)) in children.into_iter().enumerate() {
        let text = stderr
            .recv_timeout(CHILD_TIMEOUT)
            .unwrap_or_else(|_| panic!("participant {i} did not finish within {CHILD_TIMEOUT:?}"));
        let status = guard
            .0
            .take()
            .expect("child")
            .wait()
            .expect("wait for child");
        assert!(
            status.success(),
            "participant {i} failed ({status}):\n{text}"
        );
    }

    runtime().block_on(async {
        let relay = FsRelay::open(dir.path()).expect("reopen");
        let batch = relay
            .pull(device(99), &PullCursors::new(), usize::MAX, 1_000)
            .await
            .expect("pull everything");
        assert!(!batch.more);
        let roster = relay.roster().await.expect("roster");
        assert_eq!(roster.len(), 2, "both participants registered");
        for i in 0..2 {
            let d = participant(i);
            let ops = batch.ops.get(&d).cloned().unwrap_or_default();
            assert_eq!(ops, chain_of(i), "participant {i}'s chain is not complete");
            verify_chain(&ops, &ChainTip::genesis(d), None).expect("the stored chain verifies");
            let entry = roster
                .iter()
                .find(|e| e.device == d)
                .expect("in the roster");
            let own: Frontier = frontier_of(&[&ops]);
            assert_eq!(
                entry.acked.head(d),
                own.head(d),
                "participant {i}'s final ack"
            );
            let other = participant(1 - i);
            if let Some(h) = entry.acked.head(other) {
                let theirs = batch.ops.get(&other).expect("other chain");
                let at = usize::try_from(h.seq.get()).expect("small seq");
                assert_eq!(
                    h.op_id,
                    theirs[at].op_id(),
                    "participant {i} acked a wrong op"
                );
            }
        }
    });
}
