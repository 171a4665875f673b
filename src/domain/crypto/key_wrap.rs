//! Session-key wraps: handing a session key from one device to another through the cloud.
//!
//! The sender seals the key to the recipient's X25519 public key with a one-time ephemeral
//! key pair, and signs the whole wrap with its own Ed25519 identity key. The cloud only stores
//! the wrap; it can neither read the key nor substitute a wrap of its own, because recipients
//! verify the signature against the sender's *registered* key before doing anything else.
//!
//! # Wrapping, step by step
//!
//! 1. `e` = fresh X25519 secret from the caller's RNG; `E` = its public key.
//! 2. `dh` = X25519(`e`, recipient X25519 public key `R`). An all-zero `dh` (a low-order `R`)
//!    is refused with [`CryptoError::LowOrderPoint`].
//! 3. `k` = HKDF-SHA256(salt = [`WRAP_KDF_SALT`], ikm = `dh`, info, 32 bytes), where
//!
//!    ```text
//!    info = lp("tandem-wrap-kdf-v1") || lp(session_id) || lp(key_epoch u32 BE)
//!        || lp(sender_device_id) || lp(recipient_device_id) || lp(E) || lp(R)
//!    ```
//!
//!    (`lp(x) = u64_be(len(x)) || x`, ids as 16 raw UUID bytes). Binding `R` as well as `E`
//!    follows HPKE's key-schedule context: the key is tied to the exact recipient key.
//! 4. `ciphertext` = XChaCha20-Poly1305(`k`, random 24-byte nonce, plaintext = the 32-byte
//!    session key, aad = `info`): 48 bytes.
//! 5. `signature` = Ed25519(sender identity key, signed bytes), where
//!
//!    ```text
//!    signed = lp("tandem-wrap-sig-v1") || lp("xchacha20poly1305") || lp(session_id)
//!          || lp(key_epoch u32 BE) || lp(sender_device_id) || lp(recipient_device_id)
//!          || lp(ephemeral_public_key) || lp(nonce) || lp(ciphertext)
//!    ```
//!
//! # Unwrapping
//!
//! [`unwrap_session_key`] verifies the signature first (strict Ed25519 verification) and
//! refuses anything unsigned, forged, signed by another device or altered after signing
//! with [`CryptoError::BadSignature`]; then checks that the wrap names this device as its
//! recipient ([`CryptoError::WrongRecipient`]); only then runs the key agreement and decrypts.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::Signature;
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::canon::Canon;
use super::envelope::{decode_array, open_raw, seal_raw, Algorithm, NONCE_LEN};
use super::identity::{
    verifying_key, DevicePublicKeys, DeviceSecretKeys, PUBLIC_KEY_LEN, SIGNATURE_LEN,
};
use super::session_key::{KeyEpoch, SessionKey, KEY_LEN};
use super::CryptoError;
use crate::domain::ids::{DeviceId, SessionId};

/// The HKDF-SHA256 salt of every wrap key derivation (fixed and public, as HKDF allows).
pub const WRAP_KDF_SALT: &[u8] = b"tandem-session-key-wrap-v1";
/// Domain-separation tag of the HKDF info (also the wrap's AEAD associated data).
pub const WRAP_KDF_INFO_TAG: &str = "tandem-wrap-kdf-v1";
/// Domain-separation tag of the bytes a wrap's signature covers.
pub const WRAP_SIGNATURE_TAG: &str = "tandem-wrap-sig-v1";

/// Who hands which key generation of which session to whom.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WrapContext {
    /// The session whose key is wrapped.
    pub session_id: SessionId,
    /// The epoch of the wrapped key.
    pub key_epoch: KeyEpoch,
    /// The device that wraps and signs.
    pub sender_device_id: DeviceId,
    /// The device the wrap is addressed to.
    pub recipient_device_id: DeviceId,
}

