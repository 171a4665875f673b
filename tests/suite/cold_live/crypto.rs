//! The sealing as it reaches the real database: rows fetched back from PostgREST open only
//! with their own key and context, rows altered in PostgreSQL do not open, and a revoked
//! device gets no key for what is sealed after its revocation.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use tandem::app::devices::Unreadable;
use tandem::domain::crypto::{
    open_message, CryptoError, KeyEpoch, MessageAad, SealedContent, SessionKey,
};
use tandem::domain::{DeviceId, MessageId, Seq, SessionId};
use tandem::ports::{CloudMessageRow, CloudSync};
use uuid::Uuid;

use super::device::{texts, DeviceSetup, LiveDevice};
use crate::cloud_live::services::LiveServices;

const BUDGET: Duration = Duration::from_secs(120);

/// Opens `row` with `key`, binding the row's own fields, as a reading device does.
fn open(key: &SessionKey, row: &CloudMessageRow) -> Result<String, CryptoError> {
    let sealed = SealedContent::from_base64(
        &row.encryption_alg,
        &row.content_ciphertext,
        &row.content_nonce,
    )?;
    let aad = MessageAad::new(
        row.session_id,
        row.id,
        Seq::new(row.sequence_number),
        row.sender_device_id,
        row.key_epoch,
    );
    let plain = open_message(key, &aad, &sealed)?;
    Ok(String::from_utf8(plain.to_vec()).expect("UTF-8 content"))
}

/// `text` (base64) with one bit of byte `at` flipped (`at` counted from the end if negative).
fn flip(text: &str, at: isize) -> String {
    let mut bytes = B64.decode(text).expect("base64");
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs()
    } else {
        at.unsigned_abs()
    };
    bytes[i] ^= 0x01;
    B64.encode(bytes)
}

