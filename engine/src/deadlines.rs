//! One deadline per tunnel: the driver's timer queue.
//!
//! Every tunnel's state machine reports its next deadline after each input; the driver keeps
//! only the latest one per tunnel and sleeps until the earliest. Setting a tunnel's deadline
//! replaces its previous one, so the queue never holds stale entries and its size is bounded
//! by the number of tunnels, however many keepalives pass through.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::router::TunnelId;

/// A set of deadlines, at most one per tunnel, ordered by time.
///
/// [`set`](Deadlines::set), [`remove`](Deadlines::remove), [`pop_due`](Deadlines::pop_due)
/// and [`next`](Deadlines::next) are O(log n) in the number of tunnels with a deadline; the
/// other reads are O(1). Tunnels due at the same instant come out lowest [`TunnelId`] first.
#[derive(Debug, Clone, Default)]
pub struct Deadlines {
    /// Every deadline, earliest first (then by tunnel id).
    queue: BTreeSet<(Instant, TunnelId)>,
    /// Each tunnel's current deadline: the one entry of `queue` that belongs to it.
    by_tunnel: HashMap<TunnelId, Instant>,
}

impl Deadlines {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `id`'s deadline to `at`, replacing its previous one; `None` removes it.
    pub fn set(&mut self, id: TunnelId, at: Option<Instant>) {
        let Some(at) = at else {
            self.remove(id);
            return;
        };
        if let Some(old) = self.by_tunnel.insert(id, at) {
            if old == at {
                return;
            }
            self.queue.remove(&(old, id));
        }
        self.queue.insert((at, id));
    }

    /// Removes `id`'s deadline, if it has one.
    pub fn remove(&mut self, id: TunnelId) {
        if let Some(old) = self.by_tunnel.remove(&id) {
            self.queue.remove(&(old, id));
        }
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// Removes and returns the tunnel with the earliest deadline if that deadline is at or
    /// before `now`. Call it in a loop to drain every tunnel that is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<TunnelId> {
        let &(at, id) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.by_tunnel.remove(&id);
        Some(id)
    }

    /// `id`'s current deadline, if it has one.
    pub fn get(&self, id: TunnelId) -> Option<Instant> {
        self.by_tunnel.get(&id).copied()
    }

    /// Number of tunnels with a deadline.
    pub fn len(&self) -> usize {
        self.by_tunnel.len()
    }

    /// True when no tunnel has a deadline.
    pub fn is_empty(&self) -> bool {
        self.by_tunnel.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    /// Origin of the virtual clock. Only the origin comes from the real clock; every later
    /// instant is computed from it.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn drain(d: &mut Deadlines, now: Instant) -> Vec<TunnelId> {
        std::iter::from_fn(|| d.pop_due(now)).collect()
    }

    fn check_invariants(d: &Deadlines) {
        assert_eq!(d.queue.len(), d.by_tunnel.len());
        for (&id, &t) in &d.by_tunnel {
            assert!(d.queue.contains(&(t, id)));
        }
    }

    #[test]
    fn replacing_a_deadline_keeps_one_entry() {
        let t0 = epoch();
        let mut d = Deadlines::new();
        for i in 0..10_000u64 {
            // Keepalives push the deadline forwards (and sometimes back).
            d.set(7, Some(at(t0, (i * 37) % 1_000)));
            assert_eq!(d.len(), 1);
        }
        check_invariants(&d);
        assert_eq!(d.queue.len(), 1);
        assert_eq!(d.get(7), Some(at(t0, (9_999 * 37) % 1_000)));
        assert_eq!(d.next(), d.get(7));
        d.set(7, Some(at(t0, 5)));
        d.set(7, Some(at(t0, 5)));
        assert_eq!(d.len(), 1);
        assert_eq!(d.queue.len(), 1);
    }

