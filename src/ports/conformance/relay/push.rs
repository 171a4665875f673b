//! Clauses about registering and pushing.

use super::*;

/// `register_is_idempotent`
pub async fn register_is_idempotent(relay: &dyn Relay) {
    let a = device(1);
    relay.register(a, 10).await.expect("first register");
    let first = entry(relay, a).await;
    assert_eq!(
        (
            first.registered_at_ms,
            first.last_seen_ms,
            first.acked.len()
        ),
        (10, 10, 0),
        "a new device starts with its registration time and no acks"
    );
    let ops = chain(a, 2, 1_000);
    push(relay, a, &ops).await;
    relay.ack(a, &frontier_of(&[&ops]), 15).await.expect("ack");
    relay.register(a, 20).await.expect("second register");
    let roster = relay.roster().await.expect("roster");
    assert_eq!(roster.len(), 1, "registering twice added a second entry");
    let again = &roster[0];
    assert_eq!(
        again.registered_at_ms, 10,
        "re-register changed the registration time"
    );
    assert_eq!(
        again.last_seen_ms, 20,
        "re-register did not refresh last-seen"
    );
    assert_eq!(
        again.acked,
        frontier_of(&[&ops]),
        "re-register dropped the acks"
    );
    assert_eq!(
        stored(relay, a, 20).await,
        ops,
        "re-register touched the chain"
    );
}

/// `push_requires_registration`
pub async fn push_requires_registration(relay: &dyn Relay) {
    let a = device(1);
    let ops = chain(a, 2, 1_000);
    match relay.push(a, &ops, 1).await {
        Err(RelayError::NotRegistered(d)) => assert_eq!(d, a),
        other => panic!("push by an unregistered device must be NotRegistered, got {other:?}"),
    }
    match relay.ack(a, &frontier_of(&[&ops]), 1).await {
        Err(RelayError::NotRegistered(d)) => assert_eq!(d, a),
        other => panic!("ack by an unregistered device must be NotRegistered, got {other:?}"),
    }
    assert!(
        relay.roster().await.expect("roster").is_empty(),
        "a refused call registered the device"
    );
    relay.register(a, 2).await.expect("register");
    assert!(
        stored(relay, a, 2).await.is_empty(),
        "a refused push stored ops"
    );
    assert_eq!(push(relay, a, &ops).await, (2, 0));
}

/// `push_accepts_own_ops_only`
pub async fn push_accepts_own_ops_only(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 1).await;
    let mine = chain(a, 2, 1_000);
    let theirs = chain(b, 2, 1_000);
    for batch in [theirs.clone(), vec![mine[0].clone(), theirs[0].clone()]] {
        match relay.push(a, &batch, 1).await {
            Err(RelayError::ForeignOp { pusher, author }) => {
                assert_eq!(
                    (pusher, author),
                    (a, b),
                    "ForeignOp names the wrong devices"
                );
            }
            other => panic!("pushing another device's op must be ForeignOp, got {other:?}"),
        }
    }
    assert!(
        stored(relay, a, 1).await.is_empty(),
        "a refused push stored ops of a"
    );
    assert!(
        stored(relay, b, 1).await.is_empty(),
        "a refused push stored ops of b"
    );
    assert_eq!(push(relay, a, &mine).await, (2, 0));
    assert_eq!(push(relay, b, &theirs).await, (2, 0));
}

