//! The Gatehouse client profile: one TOML file with everything a client needs to connect.
//!
//! ```toml
//! format = "gatehouse-profile"
//! version = 1
//! name = "alice"
//! gateway = "vpn.example.com"
//! ca = "-----BEGIN CERTIFICATE-----\n..."
//! cert = "-----BEGIN CERTIFICATE-----\n..."
//! key = "-----BEGIN PRIVATE KEY-----\n..."
//!
//! [[protocols]]
//! kind = "openvpn-udp"
//! port = 1194
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{PkiError, Result};

/// Value of the `format` key of every profile.
pub const PROFILE_FORMAT: &str = "gatehouse-profile";
/// The profile version this library writes and reads.
pub const PROFILE_VERSION: u32 = 1;

/// A tunnel protocol a profile offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One way of reaching the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolEntry {
    /// The protocol.
    pub kind: ProtocolKind,
    /// The gateway's port for it.
    pub port: u16,
}

/// A Gatehouse client profile (`format = "gatehouse-profile"`, `version = 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// Always [`PROFILE_VERSION`] for profiles this version writes.
    pub version: u32,
    /// The client certificate's name; the default connection name in the client.
    pub name: String,
    /// The gateway's host name or IP address.
    pub gateway: String,
    /// The root CA certificate (PEM) the gateway's certificate must chain to.
    pub ca: String,
    /// The client certificate (PEM).
    pub cert: String,
    /// The client's private key (PKCS#8 PEM).
    pub key: String,
    /// The client's own tls-crypt-v2 key (OpenVPN's PEM), present when the PKI has a
    /// tls-crypt-v2 server key: the gateway then requires it (`tls_crypt_v2 = "on"`) on the
    /// OpenVPN control channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_crypt_v2: Option<String>,
    /// The protocols to try, in order of preference.
    pub protocols: Vec<ProtocolEntry>,
    /// Whether the client may choose its own routes (`client_routing` of the gateway's
    /// gateway.toml). Written only when `fixed`, so profiles of gateways that leave the
    /// choice to users read as before.
    #[serde(default, skip_serializing_if = "ClientRouting::is_user")]
    pub client_routing: ClientRouting,
}

/// What a gateway lets its clients choose about routes (`client_routing` in gateway.toml,
/// carried by the exported Gatehouse profile; the gateway's config and the client use this
/// same type).
///
/// The default is `user`: what a stock OpenVPN server allows too (its clients may drop
/// pushed routes with `pull-filter`/`route-nopull` and add their own), so `fixed` is a
/// policy an administrator opts into, not a default that would surprise users of existing
/// profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientRouting {
    /// Users may choose full or split tunnel and add routes (the default, as a stock
    /// OpenVPN server's clients always may).
    #[default]
    User,
    /// The gateway's routes only: the Gatehouse client refuses other choices.
    Fixed,
}

impl ClientRouting {
    /// Whether users may choose (serde skips writing the default).
    pub fn is_user(&self) -> bool {
        *self == ClientRouting::User
    }

    /// The name in `gateway.toml` and profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRouting::User => "user",
            ClientRouting::Fixed => "fixed",
        }
    }
}

impl Profile {
    /// A profile with the default protocols: OpenVPN UDP 1194, OpenVPN TCP 443, IKEv2 500.
    pub fn new(name: &str, gateway: &str, ca: &str, cert: &str, key: &str) -> Self {
        Profile {
            format: PROFILE_FORMAT.to_string(),
            version: PROFILE_VERSION,
            name: name.to_string(),
            gateway: gateway.to_string(),
            ca: ca.to_string(),
            cert: cert.to_string(),
            key: key.to_string(),
            tls_crypt_v2: None,
            protocols: vec![
                ProtocolEntry {
                    kind: ProtocolKind::OpenvpnUdp,
                    port: 1194,
                },
                ProtocolEntry {
                    kind: ProtocolKind::OpenvpnTcp,
                    port: 443,
                },
                ProtocolEntry {
                    kind: ProtocolKind::Ikev2,
                    port: 500,
                },
                // QUIC joins this list when the gateway serves it.
            ],
            client_routing: ClientRouting::User,
        }
    }

    /// Offers QUIC on UDP `port` as the first choice (the gateway serves it: `[quic]` in
    /// its gateway.toml); the other protocols stay, in their order, as fallbacks.
    pub fn offer_quic(&mut self, port: u16) {
        self.protocols.retain(|p| p.kind != ProtocolKind::Quic);
        self.protocols.insert(
            0,
            ProtocolEntry {
                kind: ProtocolKind::Quic,
                port,
            },
        );
    }

