//! Client exports: Gatehouse profile, stock OpenVPN `.ovpn`, PKCS#12, strongSwan swanctl
//! folder, and for the built-in IKEv2 clients an Apple `.mobileconfig` and a Windows
//! PowerShell script (see [`crate::export_builtin`]).

use std::fmt;
use std::str::FromStr;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

use crate::error::{PkiError, Result};
use crate::fsutil::{DirEntry, KEY_MODE, PRIVATE_DIR_MODE, PUBLIC_MODE};
use crate::profile::Profile;

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Gatehouse profile (TOML, see [`Profile`]).
    Gatehouse,
    /// A stock OpenVPN client config with inline CA, certificate and key.
    Ovpn,
    /// PKCS#12 (certificate, key and CA; PBES2/AES-256 + HMAC-SHA256, which OpenSSL 3 reads
    /// without `-legacy`).
    Pkcs12,
    /// A strongSwan `swanctl` folder (usable as `SWANCTL_DIR`): `swanctl.conf` with the
    /// connection `gatehouse`, `x509ca/gatehouse-ca.pem`, `x509/<name>.pem` and
    /// `private/<name>.pem`. A folder, not a file: see [`crate::Pki::export_swanctl`].
    Swanctl,
    /// An Apple configuration profile (`.mobileconfig`) for the IKEv2 client built into
    /// iOS, iPadOS and macOS: VPN payload, client PKCS#12 (needs a password), CA as a root.
    Mobileconfig,
    /// A PowerShell script for the IKEv2 client built into Windows 10/11: imports the CA
    /// and the client's PKCS#12 into the machine stores, then `Add-VpnConnection` and
    /// `Set-VpnConnectionIPsecConfiguration`.
    Windows,
}

impl Format {
    /// Whether the export is a folder of files rather than one file.
    pub fn is_folder(self) -> bool {
        self == Format::Swanctl
    }
}

impl FromStr for Format {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gatehouse" => Ok(Format::Gatehouse),
            "ovpn" | "openvpn" => Ok(Format::Ovpn),
            "pkcs12" | "p12" | "pfx" => Ok(Format::Pkcs12),
            "swanctl" | "strongswan" => Ok(Format::Swanctl),
            "mobileconfig" | "apple" | "ios" | "macos" => Ok(Format::Mobileconfig),
            "windows" | "powershell" | "ps1" => Ok(Format::Windows),
            _ => Err(PkiError::InvalidFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Gatehouse => "gatehouse",
            Format::Ovpn => "ovpn",
            Format::Pkcs12 => "pkcs12",
            Format::Swanctl => "swanctl",
            Format::Mobileconfig => "mobileconfig",
            Format::Windows => "windows",
        })
    }
}

/// The material every export is built from.
pub(crate) struct ClientBundle<'a> {
    pub name: &'a str,
    pub gateway: &'a str,
    pub ca_pem: &'a str,
    /// The client certificate alone.
    pub cert_pem: &'a str,
    /// The intermediate CA that issued it (PEM), empty when the root did: the client sends
    /// it after its certificate.
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
}

/// The client certificate followed by its chain (intermediate CAs), PEM: what a `.ovpn`
/// `<cert>` or a profile's `cert` holds, so that the client sends the whole chain.
pub(crate) fn with_chain(cert_pem: &str, chain_pem: &str) -> String {
    if chain_pem.trim().is_empty() {
        return cert_pem.to_string();
    }
    format!("{}\n{}\n", cert_pem.trim_end(), chain_pem.trim_end())
}

/// File name of the intermediate CA in a swanctl folder's `x509ca/`.
const SWANCTL_INTERMEDIATE_FILE: &str = "gatehouse-intermediate.pem";

