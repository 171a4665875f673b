//! Helpers shared by the crypto tests: seeded RNGs, fixed ids and a leak check for `Debug`.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use uuid::Uuid;

use crate::domain::ids::{DeviceId, MessageId, SessionId};

/// A deterministic CSPRNG for tests (the domain never touches OS randomness).
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A fixed, non-nil session id.
pub(crate) fn session(n: u128) -> SessionId {
    SessionId::from_uuid(Uuid::from_u128(
        0x5e55_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .unwrap()
}

/// A fixed, non-nil message id.
pub(crate) fn message(n: u128) -> MessageId {
    MessageId::from_uuid(Uuid::from_u128(
        0x3e55_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .unwrap()
}

/// A fixed, non-nil device id.
pub(crate) fn device(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0xde71_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .unwrap()
}

/// Asserts that `text` contains none of the usual renderings of `secret`: lower and upper hex,
/// base64 in its common alphabets, and Rust's `[1, 2, 3]` array `Debug` form.
pub(crate) fn assert_redacted(text: &str, secret: &[u8]) {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let renderings = [
        hex.clone(),
        hex.to_uppercase(),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
        // A 4-byte window catches partial leaks without false positives on short ids.
        hex[..8].to_owned(),
    ];
    for rendering in renderings {
        assert!(
            !text.contains(&rendering),
            "secret rendered as {rendering:?} leaked into {text:?}"
        );
    }
}
