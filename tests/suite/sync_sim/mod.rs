//! Deterministic simulation of device sync.
//!
//! Each seed builds a world of 3–5 devices, each with its own SQLite journal file and skewed
//! manual clock, sharing one [`MemoryRelay`](tandem::adapters::memory::MemoryRelay) (or, in a
//! second test, one [`FsRelay`](tandem::adapters::fs_relay::FsRelay) directory) and one
//! in-memory lease coordinator on the true (manual) clock. A seeded RNG then drives a bounded
//! number of steps: appends (conversation turns, knowledge and preference records with
//! tombstones, run and command events, in single ops and group commits), intents (new runs and
//! status changes), pumps of one device or several in random order, partitions (a cut line: a
//! pump fails and changes nothing), kills (the session and journal dropped and reopened from
//! the file), crashes mid-pump (the relay applies the k-th call, the reply is lost, the device
//! is killed), clock skew (mostly within the drift bound; sometimes a runaway clock past it,
//! whose chain the others hold back while their pumps go on with every other chain),
//! checkpoints with gc, explicit rebases, and dispatch attempts through the lease and the
//! fence.
//!
//! Invariants:
//!
//! - after every step, devices whose journals hold the same frontier hold the same state hash;
//! - after every kill and rebase, the device's state and frontier are what they were before the
//!   kill, and it still durably holds every head its pumps acknowledged and every op its
//!   `append` returned (event ops also visible in its fold);
//! - a pump that holds a runaway chain back has taken everything the relay holds of every
//!   other chain, and acknowledged it;
//! - a run never gets `proceed` twice (dispatchers follow the protocol in `World::dispatch`:
//!   pump, lease, fence, then commit and push before the lease can pass on);
//! - after healing every partition, all devices converge within a bounded number of rounds to
//!   one state that holds every op ever appended; a device joining then catches up to it.
//!
//! `TANDEM_SIM_SEEDS=n` runs seeds `0..n` (default 200 over the in-memory relay, 40 over the
//! directory); `TANDEM_SIM_SEED=s` replays seed `s` alone; `TANDEM_SIM_STEPS=n` sets the steps
//! per seed (default 60). Every failure names its seed, its relay and the last steps taken.

mod checks;
mod device;
mod dispatch;
mod relay;
mod stats;
mod world;

use std::path::PathBuf;

use rand::Rng;
use std::time::Instant;

use device::SimDevice;
use stats::Stats;
use world::{RelayKind, World};

/// Default number of seeds over the in-memory relay.
const DEFAULT_SEEDS: u64 = 200;
/// Default number of seeds over a file-system relay (slower: every push and ack is fsynced).
const DEFAULT_FS_SEEDS: u64 = 40;
/// Default steps per seed.
const DEFAULT_STEPS: usize = 60;
/// Pump rounds a healed world may take to converge.
const HEAL_ROUNDS: usize = 6;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Prints the seed and its relay if anything panics while it runs.
struct SeedReporter(u64, RelayKind);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let Self(seed, kind) = self;
            eprintln!("sync_sim FAILED; replay with TANDEM_SIM_SEED={seed} ({kind:?} relay)");
        }
    }
}

/// Runs one seed to the end: its counters and the state every device converged to. The
/// error is the failure report.
async fn run_seed(seed: u64, steps: usize, kind: RelayKind) -> Result<(Stats, [u8; 32]), String> {
    let mut world = World::new(seed, kind).await?;
    world.run(steps).await?;
    world.stats.heal_rounds += world.heal_and_converge(HEAL_ROUNDS).await?;
    checks::converged_with_everything(&world)?;
    let d = world.rng.gen_range(0..world.devices.len());
    world.kill(d).await?;
    // A newcomer catches up from the relay (through a checkpoint if the relay collected).
    let n = world.devices.len();
    let path: PathBuf = world.devices[0]
        .journal
        .path()
        .and_then(|p| p.parent())
        .map(|dir| dir.join("newcomer.db"))
        .ok_or_else(|| world.fail("device 0's journal has no file"))?;
    let newcomer = SimDevice::open(n, path, &world.shared, world.true_ms)
        .await
        .map_err(|e| world.fail(e))?;
    world.devices.push(newcomer);
    world.pump_fully(n).await?;
    checks::converged_with_everything(&world)?;
    world.stats.seeds = 1;
    Ok((world.stats, world.devices[0].sync.state_hash()))
}

