//! `[[connection]]` tables: site-to-site and VNet-to-VNet IKEv2 tunnels to other gateways.
//!
//! [`ConnectionConfig`] is the TOML as written; [`GatewayConfig::connections`] checks it and
//! resolves it into [`Connection`]s for the gateway driver (addresses parsed, PSK files read,
//! proposal names turned into an engine [`Policy`]). [`GatewayConfig::validate`] runs every
//! check that needs no file; `connections` adds the PSK-file checks.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use gatehouse_engine::ikev2::proposal::Policy;
use gatehouse_engine::ikev2::proposal_names::{parse_esp_proposals, parse_ike_proposals};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::{GatewayConfig, parse_duration};

/// Default `ike_lifetime`: rekey the IKE SA after this long.
pub const DEFAULT_IKE_LIFETIME: &str = "8h";
/// Default `child_lifetime`: rekey the CHILD SA after this long.
pub const DEFAULT_CHILD_LIFETIME: &str = "1h";
/// Default `dpd`: check an idle peer is alive after this long.
pub const DEFAULT_CONNECTION_DPD: &str = "10s";
/// Default `remote_port`: the peer's IKE port.
pub const DEFAULT_REMOTE_PORT: u16 = 500;

const MAX_NAME_LEN: usize = 64;

/// `type`: what is at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionKind {
    /// An on-premises VPN device (strongSwan, a router, a firewall).
    SiteToSite,
    /// Another Gatehouse gateway.
    VnetToVnet,
    /// A WireGuard peer (another Gatehouse gateway or a stock WireGuard device): see
    /// [`WgConnection`].
    Wireguard,
}

impl ConnectionKind {
    /// The name used in `gateway.toml`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::SiteToSite => "site-to-site",
            ConnectionKind::VnetToVnet => "vnet-to-vnet",
            ConnectionKind::Wireguard => "wireguard",
        }
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `auth`: how both ends authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// A pre-shared key read from `psk_file`.
    Psk,
    /// Certificates: ours is the gateway certificate; the peer's must chain to our CA.
    Certificate,
}

/// One `[[connection]]` table as written in `gateway.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `site-to-site` or `vnet-to-vnet`.
    #[serde(rename = "type")]
    pub kind: ConnectionKind,
    /// The peer's public address (IKEv2 connections): IPv4, IPv6 (`2001:db8::1` or
    /// `[2001:db8::1]`) or a DNS name, resolved when the gateway starts or reloads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_gateway: String,
    /// The peer's IKE port.
    #[serde(default = "default_remote_port")]
    pub remote_port: u16,
    /// Prefixes behind the peer, IPv4 and (IKEv2 connections) IPv6.
    pub remote_address_space: Vec<String>,
    /// `psk` or `certificate` (IKEv2 connections; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthKind>,
    /// File holding the pre-shared key (required iff `auth = "psk"`), relative to the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_file: Option<PathBuf>,
    /// `true`: a PSK peer may authenticate from any source address (a peer whose address
    /// changes); `false` (default): only from `remote_gateway`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote_gateway_any: bool,
    /// The identity the peer must prove; default: `remote_gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Our identity; default: `public_addr` (PSK) or the gateway certificate's first SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    /// The address of ours this connection's IKE and ESP-in-UDP packets leave from, on a host
    /// with several (a second path to the same site, a floating address); default: the one
    /// the peer dialled, or the kernel's choice for a peer not heard from yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// `true`: traffic selectors are the address spaces; `false`: 0.0.0.0/0 selectors and
    /// routes to `remote_address_space`.
    #[serde(default)]
    pub policy_based: bool,
    /// `true`: we bring the tunnel up; `false`: we wait for the peer.
    #[serde(default = "yes")]
    pub initiate: bool,
    /// strongSwan-style IKE proposals; absent: the gateway's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_proposals: Option<Vec<String>>,
    /// strongSwan-style ESP proposals; absent: the gateway's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_proposals: Option<Vec<String>>,
    /// IKE SA rekey interval, e.g. "8h".
    #[serde(default = "default_ike_lifetime")]
    pub ike_lifetime: String,
    /// CHILD SA rekey interval, e.g. "1h".
    #[serde(default = "default_child_lifetime")]
    pub child_lifetime: String,
    /// Check an idle peer is alive after this long, e.g. "10s".
    #[serde(default = "default_dpd")]
    pub dpd: String,
    /// `type = "wireguard"`: the peer's public key (`wg pubkey` output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `type = "wireguard"`: where the peer listens, `IP:PORT` (port default 51820); absent:
    /// the peer dials in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `type = "wireguard"`: send a keepalive after this many idle seconds (1-65535; for
    /// peers behind NAT, 25 is usual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
    /// Route-based IKEv2 connections: give the connection its own TUN device of this name
    /// (for a routing daemon such as FRR; see `interface.rs` and docs/bgp.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// With `interface`: our address on it with the link prefix, e.g. "169.254.31.1/30".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_address: Option<String>,
    /// With `interface`: the site's BGP speaker on the link, e.g. "169.254.31.2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_peer: Option<String>,
    /// With `bgp_peer`: the site's AS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_peer_asn: Option<u32>,
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_remote_port() -> u16 {
    DEFAULT_REMOTE_PORT
}
fn default_ike_lifetime() -> String {
    DEFAULT_IKE_LIFETIME.into()
}
fn default_child_lifetime() -> String {
    DEFAULT_CHILD_LIFETIME.into()
}
fn default_dpd() -> String {
    DEFAULT_CONNECTION_DPD.into()
}

