//! The Supabase adapters against a real PostgreSQL + PostgREST (live tests, skipped with a
//! printed reason when the services are not running, failing instead under `CI=true`) and
//! against wiremock servers on 127.0.0.1 for the failure classification and Supabase Auth.
//!
//! Other test modules reuse the helpers: `use crate::cloud_live::services::*;` and
//! `use crate::cloud_live::rows;`.

pub mod rows;
pub mod services;

mod idempotency;
mod outage;
mod refresher;
mod round_trip;
mod runtime_status;
mod security;
mod wire;
