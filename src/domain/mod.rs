//! The pure core: facts and rules, with no I/O, no clock, no randomness and no async.
//!
//! Everything here is data plus total functions over it. Ids and timestamps arrive as
//! arguments; the app obtains them from the [`Clock`](crate::ports::Clock) and
//! [`IdGen`](crate::ports::IdGen) ports.

pub mod backoff;
pub mod crypto;
pub mod effect;
pub mod error;
pub mod ids;
pub mod message;
pub mod oplog;
pub mod routing;
pub mod runtime_status;
pub mod session;

pub use effect::{EffectRecord, SideEffect};
pub use error::DomainError;
pub use ids::{
    AgentId, ConsumerName, DeviceId, EffectSeq, Epoch, IdError, MessageId, RepositoryId, RunId,
    Seq, SessionId, UserId,
};
pub use message::{Message, NewMessage, Role, MAX_CONTENT_BYTES};
pub use runtime_status::{
    RuntimeState, RuntimeStatus, RuntimeStatusCoalescer, RuntimeStatusEnvelope,
    RUNTIME_STATUS_SCHEMA_VERSION,
};
pub use session::{Repository, Session, SessionStatus, MAX_TITLE_BYTES};
