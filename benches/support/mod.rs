//! A small harness for ratio benchmarks, shared by every `harness = false` bench suite
//! (`engine` today; `relay` and `cloud` include it with `mod support;` or `#[path]`).
//!
//! Each row times a *subject* (tandem doing something) and its *baseline* (the physical floor
//! built from the same raw parts) in the same run, interleaved round by round so drift in the
//! machine (other load, page cache, thermal) hits both sides alike. A row reports the medians
//! of the per-op times, their ratio `subject / baseline` and whether it meets its goal
//! (`ratio <= goal`). A suite prints a table and writes `target/bench/<suite>.json`.
//!
//! Benchmarks report; they never fail the process because a goal was missed.
//!
//! `TANDEM_BENCH_QUICK=1` asks every suite for a small-N run that finishes in well under a
//! minute; rows keep their names and record the `n` they really used.
//!
//! # Sides run in their own processes
//!
//! Subject and baseline of a row normally run in two worker processes ([`Worker::pair`]): the
//! bench binary re-executes itself with `TANDEM_BENCH_WORKER=<row>/<side>`, the worker builds
//! its fixture, and the parent drives rounds over a pipe (only the parent waits, so one side
//! runs at a time). The reason is process-global state that would otherwise couple the two
//! sides: the bundled SQLite is compiled with `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so every
//! connection of a process shares one page-cache LRU, and writing two databases alternately
//! from one process was measured to leave one of them re-reading every page from the OS
//! (which side depends on history), turning ratios into noise. Allocator state (after a
//! million-message load) is the other shared thing. Timing happens inside the worker; the
//! pipe round trip is never timed.
//!
//! `TANDEM_BENCH_ONLY=a,b` runs only the rows whose names contain one of the comma-separated
//! substrings (for investigating one row); such a partial run prints its table but leaves the
//! JSON report of the last complete run alone.

// Each suite uses a different subset of the helpers.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Whether `TANDEM_BENCH_QUICK=1` (or any value other than empty/`0`) asks for a small-N run.
pub fn quick() -> bool {
    std::env::var("TANDEM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// One result row. `subject` and `baseline` are in `unit` (per op unless the note says
/// otherwise); `ratio = subject / baseline`; `met = ratio <= goal`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable row name (the same in quick and full runs).
    pub name: String,
    /// The subject's median time per op.
    pub subject: f64,
    /// The baseline's median time per op.
    pub baseline: f64,
    /// `subject / baseline`.
    pub ratio: f64,
    /// The target ratio.
    pub goal: f64,
    /// Unit of `subject` and `baseline` (`us`, `ms`, `s`).
    pub unit: String,
    /// Ops measured per side (or dataset size, as the note says).
    pub n: u64,
    /// Whether `ratio <= goal`.
    pub met: bool,
    /// Free text: durability mode, statistic, dataset shape.
    pub note: String,
}

impl Row {
    /// A row from its two measurements; computes `ratio` and `met`.
    pub fn new(
        name: &str,
        subject: f64,
        baseline: f64,
        goal: f64,
        unit: &str,
        n: u64,
        note: impl Into<String>,
    ) -> Self {
        let ratio = if baseline > 0.0 {
            subject / baseline
        } else {
            f64::INFINITY
        };
        Self {
            name: name.to_owned(),
            subject,
            baseline,
            ratio,
            goal,
            unit: unit.to_owned(),
            n,
            met: ratio <= goal,
            note: note.into(),
        }
    }
}

/// A time unit for rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
}

impl Unit {
    /// The label written into rows.
    pub fn label(self) -> &'static str {
        match self {
            Self::Micros => "us",
            Self::Millis => "ms",
            Self::Secs => "s",
        }
    }

    /// `d` expressed in this unit.
    pub fn of(self, d: Duration) -> f64 {
        match self {
            Self::Micros => d.as_secs_f64() * 1e6,
            Self::Millis => d.as_secs_f64() * 1e3,
            Self::Secs => d.as_secs_f64(),
        }
    }

    /// `d / ops` expressed in this unit (per-op time of a timed batch of `ops` operations).
    pub fn per_op(self, d: Duration, ops: usize) -> f64 {
        self.of(d) / ops.max(1) as f64
    }
}

