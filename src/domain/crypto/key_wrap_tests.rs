//! Tests of session-key wraps: round trips, signature checks, addressing, low-order points.

use rand_core::RngCore as _;

use super::*;
use crate::domain::crypto::test_support::{assert_redacted, device, rng, session};

struct Fixture {
    key: SessionKey,
    sender: DeviceSecretKeys,
    recipient: DeviceSecretKeys,
    context: WrapContext,
    wrap: SessionKeyWrap,
}

fn fixture() -> Fixture {
    let mut r = rng(11);
    let key = SessionKey::generate(&mut r);
    let sender = DeviceSecretKeys::generate(&mut r);
    let recipient = DeviceSecretKeys::generate(&mut r);
    let context = WrapContext {
        session_id: session(1),
        key_epoch: KeyEpoch::new(2),
        sender_device_id: device(1),
        recipient_device_id: device(2),
    };
    let wrap = wrap_session_key(&key, &context, &sender, &recipient.public_keys(), &mut r).unwrap();
    Fixture {
        key,
        sender,
        recipient,
        context,
        wrap,
    }
}

fn unwrap(f: &Fixture, wrap: &SessionKeyWrap) -> Result<SessionKey, CryptoError> {
    unwrap_session_key(
        wrap,
        device(2),
        &f.recipient,
        &f.sender.public_keys().ed25519,
    )
}

#[test]
fn wrap_round_trips_to_the_recipient() {
    let f = fixture();
    assert_eq!(f.wrap.context(), f.context);
    assert_eq!(f.wrap.ciphertext.len(), KEY_LEN + 16);
    let key = unwrap(&f, &f.wrap).unwrap();
    assert_eq!(key.expose_secret(), f.key.expose_secret());
}

#[test]
fn wraps_are_fresh_each_time() {
    let f = fixture();
    let again = wrap_session_key(
        &f.key,
        &f.context,
        &f.sender,
        &f.recipient.public_keys(),
        &mut rng(12),
    )
    .unwrap();
    assert_ne!(again.ephemeral_public_key, f.wrap.ephemeral_public_key);
    assert_ne!(again.nonce, f.wrap.nonce);
    assert_ne!(again.ciphertext, f.wrap.ciphertext);
    assert_eq!(
        unwrap(&f, &again).unwrap().expose_secret(),
        f.key.expose_secret()
    );
}

#[test]
fn row_form_round_trips_through_json() {
    let f = fixture();
    let json = serde_json::to_value(f.wrap.to_row()).unwrap();
    for column in [
        "session_id",
        "key_epoch",
        "recipient_device_id",
        "sender_device_id",
        "ephemeral_public_key",
        "nonce",
        "ciphertext",
        "signature",
    ] {
        assert!(json.get(column).is_some(), "missing column {column}");
    }
    assert_eq!(json["key_epoch"], 2);
    assert_eq!(json["session_id"], session(1).to_string());
    let row: SessionKeyWrapRow = serde_json::from_value(json).unwrap();
    let wrap = row.decode().unwrap();
    assert_eq!(wrap, f.wrap);
    assert_eq!(
        unwrap(&f, &wrap).unwrap().expose_secret(),
        f.key.expose_secret()
    );
}

#[test]
fn unsigned_wraps_are_rejected() {
    let f = fixture();
    for signature in ["", "AAAA", "not base64", &B64.encode([0u8; 63])] {
        let mut row = f.wrap.to_row();
        row.signature = signature.to_owned();
        assert_eq!(row.decode().unwrap_err(), CryptoError::BadSignature);
    }
    let mut zeroed = f.wrap.clone();
    zeroed.signature = [0u8; SIGNATURE_LEN];
    assert_eq!(unwrap(&f, &zeroed).unwrap_err(), CryptoError::BadSignature);
}

