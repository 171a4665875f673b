//! Tampered relay files. A small relay (two devices, five ops each) is written once; then, for
//! every single-bit flip of every byte and every truncation of a chain file, on a copy of the
//! directory that is verified byte for byte against the original before each case, a fresh
//! `FsRelay` must either fail `pull` with a typed error or return ops that are exactly a prefix
//! of the originals. It must never panic and never return an altered op. The index and
//! manifest get the same treatment, and the roster and checkpoint files get every bit flip: a
//! typed error or the original value, never a panic. Every flip and truncation of a chain's
//! base file (written by gc) is refused.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tandem::adapters::fs_relay::FsRelay;
use tandem::domain::ids::Seq;
use tandem::domain::oplog::{Checkpoint, OpRecord};
use tandem::domain::DeviceId;
use tandem::ports::conformance::relay::{chain, checkpoint, device, frontier_of};
use tandem::ports::{BatchLimit, PullCursors, Relay, RelayError};

use super::support::{
    base_file, checkpoint_file, copy_dir, manifest, roster_file, runtime, segment_idx, segment_log,
    snapshot, TempDir,
};

/// Files larger than this would make the exhaustive loops slow: the fixture must stay small.
const MAX_TARGET_LEN: usize = 4096;

/// The untouched relay and what it holds.
struct Original {
    dir: TempDir,
    a: DeviceId,
    b: DeviceId,
    ops: BTreeMap<DeviceId, Vec<OpRecord>>,
    checkpoint: Checkpoint,
}

async fn original() -> Original {
    let dir = TempDir::new();
    let relay = dir.relay(1024);
    let (a, b) = (device(1), device(2));
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 5, 2_000);
    for (d, ops) in [(a, &ops_a), (b, &ops_b)] {
        relay.register(d, 10).await.expect("register");
        relay.push(d, ops, 10).await.expect("push");
    }
    let everything = frontier_of(&[&ops_a, &ops_b]);
    relay.ack(a, &everything, 10).await.expect("ack");
    relay.ack(b, &everything, 10).await.expect("ack");
    let checkpoint = checkpoint(&[&ops_a[..1]]);
    relay.put_checkpoint(&checkpoint).await.expect("checkpoint");
    Original {
        dir,
        a,
        b,
        ops: BTreeMap::from([(a, ops_a), (b, ops_b)]),
        checkpoint,
    }
}

/// How the relay answered one damaged copy.
#[derive(Debug, Default)]
struct Tally {
    full: usize,
    prefix: usize,
    refused: usize,
}

/// A copy of the original directory that every case starts from, byte for byte: before each
/// case every file is checked against the original (so no case sees another's leftovers),
/// and after it the damaged file is restored.
struct Workspace {
    copy: TempDir,
    pristine: BTreeMap<PathBuf, Vec<u8>>,
}

impl Workspace {
    fn new(original: &Path) -> Self {
        let copy = TempDir::new();
        copy_dir(original, copy.path());
        let pristine = snapshot(copy.path());
        Self { copy, pristine }
    }

    /// Replaces `target` (relative to the relay dir) with `bytes` and opens a fresh relay.
    fn damaged(&self, target: &Path, bytes: &[u8], case: &str) -> FsRelay {
        assert!(
            snapshot(self.copy.path()) == self.pristine,
            "{case}: the previous case left the directory changed"
        );
        fs::write(self.copy.path().join(target), bytes).expect("write damaged file");
        FsRelay::open(self.copy.path()).expect("the format file is intact")
    }

    fn restore(&self, target: &Path) {
        let path = self.copy.path().join(target);
        fs::write(&path, &self.pristine[&path]).expect("restore file");
    }
}