    #[test]
    fn earliest_first() {
        let t0 = epoch();
        let mut d = Deadlines::new();
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
        d.set(1, Some(at(t0, 300)));
        d.set(2, Some(at(t0, 100)));
        d.set(3, Some(at(t0, 200)));
        assert_eq!(d.next(), Some(at(t0, 100)));
        // Moving tunnel 2 later makes tunnel 3 the earliest.
        d.set(2, Some(at(t0, 400)));
        assert_eq!(d.next(), Some(at(t0, 200)));
        assert_eq!(drain(&mut d, at(t0, 1_000)), vec![3, 1, 2]);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }

    #[test]
    fn ties_between_ids_all_pop() {
        let t0 = epoch();
        let mut d = Deadlines::new();
        for id in [5, 3, 9, 1] {
            d.set(id, Some(at(t0, 50)));
        }
        d.set(4, Some(at(t0, 10)));
        assert_eq!(d.len(), 5);
        assert_eq!(d.pop_due(at(t0, 50)), Some(4));
        // Equal deadlines come out in id order, each exactly once.
        assert_eq!(drain(&mut d, at(t0, 50)), vec![1, 3, 5, 9]);
        assert!(d.is_empty());
    }

    #[test]
    fn pop_due_respects_now() {
        let t0 = epoch();
        let mut d = Deadlines::new();
        d.set(1, Some(at(t0, 100)));
        d.set(2, Some(at(t0, 200)));
        assert_eq!(d.pop_due(at(t0, 99)), None);
        assert_eq!(d.len(), 2, "nothing due, nothing removed");
        // A deadline exactly at `now` is due.
        assert_eq!(d.pop_due(at(t0, 100)), Some(1));
        assert_eq!(d.pop_due(at(t0, 100)), None);
        assert_eq!(d.get(1), None);
        assert_eq!(d.get(2), Some(at(t0, 200)));
        assert_eq!(d.pop_due(at(t0, 250)), Some(2));
        assert_eq!(d.pop_due(at(t0, 250)), None);
        assert!(d.is_empty());
    }

    #[test]
    fn remove_and_set_none() {
        let t0 = epoch();
        let mut d = Deadlines::new();
        d.set(1, Some(at(t0, 100)));
        d.set(2, Some(at(t0, 200)));
        d.set(3, Some(at(t0, 300)));
        d.remove(1);
        d.remove(42);
        assert_eq!(d.get(1), None);
        assert_eq!(d.next(), Some(at(t0, 200)));
        d.set(2, None);
        d.set(43, None);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next(), Some(at(t0, 300)));
        check_invariants(&d);
        assert_eq!(drain(&mut d, at(t0, 1_000)), vec![3]);
    }

    #[test]
    fn randomized_against_reference() {
        let t0 = epoch();
        let mut rng = StdRng::seed_from_u64(0xdead_11e5);
        let mut d = Deadlines::new();
        // Reference: the latest deadline per tunnel, searched in full.
        let mut reference: HashMap<TunnelId, Instant> = HashMap::new();
        let mut now = t0;
        for step in 0..20_000 {
            let id = rng.random_range(0..50u64);
            match rng.random_range(0..100) {
                0..50 => {
                    let t = now + Duration::from_millis(rng.random_range(0..2_000));
                    d.set(id, Some(t));
                    reference.insert(id, t);
                }
                50..55 => {
                    d.set(id, None);
                    reference.remove(&id);
                }
                55..60 => {
                    d.remove(id);
                    reference.remove(&id);
                }
                60..80 => {
                    now += Duration::from_millis(rng.random_range(0..300));
                    let expected = reference
                        .iter()
                        .filter(|&(_, &t)| t <= now)
                        .min_by_key(|&(&i, &t)| (t, i))
                        .map(|(&i, _)| i);
                    assert_eq!(d.pop_due(now), expected, "step {step}");
                    if let Some(i) = expected {
                        reference.remove(&i);
                    }
                }
                _ => {
                    assert_eq!(d.get(id), reference.get(&id).copied(), "step {step}");
                }
            }
            assert_eq!(d.len(), reference.len(), "step {step}");
            assert_eq!(d.is_empty(), reference.is_empty());
            assert_eq!(d.next(), reference.values().min().copied(), "step {step}");
            if step % 500 == 0 {
                check_invariants(&d);
            }
        }
        check_invariants(&d);
    }
}
