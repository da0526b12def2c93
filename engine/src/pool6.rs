//! The optional IPv6 client pool (`client_pool_v6`).
//!
//! A client's IPv6 address follows its IPv4 lease: the host part of its IPv4 address within
//! the IPv4 pool, placed in the IPv6 pool (172.16.201.7 in 172.16.201.0/24 -> fd00::7 in
//! fd00::/64). So the IPv6 address is as sticky per client name as the IPv4 one, the gateway
//! takes the first address of both pools, the workers' shares of the pool and the handoff
//! and standby snapshots stay as they are (an IPv6 address is recomputed from the IPv4 one),
//! and no second lease table has to be kept consistent with the first.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Why an IPv6 pool cannot go with an IPv4 pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pool6Error {
    /// The IPv6 pool has fewer addresses than the IPv4 pool.
    #[error(
        "IPv6 client pool {v6} is smaller than the IPv4 pool {v4}: give it at least {need} host bits (a /{max_len} or shorter prefix; a /64 is usual)"
    )]
    TooSmall {
        /// The IPv6 pool.
        v6: Ipv6Net,
        /// The IPv4 pool.
        v4: Ipv4Net,
        /// Host bits the IPv6 pool needs.
        need: u8,
        /// The longest prefix that has them.
        max_len: u8,
    },
    /// Multicast or link-local: not routable as a client pool.
    #[error(
        "IPv6 client pool {0} is multicast, link-local or unspecified: use a unique-local (fd00::/8) or global prefix"
    )]
    NotUnicast(Ipv6Net),
}

/// The IPv6 pool beside an IPv4 pool; addresses are derived, not leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Pool {
    v4: Ipv4Net,
    v6: Ipv6Net,
}

impl Ipv6Pool {
    /// The IPv6 pool `v6` beside the IPv4 pool `v4` (host bits of both are ignored).
    pub fn new(v4: Ipv4Net, v6: Ipv6Net) -> Result<Self, Pool6Error> {
        let (v4, v6) = (v4.trunc(), v6.trunc());
        let first = v6.network().segments()[0];
        // ff00::/8 multicast, fe80::/10 link-local, :: unspecified.
        if first >= 0xff00 || first & 0xffc0 == 0xfe80 || v6.network().is_unspecified() {
            return Err(Pool6Error::NotUnicast(v6));
        }
        let need = 32 - v4.prefix_len();
        if 128 - v6.prefix_len() < need {
            return Err(Pool6Error::TooSmall {
                v6,
                v4,
                need,
                max_len: 128 - need,
            });
        }
        Ok(Self { v4, v6 })
    }

    /// The IPv6 network.
    pub fn network(&self) -> Ipv6Net {
        self.v6
    }

    /// The gateway's own IPv6 address (the first host, like in the IPv4 pool).
    pub fn gateway_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6.network()) + 1)
    }

    /// The IPv6 address of the client holding `v4` (an address of the IPv4 pool).
    pub fn address_of(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let host = u32::from(v4).wrapping_sub(u32::from(self.v4.network())) & !mask4(&self.v4);
        Ipv6Addr::from(u128::from(self.v6.network()) | u128::from(host))
    }

    /// The IPv4 address whose client holds `v6`, when `v6` is a client address of this
    /// pool (the reverse of [`address_of`](Self::address_of)).
    pub fn v4_of(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        if !self.v6.contains(&v6) {
            return None;
        }
        let host = u128::from(v6) - u128::from(self.v6.network());
        let host = u32::try_from(host).ok()?;
        if host & mask4(&self.v4) != 0 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.v4.network()) | host))
    }
}

/// What a client gets of the IPv6 pool: pushed by OpenVPN (`ifconfig-ipv6`, `route-ipv6`),
/// assigned by IKEv2 (INTERNAL_IP6_ADDRESS and IPv6 traffic selectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Assignment {
    /// The client's IPv6 address.
    pub address: Ipv6Addr,
    /// The IPv6 pool (the on-link prefix of the tunnel).
    pub subnet: Ipv6Net,
    /// The gateway's IPv6 address in the pool.
    pub gateway: Ipv6Addr,
    /// IPv6 prefixes behind the gateway.
    pub routes: Vec<Ipv6Net>,
}

/// The network mask of an IPv4 prefix as an integer.
fn mask4(n: &Ipv4Net) -> u32 {
    u32::from(n.netmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(v4: &str, v6: &str) -> Result<Ipv6Pool, Pool6Error> {
        Ipv6Pool::new(v4.parse().unwrap(), v6.parse().unwrap())
    }

    #[test]
    fn addresses_follow_the_ipv4_lease() {
        let p = pool("172.16.201.0/24", "fd00:6a7e:1::/64").unwrap();
        assert_eq!(
            p.gateway_addr(),
            "fd00:6a7e:1::1".parse::<Ipv6Addr>().unwrap()
        );
        let a = p.address_of(Ipv4Addr::new(172, 16, 201, 7));
        assert_eq!(a, "fd00:6a7e:1::7".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.v4_of(a), Some(Ipv4Addr::new(172, 16, 201, 7)));
        // The gateway's addresses correspond too.
        assert_eq!(
            p.address_of(Ipv4Addr::new(172, 16, 201, 1)),
            p.gateway_addr()
        );
        // Outside the host range of the IPv4 pool, or outside the IPv6 pool: none.
        assert_eq!(p.v4_of("fd00:6a7e:1::1:0".parse().unwrap()), None);
        assert_eq!(p.v4_of("fd00:6a7e:2::7".parse().unwrap()), None);
        assert_eq!(p.v4_of("fd00:6a7e:1:0:1::7".parse().unwrap()), None);
    }

    #[test]
    fn a_wide_ipv4_pool_needs_a_wide_ipv6_pool() {
        assert!(pool("10.0.0.0/16", "fd00::/112").is_ok());
        let e = pool("10.0.0.0/16", "fd00::/120").unwrap_err();
        assert!(e.to_string().contains("/112"), "{e}");
        let p = pool("10.0.0.0/16", "fd00::/112").unwrap();
        let a = p.address_of(Ipv4Addr::new(10, 0, 3, 4));
        assert_eq!(a, "fd00::304".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.v4_of(a), Some(Ipv4Addr::new(10, 0, 3, 4)));
    }

    #[test]
    fn multicast_and_link_local_are_refused() {
        for bad in ["ff02::/64", "fe80::/64", "::/64"] {
            assert!(
                matches!(pool("10.0.0.0/24", bad), Err(Pool6Error::NotUnicast(_))),
                "{bad}"
            );
        }
        assert!(pool("10.0.0.0/24", "2001:db8:1::/64").is_ok());
    }
}
