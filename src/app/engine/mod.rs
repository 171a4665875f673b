//! The session engine: commit, then derive, then emit.
//!
//! Every write runs under one writer lock, strictly in this order:
//!
//! 1. validate against the views (cheap, no I/O);
//! 2. commit the facts **and their effect records** in one store transaction — if this fails,
//!    stop: nothing changed;
//! 3. update the in-memory views and publish to live subscribers;
//! 4. emit each committed effect to the [`SideEffectSink`] (a non-blocking doorbell).
//!
//! A crash between any two steps loses nothing: the fact and its effect are durable together,
//! and consumers read the effect log by cursor rather than trusting the doorbell. Reads are
//! served from the views only. Opening an existing database rebuilds the views silently: no
//! effect is emitted and no subscriber is notified.

mod error;
mod live;
mod views;

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use error::EngineError;
pub use live::{LiveEvent, Subscription};

use crate::adapters::sink::NullSink;
use crate::adapters::system::{SystemClock, UuidV7Gen};
use crate::domain::session::{validate_repository_name, validate_title};
use crate::domain::{
    AgentId, DeviceId, DomainError, EffectRecord, EffectSeq, Message, MessageId, NewMessage,
    Repository, RepositoryId, RuntimeStatus, RuntimeStatusEnvelope, Seq, Session, SessionId,
    SessionStatus, SideEffect,
};
use crate::ports::{Clock, Fact, IdGen, SideEffectSink, Store, WriteBatch};

use super::effect_log::EffectLog;
use live::{LiveHub, LiveItem};
use views::{SessionView, Views};

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Items buffered per session for live subscribers before a slow one is told it lagged
    /// (default 1024).
    pub live_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            live_capacity: 1024,
        }
    }
}

/// Outcome of [`Engine::apply_runtime_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusUpdate {
    /// Newer than the stored status: committed with this effect seq.
    Applied(EffectSeq),
    /// Not newer than the stored status: dropped, nothing written.
    Stale,
}

/// Builds an [`Engine`] over a store, with production defaults for everything else.
#[derive(Debug)]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    sink: Arc<dyn SideEffectSink>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    device: Option<DeviceId>,
    config: EngineConfig,
}

