//! `cargo bench --bench relay [--features bench-peers]`: device sync (ARCHITECTURE.md §5)
//! against the physical floor of the same raw parts and against the peer CRDT libraries
//! (ARCHITECTURE.md §8).
//!
//! The workload: `n` chat messages of about 200 bytes (a conversation turn each), appended on
//! device A in group commits of 100 ops per transaction, then `pump` on A (push) and `pump` on
//! B (pull, verify, open, journal + fold), end-to-end encryption on, both devices on durable
//! SQLite (`synchronous` as each row's note says) and exchanging ops through an `FsRelay`
//! directory. Each round starts from fresh devices and a fresh relay; times are per message.
//!
//! Rows (goal = target `subject / baseline`):
//!
//! | row | subject | baseline | goal |
//! |---|---|---|---|
//! | `sync_100k_vs_floor` | append + pump A + pump B | JSONL append, parse back, plain rusqlite inserts (same PRAGMAs) | 1.5 |
//! | `sync_100k_vs_automerge` | same | automerge list of maps, `save_incremental` → `load_incremental`, in memory | 0.1 |
//! | `sync_100k_vs_yrs` | same | yrs `Y.Array` of JSON maps, `encode_state_as_update_v1` → `apply_update`, in memory | 2.0 |
//! | `bootstrap_checkpoint_vs_replay` | new device C: latest checkpoint + 1% tail | new device C: replay every op | 0.25 |
//! | `push_pull_1k_at_1m_vs_at_10k` | 1k new ops pushed by A and pulled by B over 1M ops of history | the same over 10k ops of history | 1.5 |
//!
//! The peer rows exist only with `--features bench-peers` (the suite says when they were
//! skipped). Besides the rows, the report's `extra` records wire bytes per message (bytes
//! stored under the relay directory after a sync round / n: op segments, their indexes,
//! manifests and roster) next to yrs' and automerge's update bytes per message, and the peak
//! resident memory (`VmHWM`) of a process that only receives the n messages as device B, for
//! tandem and the peers; and the same for tandem receiving 256 messages of 1 MiB
//! (`peak_memory_b_large_messages`, next to the payload size), where pull batches are bounded
//! by bytes rather than by count.
//!
//! The floor worker also measures the durable copies alone (`copies`: A's journal, the relay
//! files, B's journal, with the subject's own sealed records and nothing computed), a lower
//! bound on the sync subject under the design's durability; the floor row's note and the
//! `durable_copies_us_per_message` extra give it, and the peer rows' notes compare it with
//! the peer.
//!
//! Every side runs in its own worker process (see `support`). `TANDEM_BENCH_QUICK=1` shrinks
//! every n under the same row names (the JSON records the real `n`);
//! `TANDEM_BENCH_ONLY=<substring>[,..]` runs some rows.

mod support;

#[path = "relay/copies.rs"]
mod copies;
#[path = "relay/floor.rs"]
mod floor;
#[cfg(feature = "bench-peers")]
#[path = "relay/peers.rs"]
mod peers;
#[path = "relay/subject.rs"]
mod subject;
#[path = "relay/workload.rs"]
mod workload;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tandem::adapters::sqlite::Synchronous;

use support::{interleaved_samples, median, serve, Row, Side, Suite, Unit, Worker, WorkerRole};

const SYNC_FLOOR: &str = "sync_100k_vs_floor";
const SYNC_AUTOMERGE: &str = "sync_100k_vs_automerge";
const SYNC_YRS: &str = "sync_100k_vs_yrs";
const BOOTSTRAP: &str = "bootstrap_checkpoint_vs_replay";
const PUSH_PULL: &str = "push_pull_1k_at_1m_vs_at_10k";
/// Worker-only rows: the subject of every sync row, and processes that only receive the
/// messages as device B.
const SYNC_SUBJECT: &str = "sync_100k";
const PEAK_B_TANDEM: &str = "peak_memory_b_tandem";
const PEAK_B_YRS: &str = "peak_memory_b_yrs";
const PEAK_B_AUTOMERGE: &str = "peak_memory_b_automerge";
/// A process that only receives large messages (1 MiB each) as device B.
const PEAK_B_LARGE: &str = "peak_memory_b_large_messages";
/// Size of each large message.
const LARGE_MESSAGE: usize = 1 << 20;

