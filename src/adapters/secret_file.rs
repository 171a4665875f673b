//! Secret files: small files holding key material, readable by their owner only.
//!
//! [`write_new_secret_file`] creates the file with mode `0600` from the start (never a window in
//! which it is world-readable), writes it in full, fsyncs it and its directory, and refuses to
//! overwrite an existing file: keys are created once. [`read_secret_file`] refuses a file that
//! group or others can read, so a key copied around with loose permissions is noticed rather
//! than used. The bytes come back in a [`Zeroizing`] buffer.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a secret file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file already exists (keys are created once).
    #[error("secret file {path} already exists")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read the file.
    #[error("secret file {path} has mode {mode:o}; it must be readable by its owner only (0600)")]
    LoosePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be created, written or read.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Creates `path` with mode 0600 holding `bytes`, durably. Fails if it exists.
pub fn write_new_secret_file(path: &Path, bytes: &[u8]) -> Result<(), SecretFileError> {
    let io_err = |source: io::Error| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => SecretFileError::Exists {
                path: path.to_path_buf(),
            },
            _ => io_err(source),
        })?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    Ok(())
}

/// Reads a secret file, refusing one that group or others can read.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let io_err = |source: io::Error| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mode = file.metadata().map_err(io_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::LoosePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(io_err)?;
    Ok(bytes)
}

/// Reads the secret file at `path`, or creates it with `make()`'s bytes if it does not exist.
///
/// Two processes racing to create it both end up with the bytes of the one that won.
pub fn read_or_create_secret_file(
    path: &Path,
    make: impl FnOnce() -> Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    match read_secret_file(path) {
        Err(SecretFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            match write_new_secret_file(path, &make()) {
                Ok(()) | Err(SecretFileError::Exists { .. }) => read_secret_file(path),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_secret_file(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&path).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_secret_file(&path, b"one").unwrap();
        assert!(matches!(
            write_new_secret_file(&path, b"two"),
            Err(SecretFileError::Exists { .. })
        ));
        assert_eq!(read_secret_file(&path).unwrap().as_slice(), b"one");
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_secret_file(&path, b"s").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&path).unwrap_err();
        assert!(matches!(
            err,
            SecretFileError::LoosePermissions { mode: 0o644, .. }
        ));
    }

    #[test]
    fn read_or_create_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = read_or_create_secret_file(&path, || Zeroizing::new(b"a".to_vec())).unwrap();
        let second = read_or_create_secret_file(&path, || Zeroizing::new(b"b".to_vec())).unwrap();
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&b"a"[..], &b"a"[..])
        );
    }
}
