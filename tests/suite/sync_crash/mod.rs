//! Crash mid-pump: a device killed with `SIGKILL` at random moments of its append-and-pump
//! loop loses nothing it reported and duplicates nothing.
//!
//! Each cycle re-runs this test binary with only [`child_role`] selected and
//! `TANDEM_SYNC_CRASH_CHILD` set: device A appends turns in group commits and pumps against a
//! shared relay directory and its own journal file, printing one line per committed append
//! (`ack <op id> <seq> <text>`) and per pump. Meanwhile the parent's device B appends and pumps
//! now and then over the same directory. After the k-th line (k random) and a random moment
//! more (up to 30 ms) the parent kills the child, keeps the complete lines it had written,
//! reopens A from its file, pumps A and B until they converge, and checks that every reported
//! append is at its place in A's chain, that no turn is held twice, that every copy of both
//! chains (A's journal, B's journal, the relay) verifies from genesis and is the same, and that
//! both devices hold one state hash.
//!
//! `TANDEM_SYNC_CRASH_CYCLES` (default 20) sets the number of cycles and
//! `TANDEM_SYNC_CRASH_SEED` the seed (default: from the time); the seed is printed at the start
//! and on every failure.

mod child;
mod fixture;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::child::{spawn_reader, spawn_stderr, ChildGuard, Line};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem::app::sync::DeviceSync;
use tandem::domain::ids::Seq;
use tandem::domain::oplog::{OpId, Scope, Surface};

use fixture::{open_device, turn_payload, DEVICE_A, DEVICE_B};
use verify::{verify, Ack};

const CHILD_ENV: &str = "TANDEM_SYNC_CRASH_CHILD";
/// Default number of kill cycles.
const DEFAULT_CYCLES: u64 = 20;
/// The most lines awaited before a kill.
const MAX_LINES: u32 = 30;
/// The longest extra moment, in microseconds, between the k-th line and the kill.
const MAX_JITTER_US: u64 = 30_000;
/// How long the parent waits for the child's next line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pump rounds two devices may take to converge after a kill.
const CONVERGE_ROUNDS: usize = 8;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a u64")),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The child role: does nothing unless started by the parent test.
#[test]
fn child_role() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let cycle: u64 = parts.next().and_then(|s| s.parse().ok()).expect("cycle");
    let seed: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seed");
    let dir = PathBuf::from(parts.next().expect("directory"));
    if let Err(e) = runtime().block_on(child::run(&dir, cycle, seed)) {
        eprintln!("sync_crash child: {e}");
        std::process::exit(2);
    }
}

/// Prints the seed if the test panics anywhere.
struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sync_crash FAILED; reproduce with TANDEM_SYNC_CRASH_SEED={}",
                self.0
            );
        }
    }
}

