//! A relay folder synced between machines, where no lock is shared: copies of one directory
//! change on different machines and are merged file by file, as a sync tool would. gc on one
//! machine and the chain's own pushes on another must never change the same file, a copy that
//! has a base file but an older manifest must read as ending at the base, and a copy that has
//! gc's deletions but not yet its base file must still take the owner's pushes (and serve
//! nothing unverified until the base file arrives). Two gcs at once write different base
//! files, or the same bytes to one: the sync keeps both bases and the newer one wins.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use tandem::adapters::fs_relay::FsRelay;
use tandem::domain::oplog::OpRecord;
use tandem::domain::DeviceId;
use tandem::ports::conformance::relay::{chain, checkpoint, device, frontier_of};
use tandem::ports::{BatchLimit, PullCursors, Relay, RelayError};

use super::support::{base_file, checkpoint_file, copy_dir, manifest, snapshot, TempDir};

/// Ops per segment in these tests: small, so gc deletes whole segments.
const SEGMENT: u64 = 2;

/// A relay with two chains, every op acknowledged by both devices, and a checkpoint covering
/// `a`'s seqs 0..=3 of 0..=5 and all of `b`'s 0..=3: gc deletes `a`'s segments 0 and 2, and
/// only `b`'s segment 0, as segment 2 holds `b`'s head.
struct Fixture {
    dir: TempDir,
    a: DeviceId,
    b: DeviceId,
    /// `a`'s chain: 6 ops pushed, 4 more for later.
    ops_a: Vec<OpRecord>,
    /// `b`'s chain: 4 ops.
    ops_b: Vec<OpRecord>,
}

async fn fixture() -> Fixture {
    let dir = TempDir::new();
    let relay = dir.relay(SEGMENT);
    let (a, b) = (device(1), device(2));
    let (ops_a, ops_b) = (chain(a, 10, 1_000), chain(b, 4, 2_000));
    for (d, ops) in [(a, &ops_a[..6]), (b, &ops_b[..])] {
        relay.register(d, 10).await.expect("register");
        relay.push(d, ops, 10).await.expect("push");
    }
    let everything = frontier_of(&[&ops_a[..6], &ops_b]);
    for d in [a, b] {
        relay.ack(d, &everything, 10).await.expect("ack");
    }
    let covered = checkpoint(&[&ops_a[..4], &ops_b]);
    relay.put_checkpoint(&covered).await.expect("checkpoint");
    Fixture {
        dir,
        a,
        b,
        ops_a,
        ops_b,
    }
}

/// A machine's copy of the relay folder.
fn machine(from: &Path) -> TempDir {
    let copy = TempDir::new();
    copy_dir(from, copy.path());
    copy
}

/// What changed from `before` to `after` (paths relative to their roots): `Some(bytes)` for a
/// file written, `None` for a file deleted.
fn changes(before: &Path, after: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let relative = |root: &Path, files: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<_, _> {
        files
            .into_iter()
            .map(|(path, bytes)| (path.strip_prefix(root).expect("inside").to_owned(), bytes))
            .collect()
    };
    let old = relative(before, snapshot(before));
    let new = relative(after, snapshot(after));
    let mut out = BTreeMap::new();
    for (path, bytes) in &new {
        if old.get(path) != Some(bytes) {
            out.insert(path.clone(), Some(bytes.clone()));
        }
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        out.insert(path.clone(), None);
    }
    out
}

/// Applies `changes` to the folder at `root`, as a sync tool delivering them would.
fn deliver(root: &Path, changes: &BTreeMap<PathBuf, Option<Vec<u8>>>) {
    for (path, bytes) in changes {
        let path = root.join(path);
        match bytes {
            Some(bytes) => {
                fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                fs::write(&path, bytes).expect("write");
            }
            // Deleting what is already gone is nothing to deliver.
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove: {e}"),
                _ => {}
            },
        }
    }
}

fn cursors(at: &[(DeviceId, u64)]) -> PullCursors {
    at.iter()
        .map(|(d, seq)| (*d, tandem::domain::ids::Seq::new(*seq)))
        .collect()
}

