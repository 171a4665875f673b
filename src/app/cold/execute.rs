//! Running one unit against the cloud: sealing message batches, looking up metadata, and the
//! one token refresh allowed per refused token.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use zeroize::Zeroize;

use crate::app::auth::RefreshError;
use crate::app::devices::{DevicesError, HeldKey, KeyringError};
use crate::app::nonces::default_nonce_rng;
use crate::domain::backoff::RetryClass;
use crate::domain::crypto::{seal_message, CryptoError, MessageAad};
use crate::domain::routing::{route, ColdRoute};
use crate::domain::{DeviceId, EffectRecord, EffectSeq, Message, SessionId, SessionStatus};
use crate::ports::{
    AccessToken, AuthContext, CloudError, CloudMessageRow, CloudRepositoryRow, CloudSessionRow,
    CloudSessionStatus, MetadataError, StoreError,
};

use super::consumer::ColdConsumer;
use super::plan::{MessageItem, StatusItem, Unit, Work};

/// A unit in progress: what is already done survives retries.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) unit: Unit,
    /// The sealed batch, kept so every retry re-sends exactly the same rows.
    sealed: Option<Vec<CloudMessageRow>>,
    /// Status items already delivered.
    done: HashSet<EffectSeq>,
}

impl Pending {
    pub(crate) fn new(unit: Unit) -> Self {
        Self {
            unit,
            sealed: None,
            done: HashSet::new(),
        }
    }

    /// A message batch sealed ahead of its turn.
    pub(crate) fn sealed(unit: Unit, rows: Vec<CloudMessageRow>) -> Self {
        Self {
            sealed: Some(rows),
            ..Self::new(unit)
        }
    }
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The context was cleared: pause, nothing failed.
    NoContext,
    /// The attempt failed; the class says what to do next.
    Retry {
        /// How to retry.
        class: RetryClass,
        /// What went wrong (no secrets, no content).
        reason: String,
    },
}

impl Failure {
    fn local(class: RetryClass, reason: impl std::fmt::Display) -> Self {
        Self::Retry {
            class,
            reason: reason.to_string(),
        }
    }

    fn store(e: &StoreError) -> Self {
        let class = if e.is_transient() {
            RetryClass::Transient { retry_after: None }
        } else {
            RetryClass::Permanent
        };
        Self::local(class, format!("local store: {e}"))
    }

    fn task(e: &tokio::task::JoinError) -> Self {
        Self::local(
            RetryClass::Transient { retry_after: None },
            format!("background task failed: {e}"),
        )
    }

    fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Retry {
                class: RetryClass::Unauthenticated,
                ..
            }
        )
    }
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Self {
        Self::Retry {
            class: e.retry_class(),
            reason: e.to_string(),
        }
    }
}

impl From<DevicesError> for Failure {
    fn from(e: DevicesError) -> Self {
        match e {
            DevicesError::NotAuthenticated => Self::NoContext,
            e => Self::Retry {
                class: e.retry_class(),
                reason: e.to_string(),
            },
        }
    }
}

impl From<MetadataError> for Failure {
    fn from(e: MetadataError) -> Self {
        let class = match e {
            MetadataError::Unavailable(_) => RetryClass::Transient { retry_after: None },
            MetadataError::Backend(_) => RetryClass::Permanent,
        };
        Self::local(class, format!("session metadata: {e}"))
    }
}

impl From<KeyringError> for Failure {
    fn from(e: KeyringError) -> Self {
        DevicesError::Keyring(e).into()
    }
}

impl From<CryptoError> for Failure {
    fn from(e: CryptoError) -> Self {
        Self::local(RetryClass::Permanent, format!("sealing failed: {e}"))
    }
}

/// Message plaintext read for sealing, wiped when dropped, whichever way sealing ends.
struct Plaintexts(Vec<Message>);

impl Drop for Plaintexts {
    fn drop(&mut self) {
        for message in &mut self.0 {
            message.content.zeroize();
        }
    }
}

/// A batch after its local read: sealed, or waiting for new session keys to be distributed.
enum Prepared {
    /// Every row sealed.
    Sealed(Vec<CloudMessageRow>),
    /// Some key awaits distribution (network) before anything may be sealed with it.
    Undistributed {
        messages: Plaintexts,
        keys: BTreeMap<SessionId, HeldKey>,
    },
}