#[test]
fn forged_signatures_are_rejected() {
    let f = fixture();
    for i in 0..SIGNATURE_LEN {
        let mut forged = f.wrap.clone();
        forged.signature[i] ^= 0x01;
        assert_eq!(
            unwrap(&f, &forged).unwrap_err(),
            CryptoError::BadSignature,
            "byte {i}"
        );
    }
}

#[test]
fn a_wrap_signed_by_another_device_is_rejected() {
    let f = fixture();
    let mallory = DeviceSecretKeys::generate(&mut rng(66));
    // Mallory wraps a key of her choosing to the recipient, claiming to be device 1.
    let evil = SessionKey::generate(&mut rng(67));
    let forged = wrap_session_key(
        &evil,
        &f.context,
        &mallory,
        &f.recipient.public_keys(),
        &mut rng(68),
    )
    .unwrap();
    assert_eq!(unwrap(&f, &forged).unwrap_err(), CryptoError::BadSignature);
    // And a genuine wrap checked against the wrong sender key fails too.
    assert_eq!(
        unwrap_session_key(
            &f.wrap,
            device(2),
            &f.recipient,
            &mallory.public_keys().ed25519
        )
        .unwrap_err(),
        CryptoError::BadSignature
    );
}

#[test]
fn altering_any_wrap_field_breaks_the_signature() {
    let f = fixture();
    let mut altered: Vec<(String, SessionKeyWrap)> = vec![
        (
            "session_id".into(),
            SessionKeyWrap {
                session_id: session(9),
                ..f.wrap.clone()
            },
        ),
        (
            "key_epoch".into(),
            SessionKeyWrap {
                key_epoch: KeyEpoch::new(3),
                ..f.wrap.clone()
            },
        ),
        (
            "sender_device_id".into(),
            SessionKeyWrap {
                sender_device_id: device(9),
                ..f.wrap.clone()
            },
        ),
        (
            // Re-addressing to this device would otherwise bypass the recipient check.
            "recipient_device_id".into(),
            SessionKeyWrap {
                recipient_device_id: device(9),
                ..f.wrap.clone()
            },
        ),
    ];
    for i in 0..PUBLIC_KEY_LEN {
        let mut w = f.wrap.clone();
        w.ephemeral_public_key[i] ^= 0x01;
        altered.push((format!("ephemeral_public_key[{i}]"), w));
    }
    for i in 0..NONCE_LEN {
        let mut w = f.wrap.clone();
        w.nonce[i] ^= 0x01;
        altered.push((format!("nonce[{i}]"), w));
    }
    for i in 0..f.wrap.ciphertext.len() {
        let mut w = f.wrap.clone();
        w.ciphertext[i] ^= 0x01;
        altered.push((format!("ciphertext[{i}]"), w));
    }
    let mut truncated = f.wrap.clone();
    truncated.ciphertext.pop();
    altered.push(("ciphertext truncated".into(), truncated));

    for (what, wrap) in altered {
        assert_eq!(
            unwrap(&f, &wrap).unwrap_err(),
            CryptoError::BadSignature,
            "{what}"
        );
    }
}

#[test]
fn a_wrap_addressed_to_another_device_is_refused() {
    let f = fixture();
    let other = DeviceSecretKeys::generate(&mut rng(70));
    // Device 3 is handed device 2's wrap: typed refusal before any decryption.
    assert_eq!(
        unwrap_session_key(&f.wrap, device(3), &other, &f.sender.public_keys().ed25519)
            .unwrap_err(),
        CryptoError::WrongRecipient {
            expected: device(3),
            found: device(2)
        }
    );
    // Device 3 pretending to be device 2 still cannot decrypt.
    assert_eq!(
        unwrap_session_key(&f.wrap, device(2), &other, &f.sender.public_keys().ed25519)
            .unwrap_err(),
        CryptoError::Decrypt
    );
}

/// Two low-order Curve25519 u-coordinates: 0 (the identity) and 1 (order 4).
const LOW_ORDER: [[u8; 32]; 2] = {
    let mut one = [0u8; 32];
    one[0] = 1;
    [[0u8; 32], one]
};

