//! A NAT between one remote client and the gateway, whose mapping a test can change while
//! traffic flows (NAT rebinding: a home router that reboots, a carrier NAT that times a flow
//! out, a phone that moves between networks all look like this to the gateway).
//!
//! ```text
//!  behind ns                     NAT ns (= topology client i)           gateway ns
//!  up0 10.252.X.(4i+2)/30 ----- in0 10.252.X.(4i+1)/30
//!  default via 10.252.X.(4i+1)   up0 10.250.X.(4i+2)/30 (outside 0) ---- cl<i> 10.250.X.(4i+1)
//!                                    10.249.X.(4i+2)/32 (outside 1)      route 10.249.X.(4i+2)
//!                                                                          via 10.250.X.(4i+2)
//! ```
//!
//! The NAT namespace is the topology's client `i` namespace: its underlay link to the gateway
//! becomes the NAT's outside, with a second outside address the gateway routes back over the
//! same link. The client behind the NAT gets a new namespace. nftables (table `ip ghnat`,
//! chain `post` on the postrouting hook) source-NATs everything from the inside network: UDP
//! to a [`Mapping`] (one outside address, a port range), anything else (ICMP) to the same
//! address. [`Nat::set_mapping`] swaps the rules in one nft transaction and flushes the NAT's
//! conntrack table (`conntrack -F`, in the NAT namespace only), so the client's next packet
//! leaves with a new source address and/or port; [`Nat::wait_flow`] reads the NAT's conntrack
//! table to prove it did.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cidr::Ipv4Cidr;
use crate::net::wait_ping;
use crate::netns::{Netns, add_route, enable_forwarding, veth};
use crate::topology::GatewayTopology;

/// The nftables table the NAT's rules live in.
pub const TABLE: &str = "ghnat";
/// Its postrouting chain.
pub const CHAIN: &str = "post";
/// The NAT's outside interface: the topology client's underlay link.
const OUTSIDE_IF: &str = "up0";
/// The NAT's inside interface.
const INSIDE_IF: &str = "in0";

/// Where the NAT maps the inside's UDP flows: source address `addr`, source port in
/// `ports.0..=ports.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub addr: Ipv4Addr,
    pub ports: (u16, u16),
}

impl Mapping {
    pub fn new(addr: Ipv4Addr, first_port: u16, last_port: u16) -> Mapping {
        Mapping {
            addr,
            ports: (first_port, last_port),
        }
    }

    /// Whether `outside` (an address and port the NAT put on a flow) is in this mapping.
    pub fn contains(&self, outside: SocketAddrV4) -> bool {
        *outside.ip() == self.addr && (self.ports.0..=self.ports.1).contains(&outside.port())
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-{}", self.addr, self.ports.0, self.ports.1)
    }
}

/// One UDP flow in the NAT's conntrack table: what the inside sent (`inside` -> `remote`)
/// and the outside address and port the NAT gave it (`outside`, where replies go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub inside: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub outside: SocketAddrV4,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} as {}", self.inside, self.remote, self.outside)
    }
}

/// A NAT in front of topology client `i` (see the module doc). Dropping it deletes the
/// namespace behind the NAT; the NAT namespace belongs to the topology.
#[derive(Debug)]
pub struct Nat<'a> {
    /// The NAT box: the topology client's namespace.
    pub nat: &'a Netns,
    /// The client behind the NAT (interface `up0`, default route via the NAT).
    pub client: Netns,
    /// The client's address behind the NAT.
    pub client_addr: Ipv4Addr,
    /// The NAT's address on the inside link (the client's default gateway).
    pub inside_addr: Ipv4Addr,
    /// The NAT's two outside addresses: the topology client's underlay address, and a second
    /// one the gateway routes to over the same link.
    pub outside: [Ipv4Addr; 2],
    /// The gateway's address on the NAT's outside link (what the client dials).
    pub gateway_addr: Ipv4Addr,
    inside_net: Ipv4Cidr,
}