/// Runs `rounds` rounds of each side, alternating them and swapping which side goes first every
/// round (subject first in even rounds, baseline first in odd ones). Each closure runs one round
/// and returns that round's sample (typically its per-op time). Returns the medians of the
/// subject's and the baseline's samples. Warm both sides up before calling.
pub fn interleaved(
    rounds: usize,
    subject: impl FnMut() -> f64,
    baseline: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut s, mut b) = interleaved_samples(rounds, subject, baseline);
    (median(&mut s), median(&mut b))
}

/// Like [`interleaved`], but returns every round's samples (subject, baseline) in round order.
pub fn interleaved_samples(
    rounds: usize,
    mut subject: impl FnMut() -> f64,
    mut baseline: impl FnMut() -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut s = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            s.push(subject());
            b.push(baseline());
        } else {
            b.push(baseline());
            s.push(subject());
        }
    }
    (s, b)
}

/// Times `ops` calls of `op` as one span and returns the per-op time in `unit`.
pub fn time_per_op(unit: Unit, ops: usize, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..ops {
        op();
    }
    unit.per_op(start.elapsed(), ops)
}

/// The median (mean of the two middle values for an even count); `NaN` when empty.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// The `p`-th percentile (`0.0..=100.0`, nearest rank); `NaN` when empty.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Seconds since the suite started, for progress lines.
fn since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// One benchmark suite: collects rows, prints progress on stderr, then the table on stdout,
/// and writes `target/bench/<suite>.json`.
#[derive(Debug)]
pub struct Suite {
    name: String,
    quick: bool,
    started: Instant,
    only: Option<Vec<String>>,
    rows: Vec<Row>,
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Report<'a> {
    suite: &'a str,
    quick: bool,
    /// False when built without optimisations (e.g. by `cargo test`): figures then mean little.
    optimized: bool,
    rows: &'a [Row],
    /// Figures that are not ratios (sizes, memory), keyed by name; absent when none.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

impl Suite {
    /// Starts suite `name`, reading the quick-mode flag from the environment.
    pub fn new(name: &str) -> Self {
        let suite = Self {
            name: name.to_owned(),
            quick: quick(),
            started: Instant::now(),
            only: std::env::var("TANDEM_BENCH_ONLY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
            rows: Vec::new(),
            extra: serde_json::Map::new(),
        };
        if cfg!(debug_assertions) {
            suite.progress("warning: unoptimised build; run `cargo bench` for meaningful figures");
        }
        if let Some(only) = &suite.only {
            suite.progress(&format!("only rows matching {only:?} (TANDEM_BENCH_ONLY)"));
        }
        suite.progress(&format!(
            "suite {name}: {} run",
            if suite.quick { "quick" } else { "full" }
        ));
        suite
    }

    /// Whether this is a quick (small-N) run.
    pub fn is_quick(&self) -> bool {
        self.quick
    }

    /// Whether row `name` should run (always, unless `TANDEM_BENCH_ONLY` filters it out).
    pub fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| name.contains(o.as_str())))
    }

    /// Picks the full-run or quick-run value.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Prints a progress line on stderr, stamped with the time since the suite started.
    pub fn progress(&self, msg: &str) {
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not abort the benchmark.
        let _ = writeln!(err, "[{} {:>7.1}s] {msg}", self.name, since(self.started));
    }

    /// Records a row and reports it on stderr at once (the table comes at the end).
    pub fn push(&mut self, row: Row) {
        self.progress(&format!(
            "row {}: subject {} {u}, baseline {} {u}, ratio {:.3} (goal {}) {}",
            row.name,
            fmt_num(row.subject),
            fmt_num(row.baseline),
            row.ratio,
            row.goal,
            if row.met { "met" } else { "MISSED" },
            u = row.unit,
        ));
        self.rows.push(row);
    }

    /// Records a figure that is not a ratio (a size, a peak memory) under `key`: printed after
    /// the table and written as `extra.<key>` in the JSON report.
    pub fn extra(&mut self, key: &str, value: serde_json::Value) {
        self.progress(&format!("{key}: {value}"));
        self.extra.insert(key.to_owned(), value);
    }

    /// The rows recorded so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Prints the table on stdout and writes the JSON report. Returns the report's path, or
    /// `None` if it could not be written (reported on stderr; the process still exits 0).
    pub fn finish(self) -> Option<PathBuf> {
        println!("{}", self.table());
        for (key, value) in &self.extra {
            println!("{key}: {value}");
        }
        let met = self.rows.iter().filter(|r| r.met).count();
        println!(
            "suite {}: {met}/{} rows meet their goal ({} run, {:.1}s)",
            self.name,
            self.rows.len(),
            if self.quick { "quick" } else { "full" },
            since(self.started),
        );
        if self.only.is_some() {
            println!("partial run (TANDEM_BENCH_ONLY): JSON report not written");
            return None;
        }
        match self.write_json() {
            Ok(path) => {
                println!("wrote {}", path.display());
                Some(path)
            }
            Err(e) => {
                self.progress(&format!("could not write the JSON report: {e}"));
                None
            }
        }
    }

    /// The results as a plain-text table.
    pub fn table(&self) -> String {
        let header = [
            "name", "n", "subject", "baseline", "unit", "ratio", "goal", "met", "note",
        ];
        let cells: Vec<[String; 9]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    r.n.to_string(),
                    fmt_num(r.subject),
                    fmt_num(r.baseline),
                    r.unit.clone(),
                    format!("{:.3}", r.ratio),
                    format!("{}", r.goal),
                    if r.met { "yes" } else { "no" }.to_owned(),
                    r.note.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        // Left-align text columns, right-align numbers.
        let right = [false, true, true, true, false, true, true, false, false];
        let line = |cols: &[String]| -> String {
            let mut s = String::new();
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = widths[i].saturating_sub(c.chars().count());
                if right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < cols.len() {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s
        };
        let mut out = String::new();
        out.push_str(&line(&header.map(str::to_owned)));
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        out.push_str(&"-".repeat(total.min(160)));
        for row in &cells {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }

    fn write_json(&self) -> std::io::Result<PathBuf> {
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.name));
        let report = Report {
            suite: &self.name,
            quick: self.quick,
            optimized: !cfg!(debug_assertions),
            rows: &self.rows,
            extra: &self.extra,
        };
        let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        std::fs::write(&path, json + "\n")?;
        Ok(path)
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the package root, where
/// cargo runs benches), else the nearest ancestor of this executable holding cargo's
/// `CACHEDIR.TAG` (covers `build.target-dir` in a cargo config), else `<package>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
        {
            return dir.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Formats a measurement with about four significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

// ----- worker processes -----------------------------------------------------------------------

/// The environment variable that turns the bench binary into a worker: `<row>/<side>`.
const WORKER_ENV: &str = "TANDEM_BENCH_WORKER";
/// A free-form argument for the worker (typically a database path built by the parent).
const WORKER_ARG_ENV: &str = "TANDEM_BENCH_WORKER_ARG";

/// Which side of a row a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// tandem doing the work.
    Subject,
    /// The physical floor built from the same raw parts.
    Baseline,
}

impl Side {
    /// `subject` or `baseline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::Baseline => "baseline",
        }
    }
}

