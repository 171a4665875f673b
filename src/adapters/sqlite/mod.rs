//! SQLite adapter: the embedded, durable [`Store`](crate::ports::Store), and the durable,
//! host-wide [`LeaseCoordinator`](crate::ports::LeaseCoordinator) over the same file.
//!
//! Every connection sets and then asserts its PRAGMAs (WAL, `foreign_keys=ON`, `busy_timeout`,
//! `synchronous=FULL` by default or `NORMAL` by option) and refuses to run if SQLite did not take
//! them. The schema is embedded and versioned through `PRAGMA user_version`.

mod base_file;
mod cold_dead_letters;
mod cold_keys;
mod cold_store;
mod connection;
mod error;
mod handle;
mod lease;
mod oplog;
mod oplog_rows;
mod rows;
mod schema;
mod store;

pub use cold_dead_letters::{DeadLetter, DeadLetterId, NewDeadLetter};
pub use cold_keys::StoredSessionKey;
pub use cold_store::SqliteColdStore;
pub use connection::{SqliteOptions, Synchronous};
pub use lease::SqliteLeaseCoordinator;
pub use oplog::SqliteJournal;
pub use schema::SCHEMA_VERSION;
pub use store::SqliteStore;
