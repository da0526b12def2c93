//! `gateway.toml`: the gateway's configuration. Paths in it are relative to the file.

mod admin;
mod client_routing;
mod connection;
mod ha;
mod interface;
mod quic;
pub mod remote_gateway;
mod wireguard;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use client_routing::ClientRouting;

pub use admin::{AdminConfig, SOCKET_ENV};
pub use connection::{
    AuthKind, Connection, ConnectionAuth, ConnectionConfig, ConnectionKind, DEFAULT_CHILD_LIFETIME,
    DEFAULT_CONNECTION_DPD, DEFAULT_IKE_LIFETIME, DEFAULT_REMOTE_PORT,
};
pub use ha::HaSection;
pub use interface::ConnInterface;
pub use quic::QuicSection;
pub use wireguard::{DEFAULT_WIREGUARD_PORT, WgConnection, WireGuardSection};

/// Most split-DNS domains one gateway pushes.
pub const MAX_DNS_DOMAINS: usize = 16;

/// Default client pool (ARCHITECTURE.md / issue: 172.16.201.0/24).
pub const DEFAULT_CLIENT_POOL: &str = "172.16.201.0/24";

/// The whole gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The name or address clients dial; the gateway certificate's SAN.
    pub public_addr: String,
    /// PKI folder managed with `gatehouse-certs --pki`.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Name of the gateway certificate under `pki_dir/server/`.
    #[serde(default = "default_server_cert")]
    pub server_cert: String,
    /// Networks behind the gateway; pushed to clients as routes.
    #[serde(default)]
    pub address_space: Vec<Ipv4Net>,
    /// Pool of virtual addresses for point-to-site clients; the first host is the gateway's.
    #[serde(default = "default_pool")]
    pub client_pool: Ipv4Net,
    /// IPv6 pool for point-to-site clients, e.g. "fd00:6a7e:1::/64" (off when absent): a
    /// client's IPv6 address has the host part of its IPv4 one; the first host is the
    /// gateway's. Read it with [`GatewayConfig::client_pool_v6`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_pool_v6: Option<String>,
    /// IPv6 networks behind the gateway; pushed to clients that have an IPv6 address. Read
    /// them with [`GatewayConfig::address_space_v6`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_space_v6: Vec<String>,
    /// DNS servers pushed to clients.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Split DNS: clients send only names at or under these domains to `dns` and all others
    /// to their own resolver. Empty (the default): all names go to `dns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_domains: Vec<String>,
    /// Send all client traffic through the gateway (pushes redirect-gateway).
    #[serde(default)]
    pub full_tunnel: bool,
    /// Whether Gatehouse clients may choose full/split tunnel and add routes (`user`, the
    /// default) or must take the gateway's (`fixed`); see [`ClientRouting`].
    #[serde(default, skip_serializing_if = "ClientRouting::is_user")]
    pub client_routing: ClientRouting,
    /// Name of the TUN interface the gateway creates.
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    /// Tunnel MTU.
    #[serde(default = "default_mtu")]
    pub tun_mtu: u16,
    /// Data-plane worker threads; 0 (the default): one per core.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workers: usize,
    /// Threads that run OpenVPN TLS handshakes, at a lower priority than the workers, so a
    /// storm of new connections does not hold up established tunnels; 0: handshakes run on
    /// the workers.
    #[serde(
        default = "default_handshake_threads",
        skip_serializing_if = "is_default_handshake_threads"
    )]
    pub handshake_threads: usize,
    /// Receive coalescing: under load (packets arriving faster than a worker wakes for
    /// them), a worker waits up to this many microseconds after a turn so the next one
    /// handles a batch (one TUN write, one send, one wakeup for many packets). Never at low
    /// load. 0 turns it off.
    #[serde(
        default = "default_coalesce_us",
        skip_serializing_if = "is_default_coalesce_us"
    )]
    pub coalesce_us: u32,
    /// OpenVPN-protocol listeners.
    #[serde(default)]
    pub openvpn: OpenVpnConfig,
    /// IKEv2 listeners.
    #[serde(default)]
    pub ikev2: Ikev2Config,
    /// The QUIC listener (docs/quic.md).
    #[serde(default)]
    pub quic: QuicSection,
    /// The admin API, web console and metrics.
    #[serde(default, skip_serializing_if = "is_default_admin")]
    pub admin: AdminConfig,
    /// WireGuard listener (`[wireguard]`).
    #[serde(default, skip_serializing_if = "is_default_wireguard")]
    pub wireguard: WireGuardSection,
    /// Active-standby with a second gateway (`[ha]`, docs/ha.md).
    #[serde(default, skip_serializing_if = "is_default_ha")]
    pub ha: HaSection,
    /// Site-to-site and VNet-to-VNet tunnels (`[[connection]]` tables).
    #[serde(default, rename = "connection", skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionConfig>,
}

