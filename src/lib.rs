//! # tandem
//!
//! tandem keeps an AI coding agent's sessions durable on one device and in step across a user's
//! devices and the cloud. This crate is the library; the `tandem` binary is a thin CLI over it.
//!
//! ## Layers
//!
//! ```text
//!   bin/tandem ──► app ──► adapters ──► ports ──► domain
//!                   │                     ▲          ▲
//!                   └─────────────────────┴──────────┘
//! ```
//!
//! Dependencies point inward only:
//!
//! - [`domain`] is pure: ids, repositories, sessions, messages, side-effects, runtime status,
//!   the effect routing table, the device-sync oplog core ([`domain::oplog`]: HLC, ops, verify,
//!   fold, state hash, checkpoints, sealing, transcript repair, intents, leases and the
//!   dispatch fence), crypto envelopes and key wraps ([`domain::crypto`]) and the retry backoff
//!   policy. No I/O, no clock, no OS randomness, no async; ids, times and random sources arrive
//!   as arguments.
//! - [`ports`] are the traits the app needs, each with a written contract:
//!   [`ports::Store`] (durable facts, the effect log and consumer cursors),
//!   [`ports::SideEffectSink`] (a synchronous, non-blocking doorbell), [`ports::Clock`],
//!   [`ports::IdGen`]; for device sync [`ports::Journal`] (the local oplog),
//!   [`ports::Relay`] (where devices exchange chains), [`ports::LeaseCoordinator`] (fencing
//!   epochs) and [`ports::KeyProvider`] (scope keys); for the cloud [`ports::CloudSync`],
//!   [`ports::TokenRefresher`] and [`ports::SessionMetadataProvider`]. Every contract clause has
//!   a conformance test in [`ports::conformance`], stamped per adapter by a macro such as
//!   [`store_conformance_tests!`].
//! - [`adapters`] implement the ports: SQLite ([`adapters::sqlite`]: the store, the oplog
//!   journal, the lease coordinator and the cold path's bookkeeping, all in one database file),
//!   the shared-directory relay [`adapters::fs_relay::FsRelay`], in-memory relay and lease
//!   coordinator for tests ([`adapters::memory`]), key files ([`adapters::keys`]), Supabase over
//!   PostgREST ([`adapters::supabase`]), sinks, and system/deterministic clocks and ids.
//! - [`app`] composes them: the session [`app::Engine`] and its [`app::EffectLog`]; the
//!   consumers that drain the log by cursor ([`app::cold::ColdConsumer`] for the cloud,
//!   [`app::tee::OplogTee`] recording messages as conversation ops for device sync); the
//!   device-sync session [`app::DeviceSync`]; device identities and key distribution
//!   ([`app::devices`]); the runtime auth context ([`app::AuthState`]). Only the app and the
//!   binary name concrete adapters.
//!
//! ## The write path
//!
//! Every write commits its facts **and their effect records** in one SQLite transaction, then
//! updates the in-memory views, then emits each effect to the sink. Consumers (cloud sync,
//! realtime publish, device replication) never trust the in-memory emit: they read the durable
//! effect log after their own cursor and advance it once their work is done, so a crash between
//! commit and emit loses nothing and delivery is at-least-once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
//! use tandem::app::Engine;
//! use tandem::domain::{NewMessage, Role};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open("tandem.db", SqliteOptions::default())?);
//! let engine = Engine::builder(store).open()?;
//! let repo = engine.create_repository("my-project", None)?;
//! let session = engine.create_session(repo.id, "first session")?;
//! engine.append_message(session.id, NewMessage::new(Role::User, "hello"))?;
//! assert_eq!(engine.transcript(session.id)?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## The read path
//!
//! Reads are served from an immutable per-session snapshot plus the delta appended since; they
//! never touch SQLite except when the engine opens or [`app::Engine::refresh_snapshot`] runs.
//! Live subscriptions are bounded rings: a subscriber that falls behind receives
//! [`app::LiveEvent::Lagged`] with the seq to resume from, and the writer never waits for it.
//! Opening an existing database is silent: the views are rebuilt, nothing is emitted and no
//! subscriber is notified.
//!
//! ## Device sync and the cloud path
//!
//! Each device appends hash-chained, end-to-end sealed ops to its journal (in the same SQLite
//! file as the engine), exchanges them through a [`ports::Relay`] and folds everything it holds
//! into a state whose hash is the same on every device holding the same ops
//! ([`app::DeviceSync::pump`]). The cold consumer seals each message with its session key and
//! upserts batches to Supabase; permanent failures go to a dead-letter table that an operator
//! can list and replay. Both paths are at-least-once underneath and idempotent on top, so a
//! crash anywhere converges without duplicates.
//!
//! ## Deliberately absent (for now)
//!
//! - An in-memory `Store`: `SqliteStore::open_in_memory` serves tests and development; SQLite
//!   is the single source of truth in production.
//! - Effect-log pruning: the log grows until a consumer-aware compaction lands.
//! - The realtime (Ably) publisher, the JSON-RPC daemon, and a Supabase-backed relay and lease
//!   coordinator for users who outgrow one shared folder.

#![warn(missing_docs)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
