//! An in-memory `CloudSync` that behaves like the cloud tables (idempotent upserts, cascades,
//! conditional updates) and fails on request, per operation, in the ways the adapter
//! classifies: transient (with `Retry-After`), network, unauthenticated, permanent, and
//! "applied, then the answer was lost".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use tandem::domain::crypto::{KeyEpoch, SessionKeyWrapRow};
use tandem::domain::{DeviceId, RepositoryId, SessionId};
use tandem::ports::{
    AccessToken, CloudDeviceRow, CloudError, CloudMessageRow, CloudRepositoryRow, CloudSessionRow,
    CloudSessionStatus, CloudSync,
};

/// A cloud operation, for fault injection and call records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    UpsertMessages,
    FetchMessages,
    UpsertRepository,
    DeleteRepository,
    UpsertSession,
    DeleteSession,
    EndSession,
    UpdateRuntimeStatus,
    UpsertDevice,
    ListDevices,
    RevokeDevice,
    PutKeyWraps,
    FetchKeyWraps,
}

/// An injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 503 with an optional `Retry-After`.
    Transient(Option<Duration>),
    /// Connection refused.
    Network,
    /// 401.
    Unauthenticated,
    /// 400.
    Permanent,
    /// The write is applied, then the connection drops before the answer.
    ApplyThenFail,
}

impl Fault {
    fn error(&self) -> CloudError {
        match self {
            Self::Transient(retry_after) => CloudError::Transient {
                status: 503,
                code: Some("PGRST000".into()),
                message: "database unavailable".into(),
                retry_after: *retry_after,
            },
            Self::Network | Self::ApplyThenFail => {
                CloudError::Network("connection reset by peer".into())
            }
            Self::Unauthenticated => CloudError::Unauthenticated {
                code: Some("PGRST301".into()),
                message: "JWT expired".into(),
            },
            Self::Permanent => CloudError::Permanent {
                status: 400,
                code: Some("22P02".into()),
                message: "invalid input syntax".into(),
            },
        }
    }
}

/// One call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: Op,
    pub at: Instant,
    pub token: String,
    pub ok: bool,
    /// Rows sent (message upserts; 0 for the other calls).
    pub rows: usize,
}

#[derive(Debug, Default)]
struct State {
    messages: BTreeMap<(SessionId, u64), CloudMessageRow>,
    repositories: BTreeMap<RepositoryId, CloudRepositoryRow>,
    sessions: BTreeMap<SessionId, CloudSessionRow>,
    runtime: BTreeMap<SessionId, (Value, i64)>,
    devices: BTreeMap<DeviceId, CloudDeviceRow>,
    wraps: BTreeMap<(SessionId, KeyEpoch, DeviceId), SessionKeyWrapRow>,
    faults: HashMap<Op, VecDeque<Fault>>,
    accepted_token: Option<String>,
    calls: Vec<Call>,
    message_batches: Vec<Vec<CloudMessageRow>>,
}

/// The fake cloud. See the module docs.
#[derive(Debug, Default)]
pub struct FakeCloud {
    state: Mutex<State>,
    changed: Notify,
}

impl FakeCloud {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `faults` for the next calls of `op`, in order.
    pub fn fail_next(&self, op: Op, faults: impl IntoIterator<Item = Fault>) {
        self.state().faults.entry(op).or_default().extend(faults);
    }

    /// From now on, any other token is refused with 401.
    pub fn accept_only(&self, token: &str) {
        self.state().accepted_token = Some(token.to_owned());
    }

    /// Rows carried by each message upsert so far, refused ones included, in order.
    pub fn message_upsert_sizes(&self) -> Vec<usize> {
        self.calls(Op::UpsertMessages)
            .iter()
            .map(|c| c.rows)
            .collect()
    }

    pub fn calls(&self, op: Op) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .cloned()
            .collect()
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Every `upsert_messages` request, as sent.
    pub fn message_batches(&self) -> Vec<Vec<CloudMessageRow>> {
        self.state().message_batches.clone()
    }

