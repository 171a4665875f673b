//! Two processes contend for one resource on one SQLite lease file.
//!
//! The parent re-runs this test binary twice, selecting [`contention_child`] with an
//! environment variable. Each child opens the (fresh) file itself, reports ready, waits for the
//! parent's go, then makes a bounded number of acquire attempts with short leases on the system
//! clock, releasing each lease after use (and abandoning a few, so the other process must wait
//! for them to expire). Each child records every lease it was granted; the parent checks that
//! no epoch was granted twice or skipped, that each process saw its epochs increase, and that
//! no two leases overlapped in time.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tandem::adapters::sqlite::SqliteLeaseCoordinator;
use tandem::adapters::system::SystemClock;
use tandem::domain::oplog::LeaseError;
use tandem::domain::DeviceId;
use tandem::ports::{Clock, LeaseCoordinator, LeaseCoordinatorError};
use uuid::Uuid;

const CHILD_DB: &str = "TANDEM_TEST_LEASE_CHILD_DB";
const CHILD_OUT: &str = "TANDEM_TEST_LEASE_CHILD_OUT";
const CHILD_DEVICE: &str = "TANDEM_TEST_LEASE_CHILD_DEVICE";
const CHILD_TEST: &str = "lease::contention::contention_child";
const READY: &str = "lease-child-ready";

const RESOURCE: &str = "agent-contended";
const ATTEMPTS: u32 = 300;
const TTL_MS: u64 = 40;
/// Every this many leases a child walks away without releasing.
const ABANDON_EVERY: usize = 15;
const CHILDREN: usize = 2;
const RETRY_PAUSE: Duration = Duration::from_millis(1);
const DEADLINE: Duration = Duration::from_secs(120);

/// One lease a child was granted, with times read from the system clock (Unix ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Granted {
    epoch: u64,
    /// The coordinator's own time at the grant: `expires_at_ms - ttl`.
    granted_at: u64,
    expires_at: u64,
    /// The epoch `current()` reported while the child used the lease, and when that read ended.
    seen_epoch: Option<u64>,
    seen_at: u64,
    /// Just before the release call, if the child released.
    release_started_at: Option<u64>,
    /// Just after it, if the child released.
    released_at: Option<u64>,
    /// Whether the release was accepted (it is refused once the lease lapsed and was taken).
    released: bool,
}