/// How a resolved connection authenticates. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub enum ConnectionAuth {
    /// The pre-shared key's bytes (the file's content less one trailing newline).
    Psk(Vec<u8>),
    /// Certificates (the gateway certificate and CA).
    Certificate,
}

impl fmt::Debug for ConnectionAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionAuth::Psk(_) => f.write_str("Psk(<redacted>)"),
            ConnectionAuth::Certificate => f.write_str("Certificate"),
        }
    }
}

impl ConnectionAuth {
    /// `psk` or `certificate`, as in `gateway.toml`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ConnectionAuth::Psk(_) => "psk",
            ConnectionAuth::Certificate => "certificate",
        }
    }
}

/// A checked connection, ready for the gateway driver. `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Unique name.
    pub name: String,
    /// Site-to-site or VNet-to-VNet.
    pub kind: ConnectionKind,
    /// The peer's public address (IPv4 or IPv6; resolved from `remote_host`).
    pub remote_gateway: IpAddr,
    /// The DNS name `remote_gateway` was resolved from, if it was one.
    pub remote_host: Option<String>,
    /// The peer's IKE port (500 unless configured).
    pub remote_port: u16,
    /// IPv4 prefixes behind the peer (network addresses, no overlaps).
    pub remote_address_space: Vec<Ipv4Net>,
    /// IPv6 prefixes behind the peer (a dual-stack site).
    pub remote_address_space_v6: Vec<Ipv6Net>,
    /// Authentication, with the key for PSK.
    pub auth: ConnectionAuth,
    /// A PSK peer may authenticate from any source address, not only `remote_gateway`.
    pub remote_gateway_any: bool,
    /// The identity the peer must prove (`remote_id`, default: `remote_gateway`'s text).
    pub remote_id: String,
    /// Our identity if configured; the driver defaults it (see [`ConnectionConfig::local_id`]).
    pub local_id: Option<String>,
    /// The address of ours its IKE packets leave from (`local_address`), if configured.
    pub local_address: Option<IpAddr>,
    /// Traffic selectors are the prefixes (true) or 0.0.0.0/0 plus routes (false).
    pub policy_based: bool,
    /// We initiate (true) or wait for the peer (false).
    pub initiate: bool,
    /// Algorithms for IKE and ESP (from `ike_proposals` / `esp_proposals`, else defaults).
    pub ike_policy: Policy,
    /// IKE SA rekey interval.
    pub ike_lifetime: Duration,
    /// CHILD SA rekey interval.
    pub child_lifetime: Duration,
    /// Liveness check interval.
    pub dpd: Duration,
    /// Its own interface (route-based, for a routing daemon), if configured.
    pub interface: Option<super::interface::ConnInterface>,
}

impl Connection {
    /// One line for `gatehoused check`, e.g.
    /// `connection onprem-east: site-to-site to 198.51.100.7, 1 prefix, psk, route-based, initiate`.
    pub fn summary(&self) -> String {
        let port = if self.remote_port == DEFAULT_REMOTE_PORT {
            String::new()
        } else {
            format!(" port {}", self.remote_port)
        };
        let n = self.remote_address_space.len() + self.remote_address_space_v6.len();
        let to = match &self.remote_host {
            Some(h) => format!("{h} ({})", self.remote_gateway),
            None => self.remote_gateway.to_string(),
        };
        let mut line = format!(
            "connection {}: {} to {to}{port}, {n} prefix{}, {}{}, {}, {}",
            self.name,
            self.kind,
            if n == 1 { "" } else { "es" },
            self.auth.as_str(),
            if self.remote_gateway_any {
                " from any address"
            } else {
                ""
            },
            if self.policy_based {
                "policy-based"
            } else {
                "route-based"
            },
            if self.initiate {
                "initiate"
            } else {
                "wait for peer"
            },
        );
        if let Some(a) = self.local_address {
            line.push_str(&format!(", from {a}"));
        }
        if let Some(i) = &self.interface {
            line.push_str(&format!(", own interface {} {}", i.name, i.address));
            if let (Some(p), Some(asn)) = (i.bgp_peer, i.bgp_peer_asn) {
                line.push_str(&format!(", BGP peer {p} AS {asn}"));
            }
        }
        line
    }
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(b) || b.contains(a)
}

fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(b) || b.contains(a)
}

/// Names keys of one connection in messages: `` `connection[0] "onprem-east".psk_file` ``.
pub(super) struct Keys {
    label: String,
}

impl Keys {
    pub(super) fn new(index: usize, name: &str) -> Self {
        let label = if valid_name(name) {
            format!("connection[{index}] {name:?}")
        } else {
            format!("connection[{index}]")
        };
        Keys { label }
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("`{}.{key}`", self.label)
    }
}

