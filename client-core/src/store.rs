//! The client's profiles on disk: `GATEHOUSE_HOME/profiles/NAME.toml`, one per profile,
//! without the key, each written atomically.
//!
//! ```text
//! GATEHOUSE_HOME/           mode 0700
//!   profiles/NAME.toml      a StoredProfile (mode 0600)
//!   keys/NAME.key           the private key, only where no OS keyring is reachable (0600)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ProfileError, Result};
use crate::keys::KeyStore;
use crate::ovpn;
use crate::profile::{
    ControlWrap, KeyLocation, PROFILE_VERSION, Protocol, SUPPORTED_CIPHERS, Source, StoredProfile,
    WrapKind, check_name,
};
use crate::routing::{ClientRouting, Routing};
use crate::trusted::AutoConnect;

const PROFILES_DIR: &str = "profiles";
const PROFILE_EXT: &str = "toml";

/// The client's state folder: `GATEHOUSE_HOME` if set, else the per-user config folder
/// (`$XDG_CONFIG_HOME/gatehouse` or `~/.config/gatehouse` on Linux,
/// `~/Library/Application Support/Gatehouse` on macOS, `%APPDATA%\Gatehouse` on Windows).
pub fn home_dir() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = env("GATEHOUSE_HOME") {
        return home;
    }
    if cfg!(target_os = "windows") {
        if let Some(appdata) = env("APPDATA") {
            return appdata.join("Gatehouse");
        }
    } else if cfg!(target_os = "macos") {
        if let Some(home) = env("HOME") {
            return home.join("Library/Application Support/Gatehouse");
        }
    } else {
        if let Some(config) = env("XDG_CONFIG_HOME") {
            return config.join("gatehouse");
        }
        if let Some(home) = env("HOME") {
            return home.join(".config/gatehouse");
        }
    }
    // No home folder at all (a bare service account): keep state beside the caller.
    PathBuf::from(".gatehouse")
}

/// A profile just imported.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The stored profile.
    pub profile: StoredProfile,
    /// Everything in the imported file that Gatehouse does not do, one line each.
    pub warnings: Vec<String>,
    /// One line saying where the private key went (and why, if it went to a file).
    pub key_note: String,
}

/// The profiles in one state folder, and the key store for new keys.
///
/// Every method reads or writes the folder directly: there is no cache, so two processes
/// (the CLI and the desktop app) see each other's changes.
#[derive(Debug)]
pub struct ProfileStore {
    home: PathBuf,
    keys: KeyStore,
}

impl ProfileStore {
    /// Opens the state folder `home` (created on the first import) with `keys` for new keys.
    pub fn open(home: &Path, keys: KeyStore) -> Result<Self> {
        // Keyring entries are named after the folder, so it must not depend on the cwd.
        let home = std::path::absolute(home).map_err(|e| ProfileError::io("find", home, e))?;
        Ok(ProfileStore { home, keys })
    }

    /// Opens [`home_dir`] with [`KeyStore::detect`].
    pub fn open_default() -> Result<Self> {
        let home = home_dir();
        let keys = KeyStore::detect(&home);
        ProfileStore::open(&home, keys)
    }

    /// The state folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where new keys go.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Imports a Gatehouse profile or a stock `.ovpn` file (told apart by content) under
    /// `name`, or by default the profile's own name (Gatehouse) or the file's stem (.ovpn).
    pub fn import(&self, file: &Path, name: Option<&str>) -> Result<Imported> {
        let text = fs::read_to_string(file).map_err(|e| ProfileError::io("read", file, e))?;
        let dir = file.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
        self.import_in(&text, &file.display().to_string(), dir, name)
    }

    /// Imports profile text, e.g. a file dropped on the desktop app. `source_name` is the
    /// file name: the default name of an `.ovpn` profile is its stem, and messages name it.
    pub fn import_str(
        &self,
        text: &str,
        source_name: &str,
        name: Option<&str>,
    ) -> Result<Imported> {
        self.import_in(text, source_name, None, name)
    }

