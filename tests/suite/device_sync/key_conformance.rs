//! The KeyProvider conformance suite on every key provider.

use std::ops::Deref;

use tandem::adapters::keys::{FileKeyProvider, StaticKeyProvider};
use tandem::domain::crypto::{KeyEpoch, SessionKey};
use tandem::domain::oplog::Scope;

/// A file key provider in a temp dir that lives as long as the provider.
pub struct TempKeys {
    _dir: tempfile::TempDir,
    provider: FileKeyProvider,
}

impl Deref for TempKeys {
    type Target = FileKeyProvider;
    fn deref(&self) -> &FileKeyProvider {
        &self.provider
    }
}

fn temp_keys() -> TempKeys {
    let dir = tempfile::tempdir().expect("temp dir");
    let provider = FileKeyProvider::open(dir.path().join("keys.json")).expect("open key file");
    TempKeys {
        _dir: dir,
        provider,
    }
}

fn static_keys() -> Box<StaticKeyProvider> {
    Box::new(
        StaticKeyProvider::new()
            .with_key(
                Scope::Personal,
                KeyEpoch::FIRST,
                SessionKey::from_bytes([1; 32]),
            )
            .with_key(
                Scope::Personal,
                KeyEpoch::new(2),
                SessionKey::from_bytes([3; 32]),
            )
            .with_key(
                Scope::shared("acme").expect("valid org"),
                KeyEpoch::FIRST,
                SessionKey::from_bytes([2; 32]),
            ),
    )
}

tandem::key_provider_conformance_tests!(file_keys, temp_keys);
tandem::key_provider_conformance_tests!(static_key_set, static_keys);
