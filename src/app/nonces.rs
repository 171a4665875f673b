//! Where sealing draws its nonces from by default.
//!
//! Every seal draws a fresh random 192-bit nonce inside the call (see
//! [`crate::domain::crypto`]). Drawing each from the operating system costs a system call per
//! sealed message, which is more than sealing a chat message itself costs. The default source
//! is instead ChaCha12 seeded from the operating system and reseeded from it every 64 KiB of
//! output and after a fork: the construction of `rand`'s thread-local generator. If seeding
//! fails it falls back to the operating system source itself.

use rand::rngs::adapter::ReseedingRng;
use rand_chacha::ChaCha12Core;
use rand_core::{CryptoRngCore, OsRng, SeedableRng};

/// A CSPRNG that nonces are drawn from.
pub type NonceRng = Box<dyn CryptoRngCore + Send + Sync>;

/// Bytes of output after which the default source reseeds from the operating system.
const RESEED_AFTER: u64 = 64 * 1024;

/// A new default nonce source (see the module docs).
pub fn default_nonce_rng() -> NonceRng {
    match ChaCha12Core::from_rng(OsRng) {
        Ok(core) => Box::new(ReseedingRng::new(core, RESEED_AFTER, OsRng)),
        Err(_) => Box::new(OsRng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn two_sources_and_many_draws_never_repeat_a_nonce() {
        let (mut a, mut b) = (default_nonce_rng(), default_nonce_rng());
        let mut seen = BTreeSet::new();
        // Past the reseed threshold of each source: 3,000 draws of 24 bytes is 72,000 bytes.
        for _ in 0..3_000 {
            for rng in [&mut a, &mut b] {
                let mut nonce = [0u8; 24];
                rng.fill_bytes(&mut nonce);
                assert!(seen.insert(nonce), "a nonce repeated");
            }
        }
    }
}
