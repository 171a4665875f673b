//! Adapters: concrete technologies behind the ports. Only the app and the binary name them.

pub(crate) mod atomic_file;
pub mod faults;
pub mod fs_relay;
pub mod keys;
pub mod memory;
pub(crate) mod relay_core;
pub mod secret_file;
pub mod sink;
pub mod sqlite;
pub mod supabase;
pub mod system;
