//! The SessionMetadataProvider conformance suite on both providers: the engine's views and
//! the database file.

use std::sync::Arc;

use tandem::adapters::sqlite::{SqliteColdStore, SqliteOptions, SqliteStore};
use tandem::app::cold::EngineMetadata;
use tandem::app::Engine;
use tandem::domain::{Repository, RepositoryId, Session, SessionId};
use tandem::ports::conformance::session_metadata::MetadataFixture;
use tandem::ports::SessionMetadataProvider;

/// An engine writing to a temp file, and the provider under test.
struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    provider: Box<dyn SessionMetadataProvider>,
}

impl Fixture {
    fn new(
        provider: impl FnOnce(&Arc<Engine>, &std::path::Path) -> Box<dyn SessionMetadataProvider>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tandem.db");
        let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("store"));
        let engine = Arc::new(Engine::builder(store).open().expect("engine"));
        let provider = provider(&engine, &path);
        Self {
            _dir: dir,
            engine,
            provider,
        }
    }
}

impl MetadataFixture for Fixture {
    fn provider(&self) -> &dyn SessionMetadataProvider {
        self.provider.as_ref()
    }

    fn create(&self, name: &str, title: &str) -> (Repository, Session) {
        let repo = self
            .engine
            .create_repository(name, Some("git@example:r"))
            .unwrap();
        let session = self.engine.create_session(repo.id, title).unwrap();
        (repo, session)
    }

    fn retitle(&self, session: SessionId, title: &str) -> Session {
        self.engine.update_session_title(session, title).unwrap()
    }

    fn delete_repository(&self, id: RepositoryId) {
        self.engine.delete_repository(id).unwrap();
    }
}

tandem::session_metadata_conformance_tests!(engine_views, || {
    Fixture::new(|engine, _| Box::new(EngineMetadata::new(Arc::clone(engine))))
});

tandem::session_metadata_conformance_tests!(sqlite_file, || {
    Fixture::new(|_, path| {
        Box::new(SqliteColdStore::open(path, SqliteOptions::default()).expect("cold store"))
    })
});
