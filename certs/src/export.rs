//! Client exports: Gatehouse profile, stock OpenVPN `.ovpn`, PKCS#12.

use std::fmt;
use std::str::FromStr;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

use crate::error::{PkiError, Result};
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
}

impl FromStr for Format {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gatehouse" => Ok(Format::Gatehouse),
            "ovpn" | "openvpn" => Ok(Format::Ovpn),
            "pkcs12" | "p12" | "pfx" => Ok(Format::Pkcs12),
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
        })
    }
}

/// The material every export is built from.
pub(crate) struct ClientBundle<'a> {
    pub name: &'a str,
    pub gateway: &'a str,
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Renders `bundle` in `format`.
pub(crate) fn render(bundle: &ClientBundle<'_>, format: Format, password: &str) -> Result<Vec<u8>> {
    match format {
        Format::Gatehouse => Ok(Profile::new(
            bundle.name,
            bundle.gateway,
            bundle.ca_pem,
            bundle.cert_pem,
            bundle.key_pem,
        )
        .to_toml()?
        .into_bytes()),
        Format::Ovpn => Ok(ovpn(bundle).into_bytes()),
        Format::Pkcs12 => pkcs12(bundle, password),
    }
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
         data-ciphers AES-256-GCM:CHACHA20-POLY1305\n\
         verb 3\n\
         {ca}{cert}{key}",
        name = b.name,
        gateway = b.gateway,
        ca = block("ca", b.ca_pem),
        cert = block("cert", b.cert_pem),
        key = block("key", b.key_pem),
    )
}

fn pem_der(pem_text: &str, what: &str) -> Result<Vec<u8>> {
    pem::parse(pem_text)
        .map(pem::Pem::into_contents)
        .map_err(|e| PkiError::Corrupt(format!("stored {what} is not PEM: {e}")))
}

fn pkcs12(b: &ClientBundle<'_>, password: &str) -> Result<Vec<u8>> {
    let p12 = |e: p12_keystore::error::Error| PkiError::Pkcs12(e.to_string());
    let cert = Certificate::from_der(&pem_der(b.cert_pem, "certificate")?).map_err(p12)?;
    let ca = Certificate::from_der(&pem_der(b.ca_pem, "CA certificate")?).map_err(p12)?;
    let key = PrivateKey::from_der(&pem_der(b.key_pem, "private key")?).map_err(p12)?;
    // The local key id ties the key bag to its certificate bag; the thumbprint is unique.
    let key_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_der());
    let chain = PrivateKeyChain::new(key_id.as_ref(), key, [cert, ca]);
    let mut store = KeyStore::new();
    store.add_entry(b.name, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .mac_algorithm(MacAlgorithm::HmacSha256)
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
        assert!("zip".parse::<Format>().is_err());
    }

    #[test]
    fn ovpn_has_the_stock_directives_and_inline_blocks() {
        let pem = "-----BEGIN X-----\nAA==\n-----END X-----\n";
        let text = ovpn(&ClientBundle {
            name: "alice",
            gateway: "vpn.example.com",
            ca_pem: pem,
            cert_pem: pem,
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
            "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
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
}