/// Seals each message with its session's key, bound to `device` as the sender.
fn seal_rows(
    messages: &Plaintexts,
    keys: &BTreeMap<SessionId, HeldKey>,
    device: DeviceId,
) -> Result<Vec<CloudMessageRow>, CryptoError> {
    let mut rows = Vec::with_capacity(messages.0.len());
    // One seeding per batch instead of a system call per message.
    let mut source = default_nonce_rng();
    let mut rng: &mut (dyn rand_core::CryptoRngCore + Send + Sync) = &mut *source;
    for message in &messages.0 {
        let Some(held) = keys.get(&message.session_id) else {
            continue;
        };
        let aad = MessageAad::new(
            message.session_id,
            message.id,
            message.seq,
            device,
            held.epoch,
        );
        let sealed = seal_message(&held.key, &aad, message.content.as_bytes(), &mut rng)?;
        rows.push(CloudMessageRow {
            id: message.id,
            session_id: message.session_id,
            sequence_number: message.seq.get(),
            role: message.role.as_str().to_owned(),
            content_ciphertext: sealed.content_encrypted(),
            content_nonce: sealed.content_nonce(),
            key_epoch: held.epoch,
            encryption_alg: sealed.alg.as_str().to_owned(),
            sender_device_id: device,
            created_at_ms: message.created_at_ms,
        });
    }
    Ok(rows)
}

/// Runs blocking work off the runtime; a failed task is a transient failure.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::task(&e))
}

impl ColdConsumer {
    /// One attempt at `pending`; a refused token is refreshed once and the unit retried at
    /// once with the new token.
    pub(crate) async fn attempt(
        &self,
        pending: &mut Pending,
        context: &AuthContext,
    ) -> Result<(), Failure> {
        match self.execute(pending, context).await {
            Err(failure) if failure.is_unauthenticated() => {
                let refreshed = self
                    .auth()
                    .refresh(self.refresher().as_ref(), &context.access_token)
                    .await;
                match refreshed {
                    Ok(fresh) => self.execute(pending, &fresh).await,
                    Err(RefreshError::NoContext) => Err(Failure::NoContext),
                    Err(e) => Err(Failure::local(
                        RetryClass::Unauthenticated,
                        format!("token refused and refresh failed: {e}"),
                    )),
                }
            }
            other => other,
        }
    }

    async fn execute(&self, pending: &mut Pending, context: &AuthContext) -> Result<(), Failure> {
        let token = &context.access_token;
        match &pending.unit.work {
            Work::Skip => Ok(()),
            Work::Messages(items) => {
                if pending.sealed.is_none() {
                    let items = items.clone();
                    pending.sealed = Some(self.seal_batch(&items, context).await?);
                }
                match pending.sealed.as_deref() {
                    Some(rows) if !rows.is_empty() => {
                        Ok(self.cloud().upsert_messages(token, rows).await?)
                    }
                    _ => Ok(()),
                }
            }
            Work::Statuses(items) => {
                let items: Vec<StatusItem> = items.clone();
                for item in items {
                    if pending.done.contains(&item.effect_seq) {
                        continue;
                    }
                    self.send_status(token, &item).await?;
                    pending.done.insert(item.effect_seq);
                }
                Ok(())
            }
            Work::Single(record) => {
                let record = record.clone();
                self.send_single(token, &record).await
            }
        }
    }

    /// Reads, seals and converts a batch. Messages deleted since their effect are left out.
    /// A session key created here is distributed before any row sealed with it is returned.
    async fn seal_batch(
        &self,
        items: &[MessageItem],
        context: &AuthContext,
    ) -> Result<Vec<CloudMessageRow>, Failure> {
        match self.prepare_batch(items, context.device_id).await? {
            Prepared::Sealed(rows) => Ok(rows),
            Prepared::Undistributed { messages, keys } => {
                for held in keys.values().filter(|held| held.needs_distribution()) {
                    self.devices().distribute(held).await?;
                }
                Ok(seal_rows(&messages, &keys, context.device_id)?)
            }
        }
    }

    /// Seals a batch ahead of its turn, if that needs nothing but local work (no key awaits
    /// distribution); `None` leaves the batch to [`Self::seal_batch`] in its own turn, which
    /// also reports any failure.
    pub(crate) async fn seal_ahead(
        &self,
        items: &[MessageItem],
        device: DeviceId,
    ) -> Option<Vec<CloudMessageRow>> {
        match self.prepare_batch(items, device).await {
            Ok(Prepared::Sealed(rows)) => Some(rows),
            Ok(Prepared::Undistributed { .. }) | Err(_) => None,
        }
    }

