//! Conformance suite for [`Journal`]: one function per contract clause of
//! [`ports::journal`](crate::ports::journal), each named after its clause.
//!
//! Adapter authors run it with [`journal_conformance_tests!`](crate::journal_conformance_tests),
//! which stamps one `#[test]` per clause, each on a fresh, empty journal:
//!
//! ```
//! use tandem::adapters::sqlite::{SqliteJournal, SqliteOptions};
//!
//! fn fresh() -> Box<SqliteJournal> {
//!     Box::new(SqliteJournal::open_in_memory(SqliteOptions::default()).unwrap())
//! }
//!
//! tandem::journal_conformance_tests!(sqlite_memory, fresh);
//! # fn main() {}
//! ```

use serde_json::json;
use uuid::Uuid;

use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    ChainHead, ChainTip, Checkpoint, Frontier, Hlc, OpAuthor, OpId, OpPayload, OpRecord, Scope,
    State, Surface,
};
use crate::ports::conformance::relay::{bulky_chain, encoded_size};
use crate::ports::{BatchLimit, Journal, JournalCommit, JournalError};

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __journal_clauses {
    ($m:ident) => {
        $m!(commit_is_atomic);
        $m!(commit_extends_chains_only);
        $m!(recommit_is_idempotent);
        $m!(fork_is_refused);
        $m!(frontier_reads_back_heads);
        $m!(ops_from_pages_in_order);
        $m!(ops_from_honours_the_byte_budget);
        $m!(push_cursor_only_moves_forward);
        $m!(install_base_supersedes_covered_ops);
        $m!(install_base_refuses_forks_and_regressions);
        $m!(stage_base_changes_nothing_until_installed);
        $m!(local_device_id_is_sticky);
    };
}

/// Stamps a test module `$name` with one `#[test]` per [`Journal`] contract clause, each run
/// on a fresh journal from `$factory` (a function or closure returning a fixture that
/// dereferences to the journal).
#[macro_export]
macro_rules! journal_conformance_tests {
    ($name:ident, $factory:expr) => {
        $crate::__conformance_tests!($name, $factory, journal, __journal_clauses, *);
    };
}

fn dev(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0x10C0_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .expect("non-nil")
}

/// `n` linked run-surface ops of `device`, tagged so two chains of one device differ.
fn chain(device: DeviceId, n: usize, tag: &str) -> Vec<OpRecord> {
    let mut author = OpAuthor::new(device);
    (0..n)
        .map(|i| {
            author
                .append(
                    1_000 + i as u64,
                    Scope::Personal,
                    Surface::Run,
                    OpPayload::Plain(json!({ "tag": tag, "i": i })),
                )
                .expect("valid op")
        })
        .collect()
}

fn head(op: &OpRecord) -> ChainTip {
    ChainTip {
        device: op.device(),
        head: Some(ChainHead::of(op)),
    }
}

fn frontier_of(heads: &[&OpRecord]) -> Frontier {
    let mut f = Frontier::new();
    for op in heads {
        f.set(head(op));
    }
    f
}

fn held(j: &dyn Journal, device: DeviceId) -> Vec<OpRecord> {
    j.ops_from(device, Seq::ZERO, BatchLimit::ops(1_000))
        .expect("ops_from")
}

/// `commit_is_atomic`: a batch with one bad op stores nothing.
pub fn commit_is_atomic(j: &dyn Journal) {
    let a = chain(dev(1), 2, "a");
    let b = chain(dev(2), 2, "b");
    let batch = [a[0].clone(), a[1].clone(), b[1].clone()];
    assert!(
        matches!(j.commit(&batch), Err(JournalError::Gap { .. })),
        "commit_is_atomic: a batch with a gap must fail"
    );
    assert!(
        j.frontier().expect("frontier").is_empty(),
        "commit_is_atomic: a failed commit moved a head"
    );
    assert!(
        held(j, dev(1)).is_empty(),
        "commit_is_atomic: a failed commit stored ops"
    );
}

