//! The application layer: the only place that composes ports and adapters.

pub mod auth;
pub mod cold;
pub mod crash_writer;
pub mod demo;
pub mod devices;
pub mod effect_log;
pub mod engine;
pub mod nonces;
pub mod sync;
pub mod sync_cli;
pub mod tee;

pub use auth::{AuthState, AuthedCallError, RefreshError};
pub use effect_log::{EffectConsumer, EffectLog};
pub use engine::{
    Engine, EngineBuilder, EngineConfig, EngineError, LiveEvent, StatusUpdate, Subscription,
};
pub use nonces::{default_nonce_rng, NonceRng};
pub use sync::{DeviceSync, DeviceSyncBuilder, PumpReport, SyncConfig, SyncError, SyncStatus};
pub use tee::{OplogTee, TeeConfig, TeeError, TeeTick};
