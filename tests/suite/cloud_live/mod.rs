//! The Supabase adapters against a real PostgreSQL + PostgREST (live tests, skipped with a
//! printed reason when the services are not running) and against wiremock servers on
//! 127.0.0.1 for the failure classification and the token refresher.

pub mod rows;
pub mod services;

mod round_trip;
