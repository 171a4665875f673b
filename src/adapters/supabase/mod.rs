//! Supabase adapters: the [`CloudSync`](crate::ports::CloudSync) port over PostgREST and the
//! [`TokenRefresher`](crate::ports::TokenRefresher) port over Supabase Auth, both over one
//! `reqwest` client with rustls.
//!
//! ```text
//!   SupabaseConfig ──► HttpClient (reqwest, timeouts, `apikey`, bearer token,
//!        │                          failure classification)
//!        ├──► SupabaseCloudSync        /rest/v1/<table>  (or a plain PostgREST root)
//!        └──► SupabaseTokenRefresher   /auth/v1/token?grant_type=refresh_token
//! ```
//!
//! Hosted Supabase serves PostgREST under `/rest/v1` behind an `apikey` header; a plain
//! PostgREST (the tests run one) serves it at its root and ignores the header. Both are
//! configured through [`SupabaseConfig`]. Every failure is classified once, in the HTTP
//! layer, into a [`CloudError`](crate::ports::CloudError) or
//! [`AuthError`](crate::ports::AuthError); the table lives in the `http` module's docs.

mod auth;
mod cloud_sync;
mod config;
mod http;

pub use auth::SupabaseTokenRefresher;
pub use cloud_sync::SupabaseCloudSync;
pub use config::{ApiKey, SupabaseConfig, SupabaseConfigError, SupabaseTimeouts};
