//! Sealing message content (and any other payload) with XChaCha20-Poly1305.
//!
//! Every seal draws a fresh random 192-bit nonce from the caller's RNG *inside* the call, so a
//! caller cannot reuse a nonce by accident; at 192 bits, random nonces never collide in
//! practice, which is why XChaCha (and not 96-bit ChaCha20-Poly1305) is used.
//!
//! # Message associated data
//!
//! A message's ciphertext is bound to its context through [`MessageAad`]. The exact bytes
//! authenticated as associated data are (`lp(x) = u64_be(len(x)) || x`, see the `canon`
//! module):
//!
//! ```text
//! lp("tandem-msg-v1")          domain-separation tag and layout version
//! lp(session_id)               16 raw UUID bytes
//! lp(message_id)               16 raw UUID bytes
//! lp(seq)                      u64 big-endian
//! lp(sender_device)            16 raw UUID bytes
//! lp(key_epoch)                u32 big-endian
//! lp(alg)                      ASCII algorithm name, "xchacha20poly1305"
//! ```
//!
//! Opening with any of these fields different from sealing time fails with
//! [`CryptoError::Decrypt`]: a ciphertext moved to another message, session, position, sender
//! or epoch is refused.
//!
//! # Caller-supplied associated data
//!
//! [`seal_with_aad`] / [`open_with_aad`] serve payloads whose context the caller encodes
//! itself, such as oplog op payloads sealed with the scope key and bound to the op header
//! bytes. The authenticated bytes are `lp("tandem-aad-v1") || lp(caller_aad)`, so they can
//! never coincide with a message AAD even under the same key.
//!
//! # Wire form
//!
//! The ciphertext (with its 16-byte Poly1305 tag appended) and the nonce travel as standard
//! padded base64 in `content_encrypted` and `content_nonce`, next to `encryption_alg`, as in
//! the realtime conversation contract; see [`SealedContentWire`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::canon::Canon;
use super::session_key::{KeyEpoch, SessionKey, KEY_LEN};
use super::xchacha;
use super::CryptoError;
use crate::domain::ids::{DeviceId, MessageId, Seq, SessionId};

/// XChaCha20-Poly1305 decryption; every failure is the opaque [`CryptoError::Decrypt`].
pub(crate) use super::xchacha::open as open_raw;

/// Length of an XChaCha20-Poly1305 nonce in bytes (192 bits).
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Domain-separation tag of the message AAD layout.
pub const MESSAGE_AAD_TAG: &str = "tandem-msg-v1";
/// Domain-separation tag wrapped around caller-supplied AAD.
pub const GENERIC_AAD_TAG: &str = "tandem-aad-v1";

/// An AEAD algorithm this build implements. There is one today; the name is still carried
/// and authenticated so that a future algorithm cannot be confused with this one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Algorithm {
    /// XChaCha20-Poly1305 (192-bit nonce, 128-bit tag).
    #[default]
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305,
}

impl Algorithm {
    /// The algorithm's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::XChaCha20Poly1305 => "xchacha20poly1305",
        }
    }

    /// Parses a wire name; unknown names are [`CryptoError::UnsupportedAlgorithm`].
    pub fn parse(name: &str) -> Result<Self, CryptoError> {
        match name {
            "xchacha20poly1305" => Ok(Self::XChaCha20Poly1305),
            other => Err(CryptoError::unsupported_algorithm(other)),
        }
    }
}

/// The context a message's ciphertext is bound to (see the module docs for the byte layout).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MessageAad {
    /// The session the message belongs to.
    pub session_id: SessionId,
    /// The message's id.
    pub message_id: MessageId,
    /// The message's position in its session.
    pub seq: Seq,
    /// The device that authored (and sealed) the message.
    pub sender_device: DeviceId,
    /// The epoch of the session key used.
    pub key_epoch: KeyEpoch,
    /// The AEAD algorithm.
    pub alg: Algorithm,
}

