//! This device's two long-lived secrets, each in its own owner-only (0600) file.
//!
//! - The **identity** ([`DeviceSecretKeys`]): the X25519 key other devices wrap session keys
//!   to, and the Ed25519 key that signs the wraps this device sends.
//! - The **device-local key** ([`DeviceLocalKey`]): seals session keys at rest in the
//!   database, so a copied database file alone opens nothing.
//!
//! Both are created on first use and never overwritten (see
//! [`secret_file`](crate::adapters::secret_file)); a file with loose permissions is refused.

use std::path::{Path, PathBuf};

use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::adapters::secret_file::{read_or_create_secret_file, SecretFileError};
use crate::domain::crypto::{CryptoError, DeviceLocalKey, DeviceSecretKeys};

/// Why a secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The file could not be read or created, or its permissions are too loose.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The file does not hold a valid key.
    #[error("secret file {path} does not hold a valid key: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CryptoError,
    },
}

/// Where this device keeps its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSecrets {
    /// The device-local key file.
    pub local_key: PathBuf,
    /// The device identity file.
    pub identity: PathBuf,
}

impl DeviceSecrets {
    /// Files next to the database: `<db>.local-key` and `<db>.identity`.
    pub fn beside(db_path: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = db_path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        Self {
            local_key: with_suffix(".local-key"),
            identity: with_suffix(".identity"),
        }
    }

    /// Loads the device-local key, creating it on first use.
    pub fn load_local_key(&self) -> Result<DeviceLocalKey, SecretsError> {
        let bytes = read_or_create_secret_file(&self.local_key, || {
            Zeroizing::new(
                DeviceLocalKey::generate(&mut OsRng)
                    .expose_secret()
                    .to_vec(),
            )
        })?;
        DeviceLocalKey::from_slice(&bytes).map_err(|source| SecretsError::Invalid {
            path: self.local_key.clone(),
            source,
        })
    }

    /// Loads the device identity, creating it on first use.
    pub fn load_identity(&self) -> Result<DeviceSecretKeys, SecretsError> {
        let bytes = read_or_create_secret_file(&self.identity, || {
            DeviceSecretKeys::generate(&mut OsRng).to_storage_bytes()
        })?;
        DeviceSecretKeys::from_storage_bytes(&bytes).map_err(|source| SecretsError::Invalid {
            path: self.identity.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secrets_are_created_once_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = DeviceSecrets::beside(&dir.path().join("t.db"));
        assert!(secrets.local_key.ends_with("t.db.local-key"));
        let key = secrets.load_local_key().unwrap();
        let identity = secrets.load_identity().unwrap();
        for path in [&secrets.local_key, &secrets.identity] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            secrets.load_local_key().unwrap().expose_secret(),
            key.expose_secret()
        );
        assert_eq!(
            secrets.load_identity().unwrap().public_keys(),
            identity.public_keys()
        );
    }

    #[test]
    fn a_damaged_secret_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = DeviceSecrets::beside(&dir.path().join("t.db"));
        crate::adapters::secret_file::write_new_secret_file(&secrets.identity, b"short").unwrap();
        assert!(matches!(
            secrets.load_identity(),
            Err(SecretsError::Invalid { .. })
        ));
    }
}