/// `commit_extends_chains_only`: gaps and broken links are refused.
pub fn commit_extends_chains_only(j: &dyn Journal) {
    let a = chain(dev(1), 2, "a");
    match j.commit(&a[1..]) {
        Err(JournalError::Gap {
            device,
            expected,
            found,
        }) => assert_eq!((device, expected, found), (dev(1), Seq::ZERO, Seq::new(1))),
        other => panic!("commit_extends_chains_only: expected a gap, got {other:?}"),
    }
    j.commit(&a[..1]).expect("genesis");
    let unlinked = OpRecord::new(
        Hlc::new(5_000, 0, dev(1)),
        Seq::new(1),
        Some(OpId::from_bytes([7; 32])),
        Scope::Personal,
        Surface::Run,
        OpPayload::Plain(json!("x")),
    )
    .expect("well-formed op");
    match j.commit(&[unlinked]) {
        Err(JournalError::BrokenPrev { device, seq }) => {
            assert_eq!((device, seq), (dev(1), Seq::new(1)));
        }
        other => panic!("commit_extends_chains_only: expected a broken prev, got {other:?}"),
    }
    assert_eq!(held(j, dev(1)), a[..1], "commit_extends_chains_only");
}

/// `recommit_is_idempotent`: held ops are skipped and counted.
pub fn recommit_is_idempotent(j: &dyn Journal) {
    let a = chain(dev(1), 4, "a");
    let first = j.commit(&a[..3]).expect("commit");
    assert_eq!(
        first,
        JournalCommit {
            inserted: 3,
            duplicates: 0
        }
    );
    let again = j.commit(&a).expect("recommit");
    assert_eq!(
        again,
        JournalCommit {
            inserted: 1,
            duplicates: 3
        },
        "recommit_is_idempotent: counts"
    );
    assert_eq!(held(j, dev(1)), a, "recommit_is_idempotent: stored twice");
}

/// `fork_is_refused`: a different op at a held seq fails and changes nothing.
pub fn fork_is_refused(j: &dyn Journal) {
    let a = chain(dev(1), 2, "a");
    let rival = chain(dev(1), 2, "rival");
    j.commit(&a).expect("commit");
    match j.commit(&rival[..1]) {
        Err(JournalError::Fork {
            device,
            seq,
            held: h,
            offered,
        }) => assert_eq!(
            (device, seq, h, offered),
            (dev(1), Seq::ZERO, a[0].op_id(), rival[0].op_id())
        ),
        other => panic!("fork_is_refused: expected a fork, got {other:?}"),
    }
    assert_eq!(held(j, dev(1)), a, "fork_is_refused: the chain changed");
}

/// `frontier_reads_back_heads`: the frontier names every chain's head.
pub fn frontier_reads_back_heads(j: &dyn Journal) {
    let a = chain(dev(1), 3, "a");
    let b = chain(dev(2), 1, "b");
    j.commit(&[b[0].clone(), a[2].clone(), a[0].clone(), a[1].clone()])
        .expect("commit in any order");
    assert_eq!(
        j.frontier().expect("frontier"),
        frontier_of(&[&a[2], &b[0]]),
        "frontier_reads_back_heads"
    );
}

/// `ops_from_pages_in_order`: seq order, from `from`, at most `limit`, byte-identical.
pub fn ops_from_pages_in_order(j: &dyn Journal) {
    let a = chain(dev(1), 5, "a");
    j.commit(&a).expect("commit");
    let page = j
        .ops_from(dev(1), Seq::new(1), BatchLimit::ops(2))
        .expect("page");
    assert_eq!(page, a[1..3], "ops_from_pages_in_order: middle page");
    assert_eq!(
        j.ops_from(dev(1), Seq::new(4), BatchLimit::ops(10))
            .expect("tail"),
        a[4..],
        "ops_from_pages_in_order: last page"
    );
    assert!(j
        .ops_from(dev(1), Seq::new(5), BatchLimit::ops(10))
        .expect("past")
        .is_empty());
    assert!(j
        .ops_from(dev(9), Seq::ZERO, BatchLimit::ops(10))
        .expect("unknown")
        .is_empty());
    for op in page {
        assert_eq!(
            op.computed_id(),
            op.op_id(),
            "ops_from_pages_in_order: altered op"
        );
    }
}

