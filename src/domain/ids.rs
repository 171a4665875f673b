//! Validated identifier newtypes.
//!
//! Entity ids are UUIDs wrapped in one newtype per entity, so a `SessionId` can never be passed
//! where a `MessageId` is expected. The domain never generates ids itself: the app asks its
//! [`IdGen`](crate::ports::IdGen) port for a fresh UUID and wraps it with `from_uuid`.
//! Counters (`Seq`, `EffectSeq`, `Epoch`) are plain ordered newtypes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string could not be parsed into an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id: {reason}")]
pub struct IdError {
    /// Which id type was being parsed (`session`, `message`, ...).
    pub kind: &'static str,
    /// What was wrong with the input.
    pub reason: &'static str,
}

/// Deserializes a value from a string with `parse`, borrowing the string where the format
/// allows: ids are parsed by the hundred thousand when a checkpoint is read, and going through
/// an owned `String` for each would allocate for nothing.
pub(crate) fn deserialize_parsed<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, IdError>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Parsed<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, IdError>,
    }
    impl<T> serde::de::Visitor<'_> for Parsed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Parsed { expecting, parse })
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(into = "String")]
        pub struct $name(Uuid);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_parsed(d, concat!("a ", $kind, " id (a UUID)"), Self::parse)
            }
        }

        impl $name {
            /// Parses the hyphenated UUID form; the nil UUID is rejected.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let uuid = Uuid::try_parse(s).map_err(|_| IdError {
                    kind: $kind,
                    reason: "not a UUID",
                })?;
                Self::from_uuid(uuid)
            }

            /// Wraps a UUID produced by an id generator; the nil UUID is rejected.
            pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
                if uuid.is_nil() {
                    return Err(IdError { kind: $kind, reason: "nil UUID" });
                }
                Ok(Self(uuid))
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }
    };
}

uuid_id!(
    /// Identifies a coding session.
    SessionId,
    "session"
);
uuid_id!(
    /// Identifies a message within the whole store (not only its session).
    MessageId,
    "message"
);
uuid_id!(
    /// Identifies a repository that sessions belong to.
    RepositoryId,
    "repository"
);
uuid_id!(
    /// Identifies one device (one installation) of a user.
    DeviceId,
    "device"
);
uuid_id!(
    /// Identifies a user account (Supabase `auth.uid()`).
    UserId,
    "user"
);
uuid_id!(
    /// Identifies an agent.
    AgentId,
    "agent"
);
uuid_id!(
    /// Identifies one run (dispatch) of an agent's effect.
    RunId,
    "run"
);

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Zero: for `EffectSeq` and cursors it means "before the first entry".
            pub const ZERO: Self = Self(0);

            /// Wraps a raw counter value.
            pub const fn new(value: u64) -> Self {
                Self(value)
            }

            /// The raw counter value.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The next value. Saturates at `u64::MAX`, which no real log reaches.
            #[must_use]
            pub const fn next(self) -> Self {
                Self(self.0.saturating_add(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

counter!(
    /// A position in a per-session message sequence (contiguous from 1) or a per-device op chain.
    Seq
);
counter!(
    /// The durable position of a committed side-effect in the effect log (strictly increasing).
    EffectSeq
);
counter!(
    /// A fencing epoch: strictly increasing, never reused.
    Epoch
);

/// The name of an effect-log consumer (`cold`, `hot`, `oplog-tee`, ...): 1–64 characters of
/// `[a-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConsumerName(String);

impl ConsumerName {
    /// Parses and validates a consumer name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = "consumer";
        if s.is_empty() || s.len() > 64 {
            return Err(IdError {
                kind,
                reason: "must be 1 to 64 characters",
            });
        }
        if !s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        }) {
            return Err(IdError {
                kind,
                reason: "only a-z, 0-9, '_', '.' and '-' are allowed",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ConsumerName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ConsumerName> for String {
    fn from(c: ConsumerName) -> String {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_serde() {
        let u = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let id = SessionId::from_uuid(u).unwrap();
        assert_eq!(SessionId::parse(&id.to_string()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
    }

    #[test]
    fn ids_reject_garbage_and_nil() {
        assert_eq!(SessionId::parse("nope").unwrap_err().reason, "not a UUID");
        assert_eq!(
            MessageId::from_uuid(Uuid::nil()).unwrap_err().reason,
            "nil UUID"
        );
        assert!(serde_json::from_str::<DeviceId>("\"x\"").is_err());
    }

    #[test]
    fn consumer_names_are_validated() {
        assert!(ConsumerName::parse("cold").is_ok());
        assert!(ConsumerName::parse("oplog-tee.v1").is_ok());
        assert!(ConsumerName::parse("").is_err());
        assert!(ConsumerName::parse("Cold").is_err());
        assert!(ConsumerName::parse(&"a".repeat(65)).is_err());
    }
}
