//! Longest-prefix-match routing table (prefix -> tunnel) and anti-spoofing checks, for IPv4
//! and IPv6.
//!
//! A packet read from the gateway's TUN goes to the tunnel that owns its destination; a
//! packet decrypted from a tunnel may only carry a source address that tunnel owns.
//!
//! Both checks run once per packet, and a gateway with thousands of point-to-site clients
//! holds one /32 (and, with an IPv6 pool, one /128) per client, so the table is built for
//! lookups: per address family, one hash map per prefix length (network address -> tunnel),
//! probed from the longest length in use to the shortest. A lookup therefore costs one hash
//! probe per *distinct* prefix length present in its family (typically two or three: the
//! clients' host routes, a few site prefixes, maybe a default route), independent of the
//! number of routes. A per-tunnel index makes removing a tunnel cost only as much as that
//! tunnel's own routes.

use std::collections::HashSet;
use std::hash::Hash;
use std::ops::BitAnd;

use crate::idhash::IdMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Identifier of a tunnel (session) in the engine's table.
pub type TunnelId = u64;

/// An address as the unsigned integer a per-length map is keyed by.
trait Bits: Copy + Eq + Hash + BitAnd<Output = Self> {
    /// Address width: 32 or 128.
    const WIDTH: u8;
    /// The network mask of a /`len` prefix (`len` <= WIDTH).
    fn mask(len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(len: u8) -> Self {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(len: u8) -> Self {
        u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }
}

/// One family's routes: a map per prefix length, and the lengths in use.
#[derive(Clone)]
struct Table<K> {
    /// `by_len[l]` maps the network address (host bits zero) of every /l route to its
    /// tunnel.
    by_len: Vec<IdMap<K, TunnelId>>,
    /// The prefix lengths whose map is non-empty, longest first: the probe order of a lookup.
    lens: Vec<u8>,
    /// Number of routes.
    len: usize,
}

impl<K: Bits> Default for Table<K> {
    fn default() -> Self {
        Self {
            by_len: (0..=K::WIDTH).map(|_| IdMap::default()).collect(),
            lens: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Bits> Table<K> {
    /// Sets the owner of `net`/`len` (host bits already zero); returns the previous one.
    fn insert(&mut self, net: K, len: u8, tunnel: TunnelId) -> Option<TunnelId> {
        let map = &mut self.by_len[usize::from(len)];
        let was_empty = map.is_empty();
        let old = map.insert(net, tunnel);
        if old.is_none() {
            self.len += 1;
        }
        if was_empty {
            // `lens` is sorted longest first and does not contain `len` yet.
            let pos = self.lens.partition_point(|&l| l > len);
            self.lens.insert(pos, len);
        }
        old
    }

    fn get(&self, net: K, len: u8) -> Option<TunnelId> {
        self.by_len[usize::from(len)].get(&net).copied()
    }

    /// Drops the route for `net`/`len`, whoever owns it.
    fn remove(&mut self, net: K, len: u8) {
        let map = &mut self.by_len[usize::from(len)];
        if map.remove(&net).is_some() {
            self.len -= 1;
            if map.is_empty() {
                self.lens.retain(|&l| l != len);
            }
        }
    }

    fn lookup(&self, addr: K) -> Option<TunnelId> {
        self.lens
            .iter()
            .find_map(|&len| self.by_len[usize::from(len)].get(&(addr & K::mask(len))))
            .copied()
    }

    /// Every route as (network, length, tunnel), longest first.
    fn iter(&self) -> impl Iterator<Item = (K, u8, TunnelId)> + '_ {
        self.lens.iter().flat_map(move |&len| {
            self.by_len[usize::from(len)]
                .iter()
                .map(move |(&k, &t)| (k, len, t))
        })
    }
}

/// A longest-prefix-match table over IPv4 and IPv6 prefixes.
///
/// [`lookup`](Router::lookup) and [`may_send`](Router::may_send) (and their IPv6 twins) cost
/// one hash probe per distinct prefix length of that family in the table;
/// [`insert`](Router::insert) and [`remove`](Router::remove) are O(1) amortised;
/// [`remove_tunnel`](Router::remove_tunnel) is proportional to the number of routes of that
/// tunnel.
#[derive(Clone, Default)]
pub struct Router {
    v4: Table<u32>,
    v6: Table<u128>,
    /// Every tunnel's routes, so that a tunnel can be removed without scanning the table.
    by_tunnel: IdMap<TunnelId, HashSet<IpNet>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter())
            .entries(self.iter_v6())
            .finish()
    }
}

/// Rebuilds an IPv4 prefix from its key and length (valid by construction).
fn v4_net(key: u32, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(key), len).unwrap_or_default()
}

/// Rebuilds an IPv6 prefix from its key and length (valid by construction).
fn v6_net(key: u128, len: u8) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::from(key), len).unwrap_or_default()
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route for `prefix` (host bits are ignored). If another tunnel
    /// owned exactly that prefix, it no longer does.
    pub fn insert(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
        let p = prefix.trunc();
        let old = self
            .v4
            .insert(u32::from(p.network()), p.prefix_len(), tunnel);
        self.index(IpNet::V4(p), old, tunnel);
    }

    /// [`insert`](Self::insert) for an IPv6 prefix.
    pub fn insert_v6(&mut self, prefix: Ipv6Net, tunnel: TunnelId) {
        let p = prefix.trunc();
        let old = self
            .v6
            .insert(u128::from(p.network()), p.prefix_len(), tunnel);
        self.index(IpNet::V6(p), old, tunnel);
    }

    /// [`insert`](Self::insert) for a prefix of either family.
    pub fn insert_net(&mut self, prefix: IpNet, tunnel: TunnelId) {
        match prefix {
            IpNet::V4(p) => self.insert(p, tunnel),
            IpNet::V6(p) => self.insert_v6(p, tunnel),
        }
    }

    /// [`remove`](Self::remove) for a prefix of either family.
    pub fn remove_net(&mut self, prefix: IpNet, tunnel: TunnelId) {
        match prefix {
            IpNet::V4(p) => self.remove(p, tunnel),
            IpNet::V6(p) => self.remove_v6(p, tunnel),
        }
    }

    fn index(&mut self, prefix: IpNet, old: Option<TunnelId>, tunnel: TunnelId) {
        match old {
            Some(o) if o == tunnel => return,
            Some(o) => self.unindex(o, &prefix),
            None => {}
        }
        self.by_tunnel.entry(tunnel).or_default().insert(prefix);
    }

    /// Removes every route that points at `tunnel`.
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) {
        let Some(prefixes) = self.by_tunnel.remove(&tunnel) else {
            return;
        };
        for prefix in prefixes {
            self.unroute(&prefix);
        }
    }

    /// Removes the route for exactly `prefix` (host bits are ignored) if it points at
    /// `tunnel`; otherwise does nothing.
    pub fn remove(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
        let p = prefix.trunc();
        if self.v4.get(u32::from(p.network()), p.prefix_len()) == Some(tunnel) {
            self.unroute(&IpNet::V4(p));
            self.unindex(tunnel, &IpNet::V4(p));
        }
    }

    /// [`remove`](Self::remove) for an IPv6 prefix.
    pub fn remove_v6(&mut self, prefix: Ipv6Net, tunnel: TunnelId) {
        let p = prefix.trunc();
        if self.v6.get(u128::from(p.network()), p.prefix_len()) == Some(tunnel) {
            self.unroute(&IpNet::V6(p));
            self.unindex(tunnel, &IpNet::V6(p));
        }
    }

    /// The tunnel owning `dst`, by longest prefix.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<TunnelId> {
        self.v4.lookup(u32::from(dst))
    }

    /// The tunnel owning IPv6 `dst`, by longest prefix.
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<TunnelId> {
        self.v6.lookup(u128::from(dst))
    }

    /// The tunnel owning `dst` of either family.
    pub fn lookup_ip(&self, dst: IpAddr) -> Option<TunnelId> {
        match dst {
            IpAddr::V4(a) => self.lookup(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// Anti-spoofing: may `tunnel` send a packet with source `src`? True only when the most
    /// specific route for `src` points back at that same tunnel.
    pub fn may_send(&self, tunnel: TunnelId, src: Ipv4Addr) -> bool {
        self.lookup(src) == Some(tunnel)
    }

    /// [`may_send`](Self::may_send) for a source of either family.
    pub fn may_send_ip(&self, tunnel: TunnelId, src: IpAddr) -> bool {
        self.lookup_ip(src) == Some(tunnel)
    }

    /// The IPv4 prefixes routed to `tunnel`, in no particular order.
    pub fn routes_of(&self, tunnel: TunnelId) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.by_tunnel
            .get(&tunnel)
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            })
    }

    /// The IPv6 prefixes routed to `tunnel`, in no particular order.
    pub fn routes_v6_of(&self, tunnel: TunnelId) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.by_tunnel
            .get(&tunnel)
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                IpNet::V6(n) => Some(*n),
                IpNet::V4(_) => None,
            })
    }

    /// Every IPv4 route as `(prefix, tunnel)`, longest prefixes first; routes of the same
    /// length come in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Net, TunnelId)> + '_ {
        self.v4.iter().map(|(k, l, t)| (v4_net(k, l), t))
    }

    /// Every IPv6 route, as [`iter`](Self::iter).
    pub fn iter_v6(&self) -> impl Iterator<Item = (Ipv6Net, TunnelId)> + '_ {
        self.v6.iter().map(|(k, l, t)| (v6_net(k, l), t))
    }

    /// Number of routes (both families).
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the route for `prefix` (truncated) from the per-length maps, whoever owns it;
    /// leaves the per-tunnel index alone.
    fn unroute(&mut self, prefix: &IpNet) {
        match prefix {
            IpNet::V4(p) => self.v4.remove(u32::from(p.network()), p.prefix_len()),
            IpNet::V6(p) => self.v6.remove(u128::from(p.network()), p.prefix_len()),
        }
    }

    /// Drops `prefix` from `tunnel`'s entry in the per-tunnel index.
    fn unindex(&mut self, tunnel: TunnelId, prefix: &IpNet) {
        if let Some(set) = self.by_tunnel.get_mut(&tunnel) {
            set.remove(prefix);
            if set.is_empty() {
                self.by_tunnel.remove(&tunnel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Checks the internal indexes against each other.
    fn check_invariants(r: &Router) {
        let total4: usize = r.v4.by_len.iter().map(|m| m.len()).sum();
        let total6: usize = r.v6.by_len.iter().map(|m| m.len()).sum();
        assert_eq!(r.v4.len, total4, "v4 route count");
        assert_eq!(r.v6.len, total6, "v6 route count");
        let mut expected_lens: Vec<u8> = (0..=32u8)
            .filter(|&l| !r.v4.by_len[usize::from(l)].is_empty())
            .collect();
        expected_lens.reverse();
        assert_eq!(r.v4.lens, expected_lens, "lengths in use, longest first");
        let mut expected_lens6: Vec<u8> = (0..=128u8)
            .filter(|&l| !r.v6.by_len[usize::from(l)].is_empty())
            .collect();
        expected_lens6.reverse();
        assert_eq!(
            r.v6.lens, expected_lens6,
            "v6 lengths in use, longest first"
        );
        let indexed: usize = r.by_tunnel.values().map(HashSet::len).sum();
        assert_eq!(indexed, total4 + total6, "per-tunnel index size");
        for (tunnel, prefixes) in &r.by_tunnel {
            assert!(!prefixes.is_empty(), "no empty per-tunnel entries");
            for p in prefixes {
                let owner = match p {
                    IpNet::V4(n) => r.v4.get(u32::from(n.network()), n.prefix_len()),
                    IpNet::V6(n) => r.v6.get(u128::from(n.network()), n.prefix_len()),
                };
                assert_eq!(owner, Some(*tunnel), "index entry {p} -> {tunnel}");
            }
        }
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_longest_prefix_wins() {
        let mut r = Router::new();
        r.insert_v6(net6("fd00::/8"), 1);
        r.insert_v6(net6("fd00:6a7e:1::/64"), 2);
        r.insert_v6(net6("fd00:6a7e:1::2/128"), 3);
        r.insert_v6(net6("::/0"), 4);
        assert_eq!(r.lookup_v6(ip6("fd99::1")), Some(1));
        assert_eq!(r.lookup_v6(ip6("fd00:6a7e:1::99")), Some(2));
        assert_eq!(r.lookup_v6(ip6("fd00:6a7e:1::2")), Some(3));
        assert_eq!(r.lookup_v6(ip6("2001:db8::1")), Some(4));
        assert_eq!(r.v6.lens, vec![128, 64, 8, 0]);
        assert!(
            r.v4.lens.is_empty(),
            "IPv6 routes leave the IPv4 table alone"
        );
        check_invariants(&r);
    }

    #[test]
    fn anti_spoofing_per_family() {
        let mut r = Router::new();
        r.insert(net("172.16.201.2/32"), 7);
        r.insert_v6(net6("fd00:6a7e:1::2/128"), 7);
        r.insert(net("172.16.201.3/32"), 8);
        r.insert_v6(net6("fd00:6a7e:1::3/128"), 8);
        assert!(r.may_send_ip(7, "172.16.201.2".parse().unwrap()));
        assert!(r.may_send_ip(7, "fd00:6a7e:1::2".parse().unwrap()));
        assert!(!r.may_send_ip(7, "fd00:6a7e:1::3".parse().unwrap()));
        assert!(!r.may_send_ip(7, "fe80::1".parse().unwrap()));
        // An IPv4-mapped IPv6 source is not the IPv4 address.
        assert!(!r.may_send_ip(7, "::ffff:172.16.201.2".parse().unwrap()));
        let mut mine: Vec<_> = r.routes_v6_of(7).collect();
        mine.sort();
        assert_eq!(mine, vec![net6("fd00:6a7e:1::2/128")]);
        assert_eq!(r.routes_of(7).count(), 1);
        r.remove_tunnel(7);
        assert!(!r.may_send_ip(7, "fd00:6a7e:1::2".parse().unwrap()));
        assert_eq!(r.len(), 2);
        r.remove_v6(net6("fd00:6a7e:1::3/128"), 7);
        assert_eq!(r.len(), 2, "removal by the wrong owner is a no-op");
        r.remove_v6(net6("fd00:6a7e:1::3/128"), 8);
        assert_eq!(r.len(), 1);
        assert_eq!(r.iter_v6().count(), 0);
        check_invariants(&r);
    }

    #[test]
    fn ipv6_randomized_against_linear_scan() {
        let mut rng = StdRng::seed_from_u64(0x6a7e_0006);
        let mut r = Router::new();
        let mut reference: Vec<(Ipv6Net, TunnelId)> = Vec::new();
        let addr = |rng: &mut StdRng| {
            let base: u128 = 0xfd00_6a7e_0001_0000 << 64;
            Ipv6Addr::from(
                base | u128::from(rng.random_range(0..64u32)) << 60 | rng.random_range(0..16),
            )
        };
        const LENS: [u8; 7] = [0, 48, 64, 66, 124, 127, 128];
        for step in 0..4_000 {
            let tunnel = rng.random_range(0..10u64);
            let a = addr(&mut rng);
            match rng.random_range(0..10) {
                0..4 => {
                    let p = Ipv6Net::new(a, LENS[rng.random_range(0..LENS.len())])
                        .unwrap()
                        .trunc();
                    r.insert_v6(p, tunnel);
                    reference.retain(|(q, _)| *q != p);
                    reference.push((p, tunnel));
                }
                4..6 => {
                    r.remove_tunnel(tunnel);
                    reference.retain(|(_, t)| *t != tunnel);
                }
                _ => {
                    let want = reference
                        .iter()
                        .filter(|(p, _)| p.contains(&a))
                        .max_by_key(|(p, _)| p.prefix_len())
                        .map(|(_, t)| *t);
                    assert_eq!(r.lookup_v6(a), want, "step {step}: lookup {a}");
                }
            }
            assert_eq!(r.len(), reference.len(), "step {step}");
        }
        check_invariants(&r);
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = Router::new();
        r.insert(net("10.0.0.0/8"), 1);
        r.insert(net("10.1.0.0/16"), 2);
        r.insert(net("10.1.2.3/32"), 3);
        assert_eq!(r.lookup(ip("10.9.9.9")), Some(1));
        assert_eq!(r.lookup(ip("10.1.9.9")), Some(2));
        assert_eq!(r.lookup(ip("10.1.2.3")), Some(3));
        assert_eq!(r.lookup(ip("192.168.0.1")), None);
    }

    #[test]
    fn anti_spoofing_only_own_prefixes() {
        let mut r = Router::new();
        r.insert(net("172.16.201.2/32"), 7);
        r.insert(net("172.16.201.3/32"), 8);
        assert!(r.may_send(7, ip("172.16.201.2")));
        assert!(!r.may_send(7, ip("172.16.201.3")));
        assert!(!r.may_send(7, ip("8.8.8.8")));
    }

    #[test]
    fn remove_tunnel_drops_its_routes() {
        let mut r = Router::new();
        r.insert(net("10.0.0.2/32"), 1);
        r.insert(net("10.0.0.3/32"), 2);
        r.remove_tunnel(1);
        assert_eq!(r.lookup(ip("10.0.0.2")), None);
        assert_eq!(r.len(), 1);
        r.insert(net("10.0.0.3/32"), 5);
        assert_eq!(r.lookup(ip("10.0.0.3")), Some(5), "replace keeps one route");
        assert_eq!(r.len(), 1);
        check_invariants(&r);
    }

    #[test]
    fn default_route_catches_everything_else() {
        let mut r = Router::new();
        r.insert(net("0.0.0.0/0"), 9);
        r.insert(net("10.0.0.0/8"), 1);
        assert_eq!(r.lookup(ip("10.2.3.4")), Some(1));
        assert_eq!(r.lookup(ip("8.8.8.8")), Some(9));
        assert_eq!(r.lookup(ip("0.0.0.0")), Some(9));
        assert_eq!(r.lookup(ip("255.255.255.255")), Some(9));
        // Host bits of a /0 are ignored.
        r.insert(net("1.2.3.4/0"), 4);
        assert_eq!(r.len(), 2, "1.2.3.4/0 is the same prefix as 0.0.0.0/0");
        assert_eq!(r.lookup(ip("8.8.8.8")), Some(4));
        assert_eq!(r.routes_of(9).count(), 0);
        r.remove(net("0.0.0.0/0"), 4);
        assert_eq!(r.lookup(ip("8.8.8.8")), None);
        assert_eq!(r.lookup(ip("10.2.3.4")), Some(1));
        check_invariants(&r);
    }

    #[test]
    fn host_routes_match_only_their_address() {
        let mut r = Router::new();
        r.insert(net("255.255.255.255/32"), 1);
        r.insert(net("0.0.0.0/32"), 2);
        r.insert(net("10.0.0.1/32"), 3);
        assert_eq!(r.lookup(ip("255.255.255.255")), Some(1));
        assert_eq!(r.lookup(ip("255.255.255.254")), None);
        assert_eq!(r.lookup(ip("0.0.0.0")), Some(2));
        assert_eq!(r.lookup(ip("0.0.0.1")), None);
        assert_eq!(r.lookup(ip("10.0.0.1")), Some(3));
        assert_eq!(r.lookup(ip("10.0.0.0")), None);
        assert_eq!(r.len(), 3);
        check_invariants(&r);
    }

    #[test]
    fn replacing_a_prefix_moves_it_to_the_new_tunnel() {
        let mut r = Router::new();
        r.insert(net("10.1.0.0/16"), 1);
        r.insert(net("10.2.0.0/16"), 1);
        r.insert(net("10.1.0.0/16"), 2);
        assert_eq!(r.len(), 2);
        assert_eq!(r.lookup(ip("10.1.5.5")), Some(2));
        assert_eq!(r.routes_of(1).collect::<Vec<_>>(), vec![net("10.2.0.0/16")]);
        assert_eq!(r.routes_of(2).collect::<Vec<_>>(), vec![net("10.1.0.0/16")]);
        // The previous owner's removal must not take the route from the new owner.
        r.remove_tunnel(1);
        assert_eq!(r.lookup(ip("10.1.5.5")), Some(2));
        assert_eq!(r.lookup(ip("10.2.5.5")), None);
        assert_eq!(r.len(), 1);
        // Re-inserting the same route for the same tunnel is a no-op.
        r.insert(net("10.1.0.0/16"), 2);
        assert_eq!(r.len(), 1);
        check_invariants(&r);
    }

    #[test]
    fn remove_by_wrong_owner_is_a_no_op() {
        let mut r = Router::new();
        r.insert(net("10.0.0.0/24"), 1);
        r.remove(net("10.0.0.0/24"), 2);
        assert_eq!(r.lookup(ip("10.0.0.7")), Some(1));
        assert_eq!(r.len(), 1);
        // A different length of the same network is a different prefix.
        r.remove(net("10.0.0.0/25"), 1);
        assert_eq!(r.len(), 1);
        r.remove_tunnel(2);
        assert_eq!(r.len(), 1);
        // Host bits are ignored on removal too.
        r.remove(net("10.0.0.99/24"), 1);
        assert!(r.is_empty());
        assert_eq!(r.lookup(ip("10.0.0.7")), None);
        check_invariants(&r);
    }

    #[test]
    fn iter_and_routes_of_list_the_table() {
        let mut r = Router::new();
        r.insert(net("10.0.0.0/8"), 1);
        r.insert(net("10.1.2.3/32"), 2);
        r.insert(net("192.168.0.0/16"), 1);
        let mut all: Vec<_> = r.iter().collect();
        assert_eq!(all[0], (net("10.1.2.3/32"), 2), "longest first");
        all.sort();
        assert_eq!(
            all,
            vec![
                (net("10.0.0.0/8"), 1),
                (net("10.1.2.3/32"), 2),
                (net("192.168.0.0/16"), 1)
            ]
        );
        let mut ones: Vec<_> = r.routes_of(1).collect();
        ones.sort();
        assert_eq!(ones, vec![net("10.0.0.0/8"), net("192.168.0.0/16")]);
        assert_eq!(r.routes_of(3).count(), 0);
        assert!(format!("{r:?}").contains("10.1.2.3/32"));
    }

    #[test]
    fn ten_thousand_clients() {
        let mut r = Router::new();
        let base = u32::from(ip("172.16.0.0"));
        for i in 0..10_000u32 {
            r.insert(
                Ipv4Net::new(Ipv4Addr::from(base + i), 32).unwrap(),
                u64::from(i),
            );
        }
        r.insert(net("172.16.0.0/12"), 99_999);
        assert_eq!(r.len(), 10_001);
        assert_eq!(r.v4.lens, vec![32, 12]);
        assert!(r.may_send(1234, Ipv4Addr::from(base + 1234)));
        assert!(!r.may_send(1234, Ipv4Addr::from(base + 1235)));
        assert_eq!(r.lookup(Ipv4Addr::from(base + 20_000)), Some(99_999));
        for i in 0..10_000u32 {
            r.remove_tunnel(u64::from(i));
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.v4.lens, vec![12]);
        check_invariants(&r);
    }

    /// The old implementation: a plain list, scanned in full.
    #[derive(Default)]
    struct Reference(Vec<(Ipv4Net, TunnelId)>);

    impl Reference {
        fn insert(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
            let prefix = prefix.trunc();
            self.0.retain(|(p, _)| *p != prefix);
            self.0.push((prefix, tunnel));
        }
        fn remove(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
            let prefix = prefix.trunc();
            self.0.retain(|(p, t)| !(*p == prefix && *t == tunnel));
        }
        fn remove_tunnel(&mut self, tunnel: TunnelId) {
            self.0.retain(|(_, t)| *t != tunnel);
        }
        fn lookup(&self, dst: Ipv4Addr) -> Option<TunnelId> {
            self.0
                .iter()
                .filter(|(p, _)| p.contains(&dst))
                .max_by_key(|(p, _)| p.prefix_len())
                .map(|(_, t)| *t)
        }
    }

    /// A random address drawn mostly from a small space, so that prefixes overlap and
    /// lookups hit; sometimes from anywhere.
    fn random_addr(rng: &mut StdRng) -> Ipv4Addr {
        if rng.random_bool(0.9) {
            Ipv4Addr::new(
                10,
                rng.random_range(0..4),
                rng.random_range(0..4),
                rng.random(),
            )
        } else {
            Ipv4Addr::from(rng.random::<u32>())
        }
    }

    fn random_prefix(rng: &mut StdRng) -> Ipv4Net {
        const LENS: [u8; 10] = [0, 8, 14, 16, 22, 24, 28, 30, 31, 32];
        let len = LENS[rng.random_range(0..LENS.len())];
        Ipv4Net::new(random_addr(rng), len).unwrap()
    }

    #[test]
    fn randomized_against_linear_scan() {
        let mut rng = StdRng::seed_from_u64(0x6a7e_4005e);
        for round in 0..4 {
            let mut r = Router::new();
            let mut reference = Reference::default();
            for step in 0..5_000 {
                let tunnel = rng.random_range(0..20u64);
                match rng.random_range(0..100) {
                    0..45 => {
                        let p = random_prefix(&mut rng);
                        r.insert(p, tunnel);
                        reference.insert(p, tunnel);
                    }
                    45..75 => {
                        // Remove a route that exists (possibly naming the wrong owner) or a
                        // random one.
                        let p = if !reference.0.is_empty() && rng.random_bool(0.7) {
                            reference.0[rng.random_range(0..reference.0.len())].0
                        } else {
                            random_prefix(&mut rng)
                        };
                        r.remove(p, tunnel);
                        reference.remove(p, tunnel);
                    }
                    75..78 => {
                        r.remove_tunnel(tunnel);
                        reference.remove_tunnel(tunnel);
                    }
                    _ => {
                        let a = random_addr(&mut rng);
                        assert_eq!(
                            r.lookup(a),
                            reference.lookup(a),
                            "round {round} step {step}: lookup {a}"
                        );
                        assert_eq!(r.may_send(tunnel, a), reference.lookup(a) == Some(tunnel));
                    }
                }
                assert_eq!(r.len(), reference.0.len(), "round {round} step {step}");
                if step % 250 == 0 {
                    check_invariants(&r);
                    let mut ours: Vec<_> = r.iter().collect();
                    let mut theirs = reference.0.clone();
                    ours.sort();
                    theirs.sort();
                    assert_eq!(ours, theirs, "round {round} step {step}: iter");
                    for t in 0..20 {
                        let mut ours: Vec<_> = r.routes_of(t).collect();
                        let mut theirs: Vec<_> = reference
                            .0
                            .iter()
                            .filter(|(_, o)| *o == t)
                            .map(|(p, _)| *p)
                            .collect();
                        ours.sort();
                        theirs.sort();
                        assert_eq!(ours, theirs, "round {round} step {step}: routes_of({t})");
                    }
                }
            }
            check_invariants(&r);
            let clone = r.clone();
            for _ in 0..1_000 {
                let a = random_addr(&mut rng);
                assert_eq!(clone.lookup(a), reference.lookup(a));
            }
        }
    }
}