/// A signed session-key wrap (one row of the cloud `session_key_wraps` table).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionKeyWrap {
    /// The session whose key is wrapped.
    pub session_id: SessionId,
    /// The epoch of the wrapped key.
    pub key_epoch: KeyEpoch,
    /// The device that wrapped and signed.
    pub sender_device_id: DeviceId,
    /// The device the wrap is addressed to.
    pub recipient_device_id: DeviceId,
    /// The sender's one-time X25519 public key.
    pub ephemeral_public_key: [u8; PUBLIC_KEY_LEN],
    /// The XChaCha20-Poly1305 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The encrypted session key with its tag (48 bytes when well formed).
    pub ciphertext: Vec<u8>,
    /// The sender's Ed25519 signature over [`SessionKeyWrap::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl SessionKeyWrap {
    /// The wrap's addressing fields.
    pub fn context(&self) -> WrapContext {
        WrapContext {
            session_id: self.session_id,
            key_epoch: self.key_epoch,
            sender_device_id: self.sender_device_id,
            recipient_device_id: self.recipient_device_id,
        }
    }

    /// The canonical bytes the signature covers (layout in the module docs).
    pub fn signed_bytes(&self) -> Vec<u8> {
        Canon::new(WRAP_SIGNATURE_TAG)
            .bytes(Algorithm::XChaCha20Poly1305.as_str().as_bytes())
            .uuid(self.session_id.as_uuid())
            .u32(self.key_epoch.get())
            .uuid(self.sender_device_id.as_uuid())
            .uuid(self.recipient_device_id.as_uuid())
            .bytes(&self.ephemeral_public_key)
            .bytes(&self.nonce)
            .bytes(&self.ciphertext)
            .finish()
    }

    /// The row form, binary fields as standard padded base64.
    pub fn to_row(&self) -> SessionKeyWrapRow {
        SessionKeyWrapRow {
            session_id: self.session_id,
            key_epoch: self.key_epoch,
            recipient_device_id: self.recipient_device_id,
            sender_device_id: self.sender_device_id,
            ephemeral_public_key: B64.encode(self.ephemeral_public_key),
            nonce: B64.encode(self.nonce),
            ciphertext: B64.encode(&self.ciphertext),
            signature: B64.encode(self.signature),
        }
    }
}

/// One row of the cloud `session_key_wraps` table: ids and epoch typed, everything else
/// standard padded base64 text.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionKeyWrapRow {
    /// The session whose key is wrapped.
    pub session_id: SessionId,
    /// The epoch of the wrapped key.
    pub key_epoch: KeyEpoch,
    /// The device the wrap is addressed to.
    pub recipient_device_id: DeviceId,
    /// The device that wrapped and signed.
    pub sender_device_id: DeviceId,
    /// Base64 of the 32-byte ephemeral X25519 public key.
    pub ephemeral_public_key: String,
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of the encrypted session key.
    pub ciphertext: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub signature: String,
}

impl SessionKeyWrapRow {
    /// Decodes the row. A missing, non-base64 or wrong-length signature is reported as
    /// [`CryptoError::BadSignature`] (the wrap is unsigned); other malformed fields as
    /// encoding errors. Decoding does not verify anything: [`unwrap_session_key`] does.
    pub fn decode(&self) -> Result<SessionKeyWrap, CryptoError> {
        let signature = decode_array::<SIGNATURE_LEN>(&self.signature, "wrap signature")
            .map_err(|_| CryptoError::BadSignature)?;
        Ok(SessionKeyWrap {
            session_id: self.session_id,
            key_epoch: self.key_epoch,
            sender_device_id: self.sender_device_id,
            recipient_device_id: self.recipient_device_id,
            ephemeral_public_key: decode_array(&self.ephemeral_public_key, "ephemeral key")?,
            nonce: decode_array(&self.nonce, "wrap nonce")?,
            ciphertext: B64
                .decode(&self.ciphertext)
                .map_err(|_| CryptoError::InvalidBase64 {
                    what: "wrap ciphertext",
                })?,
            signature,
        })
    }
}

