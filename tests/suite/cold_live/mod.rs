//! The cold path end to end against the real PostgreSQL + PostgREST that
//! `scripts/services.sh` runs (skipped with a printed reason without them, failing instead
//! under `CI=true`, as [`LiveServices`](crate::cloud_live::services::LiveServices) decides):
//!
//! - `end_to_end`: engine → cold consumer → PostgreSQL holds ciphertext only; the user's
//!   second device opens every message; other users see and forge nothing; re-sending is
//!   idempotent;
//! - `faults`: a seeded fault proxy (5xx, 429 with `Retry-After`, timeouts, applied then
//!   failed) over many seeds; every message lands once, a permanently invalid one is
//!   dead-lettered after one attempt;
//! - `poison_batch`: a message PostgREST refuses inside a batch; the batch is split and only
//!   that message is dead-lettered, every other one lands once;
//! - `token_expiry`: the real PostgREST refuses an expired JWT, one refresh, the batch lands;
//! - `crypto`: real rows open only with their own key and context; a revoked device gets no
//!   key for what follows its revocation.

mod crypto;
mod database;
mod device;
mod end_to_end;
mod faults;
mod http_wire;
mod poison_batch;
mod proxy;
mod token_expiry;