/// `push_is_chain_checked`
pub async fn push_is_chain_checked(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 5, 1_000);
    let refuse = |batch: Vec<OpRecord>, what: &'static str| async move {
        let err = relay
            .push(a, &batch, 1)
            .await
            .expect_err(&format!("{what} must be refused"));
        (err, what)
    };
    // Not starting at the next seq.
    match refuse(ops[1..3].to_vec(), "a batch past the next seq").await {
        (
            RelayError::Gap {
                device,
                expected,
                got,
            },
            _,
        ) => {
            assert_eq!((device, expected, got), (a, Seq::ZERO, Seq::new(1)));
        }
        (other, what) => panic!("{what}: expected Gap, got {other:?}"),
    }
    // A hole inside the batch.
    match refuse(vec![ops[0].clone(), ops[2].clone()], "a batch with a hole").await {
        (RelayError::Verify(VerifyError::SeqGap { .. }) | RelayError::Gap { .. }, _) => {}
        (other, what) => panic!("{what}: expected Verify(SeqGap) or Gap, got {other:?}"),
    }
    // Tampered content.
    match refuse(vec![tampered(&ops[0])], "a tampered op").await {
        (RelayError::Verify(VerifyError::OpIdMismatch { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(OpIdMismatch), got {other:?}"),
    }
    assert!(
        stored(relay, a, 1).await.is_empty(),
        "a refused push stored ops"
    );
    assert_eq!(push(relay, a, &ops[..2]).await, (2, 0));
    // A well-formed op that does not link to the stored head.
    let unlinked = OpRecord::new(
        Hlc::new(5_000, 0, a),
        Seq::new(2),
        Some(OpId::from_bytes([7; 32])),
        Scope::Personal,
        Surface::Run,
        OpPayload::Plain(json!({ "step": 2 })),
    )
    .expect("well-formed op");
    match refuse(vec![unlinked], "an op not linked to the head").await {
        (RelayError::Verify(VerifyError::BrokenPrev { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(BrokenPrev), got {other:?}"),
    }
    // A stamp that does not increase.
    let stale = OpRecord::new(
        ops[1].hlc(),
        Seq::new(2),
        Some(ops[1].op_id()),
        Scope::Personal,
        Surface::Run,
        OpPayload::Plain(json!({ "step": 2 })),
    )
    .expect("well-formed op");
    match refuse(vec![stale], "an op with a stale stamp").await {
        (RelayError::Verify(VerifyError::HlcNotIncreasing { .. }), _) => {}
        (other, what) => panic!("{what}: expected Verify(HlcNotIncreasing), got {other:?}"),
    }
    // A gap after the stored head, and a good op followed by a bad one (all or nothing).
    match refuse(ops[3..].to_vec(), "a batch leaving a gap").await {
        (RelayError::Gap { expected, got, .. }, _) => {
            assert_eq!((expected, got), (Seq::new(2), Seq::new(3)));
        }
        (other, what) => panic!("{what}: expected Gap, got {other:?}"),
    }
    let half_bad = vec![ops[2].clone(), tampered(&ops[3])];
    assert!(
        matches!(
            refuse(half_bad, "a batch ending in a tampered op").await.0,
            RelayError::Verify(_)
        ),
        "a batch ending in a tampered op must be a Verify error"
    );
    assert_eq!(
        stored(relay, a, 1).await,
        ops[..2].to_vec(),
        "refused pushes changed the stored chain"
    );
    assert_eq!(push(relay, a, &ops[2..]).await, (3, 0));
    assert_eq!(stored(relay, a, 1).await, ops);
}

/// `repush_is_deduplicated`
pub async fn repush_is_deduplicated(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 5, 1_000);
    assert_eq!(push(relay, a, &ops[..3]).await, (3, 0), "first push");
    assert_eq!(push(relay, a, &ops[..3]).await, (0, 3), "identical re-push");
    assert_eq!(push(relay, a, &ops[1..]).await, (2, 2), "overlapping push");
    assert_eq!(
        push(relay, a, &ops[4..]).await,
        (0, 1),
        "re-push of the head"
    );
    assert_eq!(push(relay, a, &[]).await, (0, 0), "empty push");
    match relay.push(a, &[tampered(&ops[1])], 1).await {
        Err(RelayError::Verify(VerifyError::OpIdMismatch { .. })) => {}
        other => panic!("a tampered re-delivery must be Verify(OpIdMismatch), got {other:?}"),
    }
    assert_eq!(
        stored(relay, a, 1).await,
        ops,
        "a re-push stored something twice"
    );
}

/// `fork_is_refused`
pub async fn fork_is_refused(relay: &dyn Relay) {
    let a = device(1);
    setup(relay, &[a], 1).await;
    let ops = chain(a, 4, 1_000);
    let rival = rival_chain(a, 4, 1_000);
    push(relay, a, &ops[..3]).await;
    for (batch, seq) in [
        (rival[..1].to_vec(), 0),
        (vec![ops[0].clone(), rival[1].clone()], 1),
        (rival[..].to_vec(), 0),
        (vec![rival[2].clone()], 2),
    ] {
        match relay.push(a, &batch, 1).await {
            Err(RelayError::Fork {
                device,
                seq: at,
                held,
                offered,
            }) => {
                let i = usize::try_from(seq).expect("small seq");
                assert_eq!(
                    (device, at, held, offered),
                    (a, Seq::new(seq), ops[i].op_id(), rival[i].op_id()),
                    "Fork names the wrong op"
                );
            }
            other => panic!("a different op at seq {seq} must be a Fork, got {other:?}"),
        }
    }
    assert_eq!(
        stored(relay, a, 1).await,
        ops[..3].to_vec(),
        "a fork changed the chain"
    );
    assert_eq!(push(relay, a, &ops[3..]).await, (1, 0));
}