/// `[ikev2]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ikev2Config {
    /// Serve IKEv2 remote-access clients.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address the listeners bind. Absent (the default): every IPv4 and IPv6 address (one
    /// dual-stack socket; IPv4 alone where the kernel has no IPv6). "0.0.0.0": IPv4 only;
    /// "::": IPv6 only; any other address: that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<IpAddr>,
    /// IKE port.
    #[serde(default = "default_ike_port")]
    pub ike_port: u16,
    /// NAT-T port (IKE with a non-ESP marker, and ESP in UDP).
    #[serde(default = "default_natt_port")]
    pub natt_port: u16,
    /// Check an idle client is alive after this long, e.g. "30s".
    #[serde(default = "default_dpd")]
    pub dpd: String,
    /// Half-open IKE SAs beyond which new clients must return a COOKIE (RFC 7296 2.6).
    #[serde(default = "default_cookie_threshold")]
    pub cookie_threshold: usize,
    /// Delete a client's SA when it has not rekeyed its IKE SA or CHILD SA for this long
    /// (clients rekey: strongSwan every 4 h / 1 h), e.g. "24h"; "0" never.
    #[serde(default = "default_hard_lifetime")]
    pub hard_lifetime: String,
    /// Accept the weak 1024-bit MODP group (DH group 2) from remote-access clients: the only
    /// group Windows' built-in IKEv2 client offers by default. Set to false once every
    /// Windows client runs the script `gatehouse-certs export --format windows` writes.
    #[serde(default = "yes")]
    pub allow_modp1024: bool,
}

fn default_hard_lifetime() -> String {
    "24h".into()
}

fn default_ike_port() -> u16 {
    500
}
fn default_natt_port() -> u16 {
    4500
}
fn default_dpd() -> String {
    "30s".into()
}
fn default_cookie_threshold() -> usize {
    64
}

impl Default for Ikev2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            ike_port: default_ike_port(),
            natt_port: default_natt_port(),
            dpd: default_dpd(),
            cookie_threshold: default_cookie_threshold(),
            hard_lifetime: default_hard_lifetime(),
            allow_modp1024: true,
        }
    }
}

