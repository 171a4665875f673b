//! Session keys at rest: sealed under a device-local key, so the session-key store holds
//! ciphertext only.
//!
//! The device-local key lives outside the database (OS keychain, or a file readable only by
//! the user); where it comes from is the app's business. Each stored session key is sealed
//! with XChaCha20-Poly1305 under it, with associated data
//!
//! ```text
//! lp("tandem-local-seal-v1") || lp(session_id 16 raw bytes) || lp(key_epoch u32 BE)
//!     || lp("xchacha20poly1305")                       (lp(x) = u64_be(len(x)) || x)
//! ```
//!
//! so a row copied onto another session or epoch does not open. The stored blob is
//!
//! ```text
//! 0x01 || nonce (24 bytes) || ciphertext + tag (48 bytes)            73 bytes
//! ```

use rand_core::CryptoRngCore;

use super::canon::Canon;
use super::envelope::{open_raw, seal_raw, Algorithm, NONCE_LEN, TAG_LEN};
use super::session_key::{symmetric_key, KeyEpoch, SessionKey, KEY_LEN};
use super::CryptoError;
use crate::domain::ids::SessionId;

/// Domain-separation tag of the at-rest associated data.
pub const LOCAL_SEAL_AAD_TAG: &str = "tandem-local-seal-v1";
/// Format version of the at-rest blob.
pub const LOCAL_SEAL_VERSION: u8 = 1;
const SEALED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

symmetric_key!(
    /// The device-local 256-bit key that protects session keys at rest.
    DeviceLocalKey,
    "device-local key"
);

/// A session key sealed for storage.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LocalSealedKey {
    /// The random nonce drawn at seal time.
    pub nonce: [u8; NONCE_LEN],
    /// The sealed session key with its tag (48 bytes).
    pub ciphertext: Vec<u8>,
}

impl LocalSealedKey {
    /// The storage blob described in the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(LOCAL_SEAL_VERSION);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses a storage blob, checking version and length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        const WHAT: &str = "sealed session key";
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(CryptoError::InvalidLength {
                what: WHAT,
                expected: SEALED_LEN,
                found: 0,
            });
        };
        if version != LOCAL_SEAL_VERSION {
            return Err(CryptoError::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        if bytes.len() != SEALED_LEN {
            return Err(CryptoError::InvalidLength {
                what: WHAT,
                expected: SEALED_LEN,
                found: bytes.len(),
            });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let mut nonce_array = [0u8; NONCE_LEN];
        nonce_array.copy_from_slice(nonce);
        Ok(Self {
            nonce: nonce_array,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

fn local_aad(session_id: SessionId, epoch: KeyEpoch) -> Vec<u8> {
    Canon::new(LOCAL_SEAL_AAD_TAG)
        .uuid(session_id.as_uuid())
        .u32(epoch.get())
        .bytes(Algorithm::XChaCha20Poly1305.as_str().as_bytes())
        .finish()
}

/// Seals a session key for storage under the device-local key, bound to its session and
/// epoch, with a fresh nonce from `rng`.
pub fn seal_session_key_at_rest(
    local_key: &DeviceLocalKey,
    session_id: SessionId,
    epoch: KeyEpoch,
    key: &SessionKey,
    rng: &mut impl CryptoRngCore,
) -> Result<LocalSealedKey, CryptoError> {
    let (nonce, ciphertext) = seal_raw(
        local_key.expose_secret(),
        &local_aad(session_id, epoch),
        key.expose_secret(),
        rng,
    )?;
    Ok(LocalSealedKey { nonce, ciphertext })
}

/// Opens a stored session key. A wrong local key, session, epoch or altered blob is
/// [`CryptoError::Decrypt`].
pub fn open_session_key_at_rest(
    local_key: &DeviceLocalKey,
    session_id: SessionId,
    epoch: KeyEpoch,
    sealed: &LocalSealedKey,
) -> Result<SessionKey, CryptoError> {
    let plaintext = open_raw(
        local_key.expose_secret(),
        &sealed.nonce,
        &local_aad(session_id, epoch),
        &sealed.ciphertext,
    )?;
    SessionKey::from_slice(&plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::test_support::{assert_redacted, rng, session};

    fn setup() -> (DeviceLocalKey, SessionKey, LocalSealedKey) {
        let mut r = rng(21);
        let local = DeviceLocalKey::generate(&mut r);
        let key = SessionKey::generate(&mut r);
        let sealed =
            seal_session_key_at_rest(&local, session(1), KeyEpoch::new(4), &key, &mut r).unwrap();
        (local, key, sealed)
    }

    #[test]
    fn round_trip_through_the_storage_blob() {
        let (local, key, sealed) = setup();
        let blob = sealed.to_bytes();
        assert_eq!(blob.len(), 73);
        assert_eq!(blob[0], LOCAL_SEAL_VERSION);
        let parsed = LocalSealedKey::from_bytes(&blob).unwrap();
        let opened =
            open_session_key_at_rest(&local, session(1), KeyEpoch::new(4), &parsed).unwrap();
        assert_eq!(opened.expose_secret(), key.expose_secret());
    }

    #[test]
    fn context_and_key_are_bound() {
        let (local, _, sealed) = setup();
        let other = DeviceLocalKey::generate(&mut rng(99));
        let cases = [
            (&other, session(1), KeyEpoch::new(4)),
            (&local, session(2), KeyEpoch::new(4)),
            (&local, session(1), KeyEpoch::new(5)),
        ];
        for (key, sid, epoch) in cases {
            assert_eq!(
                open_session_key_at_rest(key, sid, epoch, &sealed).unwrap_err(),
                CryptoError::Decrypt
            );
        }
    }

    #[test]
    fn every_byte_of_the_blob_is_authenticated() {
        let (local, _, sealed) = setup();
        let blob = sealed.to_bytes();
        for i in 1..blob.len() {
            let mut altered = blob.clone();
            altered[i] ^= 0x01;
            let parsed = LocalSealedKey::from_bytes(&altered).unwrap();
            assert_eq!(
                open_session_key_at_rest(&local, session(1), KeyEpoch::new(4), &parsed)
                    .unwrap_err(),
                CryptoError::Decrypt,
                "byte {i}"
            );
        }
    }

    #[test]
    fn malformed_blobs_are_typed_errors() {
        let (_, _, sealed) = setup();
        let mut blob = sealed.to_bytes();
        assert!(matches!(
            LocalSealedKey::from_bytes(&[]),
            Err(CryptoError::InvalidLength { found: 0, .. })
        ));
        assert!(matches!(
            LocalSealedKey::from_bytes(&blob[..72]),
            Err(CryptoError::InvalidLength { found: 72, .. })
        ));
        blob[0] = 9;
        assert!(matches!(
            LocalSealedKey::from_bytes(&blob),
            Err(CryptoError::UnsupportedVersion { version: 9, .. })
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let (local, key, sealed) = setup();
        let debug = format!("{local:?} {local:#?} {sealed:?}");
        assert!(debug.contains("DeviceLocalKey(<redacted>)"));
        assert_redacted(&debug, local.expose_secret());
        assert_redacted(&debug, key.expose_secret());
    }
}
