//! Surfaces: which kind of state an op changes, and how the fold combines ops of that kind.
//!
//! Every surface has a stable string form (the wire, the op-id recipe and the state encoding
//! all use it) and a [`FoldTier`]:
//!
//! | surface            | string              | tier                  | record key            |
//! |--------------------|---------------------|-----------------------|-----------------------|
//! | conversation       | `conversation`      | event stream          | the op id             |
//! | trajectory         | `trajectory`        | event stream          | the op id             |
//! | run                | `run`               | event stream          | the op id             |
//! | command            | `command`           | event stream          | the op id             |
//! | knowledge          | `knowledge`         | last writer wins      | payload `"key"`       |
//! | skill              | `skill`             | last writer wins      | payload `"key"`       |
//! | routing            | `routing`           | last writer wins      | payload `"key"`       |
//! | declagent          | `declagent`         | last writer wins      | payload `"key"`       |
//! | registry of a kind | `registry:<kind>`   | last writer wins      | payload `"key"`       |
//! | preference         | `preference`        | last writer wins      | payload `"key"`       |
//! | intent             | `intent`            | leased (intent ledger)| payload `"intent_id"` |
//!
//! Event streams are grow-only: each op is its own entry, keyed by op id, so two identical
//! turns (same text, same role) stay two turns. Conversation turns, agent trajectories, run
//! logs and command history are histories: nothing in them is ever replaced.
//!
//! Knowledge is last-writer-wins rather than an event stream: a knowledge fact has an identity
//! and is revised or retracted over time (a wrong fact must be deletable), which a grow-only
//! set cannot express. A device that wants a history of facts can still record one on the
//! `trajectory` surface.
//!
//! The intent surface is the leased tier: its ops drive the intent ledger (see the `intent`
//! module) whose terminal guard and committed-run oracle back the dispatch fence.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::scope::validate_slug;
use crate::domain::ids::IdError;

/// The kind of registry a `registry:<kind>` surface holds: 1–64 characters of `[a-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistryKind(String);

impl RegistryKind {
    /// Parses and validates a registry kind.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_slug(s, "registry kind")?;
        Ok(Self(s.to_owned()))
    }

    /// The kind as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RegistryKind {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RegistryKind> for String {
    fn from(k: RegistryKind) -> String {
        k.0
    }
}

/// How the fold combines the ops of one surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FoldTier {
    /// Grow-only: every op is an entry keyed by its op id, ordered by `(hlc, op_id)`.
    EventStream,
    /// Per record key, the op with the greatest `(hlc, op_id)` wins (tombstones included).
    LastWriterWins,
    /// The intent ledger: per intent, a terminal-guarded status machine.
    Leased,
}

/// The kind of state an op changes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Surface {
    /// Conversation turns (event stream).
    Conversation,
    /// Knowledge facts (last writer wins per key).
    Knowledge,
    /// Skills (last writer wins per key).
    Skill,
    /// Routing rules (last writer wins per key).
    Routing,
    /// Declarative agent definitions (last writer wins per key).
    Declagent,
    /// A named registry (last writer wins per key).
    Registry(RegistryKind),
    /// Agent trajectories (event stream).
    Trajectory,
    /// Run logs (event stream).
    Run,
    /// Execution intents (the leased intent ledger).
    Intent,
    /// Shell command history (event stream).
    Command,
    /// User preferences (last writer wins per key).
    Preference,
}

impl Surface {
    /// A `registry:<kind>` surface, validating the kind.
    pub fn registry(kind: &str) -> Result<Self, IdError> {
        Ok(Self::Registry(RegistryKind::parse(kind)?))
    }

    /// The fold tier of this surface.
    pub fn tier(&self) -> FoldTier {
        match self {
            Self::Conversation | Self::Trajectory | Self::Run | Self::Command => {
                FoldTier::EventStream
            }
            Self::Knowledge
            | Self::Skill
            | Self::Routing
            | Self::Declagent
            | Self::Registry(_)
            | Self::Preference => FoldTier::LastWriterWins,
            Self::Intent => FoldTier::Leased,
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Ok(match s {
            "conversation" => Self::Conversation,
            "knowledge" => Self::Knowledge,
            "skill" => Self::Skill,
            "routing" => Self::Routing,
            "declagent" => Self::Declagent,
            "trajectory" => Self::Trajectory,
            "run" => Self::Run,
            "intent" => Self::Intent,
            "command" => Self::Command,
            "preference" => Self::Preference,
            other => match other.strip_prefix("registry:") {
                Some(kind) => Self::registry(kind)?,
                None => {
                    return Err(IdError {
                        kind: "surface",
                        reason: "unknown surface",
                    })
                }
            },
        })
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Conversation => "conversation",
            Self::Knowledge => "knowledge",
            Self::Skill => "skill",
            Self::Routing => "routing",
            Self::Declagent => "declagent",
            Self::Trajectory => "trajectory",
            Self::Run => "run",
            Self::Intent => "intent",
            Self::Command => "command",
            Self::Preference => "preference",
            Self::Registry(kind) => return write!(f, "registry:{kind}"),
        })
    }
}

impl FromStr for Surface {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Surface {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Surface> for String {
    fn from(s: Surface) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Surface> {
        vec![
            Surface::Conversation,
            Surface::Knowledge,
            Surface::Skill,
            Surface::Routing,
            Surface::Declagent,
            Surface::registry("agents").unwrap(),
            Surface::Trajectory,
            Surface::Run,
            Surface::Intent,
            Surface::Command,
            Surface::Preference,
        ]
    }

    #[test]
    fn surfaces_round_trip_through_their_string_form() {
        for s in all() {
            assert_eq!(Surface::parse(&s.to_string()).unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Surface>(&json).unwrap(), s);
        }
        assert_eq!(
            Surface::registry("mcp-servers").unwrap().to_string(),
            "registry:mcp-servers"
        );
    }

    #[test]
    fn unknown_surfaces_and_bad_kinds_are_refused() {
        assert_eq!(Surface::parse("email").unwrap_err().kind, "surface");
        assert_eq!(
            Surface::parse("registry:").unwrap_err().kind,
            "registry kind"
        );
        assert!(Surface::parse("registry:Has Space").is_err());
        assert!(Surface::parse("Conversation").is_err());
        assert!(serde_json::from_str::<Surface>("\"registry:a:b\"").is_err());
        assert_eq!(RegistryKind::parse("tools").unwrap().as_str(), "tools");
    }

    #[test]
    fn tiers_are_as_documented() {
        let tiers: Vec<_> = all().iter().map(Surface::tier).collect();
        use FoldTier::*;
        assert_eq!(
            tiers,
            vec![
                EventStream,
                LastWriterWins,
                LastWriterWins,
                LastWriterWins,
                LastWriterWins,
                LastWriterWins,
                EventStream,
                EventStream,
                Leased,
                EventStream,
                LastWriterWins
            ]
        );
    }
}
