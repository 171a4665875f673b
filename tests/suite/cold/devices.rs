//! Key distribution across devices: a second device reads, forged wraps are refused, and a
//! revoked device cannot open what is sealed after its revocation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tandem::app::devices::{Unreadable, WrapRejection};
use tandem::domain::crypto::{CryptoError, KeyEpoch};
use tandem::domain::{NewMessage, Role, SessionId};

use super::fake_cloud::FakeCloud;
use super::harness::{device_id, Device};

/// An edit of a stored wrap.
type Tamper = Box<dyn Fn(&mut tandem::domain::crypto::SessionKeyWrapRow)>;

async fn upload(dev: &Device, session: SessionId, texts: &[&str], total: usize) {
    for text in texts {
        dev.engine
            .append_message(session, NewMessage::new(Role::User, *text))
            .unwrap();
    }
    let running = dev.start();
    dev.cloud
        .wait_until("the messages are up", Duration::from_secs(60), |c| {
            c.message_count() == total
        })
        .await;
    running.stop().await;
}

fn contents(page: &tandem::app::devices::ReadPage) -> Vec<String> {
    page.opened.iter().map(|m| m.content.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_second_device_verifies_unwraps_and_reads() {
    let cloud = Arc::new(FakeCloud::new());
    let a = Device::new(&cloud, 1);
    let b = Device::new(&cloud, 2);
    a.register().await;
    b.register().await;
    let (_, session) = a.session();
    upload(&a, session.id, &["hello", "from", "a"], 3).await;

    let page = b.reader().read(session.id, 0, 100).await.unwrap();
    assert_eq!(contents(&page), ["hello", "from", "a"]);
    assert!(page.unreadable.is_empty());
    assert_eq!(page.last_seq, Some(3));
    let received = page.received.expect("keys were fetched");
    assert_eq!(received.stored, [KeyEpoch::FIRST]);
    assert!(received.rejected.is_empty());
    assert!(page.opened.iter().all(|m| m.sender_device_id == a.id));
    assert!(
        !format!("{:?}", page.opened).contains("hello"),
        "content redacted"
    );

    // The key is now held at rest: a second read needs no fetch.
    let again = b.reader().read(session.id, 1, 100).await.unwrap();
    assert_eq!(contents(&again), ["from", "a"]);
    assert!(again.received.is_none());
}

#[tokio::test(start_paused = true)]
async fn forged_unsigned_and_unknown_sender_wraps_are_refused() {
    let cloud = Arc::new(FakeCloud::new());
    let a = Device::new(&cloud, 1);
    let b = Device::new(&cloud, 2);
    a.register().await;
    b.register().await;
    let (_, session) = a.session();
    upload(&a, session.id, &["private"], 1).await;

    let cases: [(&str, Tamper, WrapRejection); 3] = [
        (
            "forged",
            Box::new(|w| {
                let mut sig = w.signature.clone().into_bytes();
                sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
                w.signature = String::from_utf8(sig).unwrap();
            }),
            WrapRejection::Invalid(CryptoError::BadSignature),
        ),
        (
            "unsigned",
            Box::new(|w| w.signature.clear()),
            WrapRejection::Invalid(CryptoError::BadSignature),
        ),
        (
            "unknown sender",
            Box::new(|w| w.sender_device_id = device_id(99)),
            WrapRejection::UnknownSender,
        ),
    ];
    for (what, tamper, expected) in cases {
        let fresh = Device::new(&cloud, 3);
        fresh.register().await;
        // Re-wrap to the new device, then tamper with its wrap only.
        a.consumer
            .devices()
            .distribute(
                &a.consumer
                    .devices()
                    .keyring()
                    .current(session.id)
                    .unwrap()
                    .unwrap(),
            )
            .await
            .unwrap();
        cloud.tamper_wraps(|w| {
            if w.recipient_device_id == fresh.id {
                tamper(w);
            }
        });
        let page = fresh.reader().read(session.id, 0, 10).await.unwrap();
        assert!(page.opened.is_empty(), "{what}: nothing opens");
        assert_eq!(
            page.unreadable[0].reason,
            Unreadable::KeyUnavailable(KeyEpoch::FIRST),
            "{what}"
        );
        let rejected = page.received.unwrap().rejected;
        assert_eq!(rejected.len(), 1, "{what}");
        assert_eq!(rejected[0].reason, expected, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_revoked_device_cannot_open_what_is_sealed_after_its_revocation() {
    let cloud = Arc::new(FakeCloud::new());
    let a = Device::new(&cloud, 1);
    let b = Device::new(&cloud, 2);
    let c = Device::new(&cloud, 3);
    for dev in [&a, &b, &c] {
        dev.register().await;
    }
    let (_, session) = a.session();
    upload(&a, session.id, &["before 1", "before 2"], 2).await;

    let report = a.consumer.devices().revoke(c.id).await.unwrap();
    assert_eq!(report.rotated, [(session.id, KeyEpoch::new(2))]);
    let recipients: BTreeSet<_> = cloud
        .wraps()
        .iter()
        .filter(|w| w.key_epoch == KeyEpoch::new(2))
        .map(|w| w.recipient_device_id)
        .collect();
    assert_eq!(
        recipients,
        BTreeSet::from([a.id, b.id]),
        "epoch 2 skips the revoked device"
    );

    upload(&a, session.id, &["after 1", "after 2"], 4).await;
    let epochs: Vec<u32> = cloud.messages().iter().map(|m| m.key_epoch.get()).collect();
    assert_eq!(epochs, [1, 1, 2, 2], "new messages use the new epoch");

    let revoked = c.reader().read(session.id, 0, 100).await.unwrap();
    assert_eq!(contents(&revoked), ["before 1", "before 2"]);
    let unreadable: Vec<_> = revoked
        .unreadable
        .iter()
        .map(|u| (u.seq, u.reason.clone()))
        .collect();
    assert_eq!(
        unreadable,
        [
            (3, Unreadable::KeyUnavailable(KeyEpoch::new(2))),
            (4, Unreadable::KeyUnavailable(KeyEpoch::new(2)))
        ]
    );

    let remaining = b.reader().read(session.id, 0, 100).await.unwrap();
    assert_eq!(
        contents(&remaining),
        ["before 1", "before 2", "after 1", "after 2"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_device_cannot_revoke_itself_or_an_unknown_device() {
    let cloud = Arc::new(FakeCloud::new());
    let a = Device::new(&cloud, 1);
    a.register().await;
    let devices = a.consumer.devices();
    assert!(matches!(
        devices.revoke(a.id).await,
        Err(tandem::app::devices::DevicesError::RevokeSelf)
    ));
    assert!(matches!(
        devices.revoke(device_id(42)).await,
        Err(tandem::app::devices::DevicesError::UnknownDevice(_))
    ));
}
