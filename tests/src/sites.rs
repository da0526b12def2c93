//! The network of the site-to-site tests: three sites on one underlay, each a gateway with a
//! LAN and one host behind it, plus a point-to-site client on the underlay.
//!
//! ```text
//!                         underlay 10.K.0.0/24 (bridge br0 in namespace "sw")
//!      +----------------------+----------------------+----------------------+
//!  gwA ul0 10.K.0.1      gwB ul0 10.K.0.2      gwC ul0 10.K.0.3      client ul0 10.K.0.9
//!  gwA lan0 10.K.1.1     gwB lan0 10.K.2.1     gwC lan0 10.K.3.1     (no other route)
//!   |                     |                     |
//!  hostA eth0 10.K.1.10  hostB eth0 10.K.2.10  hostC eth0 10.K.3.10
//!  (default via .1)      (default via .1)      (default via .1)
//! ```
//!
//! K is the test's index in [`SITE_INDEXES`] (70..=79; the WireGuard tests use
//! [`WIREGUARD_SITE_INDEXES`]): tests side by side use disjoint
//! addresses, and every test passes its own tag, so namespace names are unique too
//! (`gh-<tag>-gwa-<pid>`, ...). Each site also has a suggested point-to-site pool
//! 10.K.(100+n).0/24 (A 10.K.101.0/24, B 10.K.102.0/24, C 10.K.103.0/24). Gateways forward;
//! nothing routes between sites until a tunnel does (gateways have no default route). Hosts
//! route everything via their gateway, so replies to remote LANs and pools go back to it.
//!
//! Every namespace is a [`Netns`] guard: dropping the lab (also when a test panics) kills
//! whatever still runs inside and deletes the namespaces. Declare the lab before the daemons
//! that run in it, so they are dropped (stopped) first.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cidr::Ipv4Cidr;
use crate::net::wait_ping;
use crate::netns::{Netns, add_route, enable_forwarding, veth};

/// Subnet indexes reserved for the site-to-site tests (10.K.x.y).
pub const SITE_INDEXES: RangeInclusive<u8> = 70..=79;
/// Subnet indexes of the WireGuard site tests (tests/tests/wireguard_*.rs).
pub const WIREGUARD_SITE_INDEXES: RangeInclusive<u8> = 214..=215;
/// Subnet index of the BGP site test (tests/tests/bgp_sites.rs).
pub const BGP_SITE_INDEX: u8 = 231;
/// Lab index of the BGP failover test (two tunnels between two Gatehouse gateways).
pub const BGP_FAILOVER_INDEX: u8 = 232;
/// The gateways' and the client's interface on the underlay.
pub const UNDERLAY_IF: &str = "ul0";
/// A gateway's interface on its LAN.
pub const LAN_IF: &str = "lan0";
/// A host's interface on its LAN.
pub const HOST_IF: &str = "eth0";
/// The bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";
/// Host part of the client's underlay address (10.K.0.9).
const CLIENT_OCTET: u8 = 9;
/// Host part of each LAN host (10.K.n.10).
const HOST_OCTET: u8 = 10;
const UNDERLAY_UP: Duration = Duration::from_secs(10);

/// One of the three sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteId {
    A,
    B,
    C,
}

impl SiteId {
    pub const ALL: [SiteId; 3] = [SiteId::A, SiteId::B, SiteId::C];

    /// 1, 2, 3: the gateway's underlay host part, the LAN's third octet, the pool's minus 100.
    pub fn n(self) -> u8 {
        match self {
            SiteId::A => 1,
            SiteId::B => 2,
            SiteId::C => 3,
        }
    }

    /// "a", "b", "c" (namespace tags, file names).
    pub fn name(self) -> &'static str {
        match self {
            SiteId::A => "a",
            SiteId::B => "b",
            SiteId::C => "c",
        }
    }

    /// The switch-side port of this site's gateway on the underlay bridge.
    fn port(self) -> String {
        format!("p{}", self.name())
    }
}

