//! Conformance suite for [`SessionMetadataProvider`]: one function per contract clause of
//! [`ports::session_metadata`](crate::ports::session_metadata), each named after its clause.
//!
//! A provider reflects state written elsewhere (the engine), so each function takes a
//! [`MetadataFixture`]: the provider plus a way to commit the rows it must then serve.
//! [`session_metadata_conformance_tests!`](crate::session_metadata_conformance_tests) stamps
//! one `#[test]` per clause.

use crate::domain::{Repository, RepositoryId, Session, SessionId};
use crate::ports::SessionMetadataProvider;

/// A provider under test and the writer whose commits it must serve.
pub trait MetadataFixture {
    /// The provider under test.
    fn provider(&self) -> &dyn SessionMetadataProvider;
    /// Commits a new repository with one session.
    fn create(&self, name: &str, title: &str) -> (Repository, Session);
    /// Commits a new title for a session and returns the updated row.
    fn retitle(&self, session: SessionId, title: &str) -> Session;
    /// Commits the deletion of a repository (and its sessions).
    fn delete_repository(&self, id: RepositoryId);
}

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __session_metadata_clauses {
    ($m:ident) => {
        $m!(returns_committed_rows);
        $m!(unknown_ids_are_none);
        $m!(deleted_rows_are_none);
    };
}

/// Stamps a test module `$name` with one `#[test]` per [`SessionMetadataProvider`] contract
/// clause, each run on a fresh fixture from `$factory` (a closure returning a value that
/// implements [`MetadataFixture`]).
#[macro_export]
macro_rules! session_metadata_conformance_tests {
    ($name:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $name,
            $factory,
            session_metadata,
            __session_metadata_clauses
        );
    };
}

/// The latest committed state of each row is returned.
pub fn returns_committed_rows(f: &dyn MetadataFixture) {
    let (repo, session) = f.create("conformance repo", "first title");
    let p = f.provider();
    assert_eq!(
        p.repository(repo.id).expect("readable"),
        Some(repo),
        "returns_committed_rows: repository"
    );
    assert_eq!(
        p.session(session.id).expect("readable"),
        Some(session.clone()),
        "returns_committed_rows: session"
    );
    let updated = f.retitle(session.id, "second title");
    assert_eq!(
        p.session(session.id).expect("readable"),
        Some(updated),
        "returns_committed_rows: the latest state, not the first"
    );
}

/// Ids never committed are `Ok(None)`.
pub fn unknown_ids_are_none(f: &dyn MetadataFixture) {
    let (repo, session) = f.create("conformance repo", "title");
    let p = f.provider();
    let other_session = SessionId::from_uuid(uuid::Uuid::from_u128(
        session.id.as_uuid().as_u128() ^ 0xFFFF,
    ))
    .expect("non-nil");
    let other_repo =
        RepositoryId::from_uuid(uuid::Uuid::from_u128(repo.id.as_uuid().as_u128() ^ 0xFFFF))
            .expect("non-nil");
    assert!(
        matches!(p.session(other_session), Ok(None)),
        "unknown_ids_are_none: session"
    );
    assert!(
        matches!(p.repository(other_repo), Ok(None)),
        "unknown_ids_are_none: repository"
    );
}

/// Deleted rows are `Ok(None)`.
pub fn deleted_rows_are_none(f: &dyn MetadataFixture) {
    let (repo, session) = f.create("conformance repo", "title");
    f.delete_repository(repo.id);
    let p = f.provider();
    assert!(
        matches!(p.repository(repo.id), Ok(None)),
        "deleted_rows_are_none: repository"
    );
    assert!(
        matches!(p.session(session.id), Ok(None)),
        "deleted_rows_are_none: session (cascaded)"
    );
}
