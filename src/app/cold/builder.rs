//! [`ColdConsumerBuilder`]: assembling a [`ColdConsumer`] from the ports and the database path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::adapters::sqlite::{SqliteColdStore, SqliteOptions};
use crate::adapters::system::SystemClock;
use crate::app::auth::AuthState;
use crate::app::devices::{DeviceSecrets, Devices};
use crate::app::effect_log::EffectLog;
use crate::ports::{Clock, CloudSync, SessionMetadataProvider, TokenRefresher};

use super::config::ColdConfig;
use super::consumer::{ColdConsumer, Worker};
use super::doorbell::Doorbell;
use super::error::ColdError;
use super::jitter::{Jitter, OsJitter};

/// Builds a [`ColdConsumer`]; see [`ColdConsumer::builder`].
#[derive(Debug)]
pub struct ColdConsumerBuilder {
    cloud: Arc<dyn CloudSync>,
    refresher: Arc<dyn TokenRefresher>,
    db_path: PathBuf,
    log: EffectLog,
    auth: Option<Arc<AuthState>>,
    devices: Option<Arc<Devices>>,
    metadata: Option<Arc<dyn SessionMetadataProvider>>,
    secrets: Option<DeviceSecrets>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    doorbell: Option<Arc<Doorbell>>,
    config: ColdConfig,
    options: SqliteOptions,
}

impl ColdConsumerBuilder {
    /// The auth state to run under (default: a new, signed-out one; set it through
    /// [`ColdConsumer::auth`]). Ignored when [`Self::devices`] is given: the devices' is used.
    #[must_use]
    pub fn auth(mut self, auth: Arc<AuthState>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The device service to share (default: one opened over the same database, with the
    /// secrets of [`Self::secrets`]).
    #[must_use]
    pub fn devices(mut self, devices: Arc<Devices>) -> Self {
        self.devices = Some(devices);
        self
    }

    /// Where session and repository rows come from (default: read from the database file;
    /// [`EngineMetadata`](super::EngineMetadata) serves them from the engine's views).
    #[must_use]
    pub fn metadata(mut self, metadata: Arc<dyn SessionMetadataProvider>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// This device's secret files (default: [`DeviceSecrets::beside`] the database).
    #[must_use]
    pub fn secrets(mut self, secrets: DeviceSecrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// The wall clock for timestamps and ages (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The backoff jitter source (default: the OS).
    #[must_use]
    pub fn jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// The doorbell the engine rings on commit (default: a private one; the consumer then
    /// polls every [`ColdConfig::idle_poll`]).
    #[must_use]
    pub fn doorbell(mut self, doorbell: Arc<Doorbell>) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// Settings.
    #[must_use]
    pub fn config(mut self, config: ColdConfig) -> Self {
        self.config = config;
        self
    }

    /// SQLite options for the consumer's own connection.
    #[must_use]
    pub fn sqlite_options(mut self, options: SqliteOptions) -> Self {
        self.options = options;
        self
    }

    /// Opens the consumer: its database connection and, unless given, the device service and
    /// its secret files. Blocks (SQLite, files): call it at startup or off the runtime.
    pub fn open(self) -> Result<ColdConsumer, ColdError> {
        let devices = match self.devices {
            Some(devices) => devices,
            None => {
                let store = Arc::new(SqliteColdStore::open(&self.db_path, self.options)?);
                let secrets = self
                    .secrets
                    .unwrap_or_else(|| DeviceSecrets::beside(&self.db_path));
                let auth = self.auth.unwrap_or_default();
                Arc::new(Devices::open_with(
                    Arc::clone(&self.cloud),
                    self.refresher,
                    auth,
                    store,
                    &secrets,
                    Arc::clone(&self.clock),
                )?)
            }
        };
        let store = Arc::clone(devices.keyring().store());
        let metadata = self
            .metadata
            .unwrap_or_else(|| Arc::clone(&store) as Arc<dyn SessionMetadataProvider>);
        Ok(ColdConsumer {
            cloud: self.cloud,
            log: self.log.consumer(self.config.consumer.clone()),
            devices,
            store,
            metadata,
            clock: self.clock,
            jitter: self.jitter,
            config: self.config,
            doorbell: self.doorbell.unwrap_or_default(),
            worker: tokio::sync::Mutex::new(Worker::default()),
            last_error: Mutex::new(None),
        })
    }
}

impl ColdConsumer {
    /// Starts building a consumer from the cloud port, the token refresher, the database file
    /// the engine writes, and the engine's effect log.
    pub fn builder(
        cloud: Arc<dyn CloudSync>,
        refresher: Arc<dyn TokenRefresher>,
        db_path: impl AsRef<Path>,
        log: EffectLog,
    ) -> ColdConsumerBuilder {
        ColdConsumerBuilder {
            cloud,
            refresher,
            db_path: db_path.as_ref().to_owned(),
            log,
            auth: None,
            devices: None,
            metadata: None,
            secrets: None,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(OsJitter),
            doorbell: None,
            config: ColdConfig::default(),
            options: SqliteOptions::default(),
        }
    }
}