/// Ops per group commit on A (every side appends in groups of this size).
const GROUP: usize = 100;
/// Durability of every SQLite database in the suite (tandem's default).
const SYNC: Synchronous = Synchronous::Full;
const SYNC_NAME: &str = "synchronous=FULL";

/// Sizes of one run (the parent and its workers derive the same values).
struct Params {
    /// Messages per sync round.
    sync_n: usize,
    sync_rounds: usize,
    /// Ops on the relay when device C bootstraps.
    bootstrap_n: usize,
    bootstrap_rounds: usize,
    /// History sizes of the push/pull row (subject, baseline) and the new ops per round.
    history_large: usize,
    history_small: usize,
    push_pull_new: usize,
    push_pull_rounds: usize,
    /// Messages of [`LARGE_MESSAGE`] bytes B receives in the large-message memory extra.
    large_n: usize,
}

impl Params {
    fn get() -> Self {
        if support::quick() {
            Self {
                sync_n: 3_000,
                sync_rounds: 3,
                bootstrap_n: 3_000,
                bootstrap_rounds: 3,
                history_large: 20_000,
                history_small: 2_000,
                push_pull_new: 500,
                push_pull_rounds: 3,
                large_n: 16,
            }
        } else {
            Self {
                sync_n: 100_000,
                sync_rounds: 5,
                bootstrap_n: 100_000,
                bootstrap_rounds: 7,
                history_large: 1_000_000,
                history_small: 10_000,
                push_pull_new: 1_000,
                push_pull_rounds: 9,
                large_n: 256,
            }
        }
    }

    /// Messages of a warm-up round (untimed, before the first timed round).
    fn warmup_n(&self) -> usize {
        (self.sync_n / 20).max(500)
    }
}

fn main() {
    if let Some(role) = support::worker_role() {
        worker(&role);
        return;
    }
    let mut suite = Suite::new("relay");
    let p = Params::get();
    let outputs = workload::temp_dir();

    let peers = [SYNC_AUTOMERGE, SYNC_YRS];
    let mut sync: Vec<&str> = vec![SYNC_FLOOR];
    if cfg!(feature = "bench-peers") {
        sync.extend(peers);
    } else {
        suite.progress(&format!(
            "skipped {}: build with --features bench-peers",
            peers.join(", ")
        ));
    }
    sync.retain(|name| suite.wants(name));
    if !sync.is_empty() {
        sync_rows(&mut suite, &p, &sync, outputs.path());
    }
    peak_memory(&mut suite, outputs.path());
    if suite.wants(PEAK_B_LARGE) {
        large_messages_memory(&mut suite, &p);
    }
    if suite.wants(BOOTSTRAP) {
        bootstrap(&mut suite, &p);
    }
    if suite.wants(PUSH_PULL) {
        push_pull(&mut suite, &p);
    }
    suite.finish();
}