/// Renders `bundle` in `format`.
pub(crate) fn render(bundle: &ClientBundle<'_>, format: Format, password: &str) -> Result<Vec<u8>> {
    match format {
        Format::Gatehouse => Ok(Profile::new(
            bundle.name,
            bundle.gateway,
            bundle.ca_pem,
            &with_chain(bundle.cert_pem, bundle.chain_pem),
            bundle.key_pem,
        )
        .to_toml()?
        .into_bytes()),
        Format::Ovpn => Ok(ovpn(bundle).into_bytes()),
        Format::Pkcs12 => pkcs12(bundle, password),
        Format::Mobileconfig => crate::export_builtin::mobileconfig(bundle, password),
        Format::Windows => crate::export_builtin::windows_script(bundle, password),
        Format::Swanctl => Err(PkiError::NotAFileFormat(format)),
    }
}

/// Name of the swanctl connection and of its one child (`swanctl --initiate --child ...`).
pub(crate) const SWANCTL_CONNECTION: &str = "gatehouse";
/// File name of the CA certificate in `x509ca/`.
const SWANCTL_CA_FILE: &str = "gatehouse-ca.pem";

/// The swanctl folder: everything in it, parents first.
pub(crate) fn swanctl(b: &ClientBundle<'_>) -> Vec<DirEntry> {
    let pem = |text: &str| {
        let mut data = text.trim_end().as_bytes().to_vec();
        data.push(b'\n');
        data
    };
    let mut entries = vec![
        DirEntry::File {
            path: "swanctl.conf".into(),
            data: swanctl_conf(b.name, b.gateway).into_bytes(),
            mode: PUBLIC_MODE,
        },
        DirEntry::Dir {
            path: "x509ca",
            mode: 0o755,
        },
        DirEntry::File {
            path: format!("x509ca/{SWANCTL_CA_FILE}"),
            data: pem(b.ca_pem),
            mode: PUBLIC_MODE,
        },
    ];
    // charon sends the intermediate CAs of its own certificate's chain that it has loaded.
    if !b.chain_pem.trim().is_empty() {
        entries.push(DirEntry::File {
            path: format!("x509ca/{SWANCTL_INTERMEDIATE_FILE}"),
            data: pem(b.chain_pem),
            mode: PUBLIC_MODE,
        });
    }
    entries.extend([
        DirEntry::Dir {
            path: "x509",
            mode: 0o755,
        },
        DirEntry::File {
            path: format!("x509/{}.pem", b.name),
            data: pem(b.cert_pem),
            mode: PUBLIC_MODE,
        },
        DirEntry::Dir {
            path: "private",
            mode: PRIVATE_DIR_MODE,
        },
        DirEntry::File {
            path: format!("private/{}.pem", b.name),
            data: pem(b.key_pem),
            mode: KEY_MODE,
        },
    ]);
    entries
}

/// `swanctl.conf` for client `name` (a checked certificate name) and `gateway` (a checked
/// DNS name or IP address, the SAN of the gateway's certificate and so its IKE identity).
fn swanctl_conf(name: &str, gateway: &str) -> String {
    let conn = SWANCTL_CONNECTION;
    let header = [
        format!("strongSwan swanctl configuration for Gatehouse client {name}, gateway {gateway}."),
        "Written by gatehouse-certs. This folder is a complete swanctl directory:".into(),
        format!("  swanctl.conf - this file, the connection \"{conn}\""),
        format!(
            "  x509ca/{SWANCTL_CA_FILE} - the Gatehouse CA, which signed the gateway's certificate"
        ),
        format!("  x509/{name}.pem - the certificate of {name}"),
        format!("  private/{name}.pem - its private key (PKCS#8): keep it secret, mode 0600"),
        String::new(),
        "With charon running (the strongswan service or charon-systemd), either load the".into(),
        "folder where it is (SWANCTL_DIR names it; run this inside the folder):".into(),
        "  sudo env SWANCTL_DIR=\"$PWD\" swanctl --load-all".into(),
        "or copy swanctl.conf, x509ca/, x509/ and private/ into /etc/swanctl, keeping the".into(),
        "modes (if /etc/swanctl/swanctl.conf is already in use, put this file in".into(),
        format!("/etc/swanctl/conf.d/{conn}.conf instead), and run"),
        "  sudo swanctl --load-all".into(),
        "(swanctl notes that folders for other kinds of credentials, such as x509crl/, are".into(),
        "missing: that is harmless.)".into(),
        "Then connect, and later disconnect, with".into(),
        format!("  sudo swanctl --initiate --child {conn}"),
        format!("  sudo swanctl --terminate --ike {conn}"),
    ];
    let mut text: String = header
        .iter()
        .map(|line| format!("#{}{line}\n", if line.is_empty() { "" } else { " " }))
        .collect();
    text.push_str(&format!(
        r#"
connections {{
  {conn} {{
    version = 2
    remote_addrs = {gateway}
    vips = 0.0.0.0
    encap = yes
    proposals = aes256gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384,default
    dpd_delay = 30s
    local {{
      auth = pubkey
      certs = {name}.pem
      id = "CN={name}"
    }}
    remote {{
      auth = pubkey
      # The gateway's certificate is issued for {gateway}; it answers with that identity.
      id = {gateway}
    }}
    children {{
      {conn} {{
        remote_ts = 0.0.0.0/0
        esp_proposals = aes256gcm16,chacha20poly1305
        start_action = none
        dpd_action = restart
      }}
    }}
  }}
}}
"#
    ));
    text
}

