//! Crypto envelopes: sealing message content, session-key wraps between devices, key
//! rotation and keys at rest. Pure functions; randomness is passed in.
//!
//! # Shape
//!
//! ```text
//!   SessionKey (per session, per KeyEpoch)
//!     ├─ seal_message / open_message ........ message content, AAD = MessageAad
//!     ├─ seal_with_aad / open_with_aad ...... oplog payloads, AAD = caller's op header
//!     ├─ wrap_session_key / unwrap_session_key  to another device: X25519 + HKDF-SHA256
//!     │                                          + XChaCha20-Poly1305, Ed25519-signed
//!     ├─ distribute_session_key / rotate_session_key   to every (remaining) device
//!     └─ seal_session_key_at_rest ............ under this device's DeviceLocalKey
//! ```
//!
//! # Rules every function here follows
//!
//! - **No ambient randomness.** Anything that needs a nonce or an ephemeral key takes
//!   `&mut impl rand_core::CryptoRngCore` and draws from it *inside* the call, so a nonce can
//!   neither be chosen nor reused by the caller. Production draws keys from `OsRng` and
//!   nonces from the application's default nonce source (ChaCha12 seeded and reseeded from the
//!   OS); tests pass a seeded RNG.
//! - **Everything sealed is bound to its context.** Associated data (and the signed bytes
//!   of a wrap) use one canonical, length-prefixed, domain-separated encoding; the exact
//!   layouts are documented in each module.
//! - **Secrets stay secret.** Key types zeroize on drop, print as `Name(<redacted>)`, have
//!   no `Display`, and only give up their bytes through the loudly named `expose_secret`.
//!   Decrypted plaintext comes back as `Zeroizing<Vec<u8>>`. [`CryptoError`] never carries
//!   key material, and a failed decryption never says which input was wrong.
//! - **No panics on bad input.** Malformed wire data is a typed [`CryptoError`].

mod canon;
pub mod envelope;
mod error;
pub mod identity;
pub mod key_wrap;
pub mod local_seal;
pub mod rotation;
pub mod session_key;
#[cfg(test)]
mod test_support;
mod xchacha;

pub use envelope::{
    open_message, open_parts_with_aad, open_with_aad, seal_message, seal_with_aad, Algorithm,
    MessageAad, SealedContent, SealedContentWire, NONCE_LEN, TAG_LEN,
};
pub use error::CryptoError;
pub use identity::{DevicePublicKeys, DevicePublicKeysWire, DeviceSecretKeys};
pub use key_wrap::{
    unwrap_session_key, wrap_session_key, SessionKeyWrap, SessionKeyWrapRow, WrapContext,
    WRAP_KDF_SALT,
};
pub use local_seal::{
    open_session_key_at_rest, seal_session_key_at_rest, DeviceLocalKey, LocalSealedKey,
};
pub use rotation::{
    distribute_session_key, rotate_session_key, ActiveDevice, RotatedKey, WrapSender,
};
pub use session_key::{KeyEpoch, SessionKey, KEY_LEN};
