//! Virtual address pool for point-to-site clients.
//!
//! The first usable address of the pool is the gateway's own tunnel address; clients get the
//! others. A client name keeps "its" address across reconnects while nobody else holds it, so
//! a remote worker sees the same virtual IP day after day.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why an address could not be leased.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every address in the pool is leased.
    #[error("client address pool {0} is exhausted; widen `client_pool` in gateway.toml")]
    Exhausted(Ipv4Net),
    /// The pool is too small to hold the gateway address and at least one client.
    #[error(
        "client pool {0} is too small: it needs room for the gateway and one client (/30 or larger)"
    )]
    TooSmall(Ipv4Net),
}

/// An IPv4 pool with sticky leases keyed by client name.
#[derive(Debug, Clone)]
pub struct AddressPool {
    net: Ipv4Net,
    gateway: Ipv4Addr,
    /// address -> client name currently holding it
    leased: HashMap<Ipv4Addr, String>,
    /// client name -> the address it had last (kept after release so it can come back)
    sticky: HashMap<String, Ipv4Addr>,
    /// The same claims by address (at most one client claims an address), so a lease looks
    /// claims up instead of scanning them: admission stays cheap with 10,000 clients.
    claimed: HashMap<Ipv4Addr, String>,
    next_hint: u32,
}

impl AddressPool {
    /// A pool over `net`; the first host address is reserved for the gateway.
    pub fn new(net: Ipv4Net) -> Result<Self, PoolError> {
        let net = net.trunc();
        if net.prefix_len() > 30 {
            return Err(PoolError::TooSmall(net));
        }
        let gateway = Ipv4Addr::from(u32::from(net.network()) + 1);
        Ok(Self {
            net,
            gateway,
            leased: HashMap::new(),
            sticky: HashMap::new(),
            claimed: HashMap::new(),
            next_hint: 0,
        })
    }

    /// The pool's network.
    pub fn network(&self) -> Ipv4Net {
        self.net
    }