/// One site: its gateway, the LAN behind it and the host on that LAN.
#[derive(Debug)]
pub struct Site {
    pub id: SiteId,
    /// The gateway's namespace (`ul0` on the underlay, `lan0` on the LAN; forwarding on).
    pub gw: Netns,
    /// The LAN host's namespace (`eth0`, default route via the gateway).
    pub host: Netns,
    /// 10.K.0.n: the gateway's public (underlay) address.
    pub underlay_addr: Ipv4Addr,
    /// 10.K.n.0/24: the site's address space.
    pub lan: Ipv4Cidr,
    /// 10.K.n.1: the gateway on the LAN.
    pub gw_lan_addr: Ipv4Addr,
    /// 10.K.n.10: the host tests ping and run iperf3 against.
    pub host_addr: Ipv4Addr,
    /// 10.K.(100+n).0/24: a suggested point-to-site client pool for this gateway.
    pub pool: Ipv4Cidr,
}

/// Three sites and a point-to-site client on one underlay; see the module docs.
#[derive(Debug)]
pub struct SiteLab {
    /// K, the second octet of every address.
    pub k: u8,
    /// 10.K.0.0/24.
    pub underlay_net: Ipv4Cidr,
    pub a: Site,
    pub b: Site,
    pub c: Site,
    /// The point-to-site client's namespace: `ul0` 10.K.0.9/24, no other route.
    pub client: Netns,
    /// 10.K.0.9.
    pub client_addr: Ipv4Addr,
    /// The underlay "switch": bridge `br0` with ports `pa`, `pb`, `pc`, `pcl`. Declared last:
    /// dropped after the gateways.
    pub switch: Netns,
}

impl SiteLab {
    /// Builds the lab for index `k` (in [`SITE_INDEXES`]); namespaces are
    /// `gh-<tag>-{sw,gwa,gwb,gwc,ha,hb,hc,cl}-<pid>`. Returns once every gateway reaches
    /// its host and the client reaches every gateway over the underlay.
    pub fn new(tag: &str, k: u8) -> Result<SiteLab> {
        ensure!(
            SITE_INDEXES.contains(&k)
                || WIREGUARD_SITE_INDEXES.contains(&k)
                || k == BGP_SITE_INDEX
                || k == BGP_FAILOVER_INDEX,
            "site lab index {k} is outside {SITE_INDEXES:?}, {WIREGUARD_SITE_INDEXES:?}, {BGP_SITE_INDEX} and {BGP_FAILOVER_INDEX}, the indexes reserved for site tests"
        );
        let switch = Netns::new(&format!("{tag}-sw"))?;
        ip_ok(&["-n", switch.name(), "link", "add", BRIDGE, "type", "bridge"])?;
        ip_ok(&["-n", switch.name(), "link", "set", BRIDGE, "up"])?;

        let mut sites = Vec::with_capacity(3);
        for id in SiteId::ALL {
            let n = id.n();
            let gw = Netns::new(&format!("{tag}-gw{}", id.name()))?;
            let host = Netns::new(&format!("{tag}-h{}", id.name()))?;
            let site = Site {
                id,
                underlay_addr: Ipv4Addr::new(10, k, 0, n),
                lan: Ipv4Cidr::new(Ipv4Addr::new(10, k, n, 0), 24),
                gw_lan_addr: Ipv4Addr::new(10, k, n, 1),
                host_addr: Ipv4Addr::new(10, k, n, HOST_OCTET),
                pool: Ipv4Cidr::new(Ipv4Addr::new(10, k, 100 + n, 0), 24),
                gw,
                host,
            };
            bridge_port(
                &switch,
                &id.port(),
                &site.gw,
                Ipv4Cidr::new(site.underlay_addr, 24),
            )?;
            veth(
                &site.gw,
                LAN_IF,
                Ipv4Cidr::new(site.gw_lan_addr, 24),
                &site.host,
                HOST_IF,
                Ipv4Cidr::new(site.host_addr, 24),
            )?;
            add_route(
                &site.host,
                Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
                site.gw_lan_addr,
            )?;
            enable_forwarding(&site.gw)?;
            sites.push(site);
        }
        let client = Netns::new(&format!("{tag}-cl"))?;
        let client_addr = Ipv4Addr::new(10, k, 0, CLIENT_OCTET);
        bridge_port(&switch, "pcl", &client, Ipv4Cidr::new(client_addr, 24))?;

        let mut sites = sites.into_iter();
        let (Some(a), Some(b), Some(c)) = (sites.next(), sites.next(), sites.next()) else {
            bail!("three sites were built");
        };
        let lab = SiteLab {
            k,
            underlay_net: Ipv4Cidr::new(Ipv4Addr::new(10, k, 0, 0), 24),
            a,
            b,
            c,
            client,
            client_addr,
            switch,
        };
        lab.check_underlay()?;
        Ok(lab)
    }