#[tokio::test]
async fn gc_on_one_machine_and_pushes_on_another_change_no_common_file() {
    let f = fixture().await;
    let (x, y) = (machine(f.dir.path()), machine(f.dir.path()));

    // Machine Y is where `a` lives: it pushes four more ops. Machine X runs gc.
    let on_y = y.relay(SEGMENT);
    let pushed = on_y.push(f.a, &f.ops_a, 20).await.expect("push on Y");
    assert_eq!((pushed.accepted, pushed.duplicates), (4, 6));
    let report = x.relay(SEGMENT).gc(20, 1_000).await.expect("gc on X");
    assert_eq!(report.deleted, 4 + 2);

    let (by_x, by_y) = (
        changes(f.dir.path(), x.path()),
        changes(f.dir.path(), y.path()),
    );
    let common: BTreeSet<_> = by_x.keys().filter(|p| by_y.contains_key(*p)).collect();
    assert!(common.is_empty(), "both machines changed {common:?}");
    assert!(
        by_x.contains_key(&relative_base(f.a, 3)),
        "gc wrote no base file"
    );

    // Every machine ends up with both sets of changes, in either order.
    for order in [[&by_x, &by_y], [&by_y, &by_x]] {
        let merged = machine(f.dir.path());
        for changes in order {
            deliver(merged.path(), changes);
        }
        let relay = FsRelay::open(merged.path()).expect("open merged");
        let batch = relay
            .pull(
                device(99),
                &cursors(&[(f.a, 4), (f.b, 2)]),
                BatchLimit::ops(100),
                30,
            )
            .await
            .expect("pull past the bases");
        assert_eq!(batch.ops.get(&f.a).map(Vec::as_slice), Some(&f.ops_a[4..]));
        assert_eq!(batch.ops.get(&f.b).map(Vec::as_slice), Some(&f.ops_b[2..]));
        assert!(matches!(
            relay.pull(device(99), &PullCursors::new(), BatchLimit::ops(100), 30).await,
            Err(RelayError::Compacted { device, first_available })
                if device == f.a && first_available.get() == 4
        ));
        let next = chain(f.a, 11, 1_000);
        assert_eq!(
            relay
                .push(f.a, &next[10..], 30)
                .await
                .expect("push")
                .accepted,
            1
        );
    }
}

/// The path, relative to the relay folder, of the base file at `seq` on `device`'s chain.
fn relative_base(device: DeviceId, seq: u64) -> PathBuf {
    base_file(Path::new(""), device, seq)
}

#[tokio::test]
async fn a_manifest_older_than_the_base_file_reads_as_ending_at_the_base() {
    let f = fixture().await;
    let root = f.dir.path();
    let relay = f.dir.relay(SEGMENT);
    // `a`'s manifest as it was after two ops: what a machine still holds if the sync has
    // delivered gc's base file but not `a`'s later manifests.
    let early = TempDir::new();
    let a_early = early.relay(SEGMENT);
    a_early.register(f.a, 10).await.expect("register");
    a_early.push(f.a, &f.ops_a[..2], 10).await.expect("push");
    let stale = fs::read(manifest(early.path(), f.a)).expect("early manifest");

    relay.gc(20, 1_000).await.expect("gc");
    let current = fs::read(manifest(root, f.a)).expect("manifest");
    fs::write(manifest(root, f.a), &stale).expect("stale manifest");

    let behind = FsRelay::open(root).expect("open");
    let batch = behind
        .pull(
            device(99),
            &cursors(&[(f.a, 4), (f.b, 2)]),
            BatchLimit::ops(100),
            30,
        )
        .await
        .expect("pull");
    assert_eq!(
        batch.ops.get(&f.a),
        None,
        "nothing past the base is known yet"
    );
    assert_eq!(batch.ops.get(&f.b).map(Vec::as_slice), Some(&f.ops_b[2..]));
    assert!(matches!(
        behind.pull(device(99), &cursors(&[(f.a, 1)]), BatchLimit::ops(100), 30).await,
        Err(RelayError::Compacted { device, first_available })
            if device == f.a && first_available.get() == 4
    ));

    // The manifest arrives.
    fs::write(manifest(root, f.a), &current).expect("manifest arrives");
    let batch = behind
        .pull(
            device(99),
            &cursors(&[(f.a, 4), (f.b, 4)]),
            BatchLimit::ops(100),
            30,
        )
        .await
        .expect("pull");
    assert_eq!(batch.ops.get(&f.a).map(Vec::as_slice), Some(&f.ops_a[4..6]));
}

#[tokio::test]
async fn the_owner_pushes_on_a_copy_with_gcs_deletions_but_not_its_base_file() {
    let f = fixture().await;
    let root = f.dir.path();
    // gc ran elsewhere; its deletions arrived here, its base file did not.
    let elsewhere = machine(root);
    let report = elsewhere.relay(SEGMENT).gc(20, 1_000).await.expect("gc");
    assert!(report.deleted > 0);
    let mut arrived = changes(root, elsewhere.path());
    let late: BTreeMap<_, _> = [relative_base(f.a, 3), relative_base(f.b, 1)]
        .into_iter()
        .map(|path| {
            let bytes = arrived.remove(&path).expect("a base file");
            (path, bytes)
        })
        .collect();
    assert!(
        arrived.values().all(Option::is_none),
        "gc wrote more than base files"
    );
    deliver(root, &arrived);

    // The checkpoint covers all of `b`, but gc kept the segment holding `b`'s head, so `b`
    // can check its head before appending its new ops.
    let relay = FsRelay::open(root).expect("open");
    let more = chain(f.b, 6, 2_000);
    let pushed = relay.push(f.b, &more[4..], 30).await;
    assert_eq!(pushed.expect("push without the base file").accepted, 2);
    let pushed = relay.push(f.a, &f.ops_a[6..], 30).await.expect("push");
    assert_eq!(pushed.accepted, 4);
    // Until the base files arrive, the ops before the cursors (which link the answer) are
    // missing: the answer ends early, with no error and nothing unverified.
    let past_bases = cursors(&[(f.a, 4), (f.b, 2)]);
    let batch = relay
        .pull(device(99), &past_bases, BatchLimit::ops(100), 30)
        .await;
    assert!(batch.expect("pull").ops.is_empty());
    deliver(root, &late);
    let batch = relay
        .pull(device(99), &past_bases, BatchLimit::ops(100), 30)
        .await;
    let batch = batch.expect("pull");
    assert_eq!(batch.ops.get(&f.a).map(Vec::as_slice), Some(&f.ops_a[4..]));
    assert_eq!(batch.ops.get(&f.b).map(Vec::as_slice), Some(&more[2..]));
}