    pub fn messages(&self) -> Vec<CloudMessageRow> {
        self.state().messages.values().cloned().collect()
    }

    pub fn message_count(&self) -> usize {
        self.state().messages.len()
    }

    pub fn session(&self, id: SessionId) -> Option<CloudSessionRow> {
        self.state().sessions.get(&id).cloned()
    }

    pub fn runtime_status(&self, id: SessionId) -> Option<(Value, i64)> {
        self.state().runtime.get(&id).cloned()
    }

    pub fn wraps(&self) -> Vec<SessionKeyWrapRow> {
        self.state().wraps.values().cloned().collect()
    }

    /// Rewrites stored wraps (to forge or strip them).
    pub fn tamper_wraps(&self, mut edit: impl FnMut(&mut SessionKeyWrapRow)) {
        self.state().wraps.values_mut().for_each(&mut edit);
    }

    /// Waits (bounded by `limit` of tokio time) until `done` holds, re-checking after every call.
    pub async fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        for _ in 0..100_000 {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        assert!(done(self), "timed out waiting until {what}");
    }

    /// Records the call, checks the token, and applies any queued fault. `Ok(true)` means
    /// "apply, then fail".
    fn begin(&self, op: Op, token: &AccessToken) -> Result<bool, CloudError> {
        self.begin_rows(op, token, 0)
    }

    /// [`Self::begin`] for a call that sends `rows` rows.
    fn begin_rows(&self, op: Op, token: &AccessToken, rows: usize) -> Result<bool, CloudError> {
        let mut state = self.state();
        let refused = state
            .accepted_token
            .as_deref()
            .is_some_and(|t| t != token.expose_secret());
        let fault = if refused {
            Some(Fault::Unauthenticated)
        } else {
            state.faults.get_mut(&op).and_then(VecDeque::pop_front)
        };
        state.calls.push(Call {
            op,
            at: Instant::now(),
            token: token.expose_secret().to_owned(),
            ok: fault.is_none(),
            rows,
        });
        drop(state);
        self.changed.notify_waiters();
        match fault {
            None => Ok(false),
            Some(Fault::ApplyThenFail) => Ok(true),
            Some(fault) => Err(fault.error()),
        }
    }

    fn finish<T>(&self, apply_then_fail: bool, value: T) -> Result<T, CloudError> {
        self.changed.notify_waiters();
        if apply_then_fail {
            Err(Fault::ApplyThenFail.error())
        } else {
            Ok(value)
        }
    }
}

#[async_trait]
impl CloudSync for FakeCloud {
    async fn upsert_messages(
        &self,
        token: &AccessToken,
        rows: &[CloudMessageRow],
    ) -> Result<(), CloudError> {
        let then_fail = self.begin_rows(Op::UpsertMessages, token, rows.len())?;
        {
            let mut state = self.state();
            state.message_batches.push(rows.to_vec());
            for row in rows {
                state
                    .messages
                    .insert((row.session_id, row.sequence_number), row.clone());
            }
        }
        self.finish(then_fail, ())
    }