/// `ops_from_honours_the_byte_budget`: stops before the op that would pass `limit.bytes`,
/// but returns at least one.
pub fn ops_from_honours_the_byte_budget(j: &dyn Journal) {
    let a = bulky_chain(dev(1), 5, 1_000, 4096);
    j.commit(&a).expect("commit");
    let within = |from: u64, ops: usize, bytes: usize| {
        j.ops_from(dev(1), Seq::new(from), BatchLimit::new(ops, bytes))
            .expect("ops_from within a byte budget")
    };
    let three = encoded_size(&a[1..4]);
    assert_eq!(within(1, 10, three), a[1..4], "exactly three ops' size");
    assert_eq!(within(1, 10, three - 1), a[1..3], "one byte short of three");
    assert_eq!(within(1, 2, three), a[1..3], "the op count still bounds");
    assert_eq!(
        within(2, 10, 1),
        a[2..3],
        "one op, however small the budget"
    );
    assert_eq!(within(0, 10, usize::MAX), a, "no byte bound");
}

/// `push_cursor_only_moves_forward`: starts at 0, keeps the higher, cannot pass the head.
pub fn push_cursor_only_moves_forward(j: &dyn Journal) {
    let a = chain(dev(1), 3, "a");
    assert_eq!(j.push_cursor(dev(1)).expect("cursor"), Seq::ZERO);
    j.commit(&a).expect("commit");
    j.advance_push_cursor(dev(1), Seq::new(2)).expect("advance");
    j.advance_push_cursor(dev(1), Seq::new(1))
        .expect("lower is kept higher");
    assert_eq!(
        j.push_cursor(dev(1)).expect("cursor"),
        Seq::new(2),
        "push_cursor_only_moves_forward: moved back"
    );
    match j.advance_push_cursor(dev(1), Seq::new(4)) {
        Err(JournalError::CursorBeyondHead {
            next, requested, ..
        }) => assert_eq!((next, requested), (Seq::new(3), Seq::new(4))),
        other => panic!("push_cursor_only_moves_forward: expected beyond-head, got {other:?}"),
    }
    j.advance_push_cursor(dev(1), Seq::new(3))
        .expect("to the head");
    assert_eq!(j.push_cursor(dev(1)).expect("cursor"), Seq::new(3));
}

/// `install_base_supersedes_covered_ops`: covered ops go, heads and cursors rise.
pub fn install_base_supersedes_covered_ops(j: &dyn Journal) {
    let a = chain(dev(1), 5, "a");
    let b = chain(dev(2), 2, "b");
    let c = chain(dev(3), 5, "c");
    j.commit(&a).expect("commit a");
    j.commit(&b).expect("commit b");
    let cp = Checkpoint::new(frontier_of(&[&a[2], &b[1], &c[3]]), &State::new());
    j.install_base(&cp).expect("install");
    assert_eq!(j.base_checkpoint().expect("base"), Some(cp));
    assert_eq!(held(j, dev(1)), a[3..], "install_base: kept the tail of a");
    assert!(held(j, dev(2)).is_empty(), "install_base: b is covered");
    assert_eq!(
        j.frontier().expect("frontier"),
        frontier_of(&[&a[4], &b[1], &c[3]]),
        "install_base: heads"
    );
    assert_eq!(j.push_cursor(dev(3)).expect("cursor"), Seq::new(4));
    assert!(j.push_cursor(dev(1)).expect("cursor") >= Seq::new(3));
    let re = j.commit(&a).expect("recommit below the base");
    assert_eq!(
        re,
        JournalCommit {
            inserted: 0,
            duplicates: 5
        }
    );
    let next = j.commit(&c[4..]).expect("continue after the base");
    assert_eq!(next.inserted, 1, "install_base: the chain continues");
}

