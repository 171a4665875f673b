//! Scopes: who an op belongs to, and so which key seals it.
//!
//! An op is either [`Scope::Personal`] (the user's own devices) or [`Scope::Shared`] with an
//! organisation. The org is an [`OrgId`], a validated name rather than a bare `String`, so an
//! invalid scope cannot be constructed or deserialized.
//!
//! The stable string form, used on the wire, in the op-id recipe and in the state encoding, is
//! `personal` or `shared:<org>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::ids::IdError;

/// Longest accepted slug (org name, registry kind), in bytes.
pub const MAX_SLUG_LEN: usize = 64;

/// An organisation name: 1–64 characters of `[a-z0-9_.-]` (a slug or a hyphenated UUID).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// Parses and validates an org name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_slug(s, "org")?;
        Ok(Self(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `s` is 1..=[`MAX_SLUG_LEN`] bytes of `[a-z0-9_.-]`.
pub(super) fn validate_slug(s: &str, kind: &'static str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_SLUG_LEN {
        return Err(IdError {
            kind,
            reason: "must be 1 to 64 characters",
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(IdError {
            kind,
            reason: "only a-z, 0-9, '_', '.' and '-' are allowed",
        });
    }
    Ok(())
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for OrgId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OrgId> for String {
    fn from(o: OrgId) -> String {
        o.0
    }
}

/// Who an op belongs to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(into = "String")]
pub enum Scope {
    /// The user's own devices; sealed with the user's personal scope key.
    Personal,
    /// Shared with an organisation; sealed with that org's scope key.
    Shared {
        /// The organisation.
        org: OrgId,
    },
}

impl Scope {
    /// A shared scope, validating the org name.
    pub fn shared(org: &str) -> Result<Self, IdError> {
        Ok(Self::Shared {
            org: OrgId::parse(org)?,
        })
    }

    /// Parses the stable string form: `personal` or `shared:<org>`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s == "personal" {
            return Ok(Self::Personal);
        }
        match s.strip_prefix("shared:") {
            Some(org) => Self::shared(org),
            None => Err(IdError {
                kind: "scope",
                reason: "expected \"personal\" or \"shared:<org>\"",
            }),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Personal => f.write_str("personal"),
            Self::Shared { org } => write!(f, "shared:{org}"),
        }
    }
}

impl FromStr for Scope {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Every checkpoint entry carries a scope: parsed from the borrowed text, not a copy.
        crate::domain::ids::deserialize_parsed(
            d,
            "a scope (\"personal\" or \"shared:<org>\")",
            Self::parse,
        )
    }
}

impl TryFrom<String> for Scope {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_string_form() {
        for s in [Scope::Personal, Scope::shared("acme").unwrap()] {
            assert_eq!(Scope::parse(&s.to_string()).unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), s);
        }
        assert_eq!(Scope::shared("acme").unwrap().to_string(), "shared:acme");
        assert_eq!(
            serde_json::to_string(&Scope::Personal).unwrap(),
            "\"personal\""
        );
    }

    #[test]
    fn invalid_orgs_and_scopes_are_refused() {
        assert_eq!(OrgId::parse("").unwrap_err().kind, "org");
        assert!(OrgId::parse("Acme").is_err());
        assert!(OrgId::parse("a:b").is_err());
        assert!(OrgId::parse(&"a".repeat(65)).is_err());
        assert!(OrgId::parse(&"a".repeat(64)).is_ok());
        assert!(Scope::parse("shared:").is_err());
        assert_eq!(Scope::parse("public").unwrap_err().kind, "scope");
        assert!(serde_json::from_str::<Scope>("\"shared:Bad Org\"").is_err());
        assert_eq!(OrgId::parse("acme").unwrap().as_str(), "acme");
    }
}