type Edit = Box<dyn Fn(&mut CloudMessageRow)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_change_of_context_key_or_ciphertext_keeps_a_real_row_shut() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let user = live.new_user();
    let a = LiveDevice::open(&user, DeviceSetup::direct(&live));
    let b = LiveDevice::open(&user, DeviceSetup::direct(&live));
    a.register().await;
    b.register().await;
    let (_, session) = a.session("crypto");
    let sent = texts("crypto", 6, 11);
    a.append(&session, &sent);
    a.drain(BUDGET).await.expect("drain");

    // b holds the key after one read; every untouched row opens with it.
    let page = b.reader().read(session.id, 0, 100).await.expect("read");
    assert_eq!(page.opened.len(), sent.len());
    let key = b
        .consumer
        .devices()
        .keyring()
        .get(session.id, KeyEpoch::FIRST)
        .expect("keyring")
        .expect("b holds epoch 1");
    let rows = a
        .cloud
        .fetch_messages(&user.token, session.id, 0, 100)
        .await
        .expect("fetch");
    for (row, text) in rows.iter().zip(&sent) {
        assert_eq!(open(&key, row).as_ref(), Ok(text));
    }

    // Each bound field, the nonce and the ciphertext (body and tag) changed on a real row.
    let other_session = SessionId::from_uuid(Uuid::new_v4()).expect("v4");
    let other_message = MessageId::from_uuid(Uuid::new_v4()).expect("v4");
    let edits: Vec<(&str, Edit)> = vec![
        ("session", Box::new(move |r| r.session_id = other_session)),
        ("message id", Box::new(move |r| r.id = other_message)),
        ("seq", Box::new(|r| r.sequence_number += 1)),
        (
            "sender",
            Box::new({
                let b = b.id;
                move |r| r.sender_device_id = b
            }),
        ),
        ("key epoch", Box::new(|r| r.key_epoch = KeyEpoch::new(2))),
        (
            "nonce",
            Box::new(|r| r.content_nonce = flip(&r.content_nonce, 0)),
        ),
        (
            "ciphertext",
            Box::new(|r| {
                r.content_ciphertext = flip(&r.content_ciphertext, 0);
            }),
        ),
        (
            "tag",
            Box::new(|r| r.content_ciphertext = flip(&r.content_ciphertext, -1)),
        ),
    ];
    for (what, edit) in &edits {
        let mut row = rows[0].clone();
        edit(&mut row);
        assert_eq!(open(&key, &row), Err(CryptoError::Decrypt), "{what}");
    }
    // The algorithm name: this build knows one, so any other name is refused before opening
    // (that the name is also bound as associated data is covered by the envelope's tests).
    let mut renamed = rows[0].clone();
    renamed.encryption_alg = "aes-256-gcm".into();
    assert!(
        matches!(
            open(&key, &renamed),
            Err(CryptoError::UnsupportedAlgorithm { .. })
        ),
        "{:?}",
        open(&key, &renamed)
    );
    let wrong_key = SessionKey::generate(&mut rand::rngs::OsRng);
    assert_eq!(open(&wrong_key, &rows[0]), Err(CryptoError::Decrypt), "key");

    // The same edits made in PostgreSQL: the reading device reports each row as not opening.
    let id = |n: usize| rows[n].id;
    let updates = [
        format!("sequence_number = 1000 where id = '{}'", id(0)),
        format!("id = '{}' where id = '{}'", Uuid::new_v4(), id(1)),
        format!("sender_device_id = '{}' where id = '{}'", b.id, id(2)),
        format!(
            "content_ciphertext = '{}' where id = '{}'",
            flip(&rows[3].content_ciphertext, 5),
            id(3)
        ),
        format!(
            "content_nonce = '{}' where id = '{}'",
            flip(&rows[4].content_nonce, 23),
            id(4)
        ),
        format!("encryption_alg = 'aes-256-gcm' where id = '{}'", id(5)),
    ];
    for update in &updates {
        live.psql(&format!("update public.messages set {update}"));
    }
    let page = b.reader().read(session.id, 0, 100).await.expect("read");
    assert!(page.opened.is_empty(), "{:?}", page.opened);
    let reasons: Vec<Unreadable> = page.unreadable.iter().map(|u| u.reason.clone()).collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    let decrypt = reasons
        .iter()
        .filter(|r| **r == Unreadable::Decrypt)
        .count();
    let malformed = reasons
        .iter()
        .filter(|r| matches!(r, Unreadable::Malformed(_)))
        .count();
    assert_eq!((decrypt, malformed), (5, 1), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_gets_no_key_for_what_is_sealed_after_its_revocation() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let user = live.new_user();
    let a = LiveDevice::open(&user, DeviceSetup::direct(&live));
    let b = LiveDevice::open(&user, DeviceSetup::direct(&live));
    let c = LiveDevice::open(&user, DeviceSetup::direct(&live));
    for device in [&a, &b, &c] {
        device.register().await;
    }
    let (_, session) = a.session("revocation");
    let sent = texts("revocation", 6, 5);
    a.append(&session, &sent[..3]);
    a.drain(BUDGET).await.expect("drain before");
    let before = c.reader().read(session.id, 0, 100).await.expect("c reads");
    assert_eq!(before.opened.len(), 3, "c is a full member before");

    let report = a.consumer.devices().revoke(c.id).await.expect("revoke");
    assert_eq!(report.rotated, [(session.id, KeyEpoch::new(2))]);
    let recipients: BTreeSet<DeviceId> = live
        .psql(&format!(
            "select recipient_device_id from public.session_key_wraps \
             where session_id = '{}' and key_epoch = 2",
            session.id
        ))
        .lines()
        .map(|l| DeviceId::parse(l).expect("uuid"))
        .collect();
    assert_eq!(recipients, BTreeSet::from([a.id, b.id]), "no wrap for c");

    a.append(&session, &sent[3..]);
    a.drain(BUDGET).await.expect("drain after");
    assert_eq!(
        live.psql(&format!(
            "select string_agg(key_epoch::text, ',' order by sequence_number) \
             from public.messages where session_id = '{}'",
            session.id
        )),
        "1,1,1,2,2,2",
        "messages after the revocation are sealed under the new epoch"
    );

    // c keeps what it could open, and nothing later opens for it.
    let revoked = c.reader().read(session.id, 0, 100).await.expect("c reads");
    let opened: Vec<String> = revoked
        .opened
        .iter()
        .map(|m| m.content.to_string())
        .collect();
    assert_eq!(opened, sent[..3]);
    let shut: Vec<(u64, Unreadable)> = revoked
        .unreadable
        .iter()
        .map(|u| (u.seq, u.reason.clone()))
        .collect();
    let no_key = Unreadable::KeyUnavailable(KeyEpoch::new(2));
    assert_eq!(
        shut,
        [(4, no_key.clone()), (5, no_key.clone()), (6, no_key)]
    );
    let received = revoked.received.expect("c looked for the key");
    assert!(received.stored.is_empty(), "{received:?}");
    assert!(c
        .consumer
        .devices()
        .keyring()
        .get(session.id, KeyEpoch::new(2))
        .expect("keyring")
        .is_none());

    // Nor can c get one by itself: it cannot un-revoke itself or hand out wraps.
    let unrevoke = live
        .raw(
            Method::PATCH,
            &format!("devices?id=eq.{}", c.id),
            Some(&c.token),
            None,
            Some(json!({ "revoked_at_ms": null })),
        )
        .await;
    assert_eq!((unrevoke.status, unrevoke.code()), (403, Some("42501")));
    let wrap = json!([{
        "session_id": session.id, "key_epoch": 3, "recipient_device_id": c.id,
        "sender_device_id": c.id, "ephemeral_public_key": "AAAA", "nonce": "AAAA",
        "ciphertext": "AAAA", "signature": "AAAA"
    }]);
    let refused = live
        .raw(
            Method::POST,
            "session_key_wraps",
            Some(&c.token),
            None,
            Some(wrap),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (403, Some("42501")));

    // The remaining device reads everything.
    let remaining = b.reader().read(session.id, 0, 100).await.expect("b reads");
    let opened: Vec<String> = remaining
        .opened
        .iter()
        .map(|m| m.content.to_string())
        .collect();
    assert_eq!(opened, sent);

    // A row moved to the new epoch in the database opens under neither key.
    live.psql(&format!(
        "update public.messages set key_epoch = 2 \
         where session_id = '{}' and sequence_number = 1",
        session.id
    ));
    let moved = b.reader().read(session.id, 0, 1).await.expect("b reads");
    assert_eq!(
        moved
            .unreadable
            .iter()
            .map(|u| u.reason.clone())
            .collect::<Vec<_>>(),
        [Unreadable::Decrypt]
    );
}
