//! [`FileKeyProvider`]: scope keys in an owner-only JSON key file.
//!
//! The file (format in the `ring` module) is created on first use: the first
//! [`KeyProvider::current`] call for a scope without a key generates one (epoch 1) from the
//! operating system's CSPRNG and writes the file. Every write goes to a fresh `0600` temp file
//! through [`write_new_secret_file`] (created owner-only from the start, fsynced with its
//! directory), then replaces the key file with an atomic rename, so a crash leaves either the
//! old or the new file, never a torn one. Reads go through [`read_secret_file`], which refuses a
//! key file that group or others can read.
//!
//! Writers on one host serialise on an advisory lock on a sibling `<file>.lock`, re-reading the
//! file under the lock, so two processes creating the first key of a scope end up with the same
//! key. Keys are cached in memory; a key rotated or imported by another process is picked up on
//! the next cache miss or [`FileKeyProvider::reload`].
//!
//! Devices that must read each other's ops need the same keys: share or copy the key file, or
//! [`FileKeyProvider::import`] keys received through a key wrap.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rand_core::OsRng;

use super::ring::KeyRing;
use crate::adapters::secret_file::{read_secret_file, write_new_secret_file, SecretFileError};
use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::oplog::Scope;
use crate::ports::{KeyError, KeyProvider};

/// Scope keys kept in an owner-only key file. See the module docs.
pub struct FileKeyProvider {
    path: PathBuf,
    lock_path: PathBuf,
    ring: Mutex<KeyRing>,
}

impl std::fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("path", &self.path)
            .field("epochs", &*self.cache())
            .finish()
    }
}

impl FileKeyProvider {
    /// Opens the key file at `path`, loading it if it exists. A missing file is created on
    /// first use.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| KeyError::Corrupt("the key file path names no file".into()))?;
        let mut lock_name = name.to_os_string();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        let ring = load(&path)?;
        Ok(Self {
            path,
            lock_path,
            ring: Mutex::new(ring),
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the key file (to pick up keys another process added).
    pub fn reload(&self) -> Result<(), KeyError> {
        let ring = load(&self.path)?;
        *self.cache() = ring;
        Ok(())
    }

    /// Adds a fresh key at the scope's next epoch and returns that epoch.
    pub fn rotate(&self, scope: &Scope) -> Result<KeyEpoch, KeyError> {
        self.update(|ring| {
            let epoch = ring
                .next_epoch(scope)
                .ok_or_else(|| KeyError::EpochsExhausted {
                    scope: scope.clone(),
                })?;
            insert(ring, scope, epoch, SessionKey::generate(&mut OsRng))?;
            Ok(epoch)
        })
    }

    /// Installs a key received from elsewhere (another device's key wrap). Importing a key
    /// already held is a no-op; a different key at a held epoch is [`KeyError::Conflict`].
    pub fn import(&self, scope: &Scope, epoch: KeyEpoch, key: SessionKey) -> Result<(), KeyError> {
        self.update(|ring| insert(ring, scope, epoch, key))
    }

    fn cache(&self) -> MutexGuard<'_, KeyRing> {
        // Every cache update replaces the whole ring, so a poisoned lock holds a whole ring.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on the file's current keys under the writers' lock, writes the result
    /// atomically and refreshes the cache. On error the file and the cache are unchanged.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut KeyRing) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| io_error(&self.lock_path, e))?;
        lock.lock().map_err(|e| io_error(&self.lock_path, e))?;
        let mut ring = load(&self.path)?;
        let out = change(&mut ring)?;
        self.write(&ring)?;
        *self.cache() = ring;
        // Dropping `lock` closes the file and releases the lock.
        drop(lock);
        Ok(out)
    }

    fn write(&self, ring: &KeyRing) -> Result<(), KeyError> {
        let mut tmp_name = self.lock_path.as_os_str().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        // A temp file left by a crash of this process id is stale: the lock is held.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp, e)),
        }
        let bytes = ring.encode().map_err(KeyError::Corrupt)?;
        write_new_secret_file(&tmp, &bytes).map_err(secret_error)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_error(&self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e))?;
        }
        Ok(())
    }
}

impl KeyProvider for FileKeyProvider {
    fn current(&self, scope: &Scope) -> Result<(KeyEpoch, SessionKey), KeyError> {
        if let Some(current) = self.cache().current(scope) {
            return Ok(current);
        }
        self.update(|ring| {
            if let Some(current) = ring.current(scope) {
                return Ok(current);
            }
            let key = SessionKey::generate(&mut OsRng);
            insert(ring, scope, KeyEpoch::FIRST, key.clone())?;
            tracing::info!(%scope, "created the first key of a scope");
            Ok((KeyEpoch::FIRST, key))
        })
    }

