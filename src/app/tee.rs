//! [`OplogTee`]: the effect-log consumer that records the engine's messages as conversation ops,
//! so a session written on one device can be resumed on another.
//!
//! ```text
//!  effect log ──read after cursor──► MessageAppended ──► Store::message ──► conversation op
//!      ▲                                                    (session id, role, content,
//!      │                                                     message id)
//!      └──────── ack (cursor) ◄── journal commit (one group commit per tick) ◄──┘
//! ```
//!
//! Each [`tick`](OplogTee::tick) reads up to [`TeeConfig::batch`] effects after the tee's
//! cursor, routes them with [`route`] (only `MessageAppended` concerns the tee), loads each
//! message from the store and appends one `conversation`-surface op per message through
//! [`DeviceSync::append_batch`], all in one journal transaction. The conversation id is the
//! session id; the op payload is the turn (`role`, `text`) plus the message id under
//! [`MESSAGE_ID_FIELD`]. Then the cursor advances past the whole batch.
//!
//! # Exactly once across crashes
//!
//! The journal commit and the cursor advance are two transactions (the journal and the store
//! are separate ports), so a crash between them replays the batch. Replay cannot duplicate a
//! turn: every op carries its message id, and a tee that may be replaying (after opening, or
//! after any failed step) looks each batch's message ids up in the folded state, which
//! [`DeviceSync`] rebuilds from the journal, and skips those already recorded.
//!
//! The lookup stops once it meets a message that is not recorded yet. Batches are recorded
//! whole (one journal transaction) and in log order, and the cursor only moves forward, so
//! the messages after the cursor that the oplog already holds are always a prefix of those
//! after the cursor: everything after the first unrecorded one is new.
//!
//! Messages are grow-only history: a deleted session or message is not withdrawn from the
//! oplog (conversation ops are an event stream), and an effect whose message is gone by the
//! time the tee reads it is passed over.
//!
//! # Sharing the session
//!
//! The tee holds the [`DeviceSync`] behind an async mutex, locked for the append only; pump it
//! (or call anything else on it) through the same mutex. Run one tee per database and cursor
//! name: two tees on one cursor would each record the batch the other has not acknowledged.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::domain::backoff::Backoff;
use crate::domain::oplog::{ConversationTurn, Scope, State, Surface, Turn};
use crate::domain::routing::{route, TeeRoute};
use crate::domain::{ConsumerName, EffectRecord, EffectSeq, Message, MessageId};
use crate::ports::{Store, StoreError};

use super::cold::Doorbell;
use super::effect_log::{EffectConsumer, EffectLog};
use super::sync::{DeviceSync, SyncError};

/// The payload field that names the engine message a conversation op records.
pub const MESSAGE_ID_FIELD: &str = "message_id";

/// Settings of an [`OplogTee`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeConfig {
    /// The tee's cursor name in the effect log (default `oplog-tee`).
    pub consumer: ConsumerName,
    /// The scope conversation ops are written in (default personal: only the user's own
    /// devices can read them).
    pub scope: Scope,
    /// Most effects read and recorded per tick (default 256).
    pub batch: usize,
    /// How often an idle [`OplogTee::run`] looks at the log when no doorbell rings
    /// (default 1 s).
    pub idle_poll: Duration,
    /// The retry schedule of [`OplogTee::run`] after a failed tick (default 1 s doubling to
    /// 60 s).
    pub backoff: Backoff,
}

impl Default for TeeConfig {
    fn default() -> Self {
        Self {
            consumer: default_consumer(),
            scope: Scope::Personal,
            batch: 256,
            idle_poll: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

fn default_consumer() -> ConsumerName {
    // A constant that satisfies the name rules: not input, so it cannot fail at run time.
    ConsumerName::parse("oplog-tee").expect("`oplog-tee` is a valid consumer name")
}

/// Why a tee step failed. The cursor did not move; the step is safe to repeat.
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    /// Reading the effect log or a message, or moving the cursor, failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Recording the turns failed.
    #[error("device sync: {0}")]
    Sync(#[from] SyncError),
    /// A blocking worker did not finish (the runtime is shutting down).
    #[error("a blocking worker did not finish: {0}")]
    Worker(String),
}

impl TeeError {
    /// Whether retrying later may succeed without anyone intervening.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Sync(e) => e.is_transient(),
            Self::Worker(_) => false,
        }
    }
}

/// What one [`OplogTee::tick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeTick {
    /// Nothing after the cursor.
    Idle,
    /// The cursor advanced past a batch of effects.
    Advanced {
        /// Turns appended to the oplog.
        recorded: usize,
        /// Messages whose turn the oplog already held (a replay after a crash).
        already_recorded: usize,
        /// Effects the tee does not record, and messages no longer in the store.
        passed: usize,
        /// The new cursor position.
        through: EffectSeq,
    },
}