/// `[openvpn]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenVpnConfig {
    /// Address the listeners bind. Absent (the default): every IPv4 and IPv6 address (one
    /// dual-stack socket; IPv4 alone where the kernel has no IPv6). "0.0.0.0": IPv4 only;
    /// "::": IPv6 only; any other address: that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<IpAddr>,
    /// UDP port (0 disables UDP).
    #[serde(default = "default_udp_port")]
    pub udp_port: u16,
    /// TCP port (0 disables TCP).
    #[serde(default = "default_tcp_port")]
    pub tcp_port: u16,
    /// Derive data keys with the TLS exporter when clients support it. Turn off only to
    /// exercise the classic PRF path (2.4/2.5 clients always get it).
    #[serde(default = "yes")]
    pub tls_ekm: bool,
    /// Data ciphers in order of preference; the default is a stock OpenVPN 2.6 server's
    /// `data-ciphers` (AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305).
    #[serde(default = "default_ciphers")]
    pub ciphers: Vec<String>,
    /// Oldest TLS version accepted on the control channel: "1.2" (a stock OpenVPN 2.6
    /// server's default) or "1.3" (stricter: refuses clients with `tls-version-max 1.2`).
    #[serde(default = "default_tls_version_min")]
    pub tls_version_min: String,
    /// Keepalive interval pushed to clients, e.g. "10s".
    #[serde(default = "default_ping")]
    pub ping: String,
    /// Clients restart after this long without traffic, e.g. "60s". The gateway drops a
    /// silent session after twice this.
    #[serde(default = "default_ping_restart")]
    pub ping_restart: String,
    /// Renegotiate data keys this often, e.g. "1h"; "0" disables.
    #[serde(default = "default_reneg")]
    pub reneg: String,
    /// Control-channel wrapper tls-crypt-v2: "off" (default, like a stock OpenVPN server) or
    /// "on": every client must wrap its control channel with its own key, which
    /// `gatehouse-certs export --format ovpn` writes into its profile; packets without it are
    /// dropped before any TLS work. The server key is `<pki>/tls-crypt-v2-server.key`
    /// (created on start if missing).
    #[serde(default = "default_off")]
    pub tls_crypt_v2: String,
    /// A stock OpenVPN static key (`openvpn --genkey secret`) used as `tls-crypt` by every
    /// client: for moving an existing install. Relative paths are from this file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_crypt_file: Option<PathBuf>,
    /// A stock OpenVPN static key used as `tls-auth` by every client (existing installs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_auth_file: Option<PathBuf>,
    /// `key-direction` of the gateway for `tls_auth_file`: "0" (what servers use; clients
    /// then have `key-direction 1`), "1", or "none" (bidirectional, no `key-direction`).
    #[serde(
        default = "default_tls_auth_direction",
        skip_serializing_if = "is_default_tls_auth_direction"
    )]
    pub tls_auth_key_direction: String,
    /// HMAC digest of `tls_auth_file`: the `auth` of the old server ("SHA1", OpenVPN's
    /// default, "SHA256", "SHA384", "SHA512").
    #[serde(
        default = "default_tls_auth_digest",
        skip_serializing_if = "is_default_tls_auth_digest"
    )]
    pub tls_auth_digest: String,
    /// Open TCP connections on `tcp_port` beyond which new ones are refused (closed at once
    /// and counted as `tcplimit`). Lowered at start-up when the open-files limit
    /// (RLIMIT_NOFILE) leaves no room for this many.
    #[serde(
        default = "default_tcp_max_connections",
        skip_serializing_if = "is_default_tcp_max_connections"
    )]
    pub tcp_max_connections: usize,
    /// Open TCP connections from one address (IPv6: one /64) beyond which new ones from it
    /// are refused (`tcpperip`). High enough for an office of clients behind one NAT.
    #[serde(
        default = "default_tcp_max_per_ip",
        skip_serializing_if = "is_default_tcp_max_per_ip"
    )]
    pub tcp_max_per_ip: usize,
    /// A TCP connection whose OpenVPN handshake has not completed this long after it was
    /// accepted is closed (`tcphandshake`), e.g. "30s".
    #[serde(
        default = "default_tcp_handshake_timeout",
        skip_serializing_if = "is_default_tcp_handshake_timeout"
    )]
    pub tcp_handshake_timeout: String,
}

/// Default `openvpn.tcp_max_connections`.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 10_000;
/// Default `openvpn.tcp_max_per_ip`.
pub const DEFAULT_TCP_MAX_PER_IP: usize = 64;
/// Largest `openvpn.tcp_max_connections` accepted.
pub const MAX_TCP_CONNECTIONS: usize = 1_000_000;

fn default_tcp_max_connections() -> usize {
    DEFAULT_TCP_MAX_CONNECTIONS
}
fn default_tcp_max_per_ip() -> usize {
    DEFAULT_TCP_MAX_PER_IP
}
fn default_tcp_handshake_timeout() -> String {
    "30s".into()
}
fn is_default_tcp_max_connections(n: &usize) -> bool {
    *n == DEFAULT_TCP_MAX_CONNECTIONS
}
fn is_default_tcp_max_per_ip(n: &usize) -> bool {
    *n == DEFAULT_TCP_MAX_PER_IP
}
fn is_default_tcp_handshake_timeout(s: &str) -> bool {
    s == default_tcp_handshake_timeout()
}

fn default_off() -> String {
    "off".into()
}
fn default_tls_auth_direction() -> String {
    "0".into()
}
fn default_tls_auth_digest() -> String {
    "SHA1".into()
}
fn is_default_tls_auth_direction(s: &str) -> bool {
    s == default_tls_auth_direction()
}
fn is_default_tls_auth_digest(s: &str) -> bool {
    s == default_tls_auth_digest()
}

