//! Row builders for cloud tests: fresh random ids, plausible base64 payloads.

// A shared helper: not every test module uses every function.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tandem::domain::crypto::{KeyEpoch, SessionKeyWrapRow};
use tandem::domain::ids::{DeviceId, MessageId, RepositoryId, SessionId};
use tandem::ports::{
    CloudDeviceRow, CloudMessageRow, CloudRepositoryRow, CloudSessionRow, CloudSessionStatus,
};
use uuid::Uuid;

/// A fresh random uuid (never nil).
pub fn fresh() -> Uuid {
    Uuid::new_v4()
}

/// A fresh device id.
pub fn device_id() -> DeviceId {
    DeviceId::from_uuid(fresh()).expect("v4 is never nil")
}

/// A fresh session id.
pub fn session_id() -> SessionId {
    SessionId::from_uuid(fresh()).expect("v4 is never nil")
}

/// A fresh repository id.
pub fn repository_id() -> RepositoryId {
    RepositoryId::from_uuid(fresh()).expect("v4 is never nil")
}

/// A repository row with a fresh id.
pub fn repository(name: &str) -> CloudRepositoryRow {
    CloudRepositoryRow {
        id: repository_id(),
        name: name.to_owned(),
        remote_url: Some("https://example.com/repo.git".into()),
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_000,
    }
}

/// An active session row with a fresh id in `repository`.
pub fn session(repository: RepositoryId, title: &str) -> CloudSessionRow {
    CloudSessionRow {
        id: session_id(),
        repository_id: repository,
        title: title.to_owned(),
        status: CloudSessionStatus::Active,
        created_at_ms: 1_700_000_000_100,
        updated_at_ms: 1_700_000_000_100,
        ended_at_ms: None,
    }
}

/// A sealed-looking message row with a fresh id.
pub fn message(session: SessionId, sequence_number: u64, sender: DeviceId) -> CloudMessageRow {
    CloudMessageRow {
        id: MessageId::from_uuid(fresh()).expect("v4 is never nil"),
        session_id: session,
        sequence_number,
        role: "assistant".into(),
        content_ciphertext: B64.encode(format!("ciphertext {sequence_number}")),
        content_nonce: B64.encode([sequence_number as u8; 24]),
        key_epoch: KeyEpoch::FIRST,
        encryption_alg: "xchacha20poly1305".into(),
        sender_device_id: sender,
        created_at_ms: 1_700_000_001_000 + sequence_number as i64,
    }
}

/// Messages `from..=to` of `session`.
pub fn messages(session: SessionId, from: u64, to: u64, sender: DeviceId) -> Vec<CloudMessageRow> {
    (from..=to).map(|n| message(session, n, sender)).collect()
}

/// A device row with a fresh id and distinct fake keys.
pub fn device(name: &str) -> CloudDeviceRow {
    let id = device_id();
    let bytes = id.as_uuid().into_bytes();
    CloudDeviceRow {
        id,
        name: name.to_owned(),
        platform: "linux".into(),
        x25519_public_key: B64.encode([bytes, bytes].concat()),
        ed25519_public_key: B64.encode([bytes, [7u8; 16]].concat()),
        last_seen_at_ms: Some(1_700_000_002_000),
        revoked_at_ms: None,
    }
}

/// A key wrap row of `session` at `epoch` from `sender` to `recipient`.
pub fn key_wrap(
    session: SessionId,
    epoch: KeyEpoch,
    recipient: DeviceId,
    sender: DeviceId,
) -> SessionKeyWrapRow {
    SessionKeyWrapRow {
        session_id: session,
        key_epoch: epoch,
        recipient_device_id: recipient,
        sender_device_id: sender,
        ephemeral_public_key: B64.encode([1u8; 32]),
        nonce: B64.encode([2u8; 24]),
        ciphertext: B64.encode([3u8; 48]),
        signature: B64.encode([4u8; 64]),
    }
}