/// Entry point of a worker process: builds one side's fixture and serves its rounds.
fn worker(role: &WorkerRole) {
    let p = Params::get();
    match (role.row.as_str(), role.side) {
        (SYNC_SUBJECT, _) => subject_sync_worker(role, &p),
        (SYNC_FLOOR, Side::Baseline) => floor_worker(role, &p),
        #[cfg(feature = "bench-peers")]
        (SYNC_AUTOMERGE | SYNC_YRS, Side::Baseline) => peer_worker(role, &p),
        (PEAK_B_TANDEM, _) => {
            let start = workload::peak_rss_kib();
            let held = subject::receive(&Path::new(&role.arg).join("tandem"), SYNC);
            serve(Vec::new, || peak_text(start, held));
        }
        #[cfg(feature = "bench-peers")]
        (PEAK_B_YRS, _) => {
            let start = workload::peak_rss_kib();
            let update = std::fs::read(Path::new(&role.arg).join("yrs.update")).expect("update");
            let (doc, held) = peers::yrs_receive(&update);
            drop(update);
            serve(Vec::new, || peak_text(start, held));
            drop(doc);
        }
        #[cfg(feature = "bench-peers")]
        (PEAK_B_AUTOMERGE, _) => {
            let start = workload::peak_rss_kib();
            let bytes = std::fs::read(Path::new(&role.arg).join("automerge.save")).expect("save");
            let (doc, held) = peers::automerge_receive(&bytes);
            drop(bytes);
            serve(Vec::new, || peak_text(start, held));
            drop(doc);
        }
        (PEAK_B_LARGE, _) => {
            let start = workload::peak_rss_kib();
            let held = subject::receive(Path::new(&role.arg), SYNC);
            serve(Vec::new, || peak_text(start, held));
        }
        (BOOTSTRAP, side) => subject::bootstrap_worker(role, side, &p_bootstrap(&p)),
        (PUSH_PULL, side) => subject::push_pull_worker(role, side, &p_push_pull(&p)),
        (row, side) => panic!("no worker for {row}/{}", side.as_str()),
    }
}

// ----- small helpers ------------------------------------------------------------------------

/// `key=value` pairs of a worker's finish text.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Field `key` of a finish text as a number.
fn field(text: &str, key: &str) -> Option<f64> {
    fields(text).get(key).and_then(|v| v.parse().ok())
}

fn peak_text(start: Option<u64>, held: usize) -> String {
    format!(
        "held={held} start_kib={} peak_kib={}",
        start.unwrap_or(0),
        workload::peak_rss_kib().unwrap_or(0)
    )
}

/// Microseconds per message of a duration spent on `n` messages.
fn per_msg(d: Duration, n: usize) -> f64 {
    Unit::Micros.per_op(d, n)
}

/// Medians of each column of per-round sample vectors.
fn column_medians(rounds: &[Vec<f64>]) -> Vec<f64> {
    let width = rounds.iter().map(Vec::len).min().unwrap_or(0);
    (0..width)
        .map(|c| {
            let mut col: Vec<f64> = rounds.iter().map(|r| r[c]).collect();
            median(&mut col)
        })
        .collect()
}

fn fmt_parts(names: &[&str], values: &[f64]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} {}", support::fmt_num(*v)))
        .collect::<Vec<_>>()
        .join(" + ")
}

// ----- sync rows ----------------------------------------------------------------------------

