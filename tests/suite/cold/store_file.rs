//! `SqliteColdStore` reads what the engine committed, in the same database file.

use std::sync::Arc;

use tandem::adapters::sqlite::{SqliteColdStore, SqliteOptions, SqliteStore};
use tandem::app::Engine;
use tandem::domain::{MessageId, NewMessage, Role};
use tandem::ports::SessionMetadataProvider;

#[test]
fn reads_what_the_engine_committed_in_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let engine = Engine::builder(store).open().unwrap();
    let repo = engine.create_repository("r", Some("git@x:y")).unwrap();
    let session = engine.create_session(repo.id, "title").unwrap();
    let m = engine
        .append_message(session.id, NewMessage::new(Role::User, "hello"))
        .unwrap();

    let cold = SqliteColdStore::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(cold.message(m.id).unwrap().unwrap().content, "hello");
    let n = engine
        .append_message(session.id, NewMessage::new(Role::User, "again"))
        .unwrap();
    let missing = MessageId::from_uuid(uuid::Uuid::from_u128(77)).unwrap();
    let batch = cold.messages(&[n.id, missing, m.id]).unwrap();
    let contents: Vec<_> = batch.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        ["again", "hello"],
        "in the order asked, missing left out"
    );
    assert_eq!(cold.session(session.id).unwrap(), Some(session.clone()));
    assert_eq!(cold.repository(repo.id).unwrap(), Some(repo.clone()));

    engine.delete_repository(repo.id).unwrap();
    assert_eq!(cold.session(session.id).unwrap(), None);
    assert_eq!(cold.repository(repo.id).unwrap(), None);
    assert!(cold.message(m.id).unwrap().is_none());
}
