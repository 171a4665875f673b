//! Clauses about pulling and gc.

use super::*;
use crate::ports::BatchLimit;

/// `pull_resumes_from_cursors`
pub async fn pull_resumes_from_cursors(relay: &dyn Relay) {
    let (a, b, reader) = (device(1), device(2), device(3));
    setup(relay, &[a, b, reader], 1).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;

    let all = pull_all(relay, reader, &PullCursors::new(), 1).await;
    assert_eq!(
        ops_of(&all, a),
        ops_a,
        "a pull from scratch must return a's whole chain"
    );
    assert_eq!(
        ops_of(&all, b),
        ops_b,
        "a pull from scratch must return b's whole chain"
    );
    assert!(!all.more, "nothing remains after a full pull");
    assert_eq!(all.len(), 8);

    let cursors = PullCursors::from([(a, Seq::new(2)), (b, Seq::new(3)), (device(9), Seq::ZERO)]);
    let tail = pull_all(relay, reader, &cursors, 1).await;
    assert_eq!(
        ops_of(&tail, a),
        ops_a[2..].to_vec(),
        "a pull must resume at the cursor"
    );
    assert!(
        ops_of(&tail, b).is_empty(),
        "a cursor at the head returns nothing"
    );
    assert!(!tail.more);

    let past = PullCursors::from([(a, Seq::new(50)), (b, Seq::new(50))]);
    assert!(
        pull_all(relay, reader, &past, 1).await.is_empty(),
        "cursors past the head"
    );

    let none = relay
        .pull(reader, &PullCursors::new(), BatchLimit::ops(0), 1)
        .await
        .expect("pull with limit 0");
    assert!(
        none.is_empty() && none.more,
        "limit 0 returns nothing and says more remain"
    );

    let exact = relay
        .pull(reader, &PullCursors::new(), BatchLimit::ops(8), 1)
        .await
        .expect("pull");
    assert_eq!(
        (exact.len(), exact.more),
        (8, false),
        "a limit equal to what remains"
    );

    // Page through with a small limit: every op exactly once, in seq order per device.
    let mut cursors = PullCursors::new();
    let mut seen: BTreeMap<DeviceId, Vec<OpRecord>> = BTreeMap::new();
    for page in 0..20 {
        let batch = relay
            .pull(reader, &cursors, BatchLimit::ops(3), 1)
            .await
            .expect("pull page");
        assert!(
            batch.len() <= 3,
            "page {page} returned {} ops over the limit",
            batch.len()
        );
        for (d, ops) in &batch.ops {
            let from = cursors.get(d).copied().unwrap_or(Seq::ZERO);
            if let Some(first) = ops.first() {
                assert_eq!(
                    first.seq(),
                    from,
                    "page {page}: device {d} did not start at its cursor"
                );
                cursors.insert(*d, ops[ops.len() - 1].seq().next());
            }
            seen.entry(*d).or_default().extend(ops.iter().cloned());
        }
        if !batch.more {
            break;
        }
        assert!(
            !batch.is_empty(),
            "page {page}: more is set but nothing was returned"
        );
    }
    assert_eq!(
        seen.get(&a),
        Some(&ops_a),
        "paging lost or repeated ops of a"
    );
    assert_eq!(
        seen.get(&b),
        Some(&ops_b),
        "paging lost or repeated ops of b"
    );
}