/// `sync_100k_vs_*`: tandem's append + pump A + pump B against each wanted baseline, in
/// `sync_rounds` rounds of `sync_n` messages from scratch. One subject worker serves every
/// sync row: each round runs the subject and then every baseline (baselines first in odd
/// rounds), so each row compares medians taken over the same rounds. Records the subject's
/// wire bytes and each peer's update bytes per message as extras.
fn sync_rows(suite: &mut Suite, p: &Params, names: &[&str], outputs: &Path) {
    let n = p.sync_n;
    let rounds = p.sync_rounds;
    suite.progress(&format!(
        "{}: {rounds} rounds of {n} messages per side",
        names.join(", ")
    ));
    let arg = outputs.to_str().expect("UTF-8 temp path");
    let mut s = Worker::spawn(SYNC_SUBJECT, Side::Subject, arg);
    let mut baselines: Vec<Worker> = names
        .iter()
        .map(|name| Worker::spawn(name, Side::Baseline, arg))
        .collect();
    let mut s_rounds = Vec::new();
    let mut b_rounds: Vec<Vec<Vec<f64>>> = vec![Vec::new(); names.len()];
    interleaved_samples(
        rounds,
        || {
            let r = s.round();
            let total = r.first().copied().unwrap_or(f64::NAN);
            s_rounds.push(r);
            total
        },
        || {
            for (worker, samples) in baselines.iter_mut().zip(&mut b_rounds) {
                samples.push(worker.round());
            }
            // The samples are kept per baseline above; this return value is not used.
            f64::NAN
        },
    );
    let s_done = s.finish();
    let s_med = column_medians(&s_rounds);
    let s_parts = fmt_parts(&["append", "pump A", "pump B"], &s_med[1..]);
    // The durable copies alone (measured by the floor worker, which runs first when wanted).
    let mut copies: Option<f64> = None;
    for ((name, worker), samples) in names.iter().zip(baselines).zip(&b_rounds) {
        let b_done = worker.finish();
        let b_med = column_medians(samples);
        let (b_label, b_parts, b_note) = if *name == SYNC_FLOOR {
            copies = b_med.get(3).copied();
            (
                "floor",
                fmt_parts(&["JSONL append", "parse + insert"], &b_med[1..]),
                format!(
                    "floor: flush{} per {GROUP} lines, {} lines per insert txn{}",
                    floor_sync_note(),
                    subject::pull_page(),
                    copies_note(suite, &b_med)
                ),
            )
        } else {
            let lib = name.trim_start_matches("sync_100k_vs_");
            let shape = if *name == SYNC_YRS {
                "Y.Array of JSON maps"
            } else {
                "list of maps"
            };
            let bound = copies.map_or(String::new(), |c| {
                format!(
                    "; the durable copies alone (see the floor row): {} = {:.2} x {lib}",
                    support::fmt_num(c),
                    c / b_med[0]
                )
            });
            (
                lib,
                fmt_parts(&["append", "encode + apply"], &b_med[1..]),
                format!("{lib}: {shape} in memory, {GROUP} messages per transaction{bound}"),
            )
        };
        suite.push(Row::new(
            name,
            s_med[0],
            b_med[0],
            goal(name),
            Unit::Micros.label(),
            n as u64,
            format!(
                "{SYNC_NAME} WAL, E2E on, FsRelay, {GROUP} ops per txn on A; per message; median of {rounds} rounds; tandem {s_parts}; {b_label} {b_parts}; {b_note}"
            ),
        ));
        if let Some(bytes) = field(&b_done, "update_bytes") {
            let lib = name.trim_start_matches("sync_100k_vs_");
            suite.extra(
                &format!("update_bytes_per_message_{lib}"),
                json!(round1(bytes / n as f64)),
            );
        }
    }
    let wire = field(&s_done, "relay_bytes").unwrap_or(f64::NAN) / n as f64;
    suite.extra("wire_bytes_per_message_tandem", json!(round1(wire)));
}

fn goal(name: &str) -> f64 {
    match name {
        SYNC_FLOOR => 1.5,
        SYNC_AUTOMERGE => 0.1,
        SYNC_YRS => 2.0,
        BOOTSTRAP => 0.25,
        PUSH_PULL => 1.5,
        _ => f64::NAN,
    }
}

