//! Longest-prefix-match routing table (prefix -> tunnel) and anti-spoofing checks.
//!
//! A packet read from the gateway's TUN goes to the tunnel that owns its destination; a
//! packet decrypted from a tunnel may only carry a source address that tunnel owns.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Identifier of a tunnel (session) in the engine's table.
pub type TunnelId = u64;

/// An IPv4 longest-prefix-match table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Sorted by prefix length, longest first, so the first match is the best one.
    routes: Vec<(Ipv4Net, TunnelId)>,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route for `prefix`.
    pub fn insert(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
        let prefix = prefix.trunc();
        self.routes.retain(|(p, _)| *p != prefix);
        let pos = self
            .routes
            .iter()
            .position(|(p, _)| p.prefix_len() < prefix.prefix_len())
            .unwrap_or(self.routes.len());
        self.routes.insert(pos, (prefix, tunnel));
    }

    /// Removes every route that points at `tunnel`.
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) {
        self.routes.retain(|(_, t)| *t != tunnel);
    }

    /// Removes the route for exactly `prefix` if it points at `tunnel`.
    pub fn remove(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
        let prefix = prefix.trunc();
        self.routes.retain(|(p, t)| !(*p == prefix && *t == tunnel));
    }

    /// The tunnel owning `dst`, by longest prefix.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<TunnelId> {
        self.routes
            .iter()
            .find(|(p, _)| p.contains(&dst))
            .map(|(_, t)| *t)
    }

    /// Anti-spoofing: may `tunnel` send a packet with source `src`? True only when the most
    /// specific route for `src` points back at that same tunnel.
    pub fn may_send(&self, tunnel: TunnelId, src: Ipv4Addr) -> bool {
        self.lookup(src) == Some(tunnel)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = Router::new();
        r.insert(net("10.0.0.0/8"), 1);
        r.insert(net("10.1.0.0/16"), 2);
        r.insert(net("10.1.2.3/32"), 3);
        assert_eq!(r.lookup("10.9.9.9".parse().unwrap()), Some(1));
        assert_eq!(r.lookup("10.1.9.9".parse().unwrap()), Some(2));
        assert_eq!(r.lookup("10.1.2.3".parse().unwrap()), Some(3));
        assert_eq!(r.lookup("192.168.0.1".parse().unwrap()), None);
    }

    #[test]
    fn anti_spoofing_only_own_prefixes() {
        let mut r = Router::new();
        r.insert(net("172.16.201.2/32"), 7);
        r.insert(net("172.16.201.3/32"), 8);
        assert!(r.may_send(7, "172.16.201.2".parse().unwrap()));
        assert!(!r.may_send(7, "172.16.201.3".parse().unwrap()));
        assert!(!r.may_send(7, "8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn remove_tunnel_drops_its_routes() {
        let mut r = Router::new();
        r.insert(net("10.0.0.2/32"), 1);
        r.insert(net("10.0.0.3/32"), 2);
        r.remove_tunnel(1);
        assert_eq!(r.lookup("10.0.0.2".parse().unwrap()), None);
        assert_eq!(r.len(), 1);
        r.insert(net("10.0.0.3/32"), 5);
        assert_eq!(
            r.lookup("10.0.0.3".parse().unwrap()),
            Some(5),
            "replace keeps one route"
        );
        assert_eq!(r.len(), 1);
    }
}
