//! Every `CloudSync` method against the real PostgREST: what goes up comes back.

use serde_json::json;
use tandem::domain::crypto::KeyEpoch;
use tandem::ports::{CloudSessionStatus, CloudSync};

use super::rows;
use super::services::LiveServices;

#[tokio::test]
async fn repository_upsert_updates_in_place_and_delete_is_idempotent() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let user = live.new_user();
    let mut repo = rows::repository("first name");

    cloud
        .upsert_repository(&user.token, &repo)
        .await
        .expect("insert");
    repo.name = "second name".into();
    repo.remote_url = None;
    repo.updated_at_ms += 5;
    cloud
        .upsert_repository(&user.token, &repo)
        .await
        .expect("update through upsert");

    let seen = live
        .get(&format!("repositories?id=eq.{}", repo.id), &user.token)
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.rows(), 1, "{:?}", seen.body);
    let row = &seen.body[0];
    assert_eq!(row["name"], "second name");
    assert_eq!(row["remote_url"], serde_json::Value::Null);
    assert_eq!(row["updated_at_ms"], repo.updated_at_ms);
    assert_eq!(
        row["user_id"],
        user.id.to_string(),
        "owner defaults to auth.uid()"
    );

    cloud
        .delete_repository(&user.token, repo.id)
        .await
        .expect("delete");
    assert_eq!(
        live.count(&format!("repositories where id = '{}'", repo.id)),
        0
    );
    cloud
        .delete_repository(&user.token, repo.id)
        .await
        .expect("deleting a missing repository succeeds");
}

#[tokio::test]
async fn session_upsert_end_and_delete_cascade() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, mut session) = (&seeded.user.token, seeded.session.clone());
    let sender = rows::device_id();

    session.title = "renamed".into();
    cloud
        .upsert_session(token, &session)
        .await
        .expect("update through upsert");
    cloud
        .upsert_messages(token, &rows::messages(session.id, 1, 3, sender))
        .await
        .expect("messages");

    assert!(cloud
        .end_session(token, session.id, 1_700_000_009_000)
        .await
        .expect("end"));
    let seen = live
        .get(
            &format!(
                "sessions?id=eq.{}&select=title,status,ended_at_ms",
                session.id
            ),
            token,
        )
        .await;
    assert_eq!(
        seen.body,
        json!([{"title": "renamed", "status": "ended", "ended_at_ms": 1_700_000_009_000_i64}])
    );
    assert!(
        !cloud
            .end_session(token, rows::session_id(), 1)
            .await
            .expect("end a missing session"),
        "no row matched, so end_session must say false"
    );

    cloud
        .delete_session(token, session.id)
        .await
        .expect("delete");
    assert_eq!(
        live.count(&format!("messages where session_id = '{}'", session.id)),
        0,
        "messages go with their session"
    );
    cloud
        .delete_session(token, session.id)
        .await
        .expect("deleting a missing session succeeds");

    // Deleting the repository takes its remaining sessions with it.
    let other = rows::session(seeded.repository.id, "second");
    cloud.upsert_session(token, &other).await.expect("second");
    cloud
        .delete_repository(token, seeded.repository.id)
        .await
        .expect("delete repository");
    assert_eq!(
        live.count(&format!("sessions where id = '{}'", other.id)),
        0
    );
}

#[tokio::test]
async fn session_status_round_trips_through_upsert() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let mut session = seeded.session.clone();
    session.status = CloudSessionStatus::Ended;
    session.ended_at_ms = Some(42);
    cloud
        .upsert_session(&seeded.user.token, &session)
        .await
        .expect("upsert ended");
    let seen = live
        .get(
            &format!("sessions?id=eq.{}&select=status,ended_at_ms", session.id),
            &seeded.user.token,
        )
        .await;
    assert_eq!(seen.body, json!([{"status": "ended", "ended_at_ms": 42}]));
}

