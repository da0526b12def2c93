//! tls-crypt-v2 keys kept in the PKI folder, in OpenVPN 2.6's formats (what
//! `openvpn --genkey tls-crypt-v2-server|tls-crypt-v2-client` writes):
//!
//! ```text
//! <pki>/tls-crypt-v2-server.key            the gateway's server key, mode 0600
//! <pki>/private/tls-crypt-v2/<serial>.key  one client key per client certificate, mode 0600
//! ```
//!
//! A client key is made the first time its certificate is exported as `.ovpn` while the
//! server key exists; its metadata (OpenVPN's "user" type, byte 0x00) names the certificate:
//! `gatehouse serial=<hex> name=<name>`, so the gateway can tell whose key it is before TLS.

use std::path::{Path, PathBuf};

use gatehouse_engine::openvpn::wrap::{
    STATIC_KEY_LEN, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey, V2_METADATA_USER,
    V2_SERVER_KEY_LEN,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::fsutil::{self, KEY_MODE, PRIVATE_DIR_MODE};
use crate::{PRIVATE_DIR, Pki, PkiError, Result};

/// File name of the tls-crypt-v2 server key in the PKI folder.
pub const TLS_CRYPT_V2_SERVER_KEY: &str = "tls-crypt-v2-server.key";
/// Folder (under `private/`) of the per-client tls-crypt-v2 keys.
const CLIENT_KEY_DIR: &str = "tls-crypt-v2";

/// Path of the tls-crypt-v2 server key of the PKI folder `pki_dir`.
pub fn server_key_path(pki_dir: &Path) -> PathBuf {
    pki_dir.join(TLS_CRYPT_V2_SERVER_KEY)
}

/// Reads the tls-crypt-v2 server key of `pki_dir`; `Ok(None)` if there is none.
pub fn read_server_key(pki_dir: &Path) -> Result<Option<TlsCryptV2ServerKey>> {
    let path = server_key_path(pki_dir);
    if !path.exists() {
        return Ok(None);
    }
    let text = fsutil::read_to_string(&path)?;
    TlsCryptV2ServerKey::from_pem(&text).map(Some).map_err(|e| {
        PkiError::Corrupt(format!(
            "{}: {e}; move it away and run `gatehouse-certs --pki {} tls-crypt-v2-server` for a new one (every client then needs a new profile)",
            path.display(),
            pki_dir.display()
        ))
    })
}

/// Creates the tls-crypt-v2 server key of `pki_dir` (mode 0600) unless it exists. Returns
/// its path and whether it was created now.
pub fn ensure_server_key(pki_dir: &Path) -> Result<(PathBuf, bool)> {
    let path = server_key_path(pki_dir);
    if read_server_key(pki_dir)?.is_some() {
        return Ok((path, false));
    }
    let mut raw = [0u8; V2_SERVER_KEY_LEN];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| PkiError::Random)?;
    let key = TlsCryptV2ServerKey::from_bytes(raw);
    raw.fill(0);
    fsutil::write_atomic(&path, key.to_pem().as_bytes(), KEY_MODE)?;
    Ok((path, true))
}

/// The metadata Gatehouse puts in a client key.
pub fn client_metadata(serial: &str, name: &str) -> Vec<u8> {
    let mut m = vec![V2_METADATA_USER];
    m.extend_from_slice(format!("gatehouse serial={serial} name={name}").as_bytes());
    m
}

/// The serial named in metadata written by [`client_metadata`].
pub fn serial_of_metadata(metadata: &[u8]) -> Option<&str> {
    let (&kind, text) = metadata.split_first()?;
    if kind != V2_METADATA_USER {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    text.strip_prefix("gatehouse serial=")?.split(' ').next()
}

impl Pki {
    /// Creates the tls-crypt-v2 server key if missing (see [`ensure_server_key`]).
    pub fn ensure_tls_crypt_v2_server_key(&self) -> Result<(PathBuf, bool)> {
        ensure_server_key(self.dir())
    }

    /// The tls-crypt-v2 client key of the certificate `serial` (issued to `name`), made and
    /// stored (0600) on first use; `Ok(None)` when the PKI has no server key.
    pub(crate) fn tls_crypt_v2_client_key(
        &self,
        serial: &str,
        name: &str,
    ) -> Result<Option<TlsCryptV2ClientKey>> {
        let Some(server) = read_server_key(self.dir())? else {
            return Ok(None);
        };
        let dir = self.dir().join(PRIVATE_DIR).join(CLIENT_KEY_DIR);
        let path = dir.join(format!("{serial}.key"));
        if path.exists() {
            let text = fsutil::read_to_string(&path)?;
            let key = TlsCryptV2ClientKey::from_pem(&text)
                .map_err(|e| PkiError::Corrupt(format!("{}: {e}", path.display())))?;
            // A key wrapped by an older server key would be refused by the gateway: replace it.
            if server.unwrap_client_key(key.wkc()).is_ok() {
                return Ok(Some(key));
            }
        }
        fsutil::ensure_dir(&dir, PRIVATE_DIR_MODE)?;
        let mut raw = [0u8; STATIC_KEY_LEN];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| PkiError::Random)?;
        let kc = StaticKey::from_bytes(raw);
        raw.fill(0);
        let key = TlsCryptV2ClientKey::wrap_new(&server, kc, &client_metadata(serial, name))
            .map_err(|e| PkiError::Corrupt(format!("cannot wrap a tls-crypt-v2 key: {e}")))?;
        fsutil::write_atomic(&path, key.to_pem().as_bytes(), KEY_MODE)?;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_the_certificate() {
        let m = client_metadata("1f2e", "alice");
        assert_eq!(m[0], 0);
        assert_eq!(serial_of_metadata(&m), Some("1f2e"));
        assert_eq!(serial_of_metadata(&[1, 0, 0, 0, 0, 0, 0, 0, 9]), None);
    }
}
