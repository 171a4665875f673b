//! Three processes share one relay directory. Two participants each push their own chain in
//! random batches (sometimes repeating ops they already pushed, which gc may have compacted
//! meanwhile), pull the other's, and ack; a collector, concurrently, puts a checkpoint at the
//! stable frontier whenever it moves and runs gc. Afterwards both chains verify and are
//! complete from the first seq gc kept, gc has compacted each to its head's segment, and the
//! roster holds both devices with their acks.
//!
//! The child processes re-run this test binary with only [`child_role`] selected and
//! `TANDEM_RELAY_CHILD` set; without it that test returns at once. `TANDEM_RELAY_SEED` fixes
//! the seed (default: from the time); it is printed on failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::child::ChildGuard;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tandem::adapters::fs_relay::FsRelay;
use tandem::domain::oplog::{verify_chain, ChainHead, ChainTip, Frontier, OpRecord};
use tandem::domain::{DeviceId, Seq};
use tandem::ports::conformance::relay::{chain, checkpoint, device, frontier_of};
use tandem::ports::{BatchLimit, PullBatch, PullCursors, Relay, RelayError};

use super::support::{runtime, TempDir};

const CHILD_ENV: &str = "TANDEM_RELAY_CHILD";
const OPS_PER_DEVICE: usize = 200;
const SEGMENT_OPS: u64 = 16;
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// The collector's role number.
const COLLECTOR: u64 = 2;
/// Far beyond the test's clock: no participant is evicted from the stable frontier.
const HORIZON_MS: u64 = 1 << 40;

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
    // Theirs from what this device holds; none of its own (it has them all).
    let cursors = |tip: &ChainTip| {
        PullCursors::from([(other, tip.next_seq()), (my_device, Seq::new(u64::MAX))])
    };
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
        let batch = relay
            .pull(my_device, &cursors(&their_tip), BatchLimit::ops(64), round)
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
    // Then pull and ack until the other chain is complete too, so the stable frontier reaches
    // both heads. Bounded by the deadline; waits briefly when nothing new arrived.
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut round = OPS_PER_DEVICE as u64;
    while theirs.len() < OPS_PER_DEVICE {
        assert!(Instant::now() < deadline, "the other chain never completed");
        round += 1;
        let batch = relay
            .pull(my_device, &cursors(&their_tip), BatchLimit::ops(64), round)
            .await
            .expect("pull");
        let Some(new) = batch.ops.get(&other) else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        their_tip = verify_chain(new, &their_tip, None).expect("pulled ops verify");
        theirs.extend(new.iter().cloned());
        let mut acked = frontier_of(&[&ops]);
        acked.set(their_tip);
        relay.ack(my_device, &acked, round).await.expect("ack");
    }
    assert_eq!(theirs, chain_of(1 - me), "the other chain as pulled");
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
    if me == COLLECTOR {
        runtime().block_on(collect(&dir));
    } else {
        runtime().block_on(participate(&dir, me, seed));
    }
}

/// Whether `stable` holds every op of both chains.
fn complete(stable: &Frontier) -> bool {
    (0..2).all(|i| {
        stable
            .head(participant(i))
            .is_some_and(|h| h.seq.get() + 1 == OPS_PER_DEVICE as u64)
    })
}