fn spawn_child(dir: &Path, cycle: u64, seed: u64) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args([
            "sync_crash::child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, format!("{cycle}|{seed}|{}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child")
}

/// Parses `ack <op id> <seq> <text>`; other lines are progress.
fn parse_ack(line: &str, cycle: u64) -> Result<Option<(OpId, Ack)>, String> {
    let Some(rest) = line.strip_prefix("ack ") else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split(' ').collect();
    let [id, seq, text] = parts[..] else {
        return Err(format!("malformed ack line {line:?}"));
    };
    let op_id = OpId::parse(id).map_err(|e| format!("{e} in {line:?}"))?;
    let seq = seq
        .parse::<u64>()
        .map(Seq::new)
        .map_err(|e| format!("{e} in {line:?}"))?;
    Ok(Some((
        op_id,
        Ack {
            seq,
            text: text.to_owned(),
            cycle,
        },
    )))
}

/// Device B's side of the story: its session and what it appended.
struct Parent {
    b: DeviceSync,
    b_journal: std::sync::Arc<tandem::adapters::sqlite::SqliteJournal>,
    b_texts: Vec<String>,
}

impl Parent {
    /// B appends one turn and pumps.
    async fn chatter(&mut self, cycle: u64) -> Result<(), String> {
        let text = format!("b{cycle}.{}", self.b_texts.len());
        self.b
            .append(Scope::Personal, Surface::Conversation, turn_payload(&text))
            .await
            .map_err(|e| format!("B append: {e}"))?;
        self.b_texts.push(text);
        self.b.pump().await.map_err(|e| format!("B pump: {e}"))?;
        Ok(())
    }
}

/// How A's recovery went.
struct Recovery {
    /// Pump rounds until A and B held the same frontier.
    rounds: usize,
    /// Ops A's first pump pushed that the relay did not hold yet.
    pushed: usize,
    /// Ops A's first pump re-sent that the relay already held (the child died after the
    /// relay stored them, before its push cursor moved).
    resent: usize,
}

/// Pumps A and B in turns until both hold the same frontier.
async fn converge(a: &mut DeviceSync, b: &mut DeviceSync) -> Result<Recovery, String> {
    let mut first = None;
    for round in 1..=CONVERGE_ROUNDS {
        let ra = a.pump().await.map_err(|e| format!("A pump: {e}"))?;
        let (pushed, resent) = *first.get_or_insert((ra.pushed, ra.push_duplicates));
        let rb = b.pump().await.map_err(|e| format!("B pump: {e}"))?;
        if a.frontier() == b.frontier() && !ra.more && !rb.more {
            return Ok(Recovery {
                rounds: round,
                pushed,
                resent,
            });
        }
    }
    Err(format!(
        "no convergence in {CONVERGE_ROUNDS} rounds: A {:?}, B {:?}",
        a.frontier(),
        b.frontier()
    ))
}

#[test]
fn a_device_killed_mid_pump_loses_nothing_and_duplicates_nothing() {
    let cycles = env_u64("TANDEM_SYNC_CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64("TANDEM_SYNC_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let _reporter = SeedReporter(seed);
    println!("sync_crash: TANDEM_SYNC_CRASH_SEED={seed} TANDEM_SYNC_CRASH_CYCLES={cycles}");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, b_journal) = rt
        .block_on(open_device(dir.path(), "b.db", DEVICE_B, seed))
        .expect("open B");
    let mut parent = Parent {
        b,
        b_journal,
        b_texts: Vec::new(),
    };
    let mut acks: HashMap<OpId, Ack> = HashMap::new();
    let mut unreported = 0;
    let mut resent_cycles = 0;

    for cycle in 0..cycles {
        let fail = |msg: String| -> ! {
            panic!("sync_crash (TANDEM_SYNC_CRASH_SEED={seed}) cycle {cycle}: {msg}")
        };
        let k = rng.gen_range(0..=MAX_LINES);
        let mut child = spawn_child(dir.path(), cycle, seed);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut guard = ChildGuard(Some(child));
        let (rx, reader) = spawn_reader(stdout);
        let errors = spawn_stderr(stderr);
        let before = acks.len();
        let record = |line: Line, acks: &mut HashMap<OpId, Ack>| {
            let Line::Complete(line) = line else {
                return;
            };
            match parse_ack(&line, cycle) {
                Ok(Some((op_id, ack))) => {
                    if let Some(prev) = acks.insert(op_id, ack) {
                        fail(format!("op {op_id} reported twice (cycle {})", prev.cycle));
                    }
                }
                Ok(None) => {}
                Err(e) => fail(e),
            }
        };

        let mut got = 0;
        while got < k {
            match rx.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    got += u32::from(matches!(line, Line::Complete(_)));
                    record(line, &mut acks);
                    // B works concurrently now and then, so A's pumps have ops to pull.
                    if rng.gen_ratio(1, 4) {
                        rt.block_on(parent.chatter(cycle))
                            .unwrap_or_else(|e| fail(e));
                    }
                }
                Err(RecvTimeoutError::Timeout) => fail(format!(
                    "no line within {LINE_TIMEOUT:?} after {got} of {k}"
                )),
                Err(RecvTimeoutError::Disconnected) => {
                    let child = guard.0.as_mut().expect("child");
                    let status = child.wait();
                    let err = errors.join().unwrap_or_default();
                    fail(format!(
                        "the child exited after {got} of {k} lines ({status:?}); stderr:\n{err}"
                    ))
                }
            }
        }
        // Then a random moment more (reading whatever arrives meanwhile), so the kill lands
        // anywhere inside an append or a pump, not only right after a line.
        let jitter = Duration::from_micros(rng.gen_range(0..MAX_JITTER_US));
        let kill_at = Instant::now() + jitter;
        while let Some(left) = kill_at.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => record(line, &mut acks),
                Err(_) => break,
            }
        }
        let mut child = guard.0.take().expect("child");
        child.kill().unwrap_or_else(|e| fail(format!("kill: {e}")));
        let status = child.wait().unwrap_or_else(|e| fail(format!("wait: {e}")));
        // Lines written before the kill are reports too.
        loop {
            match rx.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => record(line, &mut acks),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    fail("stdout stayed open after the child was killed".into())
                }
            }
        }
        reader.join().expect("reader thread");
        let err = errors.join().unwrap_or_default();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(9) {
                fail(format!(
                    "the child ended with {status}, not SIGKILL; stderr:\n{err}"
                ));
            }
        }

        let verified = rt
            .block_on(async {
                let (mut a, a_journal) = open_device(dir.path(), "a.db", DEVICE_A, seed).await?;
                let recovery = converge(&mut a, &mut parent.b).await?;
                let v = verify(
                    dir.path(),
                    (&a, &a_journal),
                    (&parent.b, &parent.b_journal),
                    &acks,
                    &parent.b_texts,
                )
                .await?;
                // Something new for the next child to pull.
                for _ in 0..rng.gen_range(0..=2) {
                    parent.chatter(cycle).await?;
                }
                Ok::<_, String>((v, recovery))
            })
            .unwrap_or_else(|e| fail(e));
        let (v, recovery) = verified;
        unreported = v.unreported;
        resent_cycles += usize::from(recovery.resent > 0);
        println!(
            "cycle {cycle}: killed after {k} lines, {} new reports; A's chain {} ops ({} \
             committed before their report), B's {}; recovery pushed {} and re-sent {}, \
             converged in {} round(s)",
            acks.len() - before,
            v.a_ops,
            v.unreported,
            v.b_ops,
            recovery.pushed,
            recovery.resent,
            recovery.rounds
        );
    }
    println!(
        "sync_crash: {cycles} cycles, {} reported appends, {unreported} committed unreported, \
         {resent_cycles} kills between a push and its cursor, {} turns from B, {:.1?}; \
         TANDEM_SYNC_CRASH_SEED={seed}",
        acks.len(),
        parent.b_texts.len(),
        started.elapsed()
    );
}
