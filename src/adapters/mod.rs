//! Adapters: concrete technologies behind the ports. Only the app and the binary name them.

pub mod memory;
pub mod secret_file;
pub mod sink;
pub mod sqlite;
pub mod system;