/// The oplog tee. See the module docs.
pub struct OplogTee {
    log: EffectConsumer,
    store: Arc<dyn Store>,
    sync: Arc<Mutex<DeviceSync>>,
    config: TeeConfig,
    doorbell: Option<Arc<Doorbell>>,
    /// Whether the tee may be replaying recorded messages, so the next tick must look its
    /// messages up in the fold before recording them. Serialises ticks, too.
    check_replay: Mutex<bool>,
}

impl std::fmt::Debug for OplogTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OplogTee")
            .field("consumer", &self.config.consumer)
            .field("scope", &self.config.scope)
            .finish_non_exhaustive()
    }
}

impl OplogTee {
    /// A tee from `store`'s effect log into `sync`, with default settings.
    pub fn new(store: Arc<dyn Store>, sync: Arc<Mutex<DeviceSync>>) -> Self {
        Self::with_config(store, sync, TeeConfig::default())
    }

    /// A tee from `store`'s effect log into `sync`.
    pub fn with_config(
        store: Arc<dyn Store>,
        sync: Arc<Mutex<DeviceSync>>,
        config: TeeConfig,
    ) -> Self {
        let log = EffectLog::new(Arc::clone(&store)).consumer(config.consumer.clone());
        Self {
            log,
            store,
            sync,
            config,
            doorbell: None,
            check_replay: Mutex::new(true),
        }
    }

    /// Wakes [`OplogTee::run`] when the engine commits (give the same doorbell to the engine
    /// as its sink, or inside a fan-out sink). Without one, `run` polls.
    #[must_use]
    pub fn doorbell(mut self, doorbell: Arc<Doorbell>) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &TeeConfig {
        &self.config
    }

    /// The device-sync session the tee writes to.
    pub fn sync(&self) -> &Arc<Mutex<DeviceSync>> {
        &self.sync
    }

    /// The last effect the tee has handled.
    pub async fn position(&self) -> Result<EffectSeq, TeeError> {
        let log = self.log.clone();
        blocking(move || Ok(log.position()?)).await
    }

    /// Effects committed but not handled yet (an upper bound: the log may have gaps).
    pub async fn lag(&self) -> Result<u64, TeeError> {
        let log = self.log.clone();
        blocking(move || Ok(log.lag()?)).await
    }

    /// Records the next batch of messages after the cursor as conversation ops, then moves
    /// the cursor past the batch. On error nothing moved and the step may simply be repeated.
    pub async fn tick(&self) -> Result<TeeTick, TeeError> {
        let mut check_replay = self.check_replay.lock().await;
        let (log, store, limit) = (
            self.log.clone(),
            Arc::clone(&self.store),
            self.config.batch.max(1),
        );
        let loaded = blocking(move || load_batch(&log, store.as_ref(), limit)).await;
        let batch = match loaded {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(TeeTick::Idle),
            Err(e) => {
                *check_replay = true;
                return Err(e);
            }
        };
        match self.record(&batch, *check_replay).await {
            Ok(tick) => {
                if let TeeTick::Advanced { recorded, .. } = tick {
                    // Past the first unrecorded message: the rest of the log is new.
                    *check_replay &= recorded == 0;
                }
                Ok(tick)
            }
            Err(e) => {
                // The journal may hold part of what this step meant to record (a commit
                // whose reply was lost): look before writing next time.
                *check_replay = true;
                Err(e)
            }
        }
    }

    /// Ticks until nothing is left after the cursor, at most `max_ticks` times; returns the
    /// turns recorded.
    pub async fn catch_up(&self, max_ticks: usize) -> Result<usize, TeeError> {
        let mut recorded = 0;
        for _ in 0..max_ticks {
            match self.tick().await? {
                TeeTick::Idle => break,
                TeeTick::Advanced { recorded: n, .. } => recorded += n,
            }
        }
        Ok(recorded)
    }