/// `install_base_refuses_forks_and_regressions`: and changes nothing.
pub fn install_base_refuses_forks_and_regressions(j: &dyn Journal) {
    let a = chain(dev(1), 3, "a");
    let rival = chain(dev(1), 3, "rival");
    j.commit(&a).expect("commit");
    let forked = Checkpoint::new(frontier_of(&[&rival[1]]), &State::new());
    assert!(
        matches!(j.install_base(&forked), Err(JournalError::Fork { .. })),
        "install_base_refuses_forks_and_regressions: fork"
    );
    assert_eq!(j.base_checkpoint().expect("base"), None);
    assert_eq!(held(j, dev(1)), a, "a refused install changed the journal");
    let cp1 = Checkpoint::new(frontier_of(&[&a[1]]), &State::new());
    j.install_base(&cp1).expect("install");
    let older = Checkpoint::new(frontier_of(&[&a[0]]), &State::new());
    assert!(matches!(
        j.install_base(&older),
        Err(JournalError::BaseRegression { .. })
    ));
    let b = chain(dev(2), 1, "b");
    let elsewhere = Checkpoint::new(frontier_of(&[&b[0]]), &State::new());
    match j.install_base(&elsewhere) {
        Err(JournalError::BaseRegression {
            device, offered, ..
        }) => assert_eq!((device, offered), (dev(1), None)),
        other => panic!("install_base_refuses_forks_and_regressions: got {other:?}"),
    }
    assert_eq!(j.base_checkpoint().expect("base"), Some(cp1));
}

/// `stage_base_changes_nothing_until_installed`: staging is invisible; installing what was
/// staged is an ordinary install, and the base reads back byte for byte; discarding what was
/// staged never touches the installed base.
pub fn stage_base_changes_nothing_until_installed(j: &dyn Journal) {
    let a = chain(dev(1), 4, "a");
    j.commit(&a).expect("commit");
    let first = Checkpoint::new(frontier_of(&[&a[0]]), &State::new());
    j.install_base(&first).expect("install");
    // A state of some size, so an adapter that stores large states apart is exercised.
    let mut author = OpAuthor::new(dev(5));
    let ops: Vec<OpRecord> = (0..64)
        .map(|i| {
            let payload = json!({"key": format!("k{i}"), "body": "x".repeat(512)});
            author
                .append(
                    1,
                    Scope::Personal,
                    Surface::Knowledge,
                    OpPayload::Plain(payload),
                )
                .expect("append")
        })
        .collect();
    let state = crate::domain::oplog::fold(&ops).expect("fold");
    let cp = Checkpoint::new(frontier_of(&[&a[2]]), &state);
    let before = (j.frontier().expect("frontier"), held(j, dev(1)));
    j.stage_base(&cp).expect("stage");
    j.discard_staged().expect("discard what was staged");
    j.stage_base(&cp).expect("stage again");
    j.stage_base(&cp).expect("and again");
    assert_eq!(
        j.base_checkpoint().expect("base"),
        Some(first.clone()),
        "stage_base_changes_nothing_until_installed: the base moved"
    );
    assert_eq!(
        (j.frontier().expect("frontier"), held(j, dev(1))),
        before,
        "stage_base_changes_nothing_until_installed: the journal changed"
    );
    j.install_base(&cp).expect("install the staged checkpoint");
    let base = j.base_checkpoint().expect("base").expect("a base");
    assert_eq!(base, cp);
    assert_eq!(base.state_bytes(), cp.state_bytes());
    assert_eq!(held(j, dev(1)), a[3..], "stage_base: kept the tail of a");
    // Staging an older checkpoint afterwards changes nothing either, and installing it is
    // still a regression.
    j.stage_base(&first).expect("stage an older one");
    assert_eq!(j.base_checkpoint().expect("base").as_ref(), Some(&cp));
    assert!(matches!(
        j.install_base(&first),
        Err(JournalError::BaseRegression { .. })
    ));
    // Discarding what was staged keeps the installed base whole.
    j.discard_staged().expect("discard the older one");
    let base = j.base_checkpoint().expect("base").expect("a base");
    assert_eq!(base.state_bytes(), cp.state_bytes());
}

/// `local_device_id_is_sticky`: the first candidate wins.
pub fn local_device_id_is_sticky(j: &dyn Journal) {
    let first = j.local_device_id(dev(1)).expect("device id");
    let second = j.local_device_id(dev(2)).expect("device id");
    assert_eq!(
        (first, second),
        (dev(1), dev(1)),
        "local_device_id_is_sticky"
    );
}
