//! What the client keeps about one connection: gateway, protocols, CA, client certificate,
//! data ciphers - and where its private key is. The key itself never enters these types or
//! the profile files; it stays in the OS keyring or a key file ([`crate::keys`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use crate::error::{ProfileError, Result};
use crate::routing::{ClientRouting, Routing};
use crate::trusted::{AutoConnect, NetworkId};

/// The data ciphers the engine implements, in our order of preference (OpenVPN names).
pub const SUPPORTED_CIPHERS: [&str; 3] = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];

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

/// One server to try (an `.ovpn` file's `remote` line or `<connection>` block).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Remote {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `openvpn-udp` or `openvpn-tcp`.
    pub kind: ProtocolKind,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.kind)
    }
}

/// Which control-channel wrapper a profile uses. Its key is a secret: it is kept with the
/// private key (OS keyring or key file), never in the profile file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrapKind {
    /// `tls-auth`: HMAC over every control packet.
    TlsAuth,
    /// `tls-crypt`: control packets encrypted and authenticated with a shared key.
    TlsCrypt,
    /// `tls-crypt-v2`: like tls-crypt with a per-client key.
    TlsCryptV2,
}

impl WrapKind {
    /// The OpenVPN option name.
    pub fn as_str(self) -> &'static str {
        match self {
            WrapKind::TlsAuth => "tls-auth",
            WrapKind::TlsCrypt => "tls-crypt",
            WrapKind::TlsCryptV2 => "tls-crypt-v2",
        }
    }
}

/// The control-channel wrapper of a profile (its key lives with the private key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlWrap {
    /// tls-auth, tls-crypt or tls-crypt-v2.
    pub kind: WrapKind,
    /// tls-auth key direction (`key-direction` or the argument of `tls-auth FILE DIR`):
    /// 0 or 1, or none for bidirectional use of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<u8>,
    /// tls-auth HMAC digest, an OpenVPN name from `auth` (`SHA1` when the file names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// What `verify-x509-name` asks of the gateway's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509NameCheck {
    /// How `value` is compared.
    pub kind: X509NameKind,
    /// The name, prefix or subject.
    pub value: String,
}

/// The type argument of `verify-x509-name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum X509NameKind {
    /// The whole subject (`C=.., O=.., CN=..`); OpenVPN's default.
    Subject,
    /// The common name, exactly.
    Name,
    /// The common name starts with the value.
    NamePrefix,
}

