//! Crashes mid-append: bytes past the manifest's head (whole or partial records, partial index
//! entries, a segment the manifest never committed) are never served, and the next push
//! truncates them away and appends where the committed chain ends.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use tandem::adapters::fs_relay::FsRelay;
use tandem::domain::oplog::{encode_op, OpRecord};
use tandem::ports::conformance::relay::{chain, device, rival_chain};
use tandem::ports::{BatchLimit, PullCursors, Relay};

use super::support::{segment_idx, segment_log, TempDir};

fn append(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(bytes).expect("append");
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn everything(relay: &FsRelay) -> Vec<OpRecord> {
    let batch = relay
        .pull(device(99), &PullCursors::new(), BatchLimit::ops(1_000), 1)
        .await
        .expect("pull");
    assert!(!batch.more);
    batch.ops.into_values().flatten().collect()
}

#[tokio::test]
async fn a_torn_tail_is_never_served_and_the_next_push_truncates_it() {
    let dir = TempDir::new();
    let root = dir.path();
    let a = device(1);
    let ops = chain(a, 10, 1_000);
    let rival = rival_chain(a, 10, 1_000);
    let relay = dir.relay(4);
    relay.register(a, 1).await.expect("register");
    relay.push(a, &ops[..6], 1).await.expect("push");
    let (log, idx) = (segment_log(root, a, 4), segment_idx(root, a, 4));
    let (log_len, idx_len) = (len(&log), len(&idx));

    // A crash mid-append: a whole record that was never committed (a different op than the
    // one pushed next), half of another, and an index entry and a half.
    let rival_record = encode_op(&rival[6]);
    append(&log, &rival_record);
    append(&log, &encode_op(&rival[7])[..40]);
    append(&idx, &(log_len + rival_record.len() as u64).to_be_bytes());
    append(&idx, &[0, 0, 1]);

    let fresh = FsRelay::open(root).expect("reopen");
    assert_eq!(
        everything(&fresh).await,
        ops[..6].to_vec(),
        "a torn tail was served"
    );
    let out = fresh
        .push(a, &ops[6..8], 2)
        .await
        .expect("push over the torn tail");
    assert_eq!((out.accepted, out.duplicates), (2, 0));
    assert_eq!(everything(&fresh).await, ops[..8].to_vec());
    let expected = log_len + (encode_op(&ops[6]).len() + encode_op(&ops[7]).len()) as u64;
    assert_eq!(len(&log), expected, "the torn tail was not truncated");
    assert_eq!(
        len(&idx),
        idx_len + 16,
        "the torn index tail was not truncated"
    );

    // A crash after starting a segment the manifest never committed.
    let (log8, idx8) = (segment_log(root, a, 8), segment_idx(root, a, 8));
    append(&log8, &encode_op(&rival[8])[..25]);
    append(&idx8, &[9; 8]);
    let again = FsRelay::open(root).expect("reopen");
    assert_eq!(
        everything(&again).await,
        ops[..8].to_vec(),
        "an uncommitted segment was served"
    );
    let out = again
        .push(a, &ops[8..], 3)
        .await
        .expect("push into the torn segment");
    assert_eq!(out.accepted, 2);
    assert_eq!(everything(&again).await, ops);
    assert_eq!(len(&idx8), 16);
    assert_eq!(
        len(&log8),
        (encode_op(&ops[8]).len() + encode_op(&ops[9]).len()) as u64
    );
}

#[tokio::test]
async fn data_the_manifest_names_but_the_folder_lacks_ends_the_answer_early() {
    // As while a synced folder has the manifest but not yet the segment's last bytes.
    let dir = TempDir::new();
    let root = dir.path();
    let a = device(1);
    let ops = chain(a, 6, 1_000);
    let relay = dir.relay(4);
    relay.register(a, 1).await.expect("register");
    relay.push(a, &ops, 1).await.expect("push");
    let log = segment_log(root, a, 4);
    let full = fs::read(&log).expect("read segment");
    fs::write(&log, &full[..full.len() - 3]).expect("cut the last record");
    let fresh = FsRelay::open(root).expect("reopen");
    assert_eq!(
        everything(&fresh).await,
        ops[..5].to_vec(),
        "only the complete prefix"
    );
    // The owner cannot append after a head whose record is missing.
    let more = chain(a, 7, 1_000);
    assert!(
        fresh.push(a, &more[6..], 2).await.is_err(),
        "appended after a missing head"
    );
    fs::write(&log, &full).expect("the rest arrives");
    assert_eq!(everything(&fresh).await, ops);
    assert_eq!(
        fresh.push(a, &more[6..], 2).await.expect("push").accepted,
        1
    );
}
