//! One device against the real PostgREST: an engine over its own SQLite file, the cold
//! consumer draining it, and the device service sharing the consumer's keyring.

// A shared helper: not every test uses every function.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use uuid::Uuid;

use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::adapters::supabase::{SupabaseCloudSync, SupabaseConfig, SupabaseTimeouts};
use tandem::app::cold::{ColdConfig, ColdConsumer, Doorbell, EngineMetadata, Jitter, TickOutcome};
use tandem::app::devices::CloudReader;
use tandem::app::Engine;
use tandem::domain::{ConsumerName, DeviceId, Message, NewMessage, Repository, Role, Session};
use tandem::ports::{
    AccessToken, AuthContext, AuthError, CloudSync, RefreshToken, TokenPair, TokenRefresher,
};

use crate::cloud_live::services::{LiveServices, TestUser};

/// Most steps one drain may take (a bound, far above what any test needs).
const MAX_STEPS: usize = 100_000;

/// A refresher for tests that must not refresh: counts calls and refuses.
#[derive(Debug, Default)]
pub struct NoRefresh {
    calls: AtomicUsize,
}

impl NoRefresh {
    /// How often it was asked.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenRefresher for NoRefresh {
    async fn refresh(&self, _: &RefreshToken) -> Result<TokenPair, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(AuthError::Rejected("this test never refreshes".into()))
    }
}

/// Backoff jitter drawn from a seeded generator.
#[derive(Debug)]
pub struct SeededJitter(Mutex<StdRng>);

impl SeededJitter {
    /// Jitter from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Jitter for SeededJitter {
    fn sample(&self) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gen_range(0.0..1.0)
    }
}

/// How to build a [`LiveDevice`].
pub struct DeviceSetup {
    /// The PostgREST root the consumer talks to (the real one, or a proxy in front of it).
    pub base_url: String,
    /// Client timeouts.
    pub timeouts: SupabaseTimeouts,
    /// Consumer settings.
    pub config: ColdConfig,
    /// Backoff jitter.
    pub jitter: Arc<dyn Jitter>,
    /// The token refresher.
    pub refresher: Arc<dyn TokenRefresher>,
}

impl DeviceSetup {
    /// Straight to the real PostgREST, default timeouts, a quick flush, no refresh.
    pub fn direct(live: &LiveServices) -> Self {
        Self::via(&live.postgrest_url)
    }

    /// Through `base_url`, otherwise like [`direct`](Self::direct).
    pub fn via(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            timeouts: SupabaseTimeouts::default(),
            config: ColdConfig {
                flush_interval: Duration::from_millis(50),
                ..ColdConfig::default()
            },
            jitter: Arc::new(SeededJitter::new(0)),
            refresher: Arc::new(NoRefresh::default()),
        }
    }

    /// The cloud adapter this setup describes.
    pub fn cloud(&self) -> SupabaseCloudSync {
        let config = SupabaseConfig::postgrest(&self.base_url)
            .expect("a base URL")
            .with_timeouts(self.timeouts);
        SupabaseCloudSync::new(config).expect("build the cloud adapter")
    }
}

/// A device signed in as one user.
pub struct LiveDevice {
    /// This device's id.
    pub id: DeviceId,
    /// The user's token as the device was signed in.
    pub token: AccessToken,
    /// Holds the database and the secret files.
    pub dir: tempfile::TempDir,
    /// The engine.
    pub engine: Arc<Engine>,
    /// The cold consumer (its device service is `consumer.devices()`).
    pub consumer: Arc<ColdConsumer>,
    /// The cloud adapter the consumer uses.
    pub cloud: Arc<SupabaseCloudSync>,
    refresher: Arc<dyn TokenRefresher>,
}

/// An auth context for `device` acting as `user` with `token`.
pub fn context(
    user: &TestUser,
    device: DeviceId,
    token: AccessToken,
    refresh: &str,
) -> AuthContext {
    AuthContext {
        access_token: token,
        refresh_token: RefreshToken::new(refresh),
        user_id: user.id,
        device_id: device,
    }
}

impl LiveDevice {
    /// A fresh device of `user`, signed in with the user's token.
    pub fn open(user: &TestUser, setup: DeviceSetup) -> Self {
        Self::open_with_token(user, user.token.clone(), "refresh-token-unused", setup)
    }