/// `pull_honours_the_byte_budget`
pub async fn pull_honours_the_byte_budget(relay: &dyn Relay) {
    let (a, b, reader) = (device(1), device(2), device(3));
    setup(relay, &[a, b, reader], 1).await;
    let ops_a = bulky_chain(a, 4, 1_000, 4096);
    let ops_b = bulky_chain(b, 4, 2_000, 4096);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    // The chains in the relay's order (by device id), to say which prefix a budget admits.
    let mut order = [(a, &ops_a), (b, &ops_b)];
    order.sort_by_key(|(d, _)| *d);
    let all: Vec<OpRecord> = order
        .iter()
        .flat_map(|(_, ops)| ops.iter().cloned())
        .collect();
    let pull = |bytes: usize| async move {
        relay
            .pull(reader, &PullCursors::new(), BatchLimit::new(100, bytes), 1)
            .await
            .expect("pull within a byte budget")
    };

    for (bytes, want, case) in [
        (1, 1, "a budget below one op still returns one op"),
        (
            encoded_size(&all[..3]),
            3,
            "a budget exactly three ops' size",
        ),
        (
            encoded_size(&all[..3]) - 1,
            2,
            "one byte short of three ops",
        ),
        (
            encoded_size(&all[..5]) + 100,
            5,
            "a budget across two chains",
        ),
    ] {
        let batch = pull(bytes).await;
        let got: Vec<OpRecord> = order.iter().flat_map(|(d, _)| ops_of(&batch, *d)).collect();
        assert_eq!(got, all[..want].to_vec(), "{case}");
        assert!(batch.more, "{case}: the rest is still pending");
    }
    let whole = pull(encoded_size(&all)).await;
    assert_eq!(
        (whole.len(), whole.more),
        (8, false),
        "a budget of everything"
    );

    // Paging with a budget of about two and a half ops: every op once, in order.
    let budget = encoded_size(&all[..2]) + encoded_size(&all[..1]) / 2;
    let mut cursors = PullCursors::new();
    let mut seen: BTreeMap<DeviceId, Vec<OpRecord>> = BTreeMap::new();
    for page in 0..10 {
        let batch = relay
            .pull(reader, &cursors, BatchLimit::new(100, budget), 1)
            .await
            .expect("pull page");
        assert!(
            (1..=2).contains(&batch.len()),
            "page {page} returned {} ops; the budget fits one or two",
            batch.len()
        );
        for (d, ops) in &batch.ops {
            cursors.insert(*d, ops[ops.len() - 1].seq().next());
            seen.entry(*d).or_default().extend(ops.iter().cloned());
        }
        if !batch.more {
            break;
        }
    }
    assert_eq!(seen.get(&a), Some(&ops_a), "paging by bytes lost ops of a");
    assert_eq!(seen.get(&b), Some(&ops_b), "paging by bytes lost ops of b");
}

/// Pushes `a` (6 ops) and `b` (4 ops), acknowledges everything from both devices, puts a
/// checkpoint covering `a` up to seq 3 and all of `b`, and runs gc.
async fn compacted(relay: &dyn Relay) -> (Vec<OpRecord>, Vec<OpRecord>) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 100).await;
    let ops_a = chain(a, 6, 1_000);
    let ops_b = chain(b, 4, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    let everything = frontier_of(&[&ops_a, &ops_b]);
    relay.ack(a, &everything, 100).await.expect("ack a");
    relay.ack(b, &everything, 100).await.expect("ack b");
    relay
        .put_checkpoint(&checkpoint(&[&ops_a[..4], &ops_b]))
        .await
        .expect("put checkpoint");
    let report = relay.gc(100, 1_000).await.expect("gc");
    assert!(
        report.deleted > 0,
        "gc deleted nothing though ops were covered"
    );
    let kept: usize = report
        .first_kept
        .values()
        .map(|s| usize::try_from(s.get()).expect("small seq"))
        .sum();
    assert_eq!(
        report.deleted, kept,
        "the report's counts disagree: {report:?}"
    );
    (ops_a, ops_b)
}

/// `pull_after_gc_reports_compaction`
pub async fn pull_after_gc_reports_compaction(relay: &dyn Relay) {
    let (a, b, reader) = (device(1), device(2), device(3));
    let (ops_a, ops_b) = compacted(relay).await;
    relay.register(reader, 100).await.expect("register reader");
    // Every chain that lost ops reports its first stored seq to a cursor below it.
    let mut first = BTreeMap::new();
    for d in [a, b] {
        let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4)), (d, Seq::ZERO)]);
        match relay
            .pull(reader, &cursors, BatchLimit::ops(100), 100)
            .await
        {
            Err(RelayError::Compacted {
                device,
                first_available,
            }) => {
                assert_eq!(device, d, "Compacted names the wrong chain");
                first.insert(d, first_available);
            }
            Ok(_) => {}
            Err(other) => panic!("a cursor below the first stored op: {other:?}"),
        }
    }
    assert!(
        !first.is_empty(),
        "no chain reports compaction after gc deleted ops"
    );
    for (d, ops) in [(a, &ops_a), (b, &ops_b)] {
        let Some(&from) = first.get(&d) else { continue };
        assert!(from.get() > 0, "Compacted at seq 0");
        let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4)), (d, from)]);
        let batch = relay
            .pull(reader, &cursors, BatchLimit::ops(100), 100)
            .await
            .expect("pull at first stored");
        let i = usize::try_from(from.get()).expect("small seq");
        assert_eq!(
            ops_of(&batch, d),
            ops[i..].to_vec(),
            "pull at the first stored seq"
        );
        let below = PullCursors::from([
            (a, Seq::new(6)),
            (b, Seq::new(4)),
            (d, Seq::new(from.get() - 1)),
        ]);
        assert!(
            matches!(
                relay.pull(reader, &below, BatchLimit::ops(100), 100).await,
                Err(RelayError::Compacted { first_available, .. }) if first_available == from
            ),
            "a cursor one below the first stored seq must be Compacted"
        );
    }
    // A compacted chain keeps its head: the device continues it, and re-pushing compacted ops
    // is a harmless duplicate.
    let more_b = chain(b, 5, 2_000);
    assert_eq!(
        push(relay, b, &more_b).await,
        (1, 4),
        "continuing a compacted chain"
    );
    let cursors = PullCursors::from([(a, Seq::new(6)), (b, Seq::new(4))]);
    let batch = relay
        .pull(reader, &cursors, BatchLimit::ops(100), 100)
        .await
        .expect("pull");
    assert_eq!(
        ops_of(&batch, b),
        more_b[4..].to_vec(),
        "the op pushed after gc"
    );
}