/// The profile file format written today; files without a `version` are version 1.
pub const PROFILE_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// A profile as the client keeps it (`GATEHOUSE_HOME/profiles/NAME.toml`), without its key.
///
/// Version 2 added `remotes`, `remote_random`, `redirect_gateway`, `verify_x509_name`,
/// `peer_fingerprints`, `tls_version_min`/`max` and `control_wrap`; version 1 files load
/// with those empty. `client_routing`, `routing`, `extra_routes`, `auto_connect` and
/// `trusted_networks` came later within version 2: absent, they are the defaults (the
/// gateway's routes, no auto-connect), and they are written only when not the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// The file format ([`PROFILE_VERSION`] when written now).
    #[serde(default = "version_1")]
    pub version: u32,
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
    /// Send all traffic through the tunnel even if the gateway does not push it (the
    /// `.ovpn` file said `redirect-gateway def1`).
    #[serde(default)]
    pub redirect_gateway: bool,
    /// Try `remotes` in a random order (`remote-random`).
    #[serde(default)]
    pub remote_random: bool,
    /// The protocols to try, in order of preference; never empty.
    pub protocols: Vec<Protocol>,
    /// The servers to try, in order (`.ovpn` imports); empty means `gateway` with each of
    /// `protocols`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<Remote>,
    /// The control-channel wrapper, if the gateway wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_wrap: Option<ControlWrap>,
    /// What the gateway certificate's name must be, when the `.ovpn` file said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_x509_name: Option<X509NameCheck>,
    /// `tls-version-min` of the `.ovpn` file (`1.2`, `1.3`); none: TLS 1.2 and 1.3 offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version_min: Option<String>,
    /// `tls-version-max` of the `.ovpn` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version_max: Option<String>,
    /// `peer-fingerprint`: SHA-256 fingerprints (lower-case hex, no colons) one of which the
    /// server's certificate must have. With an empty `ca_pem` they replace the CA check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_fingerprints: Vec<String>,
    /// What the gateway lets the user choose about routes (`client_routing` of its
    /// gateway.toml, carried by the exported profile; `.ovpn` profiles: `user`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub client_routing: ClientRouting,
    /// The user's routing choice.
    #[serde(default, skip_serializing_if = "is_default")]
    pub routing: Routing,
    /// Prefixes the user routes into the tunnel besides the gateway's (IPv4 and IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_routes: Vec<IpNet>,
    /// Whether the client service connects this profile by itself on untrusted networks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_connect: AutoConnect,
    /// The networks on which it does not ([`crate::trusted`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_networks: Vec<NetworkId>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
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
            version: PROFILE_VERSION,
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
            redirect_gateway: true,
            remote_random: true,
            remotes: vec![
                Remote {
                    host: "a.example".into(),
                    port: 1194,
                    kind: ProtocolKind::OpenvpnUdp,
                },
                Remote {
                    host: "b.example".into(),
                    port: 443,
                    kind: ProtocolKind::OpenvpnTcp,
                },
            ],
            control_wrap: Some(ControlWrap {
                kind: WrapKind::TlsAuth,
                direction: Some(1),
                digest: Some("SHA256".into()),
            }),
            verify_x509_name: Some(X509NameCheck {
                kind: X509NameKind::Name,
                value: "server_x".into(),
            }),
            peer_fingerprints: vec!["ab".repeat(32)],
            tls_version_min: Some("1.3".into()),
            tls_version_max: None,
            client_routing: ClientRouting::Fixed,
            routing: Routing::Full,
            extra_routes: vec![
                "10.9.0.0/16".parse().unwrap(),
                "fd00:9::/48".parse().unwrap(),
            ],
            auto_connect: AutoConnect::Untrusted,
            trusted_networks: vec![NetworkId {
                gateway: "192.168.1.1".parse().unwrap(),
                mac: "02:00:00:00:00:01".into(),
            }],
        };
        let text = p.to_toml();
        assert!(
            !text.contains("Static key"),
            "no key in the profile file: {text}"
        );
        assert!(text.contains("kind = \"openvpn-udp\""), "{text}");
        assert_eq!(toml::from_str::<StoredProfile>(&text).unwrap(), p);
        let keyring = StoredProfile {
            key_location: KeyLocation::Keyring,
            ..p
        };
        let text = keyring.to_toml();
        assert_eq!(toml::from_str::<StoredProfile>(&text).unwrap(), keyring);
    }

    #[test]
    fn version_1_profile_files_still_load() {
        // What the client wrote before version 2, byte for byte.
        let v1 = r#"name = "alice"
gateway = "vpn.example.com"
key_location = "keyring"
source = "ovpn"
ciphers = ["AES-256-GCM"]
ca_pem = "ca"
cert_pem = "cert"

[[protocols]]
kind = "openvpn-udp"
port = 1194
"#;
        let p: StoredProfile = toml::from_str(v1).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.gateway, "vpn.example.com");
        assert!(p.remotes.is_empty() && p.control_wrap.is_none() && !p.redirect_gateway);
        assert_eq!(p.routing, Routing::Gateway);
        assert_eq!(p.client_routing, ClientRouting::User);
        assert_eq!(p.auto_connect, AutoConnect::Off);
        assert!(p.extra_routes.is_empty() && p.trusted_networks.is_empty());
        assert_eq!(p.port(ProtocolKind::OpenvpnUdp), Some(1194));
    }
}