impl MessageAad {
    /// A message context with the default algorithm.
    pub fn new(
        session_id: SessionId,
        message_id: MessageId,
        seq: Seq,
        sender_device: DeviceId,
        key_epoch: KeyEpoch,
    ) -> Self {
        Self {
            session_id,
            message_id,
            seq,
            sender_device,
            key_epoch,
            alg: Algorithm::default(),
        }
    }

    /// The canonical associated-data bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_message_aad(self, self.alg.as_str())
    }
}

/// The message AAD layout with an explicit algorithm name (tests use it to prove the name is
/// authenticated, which an enum with one variant cannot show).
fn encode_message_aad(aad: &MessageAad, alg: &str) -> Vec<u8> {
    Canon::new(MESSAGE_AAD_TAG)
        .uuid(aad.session_id.as_uuid())
        .uuid(aad.message_id.as_uuid())
        .u64(aad.seq.get())
        .uuid(aad.sender_device.as_uuid())
        .u32(aad.key_epoch.get())
        .bytes(alg.as_bytes())
        .finish()
}

fn encode_generic_aad(aad: &[u8]) -> Vec<u8> {
    Canon::new(GENERIC_AAD_TAG).bytes(aad).finish()
}

/// A sealed payload: algorithm, nonce and ciphertext with its tag appended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedContent {
    /// The AEAD algorithm.
    pub alg: Algorithm,
    /// The random nonce drawn at seal time.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

impl SealedContent {
    /// The ciphertext as standard base64 (the `content_encrypted` wire field).
    pub fn content_encrypted(&self) -> String {
        B64.encode(&self.ciphertext)
    }

    /// The nonce as standard base64 (the `content_nonce` wire field).
    pub fn content_nonce(&self) -> String {
        B64.encode(self.nonce)
    }

    /// Rebuilds sealed content from its wire fields, checking the algorithm name, the base64
    /// and the lengths (nonce exactly 24 bytes, ciphertext at least one tag long).
    pub fn from_base64(
        encryption_alg: &str,
        content_encrypted: &str,
        content_nonce: &str,
    ) -> Result<Self, CryptoError> {
        let alg = Algorithm::parse(encryption_alg)?;
        let nonce = decode_array::<NONCE_LEN>(content_nonce, "content nonce")?;
        let ciphertext = B64
            .decode(content_encrypted)
            .map_err(|_| CryptoError::InvalidBase64 {
                what: "content ciphertext",
            })?;
        if ciphertext.len() < TAG_LEN {
            return Err(CryptoError::InvalidLength {
                what: "content ciphertext",
                expected: TAG_LEN,
                found: ciphertext.len(),
            });
        }
        Ok(Self {
            alg,
            nonce,
            ciphertext,
        })
    }

    /// The wire form.
    pub fn to_wire(&self) -> SealedContentWire {
        SealedContentWire {
            encryption_alg: self.alg.as_str().to_owned(),
            content_encrypted: self.content_encrypted(),
            content_nonce: self.content_nonce(),
        }
    }
}

/// The JSON wire form of [`SealedContent`], field names as in the conversation message
/// contract (the other contract fields, ids, sequence number and timestamps, belong to the
/// message envelope built by the hot and cold paths).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SealedContentWire {
    /// Algorithm name, `"xchacha20poly1305"`.
    pub encryption_alg: String,
    /// Ciphertext plus tag, standard padded base64.
    pub content_encrypted: String,
    /// 24-byte nonce, standard padded base64.
    pub content_nonce: String,
}

impl SealedContentWire {
    /// Decodes and validates the wire form.
    pub fn decode(&self) -> Result<SealedContent, CryptoError> {
        SealedContent::from_base64(
            &self.encryption_alg,
            &self.content_encrypted,
            &self.content_nonce,
        )
    }
}