    /// The gateway's own address inside the pool (first host address).
    pub fn gateway_addr(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Number of client addresses currently leased.
    pub fn leased_count(&self) -> usize {
        self.leased.len()
    }

    /// The client holding `addr`, if any.
    pub fn holder(&self, addr: Ipv4Addr) -> Option<&str> {
        self.leased.get(&addr).map(String::as_str)
    }

    /// Leases an address to `client`. A client that already holds an address gets the same one
    /// back (a reconnect replaces the old session); a client that held one before gets it again
    /// if it is free.
    pub fn lease(&mut self, client: &str) -> Result<Ipv4Addr, PoolError> {
        self.lease_where(client, |_| true)
    }

    /// [`lease`](Self::lease), choosing only among addresses `allowed` accepts (a worker of a
    /// gateway with several leases the addresses that route to it).
    pub fn lease_where(
        &mut self,
        client: &str,
        allowed: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError> {
        if let Some(&addr) = self.sticky.get(client).filter(|a| allowed(**a)) {
            match self.leased.get(&addr) {
                Some(holder) if holder == client => return Ok(addr),
                None => {
                    self.leased.insert(addr, client.to_owned());
                    return Ok(addr);
                }
                Some(_) => {}
            }
        }
        let first = u32::from(self.net.network()) + 2;
        let last = u32::from(self.net.broadcast()) - 1;
        let size = last - first + 1;
        // Prefer addresses nobody has a sticky claim on, then fall back to any free one.
        for pass in 0..2 {
            for i in 0..size {
                let offset = (self.next_hint + i) % size;
                let addr = Ipv4Addr::from(first + offset);
                if self.leased.contains_key(&addr) || !allowed(addr) {
                    continue;
                }
                if pass == 0 && self.claimed.contains_key(&addr) {
                    continue;
                }
                self.next_hint = (offset + 1) % size;
                self.leased.insert(addr, client.to_owned());
                if let Some(old) = self.sticky.insert(client.to_owned(), addr)
                    && old != addr
                {
                    self.claimed.remove(&old);
                }
                // The address's previous claimant loses its claim.
                if let Some(prev) = self.claimed.insert(addr, client.to_owned())
                    && prev != client
                {
                    self.sticky.remove(&prev);
                }
                return Ok(addr);
            }
        }
        Err(PoolError::Exhausted(self.net))
    }

    /// The address `client` had last, if any.
    pub fn sticky_of(&self, client: &str) -> Option<Ipv4Addr> {
        self.sticky.get(client).copied()
    }

    /// Returns `addr` to the pool if `client` holds it. The sticky claim stays.
    pub fn release(&mut self, client: &str, addr: Ipv4Addr) {
        if self.leased.get(&addr).is_some_and(|h| h == client) {
            self.leased.remove(&addr);
        }
    }

    /// Holds `addr` for `holder` until [`release`](Self::release)d: a WireGuard client's
    /// address, fixed in its identity, that no other client may lease. Fails when the
    /// address is outside the pool, the gateway's, or held by someone else.
    pub fn reserve(&mut self, holder: &str, addr: Ipv4Addr) -> Result<(), String> {
        let host = self.net.contains(&addr)
            && addr != self.net.network()
            && addr != self.net.broadcast()
            && addr != self.gateway;
        if !host {
            return Err(format!(
                "{addr} is not a client address of the pool {}",
                self.net
            ));
        }
        match self.leased.get(&addr) {
            Some(h) if h != holder => Err(format!("{addr} is leased to {h}")),
            _ => {
                self.leased.insert(addr, holder.to_owned());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> AddressPool {
        AddressPool::new(cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn a_reserved_address_is_never_leased_to_others() {
        let mut p = pool("10.9.0.0/29");
        let a = Ipv4Addr::new(10, 9, 0, 2);
        p.reserve("wg:phone", a).unwrap();
        assert!(p.reserve("other", a).is_err());
        assert!(p.reserve("x", Ipv4Addr::new(10, 9, 0, 1)).is_err());
        for n in ["a", "b", "c", "d"] {
            assert_ne!(p.lease(n).unwrap(), a);
        }
        p.release("wg:phone", a);
        assert_eq!(p.lease("e").unwrap(), a);
    }

    #[test]
    fn gateway_takes_first_host_and_clients_follow() {
        let mut p = pool("172.16.201.0/24");
        assert_eq!(p.gateway_addr(), Ipv4Addr::new(172, 16, 201, 1));
        assert_eq!(p.lease("alice").unwrap(), Ipv4Addr::new(172, 16, 201, 2));
        assert_eq!(p.lease("bob").unwrap(), Ipv4Addr::new(172, 16, 201, 3));
    }

    #[test]
    fn same_client_gets_same_address_back() {
        let mut p = pool("10.0.0.0/24");
        let a = p.lease("alice").unwrap();
        let b = p.lease("bob").unwrap();
        p.release("alice", a);
        p.lease("carol").unwrap();
        assert_eq!(p.lease("alice").unwrap(), a);
        assert_eq!(
            p.lease("alice").unwrap(),
            a,
            "second login keeps the address"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn exhaustion_is_an_error_and_release_frees() {
        let mut p = pool("10.0.0.0/30");
        let a = p.lease("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        assert!(matches!(p.lease("b"), Err(PoolError::Exhausted(_))));
        p.release("a", a);
        assert_eq!(p.lease("b").unwrap(), a);
        assert_eq!(p.holder(a), Some("b"));
    }

    #[test]
    fn release_by_other_client_is_ignored() {
        let mut p = pool("10.0.0.0/29");
        let a = p.lease("a").unwrap();
        p.release("mallory", a);
        assert_eq!(p.holder(a), Some("a"));
    }

    #[test]
    fn too_small_pool_rejected() {
        assert!(AddressPool::new("10.0.0.0/31".parse().unwrap()).is_err());
    }

    #[test]
    fn claims_by_address_mirror_claims_by_client_through_churn() {
        // A /26: 61 addresses for 200 clients coming and going, so addresses change hands.
        let mut p = pool("10.9.0.0/26");
        let mut held: Vec<(String, Ipv4Addr)> = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let name = format!("c{}", (x >> 33) % 200);
            if (x >> 20).is_multiple_of(3) && !held.is_empty() {
                let (n, a) = held.remove(((x >> 40) as usize) % held.len());
                p.release(&n, a);
            } else if !held.iter().any(|(n, _)| *n == name)
                && let Ok(a) = p.lease(&name)
            {
                assert_eq!(p.holder(a), Some(name.as_str()));
                held.push((name, a));
            }
            assert_eq!(p.sticky.len(), p.claimed.len());
            for (client, addr) in &p.sticky {
                assert_eq!(p.claimed.get(addr), Some(client));
            }
        }
        // A returning client gets its address back when nobody took it since.
        let (n, a) = held.pop().unwrap();
        p.release(&n, a);
        assert_eq!(p.lease(&n).unwrap(), a);
    }
}