    /// Loops [`OplogTee::tick`] until `shutdown` resolves: straight on after progress, on the
    /// doorbell or every [`TeeConfig::idle_poll`] when idle, and after the
    /// [`TeeConfig::backoff`] delay after a failure.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let wait = match self.tick().await {
                Ok(TeeTick::Advanced { .. }) => {
                    failures = 0;
                    None
                }
                Ok(TeeTick::Idle) => {
                    failures = 0;
                    Some((self.config.idle_poll, true))
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = self.config.backoff.delay(failures, 0.0);
                    tracing::warn!(error = %e, ?delay, "oplog tee step failed; retrying");
                    Some((delay, false))
                }
            };
            let pause = async {
                match wait {
                    None => tokio::task::yield_now().await,
                    Some((delay, bell)) => match &self.doorbell {
                        Some(doorbell) if bell => {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                () = doorbell.rung() => {}
                            }
                        }
                        _ => tokio::time::sleep(delay).await,
                    },
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = pause => {}
            }
        }
    }

    async fn record(&self, batch: &Batch, check_replay: bool) -> Result<TeeTick, TeeError> {
        let mut entries = Vec::with_capacity(batch.messages.len());
        let mut already_recorded = 0;
        let recorded = {
            let mut sync = self.sync.lock().await;
            let held = if check_replay {
                recorded_messages(sync.state(), &batch.messages)
            } else {
                HashSet::new()
            };
            for message in &batch.messages {
                if held.contains(&message.id) {
                    already_recorded += 1;
                    continue;
                }
                entries.push((
                    self.config.scope.clone(),
                    Surface::Conversation,
                    turn_payload(message),
                ));
            }
            sync.append_batch(entries).await?.len()
        };
        let (log, through) = (self.log.clone(), batch.through);
        blocking(move || Ok(log.ack(through)?)).await?;
        tracing::debug!(
            recorded,
            already_recorded,
            %through,
            "oplog tee recorded turns"
        );
        Ok(TeeTick::Advanced {
            recorded,
            already_recorded,
            passed: batch.passed,
            through,
        })
    }
}

/// One step's effects: the messages to record, in log order.
struct Batch {
    messages: Vec<Message>,
    passed: usize,
    through: EffectSeq,
}

/// Reads the effects after the cursor and loads the messages they name; `None` when there is
/// nothing after the cursor.
fn load_batch(
    log: &EffectConsumer,
    store: &dyn Store,
    limit: usize,
) -> Result<Option<Batch>, TeeError> {
    let effects: Vec<EffectRecord> = log.read(limit)?;
    let Some(through) = effects.last().map(|r| r.seq) else {
        return Ok(None);
    };
    let mut messages = Vec::new();
    let mut passed = 0;
    for record in &effects {
        match route(&record.effect).tee {
            TeeRoute::RecordTurn { message_id, .. } => match store.message(message_id)? {
                Some(message) => messages.push(message),
                // Deleted since: nothing left to replicate.
                None => passed += 1,
            },
            TeeRoute::Skip => passed += 1,
        }
    }
    Ok(Some(Batch {
        messages,
        passed,
        through,
    }))
}

/// The conversation op payload recording `message`.
fn turn_payload(message: &Message) -> Value {
    let mut payload = ConversationTurn {
        conversation_id: message.session_id.to_string(),
        turn: Turn::text(message.role, message.content.as_str()),
    }
    .to_payload();
    if let Value::Object(fields) = &mut payload {
        fields.insert(
            MESSAGE_ID_FIELD.to_owned(),
            Value::from(message.id.to_string()),
        );
    }
    payload
}

/// Which of `messages` the fold already holds a conversation op for.
fn recorded_messages(state: &State, messages: &[Message]) -> HashSet<MessageId> {
    let wanted: HashSet<String> = messages.iter().map(|m| m.id.to_string()).collect();
    state
        .events(&Surface::Conversation)
        .filter_map(|e| e.payload.parse::<NamedMessage>().ok()?.message_id)
        .filter(|id| wanted.contains(id))
        .filter_map(|id| MessageId::parse(&id).ok())
        .collect()
}

/// The message a conversation payload names, if it names one.
#[derive(serde::Deserialize)]
struct NamedMessage {
    message_id: Option<String>,
}