    async fn fetch_messages(
        &self,
        token: &AccessToken,
        session: SessionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CloudMessageRow>, CloudError> {
        let then_fail = self.begin(Op::FetchMessages, token)?;
        let rows = self
            .state()
            .messages
            .range((session, after.saturating_add(1))..=(session, u64::MAX))
            .take(limit)
            .map(|(_, row)| row.clone())
            .collect();
        self.finish(then_fail, rows)
    }

    async fn upsert_repository(
        &self,
        token: &AccessToken,
        row: &CloudRepositoryRow,
    ) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::UpsertRepository, token)?;
        self.state().repositories.insert(row.id, row.clone());
        self.finish(then_fail, ())
    }

    async fn delete_repository(
        &self,
        token: &AccessToken,
        id: RepositoryId,
    ) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::DeleteRepository, token)?;
        {
            let mut state = self.state();
            state.repositories.remove(&id);
            let gone: Vec<_> = state
                .sessions
                .values()
                .filter(|s| s.repository_id == id)
                .map(|s| s.id)
                .collect();
            for session in gone {
                delete_session_rows(&mut state, session);
            }
        }
        self.finish(then_fail, ())
    }

    async fn upsert_session(
        &self,
        token: &AccessToken,
        row: &CloudSessionRow,
    ) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::UpsertSession, token)?;
        self.state().sessions.insert(row.id, row.clone());
        self.finish(then_fail, ())
    }

    async fn delete_session(&self, token: &AccessToken, id: SessionId) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::DeleteSession, token)?;
        delete_session_rows(&mut self.state(), id);
        self.finish(then_fail, ())
    }

    async fn end_session(
        &self,
        token: &AccessToken,
        id: SessionId,
        ended_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let then_fail = self.begin(Op::EndSession, token)?;
        let found = match self.state().sessions.get_mut(&id) {
            Some(row) => {
                row.status = CloudSessionStatus::Ended;
                row.ended_at_ms = Some(ended_at_ms);
                true
            }
            None => false,
        };
        self.finish(then_fail, found)
    }

    async fn update_runtime_status(
        &self,
        token: &AccessToken,
        id: SessionId,
        status: &Value,
        updated_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let then_fail = self.begin(Op::UpdateRuntimeStatus, token)?;
        let changed = {
            let mut state = self.state();
            let newer = state
                .runtime
                .get(&id)
                .is_none_or(|(_, at)| updated_at_ms > *at);
            if state.sessions.contains_key(&id) && newer {
                state.runtime.insert(id, (status.clone(), updated_at_ms));
                true
            } else {
                false
            }
        };
        self.finish(then_fail, changed)
    }

    async fn upsert_device(
        &self,
        token: &AccessToken,
        row: &CloudDeviceRow,
    ) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::UpsertDevice, token)?;
        self.state().devices.insert(row.id, row.clone());
        self.finish(then_fail, ())
    }

    async fn list_devices(&self, token: &AccessToken) -> Result<Vec<CloudDeviceRow>, CloudError> {
        let then_fail = self.begin(Op::ListDevices, token)?;
        let rows = self.state().devices.values().cloned().collect();
        self.finish(then_fail, rows)
    }

    async fn revoke_device(
        &self,
        token: &AccessToken,
        id: DeviceId,
        revoked_at_ms: i64,
    ) -> Result<bool, CloudError> {
        let then_fail = self.begin(Op::RevokeDevice, token)?;
        let found = match self.state().devices.get_mut(&id) {
            Some(row) => {
                row.revoked_at_ms = Some(revoked_at_ms);
                true
            }
            None => false,
        };
        self.finish(then_fail, found)
    }

    async fn put_key_wraps(
        &self,
        token: &AccessToken,
        rows: &[SessionKeyWrapRow],
    ) -> Result<(), CloudError> {
        let then_fail = self.begin(Op::PutKeyWraps, token)?;
        {
            let mut state = self.state();
            for row in rows {
                state.wraps.insert(
                    (row.session_id, row.key_epoch, row.recipient_device_id),
                    row.clone(),
                );
            }
        }
        self.finish(then_fail, ())
    }

    async fn fetch_key_wraps(
        &self,
        token: &AccessToken,
        session: SessionId,
        recipient: DeviceId,
    ) -> Result<Vec<SessionKeyWrapRow>, CloudError> {
        let then_fail = self.begin(Op::FetchKeyWraps, token)?;
        let rows = self
            .state()
            .wraps
            .values()
            .filter(|w| w.session_id == session && w.recipient_device_id == recipient)
            .cloned()
            .collect();
        self.finish(then_fail, rows)
    }
}

fn delete_session_rows(state: &mut State, id: SessionId) {
    state.sessions.remove(&id);
    state.runtime.remove(&id);
    state.messages.retain(|(session, _), _| *session != id);
    state.wraps.retain(|(session, _, _), _| *session != id);
}
