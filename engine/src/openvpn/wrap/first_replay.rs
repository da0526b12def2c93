//! Replays of a new session's first packet. A wrapped hard reset authenticates, but a copy
//! captured on the path and sent again (from anywhere) would authenticate too and make the
//! gateway create a session for nobody. Each client session id opens one session: the
//! gateway remembers the session ids of the first packets it accepted for a while and drops
//! a repeat. (A client that really restarts picks a new random session id; its retransmitted
//! reset from the same address goes to the session it already has.)

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Remembers recently accepted first packets by client session id.
#[derive(Debug)]
pub struct FirstPacketReplays {
    window: Duration,
    capacity: usize,
    seen: HashSet<u64>,
    order: VecDeque<(Instant, u64)>,
}

impl FirstPacketReplays {
    /// Remembers up to `capacity` session ids for `window` each (OpenVPN's hand-window is
    /// 60 s; a client gives up its session id after it).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// True if `session_id` is new (and remembers it); false for a replay.
    pub fn accept(&mut self, now: Instant, session_id: u64) -> bool {
        while let Some(&(at, sid)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&sid);
        }
        if !self.seen.insert(session_id) {
            return false;
        }
        self.order.push_back((now, session_id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_opens_one_session_per_window() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut f = FirstPacketReplays::new(Duration::from_secs(60), 3);
        assert!(f.accept(t0, 1));
        assert!(!f.accept(t0, 1), "replay");
        assert!(f.accept(t0, 2));
        assert!(!f.accept(t0 + Duration::from_secs(59), 1));
        assert!(
            f.accept(t0 + Duration::from_secs(61), 1),
            "forgotten after the window"
        );
        for sid in 10..20 {
            assert!(f.accept(t0 + Duration::from_secs(62), sid));
        }
        assert!(f.order.len() <= 3 && f.seen.len() <= 3, "bounded");
    }
}