impl ConnectionConfig {
    /// Checks this connection against the gateway's settings and resolves it. Without
    /// `config_dir` the PSK file is not read (the returned key is empty and is discarded by
    /// the caller).
    fn resolve(
        &self,
        index: usize,
        gw: &GatewayConfig,
        config_dir: Option<&Path>,
    ) -> Result<Connection> {
        let k = Keys::new(index, &self.name);
        if !valid_name(&self.name) {
            bail!(
                "{} = {:?} is not a valid name: use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'",
                k.key("name"),
                self.name
            );
        }

        let (remote_gateway, remote_host) = self.remote_gateway(&k, gw)?;
        if self.remote_port == 0 {
            bail!(
                "{} is 0: give the peer's IKE port (default {DEFAULT_REMOTE_PORT})",
                k.key("remote_port")
            );
        }

        let (remote_address_space, remote_address_space_v6) = self.remote_address_spaces(&k, gw)?;
        let interface = self.interface(&k, gw)?;

        let Some(auth_kind) = self.auth else {
            bail!(
                "{} is missing: set `auth = \"psk\"` (with `psk_file`) or `auth = \"certificate\"`",
                k.key("auth")
            );
        };
        for (key, set) in [
            ("public_key", self.public_key.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("persistent_keepalive", self.persistent_keepalive.is_some()),
        ] {
            if set {
                bail!(
                    "{} is a WireGuard setting but `type = \"{}\"`: remove it, or set `type = \"wireguard\"`",
                    k.key(key),
                    self.kind
                );
            }
        }
        let auth = match (auth_kind, &self.psk_file) {
            (AuthKind::Psk, None) => bail!(
                "{} is missing: `auth = \"psk\"` needs a file holding the pre-shared key (mode 0600), or set `auth = \"certificate\"`",
                k.key("psk_file")
            ),
            (AuthKind::Psk, Some(file)) => match config_dir {
                Some(dir) => ConnectionAuth::Psk(read_psk(&k.key("psk_file"), &dir.join(file))?),
                None => ConnectionAuth::Psk(Vec::new()),
            },
            (AuthKind::Certificate, Some(_)) => bail!(
                "{} is set but `auth = \"certificate\"`: remove `psk_file`, or set `auth = \"psk\"`",
                k.key("psk_file")
            ),
            (AuthKind::Certificate, None) => ConnectionAuth::Certificate,
        };
        if self.remote_gateway_any && auth_kind != AuthKind::Psk {
            bail!(
                "{} = true needs `auth = \"psk\"`: certificate peers are accepted from any address already; remove it",
                k.key("remote_gateway_any")
            );
        }

        let remote_id = match &self.remote_id {
            Some(id) if id.trim().is_empty() => bail!(
                "{} is empty: give the identity the peer proves (its IP, FQDN or certificate DN), or remove the key to use `remote_gateway`",
                k.key("remote_id")
            ),
            Some(id) => id.trim().to_owned(),
            None => remote_host
                .clone()
                .unwrap_or_else(|| remote_gateway.to_string()),
        };
        let local_id = match &self.local_id {
            Some(id) if id.trim().is_empty() => bail!(
                "{} is empty: give our identity as the peer expects it, or remove the key for the default",
                k.key("local_id")
            ),
            Some(id) => Some(id.trim().to_owned()),
            None => None,
        };
        let local_address = self.local_address(&k, gw, remote_gateway)?;

        let mut ike_policy = Policy::default();
        if let Some(list) = &self.ike_proposals {
            let ike = parse_ike_proposals(list)
                .map_err(|e| anyhow::anyhow!("{}: {e}", k.key("ike_proposals")))?;
            ike_policy.ike_ciphers = ike.ciphers;
            ike_policy.prfs = ike.prfs;
            ike_policy.dh_groups = ike.dh_groups;
        }
        if let Some(list) = &self.esp_proposals {
            ike_policy.esp = parse_esp_proposals(list)
                .map_err(|e| anyhow::anyhow!("{}: {e}", k.key("esp_proposals")))?;
        }

        let duration = |key: &str, val: &str, example: &str| -> Result<Duration> {
            match parse_duration(val) {
                Some(d) if !d.is_zero() => Ok(d),
                _ => bail!(
                    "{} = {val:?} is not a positive duration: write e.g. \"{example}\"",
                    k.key(key)
                ),
            }
        };
        let ike_lifetime = duration("ike_lifetime", &self.ike_lifetime, DEFAULT_IKE_LIFETIME)?;
        let child_lifetime = duration(
            "child_lifetime",
            &self.child_lifetime,
            DEFAULT_CHILD_LIFETIME,
        )?;
        let dpd = duration("dpd", &self.dpd, DEFAULT_CONNECTION_DPD)?;

        Ok(Connection {
            name: self.name.clone(),
            kind: self.kind,
            remote_gateway,
            remote_host,
            remote_port: self.remote_port,
            remote_address_space,
            remote_address_space_v6,
            auth,
            remote_gateway_any: self.remote_gateway_any,
            remote_id,
            local_id,
            local_address,
            policy_based: self.policy_based,
            initiate: self.initiate,
            ike_policy,
            ike_lifetime,
            child_lifetime,
            dpd,
            interface,
        })
    }

    fn remote_gateway(&self, k: &Keys, gw: &GatewayConfig) -> Result<(IpAddr, Option<String>)> {
        use super::remote_gateway::{RemoteGateway, parse, resolve};
        let key = k.key("remote_gateway");
        let (addr, host) = match parse(&self.remote_gateway) {
            Ok(RemoteGateway::Addr(a)) => (a, None),
            Ok(RemoteGateway::Name(n)) => match resolve(&n, self.remote_port) {
                Ok(a) => (a, Some(n)),
                Err(e) => bail!("{key}: {e}"),
            },
            Err(e) => bail!("{key} = {e}"),
        };
        // The IKE sockets must be of the peer's family.
        if let Some(listen) = gw.ikev2.listen
            && listen.is_ipv4() != addr.is_ipv4()
        {
            bail!(
                "{key} = {addr} but `ikev2.listen` = \"{listen}\" binds {} only: remove `ikev2.listen` (the default takes IPv4 and IPv6) or give the peer's {} address",
                if listen.is_ipv4() { "IPv4" } else { "IPv6" },
                if listen.is_ipv4() { "IPv4" } else { "IPv6" },
            );
        }
        // Our own IKE endpoint: where we listen, or what we tell others to dial.
        if self.remote_port == gw.ikev2.ike_port {
            let own = [
                ("ikev2.listen", gw.ikev2.listen),
                ("openvpn.listen", gw.openvpn.listen),
                ("public_addr", gw.public_addr.trim().parse::<IpAddr>().ok()),
            ];
            for (own_key, own_addr) in own {
                if own_addr == Some(addr) {
                    bail!(
                        "{key} = {addr} is this gateway's own address (`{own_key}`): give the peer's public address"
                    );
                }
            }
        }
        Ok((addr, host))
    }

    fn local_address(
        &self,
        k: &Keys,
        gw: &GatewayConfig,
        remote: IpAddr,
    ) -> Result<Option<IpAddr>> {
        let Some(text) = &self.local_address else {
            return Ok(None);
        };
        let key = k.key("local_address");
        let text = text.trim();
        let addr: IpAddr = match text.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(a) => a,
            Err(_) => bail!(
                "{key} = {text:?} is not an IP address: give one of this host's addresses, e.g. \"198.51.100.4\", or remove the key"
            ),
        };
        if addr.is_unspecified() || addr.is_multicast() {
            bail!(
                "{key} = {addr} is not a unicast address: give one of this host's addresses, or remove the key"
            );
        }
        if addr.is_ipv4() != remote.is_ipv4() {
            bail!(
                "{key} = {addr} is {} but `remote_gateway` is {remote} ({}): give our {} address toward this peer",
                family(addr),
                family(remote),
                family(remote)
            );
        }
        if let Some(listen) = gw.ikev2.listen
            && listen != addr
        {
            bail!(
                "{key} = {addr} but `ikev2.listen` = \"{listen}\" binds only that address, so every IKE packet leaves from it: remove `ikev2.listen` or `local_address`"
            );
        }
        Ok(Some(addr))
    }