/// A fresh relay's pull must be a typed refusal or a prefix of every original chain.
async fn pull_is_prefix_or_refused(relay: FsRelay, original: &Original, case: &str, t: &mut Tally) {
    let reader = device(99); // unregistered: pulling writes nothing
    match relay
        .pull(reader, &PullCursors::new(), BatchLimit::ops(1_000), 10)
        .await
    {
        Ok(batch) => {
            let mut complete = true;
            for (d, ops) in &batch.ops {
                let whole = original
                    .ops
                    .get(d)
                    .unwrap_or_else(|| panic!("{case}: ops of unknown device {d}"));
                assert!(
                    ops.len() <= whole.len() && ops[..] == whole[..ops.len()],
                    "{case}: served ops that are not a prefix of the originals"
                );
                complete &= ops.len() == whole.len();
            }
            complete &= original.ops.keys().all(|d| batch.ops.contains_key(d));
            if complete {
                t.full += 1;
            } else {
                t.prefix += 1;
            }
        }
        Err(RelayError::Corrupt(_) | RelayError::Verify(_)) => t.refused += 1,
        Err(other) => panic!("{case}: expected Corrupt or Verify, got {other:?}"),
    }
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .expect("inside the relay dir")
        .to_path_buf()
}

fn pristine(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).expect("read original file");
    assert!(
        !bytes.is_empty() && bytes.len() <= MAX_TARGET_LEN,
        "{} has {} bytes: the fixture must stay small",
        path.display(),
        bytes.len()
    );
    bytes
}

/// Every single-bit flip of `path` (and every truncation, if `truncate`), checked by pulling.
async fn damage_chain_file(original: &Original, path: &Path, truncate: bool) -> (Tally, Tally) {
    let bytes = pristine(path);
    let target = relative(original.dir.path(), path);
    let name = target.display().to_string();
    let work = Workspace::new(original.dir.path());
    let mut flips = Tally::default();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            let case = format!("{name}: bit {bit} of byte {i} flipped");
            let relay = work.damaged(&target, &damaged, &case);
            pull_is_prefix_or_refused(relay, original, &case, &mut flips).await;
            work.restore(&target);
        }
    }
    let mut cuts = Tally::default();
    if truncate {
        for len in 0..bytes.len() {
            let case = format!("{name}: truncated to {len} bytes");
            let relay = work.damaged(&target, &bytes[..len], &case);
            pull_is_prefix_or_refused(relay, original, &case, &mut cuts).await;
            work.restore(&target);
        }
    }
    (flips, cuts)
}

#[test]
fn every_bit_flip_and_truncation_of_a_segment_log_is_refused_or_a_prefix() {
    runtime().block_on(async {
        let original = original().await;
        let log = segment_log(original.dir.path(), original.a, 0);
        let (flips, cuts) = damage_chain_file(&original, &log, true).await;
        // A flip anywhere in a record changes what it says: nothing may be served unaltered.
        assert_eq!(flips.full, 0, "a flipped log was served whole: {flips:?}");
        assert!(flips.refused > 0, "no flip was refused: {flips:?}");
        // Cutting the log leaves whole records before the cut: those are a servable prefix.
        assert!(cuts.prefix > 0, "no truncation served a prefix: {cuts:?}");
        assert_eq!(cuts.full, 0, "a truncated log was served whole: {cuts:?}");
    });
}

#[test]
fn every_bit_flip_and_truncation_of_an_index_or_manifest_is_refused_or_a_prefix() {
    runtime().block_on(async {
        let original = original().await;
        let root = original.dir.path();
        for path in [segment_idx(root, original.b, 0), manifest(root, original.b)] {
            let (flips, cuts) = damage_chain_file(&original, &path, true).await;
            assert!(flips.refused > 0, "{}: no flip was refused", path.display());
            assert!(
                cuts.refused + cuts.prefix > 0,
                "{}: no truncation",
                path.display()
            );
        }
    });
}