#[tokio::test]
async fn two_gcs_at_once_leave_both_bases_and_the_newer_one_wins() {
    let f = fixture().await;
    // Machine X collects with the fixture's checkpoint (`a` up to seq 3); machine Z, at the
    // same moment, with an older one (`a` and `b` up to seq 1).
    let (x, z) = (machine(f.dir.path()), machine(f.dir.path()));
    x.relay(SEGMENT).gc(20, 1_000).await.expect("gc on X");
    fs::remove_file(checkpoint_file(z.path())).expect("Z's checkpoint");
    let on_z = z.relay(SEGMENT);
    let older = checkpoint(&[&f.ops_a[..2], &f.ops_b[..2]]);
    on_z.put_checkpoint(&older).await.expect("older checkpoint");
    on_z.gc(20, 1_000).await.expect("gc on Z");
    let (by_x, mut by_z) = (
        changes(f.dir.path(), x.path()),
        changes(f.dir.path(), z.path()),
    );
    // Where both recorded a base, they wrote the same bytes; elsewhere, different files.
    let common: Vec<_> = by_x.keys().filter(|p| by_z.contains_key(*p)).collect();
    for path in &common {
        assert_eq!(by_x[*path], by_z[*path], "{}", path.display());
    }
    assert!(common.contains(&&relative_base(f.b, 1)));
    assert!(by_x.contains_key(&relative_base(f.a, 3)) && by_z.contains_key(&relative_base(f.a, 1)));

    // The sync keeps X's checkpoint and everything else from both, in either order.
    by_z.remove(&checkpoint_file(Path::new("")));
    for order in [[&by_x, &by_z], [&by_z, &by_x]] {
        let merged = machine(f.dir.path());
        for changes in order {
            deliver(merged.path(), changes);
        }
        let root = merged.path();
        assert!(base_file(root, f.a, 1).exists() && base_file(root, f.a, 3).exists());

        // Pulls go on past the newer base at once.
        let relay = FsRelay::open(root).expect("open merged");
        let batch = relay
            .pull(
                device(99),
                &cursors(&[(f.a, 4), (f.b, 2)]),
                BatchLimit::ops(100),
                30,
            )
            .await
            .expect("pull past the bases");
        assert_eq!(batch.ops.get(&f.a).map(Vec::as_slice), Some(&f.ops_a[4..6]));
        assert_eq!(batch.ops.get(&f.b).map(Vec::as_slice), Some(&f.ops_b[2..]));
        assert!(matches!(
            relay.pull(device(99), &cursors(&[(f.a, 2)]), BatchLimit::ops(100), 30).await,
            Err(RelayError::Compacted { device, first_available })
                if device == f.a && first_available.get() == 4
        ));

        // A later gc records a newer base and removes the ones it supersedes.
        let pushed = relay.push(f.a, &f.ops_a[6..8], 30).await.expect("push");
        assert_eq!(pushed.accepted, 2);
        let everything = frontier_of(&[&f.ops_a[..8], &f.ops_b]);
        for d in [f.a, f.b] {
            relay.ack(d, &everything, 30).await.expect("ack");
        }
        let later = checkpoint(&[&f.ops_a[..6], &f.ops_b]);
        relay
            .put_checkpoint(&later)
            .await
            .expect("later checkpoint");
        relay.gc(30, 1_000).await.expect("gc");
        assert!(base_file(root, f.a, 5).exists());
        assert!(!base_file(root, f.a, 1).exists() && !base_file(root, f.a, 3).exists());
        let batch = relay
            .pull(
                device(99),
                &cursors(&[(f.a, 6), (f.b, 2)]),
                BatchLimit::ops(100),
                30,
            )
            .await;
        assert_eq!(
            batch.expect("pull").ops.get(&f.a).map(Vec::as_slice),
            Some(&f.ops_a[6..8])
        );
        assert!(matches!(
            relay.pull(device(99), &cursors(&[(f.a, 4)]), BatchLimit::ops(100), 30).await,
            Err(RelayError::Compacted { device, first_available })
                if device == f.a && first_available.get() == 6
        ));
    }
}
