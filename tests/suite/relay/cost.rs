//! Push and pull cost what is new, not what is stored: counted in records and bytes read from
//! chain files (the relay's read counters), never timed.

use tandem::adapters::fs_relay::{FsRelay, FsRelayStats};
use tandem::domain::oplog::OpRecord;
use tandem::domain::Seq;
use tandem::ports::conformance::relay::{bulky_chain, chain, device, encoded_size};
use tandem::ports::{BatchLimit, PullCursors, Relay};

use super::support::TempDir;

const STORED: usize = 5_000;
const NEW: usize = 10;

fn delta(after: FsRelayStats, before: FsRelayStats) -> FsRelayStats {
    FsRelayStats {
        records_read: after.records_read - before.records_read,
        bytes_read: after.bytes_read - before.bytes_read,
    }
}

fn line_len(op: &OpRecord) -> u64 {
    serde_json::to_vec(op).expect("serialize").len() as u64 + 1
}

#[tokio::test]
async fn pushing_and_pulling_new_ops_reads_only_them() {
    let dir = TempDir::new();
    let (a, b, reader) = (device(1), device(2), device(3));
    let ops = chain(a, STORED + NEW, 1_000);
    let ops_b = chain(b, 3, 2_000);
    {
        let relay = dir.relay(1_024);
        for d in [a, b, reader] {
            relay.register(d, 1).await.expect("register");
        }
        for batch in ops[..STORED].chunks(500) {
            relay.push(a, batch, 1).await.expect("push history");
        }
        relay.push(b, &ops_b, 1).await.expect("push b");
    }
    let longest = ops.iter().map(line_len).max().expect("ops");
    // A record costs at most its line and two index entries.
    let bound = |records: u64| records * (longest + 16);

    let relay = FsRelay::open(dir.path()).expect("reopen");
    let before = relay.stats();
    let out = relay
        .push(a, &ops[STORED..], 2)
        .await
        .expect("push new ops");
    assert_eq!(out.accepted, NEW);
    let push = delta(relay.stats(), before);
    assert!(push.records_read <= 1, "a push of {NEW} ops read {push:?}");
    assert!(
        push.bytes_read <= bound(1),
        "a push of {NEW} ops read {push:?}"
    );

    let cursors = PullCursors::from([(a, Seq::new(STORED as u64)), (b, Seq::new(3))]);
    let before = relay.stats();
    let batch = relay
        .pull(reader, &cursors, BatchLimit::ops(100), 3)
        .await
        .expect("pull new ops");
    assert_eq!(batch.ops.get(&a).map(Vec::as_slice), Some(&ops[STORED..]));
    let pull = delta(relay.stats(), before);
    // The new ops, plus the one before them that anchors their verification.
    assert!(
        pull.records_read <= NEW as u64 + 1,
        "pulling {NEW} new ops read {pull:?}"
    );
    assert!(
        pull.bytes_read <= bound(NEW as u64 + 1),
        "pulling {NEW} new ops read {pull:?}"
    );

    let middle = PullCursors::from([(a, Seq::new(2_500)), (b, Seq::new(3))]);
    let before = relay.stats();
    let page = relay
        .pull(reader, &middle, BatchLimit::ops(NEW), 4)
        .await
        .expect("pull a page");
    assert_eq!(
        page.ops.get(&a).map(Vec::as_slice),
        Some(&ops[2_500..2_500 + NEW])
    );
    assert!(page.more);
    let paged = delta(relay.stats(), before);
    assert!(
        paged.records_read <= NEW as u64 + 1,
        "a page of {NEW} read {paged:?}"
    );

    // The counters do count: a full pull reads the whole history.
    let before = relay.stats();
    let all = relay
        .pull(reader, &PullCursors::new(), BatchLimit::ops(usize::MAX), 5)
        .await
        .expect("full pull");
    assert_eq!(all.len(), STORED + NEW + 3);
    let full = delta(relay.stats(), before);
    assert!(full.records_read >= (STORED + NEW) as u64, "{full:?}");
}

#[tokio::test]
async fn a_byte_budget_leaves_the_records_it_refuses_unread() {
    const SIZE: usize = 64 * 1024;
    let dir = TempDir::new();
    let (a, reader) = (device(1), device(3));
    let ops = bulky_chain(a, 16, 1_000, SIZE);
    let relay = dir.relay(1_024);
    for d in [a, reader] {
        relay.register(d, 1).await.expect("register");
    }
    relay.push(a, &ops, 1).await.expect("push");

    let relay = FsRelay::open(dir.path()).expect("reopen");
    let before = relay.stats();
    let budget = encoded_size(&ops[..2]);
    let batch = relay
        .pull(reader, &PullCursors::new(), BatchLimit::new(100, budget), 2)
        .await
        .expect("pull within the budget");
    assert_eq!(batch.ops.get(&a).map(Vec::as_slice), Some(&ops[..2]));
    assert!(batch.more);
    let read = delta(relay.stats(), before);
    assert_eq!(read.records_read, 2, "{read:?}");
    // Two records and their index entries; not one byte of the fourteen refused records.
    assert!(
        read.bytes_read < 3 * SIZE as u64,
        "a budget of two {SIZE}-byte ops read {read:?}"
    );
}