/// What this process was started as, if it is a worker.
#[derive(Debug, Clone)]
pub struct WorkerRole {
    /// The row name.
    pub row: String,
    /// The side.
    pub side: Side,
    /// The argument the parent passed (may be empty).
    pub arg: String,
}

/// `Some` when this process is a worker started by [`Worker::spawn`].
pub fn worker_role() -> Option<WorkerRole> {
    let raw = std::env::var(WORKER_ENV).ok()?;
    let (row, side) = raw.rsplit_once('/')?;
    let side = match side {
        "subject" => Side::Subject,
        "baseline" => Side::Baseline,
        _ => return None,
    };
    Some(WorkerRole {
        row: row.to_owned(),
        side,
        arg: std::env::var(WORKER_ARG_ENV).unwrap_or_default(),
    })
}

/// Worker side of the protocol: reports ready, then runs `round` for each `round` command and
/// replies with its samples, and on `finish` runs `finish` and replies with its text (which
/// must be one line). Returns when the parent says `finish` or closes the pipe.
pub fn serve(mut round: impl FnMut() -> Vec<f64>, finish: impl FnOnce() -> String) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut reply = |line: &str| {
        // A parent that went away ends the worker through the failed write.
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .expect("reply to the parent");
    };
    reply("ready");
    let mut finish = Some(finish);
    for line in stdin.lock().lines() {
        let line = line.expect("read a command from the parent");
        match line.trim() {
            "round" => {
                let samples = round();
                let text: Vec<String> = samples.iter().map(|v| format!("{v:e}")).collect();
                reply(&format!("ok {}", text.join(" ")));
            }
            "finish" => {
                let text = finish.take().map(|f| f()).unwrap_or_default();
                reply(&format!("done {}", text.replace('\n', " ")));
                return;
            }
            other => panic!("unknown worker command {other:?}"),
        }
    }
}

