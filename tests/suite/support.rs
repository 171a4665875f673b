//! Shared fixtures for the integration tests.

pub mod child;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use tandem::adapters::sink::RecordingSink;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::app::Engine;
use tandem::domain::{Repository, Session};

/// A file-backed store in its own temp dir, removed on drop.
pub struct TempStore {
    store: Arc<SqliteStore>,
    dir: tempfile::TempDir,
}

impl TempStore {
    /// A fresh, empty file store with default options.
    pub fn new() -> Self {
        Self::with_options(SqliteOptions::default())
    }

    /// A fresh, empty file store.
    pub fn with_options(options: SqliteOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("tandem.db"), options).expect("open store");
        Self {
            store: Arc::new(store),
            dir,
        }
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tandem.db")
    }

    /// The store, shareable.
    pub fn arc(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }

    /// Opens a second, independent store on the same file (as a restarted process would).
    pub fn reopen(&self) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(self.path(), self.store.options()).expect("reopen"))
    }
}

impl Deref for TempStore {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

/// An engine over a fresh file store, recording what it emits.
pub struct Harness {
    pub db: TempStore,
    pub sink: Arc<RecordingSink>,
    pub engine: Arc<Engine>,
}

impl Harness {
    pub fn new() -> Self {
        let db = TempStore::new();
        let sink = Arc::new(RecordingSink::new());
        let engine = Engine::builder(db.arc())
            .sink(sink.clone())
            .open()
            .expect("open engine");
        Self {
            db,
            sink,
            engine: Arc::new(engine),
        }
    }

    /// A repository with one active session.
    pub fn session(&self) -> (Repository, Session) {
        let r = self
            .engine
            .create_repository("repo", None)
            .expect("repository");
        let s = self
            .engine
            .create_session(r.id, "session")
            .expect("session");
        (r, s)
    }

    /// Reopens the same database with a fresh engine and recording sink.
    pub fn reopen(&self) -> (Arc<Engine>, Arc<RecordingSink>) {
        let sink = Arc::new(RecordingSink::new());
        let engine = Engine::builder(self.db.reopen())
            .sink(sink.clone())
            .open()
            .expect("reopen engine");
        (Arc::new(engine), sink)
    }
}
