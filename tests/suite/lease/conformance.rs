//! The LeaseCoordinator conformance suite on every adapter.
//!
//! SQLite runs on a file only: an in-memory SQLite database would run the same statements as
//! the file without WAL, cross-connection locking or a restart, so it would test less than the
//! file does and nothing the in-memory coordinator does not.

use super::fixtures::{Memory, SqliteFile};

tandem::lease_conformance_tests!(memory, Memory::new);

tandem::lease_conformance_tests!(sqlite_file, SqliteFile::new);
