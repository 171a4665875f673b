//! A message the cloud refuses, inside a batch: the batch is refused as a whole, sent again
//! one message at a time, and only the bad message is dead-lettered; every other message of
//! the batch lands, once. Runs against the real PostgREST through the proxy, with no faults
//! but the poison.

use std::time::Duration;

use tandem::app::cold::{ColdConfig, TickOutcome};
use tandem::domain::SideEffect;

use super::database::message_keys;
use super::device::{texts, DeviceSetup, LiveDevice};
use super::proxy::{Action, FaultProxy};
use crate::cloud_live::services::LiveServices;

/// Messages in the batch, and which one is poisoned.
const MESSAGES: usize = 12;
const POISONED_AT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_inside_a_batch_costs_only_itself() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let proxy = FaultProxy::start(&live.postgrest_url, 7).await;
    let user = live.new_user();
    let setup = DeviceSetup {
        config: ColdConfig {
            flush_interval: Duration::from_millis(20),
            idle_poll: Duration::from_millis(50),
            ..ColdConfig::default()
        },
        ..DeviceSetup::via(&proxy.url())
    };
    let device = LiveDevice::open(&user, setup);
    device.register().await;
    let (_, session) = device.session("poison in a batch");
    // One commit, so one batch.
    let sent = device.append(&session, &texts("batch", MESSAGES, 7));
    let poison = sent[POISONED_AT].id;
    proxy.set_poison(Some(poison.to_string()));

    let start = proxy.len();
    let outcomes = device
        .drain(Duration::from_secs(60))
        .await
        .expect("drained");
    let log = proxy.exchanges_since(start);

    // The batch went once with every message and was refused; then each message went alone.
    let upserts: Vec<_> = log.iter().filter(|x| x.is_message_upsert()).collect();
    let sizes: Vec<usize> = upserts.iter().map(|x| x.row_ids().len()).collect();
    assert_eq!(sizes[0], MESSAGES, "the batch first: {sizes:?}");
    assert_eq!(upserts[0].action, Action::Poison);
    assert_eq!(upserts[0].upstream_status, Some(400));
    assert_eq!(sizes[1..], vec![1; MESSAGES], "then one by one: {sizes:?}");
    let refused: Vec<_> = upserts[1..]
        .iter()
        .filter(|x| x.action == Action::Poison)
        .map(|x| x.row_ids())
        .collect();
    assert_eq!(refused, vec![vec![poison.to_string()]]);

    let dead: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, TickOutcome::DeadLettered { .. }))
        .collect();
    assert!(
        matches!(
            dead[..],
            [TickOutcome::DeadLettered { items: 1, delivered, .. }] if *delivered == MESSAGES - 1
        ),
        "dead-lettered units: {dead:?}"
    );
    let letters = device.consumer.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1, "dead letters: {letters:?}");
    assert!(
        matches!(&letters[0].effect, SideEffect::MessageAppended { message_id, .. } if *message_id == poison)
    );

    // Every other message landed, once; the cursor is past the batch.
    let expected: Vec<(u64, String)> = sent
        .iter()
        .filter(|m| m.id != poison)
        .map(|m| (m.seq.get(), m.id.to_string()))
        .collect();
    assert_eq!(message_keys(&live, session.id), expected);
    assert_eq!(device.consumer.lag().await.unwrap().behind, 0);
}