    /// Imports profile text whose `.ovpn` directives may name files in `dir`.
    fn import_in(
        &self,
        text: &str,
        source_name: &str,
        dir: Option<&Path>,
        name: Option<&str>,
    ) -> Result<Imported> {
        let (parsed, default_name) = parse_any(text, source_name, dir)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => default_name,
        };
        check_name(&name)?;
        if self.profile_path(&name).exists() {
            return Err(ProfileError::Exists { name });
        }
        let profile = StoredProfile {
            key_location: self.keys.location_for(&name),
            name,
            ..parsed.profile
        };
        // The profile file claims the name first (no-clobber), then the key is stored: two
        // imports racing for one name can never overwrite or delete each other's key.
        self.create_profile_file(&profile)?;
        let account = self.account(&profile.name);
        if let Err(e) = self.keys.put(
            &profile.key_location,
            &profile.name,
            &account,
            &parsed.key_pem,
        ) {
            let _ = fs::remove_file(self.profile_path(&profile.name));
            return Err(e);
        }
        let key_note = self.keys.note(&profile.key_location);
        Ok(Imported {
            profile,
            warnings: parsed.warnings,
            key_note,
        })
    }

    /// Every profile, sorted by name.
    pub fn list(&self) -> Result<Vec<StoredProfile>> {
        let dir = self.profiles_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProfileError::io("read", &dir, e)),
        };
        let mut profiles = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| ProfileError::io("read", &dir, e))?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            // Skips temporary files (".tmp...") and anything else that is not ours.
            if path.extension().is_some_and(|e| e == PROFILE_EXT) && check_name(stem).is_ok() {
                profiles.push(read_profile(&path, stem)?);
            }
        }
        profiles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(profiles)
    }

    /// The profile `name`.
    pub fn get(&self, name: &str) -> Result<StoredProfile> {
        let not_found = || ProfileError::NotFound {
            name: name.to_string(),
        };
        check_name(name).map_err(|_| not_found())?;
        let path = self.profile_path(name);
        if !path.is_file() {
            return Err(not_found());
        }
        read_profile(&path, name)
    }

    /// Deletes profile `name` and its key, and returns what was deleted. The key goes first:
    /// if it cannot be deleted the profile stays, so `remove` can be tried again and no key
    /// is left behind without a profile pointing at it.
    pub fn remove(&self, name: &str) -> Result<StoredProfile> {
        let profile = self.get(name)?;
        self.keys
            .delete(&profile.key_location, name, &self.account(name))?;
        let path = self.profile_path(name);
        fs::remove_file(&path).map_err(|e| ProfileError::io("delete", &path, e))?;
        Ok(profile)
    }

    /// Renames profile `old` to `new`, moving its key along (within the keyring, or to
    /// `NEW.key` beside the old key file). Returns the renamed profile.
    pub fn rename(&self, old: &str, new: &str) -> Result<StoredProfile> {
        check_name(new)?;
        let profile = self.get(old)?;
        if old == new {
            return Ok(profile);
        }
        if self.profile_path(new).exists() {
            return Err(ProfileError::Exists {
                name: new.to_string(),
            });
        }
        let key_pem = self.key_pem(old)?;
        let key_location = match &profile.key_location {
            KeyLocation::Keyring => KeyLocation::Keyring,
            KeyLocation::File(path) => KeyLocation::File(path.with_file_name(format!("{new}.key"))),
        };
        let renamed = StoredProfile {
            name: new.to_string(),
            key_location,
            ..profile.clone()
        };
        // New copy first, old one last: a crash in between leaves both, never neither.
        self.create_profile_file(&renamed)?;
        if let Err(e) = self
            .keys
            .put(&renamed.key_location, new, &self.account(new), &key_pem)
        {
            let _ = fs::remove_file(self.profile_path(new));
            return Err(e);
        }
        let old_path = self.profile_path(old);
        fs::remove_file(&old_path).map_err(|e| ProfileError::io("delete", &old_path, e))?;
        self.keys
            .delete(&profile.key_location, old, &self.account(old))?;
        Ok(renamed)
    }

    /// Changes profile `name`'s settings with `change` (routing, auto-connect, trusted
    /// networks) and writes it back atomically. The name and key location stay.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut StoredProfile) -> Result<()>,
    ) -> Result<StoredProfile> {
        let mut profile = self.get(name)?;
        change(&mut profile)?;
        profile.name = name.to_string();
        self.write_profile_file(&profile, true)?;
        Ok(profile)
    }

    /// The secrets of profile `name`, to hand to the client service when connecting: the
    /// private key (PEM), followed by the control-channel key (`-----BEGIN OpenVPN ...`)
    /// when the profile has a wrapper ([`crate::secrets::split`] takes them apart).
    pub fn key_pem(&self, name: &str) -> Result<String> {
        let profile = self.get(name)?;
        self.keys
            .get(&profile.key_location, name, &self.account(name))
    }

    fn profiles_dir(&self) -> PathBuf {
        self.home.join(PROFILES_DIR)
    }

    fn profile_path(&self, name: &str) -> PathBuf {
        self.profiles_dir().join(format!("{name}.{PROFILE_EXT}"))
    }

    /// The keyring entry of profile `name`: the folder is part of it, so two state folders
    /// (two users of one account, tests) never share keys.
    fn account(&self, name: &str) -> String {
        format!("{name}@{}", self.home.display())
    }

    /// Writes `profile`'s file atomically, failing with [`ProfileError::Exists`] if the name
    /// is taken.
    fn create_profile_file(&self, profile: &StoredProfile) -> Result<()> {
        self.write_profile_file(profile, false)
    }

    /// Writes `profile`'s file atomically: replacing the one there (`replace`), or failing
    /// with [`ProfileError::Exists`] if the name is taken.
    fn write_profile_file(&self, profile: &StoredProfile, replace: bool) -> Result<()> {
        ensure_private_dir(&self.home)?;
        let dir = self.profiles_dir();
        ensure_private_dir(&dir)?;
        let path = self.profile_path(&profile.name);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| ProfileError::io("create a file in", &dir, e))?;
        tmp.write_all(profile.to_toml().as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| ProfileError::io("write", tmp.path(), e))?;
        if replace {
            return tmp
                .persist(&path)
                .map(drop)
                .map_err(|e| ProfileError::io("write", &path, e.error));
        }
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ProfileError::Exists {
                    name: profile.name.clone(),
                })
            }
            Err(e) => Err(ProfileError::io("write", &path, e.error)),
        }
    }
}