/// `gc_keeps_everything_not_covered`
pub async fn gc_keeps_everything_not_covered(relay: &dyn Relay) {
    let (a, b, c, d) = (device(1), device(2), device(3), device(4));
    setup(relay, &[a, b, c], 1_000).await;
    let ops_a = chain(a, 6, 1_000);
    let ops_b = chain(b, 4, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    let everything = frontier_of(&[&ops_a, &ops_b]);
    relay.ack(a, &everything, 1_000).await.expect("ack a");
    relay.ack(b, &everything, 1_000).await.expect("ack b");
    relay
        .ack(c, &frontier_of(&[&ops_a[..2], &ops_b]), 1_000)
        .await
        .expect("ack c");
    let reader = d;

    let untouched = |report: crate::ports::GcReport, why: &str| {
        assert_eq!(report.deleted, 0, "gc deleted ops {why}");
        assert!(report.first_kept.is_empty(), "gc reported compaction {why}");
    };
    untouched(
        relay.gc(1_000, 500).await.expect("gc"),
        "without a checkpoint",
    );
    relay
        .put_checkpoint(&checkpoint(&[&ops_a[..4], &ops_b[..2]]))
        .await
        .expect("put checkpoint");
    // d is live and has acknowledged nothing: nothing is stable yet.
    relay.register(d, 1_000).await.expect("register d");
    untouched(
        relay.gc(1_000, 500).await.expect("gc"),
        "while a live device acked nothing",
    );
    let everything_pullable = pull_all(relay, reader, &PullCursors::new(), 1_000).await;
    assert_eq!(ops_of(&everything_pullable, a), ops_a);

    // d falls past the horizon; c still holds a back to seq 1.
    setup(relay, &[a, b, c], 2_000).await;
    let report = relay.gc(2_000, 500).await.expect("gc");
    let first = |dev: DeviceId| report.first_kept.get(&dev).copied().unwrap_or(Seq::ZERO);
    assert!(
        first(a) <= Seq::new(2),
        "gc deleted a's ops past c's ack: {report:?}"
    );
    assert!(
        first(b) <= Seq::new(2),
        "gc deleted b's ops past the checkpoint: {report:?}"
    );
    let total = first(a).get() + first(b).get();
    assert_eq!(
        report.deleted as u64, total,
        "the report's counts disagree: {report:?}"
    );
    let cursors = PullCursors::from([(a, first(a)), (b, first(b))]);
    let rest = pull_all(relay, reader, &cursors, 2_000).await;
    let from = |s: Seq| usize::try_from(s.get()).expect("small seq");
    assert_eq!(
        ops_of(&rest, a),
        ops_a[from(first(a))..].to_vec(),
        "uncovered ops of a lost"
    );
    assert_eq!(
        ops_of(&rest, b),
        ops_b[from(first(b))..].to_vec(),
        "uncovered ops of b lost"
    );

    // c falls past the horizon too: now only the checkpoint bounds gc.
    setup(relay, &[a, b], 3_000).await;
    let report = relay.gc(3_000, 500).await.expect("gc");
    let after = |dev: DeviceId, before: Seq| report.first_kept.get(&dev).copied().unwrap_or(before);
    let (fa, fb) = (after(a, first(a)), after(b, first(b)));
    assert!(
        fa <= Seq::new(4) && fb <= Seq::new(2),
        "gc passed the checkpoint: {report:?}"
    );
    let rest = pull_all(relay, reader, &PullCursors::from([(a, fa), (b, fb)]), 3_000).await;
    assert_eq!(
        ops_of(&rest, a),
        ops_a[from(fa)..].to_vec(),
        "uncovered ops of a lost"
    );
    assert_eq!(
        ops_of(&rest, b),
        ops_b[from(fb)..].to_vec(),
        "uncovered ops of b lost"
    );
}
