//! `[quic]`: the QUIC point-to-site listener (docs/quic.md). UDP; off unless enabled.

use std::net::IpAddr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::GatewayConfig;

/// The default QUIC port (UDP; OpenVPN's TCP listener may share the number).
pub const DEFAULT_QUIC_PORT: u16 = 443;

/// `[quic]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuicSection {
    /// Serve QUIC clients (Gatehouse client, `--protocol quic`).
    #[serde(default)]
    pub enabled: bool,
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
    DEFAULT_QUIC_PORT
}

impl Default for QuicSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            port: default_port(),
        }
    }
}

impl QuicSection {
    /// Checks the section against the rest of the configuration (a UDP port no other
    /// listener binds).
    pub fn validate(&self, cfg: &GatewayConfig) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.port == 0 {
            bail!(
                "`quic.port` is 0: set a UDP port (default {DEFAULT_QUIC_PORT}) or `quic.enabled = false`"
            );
        }
        let same = |listen: Option<IpAddr>| match (listen, self.listen) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            // Absent: every address.
            _ => true,
        };
        let o = &cfg.openvpn;
        if o.udp_port == self.port && same(o.listen) {
            bail!(
                "`quic.port` {} is also `openvpn.udp_port`: both are UDP; give QUIC another port (default {DEFAULT_QUIC_PORT})",
                self.port
            );
        }
        let i = &cfg.ikev2;
        if i.enabled && same(i.listen) {
            for (key, port) in [
                ("ikev2.ike_port", i.ike_port),
                ("ikev2.natt_port", i.natt_port),
            ] {
                if port == self.port {
                    bail!(
                        "`quic.port` {} is also `{key}`: both are UDP; give QUIC another port (default {DEFAULT_QUIC_PORT})",
                        self.port
                    );
                }
            }
        }
        Ok(())
    }
}

/// What `gatehoused init` writes above the `[quic]` table.
const QUIC_COMMENT: &str = "\
# QUIC point-to-site (docs/quic.md): Gatehouse clients with `--protocol quic`; sessions
# survive a change of the client's address (Wi-Fi to cellular). UDP `port`; OpenVPN's TCP
# listener may use the same number. Turn it on with `enabled = true`, open UDP `port` in the
# firewall, and re-export profiles (`gatehouse-certs export --format gatehouse`) so clients
# learn it is offered. `enabled`, `listen` and `port` take a restart.
";

/// Puts the explanation above the `[quic]` table of serialised `gateway.toml` text.
pub(super) fn comment_section(body: &str) -> String {
    match body.find("\n[quic]\n") {
        Some(i) => format!("{}{QUIC_COMMENT}{}", &body[..i + 1], &body[i + 1..]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> GatewayConfig {
        toml::from_str(&format!("public_addr = \"gw\"\n{extra}")).unwrap()
    }

    #[test]
    fn off_by_default_on_udp_443() {
        let c = parse("");
        assert!(!c.quic.enabled);
        assert_eq!(c.quic.port, 443);
        c.validate().unwrap();
        let c = parse("[quic]\nenabled = true\n");
        assert!(c.quic.enabled);
        assert_eq!(c.quic.port, 443);
        // TCP 443 is OpenVPN's; UDP 443 is QUIC's.
        assert_eq!(c.openvpn.tcp_port, 443);
        c.validate().unwrap();
        let c = parse("[quic]\nenabled = true\nport = 8443\nlisten = \"10.0.0.1\"\n");
        assert_eq!(c.quic.port, 8443);
        c.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[quic]\nenabled = true\nport = 0\n")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`quic.port`") && e.contains("quic.enabled"),
            "{e}"
        );
        let e = parse("[quic]\nenabled = true\nport = 1194\n")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`quic.port`") && e.contains("`openvpn.udp_port`"),
            "{e}"
        );
        let e = parse("[quic]\nenabled = true\nport = 4500\n")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ikev2.natt_port`"), "{e}");
        // Port 0 does not matter while QUIC is off; IKEv2 off frees its ports.
        parse("[quic]\nport = 0\n").validate().unwrap();
        parse("[ikev2]\nenabled = false\n[quic]\nenabled = true\nport = 500\n")
            .validate()
            .unwrap();
        let e = toml::from_str::<GatewayConfig>("public_addr = \"x\"\n[quic]\nprot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn quic_alone_is_a_listener() {
        let c = parse(
            "[openvpn]\nudp_port = 0\ntcp_port = 0\n[ikev2]\nenabled = false\n[quic]\nenabled = true\n",
        );
        c.validate().unwrap();
        let c = parse("[openvpn]\nudp_port = 0\ntcp_port = 0\n[ikev2]\nenabled = false\n");
        assert!(c.validate().is_err());
    }

    #[test]
    fn init_writes_a_commented_section_that_reads_back() {
        let c = GatewayConfig::new("vpn.example.com");
        let text = c.to_toml().unwrap();
        let i = text.find("[quic]").expect("a [quic] table");
        assert!(text[..i].ends_with(QUIC_COMMENT), "{text}");
        assert!(!text.contains("\n\n\n"), "{text}");
        assert!(text[i..].contains("enabled = false"), "{text}");
        assert!(text[i..].contains("port = 443"), "{text}");
        let back: GatewayConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
