//! The runtime-status conditional update against the real PostgREST: newest wins.

use serde_json::{json, Value};
use tandem::domain::ids::SessionId;
use tandem::ports::{AccessToken, CloudSync};

use super::rows;
use super::services::LiveServices;

async fn stored(live: &LiveServices, token: &AccessToken, session: SessionId) -> Value {
    let seen = live
        .get(
            &format!("sessions?id=eq.{session}&select=runtime_status,runtime_status_updated_at_ms"),
            token,
        )
        .await;
    assert_eq!(seen.rows(), 1, "{:?}", seen.body);
    seen.body[0].clone()
}

#[tokio::test]
async fn runtime_status_newest_wins() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let cloud = live.cloud();
    let seeded = live.seeded(&cloud).await;
    let (token, session) = (&seeded.user.token, seeded.session.id);
    let status = |state: &str| json!({"coding_session": {"status": state, "error_message": null}});

    assert!(
        cloud
            .update_runtime_status(token, session, &status("running"), 100)
            .await
            .expect("first"),
        "a null stored time always loses"
    );
    assert!(
        !cloud
            .update_runtime_status(token, session, &status("stale"), 50)
            .await
            .expect("older"),
        "an older status must not apply"
    );
    assert!(
        !cloud
            .update_runtime_status(token, session, &status("same-time"), 100)
            .await
            .expect("equal"),
        "an equal time is not newer"
    );
    assert_eq!(
        stored(&live, token, session).await,
        json!({"runtime_status": status("running"), "runtime_status_updated_at_ms": 100})
    );

    assert!(cloud
        .update_runtime_status(token, session, &status("idle"), 200)
        .await
        .expect("newer"));
    assert_eq!(
        stored(&live, token, session).await,
        json!({"runtime_status": status("idle"), "runtime_status_updated_at_ms": 200})
    );

    // A metadata upsert does not touch the runtime status.
    cloud
        .upsert_session(token, &seeded.session)
        .await
        .expect("upsert metadata");
    assert_eq!(
        stored(&live, token, session).await["runtime_status_updated_at_ms"],
        200
    );

    assert!(!cloud
        .update_runtime_status(token, rows::session_id(), &status("idle"), 300)
        .await
        .expect("missing session"));
}