fn ovpn(b: &ClientBundle<'_>) -> String {
    let block = |tag: &str, pem: &str| format!("<{tag}>\n{}\n</{tag}>\n", pem.trim_end());
    format!(
        "# Gatehouse client profile for {name} (stock OpenVPN 2.6 config)\n\
         client\n\
         dev tun\n\
         proto udp\n\
         remote {gateway} 1194\n\
         nobind\n\
         persist-key\n\
         persist-tun\n\
         remote-cert-tls server\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n\
         verb 3\n\
         {ca}{cert}{key}",
        name = b.name,
        gateway = b.gateway,
        ca = block("ca", b.ca_pem),
        cert = block("cert", &with_chain(b.cert_pem, b.chain_pem)),
        key = block("key", b.key_pem),
    )
}

/// The `.ovpn` with the client's own tls-crypt-v2 key inline (the PKI has a server key).
pub(crate) fn ovpn_with_tls_crypt_v2(b: &ClientBundle<'_>, v2_pem: &str) -> String {
    format!(
        "{}<tls-crypt-v2>\n{}\n</tls-crypt-v2>\n",
        ovpn(b),
        v2_pem.trim_end()
    )
}

pub(crate) fn pem_der(pem_text: &str, what: &str) -> Result<Vec<u8>> {
    pem::parse(pem_text)
        .map(pem::Pem::into_contents)
        .map_err(|e| PkiError::Corrupt(format!("stored {what} is not PEM: {e}")))
}

fn pkcs12(b: &ClientBundle<'_>, password: &str) -> Result<Vec<u8>> {
    pkcs12_with(
        b,
        password,
        EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
        MacAlgorithm::HmacSha256,
    )
}

