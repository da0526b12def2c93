//! The gateway's data directory: `gateway.toml` plus the PKI folder, created by
//! `gatehoused init` or by the first `gatehoused run` on an empty directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gatehouse_certs::{CaOptions, Pki, Validity};
use ipnet::Ipv4Net;

use crate::config::GatewayConfig;

/// File name of the configuration inside a data directory.
pub const CONFIG_FILE: &str = "gateway.toml";

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// DNS name or IP clients dial.
    pub public_addr: String,
    /// Networks behind the gateway.
    pub address_space: Vec<Ipv4Net>,
    /// Client pool (None = default).
    pub client_pool: Option<Ipv4Net>,
    /// DNS servers pushed to clients.
    pub dns: Vec<IpAddr>,
    /// Other names or addresses clients dial (the gateway's IPv6 address, a second DNS
    /// name): added to the gateway certificate beside `public_addr`.
    pub extra_sans: Vec<String>,
}

/// Creates `dir/gateway.toml` and `dir/pki` (CA + gateway certificate for `public_addr`).
/// Refuses to touch a directory that already holds a configuration.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<PathBuf> {
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} already exists; edit it, or pick an empty --data-dir",
            config_path.display()
        );
    }
    let mut cfg = GatewayConfig::new(&opts.public_addr);
    cfg.address_space = opts.address_space.clone();
    if let Some(p) = opts.client_pool {
        cfg.client_pool = p;
    }
    cfg.dns = opts.dns.clone();
    cfg.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pki_dir = cfg.pki_path(dir);
    let mut pki = if pki_dir.join("ca.crt").exists() {
        Pki::open(&pki_dir)?
    } else {
        Pki::init(
            &pki_dir,
            &CaOptions {
                name: format!("Gatehouse Root CA ({})", opts.public_addr),
                ..CaOptions::default()
            },
        )?
    };
    let (crt, _) = pki.server_cert_paths(&cfg.server_cert);
    if !crt.exists() {
        let mut sans = vec![opts.public_addr.clone()];
        for san in &opts.extra_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        pki.issue_server(&cfg.server_cert, &sans, &Validity::default())
            .with_context(|| {
                format!(
                    "issuing the gateway certificate for {} (each must be a DNS name or IP address: --public-addr, --san)",
                    sans.join(", ")
                )
            })?;
    }
    let text = cfg.to_toml()?;
    let tmp = dir.join(".gateway.toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &config_path)?;
    Ok(config_path)
}

/// The host name, used as the public address when the first run bootstraps without one.
pub fn default_public_addr() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_config_and_pki_and_refuses_twice() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            public_addr: "vpn.example.com".into(),
            address_space: vec!["10.1.0.0/16".parse().unwrap()],
            client_pool: None,
            dns: vec!["10.1.0.53".parse().unwrap()],
            extra_sans: Vec::new(),
        };
        let path = init(dir.path(), &opts).unwrap();
        let cfg = GatewayConfig::load(&path).unwrap();
        assert_eq!(cfg.public_addr, "vpn.example.com");
        assert_eq!(cfg.address_space.len(), 1);
        assert!(dir.path().join("pki/ca.crt").exists());
        assert!(dir.path().join("pki/server/gateway.crt").exists());
        let err = init(dir.path(), &opts).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    /// `--san`: the gateway certificate names the public address and every extra name, so a
    /// client that checks the name it dials (ours) accepts the gateway at its IPv6 address.
    #[test]
    fn extra_sans_go_into_the_gateway_certificate() {
        use x509_parser::extensions::GeneralName;
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            public_addr: "203.0.113.1".into(),
            address_space: Vec::new(),
            client_pool: None,
            dns: Vec::new(),
            extra_sans: vec![
                "2001:db8::1".into(),
                "vpn.example.com".into(),
                "203.0.113.1".into(),
            ],
        };
        init(dir.path(), &opts).unwrap();
        let pem = std::fs::read(dir.path().join("pki/server/gateway.crt")).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
                }
                GeneralName::IPAddress(b) => {
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["203.0.113.1", "2001:db8::1", "vpn.example.com"]);

        // A bad name is refused with the keys to fix.
        let dir = tempfile::tempdir().unwrap();
        let bad = InitOptions {
            extra_sans: vec!["not a name!".into()],
            ..opts
        };
        let err = format!("{:#}", init(dir.path(), &bad).unwrap_err());
        assert!(err.contains("--san"), "{err}");
    }
}