    /// The prefixes behind the peer, IPv4 and IPv6 (a dual-stack site): network addresses,
    /// no overlaps with each other or with the gateway's own networks.
    pub(super) fn remote_address_spaces(
        &self,
        k: &Keys,
        gw: &GatewayConfig,
    ) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
        let key = k.key("remote_address_space");
        // A connection with its own interface may leave its prefixes to a routing daemon.
        if self.remote_address_space.is_empty() && self.interface.is_none() {
            bail!(
                "{key} is empty: list the prefixes behind the peer, e.g. [\"192.168.10.0/24\"] (IPv6 ones too, e.g. \"fd00:10::/64\")"
            );
        }
        let mut out: Vec<Ipv4Net> = Vec::new();
        let mut out6: Vec<Ipv6Net> = Vec::new();
        for text in &self.remote_address_space {
            let text = text.trim();
            if text.contains(':') {
                out6.push(self.remote_v6(&key, text, gw, &out6)?);
                continue;
            }
            let net: Ipv4Net = match text.parse() {
                Ok(n) => n,
                Err(_) => bail!(
                    "{key} entry {text:?} is not an IPv4 or IPv6 prefix: write e.g. \"192.168.10.0/24\" or \"fd00:10::/64\""
                ),
            };
            if net.network() != net.addr() {
                bail!(
                    "{key} entry {net} has host bits set: write {} (the network address)",
                    net.trunc()
                );
            }
            if let Some(other) = out.iter().find(|o| overlaps(o, &net)) {
                bail!(
                    "{key} entries {other} and {net} overlap: list each network once, without overlaps"
                );
            }
            if let Some(local) = gw.address_space.iter().find(|a| overlaps(a, &net)) {
                bail!(
                    "{key} entry {net} overlaps `address_space` entry {local}: pick prefixes that do not overlap (the networks on both sides must differ)"
                );
            }
            if overlaps(&gw.client_pool, &net) {
                bail!(
                    "{key} entry {net} overlaps `client_pool` {}: pick prefixes that do not overlap (or move the client pool)",
                    gw.client_pool
                );
            }
            out.push(net);
        }
        Ok((out, out6))
    }

    /// One IPv6 entry of `remote_address_space`, checked against `seen` and the gateway's
    /// own IPv6 networks.
    fn remote_v6(
        &self,
        key: &str,
        text: &str,
        gw: &GatewayConfig,
        seen: &[Ipv6Net],
    ) -> Result<Ipv6Net> {
        let net: Ipv6Net = match text.parse() {
            Ok(n) => n,
            Err(_) => {
                bail!("{key} entry {text:?} is not an IPv6 prefix: write it like \"fd00:10::/64\"")
            }
        };
        if net.network() != net.addr() {
            bail!(
                "{key} entry {net} has host bits set: write {} (the network address)",
                net.trunc()
            );
        }
        if let Some(other) = seen.iter().find(|o| overlaps6(o, &net)) {
            bail!(
                "{key} entries {other} and {net} overlap: list each network once, without overlaps"
            );
        }
        // Unparsable gateway keys are reported under their own names elsewhere.
        let spaces = gw.address_space_v6().unwrap_or_default();
        if let Some(local) = spaces.iter().find(|a| overlaps6(a, &net)) {
            bail!(
                "{key} entry {net} overlaps `address_space_v6` entry {local}: pick prefixes that do not overlap (the networks on both sides must differ)"
            );
        }
        if let Some(pool) = gw.client_pool_v6().ok().flatten()
            && overlaps6(&pool, &net)
        {
            bail!(
                "{key} entry {net} overlaps `client_pool_v6` {pool}: pick prefixes that do not overlap (or move the client pool)"
            );
        }
        if self.policy_based && spaces.is_empty() && gw.client_pool_v6.is_none() {
            bail!(
                "{key} entry {net} is IPv6, but this policy-based connection has no IPv6 network of ours to pair it with: list ours in `address_space_v6` (or set `client_pool_v6`)"
            );
        }
        Ok(net)
    }
}