#[test]
fn wrapping_to_a_low_order_key_is_refused() {
    let f = fixture();
    for point in LOW_ORDER {
        let recipient = DevicePublicKeys {
            x25519: point,
            ..f.recipient.public_keys()
        };
        assert_eq!(
            wrap_session_key(&f.key, &f.context, &f.sender, &recipient, &mut rng(1)).unwrap_err(),
            CryptoError::LowOrderPoint
        );
    }
}

#[test]
fn unwrapping_a_signed_wrap_with_a_low_order_ephemeral_key_is_refused() {
    let f = fixture();
    for point in LOW_ORDER {
        let mut wrap = f.wrap.clone();
        wrap.ephemeral_public_key = point;
        wrap.signature = f.sender.sign(&wrap.signed_bytes());
        assert_eq!(unwrap(&f, &wrap).unwrap_err(), CryptoError::LowOrderPoint);
    }
}

#[test]
fn a_signed_wrap_of_the_wrong_length_is_a_typed_error() {
    // A (buggy) sender that wraps 31 bytes: authentic, but not a session key.
    let f = fixture();
    let own_public = f.recipient.public_keys().x25519;
    let mut r = rng(5);
    let mut eph = [0u8; 32];
    r.fill_bytes(&mut eph);
    let eph = StaticSecret::from(eph);
    let eph_public = PublicKey::from(&eph).to_bytes();
    let info = kdf_info(&f.context, &eph_public, &own_public);
    let k = derive_wrap_key(&eph, &own_public, &info).unwrap();
    let (nonce, ciphertext) = seal_raw(&k, &info, &[7u8; 31], &mut r).unwrap();
    let mut wrap = SessionKeyWrap {
        ephemeral_public_key: eph_public,
        nonce,
        ciphertext,
        ..f.wrap
    };
    wrap.signature = f.sender.sign(&wrap.signed_bytes());
    assert!(matches!(
        unwrap(&f, &wrap),
        Err(CryptoError::InvalidLength { found: 31, .. })
    ));
}

#[test]
fn an_invalid_sender_key_is_a_typed_error() {
    let f = fixture();
    // Find an encoding that is not a curve point rather than hard-coding one.
    let bad = (2u8..=255)
        .map(|b| {
            let mut k = [0u8; 32];
            k[0] = b;
            k
        })
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .unwrap();
    assert_eq!(
        unwrap_session_key(&f.wrap, device(2), &f.recipient, &bad).unwrap_err(),
        CryptoError::InvalidPublicKey { what: "ed25519" }
    );
}

#[test]
fn signed_bytes_layout_is_exactly_as_documented() {
    let f = fixture();
    let w = &f.wrap;
    let mut expected = Vec::new();
    let mut lp = |field: &[u8]| {
        expected.extend_from_slice(&(field.len() as u64).to_be_bytes());
        expected.extend_from_slice(field);
    };
    lp(b"tandem-wrap-sig-v1");
    lp(b"xchacha20poly1305");
    lp(w.session_id.as_uuid().as_bytes());
    lp(&2u32.to_be_bytes());
    lp(w.sender_device_id.as_uuid().as_bytes());
    lp(w.recipient_device_id.as_uuid().as_bytes());
    lp(&w.ephemeral_public_key);
    lp(&w.nonce);
    lp(&w.ciphertext);
    assert_eq!(w.signed_bytes(), expected);
}

#[test]
fn debug_of_a_wrap_shows_no_key_material() {
    let f = fixture();
    let debug = format!("{:?} {:?}", f.wrap, f.wrap.to_row());
    assert_redacted(&debug, f.key.expose_secret());
    let storage = f.sender.to_storage_bytes();
    assert_redacted(&debug, &storage[1..33]);
    assert_redacted(&debug, &storage[33..]);
}
