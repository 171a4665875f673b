//! Device identities: one X25519 key pair (to receive key wraps) and one Ed25519 key pair
//! (to sign the key wraps it sends) per device.
//!
//! The public halves are registered in the cloud `devices` table; the secret halves never
//! leave the device and are stored through [`DeviceSecretKeys::to_storage_bytes`], a small
//! versioned blob meant for the OS keychain or a file readable only by the user:
//!
//! ```text
//! 0x01 || x25519 secret (32 bytes) || ed25519 seed (32 bytes)        65 bytes
//! ```

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::envelope::decode_array;
use super::CryptoError;

/// Length of every public key here (X25519 and Ed25519 alike).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Format version of the secret-key storage blob.
pub const DEVICE_KEYS_STORAGE_VERSION: u8 = 1;
const STORAGE_LEN: usize = 1 + 32 + 32;

/// A device's secret keys. Both halves zeroize themselves on drop (`x25519-dalek` and
/// `ed25519-dalek` are built with their `zeroize` features); `Debug` shows only public keys.
pub struct DeviceSecretKeys {
    x25519: StaticSecret,
    ed25519: SigningKey,
}

impl DeviceSecretKeys {
    /// Draws both key pairs from the caller's cryptographically secure RNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut x = Zeroizing::new([0u8; 32]);
        let mut ed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(x.as_mut());
        rng.fill_bytes(ed.as_mut());
        Self::from_parts(StaticSecret::from(*x), SigningKey::from_bytes(&ed))
    }

    /// Assembles keys obtained elsewhere.
    pub fn from_parts(x25519: StaticSecret, ed25519: SigningKey) -> Self {
        Self { x25519, ed25519 }
    }

    /// The public halves, for registration.
    pub fn public_keys(&self) -> DevicePublicKeys {
        DevicePublicKeys {
            x25519: PublicKey::from(&self.x25519).to_bytes(),
            ed25519: self.ed25519.verifying_key().to_bytes(),
        }
    }

    /// The storage blob described in the module docs. Seal or protect it before writing it
    /// anywhere; it is the device's whole identity.
    pub fn to_storage_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(STORAGE_LEN));
        out.push(DEVICE_KEYS_STORAGE_VERSION);
        out.extend_from_slice(self.x25519.as_bytes());
        out.extend_from_slice(self.ed25519.as_bytes());
        out
    }

    /// Parses a storage blob, checking its version and length.
    pub fn from_storage_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        const WHAT: &str = "device secret keys";
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(CryptoError::InvalidLength {
                what: WHAT,
                expected: STORAGE_LEN,
                found: 0,
            });
        };
        if version != DEVICE_KEYS_STORAGE_VERSION {
            return Err(CryptoError::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        if bytes.len() != STORAGE_LEN {
            return Err(CryptoError::InvalidLength {
                what: WHAT,
                expected: STORAGE_LEN,
                found: bytes.len(),
            });
        }
        let mut x = Zeroizing::new([0u8; 32]);
        let mut ed = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&rest[..32]);
        ed.copy_from_slice(&rest[32..]);
        Ok(Self::from_parts(
            StaticSecret::from(*x),
            SigningKey::from_bytes(&ed),
        ))
    }

    /// The storage blob as standard base64 (for keychains that hold strings).
    pub fn to_storage_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.to_storage_bytes().as_slice()))
    }

    /// Parses [`DeviceSecretKeys::to_storage_base64`] output.
    pub fn from_storage_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(B64.decode(text).map_err(|_| CryptoError::InvalidBase64 {
            what: "device secret keys",
        })?);
        Self::from_storage_bytes(&bytes)
    }

    /// The X25519 secret, for key agreement inside this module.
    pub(crate) fn x25519(&self) -> &StaticSecret {
        &self.x25519
    }

    /// Signs `message` with the device's Ed25519 key (deterministic, no RNG needed).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.ed25519.sign(message).to_bytes()
    }
}

impl fmt::Debug for DeviceSecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSecretKeys")
            .field("public", &self.public_keys())
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// A device's public keys, as registered in the cloud `devices` table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKeys {
    /// X25519 public key: key wraps addressed to the device are derived from it.
    pub x25519: [u8; PUBLIC_KEY_LEN],
    /// Ed25519 verifying key: checks the signatures on key wraps the device sends.
    pub ed25519: [u8; PUBLIC_KEY_LEN],
}

impl DevicePublicKeys {
    /// The X25519 key as standard base64.
    pub fn x25519_base64(&self) -> String {
        B64.encode(self.x25519)
    }

    /// The Ed25519 key as standard base64.
    pub fn ed25519_base64(&self) -> String {
        B64.encode(self.ed25519)
    }

    /// Parses both keys from standard base64. The Ed25519 key must be a valid curve point;
    /// a low-order X25519 key is caught when a wrap to it is attempted.
    pub fn from_base64(x25519: &str, ed25519: &str) -> Result<Self, CryptoError> {
        let keys = Self {
            x25519: decode_array(x25519, "x25519 public key")?,
            ed25519: decode_array(ed25519, "ed25519 public key")?,
        };
        keys.verifying_key()?;
        Ok(keys)
    }

