//! Clauses about the roster, acks, the stable frontier and checkpoints.

use super::*;
use crate::ports::BatchLimit;

/// `roster_tracks_last_seen_and_acks`
pub async fn roster_tracks_last_seen_and_acks(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    relay.register(a, 100).await.expect("register a");
    relay.register(b, 110).await.expect("register b");
    let mut roster = relay.roster().await.expect("roster");
    roster.sort_by_key(|e| e.device);
    let expect = |device, registered_at_ms, last_seen_ms, acked| RosterEntry {
        device,
        registered_at_ms,
        last_seen_ms,
        acked,
    };
    assert_eq!(
        roster,
        vec![
            expect(a, 100, 100, Frontier::new()),
            expect(b, 110, 110, Frontier::new())
        ],
        "the roster after two registrations"
    );
    // Within the resolution a push or pull may leave last-seen alone; past it, it must not.
    let res = LAST_SEEN_RESOLUTION_MS;
    let ops = chain(a, 2, 1_000);
    relay.push(a, &ops, 120).await.expect("push");
    relay.push(a, &ops, 100 + res).await.expect("re-push");
    assert_eq!(
        entry(relay, a).await.last_seen_ms,
        100 + res,
        "push must refresh a last-seen LAST_SEEN_RESOLUTION_MS old"
    );
    relay
        .pull(b, &PullCursors::new(), BatchLimit::ops(10), 110 + res)
        .await
        .expect("pull");
    assert_eq!(
        entry(relay, b).await.last_seen_ms,
        110 + res,
        "pull must refresh a last-seen LAST_SEEN_RESOLUTION_MS old"
    );
    let acked = frontier_of(&[&ops]);
    relay.ack(b, &acked, 120 + res).await.expect("ack");
    assert_eq!(
        entry(relay, b).await,
        expect(b, 110, 120 + res, acked.clone()),
        "ack refreshes last-seen at once"
    );
    relay.register(a, 130 + res).await.expect("register again");
    let mut roster = relay.roster().await.expect("roster");
    roster.sort_by_key(|e| e.device);
    assert_eq!(
        roster,
        vec![
            expect(a, 100, 130 + res, Frontier::new()),
            expect(b, 110, 120 + res, acked)
        ],
        "register refreshes last-seen at once"
    );
}

/// `ack_never_moves_backwards`
pub async fn ack_never_moves_backwards(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    setup(relay, &[a, b], 1).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    relay
        .ack(b, &frontier_of(&[&ops_a[..4]]), 2)
        .await
        .expect("ack");
    relay
        .ack(b, &frontier_of(&[&ops_a[..2]]), 3)
        .await
        .expect("lower ack");
    assert_eq!(
        entry(relay, b).await.acked,
        frontier_of(&[&ops_a[..4]]),
        "a lower ack moved the acknowledged head backwards"
    );
    relay
        .ack(b, &frontier_of(&[&ops_b[..1]]), 4)
        .await
        .expect("ack another chain");
    relay.ack(b, &Frontier::new(), 5).await.expect("empty ack");
    relay
        .ack(b, &frontier_of(&[&ops_a[..3], &ops_b]), 6)
        .await
        .expect("mixed ack");
    assert_eq!(
        entry(relay, b).await.acked,
        frontier_of(&[&ops_a[..4], &ops_b]),
        "acks must merge per chain, keeping the higher head"
    );
}

/// `stable_frontier_is_the_minimum_ack`
pub async fn stable_frontier_is_the_minimum_ack(relay: &dyn Relay) {
    let (a, b, c) = (device(1), device(2), device(3));
    assert!(
        relay
            .stable_frontier(1_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "an empty roster has an empty stable frontier"
    );
    setup(relay, &[a, b, c], 1_000).await;
    let ops_a = chain(a, 5, 1_000);
    let ops_b = chain(b, 3, 2_000);
    push(relay, a, &ops_a).await;
    push(relay, b, &ops_b).await;
    assert!(
        relay
            .stable_frontier(1_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "nothing is stable before anyone acks"
    );
    relay
        .ack(a, &frontier_of(&[&ops_a, &ops_b]), 1_000)
        .await
        .expect("ack a");
    relay
        .ack(b, &frontier_of(&[&ops_a[..3], &ops_b[..2]]), 1_000)
        .await
        .expect("ack b");
    relay
        .ack(c, &frontier_of(&[&ops_a[..4]]), 1_000)
        .await
        .expect("ack c");
    assert_eq!(
        relay.stable_frontier(1_000, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3]]),
        "the minimum over every live device; b's chain is absent because c never acked it"
    );
    assert_eq!(
        relay.stable_frontier(1_100, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3]]),
        "a device seen exactly horizon_ms ago is still live"
    );
    relay.register(a, 1_500).await.expect("refresh a");
    relay.register(b, 1_500).await.expect("refresh b");
    assert_eq!(
        relay.stable_frontier(1_550, 100).await.expect("stable"),
        frontier_of(&[&ops_a[..3], &ops_b[..2]]),
        "c, unseen past the horizon, must be ignored"
    );
    assert!(
        relay
            .stable_frontier(5_000, 100)
            .await
            .expect("stable")
            .is_empty(),
        "with every device past the horizon nothing is stable"
    );
}

/// `checkpoints_are_verified_and_latest_wins`
pub async fn checkpoints_are_verified_and_latest_wins(relay: &dyn Relay) {
    let (a, b) = (device(1), device(2));
    let ops_a = chain(a, 4, 1_000);
    let ops_b = chain(b, 2, 2_000);
    assert_eq!(relay.latest_checkpoint().await.expect("latest"), None);
    let small = checkpoint(&[&ops_a[..2]]);
    let big = checkpoint(&[&ops_a, &ops_b]);
    let forged = Checkpoint::from_parts(
        small.id(),
        big.frontier().clone(),
        small.state_hash(),
        small.state_bytes().to_vec(),
    );
    match relay.put_checkpoint(&forged).await {
        Err(RelayError::Checkpoint(CheckpointError::IdMismatch { .. })) => {}
        other => panic!("a checkpoint whose id does not match must be refused, got {other:?}"),
    }
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        None,
        "a refused put stored"
    );
    relay.put_checkpoint(&small).await.expect("put small");
    relay.put_checkpoint(&small).await.expect("put small again");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(small.clone())
    );
    relay.put_checkpoint(&big).await.expect("put big");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(big.clone())
    );
    relay
        .put_checkpoint(&small)
        .await
        .expect("put small after big");
    assert_eq!(
        relay.latest_checkpoint().await.expect("latest"),
        Some(big),
        "the checkpoint covering the most ops must stay the latest"
    );
}