/// Reads a PSK file: refuses unreadable, group- or world-accessible and empty files, and drops
/// one trailing newline. Never logs the key.
fn read_psk(key: &str, path: &Path) -> Result<Vec<u8>> {
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{key}: cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        bail!("{key}: {shown} is not a regular file: name the file holding the pre-shared key");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{key}: {shown} is accessible by group or others (mode {mode:04o}): run `chmod 600 {shown}`"
            );
        }
    }
    let mut psk =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{key}: cannot read {shown}: {e}"))?;
    if psk.ends_with(b"\r\n") {
        psk.truncate(psk.len() - 2);
    } else if psk.ends_with(b"\n") {
        psk.truncate(psk.len() - 1);
    }
    if psk.is_empty() {
        bail!(
            "{key}: {shown} is empty: put the pre-shared key in it: `{}`",
            psk_fix(&shown.to_string())
        );
    }
    if let Some(why) = weak_psk(&psk) {
        bail!(
            "{key}: the pre-shared key in {shown} is too weak to resist online guessing ({why}; at least {MIN_PSK_LEN} bytes with at least {MIN_PSK_DISTINCT} different ones are needed): make a random one with `{}` and put the same key on the peer",
            psk_fix(&shown.to_string())
        );
    }
    Ok(psk)
}

/// Shortest pre-shared key accepted.
pub const MIN_PSK_LEN: usize = 20;
/// Fewest different bytes in a pre-shared key (`aaaa...`, `12341234...` are refused).
pub const MIN_PSK_DISTINCT: usize = 12;
/// A hex key this long (128 bits if random) is accepted with fewer different bytes (it has
/// only 16 symbols).
const HEX_PSK_LEN: usize = 32;

/// The command that writes a strong key to `file`.
fn psk_fix(file: &str) -> String {
    format!("head -c 32 /dev/urandom | base64 > {file}; chmod 600 {file}")
}

