//! The one error type of the crypto module.
//!
//! Variants say *what* went wrong in terms a caller can act on, never *why* in terms that
//! would help an attacker: a failed AEAD open is always the bare [`CryptoError::Decrypt`],
//! whether the key, the nonce, the associated data or the ciphertext was wrong. No variant
//! carries key material, plaintext or ciphertext.

use crate::domain::ids::DeviceId;

/// Why a cryptographic operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authenticated decryption failed: wrong key, altered ciphertext, nonce or tag, or
    /// associated data (context) that differs from what was sealed. Deliberately opaque.
    #[error("decryption failed: wrong key, tampered data or mismatched context")]
    Decrypt,
    /// Encryption was refused (the AEAD only rejects inputs beyond its ~256 GiB limit).
    #[error("encryption failed: input exceeds the AEAD limit")]
    Encrypt,
    /// A key wrap's Ed25519 signature is missing, malformed, forged, made by another device,
    /// or does not cover the wrap's current field values.
    #[error("signature verification failed")]
    BadSignature,
    /// A correctly signed key wrap is addressed to a different device.
    #[error("key wrap is addressed to device {found}, not to this device {expected}")]
    WrongRecipient {
        /// This device.
        expected: DeviceId,
        /// The recipient named in the wrap.
        found: DeviceId,
    },
    /// An X25519 exchange produced the all-zero shared secret: the peer's public key is a
    /// low-order point, which would make the derived key public.
    #[error("X25519 public key is a low-order point (all-zero shared secret)")]
    LowOrderPoint,
    /// Bytes that should be an Ed25519 public key are not a valid curve point.
    #[error("invalid {what} public key")]
    InvalidPublicKey {
        /// Which key.
        what: &'static str,
    },
    /// A field has the wrong length.
    #[error("invalid {what}: expected {expected} bytes, found {found}")]
    InvalidLength {
        /// Which field.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// A field is not valid standard (padded) base64.
    #[error("invalid {what}: not standard base64")]
    InvalidBase64 {
        /// Which field.
        what: &'static str,
    },
    /// A stored blob has a format version this build does not know.
    #[error("unsupported {what} format version {version}")]
    UnsupportedVersion {
        /// Which blob.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The algorithm name is not one this build implements.
    #[error("unsupported encryption algorithm {found:?}")]
    UnsupportedAlgorithm {
        /// The name found (truncated to 32 characters).
        found: String,
    },
    /// The key epoch counter cannot be advanced any further.
    #[error("key epoch exhausted")]
    EpochExhausted,
    /// A key rotation request is inconsistent.
    #[error("invalid key rotation: {reason}")]
    InvalidRotation {
        /// What was inconsistent.
        reason: &'static str,
    },
}

impl CryptoError {
    /// Builds [`CryptoError::UnsupportedAlgorithm`], bounding the echoed name.
    pub(crate) fn unsupported_algorithm(found: &str) -> Self {
        Self::UnsupportedAlgorithm {
            found: found.chars().take(32).collect(),
        }
    }
}