fn yes() -> bool {
    true
}
fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}
fn default_server_cert() -> String {
    "gateway".into()
}
fn default_pool() -> Ipv4Net {
    DEFAULT_CLIENT_POOL.parse().unwrap_or_default()
}
fn default_tun_name() -> String {
    "gatehouse0".into()
}
fn is_default_wireguard(w: &WireGuardSection) -> bool {
    *w == WireGuardSection::default()
}
fn is_default_ha(h: &HaSection) -> bool {
    *h == HaSection::default()
}
fn is_default_admin(a: &AdminConfig) -> bool {
    *a == AdminConfig::default()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
/// Default `coalesce_us`.
const DEFAULT_COALESCE_US: u32 = 200;

fn default_coalesce_us() -> u32 {
    DEFAULT_COALESCE_US
}

fn is_default_coalesce_us(n: &u32) -> bool {
    *n == DEFAULT_COALESCE_US
}

fn default_handshake_threads() -> usize {
    1
}
fn is_default_handshake_threads(n: &usize) -> bool {
    *n == default_handshake_threads()
}
fn default_mtu() -> u16 {
    1500
}
fn default_udp_port() -> u16 {
    1194
}
fn default_tcp_port() -> u16 {
    443
}
fn default_ciphers() -> Vec<String> {
    gatehouse_engine::openvpn::data::Cipher::ALL
        .iter()
        .map(|c| c.openvpn_name().to_owned())
        .collect()
}
fn default_tls_version_min() -> String {
    "1.2".into()
}
fn default_ping() -> String {
    "10s".into()
}
fn default_ping_restart() -> String {
    "60s".into()
}
fn default_reneg() -> String {
    "1h".into()
}

impl Default for OpenVpnConfig {
    fn default() -> Self {
        Self {
            listen: None,
            udp_port: default_udp_port(),
            tcp_port: default_tcp_port(),
            tls_ekm: true,
            ciphers: default_ciphers(),
            tls_version_min: default_tls_version_min(),
            ping: default_ping(),
            ping_restart: default_ping_restart(),
            reneg: default_reneg(),
            tls_crypt_v2: default_off(),
            tls_crypt_file: None,
            tls_auth_file: None,
            tls_auth_key_direction: default_tls_auth_direction(),
            tls_auth_digest: default_tls_auth_digest(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_per_ip: default_tcp_max_per_ip(),
            tcp_handshake_timeout: default_tcp_handshake_timeout(),
        }
    }
}

/// Parses "90", "90s", "5m", "8h", "1d" into a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1),
        'm' => (&s[..s.len() - 1], 60),
        'h' => (&s[..s.len() - 1], 3600),
        'd' => (&s[..s.len() - 1], 86400),
        c if c.is_ascii_digit() => (s, 1),
        _ => return None,
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .map(|n| Duration::from_secs(n * mult))
}

impl GatewayConfig {
    /// The IPv6 client pool (`client_pool_v6`), checked: a unicast prefix with at least as
    /// many host bits as `client_pool` has.
    pub fn client_pool_v6(&self) -> Result<Option<Ipv6Net>> {
        let Some(text) = &self.client_pool_v6 else {
            return Ok(None);
        };
        let net: Ipv6Net = text.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "`client_pool_v6` {text:?} is not an IPv6 prefix: write it like \"fd00:6a7e:1::/64\" (or remove the key to serve IPv4 only)"
            )
        })?;
        if net.trunc() != net {
            bail!(
                "`client_pool_v6` {net} has host bits set: use its network, {}",
                net.trunc()
            );
        }
        gatehouse_engine::pool6::Ipv6Pool::new(self.client_pool, net)
            .map_err(|e| anyhow::anyhow!("`client_pool_v6`: {e}"))?;
        Ok(Some(net))
    }

    /// Whether a connection lists an IPv6 prefix (a dual-stack site): then
    /// `address_space_v6` is offered to sites even without an IPv6 client pool.
    fn has_ipv6_site(&self) -> bool {
        self.connections
            .iter()
            .any(|c| c.remote_address_space.iter().any(|p| p.contains(':')))
    }

    /// The IPv6 networks behind the gateway (`address_space_v6`), checked.
    pub fn address_space_v6(&self) -> Result<Vec<Ipv6Net>> {
        self.address_space_v6
            .iter()
            .map(|text| {
                let net: Ipv6Net = text.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "`address_space_v6` entry {text:?} is not an IPv6 prefix: write it like \"fd00:6a7e:2::/64\""
                    )
                })?;
                if net.trunc() != net {
                    bail!(
                        "`address_space_v6` entry {net} has host bits set: use its network, {}",
                        net.trunc()
                    );
                }
                Ok(net)
            })
            .collect()
    }

    /// A configuration with defaults for `public_addr`.
    pub fn new(public_addr: &str) -> Self {
        Self {
            public_addr: public_addr.to_owned(),
            pki_dir: default_pki_dir(),
            server_cert: default_server_cert(),
            address_space: Vec::new(),
            client_pool: default_pool(),
            client_pool_v6: None,
            address_space_v6: Vec::new(),
            dns: Vec::new(),
            dns_domains: Vec::new(),
            full_tunnel: false,
            client_routing: ClientRouting::User,
            admin: AdminConfig::default(),
            tun_name: default_tun_name(),
            tun_mtu: default_mtu(),
            workers: 0,
            handshake_threads: default_handshake_threads(),
            coalesce_us: default_coalesce_us(),
            openvpn: OpenVpnConfig::default(),
            ikev2: Ikev2Config::default(),
            wireguard: WireGuardSection::default(),
            ha: HaSection::default(),
            quic: QuicSection::default(),
            connections: Vec::new(),
        }
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: GatewayConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        cfg.validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(cfg)
    }

    /// Checks everything a TOML parser cannot, naming the key and the fix. PSK files of
    /// `[[connection]]` tables are checked by [`GatewayConfig::connections`], which reads them.
    pub fn validate(&self) -> Result<()> {
        if self.public_addr.trim().is_empty() {
            bail!("`public_addr` is empty: set it to the DNS name or IP clients dial");
        }
        if self.client_pool.prefix_len() > 30 {
            bail!(
                "`client_pool` {} is too small: use a /30 or larger (default {DEFAULT_CLIENT_POOL})",
                self.client_pool
            );
        }
        for a in &self.address_space {
            if a.contains(&self.client_pool) || self.client_pool.contains(a) {
                bail!(
                    "`address_space` entry {a} overlaps `client_pool` {}: pick a client pool outside the networks behind the gateway",
                    self.client_pool
                );
            }
        }
        let pool6 = self.client_pool_v6()?;
        let spaces6 = self.address_space_v6()?;
        if let Some(p) = pool6 {
            for a in &spaces6 {
                if a.contains(&p) || p.contains(a) {
                    bail!(
                        "`address_space_v6` entry {a} overlaps `client_pool_v6` {p}: pick an IPv6 client pool outside the networks behind the gateway"
                    );
                }
            }
        } else if !spaces6.is_empty() && !self.has_ipv6_site() {
            bail!(
                "`address_space_v6` is set but `client_pool_v6` is not, and no connection lists an IPv6 prefix: clients need IPv6 addresses to reach IPv6 networks; add e.g. client_pool_v6 = \"fd00:6a7e:1::/64\" (or list the site's IPv6 prefixes in its `remote_address_space`)"
            );
        }
        self.validate_dns_domains()?;
        self.admin.validate()?;
        self.ha.validate()?;
        self.ha.validate_pool(self.client_pool)?;
        if self.tun_name.is_empty() || self.tun_name.len() > 15 {
            bail!("`tun_name` must be 1-15 characters (a Linux interface name)");
        }
        if self.workers > 256 {
            bail!(
                "`workers` {} is out of range 0-256 (a TUN device has at most 256 queues; 0 means one per core)",
                self.workers
            );
        }
        if self.handshake_threads > 64 {
            bail!(
                "`handshake_threads` {} is out of range 0-64 (0 runs handshakes on the workers; 1 is plenty for thousands of handshakes a second)",
                self.handshake_threads
            );
        }
        if self.coalesce_us > 1000 {
            bail!(
                "`coalesce_us` {} is out of range 0-1000 (microseconds a busy worker waits for a batch; default {DEFAULT_COALESCE_US}, 0 turns it off)",
                self.coalesce_us
            );
        }
        if !(576..=9000).contains(&self.tun_mtu) {
            bail!("`tun_mtu` {} is out of range 576-9000", self.tun_mtu);
        }
        crate::gateway::wrap::validate(&self.openvpn)?;
        let o = &self.openvpn;
        if o.udp_port == 0 && o.tcp_port == 0 && !self.ikev2.enabled && !self.quic.enabled {
            bail!(
                "`openvpn.udp_port` and `openvpn.tcp_port` are both 0 and IKEv2 and QUIC are disabled: enable at least one"
            );
        }
        self.quic.validate(self)?;
        if o.ciphers.is_empty() {
            bail!(
                "`openvpn.ciphers` is empty: use [\"AES-256-GCM\", \"AES-128-GCM\", \"CHACHA20-POLY1305\"]"
            );
        }
        for c in &o.ciphers {
            if gatehouse_engine::openvpn::data::Cipher::from_openvpn_name(c).is_none() {
                bail!(
                    "`openvpn.ciphers` entry {c:?} is not supported: use AES-256-GCM, AES-128-GCM or CHACHA20-POLY1305"
                );
            }
        }
        if gatehouse_engine::openvpn::tls::TlsVersionMin::parse(&o.tls_version_min).is_none() {
            bail!(
                "`openvpn.tls_version_min` = {:?} is not a TLS version: write \"1.2\" (accept what a stock OpenVPN 2.6 server accepts) or \"1.3\"",
                o.tls_version_min
            );
        }
        for (key, val) in [
            ("openvpn.ping", &o.ping),
            ("openvpn.ping_restart", &o.ping_restart),
            ("openvpn.reneg", &o.reneg),
        ] {
            if parse_duration(val).is_none() {
                bail!("`{key}` = {val:?} is not a duration: write e.g. \"10s\", \"5m\" or \"1h\"");
            }
        }
        if parse_duration(&self.ikev2.dpd).is_none_or(|d| d.is_zero()) {
            bail!(
                "`ikev2.dpd` = {:?} is not a duration: write e.g. \"30s\"",
                self.ikev2.dpd
            );
        }
        if parse_duration(&self.ikev2.hard_lifetime).is_none() {
            bail!(
                "`ikev2.hard_lifetime` = {:?} is not a duration: write e.g. \"24h\" (\"0\" for never)",
                self.ikev2.hard_lifetime
            );
        }
        if self.ikev2.enabled && (self.ikev2.ike_port == 0 || self.ikev2.natt_port == 0) {
            bail!(
                "`ikev2.ike_port` and `ikev2.natt_port` must be non-zero (or set `ikev2.enabled = false`)"
            );
        }
        let ping = parse_duration(&o.ping).unwrap_or_default();
        let restart = parse_duration(&o.ping_restart).unwrap_or_default();
        if ping.is_zero() || restart <= ping {
            bail!("`openvpn.ping_restart` must be longer than `openvpn.ping` (both non-zero)");
        }
        self.validate_tcp()?;
        self.validate_connections()
    }

    /// `dns_domains`: names, not too many for one PUSH_REPLY, and servers to send them to.
    fn validate_dns_domains(&self) -> Result<()> {
        let mut seen = Vec::new();
        for d in &self.dns_domains {
            let Some(n) = gatehouse_engine::wire::dns::normalize_domain(d) else {
                bail!(
                    "`dns_domains` entry {d:?} is not a domain name: write e.g. \"corp.example\" (letters, digits and '-', labels of 1-63 characters, no spaces or wildcards)"
                );
            };
            if seen.contains(&n) {
                bail!("`dns_domains` lists {n:?} twice: remove one");
            }
            seen.push(n);
        }
        if seen.len() > MAX_DNS_DOMAINS || seen.iter().map(|d| d.len() + 1).sum::<usize>() > 256 {
            bail!(
                "`dns_domains` is too long for one push: at most {MAX_DNS_DOMAINS} domains of 256 characters in all (a domain covers every name under it: push the parent)"
            );
        }
        if !seen.is_empty() && self.dns.is_empty() {
            bail!(
                "`dns_domains` is set but `dns` is empty: add the DNS servers that answer for these domains, e.g. dns = [\"10.1.0.53\"]"
            );
        }
        Ok(())
    }

    /// The split-DNS domains as clients get them (lower case, no trailing dot).
    pub fn pushed_dns_domains(&self) -> Vec<String> {
        self.dns_domains
            .iter()
            .filter_map(|d| gatehouse_engine::wire::dns::normalize_domain(d))
            .collect()
    }

    /// The `[openvpn]` TCP limits: caps and handshake timeout.
    fn validate_tcp(&self) -> Result<()> {
        let o = &self.openvpn;
        if !(1..=MAX_TCP_CONNECTIONS).contains(&o.tcp_max_connections) {
            bail!(
                "`openvpn.tcp_max_connections` = {} is out of range 1-{MAX_TCP_CONNECTIONS}: the default is {DEFAULT_TCP_MAX_CONNECTIONS} (set `openvpn.tcp_port = 0` to turn TCP off)",
                o.tcp_max_connections
            );
        }
        if o.tcp_max_per_ip == 0 || o.tcp_max_per_ip > o.tcp_max_connections {
            bail!(
                "`openvpn.tcp_max_per_ip` = {} must be 1 to `openvpn.tcp_max_connections` ({}): the default is {DEFAULT_TCP_MAX_PER_IP}; raise it for many clients behind one NAT address",
                o.tcp_max_per_ip,
                o.tcp_max_connections
            );
        }
        match parse_duration(&o.tcp_handshake_timeout) {
            Some(d) if !d.is_zero() && d <= Duration::from_secs(600) => Ok(()),
            Some(_) => bail!(
                "`openvpn.tcp_handshake_timeout` = {:?} is out of range: write 1s to 10m, e.g. \"30s\" (the default)",
                o.tcp_handshake_timeout
            ),
            None => bail!(
                "`openvpn.tcp_handshake_timeout` = {:?} is not a duration: write e.g. \"30s\" (the default)",
                o.tcp_handshake_timeout
            ),
        }
    }

    /// The TOML text written by `gatehoused init`.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string_pretty(self).context("serialising gateway.toml")?;
        let body = quic::comment_section(&body);
        Ok(format!(
            "# Gatehouse gateway configuration. Check changes with `gatehoused check --config FILE`.\n\
             # Paths are relative to this file. Certificates: `gatehouse-certs --pki <pki_dir> ...`.\n\n{body}"
        ))
    }

    /// `pki_dir` resolved against the directory holding the config file.
    pub fn pki_path(&self, config_dir: &Path) -> PathBuf {
        if self.pki_dir.is_absolute() {
            self.pki_dir.clone()
        } else {
            config_dir.join(&self.pki_dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let c = GatewayConfig::new("vpn.example.com");
        let text = c.to_toml().unwrap();
        let back: GatewayConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.client_pool.to_string(), "172.16.201.0/24");
        assert_eq!(back.openvpn.udp_port, 1194);
        assert_eq!(back.openvpn.tcp_port, 443);
        back.validate().unwrap();
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c: GatewayConfig = toml::from_str("public_addr = \"1.2.3.4\"").unwrap();
        assert_eq!(c.tun_name, "gatehouse0");
        c.validate().unwrap();
    }

    #[test]
    fn ipv6_pool_is_optional_and_checked() {
        let c: GatewayConfig = toml::from_str(
            "public_addr = \"gw\"\nclient_pool_v6 = \"fd00:6a7e:1::/64\"\naddress_space_v6 = [\"fd00:6a7e:2::/64\"]",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.client_pool_v6().unwrap().unwrap().to_string(),
            "fd00:6a7e:1::/64"
        );
        let back: GatewayConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(GatewayConfig::new("gw").client_pool_v6().unwrap(), None);
        let bad = |pool: &str, spaces: &[&str]| {
            let mut c = GatewayConfig::new("gw");
            c.client_pool_v6 = (!pool.is_empty()).then(|| pool.to_owned());
            c.address_space_v6 = spaces.iter().map(|s| s.to_string()).collect();
            format!("{:#}", c.validate().unwrap_err())
        };
        let e = bad("fd00:6a7e:1::", &[]);
        assert!(
            e.contains("`client_pool_v6`") && e.contains("fd00:6a7e:1::/64"),
            "{e}"
        );
        let e = bad("10.0.0.0/24", &[]);
        assert!(
            e.contains("`client_pool_v6`") && e.contains("not an IPv6 prefix"),
            "{e}"
        );
        let e = bad("fd00::/124", &[]);
        assert!(e.contains("`client_pool_v6`") && e.contains("/120"), "{e}");
        let e = bad("fe80::/64", &[]);
        assert!(
            e.contains("`client_pool_v6`") && e.contains("link-local"),
            "{e}"
        );
        let e = bad("fd00::1/64", &[]);
        assert!(e.contains("host bits") && e.contains("fd00::/64"), "{e}");
        let e = bad("fd00::/64", &["fd00::/48"]);
        assert!(
            e.contains("`address_space_v6` entry fd00::/48 overlaps"),
            "{e}"
        );
        let e = bad("fd00::/64", &["nope"]);
        assert!(e.contains("`address_space_v6` entry \"nope\""), "{e}");
        let e = bad("", &["fd00:1::/64"]);
        assert!(e.contains("`client_pool_v6` is not"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = GatewayConfig::new("gw");
        c.address_space = vec!["172.16.0.0/16".parse().unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`address_space`") && e.contains("client_pool"),
            "{e}"
        );
        let mut c = GatewayConfig::new("gw");
        c.openvpn.ciphers = vec!["BF-CBC".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`openvpn.ciphers`")
        );
        let mut c = GatewayConfig::new("gw");
        c.openvpn.tls_version_min = "1.1".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`openvpn.tls_version_min`") && e.contains("\"1.2\""),
            "{e}"
        );
        c.openvpn.tls_version_min = "1.3".into();
        c.validate().unwrap();
        let mut c = GatewayConfig::new("gw");
        c.openvpn.ping = "often".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`openvpn.ping`")
        );
        let mut c = GatewayConfig::new("gw");
        c.coalesce_us = 5000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`coalesce_us`") && e.contains("0-1000"), "{e}");
        c.coalesce_us = 0;
        c.validate().unwrap();
        let e = toml::from_str::<GatewayConfig>("public_addr = \"x\"\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn dns_domains_are_checked() {
        let c: GatewayConfig = toml::from_str(
            "public_addr = \"gw\"\ndns = [\"10.1.0.53\"]\ndns_domains = [\"Corp.Example.\", \"lab.example\"]",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.pushed_dns_domains(), ["corp.example", "lab.example"]);
        for (domains, dns, hint) in [
            (vec!["corp example"], true, "not a domain name"),
            (vec!["*.corp.example"], true, "no spaces or wildcards"),
            (vec!["corp.example", "CORP.example"], true, "twice"),
            (vec!["corp.example"], false, "`dns` is empty"),
        ] {
            let mut c = GatewayConfig::new("gw");
            c.dns_domains = domains.into_iter().map(String::from).collect();
            if dns {
                c.dns = vec!["10.1.0.53".parse().unwrap()];
            }
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("`dns_domains`") && e.contains(hint), "{e}");
        }
        let mut c = GatewayConfig::new("gw");
        c.dns = vec!["10.1.0.53".parse().unwrap()];
        c.dns_domains = (0..17).map(|i| format!("d{i}.example")).collect();
        assert!(c.validate().unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn tcp_limits_are_checked() {
        let c = GatewayConfig::new("gw");
        assert_eq!(c.openvpn.tcp_max_connections, 10_000);
        assert_eq!(c.openvpn.tcp_max_per_ip, 64);
        assert_eq!(c.openvpn.tcp_handshake_timeout, "30s");
        let parsed: GatewayConfig = toml::from_str(
            "public_addr = \"x\"\n[openvpn]\ntcp_max_connections = 100\ntcp_max_per_ip = 100\ntcp_handshake_timeout = \"5s\"",
        )
        .unwrap();
        parsed.validate().unwrap();
        let check = |f: &dyn Fn(&mut OpenVpnConfig)| {
            let mut c = GatewayConfig::new("gw");
            f(&mut c.openvpn);
            c.validate().map(|_| ()).map_err(|e| e.to_string())
        };
        let e = check(&|o| o.tcp_max_connections = 0).unwrap_err();
        assert!(
            e.contains("`openvpn.tcp_max_connections`") && e.contains("10000"),
            "{e}"
        );
        let e = check(&|o| o.tcp_max_per_ip = 0).unwrap_err();
        assert!(
            e.contains("`openvpn.tcp_max_per_ip`") && e.contains("64"),
            "{e}"
        );
        let e = check(&|o| {
            o.tcp_max_connections = 10;
            o.tcp_max_per_ip = 11;
        })
        .unwrap_err();
        assert!(
            e.contains("`openvpn.tcp_max_per_ip`") && e.contains("(10)"),
            "{e}"
        );
        let e = check(&|o| o.tcp_handshake_timeout = "soon".into()).unwrap_err();
        assert!(
            e.contains("`openvpn.tcp_handshake_timeout`") && e.contains("\"30s\""),
            "{e}"
        );
        let e = check(&|o| o.tcp_handshake_timeout = "0".into()).unwrap_err();
        assert!(e.contains("`openvpn.tcp_handshake_timeout`"), "{e}");
        let e = check(&|o| o.tcp_handshake_timeout = "1h".into()).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("8h"), Some(Duration::from_secs(28800)));
        assert_eq!(parse_duration("42"), Some(Duration::from_secs(42)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