    /// The local part of a batch in one blocking step: one query for its messages, the
    /// current key of each of their sessions (created if none is held) and, when no key awaits
    /// distribution, the sealing.
    async fn prepare_batch(
        &self,
        items: &[MessageItem],
        device: DeviceId,
    ) -> Result<Prepared, Failure> {
        let store = Arc::clone(self.store());
        let keyring = Arc::clone(self.devices().keyring());
        let ids: Vec<_> = items.iter().map(|m| m.message_id).collect();
        off_runtime(move || {
            let messages = Plaintexts(store.messages(&ids).map_err(|e| Failure::store(&e))?);
            let mut keys: BTreeMap<SessionId, HeldKey> = BTreeMap::new();
            for session in messages.0.iter().map(|m| m.session_id) {
                if let std::collections::btree_map::Entry::Vacant(slot) = keys.entry(session) {
                    slot.insert(keyring.current_or_create(session)?);
                }
            }
            if keys.values().any(HeldKey::needs_distribution) {
                return Ok(Prepared::Undistributed { messages, keys });
            }
            Ok(Prepared::Sealed(seal_rows(&messages, &keys, device)?))
        })
        .await?
    }

    async fn send_status(&self, token: &AccessToken, item: &StatusItem) -> Result<(), Failure> {
        let value = serde_json::to_value(&item.envelope)
            .map_err(|e| Failure::local(RetryClass::Permanent, format!("status encoding: {e}")))?;
        let changed = self
            .cloud()
            .update_runtime_status(
                token,
                item.envelope.session_id,
                &value,
                item.envelope.updated_at_ms,
            )
            .await?;
        if !changed {
            tracing::debug!(session = %item.envelope.session_id, "runtime status not newer in the cloud (or no session row)");
        }
        Ok(())
    }

    async fn send_single(&self, token: &AccessToken, record: &EffectRecord) -> Result<(), Failure> {
        let cloud = self.cloud();
        match route(&record.effect).cold {
            ColdRoute::UpsertRepository(id) => {
                let metadata = Arc::clone(self.metadata());
                let Some(repo) = off_runtime(move || metadata.repository(id)).await?? else {
                    return Ok(()); // deleted since: its deletion is later in the log
                };
                let row = CloudRepositoryRow {
                    id: repo.id,
                    name: repo.name,
                    remote_url: repo.remote_url,
                    created_at_ms: repo.created_at_ms,
                    updated_at_ms: repo.updated_at_ms,
                };
                Ok(cloud.upsert_repository(token, &row).await?)
            }
            ColdRoute::DeleteRepository(id) => Ok(cloud.delete_repository(token, id).await?),
            ColdRoute::UpsertSession(id) => {
                let metadata = Arc::clone(self.metadata());
                let Some(session) = off_runtime(move || metadata.session(id)).await?? else {
                    return Ok(());
                };
                let row = CloudSessionRow {
                    id: session.id,
                    repository_id: session.repository_id,
                    title: session.title,
                    status: match session.status {
                        SessionStatus::Active => CloudSessionStatus::Active,
                        SessionStatus::Closed => CloudSessionStatus::Ended,
                    },
                    created_at_ms: session.created_at_ms,
                    updated_at_ms: session.updated_at_ms,
                    ended_at_ms: session.closed_at_ms,
                };
                Ok(cloud.upsert_session(token, &row).await?)
            }
            ColdRoute::EndSession(id) => {
                let metadata = Arc::clone(self.metadata());
                let closed_at = off_runtime(move || metadata.session(id))
                    .await??
                    .and_then(|s| s.closed_at_ms);
                let ended_at = closed_at.unwrap_or(record.committed_at_ms);
                if !cloud.end_session(token, id, ended_at).await? {
                    tracing::debug!(session = %id, "no cloud session row to end");
                }
                Ok(())
            }
            ColdRoute::DeleteSession(id) => Ok(cloud.delete_session(token, id).await?),
            ColdRoute::Message { .. } | ColdRoute::RuntimeStatus(_) | ColdRoute::Skip => Ok(()),
        }
    }
}
