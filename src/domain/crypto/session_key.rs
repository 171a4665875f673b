//! Session keys (the symmetric keys that seal message content) and their epochs.
//!
//! A session has one key per [`KeyEpoch`]. Revoking a device rotates the session to the next
//! epoch with a fresh key that the revoked device never receives (see
//! [`rotate_session_key`](super::rotate_session_key)); older epochs stay readable by devices
//! that already hold them, which is what lets history written before a rotation be opened.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Length in bytes of every symmetric key in this module (XChaCha20-Poly1305 keys).
pub const KEY_LEN: usize = 32;

/// Defines a 32-byte symmetric secret key type: zeroized on drop, redacted in `Debug`, no
/// `Display`, no `PartialEq` (compare through `expose_secret` in tests only).
macro_rules! symmetric_key {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
        pub struct $name([u8; $crate::domain::crypto::KEY_LEN]);

        impl $name {
            /// Wraps raw key bytes. The caller should zeroize its own copy (for example by
            /// holding it in `zeroize::Zeroizing`).
            pub fn from_bytes(bytes: [u8; $crate::domain::crypto::KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Copies a key out of a slice, which must be exactly 32 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::domain::crypto::CryptoError> {
                let array: [u8; $crate::domain::crypto::KEY_LEN] =
                    bytes.try_into().map_err(|_| $crate::domain::crypto::CryptoError::InvalidLength {
                        what: $what,
                        expected: $crate::domain::crypto::KEY_LEN,
                        found: bytes.len(),
                    })?;
                Ok(Self(array))
            }

            /// Draws a fresh key from the caller's cryptographically secure RNG.
            pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
                let mut bytes = [0u8; $crate::domain::crypto::KEY_LEN];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The raw key bytes. Named loudly on purpose: every call site is a place where
            /// secret material leaves the type's protection (into a cipher, or into storage
            /// after sealing). Never log or persist the result in clear.
            pub fn expose_secret(&self) -> &[u8; $crate::domain::crypto::KEY_LEN] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}
pub(crate) use symmetric_key;

symmetric_key!(
    /// The 256-bit XChaCha20-Poly1305 key of one session epoch.
    ///
    /// The same type also serves as an oplog *scope key* for
    /// [`seal_with_aad`](super::seal_with_aad): both are 32 uniformly random bytes used with
    /// the same AEAD, and a second type would only duplicate this one.
    SessionKey,
    "session key"
);

/// The generation of a session's key: starts at [`KeyEpoch::FIRST`] and increases by one on
/// every rotation.
///
/// This is deliberately not the lease [`Epoch`](crate::domain::ids::Epoch): that one fences
/// executions, this one names key generations, and mixing them up must not compile. It is a
/// `u32` because it is bound into every sealed message and stored next to every wrap; four
/// billion rotations of one session is out of reach. (The cloud column should be `bigint`,
/// since PostgreSQL has no unsigned 32-bit integer.)
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyEpoch(u32);

impl KeyEpoch {
    /// The epoch of a session's first key.
    pub const FIRST: Self = Self(1);

    /// Wraps a raw epoch number.
    pub const fn new(value: u32) -> Self {
        Self(value)
    }

    /// The raw epoch number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The following epoch, or `None` when the counter is exhausted.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(value) => Some(Self(value)),
            None => None,
        }
    }
}

impl fmt::Display for KeyEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for KeyEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyEpoch({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::test_support::{assert_redacted, rng};
    use crate::domain::crypto::CryptoError;

    #[test]
    fn generate_is_driven_by_the_supplied_rng() {
        let a = SessionKey::generate(&mut rng(1));
        let b = SessionKey::generate(&mut rng(1));
        let c = SessionKey::generate(&mut rng(2));
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
    }

    #[test]
    fn from_slice_checks_length() {
        let key = SessionKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(key.expose_secret(), &[7u8; 32]);
        assert_eq!(
            SessionKey::from_slice(&[7u8; 31]).unwrap_err(),
            CryptoError::InvalidLength {
                what: "session key",
                expected: 32,
                found: 31
            }
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = SessionKey::generate(&mut rng(3));
        let debug = format!("{key:?} {key:#?}");
        assert!(debug.contains("SessionKey(<redacted>)"));
        assert_redacted(&debug, key.expose_secret());
    }

    #[test]
    fn epochs_advance_and_saturate_to_none() {
        assert_eq!(KeyEpoch::FIRST.next(), Some(KeyEpoch::new(2)));
        assert_eq!(KeyEpoch::new(u32::MAX).next(), None);
        assert_eq!(serde_json::to_string(&KeyEpoch::new(5)).unwrap(), "5");
        assert_eq!(format!("{:?}", KeyEpoch::new(5)), "KeyEpoch(5)");
    }
}
