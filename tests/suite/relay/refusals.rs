//! Foreign ops, forks, gaps and tampered ops are refused with the right variant, and nothing
//! is stored: the relay answers as before and, for the file relay, not one byte of the
//! directory changed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tandem::adapters::fs_relay::FsRelay;
use tandem::adapters::memory::MemoryRelay;
use tandem::domain::oplog::{OpRecord, VerifyError};
use tandem::domain::{DeviceId, Seq};
use tandem::ports::conformance::relay::{chain, device, rival_chain, tampered};
use tandem::ports::{BatchLimit, PullCursors, Relay, RelayError};

use super::support::{snapshot, TempDir};

async fn held(relay: &dyn Relay) -> BTreeMap<DeviceId, Vec<OpRecord>> {
    relay
        .pull(device(99), &PullCursors::new(), BatchLimit::ops(1_000), 5)
        .await
        .expect("pull")
        .ops
}

/// Runs every refusal against `relay`; `files` snapshots its storage (or nothing).
async fn refusals(relay: &dyn Relay, files: &dyn Fn() -> BTreeMap<PathBuf, Vec<u8>>) {
    let (a, b, c) = (device(1), device(2), device(3));
    let ops_a = chain(a, 8, 1_000);
    let ops_b = chain(b, 4, 2_000);
    let rival = rival_chain(a, 8, 1_000);
    for (d, ops) in [(a, &ops_a[..5]), (b, &ops_b[..3])] {
        relay.register(d, 5).await.expect("register");
        relay.push(d, ops, 5).await.expect("push");
    }
    let before_files = files();
    let before = held(relay).await;

    let cases: Vec<(&str, DeviceId, Vec<OpRecord>)> = vec![
        (
            "foreign op after own",
            a,
            vec![ops_a[5].clone(), ops_b[3].clone()],
        ),
        ("another device's chain", a, ops_b.clone()),
        ("fork at a held seq", a, vec![rival[3].clone()]),
        (
            "fork after a duplicate",
            a,
            vec![ops_a[2].clone(), ops_a[3].clone(), rival[4].clone()],
        ),
        ("gap past the head", a, vec![ops_a[6].clone()]),
        (
            "hole inside the batch",
            a,
            vec![ops_a[5].clone(), ops_a[7].clone()],
        ),
        (
            "tampered new op",
            a,
            vec![ops_a[5].clone(), tampered(&ops_a[6])],
        ),
        ("not linked to the head", a, vec![rival[5].clone()]),
        ("unregistered device", c, chain(c, 2, 3_000)),
    ];
    for (what, pusher, batch) in cases {
        let err = relay
            .push(pusher, &batch, 6)
            .await
            .expect_err(&format!("{what}: must be refused"));
        let right = match what {
            "foreign op after own" | "another device's chain" => {
                matches!(err, RelayError::ForeignOp { pusher: p, author } if p == a && author == b)
            }
            "fork at a held seq" => matches!(
                err,
                RelayError::Fork { device, seq, held, offered }
                    if device == a && seq == Seq::new(3) && held == ops_a[3].op_id()
                        && offered == rival[3].op_id()
            ),
            "fork after a duplicate" => {
                matches!(err, RelayError::Fork { seq, .. } if seq == Seq::new(4))
            }
            "gap past the head" => matches!(
                err,
                RelayError::Gap { device, expected, got }
                    if device == a && expected == Seq::new(5) && got == Seq::new(6)
            ),
            "hole inside the batch" => {
                matches!(err, RelayError::Verify(VerifyError::SeqGap { .. }))
            }
            "tampered new op" => {
                matches!(err, RelayError::Verify(VerifyError::OpIdMismatch { .. }))
            }
            "not linked to the head" => {
                matches!(err, RelayError::Verify(VerifyError::BrokenPrev { .. }))
            }
            _ => matches!(err, RelayError::NotRegistered(d) if d == c),
        };
        assert!(right, "{what}: wrong refusal {err:?}");
        assert_eq!(
            held(relay).await,
            before,
            "{what}: the refused push changed the chains"
        );
        assert_eq!(
            files(),
            before_files,
            "{what}: the refused push changed the directory"
        );
    }
    let out = relay.push(a, &ops_a[5..], 7).await.expect("a valid push");
    assert_eq!((out.accepted, out.duplicates), (3, 0));
}

#[tokio::test]
async fn refused_pushes_store_nothing_in_memory() {
    refusals(&MemoryRelay::new(), &BTreeMap::new).await;
}

#[tokio::test]
async fn refused_pushes_store_nothing_on_disk() {
    let dir = TempDir::new();
    let relay = dir.relay(3);
    let root = dir.path().to_path_buf();
    refusals(&relay, &|| snapshot(&root)).await;
    // A fresh relay on the directory sees the accepted chain, nothing refused.
    let fresh = FsRelay::open(&root).expect("reopen");
    let chains = held(&fresh).await;
    assert_eq!(chains.get(&device(1)), Some(&chain(device(1), 8, 1_000)));
    assert_eq!(chains.get(&device(2)), Some(&chain(device(2), 3, 2_000)));
}