/// Runs store work on tokio's blocking pool. A panic in `work` is resumed on the caller.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TeeError> + Send + 'static,
) -> Result<T, TeeError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(TeeError::Worker(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use uuid::Uuid;

    use super::*;
    use crate::adapters::faults::CursorFaults;
    use crate::adapters::keys::StaticKeyProvider;
    use crate::adapters::memory::{InMemoryLeaseCoordinator, MemoryRelay};
    use crate::adapters::sqlite::{SqliteJournal, SqliteOptions, SqliteStore};
    use crate::adapters::system::ManualClock;
    use crate::app::Engine;
    use crate::domain::crypto::{KeyEpoch, SessionKey};
    use crate::domain::ids::DeviceId;
    use crate::domain::oplog::ResumeMessage;
    use crate::domain::{NewMessage, Role};
    use crate::ports::{Journal, KeyProvider, LeaseCoordinator, Relay};

    const T0: i64 = 1_700_000_000_000;

    struct World {
        relay: Arc<dyn Relay>,
        leases: Arc<dyn LeaseCoordinator>,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<ManualClock>,
    }

    impl World {
        fn new() -> Self {
            let clock = Arc::new(ManualClock::new(T0));
            Self {
                relay: Arc::new(MemoryRelay::new()),
                leases: Arc::new(InMemoryLeaseCoordinator::new(clock.clone())),
                keys: Arc::new(StaticKeyProvider::new().with_key(
                    Scope::Personal,
                    KeyEpoch::FIRST,
                    SessionKey::from_bytes([7; 32]),
                )),
                clock,
            }
        }

        async fn device(&self, n: u128, journal: Arc<dyn Journal>) -> DeviceSync {
            DeviceSync::builder(
                journal,
                Arc::clone(&self.relay),
                Arc::clone(&self.leases),
                Arc::clone(&self.keys),
            )
            .clock(self.clock.clone())
            .device_candidate(DeviceId::from_uuid(Uuid::from_u128(n)).unwrap())
            .open()
            .await
            .unwrap()
        }
    }

    fn memory_journal() -> Arc<dyn Journal> {
        Arc::new(SqliteJournal::open_in_memory(SqliteOptions::default()).unwrap())
    }

    fn conversation() -> Vec<NewMessage> {
        vec![
            NewMessage::new(Role::User, "Why does the upload test flake?"),
            NewMessage::new(Role::Assistant, "It sleeps instead of awaiting the ack."),
            NewMessage::new(Role::User, "Fix it."),
            NewMessage::new(Role::Assistant, "Done: it waits on the ack channel."),
        ]
    }

    fn as_resumed(messages: &[NewMessage]) -> Vec<ResumeMessage> {
        messages
            .iter()
            .map(|m| ResumeMessage {
                role: m.role,
                text: m.content.clone(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            })
            .collect()
    }

    fn open_file_store(path: &Path) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(path, SqliteOptions::default()).unwrap())
    }

    #[tokio::test]
    async fn messages_written_on_one_device_resume_on_another() {
        let world = World::new();
        let store = Arc::new(SqliteStore::open_in_memory(SqliteOptions::default()).unwrap());
        let engine = Engine::builder(store.clone()).open().unwrap();
        let repo = engine.create_repository("r", None).unwrap();
        let session = engine.create_session(repo.id, "s").unwrap();
        engine.append_messages(session.id, conversation()).unwrap();

        let a = Arc::new(Mutex::new(world.device(1, memory_journal()).await));
        let mut b = world.device(2, memory_journal()).await;
        let tee = OplogTee::new(store.clone(), Arc::clone(&a));
        let first = tee.tick().await.unwrap();
        let head = engine.effect_log().head().unwrap();
        assert_eq!(
            first,
            TeeTick::Advanced {
                recorded: 4,
                already_recorded: 0,
                passed: 2,
                through: head
            },
            "repository and session creation are passed over"
        );
        assert_eq!(tee.tick().await.unwrap(), TeeTick::Idle);
        assert_eq!(
            (tee.position().await.unwrap(), tee.lag().await.unwrap()),
            (head, 0)
        );

        a.lock().await.pump().await.unwrap();
        b.pump().await.unwrap();
        let (resumed, report) = b.resume(&session.id.to_string());
        assert_eq!(resumed, as_resumed(&conversation()));
        assert_eq!(report, Default::default(), "nothing to repair");
        assert_eq!(b.state_hash(), a.lock().await.state_hash());
        // Every op names the message it records.
        let ids: Vec<String> = b
            .state()
            .events(&Surface::Conversation)
            .map(|e| {
                e.payload.to_value()[MESSAGE_ID_FIELD]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let expected: Vec<String> = engine
            .transcript(session.id)
            .unwrap()
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn a_batch_replayed_after_a_crash_before_the_cursor_moved_is_not_recorded_twice() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let world = World::new();
        let store = open_file_store(&db);
        let engine = Engine::builder(store.clone()).open().unwrap();
        let repo = engine.create_repository("r", None).unwrap();
        let session = engine.create_session(repo.id, "s").unwrap();
        engine.append_messages(session.id, conversation()).unwrap();

        // The journal commits, the cursor advance fails: the state a crash between the two
        // leaves behind.
        let flaky = Arc::new(CursorFaults::new(store.clone()));
        flaky.fail_next_advances(1);
        let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::beside(&store).unwrap());
        let a = Arc::new(Mutex::new(world.device(1, journal).await));
        let tee = OplogTee::new(flaky.clone(), Arc::clone(&a));
        assert!(matches!(
            tee.tick().await,
            Err(TeeError::Store(StoreError::Busy))
        ));
        assert_eq!(tee.position().await.unwrap(), EffectSeq::ZERO);
        assert_eq!(a.lock().await.transcript(&session.id.to_string()).len(), 4);

        // The same tee retries: it looks before writing.
        let retried = tee.tick().await.unwrap();
        assert!(matches!(
            retried,
            TeeTick::Advanced {
                recorded: 0,
                already_recorded: 4,
                ..
            }
        ));

        // A crash: everything dropped, reopened from the file, the cursor moved back to where
        // a crash before the advance would have left it (a fresh cursor name starts there).
        let before = a.lock().await.state_hash();
        drop((tee, a, flaky, engine, store));
        let store = open_file_store(&db);
        let engine = Engine::builder(store.clone()).open().unwrap();
        let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::beside(&store).unwrap());
        let a = Arc::new(Mutex::new(world.device(1, journal).await));
        assert_eq!(
            a.lock().await.state_hash(),
            before,
            "rebuilt from the journal"
        );
        let config = TeeConfig {
            consumer: ConsumerName::parse("oplog-tee.replay").unwrap(),
            batch: 3,
            ..TeeConfig::default()
        };
        let tee = OplogTee::with_config(store.clone(), Arc::clone(&a), config);
        engine
            .append_message(session.id, NewMessage::new(Role::User, "And the CI?"))
            .unwrap();
        let mut recorded = 0;
        let mut already = 0;
        for _ in 0..10 {
            match tee.tick().await.unwrap() {
                TeeTick::Idle => break,
                TeeTick::Advanced {
                    recorded: r,
                    already_recorded: s,
                    ..
                } => {
                    recorded += r;
                    already += s;
                }
            }
        }
        assert_eq!((recorded, already), (1, 4));
        let turns = a.lock().await.transcript(&session.id.to_string());
        assert_eq!(turns.len(), 5);
        assert_eq!(turns[4], Turn::text(Role::User, "And the CI?"));
    }

    #[tokio::test]
    async fn messages_gone_from_the_store_are_passed_over() {
        let world = World::new();
        let store = Arc::new(SqliteStore::open_in_memory(SqliteOptions::default()).unwrap());
        let engine = Engine::builder(store.clone()).open().unwrap();
        let repo = engine.create_repository("r", None).unwrap();
        let gone = engine.create_session(repo.id, "gone").unwrap();
        engine.append_messages(gone.id, conversation()).unwrap();
        engine.delete_session(gone.id).unwrap();
        let a = Arc::new(Mutex::new(world.device(1, memory_journal()).await));
        let tee = OplogTee::new(store, Arc::clone(&a));
        assert_eq!(tee.catch_up(10).await.unwrap(), 0);
        assert_eq!(tee.lag().await.unwrap(), 0);
        assert!(a.lock().await.state().is_empty());
    }

    #[tokio::test]
    async fn run_records_what_the_engine_commits_until_shut_down() {
        let world = World::new();
        let store = Arc::new(SqliteStore::open_in_memory(SqliteOptions::default()).unwrap());
        let doorbell = Arc::new(Doorbell::new());
        let engine = Engine::builder(store.clone())
            .sink(doorbell.clone())
            .open()
            .unwrap();
        let repo = engine.create_repository("r", None).unwrap();
        let session = engine.create_session(repo.id, "s").unwrap();
        let a = Arc::new(Mutex::new(world.device(1, memory_journal()).await));
        let tee = Arc::new(OplogTee::new(store, Arc::clone(&a)).doorbell(doorbell));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = {
            let tee = Arc::clone(&tee);
            tokio::spawn(async move {
                tee.run(async {
                    let _ = stopped.await;
                })
                .await;
            })
        };
        engine.append_messages(session.id, conversation()).unwrap();
        let conversation_id = session.id.to_string();
        // Wait (bounded) for the condition: the doorbell wakes the idle tee at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while tokio::time::Instant::now() < deadline {
            seen = a.lock().await.transcript(&conversation_id).len();
            if seen == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen, 4);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("run stops on shutdown")
            .unwrap();
    }
}