impl Granted {
    /// A lower bound on when the lease stopped being held: its release or its expiry.
    fn ended_by(&self) -> u64 {
        self.release_started_at
            .map_or(self.expires_at, |r| r.min(self.expires_at))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    device: u128,
    granted: Vec<Granted>,
    held_refusals: u32,
}

fn now(clock: &SystemClock) -> u64 {
    u64::try_from(clock.now_ms()).expect("a time after 1970")
}

/// The child role: does nothing unless the parent selected it.
#[test]
fn contention_child() {
    let (Ok(db), Ok(out), Ok(device)) = (
        std::env::var(CHILD_DB),
        std::env::var(CHILD_OUT),
        std::env::var(CHILD_DEVICE),
    ) else {
        return;
    };
    let device: u128 = device.parse().expect("device number");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(contend(Path::new(&db), device));
    let json = serde_json::to_vec(&report).expect("encode report");
    std::fs::write(&out, json).expect("write report");
}

async fn contend(db: &Path, device: u128) -> ChildReport {
    let clock = SystemClock;
    let me = DeviceId::from_uuid(Uuid::from_u128(device)).expect("non-nil");
    let c = SqliteLeaseCoordinator::open(db, Arc::new(clock)).expect("open the shared file");

    println!("{READY}");
    std::io::stdout().flush().expect("flush");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("wait for go");

    let mut report = ChildReport {
        device,
        granted: Vec::new(),
        held_refusals: 0,
    };
    for _ in 0..ATTEMPTS {
        let lease = match c.acquire(RESOURCE, me, TTL_MS).await {
            Ok(lease) => lease,
            Err(LeaseCoordinatorError::Refused(LeaseError::Held { .. })) => {
                report.held_refusals += 1;
                // Retry pacing, as a real contender would: without it a refused process burns
                // its attempts within one short lease of the other.
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => panic!("device {device}: acquire failed: {e}"),
        };
        // The "work" done under the lease: the fence's read.
        let seen = c.current(RESOURCE).await.expect("current");
        let seen_at = now(&clock);
        let mut granted = Granted {
            epoch: lease.epoch.get(),
            granted_at: lease.expires_at_ms - TTL_MS,
            expires_at: lease.expires_at_ms,
            seen_epoch: seen.map(|l| l.epoch.get()),
            seen_at,
            release_started_at: None,
            released_at: None,
            released: false,
        };
        if !(report.granted.len() + 1).is_multiple_of(ABANDON_EVERY) {
            granted.release_started_at = Some(now(&clock));
            granted.released = match c.release(RESOURCE, me, lease.epoch).await {
                Ok(()) => true,
                // The lease lapsed and the other process took it (and maybe released it).
                Err(LeaseCoordinatorError::Refused(
                    LeaseError::NotHolder { .. } | LeaseError::NotLeased,
                )) => false,
                Err(e) => panic!("device {device}: release failed: {e}"),
            };
            granted.released_at = Some(now(&clock));
        }
        report.granted.push(granted);
    }
    report
}

/// What a child's stdout reader saw.
enum Line {
    Ready,
    Closed(usize),
}

fn spawn_child(db: &Path, out: &Path, index: usize) -> Child {
    let exe = std::env::current_exe().expect("current test binary");
    Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_OUT, out)
        .env(CHILD_DEVICE, (index + 1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Waits for `want` events matching `pick` until the deadline.
fn await_lines(
    rx: &mpsc::Receiver<Line>,
    deadline: Instant,
    want: usize,
    pick: fn(&Line) -> bool,
    what: &str,
) -> Result<(), String> {
    let mut seen = 0;
    while seen < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pick(&line) => seen += 1,
            Ok(Line::Closed(i)) => return Err(format!("child {i} exited before {what}")),
            Ok(_) => {}
            Err(_) => return Err(format!("timed out waiting for {what}")),
        }
    }
    Ok(())
}

#[test]
fn two_processes_never_share_an_epoch_or_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("leases.db");
    let outs: Vec<_> = (0..CHILDREN)
        .map(|i| dir.path().join(format!("child-{i}.json")))
        .collect();
    let mut children: Vec<Child> = (0..CHILDREN)
        .map(|i| spawn_child(&db, &outs[i], i))
        .collect();

    let (tx, rx) = mpsc::channel();
    for (i, child) in children.iter_mut().enumerate() {
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness prints the test's name on the same line, before the marker.
                if line.trim_end().ends_with(READY) && tx.send(Line::Ready).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Closed(i));
        });
    }
    drop(tx);

    let deadline = Instant::now() + DEADLINE;
    let run = await_lines(
        &rx,
        deadline,
        CHILDREN,
        |l| matches!(l, Line::Ready),
        "ready",
    )
    .and_then(|()| {
        // Both children are ready: start them together.
        for child in &mut children {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
        }
        await_lines(
            &rx,
            deadline,
            CHILDREN,
            |l| matches!(l, Line::Closed(_)),
            "exit",
        )
    });
    if let Err(why) = run {
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("contention children failed: {why}");
    }
    for (i, child) in children.iter_mut().enumerate() {
        let status = child.wait().expect("wait for child");
        assert!(status.success(), "child {i} failed: {status}");
    }

    let reports: Vec<ChildReport> = outs
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("child report");
            serde_json::from_slice(&bytes).expect("decode child report")
        })
        .collect();
    check(&reports);
}

fn check(reports: &[ChildReport]) {
    let mut all: Vec<(u128, Granted)> = Vec::new();
    for r in reports {
        assert!(
            !r.granted.is_empty(),
            "device {} never got the lease: there was no contention to check",
            r.device
        );
        for pair in r.granted.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch,
                "device {}: epochs did not increase: {} then {}",
                r.device,
                pair[0].epoch,
                pair[1].epoch
            );
        }
        for g in &r.granted {
            assert!(
                g.seen_epoch == Some(g.epoch) || g.seen_at >= g.expires_at,
                "device {}: current() disowned its lease while it was live: {g:?}",
                r.device
            );
            assert!(
                g.seen_epoch.is_none_or(|e| e >= g.epoch),
                "device {}: current() went back to an older epoch: {g:?}",
                r.device
            );
        }
        all.extend(r.granted.iter().cloned().map(|g| (r.device, g)));
    }
    assert!(
        reports.iter().map(|r| r.held_refusals).sum::<u32>() > 0,
        "no acquire was ever refused: the processes did not contend"
    );

    all.sort_by_key(|(_, g)| g.epoch);
    let epochs: Vec<u64> = all.iter().map(|(_, g)| g.epoch).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(
        epochs, expected,
        "epochs must be 1..=n, each granted exactly once"
    );
    for pair in all.windows(2) {
        let ((d0, prev), (d1, next)) = (&pair[0], &pair[1]);
        assert!(
            next.granted_at >= prev.ended_by(),
            "epoch {} (device {d1}) was granted at {} while epoch {} (device {d0}) was held \
             until at least {}: {prev:?} / {next:?}",
            next.epoch,
            next.granted_at,
            prev.epoch,
            prev.ended_by()
        );
    }
    let abandoned = all.iter().filter(|(_, g)| g.release_started_at.is_none());
    assert!(abandoned.count() > 0, "no lease was left to expire");
}
