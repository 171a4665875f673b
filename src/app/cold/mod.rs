//! The cold path: the effect log, encrypted and batched, into the cloud tables.
//!
//! ```text
//!  effect log ──read after cursor──► plan ──► unit ──► seal (session key) ──► CloudSync
//!      ▲                                                                       │
//!      └──────────── ack (cursor) ◄── success or dead letter ◄─────────────────┘
//! ```
//!
//! [`ColdConsumer`] owns the cursor named [`ColdConfig::consumer`]. Each [`tick`] does one
//! unit of work, routed by [`crate::domain::routing`]:
//!
//! - **Messages**: up to [`ColdConfig::batch_size`] (50) messages, or whatever arrived within
//!   [`ColdConfig::flush_interval`] (500 ms), become one `upsert_messages` call. Each message
//!   is sealed with the newest key of its session (created on first use, stored sealed at
//!   rest, and distributed to the user's devices before the first message sealed with it is
//!   sent), under a fresh random nonce, bound to session, message id, seq, sender device,
//!   key epoch and algorithm. A retried batch re-sends the very same rows.
//! - **Repositories and sessions**: upserts with the current rows from a
//!   [`SessionMetadataProvider`](crate::ports::SessionMetadataProvider), deletes, and
//!   `end_session` on close.
//! - **Runtime status**: updates gathered for [`ColdConfig::status_window`] (120 ms),
//!   newest per session sent with `update_runtime_status`.
//! - `AgentStatusChanged` is skipped.
//!
//! Nothing happens without an auth context: a tick then reads nothing and sends nothing.
//! Failures are handled by class: transient and network failures back off `2 s · 2^(n-1)`
//! up to 300 s with jitter, never sooner than `Retry-After`; a refused token is refreshed
//! once and the unit retried at once, then backs off; a permanent failure dead-letters a
//! single effect after that one attempt and the consumer moves on. A batch refused for good is
//! sent again one item at a time, and only the items refused on their own are dead-lettered
//! (one bad row makes PostgREST refuse its whole batch). The cursor advances only
//! after the remote write succeeded or the effects were dead-lettered, so delivery is
//! at-least-once and, with idempotent upserts, each effect lands exactly once.
//!
//! The cursor commit (a durable SQLite write) of a delivered unit overlaps the next upload:
//! [`TickOutcome::Delivered`] means the unit landed, and its commit finishes during the next
//! tick, in order, before that tick returns. A tick that uploads nothing (idle, batching,
//! backing off, without context, after a failure, skip or dead letter) and
//! [`ColdConsumer::run`] on shutdown first finish it, so [`ColdConsumer::position`] is exact
//! whenever the consumer is not busy. A failed commit is reported as that tick's
//! [`TickOutcome::Failed`] and its unit is sent again before anything after it. A crash
//! re-sends at most the units whose commits had not finished; it never skips one.
//!
//! [`tick`]: ColdConsumer::tick

mod ack;
mod builder;
mod config;
mod consumer;
mod dead_letters;
mod doorbell;
mod error;
mod execute;
mod jitter;
mod metadata;
mod plan;
#[cfg(test)]
mod tests;

pub use builder::ColdConsumerBuilder;
pub use config::ColdConfig;
pub use consumer::{ColdConsumer, ColdLag, TickOutcome};
pub use dead_letters::{ReplayOutcome, ReplayReport};
pub use doorbell::Doorbell;
pub use error::ColdError;
pub use jitter::{FixedJitter, Jitter, OsJitter};
pub use metadata::EngineMetadata;
