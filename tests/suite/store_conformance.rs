//! The Store conformance suite on every Store adapter.

use crate::support::TempStore;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};

tandem::store_conformance_tests!(sqlite_memory, || {
    Box::new(SqliteStore::open_in_memory(SqliteOptions::default()).expect("open in memory"))
});

tandem::store_conformance_tests!(sqlite_file, TempStore::new);
