//! XChaCha20-Poly1305, as every sealing helper in this module uses it.
//!
//! The construction is the one of draft-irtf-cfrg-xchacha: HChaCha20 turns the key and the
//! nonce's first 16 bytes into a one-time subkey, and ChaCha20-Poly1305 (RFC 8439) seals under
//! that subkey with the 96-bit nonce `0x00000000 || nonce[16..24]`. The ciphertext carries its
//! 16-byte tag at the end.
//!
//! HChaCha20 comes from the `chacha20` crate and the AEAD from `ring`. For the payloads the
//! oplog seals (a few hundred bytes each) `ring`'s assembly is about four times faster than
//! the portable `chacha20poly1305` crate, whose AVX2 Poly1305 pays a large set-up per message,
//! and about twice as fast on a checkpoint of tens of megabytes. The bytes are exactly those of
//! `chacha20poly1305::XChaCha20Poly1305`; the tests check it on random inputs.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, Zeroizing};

use super::envelope::{NONCE_LEN, TAG_LEN};
use super::session_key::KEY_LEN;
use super::CryptoError;

/// The ChaCha20-Poly1305 key and nonce that seal under `key` with the extended `nonce`.
fn cipher(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce), ()> {
    let (head, tail) = nonce.split_at(16);
    let mut subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), head.into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
    subkey.as_mut_slice().zeroize();
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(tail);
    Ok((
        LessSafeKey::new(unbound.map_err(|_| ())?),
        Nonce::assume_unique_for_key(short),
    ))
}

/// Seals `plaintext` under `key` with `nonce`, binding `aad`: ciphertext followed by the tag.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (cipher, nonce) = cipher(key, nonce).map_err(|_| CryptoError::Encrypt)?;
    let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    out.extend_from_slice(plaintext);
    match cipher.seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out) {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        Err(_) => {
            // Never hand back (or leave behind) the plaintext copied in above.
            out.zeroize();
            Err(CryptoError::Encrypt)
        }
    }
}

/// Opens `ciphertext` (with its tag) sealed by [`seal`]. Any failure, a short input included,
/// is the opaque [`CryptoError::Decrypt`].
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if ciphertext.len() < TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (cipher, nonce) = cipher(key, nonce).map_err(|_| CryptoError::Decrypt)?;
    // Zeroizing from the start: a failed open may leave decrypted bytes in the buffer.
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = cipher
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use proptest::prelude::*;

    fn reference_seal(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], msg: &[u8]) -> Vec<u8> {
        XChaCha20Poly1305::new(key.into())
            .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
            .unwrap()
    }

    /// The test vector of draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    #[test]
    fn the_drafts_test_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only \
one tip for the future, sunscreen would be it.";
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let sealed = seal(&key, &nonce, &aad, plaintext).unwrap();
        let (ct, tag) = sealed.split_at(plaintext.len());
        assert_eq!(
            ct,
            hex(
                "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644\
                 0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e\
                 3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
            )
        );
        assert_eq!(tag, hex("c0875924c1c7987947deafd8780acf49"));
        assert_eq!(&open(&key, &nonce, &aad, &sealed).unwrap()[..], plaintext);
    }

    #[test]
    fn short_or_empty_ciphertexts_are_refused() {
        let (key, nonce) = ([1u8; 32], [2u8; 24]);
        for len in 0..TAG_LEN {
            assert_eq!(
                open(&key, &nonce, b"", &vec![0u8; len]).unwrap_err(),
                CryptoError::Decrypt
            );
        }
        // An empty plaintext seals to its tag alone, and opens back to nothing.
        let sealed = seal(&key, &nonce, b"ad", b"").unwrap();
        assert_eq!(sealed.len(), TAG_LEN);
        assert!(open(&key, &nonce, b"ad", &sealed).unwrap().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Byte for byte the reference implementation's output, both ways.
        #[test]
        fn matches_the_reference_implementation(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..80),
            msg in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let ours = seal(&key, &nonce, &aad, &msg).unwrap();
            let theirs = reference_seal(&key, &nonce, &aad, &msg);
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(&open(&key, &nonce, &aad, &theirs).unwrap()[..], &msg[..]);
        }

        /// Any flipped bit of the ciphertext or tag, a changed AAD, nonce or key, or a
        /// truncation fails to open.
        #[test]
        fn any_alteration_fails_to_open(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            msg in proptest::collection::vec(any::<u8>(), 0..300),
            bit in any::<usize>(),
            cut in any::<usize>(),
        ) {
            let aad = b"header";
            let sealed = seal(&key, &nonce, aad, &msg).unwrap();
            let mut flipped = sealed.clone();
            let at = bit % (flipped.len() * 8);
            flipped[at / 8] ^= 1 << (at % 8);
            prop_assert_eq!(open(&key, &nonce, aad, &flipped).unwrap_err(), CryptoError::Decrypt);
            let cut = cut % sealed.len();
            prop_assert_eq!(
                open(&key, &nonce, aad, &sealed[..cut]).unwrap_err(),
                CryptoError::Decrypt
            );
            prop_assert!(open(&key, &nonce, b"headeR", &sealed).is_err());
            let mut other_nonce = nonce;
            other_nonce[23] ^= 1;
            prop_assert!(open(&key, &other_nonce, aad, &sealed).is_err());
            let mut other_key = key;
            other_key[0] ^= 0x80;
            prop_assert!(open(&other_key, &nonce, aad, &sealed).is_err());
        }
    }
}