impl EngineBuilder {
    /// The sink that hears every committed effect (default: [`NullSink`]).
    #[must_use]
    pub fn sink(mut self, sink: Arc<dyn SideEffectSink>) -> Self {
        self.sink = sink;
        self
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The id generator (default: UUIDv7).
    #[must_use]
    pub fn ids(mut self, ids: Arc<dyn IdGen>) -> Self {
        self.ids = ids;
        self
    }

    /// Overrides the device id stamped on messages (default: the store's persisted local id).
    #[must_use]
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// Engine settings.
    #[must_use]
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the engine: loads the store and rebuilds the views. Silent: emits nothing.
    pub fn open(self) -> Result<Engine, EngineError> {
        let device = match self.device {
            Some(d) => d,
            None => {
                let candidate = DeviceId::from_uuid(self.ids.next_uuid())?;
                self.store.local_device_id(candidate)?
            }
        };
        let views = Views::from_contents(self.store.load()?);
        tracing::debug!(
            sessions = views.sessions.len(),
            repositories = views.repositories.len(),
            "engine opened; views rebuilt silently"
        );
        Ok(Engine {
            store: self.store,
            sink: self.sink,
            clock: self.clock,
            ids: self.ids,
            device,
            writer: Mutex::new(()),
            views: RwLock::new(views),
            live: LiveHub::new(self.config.live_capacity),
        })
    }
}

/// The session engine. `Send + Sync`: share it in an `Arc` across threads; writes are
/// serialised internally, reads run concurrently from the views.
pub struct Engine {
    store: Arc<dyn Store>,
    sink: Arc<dyn SideEffectSink>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    device: DeviceId,
    writer: Mutex<()>,
    views: RwLock<Views>,
    live: LiveHub,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let views = self.views();
        f.debug_struct("Engine")
            .field("device", &self.device)
            .field("store", &self.store)
            .field("repositories", &views.repositories.len())
            .field("sessions", &views.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine over `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            sink: Arc::new(NullSink),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Gen),
            device: None,
            config: EngineConfig::default(),
        }
    }

    /// The device id stamped on messages written here.
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The underlying store (for effect-log consumers and diagnostics).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The durable effect log, for consumers that drain it by cursor.
    pub fn effect_log(&self) -> EffectLog {
        EffectLog::new(Arc::clone(&self.store))
    }

    // ----- writes -------------------------------------------------------------------------

    /// Creates a repository.
    pub fn create_repository(
        &self,
        name: &str,
        remote_url: Option<&str>,
    ) -> Result<Repository, EngineError> {
        validate_repository_name(name)?;
        let _w = self.write_lock();
        let now = self.clock.now_ms();
        let repo = Repository {
            id: RepositoryId::from_uuid(self.ids.next_uuid())?,
            name: name.to_owned(),
            remote_url: remote_url.map(str::to_owned),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let records = self.commit(
            vec![Fact::InsertRepository(repo.clone())],
            vec![SideEffect::RepositoryCreated {
                repository_id: repo.id,
            }],
            now,
        )?;
        self.views_mut().repositories.insert(repo.id, repo.clone());
        self.emit(&records);
        Ok(repo)
    }

    /// Deletes a repository with its sessions and their messages.
    pub fn delete_repository(&self, id: RepositoryId) -> Result<(), EngineError> {
        let _w = self.write_lock();
        if !self.views().repositories.contains_key(&id) {
            return Err(DomainError::RepositoryNotFound(id).into());
        }
        let now = self.clock.now_ms();
        let records = self.commit(
            vec![Fact::DeleteRepository(id)],
            vec![SideEffect::RepositoryDeleted { repository_id: id }],
            now,
        )?;
        let removed = {
            let mut views = self.views_mut();
            views.repositories.remove(&id);
            let sessions = views.sessions_of(id);
            for s in &sessions {
                views.remove_session(*s);
            }
            sessions
        };
        for s in removed {
            self.live.end(s);
        }
        self.emit(&records);
        Ok(())
    }

    /// Creates an active session in `repository`.
    pub fn create_session(
        &self,
        repository: RepositoryId,
        title: &str,
    ) -> Result<Session, EngineError> {
        validate_title(title)?;
        let _w = self.write_lock();
        if !self.views().repositories.contains_key(&repository) {
            return Err(DomainError::RepositoryNotFound(repository).into());
        }
        let now = self.clock.now_ms();
        let session = Session {
            id: SessionId::from_uuid(self.ids.next_uuid())?,
            repository_id: repository,
            title: title.to_owned(),
            status: SessionStatus::Active,
            created_at_ms: now,
            updated_at_ms: now,
            closed_at_ms: None,
        };
        let records = self.commit(
            vec![Fact::InsertSession(session.clone())],
            vec![SideEffect::SessionCreated {
                session_id: session.id,
                repository_id: repository,
            }],
            now,
        )?;
        self.views_mut()
            .sessions
            .insert(session.id, SessionView::new(session.clone(), Vec::new()));
        self.emit(&records);
        Ok(session)
    }

    /// Changes a session's title.
    pub fn update_session_title(&self, id: SessionId, title: &str) -> Result<Session, EngineError> {
        validate_title(title)?;
        let _w = self.write_lock();
        let mut session = self.session_or_err(id)?;
        session.title = title.to_owned();
        session.updated_at_ms = self.clock.now_ms();
        let records = self.commit(
            vec![Fact::UpdateSession(session.clone())],
            vec![SideEffect::SessionUpdated { session_id: id }],
            session.updated_at_ms,
        )?;
        self.set_session(&session);
        self.emit(&records);
        Ok(session)
    }

    /// Closes a session: later appends are refused. Closing an already closed session changes
    /// nothing and emits nothing.
    pub fn close_session(&self, id: SessionId) -> Result<Session, EngineError> {
        let _w = self.write_lock();
        let mut session = self.session_or_err(id)?;
        if !session.is_active() {
            return Ok(session);
        }
        let now = self.clock.now_ms();
        session.status = SessionStatus::Closed;
        session.updated_at_ms = now;
        session.closed_at_ms = Some(now);
        let records = self.commit(
            vec![Fact::UpdateSession(session.clone())],
            vec![SideEffect::SessionClosed { session_id: id }],
            now,
        )?;
        self.set_session(&session);
        self.live.publish(id, [LiveItem::Closed]);
        self.emit(&records);
        Ok(session)
    }

    /// Deletes a session and its messages.
    pub fn delete_session(&self, id: SessionId) -> Result<(), EngineError> {
        let _w = self.write_lock();
        self.require_session(id)?;
        let now = self.clock.now_ms();
        let records = self.commit(
            vec![Fact::DeleteSession(id)],
            vec![SideEffect::SessionDeleted { session_id: id }],
            now,
        )?;
        self.views_mut().remove_session(id);
        self.live.end(id);
        self.emit(&records);
        Ok(())
    }

    /// Appends one message at the session's next seq.
    pub fn append_message(
        &self,
        session: SessionId,
        message: NewMessage,
    ) -> Result<Arc<Message>, EngineError> {
        let mut out = self.append_messages(session, vec![message])?;
        Ok(out.remove(0))
    }

    /// Appends several messages in one transaction (group commit): all land, contiguous and in
    /// order, or none does.
    pub fn append_messages(
        &self,
        session: SessionId,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Arc<Message>>, EngineError> {
        if messages.is_empty() {
            return Err(DomainError::EmptyBatch.into());
        }
        for m in &messages {
            m.validate()?;
        }
        let _w = self.write_lock();
        let last = {
            let views = self.views();
            let view = views
                .sessions
                .get(&session)
                .ok_or(DomainError::SessionNotFound(session))?;
            if !view.session.is_active() {
                return Err(DomainError::SessionClosed(session).into());
            }
            view.last_seq()
        };
        let now = self.clock.now_ms();
        let mut seq = last;
        let mut facts = Vec::with_capacity(messages.len());
        let mut effects = Vec::with_capacity(messages.len());
        for new in messages {
            seq = seq.next();
            let id = match new.id {
                Some(id) => id,
                None => MessageId::from_uuid(self.ids.next_uuid())?,
            };
            let message = Message {
                id,
                session_id: session,
                seq,
                role: new.role,
                content: new.content,
                created_at_ms: now,
                origin: self.device,
            };
            effects.push(SideEffect::MessageAppended {
                session_id: session,
                message_id: id,
                seq,
            });
            facts.push(Fact::AppendMessage(message));
        }
        let batch = WriteBatch {
            facts,
            effects,
            committed_at_ms: now,
        };
        let records = self.commit_batch(&batch)?;
        // Committed: move the messages out of the batch rather than cloning their content.
        let committed: Vec<Arc<Message>> = batch
            .facts
            .into_iter()
            .filter_map(|f| match f {
                Fact::AppendMessage(m) => Some(Arc::new(m)),
                _ => None,
            })
            .collect();
        {
            let mut views = self.views_mut();
            let view = views
                .sessions
                .get_mut(&session)
                .expect("session was checked under the writer lock");
            for m in &committed {
                view.push(Arc::clone(m));
            }
        }
        self.live
            .publish(session, committed.iter().cloned().map(LiveItem::Message));
        self.emit(&records);
        Ok(committed)
    }

    /// Records a runtime status observed now on this device. Local updates always apply: the
    /// stamp is `max(now, previous + 1)` so two updates in one millisecond keep their order.
    pub fn update_runtime_status(
        &self,
        session: SessionId,
        status: RuntimeStatus,
    ) -> Result<EffectSeq, EngineError> {
        let _w = self.write_lock();
        self.require_session(session)?;
        let previous = self.views().runtime.get(&session).map(|e| e.updated_at_ms);
        let now = self.clock.now_ms();
        let stamp = previous.map_or(now, |p| now.max(p + 1));
        let envelope = RuntimeStatusEnvelope::new(session, self.device, status, stamp);
        self.put_runtime_status(envelope, now)
    }

    /// Applies an externally stamped runtime status with newest-wins coalescing: an envelope not
    /// newer than the stored one is dropped without writing.
    pub fn apply_runtime_status(
        &self,
        envelope: RuntimeStatusEnvelope,
    ) -> Result<StatusUpdate, EngineError> {
        let _w = self.write_lock();
        self.require_session(envelope.session_id)?;
        if !envelope.supersedes(self.views().runtime.get(&envelope.session_id)) {
            return Ok(StatusUpdate::Stale);
        }
        let now = self.clock.now_ms();
        self.put_runtime_status(envelope, now)
            .map(StatusUpdate::Applied)
    }

    /// Records an agent status change (kept in the effect log; routing skips it).
    pub fn report_agent_status(
        &self,
        session: SessionId,
        agent: AgentId,
        status: &str,
    ) -> Result<EffectSeq, EngineError> {
        let _w = self.write_lock();
        self.require_session(session)?;
        let now = self.clock.now_ms();
        let records = self.commit(
            Vec::new(),
            vec![SideEffect::AgentStatusChanged {
                session_id: session,
                agent_id: agent,
                status: status.to_owned(),
            }],
            now,
        )?;
        self.emit(&records);
        Ok(records[0].seq)
    }

    /// Rebuilds the views from the store: the snapshot absorbs the delta. Silent.
    pub fn refresh_snapshot(&self) -> Result<(), EngineError> {
        let _w = self.write_lock();
        let fresh = Views::from_contents(self.store.load()?);
        *self.views_mut() = fresh;
        Ok(())
    }

    // ----- reads (views only) ---------------------------------------------------------------

    /// Every repository.
    pub fn repositories(&self) -> Vec<Repository> {
        let mut out: Vec<_> = self.views().repositories.values().cloned().collect();
        out.sort_by_key(|r| (r.created_at_ms, r.id));
        out
    }

    /// One repository.
    pub fn repository(&self, id: RepositoryId) -> Option<Repository> {
        self.views().repositories.get(&id).cloned()
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Session> {
        let mut out: Vec<_> = self
            .views()
            .sessions
            .values()
            .map(|v| v.session.clone())
            .collect();
        out.sort_by_key(|s| (s.created_at_ms, s.id));
        out
    }

    /// One session.
    pub fn session(&self, id: SessionId) -> Option<Session> {
        self.views().sessions.get(&id).map(|v| v.session.clone())
    }

    /// A session's whole transcript, in seq order. Cheap: shares the messages.
    pub fn transcript(&self, id: SessionId) -> Result<Vec<Arc<Message>>, EngineError> {
        self.messages_after(id, Seq::ZERO)
    }

    /// A session's messages with `seq > after`, in order (to catch up after a lag).
    pub fn messages_after(
        &self,
        id: SessionId,
        after: Seq,
    ) -> Result<Vec<Arc<Message>>, EngineError> {
        let views = self.views();
        let view = views
            .sessions
            .get(&id)
            .ok_or(DomainError::SessionNotFound(id))?;
        Ok(view.after(after))
    }

    /// The seq of the session's newest message (0 when empty).
    pub fn last_seq(&self, id: SessionId) -> Result<Seq, EngineError> {
        let views = self.views();
        let view = views
            .sessions
            .get(&id)
            .ok_or(DomainError::SessionNotFound(id))?;
        Ok(view.last_seq())
    }

    /// How many messages of the session sit in the delta (since the last snapshot refresh).
    pub fn delta_len(&self, id: SessionId) -> Result<usize, EngineError> {
        let views = self.views();
        let view = views
            .sessions
            .get(&id)
            .ok_or(DomainError::SessionNotFound(id))?;
        Ok(view.delta_len())
    }

    /// The session's current runtime status.
    pub fn runtime_status(&self, id: SessionId) -> Option<RuntimeStatusEnvelope> {
        self.views().runtime.get(&id).cloned()
    }

    /// Subscribes to the session's future messages. A closed session's subscription yields
    /// [`LiveEvent::Closed`] first.
    pub fn subscribe(&self, id: SessionId) -> Result<Subscription, EngineError> {
        // Receiver first, then read the views: every message missing from the views is
        // published after the receiver exists, and already-seen seqs are skipped.
        let rx = self.live.receiver(id);
        let views = self.views();
        let view = views
            .sessions
            .get(&id)
            .ok_or(DomainError::SessionNotFound(id))?;
        Ok(LiveHub::finish(
            id,
            rx,
            view.last_seq(),
            !view.session.is_active(),
        ))
    }

    // ----- internals ------------------------------------------------------------------------

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn views(&self) -> RwLockReadGuard<'_, Views> {
        self.views.read().unwrap_or_else(|p| p.into_inner())
    }

    fn views_mut(&self) -> RwLockWriteGuard<'_, Views> {
        self.views.write().unwrap_or_else(|p| p.into_inner())
    }

    fn session_or_err(&self, id: SessionId) -> Result<Session, EngineError> {
        self.session(id)
            .ok_or_else(|| DomainError::SessionNotFound(id).into())
    }

    /// Fails unless the session exists; unlike `session_or_err`, copies nothing.
    fn require_session(&self, id: SessionId) -> Result<(), EngineError> {
        if self.views().sessions.contains_key(&id) {
            Ok(())
        } else {
            Err(DomainError::SessionNotFound(id).into())
        }
    }

    fn set_session(&self, session: &Session) {
        if let Some(view) = self.views_mut().sessions.get_mut(&session.id) {
            view.session = session.clone();
        }
    }

    fn put_runtime_status(
        &self,
        envelope: RuntimeStatusEnvelope,
        now: i64,
    ) -> Result<EffectSeq, EngineError> {
        let records = self.commit(
            vec![Fact::PutRuntimeStatus(envelope.clone())],
            vec![SideEffect::RuntimeStatusUpdated {
                envelope: envelope.clone(),
            }],
            now,
        )?;
        self.views_mut()
            .runtime
            .insert(envelope.session_id, envelope);
        self.emit(&records);
        Ok(records[0].seq)
    }

    fn commit(
        &self,
        facts: Vec<Fact>,
        effects: Vec<SideEffect>,
        now: i64,
    ) -> Result<Vec<EffectRecord>, EngineError> {
        self.commit_batch(&WriteBatch {
            facts,
            effects,
            committed_at_ms: now,
        })
    }

    fn commit_batch(&self, batch: &WriteBatch) -> Result<Vec<EffectRecord>, EngineError> {
        self.store.commit(batch).map_err(|e| {
            tracing::warn!(error = %e, "commit failed; nothing changed");
            EngineError::from(e)
        })
    }

    fn emit(&self, records: &[EffectRecord]) {
        for r in records {
            self.sink.emit(r);
        }
    }
}
