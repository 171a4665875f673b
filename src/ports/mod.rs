//! Ports: the traits the app depends on, each with its contract and error type.
//!
//! Adapters in [`crate::adapters`] implement them; the shared conformance suites in
//! [`conformance`] check every adapter against the same clauses.

pub mod auth;
pub mod batch;
pub mod clock;
pub mod cloud;
pub mod conformance;
pub mod id_gen;
pub mod journal;
pub mod keys;
pub mod lease;
pub mod relay;
pub mod session_metadata;
pub mod sink;
pub mod store;

pub use auth::{AuthContext, AuthError, RefreshToken, TokenPair, TokenRefresher};
pub use batch::{BatchFill, BatchLimit};
pub use clock::Clock;
pub use cloud::{
    AccessToken, CloudDeviceRow, CloudError, CloudMessageRow, CloudRepositoryRow, CloudSessionRow,
    CloudSessionStatus, CloudSync,
};
pub use id_gen::IdGen;
pub use journal::{Journal, JournalCommit, JournalError};
pub use keys::{KeyError, KeyProvider};
pub use lease::{LeaseCoordinator, LeaseCoordinatorError};
pub use relay::{
    GcReport, PullBatch, PullCursors, PushOutcome, Relay, RelayError, RosterEntry,
    LAST_SEEN_RESOLUTION_MS,
};
pub use session_metadata::{MetadataError, SessionMetadataProvider};
pub use sink::SideEffectSink;
pub use store::{Fact, Store, StoreContents, StoreError, WriteBatch};