fn floor_sync_note() -> &'static str {
    match SYNC {
        Synchronous::Full => " + fdatasync",
        Synchronous::Normal => "",
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The subject worker of every sync row: fresh devices and relay per round.
fn subject_sync_worker(role: &WorkerRole, p: &Params) {
    let msgs = workload::messages(0, p.sync_n);
    let scratch = workload::temp_dir();
    // The last round's directory (kept until the next round) and its relay's size.
    let last: RefCell<Option<PathBuf>> = RefCell::new(None);
    let relay_bytes = Cell::new(0_u64);
    let round = Cell::new(0_usize);
    let run = |msgs: &[workload::Message]| -> Vec<f64> {
        round.set(round.get() + 1);
        let dir = scratch.path().join(format!("round-{}", round.get()));
        let r = subject::sync_run(&dir, msgs, GROUP, SYNC);
        relay_bytes.set(workload::dir_bytes(&dir.join("relay")));
        if let Some(old) = last.replace(Some(dir)) {
            std::fs::remove_dir_all(old).expect("remove an old round");
        }
        let n = msgs.len();
        vec![
            per_msg(r.total(), n),
            per_msg(r.append, n),
            per_msg(r.pump_a, n),
            per_msg(r.pump_b, n),
        ]
    };
    run(&workload::messages(0, p.warmup_n()));
    serve(
        || run(&msgs),
        || {
            // Leave the last round's relay and keys for the peak-memory worker.
            if let Some(dir) = last.borrow().as_deref() {
                std::fs::rename(dir, Path::new(&role.arg).join("tandem"))
                    .expect("keep the last round");
            }
            format!("relay_bytes={}", relay_bytes.get())
        },
    );
}

/// The floor worker: a fresh directory per round. Each round also measures the durable
/// copies alone (see `copies`), reported next to the floor row.
fn floor_worker(_role: &WorkerRole, p: &Params) {
    let n = p.sync_n;
    let msgs = workload::messages(0, n);
    let (device, records) = copies::records(&msgs);
    let scratch = workload::temp_dir();
    let mut round = 0_usize;
    let mut run = |msgs: &[workload::Message]| -> Vec<f64> {
        round += 1;
        let dir = scratch.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).expect("round dir");
        let r = floor::run(&dir, msgs, GROUP, subject::pull_page(), SYNC);
        std::fs::remove_dir_all(&dir).expect("remove a round");
        std::fs::create_dir_all(&dir).expect("round dir");
        let n = msgs.len();
        let c = copies::run(
            &dir,
            &device,
            &records[..n],
            GROUP,
            subject::pull_page(),
            SYNC,
        );
        std::fs::remove_dir_all(&dir).expect("remove a round");
        vec![
            per_msg(r.total(), n),
            per_msg(r.append, n),
            per_msg(r.fold, n),
            per_msg(c.total(), n),
            per_msg(c.append, n),
            per_msg(c.push, n),
            per_msg(c.pull, n),
        ]
    };
    run(&workload::messages(0, p.warmup_n()));
    serve(|| run(&msgs), String::new);
}

/// The floor row's note on the durable copies alone (columns 3.. of the floor's samples), and
/// records them as an extra.
fn copies_note(suite: &mut Suite, floor: &[f64]) -> String {
    let (Some(total), Some(parts)) = (floor.get(3), floor.get(4..7)) else {
        return String::new();
    };
    let ratio = total / floor[0];
    suite.extra(
        "durable_copies_us_per_message",
        json!({"us": round3(*total), "vs_floor": round3(ratio)}),
    );
    format!(
        "; the durable copies alone (A's journal, relay segment + index + manifest, B's journal; no encoding, crypto, hashing, verification or fold): {} = {:.2} x floor ({})",
        support::fmt_num(*total),
        ratio,
        fmt_parts(&["A inserts", "A reads + relay writes", "relay reads + B inserts"], parts)
    )
}

/// The peer worker (yrs or automerge, by row): fresh documents per round.
#[cfg(feature = "bench-peers")]
fn peer_worker(role: &WorkerRole, p: &Params) {
    let yrs = role.row == SYNC_YRS;
    let msgs = workload::messages(0, p.sync_n);
    // The last round's update, kept for the peak-memory worker.
    let bytes = RefCell::new(Vec::new());
    let run = |msgs: &[workload::Message]| -> Vec<f64> {
        let (r, update) = if yrs {
            peers::yrs_run(msgs, GROUP)
        } else {
            peers::automerge_run(msgs, GROUP)
        };
        *bytes.borrow_mut() = update;
        let n = msgs.len();
        vec![
            per_msg(r.total(), n),
            per_msg(r.append, n),
            per_msg(r.sync, n),
        ]
    };
    run(&workload::messages(0, p.warmup_n()));
    serve(
        || run(&msgs),
        || {
            let file = if yrs { "yrs.update" } else { "automerge.save" };
            let bytes = bytes.borrow();
            std::fs::write(Path::new(&role.arg).join(file), &*bytes).expect("keep the update");
            format!("update_bytes={}", bytes.len())
        },
    );
}