impl<'a> Nat<'a> {
    /// Puts a NAT in front of `topo`'s client `i`: a new namespace `gh-<tag>-<pid>` behind
    /// it, the second outside address, the gateway's route back to it, forwarding, and the
    /// nftables rules with `initial` as the UDP mapping. Checks the client reaches the
    /// gateway's address through the NAT before returning.
    pub fn behind(
        topo: &'a GatewayTopology,
        i: usize,
        tag: &str,
        initial: Mapping,
    ) -> Result<Nat<'a>> {
        let x = topo.subnet_index;
        let tc = topo.client(i);
        let base = 4 * i as u8;
        let client = Netns::new(tag)?;
        let inside_addr = Ipv4Addr::new(10, 252, x, base + 1);
        let client_addr = Ipv4Addr::new(10, 252, x, base + 2);
        let second = Ipv4Addr::new(10, 249, x, base + 2);
        veth(
            &client,
            "up0",
            Ipv4Cidr::new(client_addr, 30),
            &tc.ns,
            INSIDE_IF,
            Ipv4Cidr::new(inside_addr, 30),
        )?;
        add_route(
            &client,
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
            inside_addr,
        )?;
        enable_forwarding(&tc.ns)?;
        tc.ns.exec_ok(
            "ip",
            ["addr", "add", &format!("{second}/32"), "dev", OUTSIDE_IF],
        )?;
        add_route(&topo.gateway, Ipv4Cidr::new(second, 32), tc.addr)?;
        let nat = Nat {
            nat: &tc.ns,
            client,
            client_addr,
            inside_addr,
            outside: [tc.addr, second],
            gateway_addr: tc.gateway_addr,
            inside_net: Ipv4Cidr::new(inside_addr, 30).network(),
        };
        let table = format!(
            "add table ip {TABLE}; add chain ip {TABLE} {CHAIN} {{ type nat hook postrouting \
             priority srcnat; policy accept; }}"
        );
        nat.nat.exec_ok("nft", [table.as_str()])?;
        nat.install(initial)?;
        // ICMP through the NAT to the gateway: the underlay works before any tunnel.
        wait_ping(&nat.client, nat.gateway_addr, Duration::from_secs(5))?;
        Ok(nat)
    }

    /// The nft commands that make `m` the mapping: flush the chain, then the UDP rule and the
    /// rule for everything else, in one transaction.
    fn rules(&self, m: Mapping) -> String {
        let from = format!(
            "oifname \"{OUTSIDE_IF}\" ip saddr {}",
            self.inside_net.network()
        );
        format!(
            "flush chain ip {TABLE} {CHAIN}; \
             add rule ip {TABLE} {CHAIN} {from} meta l4proto udp snat to {}:{}-{}; \
             add rule ip {TABLE} {CHAIN} {from} snat to {}",
            m.addr, m.ports.0, m.ports.1, m.addr
        )
    }

    fn install(&self, m: Mapping) -> Result<()> {
        self.nat.exec_ok("nft", [self.rules(m).as_str()])?;
        Ok(())
    }

    /// Makes `m` the mapping for new flows and forgets every existing one (`conntrack -F` in
    /// the NAT namespace): the client's next packet gets a new outside address/port.
    pub fn set_mapping(&self, m: Mapping) -> Result<()> {
        self.install(m)?;
        self.nat.exec_ok("conntrack", ["-F"])?;
        Ok(())
    }

    /// The NAT's rules as nft lists them.
    pub fn ruleset(&self) -> Result<String> {
        self.nat.exec_ok("nft", ["list", "table", "ip", TABLE])
    }

    /// The UDP flows from the client behind the NAT in the NAT's conntrack table.
    pub fn flows(&self) -> Result<Vec<Flow>> {
        let out = self.nat.exec_ok("conntrack", ["-L", "-p", "udp"])?;
        Ok(parse_conntrack(&out)
            .into_iter()
            .filter(|f| *f.inside.ip() == self.client_addr)
            .collect())
    }

    /// Waits until a flow of the client's to `remote` is mapped into `m` (the client sent a
    /// packet since the mapping changed) and returns every such flow (a client may send from
    /// more than one port). Fails, with the table, after `timeout`.
    pub fn wait_flow(
        &self,
        remote: SocketAddrV4,
        m: Mapping,
        timeout: Duration,
    ) -> Result<Vec<Flow>> {
        let deadline = Instant::now() + timeout;
        loop {
            let flows = self.flows()?;
            let mapped: Vec<Flow> = flows
                .iter()
                .filter(|f| f.remote == remote && m.contains(f.outside))
                .copied()
                .collect();
            if !mapped.is_empty() {
                return Ok(mapped);
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = flows.iter().map(Flow::to_string).collect();
                bail!(
                    "the NAT in {} mapped no flow {} -> {remote} into {m} within {timeout:?}; \
                     its flows: {shown:?}",
                    self.nat.name(),
                    self.client_addr
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Parses `conntrack -L` lines with ports (UDP, TCP): the first `src= dst= sport= dport=` are
/// the original direction, the second the reply direction, whose `dst:dport` is where the NAT
/// maps the original source.
pub fn parse_conntrack(out: &str) -> Vec<Flow> {
    out.lines()
        .filter_map(|line| {
            let mut src = Vec::new();
            let mut dst = Vec::new();
            let mut sport = Vec::new();
            let mut dport = Vec::new();
            for word in line.split_whitespace() {
                let Some((k, v)) = word.split_once('=') else {
                    continue;
                };
                match k {
                    "src" => src.push(v.parse::<Ipv4Addr>().ok()?),
                    "dst" => dst.push(v.parse::<Ipv4Addr>().ok()?),
                    "sport" => sport.push(v.parse::<u16>().ok()?),
                    "dport" => dport.push(v.parse::<u16>().ok()?),
                    _ => {}
                }
            }
            if src.len() != 2 || dst.len() != 2 || sport.len() != 2 || dport.len() != 2 {
                return None;
            }
            Some(Flow {
                inside: SocketAddrV4::new(src[0], sport[0]),
                remote: SocketAddrV4::new(dst[0], dport[0]),
                outside: SocketAddrV4::new(dst[1], dport[1]),
            })
        })
        .collect()
}

impl Nat<'_> {
    /// The NAT's rules and flows, for the context of a failure.
    pub fn describe(&self) -> String {
        let rules = self.ruleset().unwrap_or_else(|e| format!("{e:#}"));
        let flows = self
            .flows()
            .map(|f| f.iter().map(Flow::to_string).collect::<Vec<_>>().join("\n"))
            .unwrap_or_else(|e| format!("{e:#}"));
        format!(
            "NAT {} rules:\n{}\nflows:\n{flows}",
            self.nat.name(),
            rules.trim_end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conntrack_udp_lines() {
        let out = "udp      17 29 src=10.252.150.2 dst=10.250.150.1 sport=45678 dport=1194 \
                   src=10.250.150.1 dst=10.249.150.2 sport=1194 dport=21007 [ASSURED] mark=0 use=1\n\
                   udp      17 28 src=10.252.150.2 dst=10.250.150.1 sport=4500 dport=4500 \
                   [UNREPLIED] src=10.250.150.1 dst=10.250.150.2 sport=4500 dport=20001 mark=0 use=1\n\
                   icmp     1 29 src=10.252.150.2 dst=10.250.150.1 type=8 code=0 id=7 \
                   src=10.250.150.1 dst=10.250.150.2 type=0 code=0 id=7 mark=0 use=1\n\
                   conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n";
        let flows = parse_conntrack(out);
        assert_eq!(flows.len(), 2, "{flows:?}");
        assert_eq!(flows[0].inside, "10.252.150.2:45678".parse().unwrap());
        assert_eq!(flows[0].remote, "10.250.150.1:1194".parse().unwrap());
        assert_eq!(flows[0].outside, "10.249.150.2:21007".parse().unwrap());
        assert_eq!(flows[1].outside, "10.250.150.2:20001".parse().unwrap());
        let m = Mapping::new(Ipv4Addr::new(10, 249, 150, 2), 21000, 21999);
        assert!(m.contains(flows[0].outside));
        assert!(!m.contains(flows[1].outside));
        assert_eq!(m.to_string(), "10.249.150.2:21000-21999");
    }
}