/// The collector: whenever the stable frontier moves, puts a checkpoint there and runs gc;
/// stops after doing so for the complete chains.
async fn collect(dir: &Path) {
    let relay = FsRelay::open(dir).expect("open relay");
    let chains = [chain_of(0), chain_of(1)];
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut last = Frontier::default();
    let (mut collected, mut passes) = (0, 0);
    // Bounded by the deadline; each pass reads the roster, and waits briefly if nothing moved.
    while Instant::now() < deadline {
        let stable = relay.stable_frontier(1, HORIZON_MS).await.expect("stable");
        if stable == last {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let covered: Vec<&[OpRecord]> = (0..2)
            .filter_map(|i| {
                let head = stable.head(participant(i))?;
                let len = usize::try_from(head.seq.get() + 1).expect("small seq");
                Some(&chains[i as usize][..len])
            })
            .collect();
        relay
            .put_checkpoint(&checkpoint(&covered))
            .await
            .expect("put checkpoint");
        collected += relay.gc(1, HORIZON_MS).await.expect("gc").deleted;
        passes += 1;
        if complete(&stable) {
            eprintln!("collector: {collected} ops collected in {passes} checkpoint and gc passes");
            return;
        }
        last = stable;
    }
    panic!("the chains were not complete and acknowledged within {CHILD_TIMEOUT:?}");
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

/// Everything the relay still stores, and the first seq kept of each compacted chain.
async fn pull_what_is_kept(relay: &FsRelay) -> (PullBatch, PullCursors) {
    let mut cursors = PullCursors::new();
    // Bounded: each refusal moves one of the two chains' cursors to what is kept.
    for _ in 0..=2 {
        match relay
            .pull(device(99), &cursors, BatchLimit::ops(usize::MAX), 1_000)
            .await
        {
            Ok(batch) => return (batch, cursors),
            Err(RelayError::Compacted {
                device,
                first_available,
            }) => {
                cursors.insert(device, first_available);
            }
            Err(e) => panic!("pull everything kept: {e}"),
        }
    }
    panic!("the pull was refused as compacted more often than there are chains");
}

#[test]
fn three_processes_push_pull_ack_and_collect_one_directory_without_losing_anything() {
    let seed = seed();
    let _report = SeedReporter(seed);
    let dir = TempDir::new();
    drop(dir.relay(SEGMENT_OPS)); // small segments: many rollovers and gcs under contention
    let children: Vec<_> = (0..=COLLECTOR)
        .map(|i| spawn_child(dir.path(), i, seed))
        .collect();
    for (i, (mut guard, stderr)) in children.into_iter().enumerate() {
        let text = stderr
            .recv_timeout(CHILD_TIMEOUT)
            .unwrap_or_else(|_| panic!("process {i} did not finish within {CHILD_TIMEOUT:?}"));
        let status = guard
            .0
            .take()
            .expect("child")
            .wait()
            .expect("wait for child");
        assert!(status.success(), "process {i} failed ({status}):\n{text}");
        if let Some(line) = text.lines().find(|l| l.starts_with("collector:")) {
            eprintln!("{line}");
        }
    }

    runtime().block_on(async {
        let relay = FsRelay::open(dir.path()).expect("reopen");
        let (batch, firsts) = pull_what_is_kept(&relay).await;
        assert!(!batch.more);
        // The collector's last gc covered both whole chains: all but the head's segment went.
        let head_segment = (OPS_PER_DEVICE as u64 - 1) / SEGMENT_OPS * SEGMENT_OPS;
        let roster = relay.roster().await.expect("roster");
        assert_eq!(roster.len(), 2, "both participants registered");
        for i in 0..2 {
            let d = participant(i);
            let ops = batch.ops.get(&d).cloned().unwrap_or_default();
            let first = firsts.get(&d).map_or(0, |s| s.get());
            assert_eq!(first, head_segment, "participant {i}'s chain after gc");
            let whole = chain_of(i);
            let kept = usize::try_from(first).expect("small seq");
            assert_eq!(
                ops,
                whole[kept..],
                "participant {i}'s chain is not complete"
            );
            let base = ChainTip {
                device: d,
                head: kept.checked_sub(1).map(|at| ChainHead::of(&whole[at])),
            };
            verify_chain(&ops, &base, None).expect("the stored chain verifies");
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
                let at = usize::try_from(h.seq.get()).expect("small seq");
                assert_eq!(
                    h.op_id,
                    chain_of(1 - i)[at].op_id(),
                    "participant {i} acked a wrong op"
                );
            }
        }
    });
}
