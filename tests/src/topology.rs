//! The network most gateway tests need: remote clients on an underlay, a gateway, and a LAN
//! behind the gateway with one host on it.
//!
//! ```text
//!  client i ns                 gateway ns                      lan ns
//!  up0 10.250.X.(4i+2)/30 ---- cl<i> 10.250.X.(4i+1)/30
//!                              lan0 10.251.X.1/24 ------------ gw0 10.251.X.10/24
//!                                                               default via 10.251.X.1
//! ```
//!
//! X is the test's `subnet_index`, so tests running side by side use disjoint addresses (they
//! are in separate namespaces anyway; distinct subnets keep logs unambiguous). The VPN pool a
//! gateway hands out is 10.8.X.0/24. The LAN host routes everything back via the gateway, so
//! replies to pool addresses return through the tunnel.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cidr::Ipv4Cidr;
use crate::net::wait_ping;
use crate::netns::{Netns, add_route, enable_forwarding, veth};

/// One remote client: its namespace and its underlay link to the gateway.
#[derive(Debug)]
pub struct TopologyClient {
    pub ns: Netns,
    /// The client's underlay address (on interface `up0`).
    pub addr: Ipv4Addr,
    /// The gateway's address on this client's link: the `remote` a client connects to.
    pub gateway_addr: Ipv4Addr,
}

/// Clients <-> gateway <-> LAN, all in namespaces of this test; deleted on Drop.
#[derive(Debug)]
pub struct GatewayTopology {
    pub subnet_index: u8,
    pub clients: Vec<TopologyClient>,
    pub gateway: Netns,
    pub lan: Netns,
    /// 10.251.X.0/24, the network behind the gateway (what a gateway pushes as a route).
    pub lan_net: Ipv4Cidr,
    /// 10.251.X.1, the gateway on the LAN.
    pub gateway_lan_addr: Ipv4Addr,
    /// 10.251.X.10, the host on the LAN that tests reach through the tunnel.
    pub lan_host: Ipv4Addr,
    /// 10.8.X.0/24, the pool for clients' virtual addresses.
    pub vpn_pool: Ipv4Cidr,
}

impl GatewayTopology {
    /// Builds the topology with `n_clients` clients (1..=63). Namespaces are named
    /// `gh-<tag>-gw-<pid>`, `gh-<tag>-lan-<pid>`, `gh-<tag>-c<i>-<pid>`; every test passes its
    /// own `tag` and `subnet_index`.
    pub fn new(tag: &str, subnet_index: u8, n_clients: usize) -> Result<GatewayTopology> {
        if !(1..=63).contains(&n_clients) {
            bail!("a topology has 1 to 63 clients, not {n_clients}");
        }
        let x = subnet_index;
        let gateway = Netns::new(&format!("{tag}-gw"))?;
        let lan = Netns::new(&format!("{tag}-lan"))?;
        let lan_net = Ipv4Cidr::new(Ipv4Addr::new(10, 251, x, 0), 24);
        let gateway_lan_addr = Ipv4Addr::new(10, 251, x, 1);
        let lan_host = Ipv4Addr::new(10, 251, x, 10);
        veth(
            &gateway,
            "lan0",
            Ipv4Cidr::new(gateway_lan_addr, 24),
            &lan,
            "gw0",
            Ipv4Cidr::new(lan_host, 24),
        )?;
        add_route(
            &lan,
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway_lan_addr,
        )?;
        enable_forwarding(&gateway)?;

        let mut clients = Vec::with_capacity(n_clients);
        for i in 0..n_clients {
            let ns = Netns::new(&format!("{tag}-c{i}"))?;
            // n_clients <= 63, so 4i+2 <= 250.
            let base = 4 * i as u8;
            let gateway_addr = Ipv4Addr::new(10, 250, x, base + 1);
            let addr = Ipv4Addr::new(10, 250, x, base + 2);
            veth(
                &ns,
                "up0",
                Ipv4Cidr::new(addr, 30),
                &gateway,
                &format!("cl{i}"),
                Ipv4Cidr::new(gateway_addr, 30),
            )?;
            clients.push(TopologyClient {
                ns,
                addr,
                gateway_addr,
            });
        }
        let topo = GatewayTopology {
            subnet_index: x,
            clients,
            gateway,
            lan,
            lan_net,
            gateway_lan_addr,
            lan_host,
            vpn_pool: Ipv4Cidr::new(Ipv4Addr::new(10, 8, x, 0), 24),
        };
        // The underlay must work before anything is tunnelled over it.
        wait_ping(&topo.gateway, topo.lan_host, Duration::from_secs(5))?;
        for c in &topo.clients {
            wait_ping(&c.ns, c.gateway_addr, Duration::from_secs(5))?;
        }
        Ok(topo)
    }

    /// Client `i`.
    pub fn client(&self, i: usize) -> &TopologyClient {
        &self.clients[i]
    }

    /// Names of every namespace in the topology.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut names = vec![self.gateway.name(), self.lan.name()];
        names.extend(self.clients.iter().map(|c| c.ns.name()));
        names
    }
}
