//! Key providers: where the scope keys that seal oplog payloads live.
//!
//! - [`FileKeyProvider`]: an owner-only JSON key file, created on first use (the embedded
//!   default).
//! - [`StaticKeyProvider`]: a fixed in-memory set, for tests and development.
//!
//! Both keep keys in zeroizing types and show only scopes and epochs in `Debug`.

mod file;
mod ring;
mod static_keys;

pub use file::FileKeyProvider;
pub use ring::KEY_FILE_VERSION;
pub use static_keys::StaticKeyProvider;
