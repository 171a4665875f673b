//! The `Store` port: the single durable source of truth for sessions, messages, runtime
//! status, the effect log and consumer cursors.
//!
//! # Contract
//!
//! Every clause below has a conformance test of the same name in
//! [`conformance::store`](crate::ports::conformance::store), run against every adapter.
//!
//! - `commit_is_atomic`: [`Store::commit`] MUST apply every fact and append every effect of a
//!   [`WriteBatch`], or none of them. A failed commit MUST leave no trace.
//! - `effect_seqs_strictly_increase`: effect records MUST receive strictly increasing
//!   [`EffectSeq`]s in commit order, across reopen. Consumers MUST NOT assume the log is gap-free.
//! - `message_seqs_are_contiguous`: an appended message MUST carry `seq = last + 1` for its
//!   session (starting at 1); any other seq MUST fail with [`StoreError::SeqConflict`].
//! - `append_to_closed_session_fails`: appending to a closed session MUST fail with
//!   [`DomainError::SessionClosed`]; to an unknown session with [`DomainError::SessionNotFound`].
//! - `duplicate_ids_are_refused`: inserting an existing repository, session or message id MUST
//!   fail with the matching `*Exists`/`DuplicateMessage` error.
//! - `session_requires_repository`: inserting a session of an unknown repository MUST fail with
//!   [`DomainError::RepositoryNotFound`].
//! - `delete_cascades`: deleting a repository MUST delete its sessions, their messages and
//!   runtime status; deleting a session MUST delete its messages and runtime status.
//! - `load_returns_everything_committed`: [`Store::load`] MUST return exactly the committed
//!   repositories, sessions (with messages in seq order) and runtime statuses.
//! - `effects_after_pages_in_order`: [`Store::effects_after`] MUST return records with
//!   `seq > after`, in increasing order, at most `limit` of them.
//! - `cursors_are_independent`: each consumer's cursor starts at [`EffectSeq::ZERO`] and moves
//!   only through its own [`Store::advance_cursor`].
//! - `cursor_never_moves_backwards`: advancing to a lower position MUST fail with
//!   [`StoreError::CursorRegression`]; advancing to the current position is a no-op.
//! - `cursor_cannot_pass_the_head`: advancing beyond [`Store::effect_head`] MUST fail with
//!   [`StoreError::CursorBeyondHead`].
//! - `messages_after_pages_in_order`: [`Store::messages_after`] MUST return a session's
//!   messages with `seq > after` in seq order, at most `limit`.
//! - `local_device_id_is_sticky`: [`Store::local_device_id`] MUST persist the first candidate and
//!   return it for every later call, whatever candidate is passed.
//!
//! Implementations MAY block (SQLite is synchronous); async callers move them off the runtime.

use std::fmt::Debug;

use crate::domain::{
    ConsumerName, DeviceId, DomainError, EffectRecord, EffectSeq, Message, MessageId, Repository,
    RepositoryId, RuntimeStatusEnvelope, Seq, Session, SessionId, SideEffect,
};

/// One durable change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// Insert a new repository.
    InsertRepository(Repository),
    /// Delete a repository and everything in it.
    DeleteRepository(RepositoryId),
    /// Insert a new session.
    InsertSession(Session),
    /// Replace a session's metadata (title, status, timestamps).
    UpdateSession(Session),
    /// Delete a session and its messages.
    DeleteSession(SessionId),
    /// Append one message at the next seq of its session.
    AppendMessage(Message),
    /// Set the session's runtime status (the caller has already applied newest-wins).
    PutRuntimeStatus(RuntimeStatusEnvelope),
}

/// Facts and the effects they cause, committed together in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Facts, applied in order.
    pub facts: Vec<Fact>,
    /// Effects, appended to the log in order.
    pub effects: Vec<SideEffect>,
    /// Commit time stamped on each effect record, in Unix milliseconds.
    pub committed_at_ms: i64,
}

/// Everything a store holds, as loaded at open or refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreContents {
    /// All repositories.
    pub repositories: Vec<Repository>,
    /// All sessions, each with its messages in seq order.
    pub sessions: Vec<(Session, Vec<Message>)>,
    /// The current runtime status of each session that has one.
    pub runtime_statuses: Vec<RuntimeStatusEnvelope>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write broke a domain rule (unknown or closed session, duplicate id, ...).
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// A message seq was not the next one of its session.
    #[error("session {session} expects seq {expected}, got {got}")]
    SeqConflict {
        /// The session.
        session: SessionId,
        /// The seq the store would accept.
        expected: Seq,
        /// The seq offered.
        got: Seq,
    },
    /// A consumer tried to move its cursor backwards.
    #[error(
        "cursor of consumer {consumer} is at {current}; refusing to move it back to {requested}"
    )]
    CursorRegression {
        /// The consumer.
        consumer: ConsumerName,
        /// Where it is.
        current: EffectSeq,
        /// Where it asked to go.
        requested: EffectSeq,
    },
    /// A consumer tried to move its cursor past the last committed effect.
    #[error("cursor of consumer {consumer} cannot pass the log head {head} (asked {requested})")]
    CursorBeyondHead {
        /// The consumer.
        consumer: ConsumerName,
        /// The newest committed effect.
        head: EffectSeq,
        /// Where it asked to go.
        requested: EffectSeq,
    },
    /// The disk (or the configured page quota) is full; retry once space is available.
    #[error("storage is full")]
    DiskFull,
    /// The database stayed locked by another connection past the busy timeout.
    #[error("storage is busy (locked by another connection)")]
    Busy,
    /// The database file is damaged or not a tandem database.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// The schema or a setting is not what this version of tandem requires.
    #[error("storage is incompatible: {0}")]
    Incompatible(String),
    /// Stored data could not be decoded into domain values.
    #[error("stored data is invalid: {0}")]
    Decode(String),
    /// Any other backend failure.
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (full disk, busy database).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::DiskFull | Self::Busy)
    }
}

/// The durable store. See the module docs for the contract.
pub trait Store: Send + Sync + Debug + 'static {
    /// Loads everything (recovery and snapshot refresh).
    fn load(&self) -> Result<StoreContents, StoreError>;

    /// Atomically applies `batch.facts` and appends `batch.effects`; returns the effect records
    /// in order.
    fn commit(&self, batch: &WriteBatch) -> Result<Vec<EffectRecord>, StoreError>;

    /// A session's messages with `seq > after`, in order, at most `limit`.
    fn messages_after(
        &self,
        session: SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// One message by id.
    fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError>;

    /// Effect records with `seq > after`, in order, at most `limit`.
    fn effects_after(
        &self,
        after: EffectSeq,
        limit: usize,
    ) -> Result<Vec<EffectRecord>, StoreError>;

    /// The seq of the newest committed effect ([`EffectSeq::ZERO`] when the log is empty).
    fn effect_head(&self) -> Result<EffectSeq, StoreError>;

    /// A consumer's cursor: the last effect it has fully handled.
    fn cursor(&self, consumer: &ConsumerName) -> Result<EffectSeq, StoreError>;

    /// Moves a consumer's cursor forward to `to` (durably).
    fn advance_cursor(&self, consumer: &ConsumerName, to: EffectSeq) -> Result<(), StoreError>;

    /// Every consumer that has a cursor, with its position.
    fn cursors(&self) -> Result<Vec<(ConsumerName, EffectSeq)>, StoreError>;

    /// The persisted id of this device; `candidate` is persisted on first use.
    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, StoreError>;
}