// ----- peak memory on B ---------------------------------------------------------------------

/// Peak resident memory of a process that does nothing but receive the last sync round's
/// messages as device B: tandem from the kept relay directory, the peers from their kept
/// update bytes.
fn peak_memory(suite: &mut Suite, outputs: &Path) {
    let arg = outputs.to_str().expect("UTF-8 temp path");
    let candidates = [
        (PEAK_B_TANDEM, "tandem", "tandem"),
        (PEAK_B_YRS, "yrs.update", "yrs"),
        (PEAK_B_AUTOMERGE, "automerge.save", "automerge"),
    ];
    for (row, input, label) in candidates {
        if !outputs.join(input).exists() {
            continue;
        }
        let text = Worker::spawn(row, Side::Subject, arg).finish();
        let peak = field(&text, "peak_kib").unwrap_or(f64::NAN);
        let start = field(&text, "start_kib").unwrap_or(f64::NAN);
        let held = field(&text, "held").unwrap_or(f64::NAN);
        suite.extra(
            &format!("peak_memory_b_{label}"),
            json!({
                "vmhwm_mib": round1(peak / 1024.0),
                "at_start_mib": round1(start / 1024.0),
                "messages": held,
            }),
        );
    }
}

/// Peak resident memory of a process that only receives `large_n` messages of
/// [`LARGE_MESSAGE`] bytes as device B (tool output, files): what one pull batch holds at once
/// is bounded by `SyncConfig::batch_bytes`, so the peak is the state held plus a few batches.
fn large_messages_memory(suite: &mut Suite, p: &Params) {
    let dir = workload::temp_dir();
    suite.progress(&format!(
        "{PEAK_B_LARGE}: A appends and pushes {} messages of {} KiB",
        p.large_n,
        LARGE_MESSAGE / 1024
    ));
    subject::push_large_messages(dir.path(), p.large_n, LARGE_MESSAGE, SYNC);
    let arg = dir.path().to_str().expect("UTF-8 temp path");
    let text = Worker::spawn(PEAK_B_LARGE, Side::Subject, arg).finish();
    let peak = field(&text, "peak_kib").unwrap_or(f64::NAN) / 1024.0;
    let held = field(&text, "held").unwrap_or(f64::NAN);
    let payload = (p.large_n * LARGE_MESSAGE) as f64 / f64::from(1 << 20);
    suite.extra(
        PEAK_B_LARGE,
        json!({
            "vmhwm_mib": round1(peak),
            "at_start_mib": round1(field(&text, "start_kib").unwrap_or(f64::NAN) / 1024.0),
            "messages": held,
            "message_kib": LARGE_MESSAGE / 1024,
            "payload_mib": round1(payload),
            "vmhwm_per_payload": round3(peak / payload),
        }),
    );
}

// ----- bootstrap and push/pull ---------------------------------------------------------------

/// Shape of the bootstrap row.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapParams {
    /// Ops on the relay.
    pub n: usize,
    /// Ops after the checkpoint (1% of `n`).
    pub tail: usize,
}

fn p_bootstrap(p: &Params) -> BootstrapParams {
    BootstrapParams {
        n: p.bootstrap_n,
        tail: (p.bootstrap_n / 100).max(1),
    }
}

/// Shape of the push/pull row.
#[derive(Debug, Clone, Copy)]
pub struct PushPullParams {
    /// History of the subject side.
    pub history_large: usize,
    /// History of the baseline side.
    pub history_small: usize,
    /// New ops per round.
    pub new_ops: usize,
}

fn p_push_pull(p: &Params) -> PushPullParams {
    PushPullParams {
        history_large: p.history_large,
        history_small: p.history_small,
        new_ops: p.push_pull_new,
    }
}