    /// A fresh device of `user`, signed in with `token` and `refresh`.
    pub fn open_with_token(
        user: &TestUser,
        token: AccessToken,
        refresh: &str,
        setup: DeviceSetup,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = DeviceId::from_uuid(Uuid::new_v4()).expect("v4 is never nil");
        let path = dir.path().join("tandem.db");
        let cloud = Arc::new(setup.cloud());
        let doorbell = Arc::new(Doorbell::new());
        let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("store"));
        let engine = Arc::new(
            Engine::builder(store)
                .device(id)
                .sink(doorbell.clone())
                .open()
                .expect("engine"),
        );
        let consumer = ColdConsumer::builder(
            cloud.clone() as Arc<dyn CloudSync>,
            Arc::clone(&setup.refresher),
            &path,
            engine.effect_log(),
        )
        .metadata(Arc::new(EngineMetadata::new(Arc::clone(&engine))))
        .jitter(setup.jitter)
        .doorbell(doorbell)
        .config(setup.config)
        .open()
        .expect("consumer");
        consumer
            .auth()
            .set(context(user, id, token.clone(), refresh));
        Self {
            id,
            token,
            dir,
            engine,
            consumer: Arc::new(consumer),
            cloud,
            refresher: setup.refresher,
        }
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tandem.db")
    }

    /// Registers this device (name and public keys) in the cloud.
    pub async fn register(&self) {
        self.consumer
            .devices()
            .register(&format!("device {}", self.id), "linux")
            .await
            .expect("register the device");
    }

    /// A repository with one session.
    pub fn session(&self, title: &str) -> (Repository, Session) {
        let repo = self.engine.create_repository(title, None).expect("repo");
        let session = self.engine.create_session(repo.id, title).expect("session");
        (repo, session)
    }

    /// Appends `texts` to `session` in one commit and returns the messages.
    pub fn append(&self, session: &Session, texts: &[String]) -> Vec<Arc<Message>> {
        self.engine
            .append_messages(
                session.id,
                texts
                    .iter()
                    .map(|t| NewMessage::new(Role::Assistant, t.clone()))
                    .collect(),
            )
            .expect("append")
    }

    /// A reader acting as this device.
    pub fn reader(&self) -> CloudReader {
        CloudReader::new(Arc::clone(self.consumer.devices()))
    }

    /// A second cold consumer over the same database, secrets and device identity, with its
    /// own cursor `name` (so it sends the whole log again), talking to the same cloud.
    pub fn second_consumer(&self, name: &str) -> ColdConsumer {
        ColdConsumer::builder(
            self.cloud.clone() as Arc<dyn CloudSync>,
            Arc::clone(&self.refresher),
            self.path(),
            self.engine.effect_log(),
        )
        .auth(Arc::clone(self.consumer.auth()))
        .metadata(Arc::new(EngineMetadata::new(Arc::clone(&self.engine))))
        .config(ColdConfig {
            consumer: ConsumerName::parse(name).expect("consumer name"),
            flush_interval: Duration::from_millis(50),
            ..ColdConfig::default()
        })
        .open()
        .expect("second consumer")
    }

    /// Drains this device's consumer; see [`drain`].
    pub async fn drain(&self, budget: Duration) -> Result<Vec<TickOutcome>, String> {
        drain(&self.consumer, budget).await
    }
}

/// Steps `consumer` as its `run` loop would, waiting for the batch windows and retry times it
/// reports, until nothing is left after its cursor. Fails when a step reports no auth context
/// or when `budget` runs out. Returns every step's outcome.
pub async fn drain(consumer: &ColdConsumer, budget: Duration) -> Result<Vec<TickOutcome>, String> {
    let deadline = Instant::now() + budget;
    let mut outcomes = Vec::new();
    for _ in 0..MAX_STEPS {
        if Instant::now() >= deadline {
            return Err(format!(
                "not drained within {budget:?}; last outcomes: {:?}",
                &outcomes[outcomes.len().saturating_sub(5)..]
            ));
        }
        let outcome = consumer.tick().await;
        let wait = match &outcome {
            TickOutcome::Idle => {
                outcomes.push(outcome);
                return Ok(outcomes);
            }
            TickOutcome::NoContext => return Err("the consumer has no auth context".into()),
            TickOutcome::Batching { until } | TickOutcome::BackingOff { until } => Some(*until),
            TickOutcome::Failed { retry_at, .. } => Some(*retry_at),
            TickOutcome::Skipped { .. }
            | TickOutcome::Delivered { .. }
            | TickOutcome::DeadLettered { .. } => None,
        };
        outcomes.push(outcome);
        if let Some(until) = wait {
            tokio::time::sleep_until(until.min(deadline)).await;
        }
    }
    Err(format!("not drained within {MAX_STEPS} steps"))
}

/// `count` message texts, each carrying `marker`, of varied lengths and scripts.
pub fn texts(marker: &str, count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let words = [
        "build",
        "linker",
        "ünïcødé",
        "テスト",
        "🦀",
        "retry",
        "commit",
        "\"quoted\"",
        "back\\slash",
        "new\nline",
    ];
    (0..count)
        .map(|i| {
            let extra = (0..rng.gen_range(0..40))
                .map(|_| words[rng.gen_range(0..words.len())])
                .collect::<Vec<_>>()
                .join(" ");
            format!("{marker} #{i}: {extra}")
        })
        .collect()
}
