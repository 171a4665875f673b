//! [`CloudReader`]: reads a session's messages back from the cloud and opens them.
//!
//! Each row is opened with the session key of the epoch it names, bound to the row's own
//! session, message id, sequence number, sender device, epoch and algorithm: a row moved or
//! altered by the server does not open. A missing key is fetched once per read through
//! [`Devices::receive_keys`]; rows that still cannot be opened (no key for their epoch, as
//! for a revoked device reading past its revocation, or a failed open) are reported next to
//! the opened ones rather than failing the whole read.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::domain::crypto::{
    open_message, Algorithm, KeyEpoch, MessageAad, SealedContent, SessionKey,
};
use crate::domain::{DeviceId, MessageId, Role, Seq, SessionId};
use crate::ports::CloudMessageRow;

use super::error::{blocking, DevicesError};
use super::service::{Devices, ReceivedKeys};

/// A message read from the cloud and opened. Its content is redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedMessage {
    /// Message id.
    pub id: MessageId,
    /// Session id.
    pub session_id: SessionId,
    /// Position in the session.
    pub seq: Seq,
    /// Author role.
    pub role: Role,
    /// The plaintext (zeroized on drop).
    pub content: Zeroizing<String>,
    /// When it was created, Unix milliseconds.
    pub created_at_ms: i64,
    /// The device that sealed it.
    pub sender_device_id: DeviceId,
    /// The key generation it was sealed under.
    pub key_epoch: KeyEpoch,
}

impl std::fmt::Debug for OpenedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedMessage")
            .field("id", &self.id)
            .field("session_id", &self.session_id)
            .field("seq", &self.seq)
            .field("role", &self.role)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("sender_device_id", &self.sender_device_id)
            .field("key_epoch", &self.key_epoch)
            .finish_non_exhaustive()
    }
}

/// Why a row could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// This device holds no key for the row's epoch (and none was wrapped to it).
    #[error("no session key for epoch {0} is available to this device")]
    KeyUnavailable(KeyEpoch),
    /// The row did not open: wrong key, altered ciphertext or context.
    #[error("the message did not open")]
    Decrypt,
    /// The row is malformed (encoding, algorithm, role, or not UTF-8).
    #[error("malformed message row: {0}")]
    Malformed(String),
}

/// A row that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableMessage {
    /// Message id.
    pub id: MessageId,
    /// Position in the session.
    pub seq: u64,
    /// The epoch it names.
    pub key_epoch: KeyEpoch,
    /// Why it could not be opened.
    pub reason: Unreadable,
}

/// One page of a session read from the cloud.
#[derive(Debug, Clone, Default)]
pub struct ReadPage {
    /// The rows opened, in sequence order.
    pub opened: Vec<OpenedMessage>,
    /// The rows that could not be opened.
    pub unreadable: Vec<UnreadableMessage>,
    /// The highest sequence number seen (pass it as `after` for the next page).
    pub last_seq: Option<u64>,
    /// Keys received while reading, if a fetch was needed.
    pub received: Option<ReceivedKeys>,
}

/// Reads and opens a session's cloud messages. See the module docs.
#[derive(Debug, Clone)]
pub struct CloudReader {
    devices: Arc<Devices>,
}

impl CloudReader {
    /// A reader acting as the device behind `devices`.
    pub fn new(devices: Arc<Devices>) -> Self {
        Self { devices }
    }

    /// The messages of `session` with sequence number above `after`, at most `limit`.
    pub async fn read(
        &self,
        session: SessionId,
        after: u64,
        limit: usize,
    ) -> Result<ReadPage, DevicesError> {
        let cloud = self.devices.cloud();
        let rows = self
            .devices
            .auth()
            .call(self.devices.refresher().as_ref(), |token| async move {
                cloud.fetch_messages(&token, session, after, limit).await
            })
            .await?;
        let mut page = ReadPage {
            last_seq: rows.iter().map(|r| r.sequence_number).max(),
            ..ReadPage::default()
        };
        let mut keys: HashMap<KeyEpoch, Option<SessionKey>> = HashMap::new();
        for row in &rows {
            let epoch = row.key_epoch;
            if let Entry::Vacant(slot) = keys.entry(epoch) {
                let mut key = self.held_key(session, epoch).await?;
                if key.is_none() && page.received.is_none() {
                    page.received = Some(self.devices.receive_keys(session).await?);
                    key = self.held_key(session, epoch).await?;
                }
                slot.insert(key);
            }
            let opened = match keys.get(&epoch).and_then(Option::as_ref) {
                None => Err(Unreadable::KeyUnavailable(epoch)),
                Some(key) if row.session_id == session => open_row(key, row),
                Some(_) => Err(Unreadable::Malformed("row of another session".into())),
            };
            match opened {
                Ok(message) => page.opened.push(message),
                Err(reason) => page.unreadable.push(UnreadableMessage {
                    id: row.id,
                    seq: row.sequence_number,
                    key_epoch: epoch,
                    reason,
                }),
            }
        }
        Ok(page)
    }

    async fn held_key(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
    ) -> Result<Option<SessionKey>, DevicesError> {
        let keyring = Arc::clone(self.devices.keyring());
        blocking(move || keyring.get(session, epoch)).await
    }
}

/// Opens one row with its epoch's key.
fn open_row(key: &SessionKey, row: &CloudMessageRow) -> Result<OpenedMessage, Unreadable> {
    let malformed = |e: &dyn std::fmt::Display| Unreadable::Malformed(e.to_string());
    let alg = Algorithm::parse(&row.encryption_alg).map_err(|e| malformed(&e))?;
    let sealed = SealedContent::from_base64(
        &row.encryption_alg,
        &row.content_ciphertext,
        &row.content_nonce,
    )
    .map_err(|e| malformed(&e))?;
    let role = Role::parse(&row.role).map_err(|e| malformed(&e))?;
    let mut aad = MessageAad::new(
        row.session_id,
        row.id,
        Seq::new(row.sequence_number),
        row.sender_device_id,
        row.key_epoch,
    );
    aad.alg = alg;
    let plaintext = open_message(key, &aad, &sealed).map_err(|_| Unreadable::Decrypt)?;
    let content = String::from_utf8(plaintext.to_vec())
        .map_err(|_| Unreadable::Malformed("content is not UTF-8".into()))?;
    Ok(OpenedMessage {
        id: row.id,
        session_id: row.session_id,
        seq: Seq::new(row.sequence_number),
        role,
        content: Zeroizing::new(content),
        created_at_ms: row.created_at_ms,
        sender_device_id: row.sender_device_id,
        key_epoch: row.key_epoch,
    })
}