/// `bootstrap_checkpoint_vs_replay`: the relay (n ops from A, a checkpoint covering all but
/// the last 1%) is built once here; each side gets its own copy, and every round a new device C
/// bootstraps from it into a fresh database.
fn bootstrap(suite: &mut Suite, p: &Params) {
    let bp = p_bootstrap(p);
    let rounds = p.bootstrap_rounds;
    suite.progress(&format!(
        "{BOOTSTRAP}: building a relay of {} ops with a checkpoint {} ops before the head",
        bp.n, bp.tail
    ));
    let dir = workload::temp_dir();
    let fixture = dir.path().join("fixture");
    let built = subject::build_bootstrap_fixture(&fixture, &bp, SYNC, |m| suite.progress(m));
    // The subject bootstraps from the gc'd relay, the baseline from the full one.
    for (side, relay) in [("subject", "relay-gc"), ("baseline", "relay")] {
        std::fs::rename(fixture.join(relay), dir.path().join(side)).expect("move a relay");
    }
    let arg = dir.path().to_str().expect("UTF-8 temp path");
    let (mut s, mut b) = Worker::pair(BOOTSTRAP, arg);
    let (mut s_samples, mut b_samples) = interleaved_samples(rounds, || s.sample(), || b.sample());
    let (s_done, b_done) = (s.finish(), b.finish());
    assert_eq!(
        fields(&s_done).get("state"),
        fields(&b_done).get("state"),
        "{BOOTSTRAP}: checkpoint bootstrap and replay reached different states"
    );
    suite.push(Row::new(
        BOOTSTRAP,
        median(&mut s_samples),
        median(&mut b_samples),
        goal(BOOTSTRAP),
        Unit::Millis.label(),
        bp.n as u64,
        format!(
            "{SYNC_NAME} WAL, E2E on; per bootstrap of a new device; n = ops on the relay; checkpoint + {} tail ops vs replay of all; median of {rounds} rounds; {built}",
            bp.tail
        ),
    ));
}

/// `push_pull_1k_at_1m_vs_at_10k`: each side builds its own history in its worker (A appends
/// and pumps, B pumps); every round A appends `new_ops` untimed, then pump A + pump B are
/// timed.
fn push_pull(suite: &mut Suite, p: &Params) {
    let pp = p_push_pull(p);
    let rounds = p.push_pull_rounds;
    suite.progress(&format!(
        "{PUSH_PULL}: {} new ops per round over {} (subject) vs {} (baseline) ops of history, {rounds} rounds",
        pp.new_ops, pp.history_large, pp.history_small
    ));
    let (mut s, mut b) = Worker::pair(PUSH_PULL, "");
    let mut s_rounds = Vec::new();
    let mut b_rounds = Vec::new();
    interleaved_samples(
        rounds,
        || {
            let r = s.round();
            let t = r.first().copied().unwrap_or(f64::NAN);
            s_rounds.push(r);
            t
        },
        || {
            let r = b.round();
            let t = r.first().copied().unwrap_or(f64::NAN);
            b_rounds.push(r);
            t
        },
    );
    let (s_done, b_done) = (s.finish(), b.finish());
    let s_med = column_medians(&s_rounds);
    let b_med = column_medians(&b_rounds);
    suite.push(Row::new(
        PUSH_PULL,
        s_med[0],
        b_med[0],
        goal(PUSH_PULL),
        Unit::Millis.label(),
        pp.new_ops as u64,
        format!(
            "{SYNC_NAME} WAL, E2E on, FsRelay; per round of {} new ops (pump A + pump B; append untimed); history {} vs {} ops; median of {rounds} rounds; at {}: {}; at {}: {}; {s_done}; {b_done}",
            pp.new_ops,
            pp.history_large,
            pp.history_small,
            pp.history_large,
            fmt_parts(&["pump A", "pump B"], &s_med[1..]),
            pp.history_small,
            fmt_parts(&["pump A", "pump B"], &b_med[1..]),
        ),
    ));
}