/// Why `psk` is too weak, if it is: shorter than [`MIN_PSK_LEN`], or with fewer than
/// [`MIN_PSK_DISTINCT`] different bytes (unless it is at least [`HEX_PSK_LEN`] hex digits with
/// at least 8 different ones, as `openssl rand -hex 16` makes).
pub fn weak_psk(psk: &[u8]) -> Option<String> {
    if psk.len() < MIN_PSK_LEN {
        return Some(format!("it is {} bytes long", psk.len()));
    }
    let mut seen = [false; 256];
    for &b in psk {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    let hex = psk.len() >= HEX_PSK_LEN && psk.iter().all(u8::is_ascii_hexdigit) && distinct >= 8;
    if distinct < MIN_PSK_DISTINCT && !hex {
        return Some(format!("it has only {distinct} different bytes"));
    }
    None
}

impl GatewayConfig {
    /// Checks every `[[connection]]` table (everything but the PSK files): names, addresses,
    /// overlaps, authentication settings, proposals and durations.
    pub(super) fn validate_connections(&self) -> Result<()> {
        self.resolve_connections(None)?;
        self.wireguard_connections().map(|_| ())
    }

    /// The checked connections for the gateway driver, with their PSK files read (paths
    /// relative to `config_dir`, the directory holding `gateway.toml`).
    pub fn connections(&self, config_dir: &Path) -> Result<Vec<Connection>> {
        self.resolve_connections(Some(config_dir))
    }

    fn resolve_connections(&self, config_dir: Option<&Path>) -> Result<Vec<Connection>> {
        let mut out: Vec<Connection> = Vec::with_capacity(self.connections.len());
        for (i, c) in self.connections.iter().enumerate() {
            if c.kind == ConnectionKind::Wireguard {
                continue;
            }
            let conn = c.resolve(i, self, config_dir)?;
            let k = Keys::new(i, &c.name);
            if let Some(j) = out.iter().position(|o| o.name == conn.name) {
                bail!(
                    "{} = {:?} is also the name of connection[{j}]: give every connection its own name",
                    k.key("name"),
                    conn.name
                );
            }
            for (j, other) in out.iter().enumerate() {
                let v4 = conn.remote_address_space.iter().find_map(|net| {
                    let o = other
                        .remote_address_space
                        .iter()
                        .find(|o| overlaps(o, net))?;
                    Some((net.to_string(), o.to_string()))
                });
                let v6 = conn.remote_address_space_v6.iter().find_map(|net| {
                    let o = other
                        .remote_address_space_v6
                        .iter()
                        .find(|o| overlaps6(o, net))?;
                    Some((net.to_string(), o.to_string()))
                });
                if let Some((net, o)) = v4.or(v6) {
                    bail!(
                        "{} entry {net} overlaps entry {o} of connection[{j}] {:?}: pick prefixes that do not overlap",
                        k.key("remote_address_space"),
                        other.name
                    );
                }
            }
            if let Some(mine) = &conn.interface {
                let others: Vec<(String, &super::interface::ConnInterface)> = out
                    .iter()
                    .filter_map(|o| Some((o.name.clone(), o.interface.as_ref()?)))
                    .collect();
                super::interface::check_distinct(&k, mine, &others)?;
            }
            out.push(conn);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_engine::esp::EspCipher;
    use gatehouse_engine::ikev2::crypto::{DhGroup, IkeCipher, Prf};
    use std::net::Ipv4Addr;

    const SAMPLE: &str = r#"
public_addr = "203.0.113.1"
address_space = ["10.251.1.0/24"]

[[connection]]
name = "onprem-east"
type = "site-to-site"
remote_gateway = "198.51.100.7"
remote_address_space = ["192.168.10.0/24"]
auth = "psk"
psk_file = "onprem-east.psk"
remote_id = "onprem.example"
policy_based = false
initiate = true
ike_proposals = ["aes256gcm16-prfsha384-x25519"]
esp_proposals = ["aes256gcm16"]
ike_lifetime = "8h"
child_lifetime = "1h"

[[connection]]
name = "vnet-west"
type = "vnet-to-vnet"
remote_gateway = "192.0.2.20"
remote_address_space = ["10.252.0.0/16", "10.253.0.0/16"]
auth = "certificate"
initiate = false
policy_based = true
"#;

    fn sample() -> GatewayConfig {
        toml::from_str(SAMPLE).unwrap()
    }

    /// A config directory holding `onprem-east.psk` with `content`, mode 0600.
    fn dir_with_psk(content: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onprem-east.psk");
        std::fs::write(&path, content).unwrap();
        chmod(&path, 0o600);
        dir
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    fn chmod(_: &Path, _: u32) {}

    fn err(c: &GatewayConfig) -> String {
        format!("{:#}", c.validate().unwrap_err())
    }

    #[test]
    fn sample_resolves() {
        let cfg = sample();
        cfg.validate().unwrap();
        let dir = dir_with_psk(b"s3cret key: Tq9wXr2LmZ8p\n");
        let conns = cfg.connections(dir.path()).unwrap();
        assert_eq!(conns.len(), 2);
        let a = &conns[0];
        assert_eq!(a.name, "onprem-east");
        assert_eq!(a.kind, ConnectionKind::SiteToSite);
        assert_eq!(a.remote_gateway, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(a.remote_host, None);
        assert_eq!(a.remote_port, 500);
        assert_eq!(
            a.remote_address_space,
            ["192.168.10.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            a.auth,
            ConnectionAuth::Psk(b"s3cret key: Tq9wXr2LmZ8p".to_vec())
        );
        assert!(!a.remote_gateway_any);
        assert_eq!(a.remote_id, "onprem.example");
        assert_eq!(a.local_id, None);
        assert!(!a.policy_based && a.initiate);
        assert_eq!(
            a.ike_policy.ike_ciphers,
            [IkeCipher::AesGcm16 { key_bits: 256 }]
        );
        assert_eq!(a.ike_policy.prfs, [Prf::HmacSha384]);
        assert_eq!(a.ike_policy.dh_groups, [DhGroup::Curve25519]);
        assert_eq!(a.ike_policy.esp, [EspCipher::AesGcm16 { key_bits: 256 }]);
        assert_eq!(a.ike_lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(a.child_lifetime, Duration::from_secs(3600));
        assert_eq!(a.dpd, Duration::from_secs(10));
        assert_eq!(
            a.summary(),
            "connection onprem-east: site-to-site to 198.51.100.7, 1 prefix, psk, route-based, initiate"
        );

        // Defaults: remote_id is remote_gateway, policy is the gateway's default.
        let b = &conns[1];
        assert_eq!(b.auth, ConnectionAuth::Certificate);
        assert_eq!(b.remote_id, "192.0.2.20");
        assert_eq!(b.ike_policy, Policy::default());
        assert_eq!(
            b.summary(),
            "connection vnet-west: vnet-to-vnet to 192.0.2.20, 2 prefixes, certificate, policy-based, wait for peer"
        );
    }

    #[test]
    fn round_trips_through_to_toml() {
        let cfg = sample();
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("[[connection]]"), "{text}");
        let back: GatewayConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        // No connections: nothing written (init's output is unchanged).
        let plain = GatewayConfig::new("gw").to_toml().unwrap();
        assert!(!plain.contains("connection"), "{plain}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let dir = dir_with_psk(b"hunter2-very-secret-Xq7mZ");
        let conns = sample().connections(dir.path()).unwrap();
        let dbg = format!("{conns:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("Psk(<redacted>)"), "{dbg}");
    }

    #[test]
    fn psk_files() {
        let cfg = sample();
        // One trailing newline (LF or CRLF) is dropped, not more.
        const KEY: &[u8] = b"0RzWq4mT8vYb2LxK9pNc";
        let dir = dir_with_psk(&[KEY, b"\r\n"].concat());
        assert_eq!(
            cfg.connections(dir.path()).unwrap()[0].auth,
            ConnectionAuth::Psk(KEY.to_vec())
        );
        let dir = dir_with_psk(&[KEY, b"\n\n"].concat());
        assert_eq!(
            cfg.connections(dir.path()).unwrap()[0].auth,
            ConnectionAuth::Psk([KEY, b"\n"].concat())
        );

        let dir = dir_with_psk(b"\n");
        let e = format!("{:#}", cfg.connections(dir.path()).unwrap_err());
        assert!(
            e.contains("`connection[0] \"onprem-east\".psk_file`") && e.contains("is empty"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", cfg.connections(dir.path()).unwrap_err());
        let path = dir.path().join("onprem-east.psk");
        assert!(
            e.contains("`connection[0] \"onprem-east\".psk_file`")
                && e.contains(&path.display().to_string())
                && e.contains("No such file"),
            "{e}"
        );

        #[cfg(unix)]
        {
            let dir = dir_with_psk(KEY);
            let path = dir.path().join("onprem-east.psk");
            chmod(&path, 0o644);
            let e = format!("{:#}", cfg.connections(dir.path()).unwrap_err());
            assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
        }

        // validate() does not read PSK files.
        cfg.validate().unwrap();
    }

    #[test]
    fn weak_psks_are_refused_with_the_fix() {
        let cfg = sample();
        for weak in [
            &b"s3cret key"[..],
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"passwordpasswordpassword",
            b"12345678901234567890",
            b"site-to-site test key 79",
            b"0123012301230123012301230123012301230123",
        ] {
            let dir = dir_with_psk(weak);
            let path = dir.path().join("onprem-east.psk");
            let shown = path.display().to_string();
            let e = format!("{:#}", cfg.connections(dir.path()).unwrap_err());
            assert!(
                e.contains("`connection[0] \"onprem-east\".psk_file`")
                    && e.contains(&shown)
                    && e.contains("too weak")
                    && e.contains(&format!(
                        "head -c 32 /dev/urandom | base64 > {shown}; chmod 600 {shown}"
                    )),
                "{}: {e}",
                String::from_utf8_lossy(weak)
            );
        }
        // What the fix writes, and hex keys of 128 bits, are fine.
        for strong in [
            &b"q3J7Vw0m9ZcN2rT5yB8xKd1LpHs4Gf6aEu+WoQ/ICjM="[..],
            b"5f0e4c7b9a1d3e2f8c6b0a4d7e9f1c3b",
            b"0RzWq4mT8vYb2LxK9pNc",
        ] {
            assert_eq!(
                weak_psk(strong),
                None,
                "{}",
                String::from_utf8_lossy(strong)
            );
        }
    }

    #[test]
    fn a_dual_stack_site_lists_both_families() {
        let mut cfg = sample();
        cfg.connections[0].remote_address_space =
            vec!["192.168.10.0/24".into(), " fd00:10::/64".into()];
        cfg.validate().unwrap();
        let dir = dir_with_psk(b"0RzWq4mT8vYb2LxK9pNc");
        let conns = cfg.connections(dir.path()).unwrap();
        assert_eq!(
            conns[0].remote_address_space,
            vec!["192.168.10.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            conns[0].remote_address_space_v6,
            vec!["fd00:10::/64".parse::<Ipv6Net>().unwrap()]
        );
        assert!(
            conns[0].summary().contains(", 2 prefixes,"),
            "{}",
            conns[0].summary()
        );
        // Ours without an IPv6 client pool: fine with a dual-stack site.
        cfg.address_space_v6 = vec!["fd00:1::/64".into()];
        cfg.validate().unwrap();
        // Overlapping our IPv6 network.
        cfg.connections[0].remote_address_space = vec!["fd00:1::/48".into()];
        let e = err(&cfg);
        assert!(
            e.contains("fd00:1::/48 overlaps `address_space_v6` entry fd00:1::/64"),
            "{e}"
        );
        // A policy-based dual-stack site needs an IPv6 network of ours.
        let mut cfg = sample();
        cfg.connections[1]
            .remote_address_space
            .push("fd00:20::/64".into());
        let e = err(&cfg);
        assert!(e.contains("`address_space_v6`"), "{e}");
        cfg.address_space_v6 = vec!["fd00:1::/64".into()];
        cfg.validate().unwrap();
        // Two connections may not share an IPv6 prefix.
        cfg.connections[0]
            .remote_address_space
            .push("fd00:20::/56".into());
        let e = err(&cfg);
        assert!(
            e.contains("fd00:20::/64 overlaps entry fd00:20::/56 of connection[0]"),
            "{e}"
        );
    }

    #[test]
    fn local_address_is_ours_of_the_peers_family() {
        let mut cfg = sample();
        cfg.connections[0].local_address = Some("203.0.113.4".into());
        cfg.connections[1].local_address = Some(" 198.51.100.99 ".into());
        cfg.validate().unwrap();
        let dir = dir_with_psk(b"0RzWq4mT8vYb2LxK9pNc");
        let conns = cfg.connections(dir.path()).unwrap();
        assert_eq!(conns[0].local_address, Some("203.0.113.4".parse().unwrap()));
        assert!(
            conns[0]
                .summary()
                .ends_with("route-based, initiate, from 203.0.113.4"),
            "{}",
            conns[0].summary()
        );
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("local_address = \"203.0.113.4\""), "{text}");
        cfg.connections[0].remote_gateway = "[2001:db8::1]".into();
        cfg.connections[0].local_address = Some("[2001:db8::4]".into());
        cfg.validate().unwrap();
        cfg.connections[0].local_address = Some("203.0.113.4".into());
        let e = err(&cfg);
        assert!(
            e.contains("is IPv4 but `remote_gateway` is 2001:db8::1 (IPv6)")
                && e.contains("give our IPv6 address"),
            "{e}"
        );
        let mut cfg = sample();
        cfg.connections[0].local_address = Some("203.0.113.4".into());
        cfg.ikev2.listen = Some("203.0.113.1".parse().unwrap());
        let e = err(&cfg);
        assert!(
            e.contains("remove `ikev2.listen` or `local_address`"),
            "{e}"
        );
    }

    #[test]
    fn remote_gateway_any_is_for_psk_peers() {
        let mut cfg = sample();
        cfg.connections[0].remote_gateway_any = true;
        cfg.validate().unwrap();
        let dir = dir_with_psk(b"0RzWq4mT8vYb2LxK9pNc");
        let conns = cfg.connections(dir.path()).unwrap();
        assert!(conns[0].remote_gateway_any);
        assert_eq!(
            conns[0].summary(),
            "connection onprem-east: site-to-site to 198.51.100.7, 1 prefix, psk from any address, route-based, initiate"
        );
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("remote_gateway_any = true"), "{text}");
        cfg.connections[1].remote_gateway_any = true;
        let e = err(&cfg);
        assert!(
            e.contains("`connection[1] \"vnet-west\".remote_gateway_any`")
                && e.contains("auth = \"psk\""),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let k0 = "`connection[0] \"onprem-east\".";
        type Edit = fn(&mut ConnectionConfig);
        let cases: &[(&str, Edit)] = &[
            ("name", |c| c.name = "on prem".into()),
            ("name", |c| c.name = String::new()),
            ("remote_gateway", |c| {
                c.remote_gateway = "[2001:db8::1]:500".into()
            }),
            ("remote_gateway", |c| {
                c.remote_gateway = "vpn_east.example".into()
            }),
            ("remote_gateway", |c| {
                c.remote_gateway = "203.0.113.1".into()
            }),
            ("remote_gateway", |c| c.remote_gateway = "0.0.0.0".into()),
            ("remote_port", |c| c.remote_port = 0),
            ("remote_address_space", |c| c.remote_address_space.clear()),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["10.0.0.0/8".into()]
            }),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["172.16.0.0/12".into()]
            }),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["192.168.10.1/24".into()]
            }),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["fd00::1/64".into()]
            }),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["fd00::/64".into(), "fd00::/48".into()]
            }),
            ("remote_address_space", |c| {
                c.remote_address_space = vec!["192.168.0.0/16".into(), "192.168.10.0/24".into()]
            }),
            ("psk_file", |c| c.psk_file = None),
            ("psk_file", |c| c.auth = Some(AuthKind::Certificate)),
            ("remote_id", |c| c.remote_id = Some(" ".into())),
            ("local_id", |c| c.local_id = Some(String::new())),
            ("local_address", |c| {
                c.local_address = Some("gateway.example".into())
            }),
            ("local_address", |c| {
                c.local_address = Some("0.0.0.0".into())
            }),
            ("local_address", |c| {
                c.local_address = Some("2001:db8::4".into())
            }),
            ("ike_proposals", |c| {
                c.ike_proposals = Some(vec!["aes192-sha256-modp2048".into()])
            }),
            ("ike_proposals", |c| c.ike_proposals = Some(vec![])),
            ("esp_proposals", |c| {
                c.esp_proposals = Some(vec!["aes256gcm16-modp2048".into()])
            }),
            ("ike_lifetime", |c| c.ike_lifetime = "0".into()),
            ("child_lifetime", |c| c.child_lifetime = "soon".into()),
            ("dpd", |c| c.dpd = "-1s".into()),
        ];
        for &(key, edit) in cases {
            let mut cfg = sample();
            edit(&mut cfg.connections[0]);
            let e = err(&cfg);
            let want = if key == "name" {
                "`connection[0].name`".to_owned()
            } else {
                format!("{k0}{key}`")
            };
            assert!(e.contains(&want), "{key}: {e}");
        }
    }

    #[test]
    fn messages_say_the_fix() {
        let mut cfg = sample();
        cfg.connections[0].remote_address_space = vec!["10.0.0.0/8".into()];
        let e = err(&cfg);
        assert!(
            e.contains("10.0.0.0/8 overlaps `address_space` entry 10.251.1.0/24")
                && e.contains("pick prefixes that do not overlap"),
            "{e}"
        );
        let mut cfg = sample();
        cfg.connections[0].remote_gateway = "[2001:db8::1]".into();
        cfg.validate().unwrap();
        cfg.ikev2.listen = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let e = err(&cfg);
        assert!(
            e.contains("`ikev2.listen` = \"0.0.0.0\" binds IPv4 only"),
            "{e}"
        );
        let mut cfg = sample();
        cfg.connections[0].remote_gateway = "localhost".into();
        cfg.connections[0].remote_id = None;
        cfg.validate().unwrap();
        let mut cfg = sample();
        cfg.connections[0].ike_proposals = Some(vec!["aes192-sha256-modp2048".into()]);
        let e = err(&cfg);
        assert!(e.contains("\"aes192\"") && e.contains("aes256gcm16"), "{e}");
        // Same address as ours but another port: a second gateway on this host.
        let mut cfg = sample();
        cfg.connections[0].remote_gateway = "203.0.113.1".into();
        cfg.connections[0].remote_port = 1500;
        cfg.validate().unwrap();
    }

    #[test]
    fn connections_must_differ() {
        let mut cfg = sample();
        cfg.connections[1].name = "onprem-east".into();
        let e = err(&cfg);
        assert!(
            e.contains("`connection[1] \"onprem-east\".name`") && e.contains("connection[0]"),
            "{e}"
        );
        let mut cfg = sample();
        cfg.connections[1].remote_address_space = vec!["192.168.0.0/16".into()];
        let e = err(&cfg);
        assert!(
            e.contains("`connection[1] \"vnet-west\".remote_address_space` entry 192.168.0.0/16")
                && e.contains("192.168.10.0/24 of connection[0] \"onprem-east\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_refused_by_the_parser() {
        let e =
            toml::from_str::<GatewayConfig>(&SAMPLE.replace("initiate = true", "initate = true"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("initate"), "{e}");
        let e = toml::from_str::<GatewayConfig>(&SAMPLE.replace("\"site-to-site\"", "\"p2p\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("site-to-site") && e.contains("vnet-to-vnet"),
            "{e}"
        );
        let e =
            toml::from_str::<GatewayConfig>(&SAMPLE.replace("auth = \"psk\"", "auth = \"eap\""))
                .unwrap_err()
                .to_string();
        assert!(e.contains("psk") && e.contains("certificate"), "{e}");
    }
}
