//! This device among the user's devices: identity, registration, session-key distribution,
//! revocation with key rotation, and reading sealed messages back from the cloud.
//!
//! ```text
//!   DeviceSecrets ── identity (X25519 + Ed25519) ──┐
//!                 └─ device-local key ── Keyring ──┼── Devices ── register / distribute
//!                                      (session_keys, sealed at rest)      revoke / receive_keys
//!                                                  └── CloudReader ── fetch + open messages
//! ```
//!
//! The cold consumer ([`crate::app::cold`]) seals with the [`Keyring`]'s newest key of each
//! session and asks [`Devices`] to distribute a key before the first message sealed with it
//! leaves the device.
//!
//! # Not handled here
//!
//! - A session written on several devices: each device that uploads a session's messages
//!   without holding a key creates its own generation 1. Agreeing on one key per session is
//!   left to device sync (the oplog), which knows where a session was created.
//! - A device registered after a key was distributed does not receive that key until the
//!   owner distributes again ([`Devices::distribute`] is idempotent per recipient).

mod error;
mod keyring;
mod reader;
mod secrets;
mod service;

pub use error::DevicesError;
pub use keyring::{HeldKey, Keyring, KeyringError};
pub use reader::{CloudReader, OpenedMessage, ReadPage, Unreadable, UnreadableMessage};
pub use secrets::{DeviceSecrets, SecretsError};
pub use service::{Devices, ReceivedKeys, RejectedWrap, RevokeReport, WrapRejection};
