//! # tandem
//!
//! tandem keeps an AI coding agent's sessions durable on one device and, in later layers, in
//! step across a user's devices and the cloud. This crate is the library; the `tandem` binary
//! is a thin CLI over it.
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
//!   the device-sync oplog core ([`domain::oplog`]), crypto envelopes and key wraps
//!   ([`domain::crypto`]) and the retry backoff policy. No I/O, no clock, no OS randomness, no
//!   async; ids, times and random sources arrive as arguments.
//! - [`ports`] are the traits the app needs, each with a written contract: [`ports::Store`]
//!   (durable facts, the effect log and consumer cursors), [`ports::SideEffectSink`] (a
//!   synchronous, non-blocking doorbell), [`ports::Clock`] and [`ports::IdGen`]. Every contract
//!   clause has a conformance test in [`ports::conformance`] that any adapter can run with
//!   [`store_conformance_tests!`].
//! - [`adapters`] implement the ports: [`adapters::sqlite::SqliteStore`] (embedded, WAL,
//!   asserted PRAGMAs, versioned migrations), sinks ([`adapters::sink::NullSink`],
//!   [`adapters::sink::RecordingSink`], [`adapters::sink::FanoutSink`]) and system/deterministic
//!   clocks and id generators.
//! - [`app`] composes them: the session [`app::Engine`] and the [`app::EffectLog`] consumers
//!   drain. Only the app and the binary name concrete adapters.
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
//! ## Deliberately absent (for now)
//!
//! - An in-memory `Store`: `SqliteStore::open_in_memory` serves tests and development; SQLite
//!   is the single source of truth in production.
//! - Effect-log pruning: the log grows until a consumer-aware compaction lands.
//! - The relay, pump and lease coordinators of device sync, and the cloud (Supabase) and
//!   realtime (Ably) consumers: their pure cores exist in [`domain::oplog`] and
//!   [`domain::crypto`]; the ports, adapters and app wiring come in later releases.

#![warn(missing_docs)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
