//! Conformance suite for [`KeyProvider`]: one function per contract clause of
//! [`ports::keys`](crate::ports::keys), each named after its clause.
//!
//! Adapter authors run it with [`key_provider_conformance_tests!`](crate::key_provider_conformance_tests),
//! which stamps one `#[test]` per clause. The factory returns a fixture that dereferences to a
//! provider able to serve a current key for [`Scope::Personal`] and for `shared:acme`
//! (holding them already, or creating them on first use):
//!
//! ```
//! use tandem::adapters::keys::StaticKeyProvider;
//! use tandem::domain::crypto::{KeyEpoch, SessionKey};
//! use tandem::domain::oplog::Scope;
//!
//! tandem::key_provider_conformance_tests!(static_keys, || {
//!     Box::new(
//!         StaticKeyProvider::new()
//!             .with_key(Scope::Personal, KeyEpoch::FIRST, SessionKey::from_bytes([1; 32]))
//!             .with_key(Scope::shared("acme").unwrap(), KeyEpoch::FIRST, SessionKey::from_bytes([2; 32])),
//!     )
//! });
//! # fn main() {}
//! ```

use crate::domain::crypto::KeyEpoch;
use crate::domain::oplog::Scope;
use crate::ports::{KeyError, KeyProvider};

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __key_provider_clauses {
    ($m:ident) => {
        $m!(current_is_stable);
        $m!(key_returns_the_current_key);
        $m!(unknown_epoch_is_refused);
        $m!(scopes_have_distinct_keys);
        $m!(debug_never_shows_keys);
    };
}

/// Stamps a test module `$name` with one `#[test]` per [`KeyProvider`] contract clause, each
/// run on a fresh provider from `$factory` (see the module docs for what it must serve).
#[macro_export]
macro_rules! key_provider_conformance_tests {
    ($name:ident, $factory:expr) => {
        $crate::__conformance_tests!($name, $factory, keys, __key_provider_clauses, *);
    };
}

fn org() -> Scope {
    Scope::shared("acme").expect("valid org")
}

/// `current_is_stable`: the same epoch and key on every call.
pub fn current_is_stable(p: &dyn KeyProvider) {
    let (e1, k1) = p.current(&Scope::Personal).expect("current key");
    let (e2, k2) = p.current(&Scope::Personal).expect("current key again");
    assert_eq!(e1, e2, "current_is_stable: the epoch changed between calls");
    assert_eq!(
        k1.expose_secret(),
        k2.expose_secret(),
        "current_is_stable: the key changed between calls"
    );
}

/// `key_returns_the_current_key`: `key(scope, current epoch)` is the current key.
pub fn key_returns_the_current_key(p: &dyn KeyProvider) {
    for scope in [Scope::Personal, org()] {
        let (epoch, current) = p.current(&scope).expect("current key");
        let key = p.key(&scope, epoch).expect("key of the current epoch");
        assert_eq!(
            key.expose_secret(),
            current.expose_secret(),
            "key_returns_the_current_key: {scope}/{epoch} differs from the current key"
        );
    }
}

/// `unknown_epoch_is_refused`: an epoch past the current one is `UnknownEpoch`.
pub fn unknown_epoch_is_refused(p: &dyn KeyProvider) {
    let (epoch, _) = p.current(&Scope::Personal).expect("current key");
    let unknown = epoch.next().unwrap_or(KeyEpoch::new(0));
    match p.key(&Scope::Personal, unknown) {
        Err(KeyError::UnknownEpoch { scope, epoch: e }) => {
            assert_eq!((scope, e), (Scope::Personal, unknown));
        }
        Err(other) => panic!("unknown_epoch_is_refused: wrong error {other}"),
        Ok(_) => panic!("unknown_epoch_is_refused: a key was returned for epoch {unknown}"),
    }
}

/// `scopes_have_distinct_keys`: personal and org keys differ.
pub fn scopes_have_distinct_keys(p: &dyn KeyProvider) {
    let (_, personal) = p.current(&Scope::Personal).expect("personal key");
    let (_, shared) = p.current(&org()).expect("org key");
    assert_ne!(
        personal.expose_secret(),
        shared.expose_secret(),
        "scopes_have_distinct_keys: two scopes share a key"
    );
}

/// `debug_never_shows_keys`: no key bytes in the provider's `Debug` output.
pub fn debug_never_shows_keys(p: &dyn KeyProvider) {
    let (_, key) = p.current(&Scope::Personal).expect("current key");
    let debug = format!("{p:?} {p:#?}");
    let hex: String = key
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(key.expose_secret())
    };
    for rendering in [hex, b64, format!("{:?}", key.expose_secret())] {
        assert!(
            !debug.contains(&rendering),
            "debug_never_shows_keys: key material in {debug:?}"
        );
    }
}
