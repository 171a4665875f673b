//! The in-memory key ring shared by the key providers, and its JSON file encoding.
//!
//! The encoding is `{"version": 1, "scopes": {"<scope>": {"<epoch>": "<base64 key>"}}}` with
//! standard padded base64 of the 32 key bytes. Encoded and decoded text is held in zeroizing
//! buffers; the intermediate strings of decoding are wiped once the keys are extracted.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::oplog::Scope;

/// The only key file format version this build reads and writes.
pub const KEY_FILE_VERSION: u32 = 1;

/// Keys per scope and epoch. `Debug` lists scopes and epochs only.
#[derive(Clone, Default)]
pub(super) struct KeyRing {
    scopes: BTreeMap<Scope, BTreeMap<KeyEpoch, SessionKey>>,
}

/// A different key is already held at that scope and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Conflict;

impl KeyRing {
    /// The scope's newest epoch and its key.
    pub(super) fn current(&self, scope: &Scope) -> Option<(KeyEpoch, SessionKey)> {
        self.scopes
            .get(scope)
            .and_then(|epochs| epochs.last_key_value())
            .map(|(e, k)| (*e, k.clone()))
    }

    /// The scope's key of `epoch`.
    pub(super) fn get(&self, scope: &Scope, epoch: KeyEpoch) -> Option<SessionKey> {
        self.scopes
            .get(scope)
            .and_then(|epochs| epochs.get(&epoch))
            .cloned()
    }

    /// The epoch a rotation of `scope` would create (`None` once exhausted).
    pub(super) fn next_epoch(&self, scope: &Scope) -> Option<KeyEpoch> {
        match self.current(scope) {
            Some((e, _)) => e.next(),
            None => Some(KeyEpoch::FIRST),
        }
    }

    /// Adds a key; re-adding the same key is a no-op, a different one a [`Conflict`].
    pub(super) fn insert(
        &mut self,
        scope: Scope,
        epoch: KeyEpoch,
        key: SessionKey,
    ) -> Result<(), Conflict> {
        let epochs = self.scopes.entry(scope).or_default();
        match epochs.get(&epoch) {
            Some(held) if held.expose_secret() == key.expose_secret() => Ok(()),
            Some(_) => Err(Conflict),
            None => {
                epochs.insert(epoch, key);
                Ok(())
            }
        }
    }

    /// The key file bytes (the error names what failed, never a key).
    pub(super) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut wire = Wire {
            version: KEY_FILE_VERSION,
            scopes: self
                .scopes
                .iter()
                .map(|(scope, epochs)| {
                    let keys = epochs
                        .iter()
                        .map(|(e, k)| (e.get().to_string(), B64.encode(k.expose_secret())))
                        .collect();
                    (scope.to_string(), keys)
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&wire)
            .map(Zeroizing::new)
            .map_err(|_| "the key ring could not be encoded".to_owned());
        wire.wipe();
        bytes
    }

    /// Reads key file bytes; the error names what was wrong, never a key.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut wire: Wire =
            serde_json::from_slice(bytes).map_err(|_| "not a key file".to_owned())?;
        let ring = Self::from_wire(&wire);
        wire.wipe();
        ring
    }

    fn from_wire(wire: &Wire) -> Result<Self, String> {
        if wire.version != KEY_FILE_VERSION {
            return Err(format!("unsupported key file version {}", wire.version));
        }
        let mut ring = Self::default();
        for (scope, epochs) in &wire.scopes {
            let scope = Scope::parse(scope).map_err(|e| format!("invalid scope: {e}"))?;
            for (epoch, key) in epochs {
                let epoch = epoch
                    .parse::<u32>()
                    .ok()
                    .filter(|e| *e >= KeyEpoch::FIRST.get())
                    .map(KeyEpoch::new)
                    .ok_or_else(|| format!("invalid epoch for scope {scope}"))?;
                let raw = Zeroizing::new(
                    B64.decode(key)
                        .map_err(|_| format!("key {scope}/{epoch} is not base64"))?,
                );
                let key = SessionKey::from_slice(&raw)
                    .map_err(|_| format!("key {scope}/{epoch} is not 32 bytes"))?;
                ring.insert(scope.clone(), epoch, key)
                    .map_err(|_| format!("key {scope}/{epoch} is listed twice"))?;
            }
        }
        Ok(ring)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.scopes.iter().map(|(scope, epochs)| {
                let epochs: Vec<u32> = epochs.keys().map(|e| e.get()).collect();
                (scope.to_string(), epochs)
            }))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    scopes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Wire {
    fn wipe(&mut self) {
        for epochs in self.scopes.values_mut() {
            for key in epochs.values_mut() {
                key.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SessionKey {
        SessionKey::from_bytes([n; 32])
    }

    #[test]
    fn round_trips_and_tracks_the_current_epoch() {
        let mut ring = KeyRing::default();
        let org = Scope::shared("acme").unwrap();
        ring.insert(Scope::Personal, KeyEpoch::FIRST, key(1))
            .unwrap();
        ring.insert(Scope::Personal, KeyEpoch::new(2), key(2))
            .unwrap();
        ring.insert(org.clone(), KeyEpoch::FIRST, key(3)).unwrap();
        let back = KeyRing::decode(&ring.encode().unwrap()).unwrap();
        let (e, k) = back.current(&Scope::Personal).unwrap();
        assert_eq!((e, k.expose_secret()), (KeyEpoch::new(2), &[2; 32]));
        assert_eq!(
            back.get(&org, KeyEpoch::FIRST).unwrap().expose_secret(),
            &[3; 32]
        );
        assert_eq!(back.next_epoch(&Scope::Personal), Some(KeyEpoch::new(3)));
        assert_eq!(
            back.next_epoch(&Scope::shared("other").unwrap()),
            Some(KeyEpoch::FIRST)
        );
        assert_eq!(
            format!("{back:?}"),
            r#"{"personal": [1, 2], "shared:acme": [1]}"#
        );
    }

    #[test]
    fn conflicting_keys_are_refused() {
        let mut ring = KeyRing::default();
        ring.insert(Scope::Personal, KeyEpoch::FIRST, key(1))
            .unwrap();
        assert_eq!(
            ring.insert(Scope::Personal, KeyEpoch::FIRST, key(1)),
            Ok(())
        );
        assert_eq!(
            ring.insert(Scope::Personal, KeyEpoch::FIRST, key(2)),
            Err(Conflict)
        );
    }

    #[test]
    fn malformed_files_are_refused_without_echoing_keys() {
        let secret = B64.encode([7u8; 32]);
        let cases = [
            "nope".to_owned(),
            r#"{"version": 2, "scopes": {}}"#.to_owned(),
            format!(r#"{{"version": 1, "scopes": {{"bad scope": {{"1": "{secret}"}}}}}}"#),
            format!(r#"{{"version": 1, "scopes": {{"personal": {{"0": "{secret}"}}}}}}"#),
            r#"{"version": 1, "scopes": {"personal": {"1": "***"}}}"#.to_owned(),
            r#"{"version": 1, "scopes": {"personal": {"1": "AAAA"}}}"#.to_owned(),
            r#"{"version": 1, "scopes": {}, "extra": 1}"#.to_owned(),
        ];
        for case in cases {
            let err = KeyRing::decode(case.as_bytes()).unwrap_err();
            assert!(!err.contains(&secret), "{err}");
        }
    }
}
