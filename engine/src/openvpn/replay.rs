//! Anti-replay window for data channel packet ids.
//!
//! Packet ids start at 1 and grow by one per packet. UDP reorders, so ids up to
//! [`REPLAY_WINDOW`] - 1 behind the highest id seen are still accepted once each; anything
//! older, any id seen before and the never-valid id 0 are rejected.
//!
//! Update the window only for packets whose authentication tag checked out, or a forged
//! packet could advance it and make genuine packets look old.

/// How many packet ids, counting back from the highest accepted one, the window tracks.
pub const REPLAY_WINDOW: u32 = 256;

/// 64-bit words in the window's bitmap ([`ReplayWindow::bitmap`]).
pub const REPLAY_WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;
const WORDS: usize = REPLAY_WINDOW_WORDS;

/// Why a packet id was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Packet ids start at 1; 0 is never sent by a conforming peer.
    #[error("packet id 0 is invalid")]
    ZeroPacketId,
    /// This id was accepted before.
    #[error("packet id {0} was already received (replay)")]
    Replayed(u32),
    /// This id is too far behind the highest one seen to be checked.
    #[error("packet id {0} is older than the replay window")]
    TooOld(u32),
}

/// Sliding bitmap of recently accepted packet ids. A plain value: clone it to export
/// session state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    /// Highest accepted id; 0 before the first packet.
    highest: u32,
    /// Bit `i` (word `i / 64`, bit `i % 64`) is set iff id `highest - i` was accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest packet id accepted so far (0 if none).
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// The bitmap of recently accepted ids, for state export: bit `i` (word `i / 64`, bit
    /// `i % 64`) is set iff id `highest() - i` was accepted.
    pub fn bitmap(&self) -> [u64; REPLAY_WINDOW_WORDS] {
        self.bits
    }

    /// Rebuilds a window from [`highest`](Self::highest) and [`bitmap`](Self::bitmap) (a
    /// restored session keeps rejecting what the exported one had accepted). `None` if the
    /// two cannot come from a real window: bits set for ids at or below 0, or a highest id
    /// whose own bit is clear.
    pub fn from_parts(highest: u32, bitmap: [u64; REPLAY_WINDOW_WORDS]) -> Option<Self> {
        let w = Self {
            highest,
            bits: bitmap,
        };
        // Ages `highest..` would be ids <= 0.
        let impossible = (highest..REPLAY_WINDOW).any(|age| w.bit(age));
        let highest_missing = highest > 0 && !w.bit(0);
        (!impossible && !highest_missing).then_some(w)
    }

    /// Checks `packet_id` without recording it.
    pub fn check(&self, packet_id: u32) -> Result<(), ReplayError> {
        if packet_id == 0 {
            return Err(ReplayError::ZeroPacketId);
        }
        if packet_id > self.highest {
            return Ok(());
        }
        let age = self.highest - packet_id;
        if age >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld(packet_id));
        }
        if self.bit(age) {
            return Err(ReplayError::Replayed(packet_id));
        }
        Ok(())
    }

    /// Checks `packet_id` and, if it is acceptable, records it.
    pub fn check_and_update(&mut self, packet_id: u32) -> Result<(), ReplayError> {
        self.check(packet_id)?;
        if packet_id > self.highest {
            self.shift(packet_id - self.highest);
            self.highest = packet_id;
            self.set(0);
        } else {
            self.set(self.highest - packet_id);
        }
        Ok(())
    }

    fn bit(&self, age: u32) -> bool {
        let age = age as usize;
        self.bits[age / 64] & (1 << (age % 64)) != 0
    }

    fn set(&mut self, age: u32) {
        let age = age as usize;
        self.bits[age / 64] |= 1 << (age % 64);
    }

    /// Ages every recorded id by `n`.
    fn shift(&mut self, n: u32) {
        if n >= REPLAY_WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let words = (n / 64) as usize;
        let bits = n % 64;
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s] << bits);
            let lo = match (bits, src.and_then(|s| s.checked_sub(1))) {
                (0, _) | (_, None) => 0,
                (_, Some(s)) => self.bits[s] >> (64 - bits),
            };
            self.bits[i] = hi | lo;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_in_order_and_rejects_replays() {
        let mut w = ReplayWindow::new();
        for id in 1..=1000 {
            w.check_and_update(id).unwrap();
            assert_eq!(w.check_and_update(id), Err(ReplayError::Replayed(id)));
        }
        assert_eq!(w.highest(), 1000);
    }

    #[test]
    fn rejects_zero() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check_and_update(0), Err(ReplayError::ZeroPacketId));
        w.check_and_update(5).unwrap();
        assert_eq!(w.check_and_update(0), Err(ReplayError::ZeroPacketId));
    }

    #[test]
    fn accepts_reordering_within_window_once() {
        let mut w = ReplayWindow::new();
        w.check_and_update(300).unwrap();
        // 300 - 255 = 45 is the oldest id still inside the window.
        for id in (45..300).rev() {
            w.check_and_update(id).unwrap();
        }
        for id in 45..=300 {
            assert_eq!(w.check_and_update(id), Err(ReplayError::Replayed(id)));
        }
        assert_eq!(w.check_and_update(44), Err(ReplayError::TooOld(44)));
        assert_eq!(w.check_and_update(1), Err(ReplayError::TooOld(1)));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::new();
        w.check(7).unwrap();
        w.check(7).unwrap();
        w.check_and_update(7).unwrap();
        assert_eq!(w.check(7), Err(ReplayError::Replayed(7)));
    }

    #[test]
    fn big_jump_forgets_everything_behind_the_window() {
        let mut w = ReplayWindow::new();
        w.check_and_update(1).unwrap();
        w.check_and_update(10_000).unwrap();
        assert_eq!(w.check_and_update(1), Err(ReplayError::TooOld(1)));
        w.check_and_update(9_999).unwrap();
        w.check_and_update(u32::MAX).unwrap();
        assert_eq!(
            w.check_and_update(u32::MAX),
            Err(ReplayError::Replayed(u32::MAX))
        );
        w.check_and_update(u32::MAX - 255).unwrap();
    }

    #[test]
    fn matches_a_reference_set_under_random_order() {
        // Compare with an obviously correct model: a set of every accepted id.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..50 {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::HashSet::new();
            let mut highest = 0u32;
            for _ in 0..3000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly near the front, sometimes far ahead, sometimes far behind.
                let spread = [8u64, 70, 300, 600][(state % 4) as usize];
                let base = i64::from(highest) + 4 - (state >> 8) as i64 % spread as i64;
                let id = base.clamp(0, i64::from(u32::MAX)) as u32;
                let expected = if id == 0 {
                    Err(ReplayError::ZeroPacketId)
                } else if highest >= REPLAY_WINDOW && id <= highest - REPLAY_WINDOW {
                    Err(ReplayError::TooOld(id))
                } else if seen.contains(&id) {
                    Err(ReplayError::Replayed(id))
                } else {
                    Ok(())
                };
                assert_eq!(w.check_and_update(id), expected, "round {round} id {id}");
                if expected.is_ok() {
                    seen.insert(id);
                    highest = highest.max(id);
                }
            }
        }
    }

    #[test]
    fn from_parts_round_trips_and_refuses_impossible_windows() {
        let mut w = ReplayWindow::new();
        for id in [3, 1, 200, 150, 199] {
            w.check_and_update(id).unwrap();
        }
        let back = ReplayWindow::from_parts(w.highest(), w.bitmap()).unwrap();
        assert_eq!(back, w);
        for id in [3, 1, 200, 150, 199] {
            assert_eq!(back.check(id), Err(ReplayError::Replayed(id)));
        }
        back.check(2).unwrap();
        back.check(201).unwrap();
        assert_eq!(
            ReplayWindow::from_parts(0, [0; REPLAY_WINDOW_WORDS]),
            Some(ReplayWindow::new())
        );
        // Highest id 5 not marked as accepted.
        assert_eq!(
            ReplayWindow::from_parts(5, [0b10; REPLAY_WINDOW_WORDS]),
            None
        );
        // Age 5 from highest 5 would be id 0.
        assert_eq!(ReplayWindow::from_parts(5, [0b10_0001, 0, 0, 0]), None);
        assert_eq!(ReplayWindow::from_parts(0, [1, 0, 0, 0]), None);
        assert!(ReplayWindow::from_parts(5, [0b1_0001, 0, 0, 0]).is_some());
        assert!(ReplayWindow::from_parts(1000, [u64::MAX; REPLAY_WINDOW_WORDS]).is_some());
    }

    #[test]
    fn shift_by_every_amount_keeps_bits_aligned() {
        for n in 1..=REPLAY_WINDOW {
            let mut w = ReplayWindow::new();
            w.check_and_update(1000).unwrap();
            w.check_and_update(1000 + n).unwrap();
            let expect_old = if n < REPLAY_WINDOW {
                Err(ReplayError::Replayed(1000))
            } else {
                Err(ReplayError::TooOld(1000))
            };
            assert_eq!(w.check(1000), expect_old, "n = {n}");
            if n > 1 && n < REPLAY_WINDOW {
                w.check(1001).unwrap();
            }
        }
    }
}