/// Seals a message's content under its session key, bound to `aad`, with a fresh random
/// nonce drawn from `rng`.
pub fn seal_message(
    key: &SessionKey,
    aad: &MessageAad,
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<SealedContent, CryptoError> {
    let (nonce, ciphertext) = seal_raw(key.expose_secret(), &aad.to_bytes(), plaintext, rng)?;
    Ok(SealedContent {
        alg: aad.alg,
        nonce,
        ciphertext,
    })
}

/// Opens a sealed message. Any difference in key, context, nonce or ciphertext is
/// [`CryptoError::Decrypt`]. The plaintext is zeroized when dropped.
pub fn open_message(
    key: &SessionKey,
    aad: &MessageAad,
    sealed: &SealedContent,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.alg != aad.alg {
        return Err(CryptoError::Decrypt);
    }
    open_raw(
        key.expose_secret(),
        &sealed.nonce,
        &aad.to_bytes(),
        &sealed.ciphertext,
    )
}

/// Seals `plaintext` bound to caller-encoded associated data (for example an op header), with
/// a fresh random nonce drawn from `rng`. The caller must encode `aad` canonically itself.
pub fn seal_with_aad(
    key: &SessionKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<SealedContent, CryptoError> {
    let (nonce, ciphertext) = seal_raw(
        key.expose_secret(),
        &encode_generic_aad(aad),
        plaintext,
        rng,
    )?;
    Ok(SealedContent {
        alg: Algorithm::XChaCha20Poly1305,
        nonce,
        ciphertext,
    })
}

/// Opens what [`seal_with_aad`] sealed, given the same key and associated data.
pub fn open_with_aad(
    key: &SessionKey,
    aad: &[u8],
    sealed: &SealedContent,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_parts_with_aad(key, aad, &sealed.nonce, &sealed.ciphertext)
}

/// [`open_with_aad`] over a nonce and ciphertext borrowed from elsewhere (a large sealed body
/// need not be copied into a [`SealedContent`] first).
pub fn open_parts_with_aad(
    key: &SessionKey,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_raw(
        key.expose_secret(),
        nonce,
        &encode_generic_aad(aad),
        ciphertext,
    )
}

/// XChaCha20-Poly1305 encryption with a nonce drawn here; shared by every sealing helper.
pub(crate) fn seal_raw(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ciphertext = xchacha::seal(key, &nonce, aad, plaintext)?;
    Ok((nonce, ciphertext))
}

/// Decodes standard base64 into an exact-size array.
pub(crate) fn decode_array<const N: usize>(
    text: &str,
    what: &'static str,
) -> Result<[u8; N], CryptoError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| CryptoError::InvalidBase64 { what })?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::InvalidLength {
            what,
            expected: N,
            found: bytes.len(),
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::crypto::test_support::{device, message, rng, session};

    fn aad() -> MessageAad {
        MessageAad::new(
            session(1),
            message(1),
            Seq::new(42),
            device(1),
            KeyEpoch::new(3),
        )
    }

    fn key(seed: u64) -> SessionKey {
        SessionKey::generate(&mut rng(seed))
    }

    #[test]
    fn message_round_trip() {
        let key = key(1);
        let sealed = seal_message(&key, &aad(), b"hello, world", &mut rng(2)).unwrap();
        assert_eq!(sealed.alg, Algorithm::XChaCha20Poly1305);
        assert_eq!(sealed.ciphertext.len(), 12 + TAG_LEN);
        let opened = open_message(&key, &aad(), &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"hello, world");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = key(1);
        let sealed = seal_message(&key, &aad(), b"", &mut rng(2)).unwrap();
        assert_eq!(sealed.ciphertext.len(), TAG_LEN);
        assert!(open_message(&key, &aad(), &sealed).unwrap().is_empty());
    }

    #[test]
    fn every_seal_draws_a_fresh_nonce() {
        let key = key(1);
        let mut r = rng(2);
        let a = seal_message(&key, &aad(), b"same", &mut r).unwrap();
        let b = seal_message(&key, &aad(), b"same", &mut r).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn aad_layout_is_exactly_as_documented() {
        let a = aad();
        let mut expected = Vec::new();
        let mut lp = |field: &[u8]| {
            expected.extend_from_slice(&(field.len() as u64).to_be_bytes());
            expected.extend_from_slice(field);
        };
        lp(b"tandem-msg-v1");
        lp(a.session_id.as_uuid().as_bytes());
        lp(a.message_id.as_uuid().as_bytes());
        lp(&42u64.to_be_bytes());
        lp(a.sender_device.as_uuid().as_bytes());
        lp(&3u32.to_be_bytes());
        lp(b"xchacha20poly1305");
        assert_eq!(a.to_bytes(), expected);
    }

    #[test]
    fn changing_any_aad_field_fails_to_open() {
        let key = key(1);
        let base = aad();
        let sealed = seal_message(&key, &base, b"bound to context", &mut rng(2)).unwrap();
        let variants = [
            MessageAad {
                session_id: session(2),
                ..base
            },
            MessageAad {
                message_id: message(2),
                ..base
            },
            MessageAad {
                seq: Seq::new(43),
                ..base
            },
            MessageAad {
                sender_device: device(2),
                ..base
            },
            MessageAad {
                key_epoch: KeyEpoch::new(4),
                ..base
            },
        ];
        for changed in variants {
            assert_eq!(
                open_message(&key, &changed, &sealed).unwrap_err(),
                CryptoError::Decrypt,
                "{changed:?}"
            );
        }
        // The algorithm name is authenticated too (only one variant exists, so change it at
        // the encoding level).
        let other_alg = encode_message_aad(&base, "chacha20poly1305");
        assert_ne!(other_alg, base.to_bytes());
        assert_eq!(
            open_raw(
                key.expose_secret(),
                &sealed.nonce,
                &other_alg,
                &sealed.ciphertext
            )
            .unwrap_err(),
            CryptoError::Decrypt
        );
        // Control: the unchanged context still opens.
        assert!(open_raw(
            key.expose_secret(),
            &sealed.nonce,
            &base.to_bytes(),
            &sealed.ciphertext
        )
        .is_ok());
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let sealed = seal_message(&key(1), &aad(), b"secret", &mut rng(2)).unwrap();
        assert_eq!(
            open_message(&key(9), &aad(), &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn every_single_bit_flip_of_nonce_ciphertext_or_tag_fails() {
        let key = key(1);
        let sealed = seal_message(&key, &aad(), b"small message", &mut rng(2)).unwrap();
        let mut checked = 0;
        for i in 0..NONCE_LEN {
            for bit in [0x01u8, 0x80] {
                let mut altered = sealed.clone();
                altered.nonce[i] ^= bit;
                assert_eq!(
                    open_message(&key, &aad(), &altered).unwrap_err(),
                    CryptoError::Decrypt
                );
                checked += 1;
            }
        }
        for i in 0..sealed.ciphertext.len() {
            for bit in [0x01u8, 0x80] {
                let mut altered = sealed.clone();
                altered.ciphertext[i] ^= bit;
                assert_eq!(
                    open_message(&key, &aad(), &altered).unwrap_err(),
                    CryptoError::Decrypt
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * (NONCE_LEN + 13 + TAG_LEN));
    }

    #[test]
    fn truncated_or_extended_ciphertext_fails() {
        let key = key(1);
        let sealed = seal_message(&key, &aad(), b"abc", &mut rng(2)).unwrap();
        for len in 0..sealed.ciphertext.len() {
            let mut altered = sealed.clone();
            altered.ciphertext.truncate(len);
            assert_eq!(
                open_message(&key, &aad(), &altered).unwrap_err(),
                CryptoError::Decrypt
            );
        }
        let mut longer = sealed;
        longer.ciphertext.push(0);
        assert_eq!(
            open_message(&key, &aad(), &longer).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn wire_form_round_trips_through_json() {
        let key = key(1);
        let sealed = seal_message(&key, &aad(), b"over the wire", &mut rng(2)).unwrap();
        let json = serde_json::to_value(sealed.to_wire()).unwrap();
        assert_eq!(json["encryption_alg"], "xchacha20poly1305");
        assert_eq!(json["content_nonce"], sealed.content_nonce());
        assert_eq!(json["content_encrypted"], sealed.content_encrypted());
        let wire: SealedContentWire = serde_json::from_value(json).unwrap();
        let decoded = wire.decode().unwrap();
        assert_eq!(decoded, sealed);
        assert_eq!(
            open_message(&key, &aad(), &decoded).unwrap().as_slice(),
            b"over the wire"
        );
    }

    #[test]
    fn malformed_wire_fields_are_typed_errors() {
        let nonce = B64.encode([0u8; NONCE_LEN]);
        let ct = B64.encode([0u8; TAG_LEN]);
        assert_eq!(
            SealedContent::from_base64("aes-gcm", &ct, &nonce).unwrap_err(),
            CryptoError::UnsupportedAlgorithm {
                found: "aes-gcm".into()
            }
        );
        assert_eq!(
            SealedContent::from_base64("xchacha20poly1305", &ct, "!!").unwrap_err(),
            CryptoError::InvalidBase64 {
                what: "content nonce"
            }
        );
        assert_eq!(
            SealedContent::from_base64("xchacha20poly1305", &ct, &B64.encode([0u8; 12]))
                .unwrap_err(),
            CryptoError::InvalidLength {
                what: "content nonce",
                expected: NONCE_LEN,
                found: 12
            }
        );
        assert_eq!(
            SealedContent::from_base64("xchacha20poly1305", "%%", &nonce).unwrap_err(),
            CryptoError::InvalidBase64 {
                what: "content ciphertext"
            }
        );
        assert!(matches!(
            SealedContent::from_base64("xchacha20poly1305", &B64.encode([0u8; 3]), &nonce),
            Err(CryptoError::InvalidLength { .. })
        ));
        let long = "x".repeat(1000);
        let CryptoError::UnsupportedAlgorithm { found } =
            SealedContent::from_base64(&long, &ct, &nonce).unwrap_err()
        else {
            panic!("expected UnsupportedAlgorithm");
        };
        assert_eq!(found.len(), 32);
    }

    #[test]
    fn generic_aad_round_trips_and_binds_its_bytes() {
        let k = key(1);
        let header = b"op header bytes";
        let sealed = seal_with_aad(&k, header, b"payload", &mut rng(2)).unwrap();
        assert_eq!(
            open_with_aad(&k, header, &sealed).unwrap().as_slice(),
            b"payload"
        );
        assert_eq!(
            open_with_aad(&k, b"op header byteS", &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        assert_eq!(
            open_with_aad(&key(9), header, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn generic_and_message_domains_are_separated() {
        let key = key(1);
        let msg_aad = aad();
        let sealed = seal_message(&key, &msg_aad, b"x", &mut rng(2)).unwrap();
        // Passing the message AAD bytes as "caller AAD" must not open a message.
        assert_eq!(
            open_with_aad(&key, &msg_aad.to_bytes(), &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        let sealed = seal_with_aad(&key, &msg_aad.to_bytes(), b"x", &mut rng(3)).unwrap();
        assert_eq!(
            open_message(&key, &msg_aad, &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn seal_open_round_trips_arbitrary_plaintexts(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            key_seed in any::<u64>(),
            nonce_seed in any::<u64>(),
            seq in any::<u64>(),
            epoch in any::<u32>(),
            header in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = SessionKey::generate(&mut rng(key_seed));
            let aad = MessageAad { seq: Seq::new(seq), key_epoch: KeyEpoch::new(epoch), ..aad() };
            let mut r = rng(nonce_seed);
            let sealed = seal_message(&key, &aad, &plaintext, &mut r).unwrap();
            prop_assert_eq!(sealed.ciphertext.len(), plaintext.len() + TAG_LEN);
            let wire = sealed.to_wire().decode().unwrap();
            let opened = open_message(&key, &aad, &wire).unwrap();
            prop_assert_eq!(opened.as_slice(), &plaintext[..]);

            let sealed = seal_with_aad(&key, &header, &plaintext, &mut r).unwrap();
            let opened = open_with_aad(&key, &header, &sealed).unwrap();
            prop_assert_eq!(opened.as_slice(), &plaintext[..]);
        }
    }
}
