//! Adapters: concrete technologies behind the ports. Only the app and the binary name them.

pub mod sink;
pub mod sqlite;
pub mod supabase;
pub mod system;
