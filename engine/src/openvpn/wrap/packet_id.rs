//! The long-form packet id of wrapped control packets (`packet id (4) | time (4)`) and its
//! replay window, with OpenVPN 2.6's rules (`packet_id.c`): id 0 is never valid; within one
//! time value ids may arrive out of order inside a window; a later time starts a new
//! sequence; an earlier time is a replay.

/// Size of the replay window (OpenVPN's default `replay-window 64`).
const WINDOW: u32 = 64;

/// Sender side: the next (id, time) pair.
#[derive(Debug, Clone)]
pub(crate) struct PacketIdSend {
    id: u32,
    time: u32,
}

impl PacketIdSend {
    /// Ids start after `first_minus_one` (0 normally; tls-crypt-v2 clients start at
    /// `0x0f000000` to announce early negotiation).
    pub fn new(first_minus_one: u32, time: u32) -> Self {
        Self {
            id: first_minus_one,
            time,
        }
    }

    /// The last id used and the time (a handoff to another process).
    pub fn parts(&self) -> (u32, u32) {
        (self.id, self.time)
    }

    /// Changes the time sent from now on.
    pub fn set_time(&mut self, time: u32) {
        self.time = time;
    }

    /// The next id and the time, or None once the ids are used up (the session must end).
    pub fn next(&mut self) -> Option<(u32, u32)> {
        self.id = self.id.checked_add(1)?;
        Some((self.id, self.time))
    }
}

/// Receiver side: which (id, time) pairs were seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    /// None until the first authenticated packet.
    time: Option<u32>,
    highest: u32,
    /// Bit n set = id `highest - n` seen.
    seen: u64,
}

impl ReplayWindow {
    /// (time, highest, seen) (a handoff to another process).
    pub fn parts(&self) -> (Option<u32>, u32, u64) {
        (self.time, self.highest, self.seen)
    }

    /// The inverse of [`parts`](Self::parts).
    pub fn from_parts((time, highest, seen): (Option<u32>, u32, u64)) -> Self {
        Self {
            time,
            highest,
            seen,
        }
    }

    /// True if (id, time) was not seen and is not too old. Does not record it.
    pub fn check(&self, id: u32, time: u32) -> bool {
        if id == 0 {
            return false;
        }
        let Some(t) = self.time else {
            return true;
        };
        if time > t {
            return true;
        }
        if time < t {
            return false;
        }
        if id > self.highest {
            return true;
        }
        let diff = self.highest - id;
        diff < WINDOW && self.seen & (1u64 << diff) == 0
    }

    /// Records (id, time) as seen; call only after the packet authenticated and passed
    /// [`check`](Self::check).
    pub fn commit(&mut self, id: u32, time: u32) {
        if self.time.is_none_or(|t| time > t) {
            self.time = Some(time);
            self.highest = id;
            self.seen = 1;
            return;
        }
        if id > self.highest {
            let shift = id - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = id;
        } else {
            self.seen |= 1u64 << (self.highest - id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_reordering_and_refuses_replays_and_old_times() {
        let mut w = ReplayWindow::default();
        assert!(!w.check(0, 5), "id 0 is never valid");
        for (id, t) in [(3, 5), (1, 5), (2, 5)] {
            assert!(w.check(id, t));
            w.commit(id, t);
        }
        assert!(!w.check(2, 5), "replay");
        assert!(!w.check(3, 4), "older time");
        assert!(w.check(4, 5));
        w.commit(100, 5);
        assert!(!w.check(36, 5), "left of the window");
        assert!(w.check(37, 5));
        assert!(w.check(1, 6), "a later time starts a new sequence");
        w.commit(1, 6);
        assert!(!w.check(101, 5));
    }

    #[test]
    fn sender_counts_from_its_start_and_stops_at_the_end() {
        let mut s = PacketIdSend::new(0x0f00_0000, 7);
        assert_eq!(s.next(), Some((0x0f00_0001, 7)));
        let mut s = PacketIdSend::new(u32::MAX - 1, 7);
        assert_eq!(s.next(), Some((u32::MAX, 7)));
        assert_eq!(s.next(), None);
    }
}
