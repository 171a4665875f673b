//! [`EngineMetadata`]: the [`SessionMetadataProvider`] over the engine's in-memory views.

use std::sync::Arc;

use crate::app::engine::Engine;
use crate::domain::{Repository, RepositoryId, Session, SessionId};
use crate::ports::{MetadataError, SessionMetadataProvider};

/// Serves repository and session rows from the engine's views (no SQLite access).
#[derive(Debug, Clone)]
pub struct EngineMetadata {
    engine: Arc<Engine>,
}

impl EngineMetadata {
    /// A provider over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

impl SessionMetadataProvider for EngineMetadata {
    fn repository(&self, id: RepositoryId) -> Result<Option<Repository>, MetadataError> {
        Ok(self.engine.repository(id))
    }

    fn session(&self, id: SessionId) -> Result<Option<Session>, MetadataError> {
        Ok(self.engine.session(id))
    }
}
