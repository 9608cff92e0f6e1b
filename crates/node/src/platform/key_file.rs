//! A stable native identity: an Ed25519 key kept in a file.
//!
//! The relay must keep its peer id across restarts (browsers find it by id), and a native node
//! may. The key is created on first use (file mode 0600) and read on every later start; an
//! unreadable or corrupt key file is an error rather than being replaced, which would silently
//! change the peer id.

use std::fs;
use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but does not hold a libp2p key.
    #[error(
        "{0} is not a libp2p key; move it away to create a new identity (the peer id will change)"
    )]
    Corrupt(String),
    /// Reading, creating or writing failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Loads the key at `path`, creating its directory and a new key when it does not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, KeyFileError> {
    let shown = || path.display().to_string();
    match fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|_| KeyFileError::Corrupt(shown()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)
                    .map_err(|e| KeyFileError::Io(dir.display().to_string(), e))?;
            }
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| KeyFileError::Io(shown(), std::io::Error::other(e)))?;
            write_private(path, &bytes).map_err(|e| KeyFileError::Io(shown(), e))?;
            tracing::info!(path = %shown(), "created a new identity");
            Ok(key)
        }
        Err(e) => Err(KeyFileError::Io(shown(), e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_FILE: &str = "identity.key";

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tabmesh-key-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn identity_survives_restarts() {
        let dir = temp_dir("restart");
        let first = load_or_create_identity(&dir.join(KEY_FILE))
            .unwrap()
            .public()
            .to_peer_id();
        let second = load_or_create_identity(&dir.join(KEY_FILE))
            .unwrap()
            .public()
            .to_peer_id();
        assert_eq!(first, second);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_key_is_an_error_and_is_left_in_place() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        let err = load_or_create_identity(&dir.join(KEY_FILE)).unwrap_err();
        assert!(err.to_string().contains("is not a libp2p key"));
        assert_eq!(fs::read(dir.join(KEY_FILE)).unwrap(), b"garbage");
        fs::remove_dir_all(&dir).unwrap();
    }
}
