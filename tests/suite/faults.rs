//! The test doubles the crate ships for its users' suites, checked against a real store.

use std::sync::Arc;

use tandem::adapters::faults::CursorFaults;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::app::Engine;
use tandem::domain::{ConsumerName, EffectSeq};
use tandem::ports::{Store, StoreError};

#[test]
fn chosen_advances_fail_and_change_nothing_then_pass_again() {
    let inner = Arc::new(SqliteStore::open_in_memory(SqliteOptions::default()).unwrap());
    let engine = Engine::builder(inner.clone()).open().unwrap();
    let repo = engine.create_repository("r", None).unwrap();
    engine.create_session(repo.id, "s").unwrap();
    let head = inner.effect_head().unwrap();
    assert!(head.get() >= 2, "two effects to advance over");
    let (one, two) = (EffectSeq::new(1), EffectSeq::new(2));

    let store = CursorFaults::new(inner);
    let c = ConsumerName::parse("faults-test").unwrap();
    store.fail_advances_to(two, 2);
    store.fail_next_advances(1);
    // The positional faults first, then the one for any position.
    for to in [two, two, one] {
        assert!(matches!(
            store.advance_cursor(&c, to),
            Err(StoreError::Busy)
        ));
        assert_eq!(
            store.cursor(&c).unwrap(),
            EffectSeq::ZERO,
            "nothing changed"
        );
    }
    store.advance_cursor(&c, one).unwrap();
    store.advance_cursor(&c, two).unwrap();
    assert_eq!(store.cursor(&c).unwrap(), two);
}
