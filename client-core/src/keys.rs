//! Where private keys live: the OS keyring, or - where there is none - a file only its owner
//! can read.
//!
//! The OS keyring is reached through the keyring 4 ecosystem: the `keyring-core` API plus
//! one store crate per platform, chosen here rather than through the `keyring` crate's
//! default features:
//!
//! - Linux and the BSDs: the Secret Service (GNOME Keyring, KWallet) through
//!   `dbus-secret-service-keyring-store`, which talks D-Bus via libdbus built from source
//!   (`vendored`, so no libdbus-dev on build hosts). `keyring`'s default, the zbus store,
//!   pulls in an async D-Bus stack of about 100 crates; this one about 45, most of them
//!   small RustCrypto crates for the Secret Service's encrypted session. The kernel
//!   keyutils store is lighter still but not an option: its keys are gone after a reboot,
//!   and a profile must survive restarts.
//! - macOS: the login Keychain (`apple-native-keyring-store`, `keychain`).
//! - Windows: the Credential Manager (`windows-native-keyring-store`).
//!
//! Where no keyring answers (a headless Linux host, CI, a service account) the key goes to
//! `GATEHOUSE_HOME/keys/NAME.key` with mode 0600 in a 0700 folder, and the import says so.
//! `GATEHOUSE_KEYSTORE=file` asks for key files even where a keyring is reachable.
//! Tests use `keyring-core`'s in-memory mock store ([`KeyStore::mock`]) and never touch a
//! real keyring.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};

use crate::error::{ProfileError, Result};
use crate::profile::KeyLocation;

/// The keyring "service" every Gatehouse key is filed under.
const SERVICE: &str = "gatehouse";

/// Where new keys are stored.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// The OS keyring.
    Os(Keyring),
    /// Key files in `dir` (mode 0600).
    File {
        /// The folder (`GATEHOUSE_HOME/keys` from [`KeyStore::detect`]).
        dir: PathBuf,
        /// Why keys go to files, as a phrase for the user: "no OS keyring reachable (...)".
        why: String,
    },
    /// `keyring-core`'s in-memory mock store, for tests.
    Mock(Keyring),
}

/// A `keyring-core` credential store.
#[derive(Clone)]
pub struct Keyring {
    store: Arc<CredentialStore>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("vendor", &self.store.vendor())
            .finish()
    }
}

impl KeyStore {
    /// The OS keyring if one answers, else key files in `home/keys`.
    ///
    /// Connecting can take a moment (the Secret Service opens an encrypted session), so call
    /// this once and keep the result.
    pub fn detect(home: &Path) -> KeyStore {
        let dir = home.join("keys");
        if std::env::var("GATEHOUSE_KEYSTORE").is_ok_and(|v| v.eq_ignore_ascii_case("file")) {
            return KeyStore::File {
                dir,
                why: "GATEHOUSE_KEYSTORE=file asks for key files".into(),
            };
        }
        match os_store() {
            Ok(store) => KeyStore::Os(Keyring { store }),
            Err(why) => KeyStore::File {
                dir,
                why: format!("no OS keyring reachable ({why})"),
            },
        }
    }

    /// Key files in `dir`.
    pub fn files(dir: &Path) -> KeyStore {
        KeyStore::File {
            dir: dir.to_path_buf(),
            why: "key files were asked for".into(),
        }
    }

    /// A fresh, empty in-memory mock keyring (for tests).
    pub fn mock() -> KeyStore {
        // keyring-core's mock store cannot fail to start.
        match keyring_core::mock::Store::new() {
            Ok(store) => KeyStore::Mock(Keyring { store }),
            Err(_) => unreachable!("the mock store has no failure mode"),
        }
    }

    /// Where a key stored now under profile `name` goes.
    pub fn location_for(&self, name: &str) -> KeyLocation {
        match self {
            KeyStore::Os(_) | KeyStore::Mock(_) => KeyLocation::Keyring,
            KeyStore::File { dir, .. } => KeyLocation::File(dir.join(format!("{name}.key"))),
        }
    }

    /// One line for the user about where a key just went.
    pub fn note(&self, location: &KeyLocation) -> String {
        match (self, location) {
            (KeyStore::Mock(_), KeyLocation::Keyring) => {
                "stored the private key in the in-memory mock keyring".into()
            }
            (_, KeyLocation::Keyring) => "stored the private key in the OS keyring".into(),
            (KeyStore::File { why, .. }, KeyLocation::File(path)) => format!(
                "{why}; stored the key in {}, readable only by you",
                path.display()
            ),
            (_, KeyLocation::File(path)) => {
                format!("stored the key in {}, readable only by you", path.display())
            }
        }
    }

    fn keyring(&self, profile: &str) -> Result<&Keyring> {
        match self {
            KeyStore::Os(k) | KeyStore::Mock(k) => Ok(k),
            KeyStore::File { why, .. } => Err(ProfileError::KeyringUnavailable {
                name: profile.to_string(),
                why: why.clone(),
            }),
        }
    }

    /// Stores `pem` at `location`; `account` names the keyring entry.
    pub(crate) fn put(
        &self,
        location: &KeyLocation,
        profile: &str,
        account: &str,
        pem: &str,
    ) -> Result<()> {
        match location {
            KeyLocation::Keyring => {
                let keyring = self.keyring(profile)?;
                keyring
                    .entry(account)
                    .and_then(|e| e.set_secret(pem.as_bytes()))
                    .map_err(|source| ProfileError::Keyring {
                        action: "store",
                        name: profile.to_string(),
                        source,
                    })
            }
            KeyLocation::File(path) => write_key_file(path, pem),
        }
    }

