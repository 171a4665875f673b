//! Engine → cold consumer → real PostgREST → PostgreSQL, and back out on another device:
//! the database holds ciphertext only, the user's other device opens every message, other
//! users see nothing and cannot write as the owner, and sending again changes nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tandem::app::cold::TickOutcome;
use tandem::domain::crypto::KeyEpoch;
use tandem::ports::CloudSync;
use uuid::Uuid;

use super::database::{base64_forms, message_keys, tables_containing};
use super::device::{drain, texts, DeviceSetup, LiveDevice};
use crate::cloud_live::services::LiveServices;

const MESSAGES: usize = 120;
const BUDGET: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_messages_land_as_ciphertext_and_only_the_users_devices_read_them() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let user = live.new_user();
    let a = LiveDevice::open(&user, DeviceSetup::direct(&live));
    let b = LiveDevice::open(&user, DeviceSetup::direct(&live));
    a.register().await;
    b.register().await;

    let canary = format!("canary{}", Uuid::new_v4().simple());
    let (_, session) = a.session("end to end");
    let sent = texts(&canary, MESSAGES, 7);
    let local = a.append(&session, &sent);
    let outcomes = a.drain(BUDGET).await.expect("drain");
    let delivered: usize = outcomes
        .iter()
        .map(|o| match o {
            TickOutcome::Delivered { items, .. } => *items,
            _ => 0,
        })
        .sum();
    assert_eq!(
        delivered,
        MESSAGES + 2,
        "repository, session and every message"
    );
    assert!(
        !outcomes.iter().any(|o| matches!(
            o,
            TickOutcome::Failed { .. } | TickOutcome::DeadLettered { .. }
        )),
        "{outcomes:?}"
    );

    // Ciphertext only: neither the canary nor any base64 form of it is anywhere.
    let expected_keys: Vec<(u64, String)> = local
        .iter()
        .map(|m| (m.seq.get(), m.id.to_string()))
        .collect();
    assert_eq!(message_keys(&live, session.id), expected_keys);
    let first_id = local[0].id.to_string();
    let found = tables_containing(&live, &first_id);
    assert!(
        found.iter().any(|(t, _)| t == "public.messages"),
        "the search sees the message rows: {found:?}"
    );
    let mut needles = vec![canary.clone()];
    needles.extend(base64_forms(&canary));
    for needle in &needles {
        let leaks = tables_containing(&live, needle);
        assert!(
            leaks.is_empty(),
            "plaintext reached the database: {leaks:?}"
        );
    }

    // The user's second device verifies the wrap, unwraps the key and opens every message.
    let page = b
        .reader()
        .read(session.id, 0, 10 * MESSAGES)
        .await
        .expect("read");
    assert!(page.unreadable.is_empty(), "{:?}", page.unreadable);
    let opened: Vec<String> = page.opened.iter().map(|m| m.content.to_string()).collect();
    assert_eq!(opened, sent);
    let received = page.received.expect("b fetched the key");
    assert_eq!(received.stored, [KeyEpoch::FIRST]);
    assert!(received.rejected.is_empty());
    for (opened, local) in page.opened.iter().zip(&local) {
        assert_eq!(
            (opened.id, opened.seq, opened.role, opened.sender_device_id),
            (local.id, local.seq, local.role, a.id)
        );
    }

    // Another user sees none of it, through the adapter or raw.
    let stranger = live.new_user();
    assert!(a
        .cloud
        .fetch_messages(&stranger.token, session.id, 0, 1000)
        .await
        .expect("fetch")
        .is_empty());
    assert!(a
        .cloud
        .fetch_key_wraps(&stranger.token, session.id, b.id)
        .await
        .expect("wraps")
        .is_empty());
    for query in [
        format!("messages?session_id=eq.{}", session.id),
        format!("session_key_wraps?session_id=eq.{}", session.id),
        format!("sessions?id=eq.{}", session.id),
        format!("devices?id=in.({},{})", a.id, b.id),
        "messages".to_owned(),
    ] {
        let seen = live.get(&query, &stranger.token).await;
        assert_eq!(
            (seen.status, seen.rows()),
            (200, 0),
            "{query}: {:?}",
            seen.body
        );
    }

    // Nor can another user write as the owner or into the owner's session.
    let before = a
        .cloud
        .fetch_messages(&user.token, session.id, 0, 1000)
        .await
        .expect("owner fetch");
    let forged = json!([{
        "id": Uuid::new_v4(), "user_id": user.id, "session_id": session.id,
        "sequence_number": MESSAGES + 1, "role": "user", "content_ciphertext": "AAAA",
        "content_nonce": "AAAA", "key_epoch": 1, "encryption_alg": "xchacha20poly1305",
        "sender_device_id": a.id, "created_at_ms": 1
    }]);
    let overwrite = json!([{
        "id": local[0].id, "session_id": session.id, "sequence_number": 1, "role": "user",
        "content_ciphertext": "AAAA", "content_nonce": "AAAA", "key_epoch": 1,
        "encryption_alg": "xchacha20poly1305", "sender_device_id": a.id, "created_at_ms": 1
    }]);
    for (what, body) in [("owner named", forged), ("owner's row", overwrite)] {
        let answer = live
            .raw(
                Method::POST,
                "messages?on_conflict=session_id,sequence_number",
                Some(&stranger.token),
                Some("resolution=merge-duplicates,return=minimal"),
                Some(body),
            )
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, Some("42501")),
            "{what}: {:?}",
            answer.body
        );
    }
    let wrap = json!([{
        "session_id": session.id, "key_epoch": 9, "recipient_device_id": b.id,
        "sender_device_id": a.id, "user_id": user.id, "ephemeral_public_key": "AAAA",
        "nonce": "AAAA", "ciphertext": "AAAA", "signature": "AAAA"
    }]);
    let answer = live
        .raw(
            Method::POST,
            "session_key_wraps",
            Some(&stranger.token),
            None,
            Some(wrap),
        )
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, Some("42501")),
        "{:?}",
        answer.body
    );
    let after = a
        .cloud
        .fetch_messages(&user.token, session.id, 0, 1000)
        .await
        .expect("owner fetch");
    assert_eq!(after, before, "the owner's rows are untouched");

    // Sending again: the same rows re-upserted, and the whole log re-sent (freshly sealed)
    // by a second consumer with its own cursor. Still one row per message, all readable.
    a.cloud
        .upsert_messages(&user.token, &before)
        .await
        .expect("re-upsert");
    assert_eq!(
        a.cloud
            .fetch_messages(&user.token, session.id, 0, 1000)
            .await
            .expect("fetch"),
        before
    );
    let again = a.second_consumer("cold-resend");
    drain(&again, BUDGET).await.expect("second drain");
    assert_eq!(message_keys(&live, session.id), expected_keys);
    let resent = a
        .cloud
        .fetch_messages(&user.token, session.id, 0, 1000)
        .await
        .expect("fetch");
    assert!(
        resent
            .iter()
            .zip(&before)
            .all(|(r, b)| r.content_nonce != b.content_nonce),
        "the second consumer really sent (a fresh nonce per seal)"
    );
    let page = b
        .reader()
        .read(session.id, 0, 10 * MESSAGES)
        .await
        .expect("read again");
    assert!(page.unreadable.is_empty());
    let opened: Vec<String> = page.opened.iter().map(|m| m.content.to_string()).collect();
    assert_eq!(opened, sent);
    assert!(page.received.is_none(), "the key was already held");
}
