//! WireGuard in `gateway.toml`: the `[wireguard]` section and `[[connection]] type =
//! "wireguard"` tables (sites and VNets over WireGuard, with a Gatehouse gateway or a stock
//! WireGuard peer).
//!
//! ```toml
//! [wireguard]
//! port = 51820            # default
//!
//! [[connection]]
//! name = "branch"
//! type = "wireguard"
//! public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="   # the peer's `wg pubkey`
//! endpoint = "198.51.100.7:51820"       # optional: absent, the peer dials in
//! remote_address_space = ["192.168.10.0/24", "fd00:10::/64"]   # IPv4 and IPv6
//! persistent_keepalive = 25             # optional
//! ```
//!
//! The gateway's own key is `wireguard.key` next to `gateway.toml` (created 0600 on first
//! start; `gatehoused wireguard-pubkey --data-dir DIR` prints its public key).

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};
use gatehouse_engine::wireguard::WgPublicKey;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::connection::{Keys, overlaps};
use super::{ConnectionKind, GatewayConfig};

/// Default `wireguard.port`.
pub const DEFAULT_WIREGUARD_PORT: u16 = 51820;

/// `[wireguard]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WireGuardSection {
    /// Serve WireGuard: absent (the default): as soon as any `type = "wireguard"` connection
    /// or WireGuard client identity exists (an identity issued to a running gateway binds the
    /// port then); `false`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Address the listeners bind. Absent (the default): every IPv4 and IPv6 address (one
    /// dual-stack socket; IPv4 alone where the kernel has no IPv6). "0.0.0.0": IPv4 only;
    /// "::": IPv6 only; any other address: that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<IpAddr>,
    /// UDP port.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    DEFAULT_WIREGUARD_PORT
}

impl Default for WireGuardSection {
    fn default() -> Self {
        WireGuardSection {
            enabled: None,
            listen: None,
            port: default_port(),
        }
    }
}

/// A checked `type = "wireguard"` connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConnection {
    /// Unique name.
    pub name: String,
    /// The peer's public key.
    pub public_key: WgPublicKey,
    /// Where the peer listens (None: it dials in).
    pub endpoint: Option<SocketAddr>,
    /// IPv4 prefixes behind the peer.
    pub remote_address_space: Vec<Ipv4Net>,
    /// IPv6 prefixes behind the peer (a dual-stack site).
    pub remote_address_space_v6: Vec<Ipv6Net>,
    /// Keepalive interval, seconds.
    pub persistent_keepalive: Option<u16>,
}

impl WgConnection {
    /// One line for `gatehoused check`.
    pub fn summary(&self) -> String {
        let n = self.remote_address_space.len() + self.remote_address_space_v6.len();
        format!(
            "connection {}: wireguard {} peer {}, {n} prefix{}{}",
            self.name,
            match self.endpoint {
                Some(e) => format!("to {e},"),
                None => "dial-in,".into(),
            },
            self.public_key,
            if n == 1 { "" } else { "es" },
            match self.persistent_keepalive {
                Some(k) => format!(", keepalive {k}s"),
                None => String::new(),
            }
        )
    }
}

impl GatewayConfig {
    /// The checked `type = "wireguard"` connections (names and prefixes are checked against
    /// every connection).
    pub fn wireguard_connections(&self) -> Result<Vec<WgConnection>> {
        let mut out: Vec<WgConnection> = Vec::new();
        for (i, c) in self.connections.iter().enumerate() {
            if c.kind != ConnectionKind::Wireguard {
                continue;
            }
            let k = Keys::new(i, &c.name);
            if !super::connection::valid_name(&c.name) {
                bail!(
                    "{} = {:?} is not a valid name: use 1-64 letters, digits, '-', '_' or '.'",
                    k.key("name"),
                    c.name
                );
            }
            if let Some(j) = self
                .connections
                .iter()
                .take(i)
                .position(|o| o.name == c.name)
            {
                bail!(
                    "{} = {:?} is also the name of connection[{j}]: give every connection its own name",
                    k.key("name"),
                    c.name
                );
            }
            let unused = [
                ("remote_gateway", !c.remote_gateway.is_empty()),
                ("auth", c.auth.is_some()),
                ("psk_file", c.psk_file.is_some()),
                ("remote_id", c.remote_id.is_some()),
                ("local_id", c.local_id.is_some()),
                ("local_address", c.local_address.is_some()),
                ("ike_proposals", c.ike_proposals.is_some()),
                ("esp_proposals", c.esp_proposals.is_some()),
                ("policy_based", c.policy_based),
                ("remote_gateway_any", c.remote_gateway_any),
            ];
            for (key, set) in unused {
                if set {
                    let hint = if key == "remote_gateway" {
                        ": give the peer's address as `endpoint = \"IP:PORT\"`"
                    } else if key == "local_address" {
                        ": WireGuard answers each peer from the address it dialled"
                    } else {
                        ": WireGuard authenticates with `public_key`"
                    };
                    bail!(
                        "{} is an IKEv2 setting, not used by `type = \"wireguard\"`; remove it{hint}",
                        k.key(key)
                    );
                }
            }
            let Some(pk) = &c.public_key else {
                bail!(
                    "{} is missing: give the peer's public key (`wg pubkey` output, or `gatehoused wireguard-pubkey` on a Gatehouse peer)",
                    k.key("public_key")
                );
            };
            let public_key = WgPublicKey::from_base64(pk).map_err(|e| {
                anyhow::anyhow!(
                    "{} = {pk:?} is not a WireGuard public key: {e}",
                    k.key("public_key")
                )
            })?;
            let endpoint = match &c.endpoint {
                None => None,
                Some(text) => Some(parse_endpoint(text).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} = {text:?} is not an address: write \"IP:PORT\", e.g. \"198.51.100.7:51820\" (or remove it for a peer that dials in)",
                        k.key("endpoint")
                    )
                })?),
            };
            if c.persistent_keepalive == Some(0) {
                bail!(
                    "{} = 0: give seconds (25 keeps NAT mappings open), or remove the key",
                    k.key("persistent_keepalive")
                );
            }
            let (remote_address_space, remote_address_space_v6) =
                c.remote_address_spaces(&k, self)?;
            for net in &remote_address_space {
                for (j, o) in self.connections.iter().enumerate().take(i) {
                    if let Some(x) = o
                        .remote_address_space
                        .iter()
                        .filter_map(|t| t.trim().parse::<Ipv4Net>().ok())
                        .find(|x| overlaps(x, net))
                    {
                        bail!(
                            "{} entry {net} overlaps entry {x} of connection[{j}] {:?}: pick prefixes that do not overlap",
                            k.key("remote_address_space"),
                            o.name
                        );
                    }
                }
            }
            if let Some(o) = out.iter().find(|o| o.public_key == public_key) {
                bail!(
                    "{} is also the key of connection {:?}: every WireGuard peer has its own key",
                    k.key("public_key"),
                    o.name
                );
            }
            out.push(WgConnection {
                name: c.name.clone(),
                public_key,
                endpoint,
                remote_address_space,
                remote_address_space_v6,
                persistent_keepalive: c.persistent_keepalive,
            });
        }
        if self.wireguard.port == 0 && !out.is_empty() {
            bail!(
                "`wireguard.port` is 0: give the UDP port WireGuard listens on (default {DEFAULT_WIREGUARD_PORT})"
            );
        }
        Ok(out)
    }
}

