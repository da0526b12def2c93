//! The OpenVPN control-channel wrapper the gateway requires, from `[openvpn]`:
//! `tls_crypt_v2 = "on"` (per-client keys from `gatehouse-certs`), or one stock static key
//! (`tls_crypt_file` / `tls_auth_file`) for operators moving an existing install. Default:
//! none, like a stock OpenVPN server.

use std::path::Path;

use anyhow::{Context, Result, bail};
use gatehouse_engine::openvpn::wrap::{KeyDirection, ServerWrap, StaticKey, TlsAuthDigest};

use crate::config::{GatewayConfig, OpenVpnConfig};

/// Checks the wrapper keys of `[openvpn]` that need no files.
pub fn validate(o: &OpenVpnConfig) -> Result<()> {
    let v2 = match o.tls_crypt_v2.as_str() {
        "off" => false,
        "on" => true,
        other => bail!("`openvpn.tls_crypt_v2` = {other:?}: write \"on\" or \"off\""),
    };
    let chosen = [v2, o.tls_crypt_file.is_some(), o.tls_auth_file.is_some()];
    if chosen.iter().filter(|x| **x).count() > 1 {
        bail!(
            "`openvpn.tls_crypt_v2 = \"on\"`, `openvpn.tls_crypt_file` and `openvpn.tls_auth_file` exclude each other (an OpenVPN client uses one wrapper): keep one"
        );
    }
    if o.tls_auth_file.is_some() {
        direction(&o.tls_auth_key_direction)?;
        digest(&o.tls_auth_digest)?;
    }
    Ok(())
}

fn direction(s: &str) -> Result<Option<KeyDirection>> {
    if s == "none" {
        return Ok(None);
    }
    KeyDirection::from_openvpn_arg(s).map(Some).with_context(|| {
        format!(
            "`openvpn.tls_auth_key_direction` = {s:?}: write \"0\" (the usual server side), \"1\" or \"none\""
        )
    })
}

fn digest(s: &str) -> Result<TlsAuthDigest> {
    TlsAuthDigest::from_openvpn_name(s).with_context(|| {
        format!(
            "`openvpn.tls_auth_digest` = {s:?}: write the old server's `auth` (SHA1, SHA256, SHA384 or SHA512)"
        )
    })
}

/// Loads the wrapper. With `create`, a missing tls-crypt-v2 server key is made (on start);
/// without (`gatehoused check`) it is an error naming the file.
pub fn load(cfg: &GatewayConfig, config_dir: &Path, create: bool) -> Result<ServerWrap> {
    let o = &cfg.openvpn;
    validate(o)?;
    let pki_dir = cfg.pki_path(config_dir);
    let v2_path = gatehouse_certs::tls_crypt::server_key_path(&pki_dir);
    if o.tls_crypt_v2 == "on" {
        if create {
            let (path, made) = gatehouse_certs::tls_crypt::ensure_server_key(&pki_dir)
                .with_context(|| {
                    format!("creating the tls-crypt-v2 server key {}", v2_path.display())
                })?;
            if made {
                tracing::info!(key = %path.display(), "created the tls-crypt-v2 server key; re-export clients' .ovpn profiles (`gatehouse-certs export --format ovpn`)");
            }
        }
        let key = gatehouse_certs::tls_crypt::read_server_key(&pki_dir)
            .with_context(|| format!("`openvpn.tls_crypt_v2 = \"on\"`: cannot use {}", v2_path.display()))?
            .with_context(|| {
                format!(
                    "`openvpn.tls_crypt_v2 = \"on\"` but {} is missing: run `gatehouse-certs --pki {} tls-crypt-v2-server` (gatehoused also creates it on start)",
                    v2_path.display(),
                    pki_dir.display()
                )
            })?;
        return Ok(ServerWrap::TlsCryptV2 { key });
    }
    if v2_path.exists() {
        tracing::warn!(key = %v2_path.display(), "the PKI has a tls-crypt-v2 server key, so exported .ovpn profiles carry tls-crypt-v2 keys, but `openvpn.tls_crypt_v2` is \"off\": those clients will be dropped; set it to \"on\"");
    }
    if let Some(file) = &o.tls_crypt_file {
        let key = static_key(config_dir, file, "openvpn.tls_crypt_file")?;
        return Ok(ServerWrap::TlsCrypt { key });
    }
    if let Some(file) = &o.tls_auth_file {
        let key = static_key(config_dir, file, "openvpn.tls_auth_file")?;
        return Ok(ServerWrap::TlsAuth {
            key,
            direction: direction(&o.tls_auth_key_direction)?,
            digest: digest(&o.tls_auth_digest)?,
        });
    }
    Ok(ServerWrap::None)
}