    /// Reads the key at `location`.
    pub(crate) fn get(
        &self,
        location: &KeyLocation,
        profile: &str,
        account: &str,
    ) -> Result<String> {
        let missing = || ProfileError::KeyMissing {
            name: profile.to_string(),
            location: location.to_string(),
        };
        match location {
            KeyLocation::Keyring => {
                let keyring = self.keyring(profile)?;
                let keyring_err = |source| ProfileError::Keyring {
                    action: "read",
                    name: profile.to_string(),
                    source,
                };
                match keyring.entry(account).and_then(|e| e.get_secret()) {
                    Ok(bytes) => String::from_utf8(bytes)
                        .map_err(|e| keyring_err(keyring_core::Error::BadEncoding(e.into_bytes()))),
                    Err(keyring_core::Error::NoEntry) => Err(missing()),
                    Err(e) => Err(keyring_err(e)),
                }
            }
            KeyLocation::File(path) => match fs::read_to_string(path) {
                Ok(pem) => Ok(pem),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
                Err(e) => Err(ProfileError::io("read", path, e)),
            },
        }
    }

    /// Deletes the key at `location`; a key that is already gone is fine.
    pub(crate) fn delete(
        &self,
        location: &KeyLocation,
        profile: &str,
        account: &str,
    ) -> Result<()> {
        match location {
            KeyLocation::Keyring => {
                let keyring = self.keyring(profile)?;
                match keyring.entry(account).and_then(|e| e.delete_credential()) {
                    Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
                    Err(source) => Err(ProfileError::Keyring {
                        action: "delete",
                        name: profile.to_string(),
                        source,
                    }),
                }
            }
            KeyLocation::File(path) => match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ProfileError::io("delete", path, e)),
            },
        }
    }
}

impl Keyring {
    fn entry(&self, account: &str) -> keyring_core::Result<Entry> {
        Entry::new_in_store(&self.store, SERVICE, account)
    }
}

/// Connects to the platform's keyring, or says why not.
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn os_store() -> std::result::Result<Arc<CredentialStore>, String> {
    // Without a session bus libdbus would try to autolaunch one through X11; there is
    // nothing to find then, so say so plainly instead of relaying its error.
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        let runtime_bus = std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| Path::new(&d).join("bus"))
            .filter(|p| p.exists());
        if runtime_bus.is_none() {
            return Err("no D-Bus session bus for the Secret Service".into());
        }
    }
    match dbus_secret_service_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(format!("Secret Service: {}", one_line(&e))),
    }
}

#[cfg(target_os = "macos")]
fn os_store() -> std::result::Result<Arc<CredentialStore>, String> {
    match apple_native_keyring_store::keychain::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(format!("macOS Keychain: {}", one_line(&e))),
    }
}

#[cfg(target_os = "windows")]
fn os_store() -> std::result::Result<Arc<CredentialStore>, String> {
    match windows_native_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(format!("Windows Credential Manager: {}", one_line(&e))),
    }
}

#[cfg(not(any(unix, target_os = "windows")))]
fn os_store() -> std::result::Result<Arc<CredentialStore>, String> {
    Err("this platform has no supported keyring".into())
}

#[cfg(any(unix, target_os = "windows"))]
fn one_line(e: &keyring_core::Error) -> String {
    e.to_string().replace('\n', " ")
}

/// Writes a key file atomically: created 0600 beside its final name (so it is never
/// readable by others, not even for a moment), fsynced, renamed into place.
fn write_key_file(path: &Path, pem: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::store::ensure_private_dir(dir)?;
    // tempfile creates files 0600 on Unix; on Windows the per-user folder's ACL applies.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| ProfileError::io("create a file in", dir, e))?;
    tmp.write_all(pem.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| ProfileError::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ProfileError::io("write", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_keyring_round_trip_and_delete() {
        let keys = KeyStore::mock();
        let loc = keys.location_for("alice");
        assert_eq!(loc, KeyLocation::Keyring);
        keys.put(&loc, "alice", "alice@/h", "PEM").unwrap();
        assert_eq!(keys.get(&loc, "alice", "alice@/h").unwrap(), "PEM");
        // Another account is another entry.
        let err = keys.get(&loc, "bob", "bob@/h").unwrap_err();
        assert!(matches!(err, ProfileError::KeyMissing { .. }), "{err}");
        keys.delete(&loc, "alice", "alice@/h").unwrap();
        keys.delete(&loc, "alice", "alice@/h").unwrap();
        assert!(keys.get(&loc, "alice", "alice@/h").is_err());
    }

    #[test]
    fn mock_stores_are_independent() {
        let a = KeyStore::mock();
        let b = KeyStore::mock();
        a.put(&KeyLocation::Keyring, "x", "x@/h", "A").unwrap();
        assert!(b.get(&KeyLocation::Keyring, "x", "x@/h").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let keys = KeyStore::files(&home.path().join("keys"));
        let loc = keys.location_for("alice");
        let KeyLocation::File(path) = &loc else {
            panic!("{loc:?}")
        };
        keys.put(&loc, "alice", "", "PEM").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path), 0o600);
        assert_eq!(mode(&home.path().join("keys")), 0o700);
        assert_eq!(keys.get(&loc, "alice", "").unwrap(), "PEM");
        let note = keys.note(&loc);
        assert!(note.ends_with("readable only by you"), "{note}");
        // A key in the keyring cannot be read through a file store.
        let err = keys.get(&KeyLocation::Keyring, "bob", "").unwrap_err();
        assert!(err.to_string().contains("not reachable"), "{err}");
        keys.delete(&loc, "alice", "").unwrap();
        assert!(!path.exists());
    }
}
