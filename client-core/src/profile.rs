//! What the client keeps about one connection: gateway, protocols, CA, client certificate,
//! data ciphers - and where its private key is. The key itself never enters these types or
//! the profile files; it stays in the OS keyring or a key file ([`crate::keys`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ProfileError, Result};

/// The data ciphers the engine implements, in our order of preference (OpenVPN names).
pub const SUPPORTED_CIPHERS: [&str; 2] = ["AES-256-GCM", "CHACHA20-POLY1305"];

/// A tunnel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    /// OpenVPN protocol over UDP.
    OpenvpnUdp,
    /// OpenVPN protocol over TCP.
    OpenvpnTcp,
    /// IKEv2 with ESP-in-UDP.
    Ikev2,
    /// IP packets in QUIC datagrams.
    Quic,
}

impl ProtocolKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [ProtocolKind; 4] = [
        ProtocolKind::OpenvpnUdp,
        ProtocolKind::OpenvpnTcp,
        ProtocolKind::Ikev2,
        ProtocolKind::Quic,
    ];

    /// The name used on the command line and in profile files (`openvpn-udp`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::OpenvpnUdp => "openvpn-udp",
            ProtocolKind::OpenvpnTcp => "openvpn-tcp",
            ProtocolKind::Ikev2 => "ikev2",
            ProtocolKind::Quic => "quic",
        }
    }
}

impl fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProtocolKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ProtocolKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown protocol {s:?}; use openvpn-udp, openvpn-tcp, ikev2 or quic")
            })
    }
}

impl From<gatehouse_certs::profile::ProtocolKind> for ProtocolKind {
    fn from(kind: gatehouse_certs::profile::ProtocolKind) -> Self {
        use gatehouse_certs::profile::ProtocolKind as P;
        match kind {
            P::OpenvpnUdp => ProtocolKind::OpenvpnUdp,
            P::OpenvpnTcp => ProtocolKind::OpenvpnTcp,
            P::Ikev2 => ProtocolKind::Ikev2,
            P::Quic => ProtocolKind::Quic,
        }
    }
}

/// One way of reaching the gateway: a protocol and the gateway's port for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Protocol {
    /// The protocol.
    pub kind: ProtocolKind,
    /// The gateway's port for it.
    pub port: u16,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.port)
    }
}

/// What kind of file a profile was imported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A Gatehouse profile (`gatehouse-certs export --format gatehouse`).
    Gatehouse,
    /// A stock OpenVPN `.ovpn` file with inline certificates and key.
    Ovpn,
}

/// Where a profile's private key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyLocation {
    /// In the OS keyring (Secret Service, macOS Keychain, Windows Credential Manager) - or,
    /// in tests, in the in-memory mock store the [`ProfileStore`](crate::ProfileStore) was
    /// opened with.
    Keyring,
    /// In this file, readable only by its owner.
    File(PathBuf),
}

impl fmt::Display for KeyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLocation::Keyring => f.write_str("OS keyring"),
            KeyLocation::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A profile as the client keeps it (`GATEHOUSE_HOME/profiles/NAME.toml`), without its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// The profile's name: letters, digits, `-`, `_`, `.` (see [`check_name`]).
    pub name: String,
    /// The gateway's host name or IP address.
    pub gateway: String,
    /// Where the key is.
    pub key_location: KeyLocation,
    /// What it was imported from.
    pub source: Source,
    /// The data ciphers to offer, in order of preference (OpenVPN names, upper case; a
    /// subset of [`SUPPORTED_CIPHERS`]).
    pub ciphers: Vec<String>,
    /// The root CA certificate(s) (PEM) the gateway's certificate must chain to.
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The protocols to try, in order of preference; never empty.
    pub protocols: Vec<Protocol>,
}

impl StoredProfile {
    /// The port for `kind`, if the profile offers it.
    pub fn port(&self, kind: ProtocolKind) -> Option<u16> {
        self.protocols
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.port)
    }

    pub(crate) fn to_toml(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

/// Checks a profile name: 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`
/// (so it is never a hidden file, `.` or `..`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["alice", "alice.work", "a-b_c.1", "A"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(65);
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "ä", "a\\b", &long] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("--name"), "{bad}: {err}");
        }
    }

    #[test]
    fn protocol_names_round_trip() {
        for kind in ProtocolKind::ALL {
            assert_eq!(kind.as_str().parse::<ProtocolKind>().unwrap(), kind);
        }
        assert!("wireguard".parse::<ProtocolKind>().is_err());
    }

    #[test]
    fn stored_profile_round_trips_through_toml() {
        let p = StoredProfile {
            name: "alice".into(),
            gateway: "vpn.example.com".into(),
            key_location: KeyLocation::File("/tmp/keys/alice.key".into()),
            source: Source::Ovpn,
            ciphers: vec!["AES-256-GCM".into()],
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            protocols: vec![
                Protocol {
                    kind: ProtocolKind::OpenvpnUdp,
                    port: 1194,
                },
                Protocol {
                    kind: ProtocolKind::OpenvpnTcp,
                    port: 443,
                },
            ],
        };
        let text = p.to_toml();
        assert!(text.contains("kind = \"openvpn-udp\""), "{text}");
        assert_eq!(toml::from_str::<StoredProfile>(&text).unwrap(), p);
        let keyring = StoredProfile {
            key_location: KeyLocation::Keyring,
            ..p
        };
        let text = keyring.to_toml();
        assert_eq!(toml::from_str::<StoredProfile>(&text).unwrap(), keyring);
    }
}