fn static_key(config_dir: &Path, file: &Path, setting: &str) -> Result<StaticKey> {
    let path = config_dir.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("`{setting}`: cannot read {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            bail!(
                "`{setting}`: {} is readable by other users; it is a secret: chmod 600 it",
                path.display()
            );
        }
    }
    StaticKey::from_pem(&text).with_context(|| {
        format!(
            "`{setting}`: {} is not an OpenVPN static key (make one with `openvpn --genkey secret FILE`)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn err(r: Result<ServerWrap>) -> String {
        format!("{:#}", r.expect_err("should fail"))
    }

    #[test]
    fn default_is_no_wrapper_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = GatewayConfig::new("vpn.example.com");
        assert!(matches!(
            load(&cfg, dir.path(), false).unwrap(),
            ServerWrap::None
        ));
        cfg.openvpn.tls_crypt_v2 = "yes".into();
        assert!(err(load(&cfg, dir.path(), false)).contains("`openvpn.tls_crypt_v2`"));
        cfg.openvpn.tls_crypt_v2 = "on".into();
        cfg.openvpn.tls_auth_file = Some("ta.key".into());
        assert!(err(load(&cfg, dir.path(), false)).contains("exclude each other"));
    }

    #[test]
    fn v2_server_key_is_named_when_missing_and_made_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = GatewayConfig::new("vpn.example.com");
        cfg.openvpn.tls_crypt_v2 = "on".into();
        let e = err(load(&cfg, dir.path(), false));
        assert!(
            e.contains("tls-crypt-v2-server.key") && e.contains("gatehouse-certs"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        assert!(matches!(
            load(&cfg, dir.path(), true).unwrap(),
            ServerWrap::TlsCryptV2 { .. }
        ));
        let key = dir.path().join("pki/tls-crypt-v2-server.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&key, "garbage").unwrap();
        let e = err(load(&cfg, dir.path(), true));
        assert!(e.contains("tls-crypt-v2-server.key"), "{e}");
    }

    #[test]
    fn static_keys_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = GatewayConfig::new("vpn.example.com");
        cfg.openvpn.tls_auth_file = Some("ta.key".into());
        let e = err(load(&cfg, dir.path(), false));
        assert!(
            e.contains("`openvpn.tls_auth_file`") && e.contains("ta.key"),
            "{e}"
        );
        let path = dir.path().join("ta.key");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = err(load(&cfg, dir.path(), false));
        assert!(e.contains("not an OpenVPN static key"), "{e}");
        let key = StaticKey::from_bytes([7; 256]);
        std::fs::write(&path, key.to_pem()).unwrap();
        cfg.openvpn.tls_auth_digest = "SHA256".into();
        cfg.openvpn.tls_auth_key_direction = "none".into();
        assert!(matches!(
            load(&cfg, dir.path(), false).unwrap(),
            ServerWrap::TlsAuth {
                direction: None,
                digest: TlsAuthDigest::Sha256,
                ..
            }
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(err(load(&cfg, dir.path(), false)).contains("chmod 600"));
        cfg.openvpn.tls_auth_digest = "MD4".into();
        assert!(err(load(&cfg, dir.path(), false)).contains("`openvpn.tls_auth_digest`"));
    }
}
