//! The child: device A appending and pumping in a loop against the shared relay directory,
//! reporting every durably committed append on stdout, until it is killed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem::domain::oplog::{Scope, Surface};

use super::fixture::{open_device, turn_payload, DEVICE_A};

/// The longest a child runs if nobody kills it (a safety net: the parent always does).
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
/// The most loop iterations a child runs.
const MAX_ITERATIONS: u64 = 100_000;

/// Writes one whole line and flushes it: the parent counts only lines with their newline.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the parent is gone: nothing left to report to.
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// Runs the append-and-pump loop for `cycle` in `dir`; returns only on an error or at the
/// safety limits.
pub async fn run(dir: &Path, cycle: u64, seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(cycle));
    let (mut device, _journal) = open_device(dir, "a.db", DEVICE_A, seed).await?;
    report("ready");
    let started = Instant::now();
    for i in 0..MAX_ITERATIONS {
        if started.elapsed() > CHILD_LIFETIME {
            break;
        }
        let n = rng.gen_range(1..=3);
        let entries: Vec<_> = (0..n)
            .map(|j| {
                (
                    Scope::Personal,
                    Surface::Conversation,
                    turn_payload(&format!("a{cycle}.{i}.{j}")),
                )
            })
            .collect();
        let texts: Vec<String> = (0..n).map(|j| format!("a{cycle}.{i}.{j}")).collect();
        let ops = device
            .append_batch(entries)
            .await
            .map_err(|e| format!("append: {e}"))?;
        for (op, text) in ops.iter().zip(&texts) {
            report(&format!("ack {} {} {text}", op.op_id, op.seq.get()));
        }
        let pumped = device.pump().await.map_err(|e| format!("pump: {e}"))?;
        report(&format!(
            "pumped {} {} {}",
            pumped.pushed, pumped.pulled, pumped.journaled
        ));
    }
    Err("the child reached its safety limit without being killed".into())
}
