//! Devices for the cold-path tests: an engine, a cold consumer and secrets per device, all
//! talking to one fake cloud, with a fixed wall clock so only tokio time decides windows.
//! The consumer reads its effect log through [`CursorFaults`], which can make chosen cursor
//! commits fail (as a busy database would, or as a crash before the commit leaves it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use tandem::adapters::faults::CursorFaults;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::adapters::system::ManualClock;
use tandem::app::cold::{ColdConfig, ColdConsumer, Doorbell, EngineMetadata, FixedJitter};
use tandem::app::devices::CloudReader;
use tandem::app::{EffectLog, Engine};
use tandem::domain::{DeviceId, EffectSeq, Repository, Session, SessionId, UserId};
use tandem::ports::{AccessToken, AuthContext, AuthError, RefreshToken, TokenPair, TokenRefresher};

use super::fake_cloud::FakeCloud;

/// The wall-clock time every device reads.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// The user all devices belong to.
pub fn user() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0xface)).unwrap()
}

pub fn device_id(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(0xde00 + n)).unwrap()
}

pub fn context(device: DeviceId, access: &str) -> AuthContext {
    AuthContext {
        access_token: AccessToken::new(access),
        refresh_token: RefreshToken::new(format!("refresh-for-{access}")),
        user_id: user(),
        device_id: device,
    }
}

/// Hands out the configured pairs in order and counts the calls.
#[derive(Debug, Default)]
pub struct FakeRefresher {
    pairs: Mutex<Vec<(String, String)>>,
    calls: AtomicUsize,
}

impl FakeRefresher {
    pub fn issuing(pairs: &[(&str, &str)]) -> Self {
        let mut pairs: Vec<_> = pairs
            .iter()
            .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
            .collect();
        pairs.reverse();
        Self {
            pairs: Mutex::new(pairs),
            calls: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenRefresher for FakeRefresher {
    async fn refresh(&self, _: &RefreshToken) -> Result<TokenPair, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.pairs.lock().unwrap().pop();
        match next {
            Some((access, refresh)) => Ok(TokenPair {
                access_token: AccessToken::new(access),
                refresh_token: RefreshToken::new(refresh),
                expires_at_ms: None,
            }),
            None => Err(AuthError::Rejected("no more tokens".into())),
        }
    }
}

/// One device: database, engine, cold consumer.
pub struct Device {
    pub id: DeviceId,
    pub dir: tempfile::TempDir,
    pub engine: Arc<Engine>,
    pub consumer: Arc<ColdConsumer>,
    /// The consumer's view of the store (faults last until the next restart).
    pub cursor: Arc<CursorFaults>,
    pub cloud: Arc<FakeCloud>,
    pub refresher: Arc<FakeRefresher>,
}

impl Device {
    /// A device signed in with token `token`.
    pub fn new(cloud: &Arc<FakeCloud>, n: u128) -> Self {
        Self::with(cloud, n, Arc::new(FakeRefresher::default()), Some("token"))
    }

    /// A device with the given refresher and initial token (none: signed out).
    pub fn with(
        cloud: &Arc<FakeCloud>,
        n: u128,
        refresher: Arc<FakeRefresher>,
        token: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = device_id(n);
        let (engine, consumer, cursor) = open(&dir.path().join("tandem.db"), id, cloud, &refresher);
        if let Some(token) = token {
            consumer.auth().set(context(id, token));
        }
        Self {
            id,
            dir,
            engine,
            consumer,
            cursor,
            cloud: Arc::clone(cloud),
            refresher,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tandem.db")
    }

    /// Drops engine and consumer and opens both again from the same files (a restart).
    pub fn restart(&mut self) {
        let auth = self.consumer.auth().current();
        let (engine, consumer, cursor) = open(&self.path(), self.id, &self.cloud, &self.refresher);
        if let Some(auth) = auth {
            consumer.auth().set(auth);
        }
        self.engine = engine;
        self.consumer = consumer;
        self.cursor = cursor;
    }

    /// A repository with one session.
    pub fn session(&self) -> (Repository, Session) {
        let repo = self.engine.create_repository("repo", None).unwrap();
        let session = self.engine.create_session(repo.id, "work").unwrap();
        (repo, session)
    }

    pub async fn register(&self) {
        self.consumer
            .devices()
            .register(&format!("device {}", self.id), "linux")
            .await
            .expect("register");
    }

    pub fn reader(&self) -> CloudReader {
        CloudReader::new(Arc::clone(self.consumer.devices()))
    }

    /// Every message of `session` this device reads back from the cloud, in seq order, as
    /// text; every page must open completely. Bounded at 10 pages of 64.
    pub async fn read_back(&self, session: SessionId) -> Vec<String> {
        let reader = self.reader();
        let mut read = Vec::new();
        let mut after = 0;
        for _ in 0..10 {
            let page = reader.read(session, after, 64).await.unwrap();
            assert!(page.unreadable.is_empty());
            read.extend(page.opened.iter().map(|m| m.content.to_string()));
            match page.last_seq {
                Some(last) => after = last,
                None => break,
            }
        }
        read
    }

    /// Starts `run` in a task.
    pub fn start(&self) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let consumer = Arc::clone(&self.consumer);
        let handle = tokio::spawn(async move {
            consumer
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Running { stop, handle }
    }

    pub fn head(&self) -> EffectSeq {
        self.engine.effect_log().head().unwrap()
    }
}

fn open(
    path: &Path,
    id: DeviceId,
    cloud: &Arc<FakeCloud>,
    refresher: &Arc<FakeRefresher>,
) -> (Arc<Engine>, Arc<ColdConsumer>, Arc<CursorFaults>) {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let doorbell = Arc::new(Doorbell::new());
    let store = Arc::new(SqliteStore::open(path, SqliteOptions::default()).expect("store"));
    let cursor = Arc::new(CursorFaults::new(store.clone()));
    let engine = Arc::new(
        Engine::builder(store)
            .device(id)
            .clock(clock.clone())
            .sink(doorbell.clone())
            .open()
            .expect("engine"),
    );
    let log = EffectLog::new(cursor.clone());
    let consumer = ColdConsumer::builder(cloud.clone(), refresher.clone(), path, log)
        .metadata(Arc::new(EngineMetadata::new(Arc::clone(&engine))))
        .clock(clock)
        .jitter(Arc::new(FixedJitter(0.0)))
        .doorbell(doorbell)
        .config(ColdConfig::default())
        .open()
        .expect("consumer");
    (engine, Arc::new(consumer), cursor)
}

/// A running consumer loop.
pub struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Asks the loop to stop after its current step and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(3600), self.handle)
            .await
            .expect("the loop stops")
            .expect("the loop did not panic");
    }
}