/// The client's certificate, key and CA as PKCS#12 with the given algorithms (the built-in
/// clients' importers want the legacy ones).
pub(crate) fn pkcs12_with(
    b: &ClientBundle<'_>,
    password: &str,
    encryption: EncryptionAlgorithm,
    mac: MacAlgorithm,
) -> Result<Vec<u8>> {
    let p12 = |e: p12_keystore::error::Error| PkiError::Pkcs12(e.to_string());
    let cert = Certificate::from_der(&pem_der(b.cert_pem, "certificate")?).map_err(p12)?;
    let ca = Certificate::from_der(&pem_der(b.ca_pem, "CA certificate")?).map_err(p12)?;
    let key = PrivateKey::from_der(&pem_der(b.key_pem, "private key")?).map_err(p12)?;
    // The local key id ties the key bag to its certificate bag; the thumbprint is unique.
    let key_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_der());
    // Leaf, intermediate CAs, root: the order of a chain.
    let mut certs = vec![cert];
    for block in pem::parse_many(b.chain_pem)
        .map_err(|e| PkiError::Corrupt(format!("stored intermediate CA is not PEM: {e}")))?
    {
        certs.push(Certificate::from_der(block.contents()).map_err(p12)?);
    }
    certs.push(ca);
    let chain = PrivateKeyChain::new(key_id.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(b.name, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(encryption)
        .mac_algorithm(mac)
        .write()
        .map_err(p12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("gatehouse".parse::<Format>().unwrap(), Format::Gatehouse);
        assert_eq!("OVPN".parse::<Format>().unwrap(), Format::Ovpn);
        assert_eq!("pkcs12".parse::<Format>().unwrap(), Format::Pkcs12);
        assert_eq!("swanctl".parse::<Format>().unwrap(), Format::Swanctl);
        assert_eq!("strongSwan".parse::<Format>().unwrap(), Format::Swanctl);
        assert!(Format::Swanctl.is_folder() && !Format::Ovpn.is_folder());
        let pem = "-----BEGIN X-----\nAA==\n-----END X-----\n";
        let bundle = ClientBundle {
            name: "alice",
            gateway: "vpn.example.com",
            ca_pem: pem,
            cert_pem: pem,
            chain_pem: "",
            key_pem: pem,
        };
        assert!(matches!(
            render(&bundle, Format::Swanctl, ""),
            Err(PkiError::NotAFileFormat(Format::Swanctl))
        ));
        assert!("zip".parse::<Format>().is_err());
        assert_eq!(
            "mobileconfig".parse::<Format>().unwrap(),
            Format::Mobileconfig
        );
        assert_eq!("windows".parse::<Format>().unwrap(), Format::Windows);
        assert!(matches!(
            render(&bundle, Format::Mobileconfig, ""),
            Err(PkiError::PasswordRequired(Format::Mobileconfig))
        ));
    }

    #[test]
    fn ovpn_has_the_stock_directives_and_inline_blocks() {
        let pem = "-----BEGIN X-----\nAA==\n-----END X-----\n";
        let text = ovpn(&ClientBundle {
            name: "alice",
            gateway: "vpn.example.com",
            ca_pem: pem,
            cert_pem: pem,
            chain_pem: "",
            key_pem: pem,
        });
        for line in [
            "client",
            "dev tun",
            "proto udp",
            "remote vpn.example.com 1194",
            "nobind",
            "persist-key",
            "persist-tun",
            "remote-cert-tls server",
            "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "verb 3",
            "<ca>",
            "</ca>",
            "<cert>",
            "</cert>",
            "<key>",
            "</key>",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn swanctl_conf_is_one_balanced_connection_for_the_gateway() {
        let text = swanctl_conf("alice", "vpn.example.com");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for line in [
            "gatehouse {",
            "version = 2",
            "remote_addrs = vpn.example.com",
            "vips = 0.0.0.0",
            "encap = yes",
            "proposals = aes256gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384,default",
            "dpd_delay = 30s",
            "certs = alice.pem",
            "id = \"CN=alice\"",
            "id = vpn.example.com",
            "remote_ts = 0.0.0.0/0",
            "esp_proposals = aes256gcm16,chacha20poly1305",
            "start_action = none",
            "dpd_action = restart",
        ] {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
        assert_eq!(lines.iter().filter(|l| **l == "auth = pubkey").count(), 2);
        // Outside comments: braces balance and no line is left over from a template.
        let body: Vec<&str> = lines.into_iter().filter(|l| !l.starts_with('#')).collect();
        let opens = body.iter().filter(|l| l.ends_with('{')).count();
        let closes = body.iter().filter(|l| **l == "}").count();
        assert_eq!((opens, closes), (6, 6), "{text}");
        assert!(
            text.contains("swanctl --initiate --child gatehouse"),
            "{text}"
        );
        assert!(text.contains("SWANCTL_DIR"), "{text}");
    }
}
