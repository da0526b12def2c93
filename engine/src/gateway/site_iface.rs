//! Site connections with their own interface (`interface = "..."` in `gateway.toml`):
//! route-based connections whose prefixes a routing daemon (FRR's bgpd + zebra) learns and
//! installs as kernel routes through that interface, instead of entries in the core's
//! router.
//!
//! The driver reads the interface and hands each packet in with
//! [`GatewayCore::handle_interface_packet`]: it goes to the connection's active SA whatever
//! its destination (the kernel already chose the connection by routing into its interface).
//! A packet decrypted from such a connection is not returned for the gateway's TUN: the
//! driver takes it from [`GatewayCore::poll_interface_packet`] and writes it to that
//! connection's interface, so the kernel (and the routing daemon) see it arrive there.
//!
//! Anti-spoofing: the CHILD SA's selectors are 0.0.0.0/0, so the selectors say nothing. The
//! core refuses inner sources in the gateway's own address space and client pool (nobody
//! behind a site may pretend to be the gateway's side); any other source is accepted here,
//! and the kernel's reverse-path filter on the interface (`rp_filter = 1`, which gatehoused
//! sets) drops sources it would not route back through that interface - that is, sources
//! outside what the routing daemon learned from the site.

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{Dest, Drop, GatewayCore, TunnelId};

impl GatewayCore {
    /// A packet the kernel routed into the own interface of connection `name`: seals it for
    /// the connection's active SA. Returns where to send it and the bytes, or None (no such
    /// connection, not connected, or its SA is on another worker: counted as drops).
    pub fn handle_interface_packet(
        &mut self,
        _now: Instant,
        name: &str,
        packet: &[u8],
    ) -> Option<(Dest, &[u8])> {
        let active = self
            .sites
            .iter()
            .find(|s| s.cfg.own_interface && !s.retired && s.cfg.peer.name == name)
            .map(|s| s.active);
        let id = match active {
            Some(Some(id)) => id,
            Some(None) => {
                self.drops.count(Drop::NotEstablished);
                return None;
            }
            None => {
                self.drops.count(Drop::NoRoute);
                return None;
            }
        };
        let (dest, esp, len) = self.esp_encrypt(id, packet)?;
        let buf = if esp { &self.esp_buf } else { &self.buf };
        Some((dest, buf.get(..len)?))
    }

    /// The next packet decrypted from an own-interface connection: the connection's name
    /// and the inner IP packet, for the driver to write to that connection's interface.
    /// (One allocation per packet: these connections carry routed site traffic, not the
    /// remote-access bulk.)
    pub fn poll_interface_packet(&mut self) -> Option<(String, Vec<u8>)> {
        self.iface_out.pop_front()
    }

    /// The name of the own-interface connection IKE tunnel `id` belongs to.
    pub(super) fn own_interface_of(&self, id: TunnelId) -> Option<String> {
        let i = self.ike(id)?.site?;
        let s = self.sites.get(i).filter(|s| s.cfg.own_interface)?;
        Some(s.cfg.peer.name.clone())
    }

    /// Anti-spoofing for own-interface connections: any source but the gateway's own address
    /// space and client pool (the kernel's reverse-path filter does the rest).
    pub(super) fn interface_may_send(&self, src: Ipv4Addr) -> bool {
        !self.cfg.client_pool.contains(&src)
            && !self.cfg.address_space.iter().any(|n| n.contains(&src))
    }
}