#[test]
fn every_bit_flip_of_a_roster_file_is_refused_or_read() {
    runtime().block_on(async {
        let original = original().await;
        let path = roster_file(original.dir.path(), original.a);
        let bytes = pristine(&path);
        let target = relative(original.dir.path(), &path);
        let work = Workspace::new(original.dir.path());
        let mut refused = 0;
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let case = format!("roster: bit {bit} of byte {i} flipped");
                let relay = work.damaged(&target, &damaged, &case);
                let roster = relay.roster().await;
                let stable = relay.stable_frontier(10, 1_000).await;
                let gc = relay.gc(10, 1_000).await;
                for result in [roster.map(drop), stable.map(drop), gc.map(drop)] {
                    match result {
                        Ok(()) => {}
                        Err(RelayError::Corrupt(_)) => refused += 1,
                        Err(other) => panic!("{case}: expected Corrupt, got {other:?}"),
                    }
                }
                work.restore(&target);
            }
        }
        assert!(refused > 0, "no roster flip was detected");
    });
}

#[test]
fn every_bit_flip_of_the_checkpoint_file_is_refused_or_the_original() {
    runtime().block_on(async {
        let original = original().await;
        let path = checkpoint_file(original.dir.path());
        let bytes = pristine(&path);
        let target = relative(original.dir.path(), &path);
        let work = Workspace::new(original.dir.path());
        let mut refused = 0;
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let case = format!("checkpoint: bit {bit} of byte {i} flipped");
                let relay = work.damaged(&target, &damaged, &case);
                match relay.latest_checkpoint().await {
                    Ok(Some(found)) => assert_eq!(found, original.checkpoint, "{case}: altered"),
                    Ok(None) => panic!("{case}: the checkpoint vanished"),
                    Err(RelayError::Corrupt(_)) => refused += 1,
                    Err(other) => panic!("{case}: expected Corrupt, got {other:?}"),
                }
                match relay.gc(10, 1_000).await {
                    Ok(_) | Err(RelayError::Corrupt(_)) => {}
                    Err(other) => panic!("{case}: gc: expected Corrupt, got {other:?}"),
                }
                work.restore(&target);
            }
        }
        assert!(refused > 0, "no checkpoint flip was detected");
    });
}

#[test]
fn every_bit_flip_and_truncation_of_a_base_file_is_refused() {
    runtime().block_on(async {
        let dir = TempDir::new();
        let relay = dir.relay(2);
        let a = device(1);
        let ops = chain(a, 5, 1_000);
        relay.register(a, 10).await.expect("register");
        relay.push(a, &ops, 10).await.expect("push");
        relay.ack(a, &frontier_of(&[&ops]), 10).await.expect("ack");
        let covered = checkpoint(&[&ops[..3]]);
        relay.put_checkpoint(&covered).await.expect("checkpoint");
        let report = relay.gc(10, 1_000).await.expect("gc");
        assert_eq!(
            report.deleted, 2,
            "gc deleted segment 0 and wrote the base file"
        );

        let path = base_file(dir.path(), a, 1);
        let bytes = pristine(&path);
        let target = relative(dir.path(), &path);
        let work = Workspace::new(dir.path());
        let past_base = [(a, Seq::new(2))].into_iter().collect::<PullCursors>();
        let mut cases = Vec::new();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                cases.push((format!("base file: bit {bit} of byte {i} flipped"), damaged));
            }
        }
        for len in 0..bytes.len() {
            let case = format!("base file: truncated to {len} bytes");
            cases.push((case, bytes[..len].to_vec()));
        }
        for (case, damaged) in &cases {
            let relay = work.damaged(&target, damaged, case);
            match relay
                .pull(device(99), &past_base, BatchLimit::ops(100), 10)
                .await
            {
                Err(RelayError::Corrupt(_)) => {}
                other => panic!("{case}: expected Corrupt, got {other:?}"),
            }
            work.restore(&target);
        }
        let intact = work.damaged(&target, &bytes, "base file: intact");
        let batch = intact
            .pull(device(99), &past_base, BatchLimit::ops(100), 10)
            .await;
        assert_eq!(
            batch.expect("pull").ops.get(&a).map(Vec::as_slice),
            Some(&ops[2..])
        );
    });
}