/// Wraps `key` for one recipient device and signs the wrap as the sender.
///
/// `rng` supplies the ephemeral X25519 secret and the nonce.
pub fn wrap_session_key(
    key: &SessionKey,
    context: &WrapContext,
    sender: &DeviceSecretKeys,
    recipient: &DevicePublicKeys,
    rng: &mut impl CryptoRngCore,
) -> Result<SessionKeyWrap, CryptoError> {
    let mut ephemeral_bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ephemeral_bytes.as_mut());
    let ephemeral = StaticSecret::from(*ephemeral_bytes);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();

    let info = kdf_info(context, &ephemeral_public, &recipient.x25519);
    let wrap_key = derive_wrap_key(&ephemeral, &recipient.x25519, &info)?;
    let (nonce, ciphertext) = seal_raw(&wrap_key, &info, key.expose_secret(), rng)?;

    let mut wrap = SessionKeyWrap {
        session_id: context.session_id,
        key_epoch: context.key_epoch,
        sender_device_id: context.sender_device_id,
        recipient_device_id: context.recipient_device_id,
        ephemeral_public_key: ephemeral_public,
        nonce,
        ciphertext,
        signature: [0u8; SIGNATURE_LEN],
    };
    wrap.signature = sender.sign(&wrap.signed_bytes());
    Ok(wrap)
}

/// Verifies and opens a wrap addressed to this device.
///
/// `sender_ed25519` is the Ed25519 key *registered* for `wrap.sender_device_id` (looked up
/// by the caller from its device roster, never taken from the wrap). `recipient_device` is
/// this device's id: the secret keys do not carry it, and the addressing check needs it.
///
/// Order: signature ([`CryptoError::BadSignature`]), recipient
/// ([`CryptoError::WrongRecipient`]), key agreement ([`CryptoError::LowOrderPoint`]),
/// decryption ([`CryptoError::Decrypt`]).
pub fn unwrap_session_key(
    wrap: &SessionKeyWrap,
    recipient_device: DeviceId,
    recipient: &DeviceSecretKeys,
    sender_ed25519: &[u8; PUBLIC_KEY_LEN],
) -> Result<SessionKey, CryptoError> {
    let verifier = verifying_key(sender_ed25519)?;
    let signature = Signature::from_bytes(&wrap.signature);
    verifier
        .verify_strict(&wrap.signed_bytes(), &signature)
        .map_err(|_| CryptoError::BadSignature)?;

    if wrap.recipient_device_id != recipient_device {
        return Err(CryptoError::WrongRecipient {
            expected: recipient_device,
            found: wrap.recipient_device_id,
        });
    }

    let own_public = PublicKey::from(recipient.x25519()).to_bytes();
    let info = kdf_info(&wrap.context(), &wrap.ephemeral_public_key, &own_public);
    let wrap_key = derive_wrap_key(recipient.x25519(), &wrap.ephemeral_public_key, &info)?;
    let plaintext = open_raw(&wrap_key, &wrap.nonce, &info, &wrap.ciphertext)?;
    SessionKey::from_slice(&plaintext)
}

/// The HKDF info (and AEAD associated data) of a wrap; layout in the module docs.
fn kdf_info(
    context: &WrapContext,
    ephemeral_public: &[u8; PUBLIC_KEY_LEN],
    recipient_public: &[u8; PUBLIC_KEY_LEN],
) -> Vec<u8> {
    Canon::new(WRAP_KDF_INFO_TAG)
        .uuid(context.session_id.as_uuid())
        .u32(context.key_epoch.get())
        .uuid(context.sender_device_id.as_uuid())
        .uuid(context.recipient_device_id.as_uuid())
        .bytes(ephemeral_public)
        .bytes(recipient_public)
        .finish()
}

/// X25519 then HKDF-SHA256; refuses the all-zero shared secret of a low-order peer key.
fn derive_wrap_key(
    own: &StaticSecret,
    their_public: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let shared = own.diffie_hellman(&PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(CryptoError::LowOrderPoint);
    }
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    Hkdf::<Sha256>::new(Some(WRAP_KDF_SALT), shared.as_bytes())
        .expand(info, okm.as_mut())
        // HKDF-SHA256 only refuses outputs longer than 8160 bytes; 32 is always accepted.
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(okm)
}

#[cfg(test)]
#[path = "key_wrap_tests.rs"]
mod tests;
