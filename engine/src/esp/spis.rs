//! The gateway's inbound ESP SPIs: every SA it holds gets its own. SPIs are drawn at random
//! (RFC 4303 leaves the choice to the receiver) but a draw that another SA already owns is
//! drawn again, so ESP never reaches the wrong SA however many SAs there are.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::entropy::Entropy;

/// SPIs in use, shared by every IKE SA of one gateway (control plane only: one claim per
/// CHILD SA, never per packet).
///
/// On a gateway with several workers each worker has a view ([`shard_view`](Self::shard_view))
/// of the one set that only draws SPIs `spi % count == index`, so an ESP packet names the
/// worker holding its SA.
#[derive(Debug, Default)]
pub struct SpiTable {
    used: Arc<Mutex<HashSet<u32>>>,
    /// (index, count): draw only SPIs of this residue; count 0 or 1: any.
    shard: (u32, u32),
}

impl SpiTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the same set that draws only SPIs with `spi % count == index`.
    pub fn shard_view(&self, index: u32, count: u32) -> Self {
        Self {
            used: self.used.clone(),
            shard: (index, count),
        }
    }

    /// Draws a non-zero SPI no other SA holds and marks it used.
    pub fn claim(&self, entropy: &mut dyn Entropy) -> u32 {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut spi = draw(entropy);
            let (index, count) = self.shard;
            if count > 1 {
                spi = spi - spi % count + index;
                // Reserved 0, and SPIs 1-255 (RFC 4303 2.1: reserved by IANA).
                if spi < 256 {
                    continue;
                }
            }
            if used.insert(spi) {
                return spi;
            }
        }
    }

    /// Gives `spi` back (its SA is gone).
    /// Takes `spi` if nobody holds it (an SA handed over by the previous process keeps
    /// its SPI); false when it is taken.
    pub fn claim_exact(&self, spi: u32) -> bool {
        spi != 0
            && self
                .used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(spi)
    }

    pub fn release(&self, spi: u32) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&spi);
    }

    /// True when `spi` is held.
    pub fn contains(&self, spi: u32) -> bool {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&spi)
    }

    /// Number of SPIs held.
    pub fn len(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no SPI is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A random non-zero SPI (0 is reserved).
pub fn draw(entropy: &mut dyn Entropy) -> u32 {
    loop {
        let mut b = [0u8; 4];
        entropy.fill(&mut b);
        let spi = u32::from_be_bytes(b);
        if spi != 0 {
            return spi;
        }
    }
}

/// Our SPI for a new CHILD SA: from the gateway's table when there is one, else at random.
pub fn claim_or_draw(table: Option<&SpiTable>, entropy: &mut dyn Entropy) -> u32 {
    match table {
        Some(t) => t.claim(entropy),
        None => draw(entropy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entropy source that repeats a short cycle of SPIs, so collisions are certain.
    struct Cycle(Vec<u32>, usize);

    impl Entropy for Cycle {
        fn fill(&mut self, buf: &mut [u8]) {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            buf.copy_from_slice(&v.to_be_bytes()[..buf.len()]);
        }
    }

    #[test]
    fn a_taken_spi_is_never_handed_out_twice() {
        let t = SpiTable::new();
        let mut e = Cycle(vec![0, 7, 7, 7, 9, 7, 11], 0);
        assert_eq!(t.claim(&mut e), 7);
        assert_eq!(t.claim(&mut e), 9, "7 is taken, 0 is reserved");
        assert_eq!(t.claim(&mut e), 11);
        t.release(7);
        assert!(!t.contains(7));
        assert_eq!(t.claim(&mut e), 7);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn shard_views_draw_their_own_residue_from_one_set() {
        let t = SpiTable::new();
        let (a, b) = (t.shard_view(0, 2), t.shard_view(1, 2));
        let mut e = Cycle(vec![0x1000, 0x1001, 0x1002, 0x2001], 0);
        assert_eq!(a.claim(&mut e), 0x1000);
        assert_eq!(b.claim(&mut e), 0x1001, "0x1000 is taken by the other view");
        assert_eq!(a.claim(&mut e), 0x1002);
        assert_eq!(t.len(), 3);
    }
}
