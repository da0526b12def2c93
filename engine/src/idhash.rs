//! A fast hasher for the gateway's own integer keys: tunnel ids (sequential), peer-ids and
//! ESP SPIs (chosen by the gateway) and pool addresses. None of these keys is chosen by a
//! peer, so a keyed hash (SipHash, the std default, which resists collision attacks) buys
//! nothing there and costs a few percent of a core per gigabit on the data path. Maps keyed
//! by what peers choose (their addresses and ports) keep the std hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of integer keys (multiply by 2^64 / phi, fold the high bits down).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // HashMap takes the low bits; the product's good bits are the high ones.
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(K);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuild = BuildHasherDefault<IdHasher>;
/// A map keyed by the gateway's own integers.
pub type IdMap<K, V> = HashMap<K, V, IdBuild>;
/// A set of the gateway's own integers.
pub type IdSet<K> = HashSet<K, IdBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_over_buckets() {
        let mut m: IdMap<u64, u64> = IdMap::default();
        for i in 0..100_000u64 {
            m.insert(i, i * 2);
        }
        assert!((0..100_000u64).all(|i| m.get(&i) == Some(&(i * 2))));
        // Low bits of consecutive keys must differ, or HashMap would crowd one group.
        let low: IdSet<u64> = (0..1024u64)
            .map(|i| {
                let mut h = IdHasher::default();
                h.write_u64(i);
                h.finish() & 1023
            })
            .collect();
        assert!(
            low.len() > 600,
            "{} distinct low-bit buckets of 1024",
            low.len()
        );
    }
}