    /// The wire form.
    pub fn to_wire(&self) -> DevicePublicKeysWire {
        DevicePublicKeysWire {
            x25519_public_key: self.x25519_base64(),
            ed25519_public_key: self.ed25519_base64(),
        }
    }

    /// The Ed25519 key as a verifying key.
    pub(crate) fn verifying_key(&self) -> Result<VerifyingKey, CryptoError> {
        verifying_key(&self.ed25519)
    }
}

/// Parses Ed25519 public key bytes.
pub(crate) fn verifying_key(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<VerifyingKey, CryptoError> {
    VerifyingKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidPublicKey { what: "ed25519" })
}

impl fmt::Debug for DevicePublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePublicKeys")
            .field("x25519", &self.x25519_base64())
            .field("ed25519", &self.ed25519_base64())
            .finish()
    }
}

/// The JSON/row form of [`DevicePublicKeys`]: both keys as standard padded base64 text.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DevicePublicKeysWire {
    /// X25519 public key.
    pub x25519_public_key: String,
    /// Ed25519 public key.
    pub ed25519_public_key: String,
}

impl DevicePublicKeysWire {
    /// Decodes and validates the wire form.
    pub fn decode(&self) -> Result<DevicePublicKeys, CryptoError> {
        DevicePublicKeys::from_base64(&self.x25519_public_key, &self.ed25519_public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::test_support::{assert_redacted, rng};

    #[test]
    fn generation_is_deterministic_in_the_rng_and_keys_differ() {
        let a = DeviceSecretKeys::generate(&mut rng(1)).public_keys();
        let b = DeviceSecretKeys::generate(&mut rng(1)).public_keys();
        let c = DeviceSecretKeys::generate(&mut rng(2)).public_keys();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a.x25519, a.ed25519);
    }

    #[test]
    fn storage_round_trip_preserves_the_identity() {
        let keys = DeviceSecretKeys::generate(&mut rng(1));
        let bytes = keys.to_storage_bytes();
        assert_eq!(bytes.len(), 65);
        assert_eq!(bytes[0], DEVICE_KEYS_STORAGE_VERSION);
        let back = DeviceSecretKeys::from_storage_bytes(&bytes).unwrap();
        assert_eq!(back.public_keys(), keys.public_keys());
        assert_eq!(back.sign(b"m"), keys.sign(b"m"));
        let b64 = keys.to_storage_base64();
        let back = DeviceSecretKeys::from_storage_base64(&b64).unwrap();
        assert_eq!(back.public_keys(), keys.public_keys());
    }

    #[test]
    fn storage_rejects_bad_blobs() {
        let keys = DeviceSecretKeys::generate(&mut rng(1));
        let mut bytes = keys.to_storage_bytes().to_vec();
        assert!(matches!(
            DeviceSecretKeys::from_storage_bytes(&[]),
            Err(CryptoError::InvalidLength { found: 0, .. })
        ));
        assert!(matches!(
            DeviceSecretKeys::from_storage_bytes(&bytes[..64]),
            Err(CryptoError::InvalidLength { found: 64, .. })
        ));
        bytes[0] = 2;
        assert!(matches!(
            DeviceSecretKeys::from_storage_bytes(&bytes),
            Err(CryptoError::UnsupportedVersion { version: 2, .. })
        ));
        assert!(matches!(
            DeviceSecretKeys::from_storage_base64("not base64!"),
            Err(CryptoError::InvalidBase64 { .. })
        ));
    }

    #[test]
    fn public_keys_round_trip_through_base64_and_json() {
        let public = DeviceSecretKeys::generate(&mut rng(1)).public_keys();
        let wire = public.to_wire();
        let json = serde_json::to_string(&wire).unwrap();
        let parsed: DevicePublicKeysWire = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.decode().unwrap(), public);
        assert_eq!(
            DevicePublicKeys::from_base64(&public.x25519_base64(), &public.ed25519_base64())
                .unwrap(),
            public
        );
    }

    #[test]
    fn public_keys_reject_bad_input() {
        let public = DeviceSecretKeys::generate(&mut rng(1)).public_keys();
        assert!(matches!(
            DevicePublicKeys::from_base64("AAAA", &public.ed25519_base64()),
            Err(CryptoError::InvalidLength { found: 3, .. })
        ));
        assert!(matches!(
            DevicePublicKeys::from_base64(&public.x25519_base64(), "@@"),
            Err(CryptoError::InvalidBase64 { .. })
        ));
        // y = 2 is not on the Edwards curve: decompression fails.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            DevicePublicKeys::from_base64(&public.x25519_base64(), &B64.encode(not_a_point))
                .unwrap_err(),
            CryptoError::InvalidPublicKey { what: "ed25519" }
        );
    }

    #[test]
    fn debug_shows_no_secret_bytes() {
        let keys = DeviceSecretKeys::generate(&mut rng(7));
        let debug = format!("{keys:?} {keys:#?}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains(&keys.public_keys().x25519_base64()));
        let storage = keys.to_storage_bytes();
        assert_redacted(&debug, &storage[1..33]);
        assert_redacted(&debug, &storage[33..]);
        assert_redacted(&debug, &storage);
    }
}