/// Creates `dir` (and parents) if missing; the folder itself gets mode 0700 on Unix.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| ProfileError::io("create folder", dir, e))
}

fn read_profile(path: &Path, name: &str) -> Result<StoredProfile> {
    let text = fs::read_to_string(path).map_err(|e| ProfileError::io("read", path, e))?;
    let corrupt = |reason: String| ProfileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let profile: StoredProfile =
        toml::from_str(&text).map_err(|e| corrupt(e.message().replace('\n', " ")))?;
    if profile.name != name {
        return Err(corrupt(format!(
            "it says its name is {:?}, not {name:?}",
            profile.name
        )));
    }
    Ok(profile)
}

/// A parsed import: the profile (name and key location still to fill in), the key, and
/// what the user should know.
pub(crate) struct Parsed {
    profile: StoredProfile,
    key_pem: String,
    warnings: Vec<String>,
}

/// Parses a Gatehouse profile or an `.ovpn` file; returns it and its default name.
pub(crate) fn parse_any(
    text: &str,
    source_name: &str,
    dir: Option<&Path>,
) -> Result<(Parsed, String)> {
    // A TOML document with a `format` key is meant to be a Gatehouse profile (an .ovpn file
    // is never valid TOML), so its errors are reported as such.
    let is_gatehouse = text
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("format"));
    if is_gatehouse {
        let p = gatehouse_certs::Profile::from_toml(text).map_err(|e| {
            ProfileError::InvalidGatehouseProfile {
                source_name: source_name.to_string(),
                reason: e.to_string(),
            }
        })?;
        if let Some(v2) = &p.tls_crypt_v2 {
            gatehouse_engine::openvpn::wrap::TlsCryptV2ClientKey::from_pem(v2).map_err(|e| {
                ProfileError::InvalidGatehouseProfile {
                    source_name: source_name.to_string(),
                    reason: format!("its tls-crypt-v2 key: {e}"),
                }
            })?;
        }
        let parsed = Parsed {
            profile: StoredProfile {
                version: PROFILE_VERSION,
                name: String::new(),
                gateway: p.gateway,
                key_location: KeyLocation::Keyring,
                source: Source::Gatehouse,
                ciphers: SUPPORTED_CIPHERS.map(String::from).to_vec(),
                ca_pem: p.ca,
                cert_pem: p.cert,
                redirect_gateway: false,
                remote_random: false,
                protocols: p
                    .protocols
                    .iter()
                    .map(|e| Protocol {
                        kind: e.kind.into(),
                        port: e.port,
                    })
                    .collect(),
                remotes: Vec::new(),
                control_wrap: p.tls_crypt_v2.as_ref().map(|_| ControlWrap {
                    kind: WrapKind::TlsCryptV2,
                    direction: None,
                    digest: None,
                }),
                verify_x509_name: None,
                peer_fingerprints: Vec::new(),
                tls_version_min: None,
                tls_version_max: None,
                client_routing: p.client_routing,
                routing: Routing::Gateway,
                extra_routes: Vec::new(),
                auto_connect: AutoConnect::Off,
                trusted_networks: Vec::new(),
            },
            // The gateway's own tls-crypt-v2 key for this client travels with the private key.
            key_pem: crate::secrets::join(&p.key, p.tls_crypt_v2.as_deref()),
            warnings: Vec::new(),
        };
        return Ok((parsed, p.name));
    }
    let o = ovpn::parse_in(text, source_name, dir)?;
    let stem = Path::new(source_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed = Parsed {
        profile: StoredProfile {
            version: PROFILE_VERSION,
            name: String::new(),
            gateway: o.gateway,
            key_location: KeyLocation::Keyring,
            source: Source::Ovpn,
            ciphers: o.ciphers,
            ca_pem: o.ca_pem,
            cert_pem: o.cert_pem,
            redirect_gateway: o.redirect_gateway,
            remote_random: o.remote_random,
            protocols: o.protocols,
            remotes: o.remotes,
            control_wrap: o.control_wrap,
            verify_x509_name: o.verify_x509_name,
            peer_fingerprints: o.peer_fingerprints,
            tls_version_min: o.tls_version_min,
            tls_version_max: o.tls_version_max,
            // A stock server says nothing: its clients may always filter and add routes.
            client_routing: ClientRouting::User,
            routing: Routing::Gateway,
            extra_routes: Vec::new(),
            auto_connect: AutoConnect::Off,
            trusted_networks: Vec::new(),
        },
        key_pem: crate::secrets::join(&o.key_pem, o.wrap_key_pem.as_deref()),
        warnings: o.warnings,
    };
    Ok((parsed, stem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProtocolKind;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n";

    fn gatehouse_profile(name: &str) -> String {
        gatehouse_certs::Profile::new(name, "vpn.example.com", CERT, CERT, KEY)
            .to_toml()
            .unwrap()
    }

    fn ovpn_profile() -> String {
        format!(
            "client\ndev tun\nremote gw.example 443 tcp\ncomp-lzo\n<ca>\n{CERT}</ca>\n<cert>\n{CERT}</cert>\n<key>\n{KEY}</key>\n"
        )
    }

    fn mock_store() -> (tempfile::TempDir, ProfileStore) {
        let home = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(home.path(), KeyStore::mock()).unwrap();
        (home, store)
    }

    #[test]
    fn import_list_get_and_key_round_trip_with_the_mock_keyring() {
        let (home, store) = mock_store();
        assert!(store.list().unwrap().is_empty());

        let imported = store
            .import_str(&gatehouse_profile("alice"), "alice.toml", None)
            .unwrap();
        assert!(imported.warnings.is_empty());
        assert!(
            imported.key_note.contains("keyring"),
            "{}",
            imported.key_note
        );
        let alice = imported.profile;
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.source, Source::Gatehouse);
        assert_eq!(alice.key_location, KeyLocation::Keyring);
        assert_eq!(alice.port(ProtocolKind::OpenvpnTcp), Some(443));

        let imported = store
            .import_str(&ovpn_profile(), "/downloads/work.ovpn", None)
            .unwrap();
        assert_eq!(imported.profile.name, "work");
        assert_eq!(imported.profile.source, Source::Ovpn);
        assert!(imported.warnings[0].starts_with("comp-lzo"));

        let names: Vec<_> = store.list().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["alice", "work"]);
        assert_eq!(store.get("alice").unwrap(), alice);
        assert_eq!(store.key_pem("alice").unwrap(), KEY);
        assert_eq!(store.key_pem("work").unwrap(), KEY);

        // The profile file never holds the key.
        let file = fs::read_to_string(home.path().join("profiles/alice.toml")).unwrap();
        assert!(!file.contains("PRIVATE KEY"), "{file}");

        // A second store on the same folder (a restart) sees the same profiles.
        let again = ProfileStore::open(home.path(), store.keys().clone()).unwrap();
        assert_eq!(again.list().unwrap().len(), 2);
        assert_eq!(again.key_pem("alice").unwrap(), KEY);
    }

    #[test]
    fn duplicate_and_bad_names_are_refused() {
        let (_home, store) = mock_store();
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
        let err = store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--name") && err.contains("gatehouse remove alice"),
            "{err}"
        );
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", Some("alice2"))
            .unwrap();
        // The first alice keeps its key.
        assert_eq!(store.key_pem("alice").unwrap(), KEY);

        for bad in ["../evil", "a b", ".hidden", ""] {
            let err = store
                .import_str(&ovpn_profile(), "x.ovpn", Some(bad))
                .unwrap_err();
            assert!(
                matches!(err, ProfileError::InvalidName { .. }),
                "{bad}: {err}"
            );
            assert!(matches!(
                store.get(bad).unwrap_err(),
                ProfileError::NotFound { .. }
            ));
        }
        // An .ovpn whose file name is no valid profile name asks for --name.
        let err = store
            .import_str(&ovpn_profile(), "my vpn.ovpn", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--name"), "{err}");
    }

    #[test]
    fn remove_deletes_profile_and_key() {
        let (_home, store) = mock_store();
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
        let removed = store.remove("alice").unwrap();
        assert_eq!(removed.name, "alice");
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.remove("alice").unwrap_err(),
            ProfileError::NotFound { .. }
        ));
        // Importing again must not find a stale key: the keyring entry is gone.
        let keys = store.keys();
        let account = store.account("alice");
        assert!(keys.get(&KeyLocation::Keyring, "alice", &account).is_err());
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
    }

    #[test]
    fn rename_moves_profile_and_key() {
        let (_home, store) = mock_store();
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
        store
            .import_str(&ovpn_profile(), "work.ovpn", None)
            .unwrap();
        let err = store.rename("alice", "work").unwrap_err();
        assert!(matches!(err, ProfileError::Exists { .. }), "{err}");
        let err = store.rename("alice", "no/slash").unwrap_err();
        assert!(matches!(err, ProfileError::InvalidName { .. }), "{err}");
        let err = store.rename("nobody", "x").unwrap_err();
        assert!(matches!(err, ProfileError::NotFound { .. }), "{err}");

        let renamed = store.rename("alice", "home").unwrap();
        assert_eq!(renamed.name, "home");
        assert_eq!(store.key_pem("home").unwrap(), KEY);
        assert!(store.get("alice").is_err());
        let account = store.account("alice");
        assert!(
            store
                .keys()
                .get(&KeyLocation::Keyring, "alice", &account)
                .is_err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_fallback_keeps_keys_private_and_moves_them_on_rename() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let keys = KeyStore::File {
            dir: home.path().join("keys"),
            why: "no OS keyring reachable (test)".into(),
        };
        let store = ProfileStore::open(home.path(), keys).unwrap();
        let imported = store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
        let key_path = home.path().join("keys/alice.key");
        assert_eq!(
            imported.key_note,
            format!(
                "no OS keyring reachable (test); stored the key in {}, readable only by you",
                key_path.display()
            )
        );
        assert_eq!(
            imported.profile.key_location,
            KeyLocation::File(key_path.clone())
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&home.path().join("profiles/alice.toml")), 0o600);
        assert_eq!(mode(home.path().join("profiles").as_path()), 0o700);

        store.rename("alice", "bob").unwrap();
        assert!(!key_path.exists());
        let bob_key = home.path().join("keys/bob.key");
        assert_eq!(mode(&bob_key), 0o600);
        assert_eq!(store.key_pem("bob").unwrap(), KEY);

        // A key that vanished is reported with what to do.
        fs::remove_file(&bob_key).unwrap();
        let err = store.key_pem("bob").unwrap_err().to_string();
        assert!(err.contains("import the profile again"), "{err}");

        store.remove("bob").unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn wrapper_keys_go_to_the_keyring_with_the_private_key() {
        let (home, store) = mock_store();
        let ta = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ovpn/beside/ta.key"
        ))
        .unwrap();
        let text = format!(
            "{}key-direction 1\n<tls-auth>\n{ta}</tls-auth>\n",
            ovpn_profile()
        );
        let imported = store.import_str(&text, "office.ovpn", None).unwrap();
        assert_eq!(imported.profile.key_location, KeyLocation::Keyring);
        let wrap = imported.profile.control_wrap.clone().unwrap();
        assert_eq!(wrap.direction, Some(1));

        // The profile file says which wrapper; the key itself is only in the keyring.
        let file = fs::read_to_string(home.path().join("profiles/office.toml")).unwrap();
        assert!(file.contains("kind = \"tls-auth\""), "{file}");
        assert!(
            !file.contains("Static key") && !file.contains("PRIVATE KEY"),
            "{file}"
        );
        let secrets = store.key_pem("office").unwrap();
        let (key, wrap_key) = crate::secrets::split(&secrets);
        assert_eq!(key, KEY);
        assert!(
            wrap_key
                .unwrap()
                .starts_with("-----BEGIN OpenVPN Static key V1-----")
        );

        // Renaming moves both.
        store.rename("office", "work").unwrap();
        assert_eq!(store.key_pem("work").unwrap(), secrets);
    }

    #[test]
    fn gatehouse_profiles_bring_their_tls_crypt_v2_key() {
        let (home, store) = mock_store();
        let ovpn = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ovpn/angristan-tls-crypt-v2.ovpn"
        ))
        .unwrap();
        let start = ovpn.find("<tls-crypt-v2>\n").unwrap() + "<tls-crypt-v2>\n".len();
        let end = ovpn.find("</tls-crypt-v2>").unwrap();
        let mut p = gatehouse_certs::Profile::new("alice", "vpn.example.com", CERT, CERT, KEY);
        p.tls_crypt_v2 = Some(ovpn[start..end].to_string());
        let imported = store
            .import_str(&p.to_toml().unwrap(), "alice.toml", None)
            .unwrap();
        assert_eq!(
            imported.profile.control_wrap.map(|w| w.kind),
            Some(WrapKind::TlsCryptV2)
        );
        let file = fs::read_to_string(home.path().join("profiles/alice.toml")).unwrap();
        assert!(!file.contains("tls-crypt-v2 client key"), "{file}");
        let secrets = store.key_pem("alice").unwrap();
        let (key, v2) = crate::secrets::split(&secrets);
        assert_eq!(key, KEY);
        assert!(
            v2.unwrap()
                .starts_with("-----BEGIN OpenVPN tls-crypt-v2 client key-----")
        );

        // A damaged key is refused at import.
        p.tls_crypt_v2 = Some("-----BEGIN OpenVPN tls-crypt-v2 client key-----\nAAAA\n-----END OpenVPN tls-crypt-v2 client key-----\n".into());
        let err = store
            .import_str(&p.to_toml().unwrap(), "bob.toml", Some("bob"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls-crypt-v2 key"), "{err}");
    }

    #[test]
    fn damaged_profile_files_are_reported() {
        let (home, store) = mock_store();
        store
            .import_str(&gatehouse_profile("alice"), "a.toml", None)
            .unwrap();
        fs::write(home.path().join("profiles/alice.toml"), "gateway = 3").unwrap();
        let err = store.list().unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("alice.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_gatehouse_profile_says_to_export_again() {
        let (_home, store) = mock_store();
        let text = gatehouse_profile("alice").replace("version = 1", "version = 9");
        let err = store
            .import_str(&text, "alice.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("alice.toml: ") && err.contains("version 9") && err.contains("export"),
            "{err}"
        );
    }
}
