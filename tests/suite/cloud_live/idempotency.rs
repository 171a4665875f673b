//! Message batches against the real PostgREST: re-sending is idempotent, a batch is atomic.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use tandem::ports::{CloudError, CloudSync};

use super::rows;
use super::services::LiveServices;

#[tokio::test]
async fn resending_a_batch_leaves_exactly_one_row_per_message() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let batch = rows::messages(session, 1, 50, rows::device_id());

    for attempt in 1..=3 {
        cloud
            .upsert_messages(token, &batch)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
    }
    // A retry after a lost response may carry the same messages sealed again (new nonce).
    let mut resealed = batch.clone();
    for row in &mut resealed {
        row.content_nonce = B64.encode([0xEE; 24]);
    }
    cloud
        .upsert_messages(token, &resealed)
        .await
        .expect("resealed resend");

    let fetched = cloud
        .fetch_messages(token, session, 0, 1000)
        .await
        .expect("fetch");
    assert_eq!(fetched, resealed, "one row per message, the latest upload");
    let table = format!("messages where session_id = '{session}'");
    assert_eq!(live.count(&table), 50, "direct SQL count");
    assert_eq!(
        live.psql(&format!(
            "select count(distinct sequence_number) || '/' || count(distinct id) from {table}"
        )),
        "50/50"
    );
}

#[tokio::test]
async fn a_batch_lands_whole_or_not_at_all() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let mut batch = rows::messages(session, 1, 5, rows::device_id());
    batch[4].sequence_number = 0; // violates `sequence_number > 0`

    let err = cloud
        .upsert_messages(token, &batch)
        .await
        .expect_err("a row breaks a check constraint");
    assert!(
        matches!(&err, CloudError::Permanent { status: 400, code: Some(code), .. } if code == "23514"),
        "{err:?}"
    );
    assert_eq!(
        live.count(&format!("messages where session_id = '{session}'")),
        0,
        "none of the valid rows landed either"
    );
}

#[tokio::test]
async fn on_conflict_without_a_resolution_is_a_plain_insert() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let row = rows::message(session, 1, rows::device_id());
    cloud
        .upsert_messages(token, std::slice::from_ref(&row))
        .await
        .expect("upsert");

    let raw = live
        .raw(
            Method::POST,
            "messages?on_conflict=session_id,sequence_number",
            Some(token),
            Some("return=minimal"),
            Some(json!([row])),
        )
        .await;
    assert_eq!(raw.status, 409, "{:?}", raw.body);
    assert_eq!(raw.code(), Some("23505"));

    // Through the adapter, a duplicate on another unique key (the id, at a new sequence
    // number) is the same 409 23505, and it is permanent.
    let mut clash = row.clone();
    clash.sequence_number = 2;
    let err = cloud
        .upsert_messages(token, &[clash])
        .await
        .expect_err("the id is taken");
    assert!(
        matches!(&err, CloudError::Permanent { status: 409, code: Some(code), .. } if code == "23505"),
        "{err:?}"
    );
    assert_eq!(
        live.count(&format!("messages where session_id = '{session}'")),
        1
    );
}

#[tokio::test]
async fn postgrest_answers_upserts_with_2xx_and_unmatched_writes_with_204() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let batch = rows::messages(session, 1, 3, rows::device_id());
    // 201 when the upsert inserted a row, 200 when it only updated existing ones.
    for (attempt, expected) in [(1, 201), (2, 200)] {
        let raw = live
            .raw(
                Method::POST,
                "messages?on_conflict=session_id,sequence_number",
                Some(token),
                Some("resolution=merge-duplicates,return=minimal"),
                Some(json!(batch)),
            )
            .await;
        assert_eq!(raw.status, expected, "attempt {attempt}: {:?}", raw.body);
    }
    let missing = rows::session_id();
    let patch = live
        .raw(
            Method::PATCH,
            &format!("sessions?id=eq.{missing}"),
            Some(token),
            Some("return=minimal"),
            Some(json!({"title": "nobody"})),
        )
        .await;
    assert_eq!(patch.status, 204, "no 404 for an unmatched PATCH");
    let delete = live
        .raw(
            Method::DELETE,
            &format!("sessions?id=eq.{missing}"),
            Some(token),
            None,
            None,
        )
        .await;
    assert_eq!(delete.status, 204, "no 404 for an unmatched DELETE");
}