    /// Serializes the profile as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| PkiError::InvalidProfile(e.to_string()))
    }

    /// Parses and checks a profile: the format marker and version must match, and the
    /// certificate fields must hold PEM.
    pub fn from_toml(text: &str) -> Result<Self> {
        // Look at format/version first so an unrelated or newer file gets a precise message
        // rather than a complaint about some field.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            PkiError::InvalidProfile(e.message().replace('\n', " "))
        })?;
        match table.get("format").and_then(|v| v.as_str()) {
            Some(PROFILE_FORMAT) => {}
            Some(other) => {
                return Err(PkiError::InvalidProfile(format!(
                    "format is {other:?}, expected {PROFILE_FORMAT:?}; is this a Gatehouse profile?"
                )));
            }
            None => {
                return Err(PkiError::InvalidProfile(format!(
                    "no format = {PROFILE_FORMAT:?} line; is this a Gatehouse profile?"
                )));
            }
        }
        match table.get("version").and_then(|v| v.as_integer()) {
            Some(v) if v == i64::from(PROFILE_VERSION) => {}
            Some(v) => {
                return Err(PkiError::InvalidProfile(format!(
                    "version {v} is not supported (this Gatehouse reads version {PROFILE_VERSION}); update Gatehouse or export the profile again"
                )));
            }
            None => {
                return Err(PkiError::InvalidProfile("missing version".into()));
            }
        }
        let profile: Profile = toml::from_str(text).map_err(|e: toml::de::Error| {
            PkiError::InvalidProfile(e.message().replace('\n', " "))
        })?;
        for (field, value, tag) in [
            ("ca", &profile.ca, "CERTIFICATE"),
            ("cert", &profile.cert, "CERTIFICATE"),
            ("key", &profile.key, "PRIVATE KEY"),
        ] {
            let ok = pem::parse(value).is_ok_and(|p| p.tag() == tag);
            if !ok {
                return Err(PkiError::InvalidProfile(format!(
                    "{field} does not hold a PEM {tag}"
                )));
            }
        }
        if profile.gateway.trim().is_empty() {
            return Err(PkiError::InvalidProfile("gateway is empty".into()));
        }
        if profile.protocols.is_empty() {
            return Err(PkiError::InvalidProfile("no [[protocols]] entries".into()));
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n";

    #[test]
    fn round_trips_through_toml() {
        let p = Profile::new("alice", "vpn.example.com", CERT, CERT, KEY);
        let text = p.to_toml().unwrap();
        assert!(text.contains("format = \"gatehouse-profile\""), "{text}");
        assert!(text.contains("kind = \"openvpn-udp\""), "{text}");
        assert!(text.contains("[[protocols]]"), "{text}");
        assert_eq!(Profile::from_toml(&text).unwrap(), p);
        assert!(!text.contains("client_routing"), "{text}");
        let fixed = Profile {
            client_routing: ClientRouting::Fixed,
            ..p
        };
        let text = fixed.to_toml().unwrap();
        assert!(text.contains("client_routing = \"fixed\""), "{text}");
        assert_eq!(Profile::from_toml(&text).unwrap(), fixed);
    }

    #[test]
    fn quic_is_the_first_choice_where_offered() {
        let mut p = Profile::new("alice", "gw", CERT, CERT, KEY);
        assert!(p.protocols.iter().all(|e| e.kind != ProtocolKind::Quic));
        let before = p.protocols.clone();
        p.offer_quic(8443);
        p.offer_quic(443);
        assert_eq!(
            p.protocols[0],
            ProtocolEntry {
                kind: ProtocolKind::Quic,
                port: 443
            }
        );
        assert_eq!(p.protocols[1..], before[..]);
        let text = p.to_toml().unwrap();
        assert!(text.contains("kind = \"quic\""), "{text}");
        assert_eq!(Profile::from_toml(&text).unwrap(), p);
    }

    #[test]
    fn wrong_format_or_version_is_explained() {
        let p = Profile::new("alice", "gw", CERT, CERT, KEY);
        let text = p.to_toml().unwrap();
        let other = text.replace("gatehouse-profile", "something-else");
        let err = Profile::from_toml(&other).unwrap_err().to_string();
        assert!(err.contains("something-else"), "{err}");
        let newer = text.replace("version = 1", "version = 2");
        let err = Profile::from_toml(&newer).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
        let err = Profile::from_toml("not toml at all [")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid Gatehouse profile"), "{err}");
        let nokey = text.replace("PRIVATE KEY", "PUBLIC KEY");
        assert!(Profile::from_toml(&nokey).is_err());
    }
}