    fn key(&self, scope: &Scope, epoch: KeyEpoch) -> Result<SessionKey, KeyError> {
        if let Some(key) = self.cache().get(scope, epoch) {
            return Ok(key);
        }
        self.reload()?;
        self.cache()
            .get(scope, epoch)
            .ok_or_else(|| KeyError::UnknownEpoch {
                scope: scope.clone(),
                epoch,
            })
    }
}

fn insert(
    ring: &mut KeyRing,
    scope: &Scope,
    epoch: KeyEpoch,
    key: SessionKey,
) -> Result<(), KeyError> {
    ring.insert(scope.clone(), epoch, key)
        .map_err(|_| KeyError::Conflict {
            scope: scope.clone(),
            epoch,
        })
}

/// The keys in the file, or none if it does not exist yet.
fn load(path: &Path) -> Result<KeyRing, KeyError> {
    match read_secret_file(path) {
        Ok(bytes) => KeyRing::decode(&bytes)
            .map_err(|reason| KeyError::Corrupt(format!("{}: {reason}", path.display()))),
        Err(SecretFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(KeyRing::default())
        }
        Err(e) => Err(secret_error(e)),
    }
}

fn secret_error(e: SecretFileError) -> KeyError {
    KeyError::Backend(Box::new(e))
}

fn io_error(path: &Path, source: io::Error) -> KeyError {
    secret_error(SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_file_is_created_owner_only_on_first_use_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let p = FileKeyProvider::open(&path).unwrap();
        assert!(!path.exists(), "nothing is written before first use");
        let (epoch, key) = p.current(&Scope::Personal).unwrap();
        assert_eq!(epoch, KeyEpoch::FIRST);
        assert_eq!(mode(&path), 0o600);
        let again = FileKeyProvider::open(&path).unwrap();
        let (e2, k2) = again.current(&Scope::Personal).unwrap();
        assert_eq!((e2, k2.expose_secret()), (epoch, key.expose_secret()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn rotation_adds_an_epoch_and_keeps_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileKeyProvider::open(dir.path().join("k")).unwrap();
        let (_, first) = p.current(&Scope::Personal).unwrap();
        assert_eq!(p.rotate(&Scope::Personal).unwrap(), KeyEpoch::new(2));
        let (epoch, second) = p.current(&Scope::Personal).unwrap();
        assert_eq!(epoch, KeyEpoch::new(2));
        assert_ne!(first.expose_secret(), second.expose_secret());
        let old = p.key(&Scope::Personal, KeyEpoch::FIRST).unwrap();
        assert_eq!(old.expose_secret(), first.expose_secret());
    }

    #[test]
    fn another_providers_keys_are_seen_on_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = FileKeyProvider::open(&path).unwrap();
        let b = FileKeyProvider::open(&path).unwrap();
        let org = Scope::shared("acme").unwrap();
        let (_, ka) = a.current(&org).unwrap();
        // b has not loaded the key yet but reads it under the lock instead of minting its own.
        let (_, kb) = b.current(&org).unwrap();
        assert_eq!(ka.expose_secret(), kb.expose_secret());
        a.rotate(&org).unwrap();
        assert!(b.key(&org, KeyEpoch::new(2)).is_ok());
    }

    #[test]
    fn import_refuses_a_conflicting_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileKeyProvider::open(dir.path().join("k")).unwrap();
        let k = SessionKey::from_bytes([4; 32]);
        p.import(&Scope::Personal, KeyEpoch::new(3), k.clone())
            .unwrap();
        p.import(&Scope::Personal, KeyEpoch::new(3), k).unwrap();
        assert!(matches!(
            p.import(
                &Scope::Personal,
                KeyEpoch::new(3),
                SessionKey::from_bytes([5; 32])
            ),
            Err(KeyError::Conflict { .. })
        ));
        assert_eq!(p.current(&Scope::Personal).unwrap().0, KeyEpoch::new(3));
    }

    #[test]
    fn loose_permissions_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        FileKeyProvider::open(&path)
            .unwrap()
            .current(&Scope::Personal)
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            FileKeyProvider::open(&path),
            Err(KeyError::Backend(_))
        ));
        std::fs::remove_file(&path).unwrap();
        write_new_secret_file(&path, b"{not json").unwrap();
        assert!(matches!(
            FileKeyProvider::open(&path),
            Err(KeyError::Corrupt(_))
        ));
    }
}