#[tokio::test]
async fn fetch_messages_pages_in_sequence_order() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let sent = rows::messages(session, 1, 7, rows::device_id());
    // Uploaded out of order, in two batches.
    cloud
        .upsert_messages(token, &sent[4..])
        .await
        .expect("tail");
    cloud
        .upsert_messages(token, &sent[..4])
        .await
        .expect("head");
    cloud
        .upsert_messages(token, &[])
        .await
        .expect("an empty batch is a no-op");

    let all = cloud
        .fetch_messages(token, session, 0, 100)
        .await
        .expect("fetch");
    assert_eq!(all, sent, "every field round-trips, in sequence order");

    let page = cloud
        .fetch_messages(token, session, 2, 3)
        .await
        .expect("page");
    let seqs: Vec<u64> = page.iter().map(|m| m.sequence_number).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert!(cloud
        .fetch_messages(token, session, 7, 10)
        .await
        .expect("past the end")
        .is_empty());
    assert!(cloud
        .fetch_messages(token, session, 0, 0)
        .await
        .expect("limit 0")
        .is_empty());
    assert!(cloud
        .fetch_messages(token, rows::session_id(), 0, 10)
        .await
        .expect("unknown session")
        .is_empty());
}

#[tokio::test]
async fn devices_register_list_and_revoke() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let user = live.new_user();
    let token = &user.token;
    let laptop = rows::device("laptop");
    let mut phone = rows::device("phone");
    phone.last_seen_at_ms = None;
    cloud.upsert_device(token, &laptop).await.expect("laptop");
    cloud.upsert_device(token, &phone).await.expect("phone");
    cloud
        .upsert_device(token, &laptop)
        .await
        .expect("re-registering with the same keys is idempotent");

    let mut listed = cloud.list_devices(token).await.expect("list");
    listed.sort_by_key(|d| d.name.clone());
    assert_eq!(listed, vec![laptop.clone(), phone.clone()]);

    assert!(cloud
        .revoke_device(token, phone.id, 5_000)
        .await
        .expect("revoke"));
    assert!(
        cloud
            .revoke_device(token, phone.id, 9_000)
            .await
            .expect("revoke again"),
        "the device exists, so a repeated revocation reports true"
    );
    assert!(!cloud
        .revoke_device(token, rows::device_id(), 5_000)
        .await
        .expect("revoke a missing device"));

    // Re-registering a revoked device (revoked_at_ms None) does not undo the revocation.
    cloud
        .upsert_device(token, &phone)
        .await
        .expect("re-register");
    let listed = cloud.list_devices(token).await.expect("list");
    let stored = listed
        .iter()
        .find(|d| d.id == phone.id)
        .expect("phone listed");
    assert_eq!(
        stored.revoked_at_ms,
        Some(5_000),
        "the first revocation stays"
    );
}

#[tokio::test]
async fn key_wraps_put_and_fetch_per_recipient() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let (a, b) = (rows::device("a"), rows::device("b"));
    cloud.upsert_device(token, &a).await.expect("a");
    cloud.upsert_device(token, &b).await.expect("b");

    let wraps = vec![
        rows::key_wrap(session, KeyEpoch::new(2), b.id, a.id),
        rows::key_wrap(session, KeyEpoch::FIRST, b.id, a.id),
        rows::key_wrap(session, KeyEpoch::FIRST, a.id, a.id),
        // The largest epoch the domain can name fits the column.
        rows::key_wrap(session, KeyEpoch::new(u32::MAX), b.id, a.id),
    ];
    cloud.put_key_wraps(token, &wraps).await.expect("put");
    cloud
        .put_key_wraps(token, &wraps)
        .await
        .expect("re-put is idempotent");
    cloud
        .put_key_wraps(token, &[])
        .await
        .expect("an empty put is a no-op");
    assert_eq!(
        live.count(&format!("session_key_wraps where session_id = '{session}'")),
        4
    );

    let for_b = cloud
        .fetch_key_wraps(token, session, b.id)
        .await
        .expect("fetch b");
    assert_eq!(
        for_b,
        vec![wraps[1].clone(), wraps[0].clone(), wraps[3].clone()],
        "b's wraps, every epoch, in epoch order"
    );
    let for_a = cloud
        .fetch_key_wraps(token, session, a.id)
        .await
        .expect("fetch a");
    assert_eq!(for_a, vec![wraps[2].clone()]);
}
