//! Longest-prefix-match routing table (prefix -> tunnel) and anti-spoofing checks.
//!
//! A packet read from the gateway's TUN goes to the tunnel that owns its destination; a
//! packet decrypted from a tunnel may only carry a source address that tunnel owns.
//!
//! Both checks run once per packet, and a gateway with thousands of point-to-site clients
//! holds one /32 per client, so the table is built for lookups: one hash map per prefix
//! length (network address -> tunnel), probed from the longest length in use to the
//! shortest. A lookup therefore costs one hash probe per *distinct* prefix length present
//! (typically two or three: the clients' /32s, a few site prefixes, maybe a default route),
//! independent of the number of routes. A per-tunnel index makes removing a tunnel cost
//! only as much as that tunnel's own routes.

use std::collections::HashSet;

use crate::idhash::IdMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Identifier of a tunnel (session) in the engine's table.
pub type TunnelId = u64;

/// Number of IPv4 prefix lengths, /0 through /32.
const LENGTHS: usize = 33;

/// An IPv4 longest-prefix-match table.
///
/// [`lookup`](Router::lookup) and [`may_send`](Router::may_send) cost one hash probe per
/// distinct prefix length in the table; [`insert`](Router::insert) and
/// [`remove`](Router::remove) are O(1) amortised; [`remove_tunnel`](Router::remove_tunnel)
/// is proportional to the number of routes of that tunnel.
#[derive(Clone)]
pub struct Router {
    /// `by_len[l]` maps the network address (as a host-order `u32`, host bits zero) of every
    /// /l route to its tunnel.
    by_len: [IdMap<u32, TunnelId>; LENGTHS],
    /// The prefix lengths whose map is non-empty, longest first: the probe order of a lookup.
    lens: Vec<u8>,
    /// Every tunnel's routes, so that a tunnel can be removed without scanning the table.
    by_tunnel: IdMap<TunnelId, HashSet<Ipv4Net>>,
    /// Total number of routes.
    len: usize,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            by_len: std::array::from_fn(|_| IdMap::default()),
            lens: Vec::new(),
            by_tunnel: IdMap::default(),
            len: 0,
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The network mask of a /`len` prefix as a host-order `u32` (`len` <= 32).
fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// The key of `prefix` (already truncated) in its length's map.
fn key(prefix: &Ipv4Net) -> u32 {
    u32::from(prefix.network())
}

/// Rebuilds the prefix stored under `key` in the map of length `len`.
fn prefix_of(key: u32, len: u8) -> Ipv4Net {
    // `len` comes from an index below LENGTHS, so it is a valid IPv4 prefix length.
    Ipv4Net::new(Ipv4Addr::from(key), len).unwrap_or_default()
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route for `prefix` (host bits are ignored). If another tunnel
    /// owned exactly that prefix, it no longer does.
    pub fn insert(&mut self, prefix: Ipv4Net, tunnel: TunnelId) {
        let prefix = prefix.trunc();
        let len = prefix.prefix_len();
        let map = &mut self.by_len[usize::from(len)];
        let was_empty = map.is_empty();
        match map.insert(key(&prefix), tunnel) {
            Some(old) if old == tunnel => return,
            Some(old) => self.unindex(old, &prefix),
            None => self.len += 1,
        }
        self.by_tunnel.entry(tunnel).or_default().insert(prefix);
        if was_empty {
            // `lens` is sorted longest first and does not contain `len` yet.
            let pos = self.lens.partition_point(|&l| l > len);
            self.lens.insert(pos, len);
        }
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
        let prefix = prefix.trunc();
        let owner = self.by_len[usize::from(prefix.prefix_len())].get(&key(&prefix));
        if owner == Some(&tunnel) {
            self.unroute(&prefix);
            self.unindex(tunnel, &prefix);
        }
    }

    /// The tunnel owning `dst`, by longest prefix.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<TunnelId> {
        let addr = u32::from(dst);
        self.lens
            .iter()
            .find_map(|&len| self.by_len[usize::from(len)].get(&(addr & mask(len))))
            .copied()
    }

    /// Anti-spoofing: may `tunnel` send a packet with source `src`? True only when the most
    /// specific route for `src` points back at that same tunnel.
    pub fn may_send(&self, tunnel: TunnelId, src: Ipv4Addr) -> bool {
        self.lookup(src) == Some(tunnel)
    }

    /// The prefixes routed to `tunnel`, in no particular order.
    pub fn routes_of(&self, tunnel: TunnelId) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.by_tunnel.get(&tunnel).into_iter().flatten().copied()
    }

    /// Every route as `(prefix, tunnel)`, longest prefixes first; routes of the same length
    /// come in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Net, TunnelId)> + '_ {
        self.lens.iter().flat_map(move |&len| {
            self.by_len[usize::from(len)]
                .iter()
                .map(move |(&k, &t)| (prefix_of(k, len), t))
        })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the route for `prefix` (truncated) from the per-length maps, whoever owns it;
    /// leaves the per-tunnel index alone.
    fn unroute(&mut self, prefix: &Ipv4Net) {
        let len = prefix.prefix_len();
        let map = &mut self.by_len[usize::from(len)];
        if map.remove(&key(prefix)).is_some() {
            self.len -= 1;
            if map.is_empty() {
                self.lens.retain(|&l| l != len);
            }
        }
    }

    /// Drops `prefix` from `tunnel`'s entry in the per-tunnel index.
    fn unindex(&mut self, tunnel: TunnelId, prefix: &Ipv4Net) {
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
        let total: usize = r.by_len.iter().map(|m| m.len()).sum();
        assert_eq!(r.len, total, "route count");
        let mut expected_lens: Vec<u8> = (0..=32u8)
            .filter(|&l| !r.by_len[usize::from(l)].is_empty())
            .collect();
        expected_lens.reverse();
        assert_eq!(r.lens, expected_lens, "lengths in use, longest first");
        let indexed: usize = r.by_tunnel.values().map(HashSet::len).sum();
        assert_eq!(indexed, total, "per-tunnel index size");
        for (tunnel, prefixes) in &r.by_tunnel {
            assert!(!prefixes.is_empty(), "no empty per-tunnel entries");
            for p in prefixes {
                assert_eq!(
                    r.by_len[usize::from(p.prefix_len())].get(&key(p)),
                    Some(tunnel),
                    "index entry {p} -> {tunnel}"
                );
            }
        }
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
        assert_eq!(r.lens, vec![32, 12]);
        assert!(r.may_send(1234, Ipv4Addr::from(base + 1234)));
        assert!(!r.may_send(1234, Ipv4Addr::from(base + 1235)));
        assert_eq!(r.lookup(Ipv4Addr::from(base + 20_000)), Some(99_999));
        for i in 0..10_000u32 {
            r.remove_tunnel(u64::from(i));
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.lens, vec![12]);
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
