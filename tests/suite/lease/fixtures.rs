//! Coordinators under test, each with the manual clock it reads.

use std::path::PathBuf;
use std::sync::Arc;

use tandem::adapters::memory::InMemoryLeaseCoordinator;
use tandem::adapters::sqlite::SqliteLeaseCoordinator;
use tandem::adapters::system::ManualClock;
use tandem::ports::conformance::lease::LeaseFixture;
use tandem::ports::{Clock, LeaseCoordinator};

/// An arbitrary, realistic start time (Unix ms).
pub const T0: i64 = 1_700_000_000_000;

/// The in-memory coordinator.
pub struct Memory {
    clock: Arc<ManualClock>,
    coordinator: InMemoryLeaseCoordinator,
}

impl Memory {
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        Self {
            coordinator: InMemoryLeaseCoordinator::new(clock.clone()),
            clock,
        }
    }
}

impl LeaseFixture for Memory {
    fn coordinator(&self) -> &dyn LeaseCoordinator {
        &self.coordinator
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).expect("the clock starts at T0")
    }
    fn advance_ms(&self, ms: u64) {
        self.clock
            .advance(i64::try_from(ms).expect("the suite moves the clock in small steps"));
    }
    fn restart(&mut self) -> bool {
        false
    }
}

/// The SQLite coordinator on a database file in its own temp dir, removed on drop.
pub struct SqliteFile {
    clock: Arc<ManualClock>,
    coordinator: SqliteLeaseCoordinator,
    dir: tempfile::TempDir,
}

impl SqliteFile {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(T0));
        let coordinator = open(&dir.path().join("tandem.db"), &clock);
        Self {
            clock,
            coordinator,
            dir,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tandem.db")
    }
}

/// Opens the SQLite coordinator on `path`, reading `clock`.
pub fn open(path: &std::path::Path, clock: &Arc<ManualClock>) -> SqliteLeaseCoordinator {
    SqliteLeaseCoordinator::open(path, clock.clone()).expect("open the lease coordinator")
}

impl LeaseFixture for SqliteFile {
    fn coordinator(&self) -> &dyn LeaseCoordinator {
        &self.coordinator
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).expect("the clock starts at T0")
    }
    fn advance_ms(&self, ms: u64) {
        self.clock
            .advance(i64::try_from(ms).expect("the suite moves the clock in small steps"));
    }
    fn restart(&mut self) -> bool {
        self.coordinator = open(&self.path(), &self.clock);
        true
    }
}
