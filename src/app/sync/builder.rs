//! Building and opening a [`DeviceSync`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::adapters::system::{SystemClock, UuidV7Gen};
use crate::app::nonces::default_nonce_rng;
use crate::domain::ids::DeviceId;
use crate::domain::oplog::{HlcClock, OpAuthor};
use crate::ports::{Clock, IdGen, Journal, KeyProvider, LeaseCoordinator, Relay};

use super::replay::{blocking, rebuild, replay_page, Opener};
use super::{DeviceSync, NonceRng, SyncConfig, SyncError};

/// Builds a [`DeviceSync`]; production defaults for everything but the four ports.
pub struct DeviceSyncBuilder {
    journal: Arc<dyn Journal>,
    relay: Arc<dyn Relay>,
    leases: Arc<dyn LeaseCoordinator>,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    rng: NonceRng,
    device: Option<DeviceId>,
    config: SyncConfig,
}

impl std::fmt::Debug for DeviceSyncBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSyncBuilder")
            .field("device", &self.device)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DeviceSyncBuilder {
    pub(super) fn new(
        journal: Arc<dyn Journal>,
        relay: Arc<dyn Relay>,
        leases: Arc<dyn LeaseCoordinator>,
        keys: Arc<dyn KeyProvider>,
    ) -> Self {
        Self {
            journal,
            relay,
            leases,
            keys,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Gen),
            rng: default_nonce_rng(),
            device: None,
            config: SyncConfig::default(),
        }
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where a new device's id comes from (default: UUIDv7).
    #[must_use]
    pub fn ids(mut self, ids: Arc<dyn IdGen>) -> Self {
        self.ids = ids;
        self
    }

    /// The device id to persist if the journal has none yet (default: a fresh id). A journal
    /// that already has an id keeps it.
    #[must_use]
    pub fn device_candidate(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// The CSPRNG nonces are drawn from (default: ChaCha12 seeded from the operating system
    /// and reseeded from it every 64 KiB of output and after a fork).
    #[must_use]
    pub fn rng(mut self, rng: NonceRng) -> Self {
        self.rng = rng;
        self
    }

    /// Turns end-to-end encryption on or off (default on).
    #[must_use]
    pub fn e2e(mut self, on: bool) -> Self {
        self.config.e2e = on;
        self
    }

    /// How far ahead of local time a pulled op's stamp may be.
    #[must_use]
    pub fn max_drift_ms(mut self, ms: u64) -> Self {
        self.config.max_drift_ms = ms;
        self
    }

    /// All settings at once.
    #[must_use]
    pub fn config(mut self, config: SyncConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the session: reads (or persists) the device id and rebuilds the fold from the
    /// journal. Silent: nothing is sent to the relay.
    pub async fn open(self) -> Result<DeviceSync, SyncError> {
        let candidate = match self.device {
            Some(d) => d,
            None => DeviceId::from_uuid(self.ids.next_uuid())?,
        };
        let journal = Arc::clone(&self.journal);
        let keys = Arc::clone(&self.keys);
        let page = replay_page(&self.config);
        let (device, (state, frontier, base)) = blocking(move || {
            let device = journal.local_device_id(candidate)?;
            let rebuilt = rebuild(journal.as_ref(), &mut Opener::new(keys), page)?;
            Ok((device, rebuilt))
        })
        .await?;
        let clock = HlcClock::new(device).with_max_drift(self.config.max_drift_ms);
        let mut author = OpAuthor::resume(&frontier.tip(device), &clock)
            .unwrap_or_else(|| OpAuthor::new(device));
        let now = u64::try_from(self.clock.now_ms()).unwrap_or(0);
        for (_, head) in frontier.iter() {
            // Everything authored from now on sorts after everything held; a head beyond the
            // drift bound (accepted under an older clock) is simply not merged.
            let _ = author.observe(&head.hlc, now);
        }
        tracing::debug!(%device, chains = frontier.len(), "device sync opened; fold rebuilt");
        let mut session = DeviceSync {
            device,
            journal: self.journal,
            relay: self.relay,
            leases: self.leases,
            keys: self.keys,
            clock: self.clock,
            rng: self.rng,
            config: self.config,
            author,
            state,
            frontier,
            base,
            current_keys: BTreeMap::new(),
            held_back: BTreeSet::new(),
            clock_ahead_reported: false,
        };
        session.report_clock_ahead();
        Ok(session)
    }
}