/// Parent side of one worker process.
#[derive(Debug)]
pub struct Worker {
    label: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts this bench binary as the `side` worker of `row` and waits until its fixture is
    /// ready. Its stderr (progress, panics) goes to ours.
    pub fn spawn(row: &str, side: Side, arg: &str) -> Self {
        let label = format!("{row}/{}", side.as_str());
        let exe = std::env::current_exe().expect("path of the bench binary");
        let mut child = Command::new(exe)
            .env(WORKER_ENV, &label)
            .env(WORKER_ARG_ENV, arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a worker process");
        let stdin = child.stdin.take().expect("worker stdin");
        let stdout = BufReader::new(child.stdout.take().expect("worker stdout"));
        let mut worker = Self {
            label,
            child,
            stdin,
            stdout,
        };
        let hello = worker.read_line();
        assert_eq!(hello, "ready", "worker {} did not start", worker.label);
        worker
    }

    /// Starts the subject worker, then (once it is ready) the baseline worker, so their setups
    /// do not compete for the CPU.
    pub fn pair(row: &str, arg: &str) -> (Self, Self) {
        let subject = Self::spawn(row, Side::Subject, arg);
        let baseline = Self::spawn(row, Side::Baseline, arg);
        (subject, baseline)
    }

    /// Runs one round in the worker and returns its samples.
    pub fn round(&mut self) -> Vec<f64> {
        self.send("round");
        let line = self.read_line();
        let rest = line
            .strip_prefix("ok")
            .unwrap_or_else(|| panic!("worker {} answered {line:?}", self.label));
        rest.split_whitespace()
            .map(|v| v.parse().expect("a sample"))
            .collect()
    }

    /// Runs one round and returns its first sample (rows with one sample per round).
    pub fn sample(&mut self) -> f64 {
        self.round().first().copied().unwrap_or(f64::NAN)
    }

    /// Ends the worker and returns the text its finish step reported.
    pub fn finish(mut self) -> String {
        self.send("finish");
        let line = self.read_line();
        let text = line
            .strip_prefix("done")
            .unwrap_or_else(|| panic!("worker {} answered {line:?}", self.label))
            .trim()
            .to_owned();
        drop(self.stdin);
        let status = self.child.wait().expect("wait for the worker");
        assert!(
            status.success(),
            "worker {} exited with {status}",
            self.label
        );
        text
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("worker {} is gone: {e}", self.label));
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("worker {} is unreadable: {e}", self.label));
        assert!(n > 0, "worker {} died (see its stderr above)", self.label);
        line.trim_end().to_owned()
    }
}

/// Prints a worker's progress line on stderr.
pub fn worker_progress(role: &WorkerRole, msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "    [{}/{}] {msg}", role.row, role.side.as_str());
}

/// A plain rusqlite connection with the same flags and PRAGMAs as tandem's SQLite connections
/// (WAL, foreign keys, busy timeout, `synchronous`), for floors built from raw SQLite.
pub fn raw_connection(
    path: &Path,
    sync: tandem::adapters::sqlite::Synchronous,
) -> rusqlite::Connection {
    use rusqlite::{Connection, OpenFlags};
    use tandem::adapters::sqlite::{SqliteOptions, Synchronous};
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).expect("open raw connection");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "foreign_keys", true)
        .expect("foreign_keys");
    conn.busy_timeout(SqliteOptions::default().busy_timeout)
        .expect("busy_timeout");
    let level = match sync {
        Synchronous::Full => 2,
        Synchronous::Normal => 1,
    };
    conn.pragma_update(None, "synchronous", level)
        .expect("synchronous");
    conn.set_prepared_statement_cache_capacity(64);
    conn
}
