//! Row-level security and token handling against the real PostgREST.

use reqwest::Method;
use serde_json::json;
use tandem::domain::crypto::KeyEpoch;
use tandem::domain::ids::UserId;
use tandem::ports::{AccessToken, CloudError, CloudSync};
use uuid::Uuid;

use super::rows;
use super::services::LiveServices;

fn is_rls_refusal(err: &CloudError) -> bool {
    matches!(err, CloudError::Permanent { status: 403, code: Some(code), .. } if code == "42501")
}

#[tokio::test]
async fn another_users_token_sees_and_changes_none_of_the_rows() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let owner = live.seeded(&cloud).await;
    let (token, session) = (&owner.user.token, owner.session.id);
    let device = rows::device("owner's laptop");
    cloud.upsert_device(token, &device).await.expect("device");
    cloud
        .upsert_messages(token, &rows::messages(session, 1, 3, device.id))
        .await
        .expect("messages");
    cloud
        .put_key_wraps(
            token,
            &[rows::key_wrap(
                session,
                KeyEpoch::FIRST,
                device.id,
                device.id,
            )],
        )
        .await
        .expect("wrap");

    let stranger = live.new_user();
    let other = &stranger.token;
    assert!(cloud
        .fetch_messages(other, session, 0, 100)
        .await
        .expect("fetch")
        .is_empty());
    assert!(cloud.list_devices(other).await.expect("list").is_empty());
    assert!(cloud
        .fetch_key_wraps(other, session, device.id)
        .await
        .expect("wraps")
        .is_empty());
    for table in [
        "repositories",
        "sessions",
        "messages",
        "devices",
        "session_key_wraps",
    ] {
        let seen = live.get(table, other).await;
        assert_eq!(
            (seen.status, seen.rows()),
            (200, 0),
            "{table}: {:?}",
            seen.body
        );
    }

    assert!(!cloud.end_session(other, session, 1).await.expect("end"));
    assert!(!cloud
        .update_runtime_status(other, session, &json!({"state": "idle"}), 1)
        .await
        .expect("status"));
    assert!(!cloud
        .revoke_device(other, device.id, 1)
        .await
        .expect("revoke"));
    cloud
        .delete_session(other, session)
        .await
        .expect("a delete that matches nothing succeeds");
    cloud
        .delete_repository(other, owner.repository.id)
        .await
        .expect("a delete that matches nothing succeeds");

    assert_eq!(
        live.psql(&format!(
            "select status || ',' || (ended_at_ms is null) || ',' || (runtime_status is null) \
             from sessions where id = '{session}'"
        )),
        "active,true,true",
        "the owner's session is untouched"
    );
    assert_eq!(
        live.count(&format!("messages where session_id = '{session}'")),
        3
    );
    assert_eq!(
        live.count(&format!(
            "devices where id = '{}' and revoked_at_ms is null",
            device.id
        )),
        1
    );
}

#[tokio::test]
async fn a_forged_owner_is_refused_with_42501() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let victim = live.seeded(&cloud).await;
    let attacker = live.new_user();

    // Raw: a row that names someone else as its owner.
    let raw = live
        .raw(
            Method::POST,
            "repositories",
            Some(&attacker.token),
            Some("return=minimal"),
            Some(json!({"name": "planted", "user_id": victim.user.id})),
        )
        .await;
    assert_eq!(
        (raw.status, raw.code()),
        (403, Some("42501")),
        "{:?}",
        raw.body
    );

    // Through the adapter: rows that point into another user's session or repository.
    let err = cloud
        .upsert_messages(
            &attacker.token,
            &rows::messages(victim.session.id, 1, 2, rows::device_id()),
        )
        .await
        .expect_err("not the attacker's session");
    assert!(is_rls_refusal(&err), "{err:?}");
    assert_eq!(
        err.retry_class(),
        tandem::domain::backoff::RetryClass::Permanent
    );

    let err = cloud
        .upsert_session(
            &attacker.token,
            &rows::session(victim.repository.id, "planted"),
        )
        .await
        .expect_err("not the attacker's repository");
    assert!(is_rls_refusal(&err), "{err:?}");

    // Taking over an existing row by upserting its id is refused too.
    let mut takeover = victim.repository.clone();
    takeover.name = "mine now".into();
    let err = cloud
        .upsert_repository(&attacker.token, &takeover)
        .await
        .expect_err("the id belongs to someone else");
    assert!(is_rls_refusal(&err), "{err:?}");
    assert_eq!(
        live.count(&format!(
            "repositories where id = '{}' and name = 'seeded repository'",
            victim.repository.id
        )),
        1
    );
}

#[tokio::test]
async fn device_keys_cannot_change_once_registered() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let user = live.new_user();
    let device = rows::device("laptop");
    cloud
        .upsert_device(&user.token, &device)
        .await
        .expect("register");
    let mut swapped = device.clone();
    swapped.x25519_public_key = rows::device("other").x25519_public_key;
    let err = cloud
        .upsert_device(&user.token, &swapped)
        .await
        .expect_err("keys are pinned");
    assert!(is_rls_refusal(&err), "{err:?}");
}

#[tokio::test]
async fn an_expired_or_forged_token_is_unauthenticated() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let user = UserId::from_uuid(Uuid::new_v4()).expect("v4");
    let expired = live.mint_expired_token(user);
    let err = cloud
        .list_devices(&expired)
        .await
        .expect_err("expired token");
    assert!(
        matches!(&err, CloudError::Unauthenticated { code: Some(code), .. } if code == "PGRST301"),
        "{err:?}"
    );
    assert_eq!(
        err.retry_class(),
        tandem::domain::backoff::RetryClass::Unauthenticated
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains(expired.expose_secret()), "{text}");

    // Signed with another secret.
    let forged = AccessToken::new(
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": user, "role": "authenticated", "exp": 4_000_000_000_i64}),
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-000"),
        )
        .expect("sign"),
    );
    let err = cloud
        .upsert_repository(&forged, &rows::repository("x"))
        .await
        .expect_err("forged token");
    assert!(
        matches!(&err, CloudError::Unauthenticated { .. }),
        "{err:?}"
    );
}