/// `IP:PORT`, or `IP` (port 51820).
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return (a.port() != 0).then_some(a);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DEFAULT_WIREGUARD_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<Vec<WgConnection>> {
        let text = format!(
            "public_addr = \"203.0.113.1\"\naddress_space = [\"10.251.1.0/24\"]\n[[connection]]\nname = \"branch\"\ntype = \"wireguard\"\nremote_address_space = [\"192.168.10.0/24\"]\n{extra}"
        );
        let c: GatewayConfig = toml::from_str(&text)?;
        c.validate()?;
        c.wireguard_connections()
    }

    const PK: &str = "public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\n";

    #[test]
    fn a_wireguard_connection_resolves() {
        let c = cfg(&format!(
            "{PK}endpoint = \"198.51.100.7\"\npersistent_keepalive = 25"
        ))
        .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].endpoint, Some("198.51.100.7:51820".parse().unwrap()));
        assert_eq!(c[0].persistent_keepalive, Some(25));
        assert!(c[0].summary().contains("wireguard to 198.51.100.7:51820"));
        let dial_in = cfg(PK).unwrap();
        assert_eq!(dial_in[0].endpoint, None);
    }

    #[test]
    fn bad_wireguard_values_name_the_key_and_the_fix() {
        let e = format!("{:#}", cfg("").unwrap_err());
        assert!(
            e.contains("`connection[0] \"branch\".public_key` is missing"),
            "{e}"
        );
        let e = format!("{:#}", cfg("public_key = \"nope\"").unwrap_err());
        assert!(e.contains("not a WireGuard public key"), "{e}");
        let e = format!("{:#}", cfg(&format!("{PK}endpoint = \"x:1\"")).unwrap_err());
        assert!(e.contains(".endpoint`") && e.contains("IP:PORT"), "{e}");
        let e = format!("{:#}", cfg(&format!("{PK}auth = \"psk\"")).unwrap_err());
        assert!(e.contains(".auth` is an IKEv2 setting"), "{e}");
        let e = format!(
            "{:#}",
            cfg(&format!("{PK}persistent_keepalive = 0")).unwrap_err()
        );
        assert!(e.contains("persistent_keepalive` = 0"), "{e}");
    }

    #[test]
    fn a_dual_stack_wireguard_site_lists_both_families() {
        let text = format!(
            "public_addr = \"203.0.113.1\"\naddress_space = [\"10.251.1.0/24\"]\naddress_space_v6 = [\"fd00:251::/64\"]\n[[connection]]\nname = \"branch\"\ntype = \"wireguard\"\nremote_address_space = [\"192.168.10.0/24\", \"fd00:10::/64\"]\n{PK}"
        );
        let c: GatewayConfig = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        let w = c.wireguard_connections().unwrap();
        assert_eq!(
            w[0].remote_address_space,
            vec!["192.168.10.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            w[0].remote_address_space_v6,
            vec!["fd00:10::/64".parse::<Ipv6Net>().unwrap()]
        );
        assert!(w[0].summary().contains("2 prefixes"), "{}", w[0].summary());
        // Its IPv6 prefix may not overlap ours.
        let clash = text.replace("fd00:10::/64", "fd00:251::/80");
        let c: GatewayConfig = toml::from_str(&clash).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains("overlaps `address_space_v6`"), "{e}");
    }
}