/// Runs `seeds` on one thread and runtime; the error is the first failure's report.
fn run_seeds(seeds: &[u64], steps: usize, kind: RelayKind) -> Result<Stats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut total = Stats::default();
    for &seed in seeds {
        let _reporter = SeedReporter(seed, kind);
        let (stats, _) = runtime
            .block_on(run_seed(seed, steps, kind))
            .map_err(|report| {
                format!("replay with TANDEM_SIM_SEED={seed} ({kind:?} relay): {report}")
            })?;
        total += stats;
    }
    Ok(total)
}

/// Runs the seeds the environment names (`TANDEM_SIM_SEED`, or `0..TANDEM_SIM_SEEDS`, else
/// `0..default_seeds`) over a relay of `kind`, on two threads; panics with the first failure's
/// report. Returns the summed counters and how many seeds ran.
fn simulate(kind: RelayKind, default_seeds: u64) -> (Stats, usize) {
    let steps = env_u64("TANDEM_SIM_STEPS").map_or(DEFAULT_STEPS, |s| s as usize);
    let seeds: Vec<u64> = match env_u64("TANDEM_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("TANDEM_SIM_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let started = Instant::now();
    // Seeds are independent: split them over two threads, each with its own runtime.
    let (even, odd): (Vec<u64>, Vec<u64>) = seeds.iter().partition(|s| s.is_multiple_of(2));
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = [even, odd]
            .into_iter()
            .map(|part| scope.spawn(move || run_seeds(&part, steps, kind)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    let mut total = Stats::default();
    for result in results {
        match result {
            Ok(stats) => total += stats,
            Err(report) => panic!("sync_sim FAILED ({report}"),
        }
    }
    println!(
        "sync_sim ({kind:?} relay): {total}; {:.1?}",
        started.elapsed()
    );
    (total, seeds.len())
}

/// Asserts that every counter in `paths` is above zero.
fn exercised(total: &Stats, seeds: usize, paths: &[(&str, usize)]) {
    for (what, n) in paths {
        assert!(*n > 0, "{seeds} seeds produced no {what}: {total}");
    }
}

#[test]
fn simulated_devices_converge_lose_nothing_and_never_dispatch_twice() {
    let (total, seeds) = simulate(RelayKind::Memory, DEFAULT_SEEDS);
    if seeds as u64 >= DEFAULT_SEEDS {
        // A run this long must have exercised every path it claims to check.
        exercised(
            &total,
            seeds,
            &[
                ("kills", total.kills),
                ("crashes mid-pump", total.crashes_mid_pump),
                ("refused pumps in partitions", total.partitioned_pumps),
                ("pumps holding a runaway chain back", total.held_pumps),
                ("fences blind to a held chain", total.blind_fences),
                ("checkpoints", total.checkpoints),
                ("collected ops", total.gc_deleted),
                ("rebases by compacted pulls", total.rebased_by_pull),
                ("proceed decisions", total.proceeds),
                ("already_committed decisions", total.already_committed),
                ("stale_epoch decisions", total.stale_epochs),
            ],
        );
    }
}

/// The same worlds over an `FsRelay`: the durable adapter under kills, crashes mid-pump,
/// checkpoints, gc in whole segments and rebases. `TANDEM_SIM_SEEDS` and `TANDEM_SIM_SEED`
/// apply here too (default: 40 seeds).
#[test]
fn simulated_devices_over_a_relay_directory_converge_and_lose_nothing() {
    let (total, seeds) = simulate(RelayKind::Fs, DEFAULT_FS_SEEDS);
    if seeds as u64 >= DEFAULT_FS_SEEDS {
        exercised(
            &total,
            seeds,
            &[
                ("kills", total.kills),
                ("crashes mid-pump", total.crashes_mid_pump),
                ("checkpoints", total.checkpoints),
                ("collected ops", total.gc_deleted),
            ],
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seed = 7;
    let _reporter = SeedReporter(seed, RelayKind::Memory);
    let first = runtime.block_on(run_seed(seed, DEFAULT_STEPS, RelayKind::Memory));
    let second = runtime.block_on(run_seed(seed, DEFAULT_STEPS, RelayKind::Memory));
    let (first, second) = (first.expect("first run"), second.expect("second run"));
    assert_eq!(first, second, "seed {seed} ran differently twice");
    assert!(first.0.appended > 0 && first.0.pumps > 0);
}