    /// Site `id`.
    pub fn site(&self, id: SiteId) -> &Site {
        match id {
            SiteId::A => &self.a,
            SiteId::B => &self.b,
            SiteId::C => &self.c,
        }
    }

    /// All three sites, A first.
    pub fn sites(&self) -> [&Site; 3] {
        [&self.a, &self.b, &self.c]
    }

    /// Names of every namespace of the lab.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut names = vec![self.switch.name(), self.client.name()];
        for s in self.sites() {
            names.extend([s.gw.name(), s.host.name()]);
        }
        names
    }

    /// Pings: every gateway its host, the client every gateway (through the bridge).
    pub fn check_underlay(&self) -> Result<()> {
        for s in self.sites() {
            wait_ping(&s.gw, s.host_addr, UNDERLAY_UP)
                .with_context(|| format!("site {:?}: gateway -> its LAN host", s.id))?;
            wait_ping(&self.client, s.underlay_addr, UNDERLAY_UP)
                .with_context(|| format!("client -> gateway {:?} over the underlay", s.id))?;
        }
        Ok(())
    }

    /// Takes gateway `id`'s port on the underlay bridge down or up: its cable is pulled (or
    /// plugged back) while the gateway and its addresses stay as they are.
    pub fn set_uplink(&self, id: SiteId, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip_ok(&["-n", self.switch.name(), "link", "set", &id.port(), state])
    }

    /// Same as [`SiteLab::set_uplink`] for the point-to-site client.
    pub fn set_client_uplink(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip_ok(&["-n", self.switch.name(), "link", "set", "pcl", state])
    }
}

/// A veth from the bridge in `switch` (port `port`, no address) to `ns` (`ul0`, `cidr`).
fn bridge_port(switch: &Netns, port: &str, ns: &Netns, cidr: Ipv4Cidr) -> Result<()> {
    ip_ok(&[
        "link",
        "add",
        port,
        "netns",
        switch.name(),
        "type",
        "veth",
        "peer",
        "name",
        UNDERLAY_IF,
        "netns",
        ns.name(),
    ])?;
    ip_ok(&["-n", switch.name(), "link", "set", port, "master", BRIDGE])?;
    ip_ok(&["-n", switch.name(), "link", "set", port, "up"])?;
    let cidr = cidr.to_string();
    ip_ok(&["-n", ns.name(), "addr", "add", &cidr, "dev", UNDERLAY_IF])?;
    ip_ok(&["-n", ns.name(), "link", "set", UNDERLAY_IF, "up"])?;
    Ok(())
}

/// Runs `ip ARGS`, failing with its stderr unless it succeeds.
pub(crate) fn ip_ok(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_numbers_and_ports() {
        assert_eq!(
            SiteId::ALL.map(SiteId::n),
            [1, 2, 3],
            "A, B, C are .1, .2, .3"
        );
        assert_eq!(SiteId::C.port(), "pc");
        assert!(SITE_INDEXES.contains(&70) && SITE_INDEXES.contains(&79));
    }
}
