//! The control channel's reliability layer: numbered messages, acknowledgements and
//! retransmission over an unreliable transport (OpenVPN's `reliable.c`).
//!
//! Each direction is independent. The sending side ([`ReliableSend`]) numbers messages from
//! 0, keeps at most [`SEND_WINDOW`] of them unacknowledged on the wire and retransmits each
//! with exponential backoff until the peer acknowledges it. The receiving side
//! ([`ReliableRecv`]) buffers up to [`RECV_WINDOW`] messages ahead of the next one it
//! delivers, hands them out in order, and collects the ids to acknowledge.
//!
//! Call order for one endpoint, all sans-IO:
//!
//! 1. For every incoming control packet: [`ReliableSend::handle_ack`] for each id in its ack
//!    list, then (unless it is a `P_ACK_V1`) [`ReliableRecv::handle_packet`].
//! 2. Drain [`ReliableRecv::poll_delivered`] and feed the messages to TLS.
//! 3. [`ReliableSend::push`] whatever TLS wants to send, then drain
//!    [`ReliableSend::poll_transmit`], putting [`ReliableRecv::take_acks`] into each packet;
//!    if acks remain, send them in a `P_ACK_V1`.
//! 4. Wake up at [`ReliableSend::poll_timeout`] and go to 3.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::openvpn::{AckList, MAX_ACKS, Opcode};

/// Most messages the sender keeps unacknowledged on the wire. The receiver accepts the same
/// number ahead of the next message it delivers, so a sender within its window never sends
/// something the receiver must drop.
pub const SEND_WINDOW: usize = 8;

/// How many messages beyond the next in-order one the receiver buffers.
pub const RECV_WINDOW: u32 = 8;

/// Upper bound of the retransmission timeout after backoff.
pub const MAX_RTO: Duration = Duration::from_secs(8);

/// A message is retransmitted early once this many later messages were acknowledged
/// (OpenVPN's `N_ACK_RETRANSMIT`): it was most likely lost, not delayed.
pub const FAST_RETRANSMIT_ACKS: u8 = 3;

/// How many ids the receiver remembers to acknowledge; older ones are forgotten (the peer
/// retransmits and we acknowledge again).
pub const MAX_PENDING_ACKS: usize = 16;

/// A control message to put on the wire now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The control opcode the message was pushed with.
    pub opcode: Opcode,
    /// Its reliability-layer packet id.
    pub packet_id: u32,
    /// The message.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone)]
struct SendEntry {
    id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    acked: bool,
    /// When it was last put on the wire; `None` if never.
    last_sent: Option<Instant>,
    /// When it is due for retransmission.
    next_try: Option<Instant>,
    rto: Duration,
    /// Later messages acknowledged since this one was last sent.
    later_acks: u8,
}

/// Sending half of the reliability layer.
#[derive(Debug, Clone)]
pub struct ReliableSend {
    initial_rto: Duration,
    next_id: u32,
    /// Unacknowledged messages in id order, the lowest unacknowledged first. Acknowledged
    /// messages stay (payload freed) until everything before them is acknowledged.
    queue: VecDeque<SendEntry>,
}

impl ReliableSend {
    /// A sender whose first retransmission happens `initial_rto` after the first send
    /// (OpenVPN uses 1 s on its first try, then doubles).
    pub fn new(initial_rto: Duration) -> Self {
        Self {
            initial_rto,
            next_id: 0,
            queue: VecDeque::new(),
        }
    }

    /// A sender whose packet 0 (a hard reset) went out and was acknowledged before this state
    /// existed: a gateway that answered the reset statelessly (a session cookie).
    pub fn after_stateless_reset(initial_rto: Duration) -> Self {
        Self {
            initial_rto,
            next_id: 1,
            queue: VecDeque::new(),
        }
    }

    /// A sender carrying on from another process's (a restart that handed the session
    /// over): its next message gets id `next_id`. Messages that were unacknowledged there are
    /// not carried over (the peer's reliability layer only needs ids to keep increasing).
    pub fn resume(initial_rto: Duration, next_id: u32) -> Self {
        Self {
            initial_rto,
            next_id,
            queue: VecDeque::new(),
        }
    }

    /// Queues a message and returns its packet id (0, 1, 2, ...). It goes out from
    /// [`poll_transmit`](Self::poll_transmit) as soon as the send window allows.
    pub fn push(&mut self, opcode: Opcode, payload: Vec<u8>) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.queue.push_back(SendEntry {
            id,
            opcode,
            payload,
            acked: false,
            last_sent: None,
            next_try: None,
            rto: self.initial_rto,
            later_acks: 0,
        });
        id
    }

    /// Messages queued and not yet acknowledged (sent or waiting for the window).
    pub fn queued(&self) -> usize {
        self.queue.iter().filter(|e| !e.acked).count()
    }

    /// Records the peer's acknowledgement of `id`. Returns whether it acknowledged
    /// something new; acks for unknown, never-sent or already acknowledged ids are ignored
    /// (peers repeat acks on purpose).
    pub fn handle_ack(&mut self, id: u32) -> bool {
        let Some(front) = self.queue.front() else {
            return false;
        };
        let offset = id.wrapping_sub(front.id) as usize;
        let Some(entry) = self.queue.get_mut(offset) else {
            return false;
        };
        if entry.acked || entry.last_sent.is_none() {
            return false;
        }
        entry.acked = true;
        entry.payload = Vec::new();
        entry.next_try = None;
        for earlier in self.queue.iter_mut().take(offset) {
            if earlier.acked {
                continue;
            }
            if let Some(last_sent) = earlier.last_sent {
                earlier.later_acks = earlier.later_acks.saturating_add(1);
                if earlier.later_acks >= FAST_RETRANSMIT_ACKS {
                    // Due immediately: a deadline in the past.
                    earlier.next_try = Some(last_sent);
                }
            }
        }
        while self.queue.front().is_some_and(|e| e.acked) {
            self.queue.pop_front();
        }
        true
    }

    /// The next message to send at `now`: first messages never sent (within the window),
    /// then retransmissions that are due, the longest overdue first. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        let window = self.queue.len().min(SEND_WINDOW);
        let index = match self
            .queue
            .range(..window)
            .position(|e| e.last_sent.is_none())
        {
            Some(i) => {
                let e = &mut self.queue[i];
                e.last_sent = Some(now);
                e.next_try = Some(now + e.rto);
                i
            }
            None => {
                let (i, _) = self
                    .queue
                    .range(..window)
                    .enumerate()
                    .filter_map(|(i, e)| Some((i, e.next_try?)))
                    .filter(|&(_, t)| t <= now)
                    .min_by_key(|&(_, t)| t)?;
                let e = &mut self.queue[i];
                e.rto = (e.rto * 2).min(MAX_RTO);
                e.last_sent = Some(now);
                e.next_try = Some(now + e.rto);
                e.later_acks = 0;
                i
            }
        };
        let e = &self.queue[index];
        Some(Outgoing {
            opcode: e.opcode,
            packet_id: e.id,
            payload: &e.payload,
        })
    }

    /// When the next retransmission is due (possibly already past), or `None` if nothing
    /// sent is waiting for an ack. Messages that were never sent are not covered: after
    /// [`push`](Self::push) or an ack that opens the window, call
    /// [`poll_transmit`](Self::poll_transmit) right away.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue
            .iter()
            .take(SEND_WINDOW)
            .filter_map(|e| e.next_try)
            .min()
    }

    /// Messages sent at least once and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| !e.acked && e.last_sent.is_some())
            .count()
    }

    /// Messages not yet acknowledged, sent or not.
    pub fn unacked(&self) -> usize {
        self.queue.iter().filter(|e| !e.acked).count()
    }

    /// Whether every pushed message has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The id the next [`push`](Self::push) will get.
    pub fn next_packet_id(&self) -> u32 {
        self.next_id
    }
}

/// What [`ReliableRecv::handle_packet`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvOutcome {
    /// New message, buffered for in-order delivery and queued for acknowledgement.
    Accepted,
    /// Already received (the peer missed our ack); acknowledged again, not delivered again.
    Duplicate,
    /// Too far ahead of what we have delivered; dropped without an ack so the peer resends.
    OutOfWindow,
}

/// Receiving half of the reliability layer.
#[derive(Debug, Clone)]
pub struct ReliableRecv {
    /// Id of the next message to deliver.
    next: u32,
    /// Buffered messages; id `i` in the window lives in slot `i % RECV_WINDOW`.
    slots: [Option<(Opcode, Vec<u8>)>; RECV_WINDOW as usize],
    /// Ids to acknowledge, oldest first, without duplicates.
    acks: [u32; MAX_PENDING_ACKS],
    n_acks: usize,
}

impl Default for ReliableRecv {
    fn default() -> Self {
        Self::new()
    }
}

impl ReliableRecv {
    /// A receiver expecting packet id 0 first.
    pub fn new() -> Self {
        Self {
            next: 0,
            slots: Default::default(),
            acks: [0; MAX_PENDING_ACKS],
            n_acks: 0,
        }
    }

    /// A receiver that already took the peer's packet 0 (its hard reset) before this state
    /// existed; `ack` queues its acknowledgement (the stateless answer did not carry one).
    pub fn after_stateless_reset(ack: bool) -> Self {
        let mut r = Self::new();
        r.next = 1;
        if ack {
            r.queue_ack(0);
        }
        r
    }

    /// A receiver carrying on from another process's: `next` is the id it expected next;
    /// anything before it counts as delivered (acknowledged again if the peer resends it).
    pub fn resume(next: u32) -> Self {
        let mut r = Self::new();
        r.next = next;
        r
    }

    /// Takes a message the peer sent with reliability-layer id `id`.
    pub fn handle_packet(&mut self, id: u32, opcode: Opcode, payload: &[u8]) -> RecvOutcome {
        let ahead = id.wrapping_sub(self.next);
        if ahead < RECV_WINDOW {
            self.queue_ack(id);
            let slot = &mut self.slots[(id % RECV_WINDOW) as usize];
            if slot.is_some() {
                return RecvOutcome::Duplicate;
            }
            *slot = Some((opcode, payload.to_vec()));
            RecvOutcome::Accepted
        } else if ahead > u32::MAX / 2 {
            // Behind `next`: delivered already.
            self.queue_ack(id);
            RecvOutcome::Duplicate
        } else {
            RecvOutcome::OutOfWindow
        }
    }

    /// The next message in order, if it has arrived.
    pub fn poll_delivered(&mut self) -> Option<(Opcode, Vec<u8>)> {
        let message = self.slots[(self.next % RECV_WINDOW) as usize].take()?;
        self.next = self.next.wrapping_add(1);
        Some(message)
    }

    /// The id of the next message to deliver.
    pub fn next_expected(&self) -> u32 {
        self.next
    }

    /// Ids waiting to be acknowledged, oldest first.
    pub fn pending_acks(&self) -> &[u32] {
        &self.acks[..self.n_acks]
    }

    /// Whether any id waits to be acknowledged.
    pub fn has_pending_acks(&self) -> bool {
        self.n_acks > 0
    }

    /// Removes and returns up to `max` (at most 8) of the oldest pending acks, for the next
    /// outgoing control packet or `P_ACK_V1`.
    pub fn take_acks(&mut self, max: usize) -> AckList {
        let n = max.min(MAX_ACKS).min(self.n_acks);
        let list: AckList = self.acks[..n].iter().copied().collect();
        self.acks.copy_within(n..self.n_acks, 0);
        self.n_acks -= n;
        list
    }

    fn queue_ack(&mut self, id: u32) {
        if self.pending_acks().contains(&id) {
            return;
        }
        if self.n_acks == MAX_PENDING_ACKS {
            self.acks.copy_within(1.., 0);
            self.n_acks -= 1;
        }
        self.acks[self.n_acks] = id;
        self.n_acks += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const RTO: Duration = Duration::from_secs(1);

    /// Origin of the virtual clock. Only the origin comes from the real clock; every later
    /// instant is computed from it.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(send: &mut ReliableSend, now: Instant) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(o) = send.poll_transmit(now) {
            out.push((o.packet_id, o.payload.to_vec()));
        }
        out
    }

    #[test]
    fn ids_are_sequential_from_zero() {
        let mut s = ReliableSend::new(RTO);
        assert_eq!(s.push(Opcode::ControlHardResetClientV2, vec![]), 0);
        assert_eq!(s.push(Opcode::ControlV1, vec![1]), 1);
        assert_eq!(s.push(Opcode::ControlV1, vec![2]), 2);
        let now = epoch();
        let o = s.poll_transmit(now).unwrap();
        assert_eq!(o.opcode, Opcode::ControlHardResetClientV2);
        assert_eq!(o.packet_id, 0);
        assert_eq!(drain(&mut s, now), vec![(1, vec![1]), (2, vec![2])]);
        assert_eq!(s.in_flight(), 3);
    }

    #[test]
    fn send_window_limits_unacked_packets() {
        let mut s = ReliableSend::new(RTO);
        for i in 0..20u8 {
            s.push(Opcode::ControlV1, vec![i]);
        }
        let now = epoch();
        let sent = drain(&mut s, now);
        assert_eq!(sent.len(), SEND_WINDOW);
        assert_eq!(s.in_flight(), SEND_WINDOW);
        assert_eq!(s.unacked(), 20);
        // Acking a later packet does not move the window: id 0 is still unacked.
        assert!(s.handle_ack(5));
        assert!(drain(&mut s, now).is_empty());
        // Acking the front lets one more out.
        assert!(s.handle_ack(0));
        assert_eq!(drain(&mut s, now), vec![(8, vec![8])]);
    }

    #[test]
    fn duplicate_unknown_and_never_sent_acks_are_ignored() {
        let mut s = ReliableSend::new(RTO);
        assert!(!s.handle_ack(0), "nothing pushed yet");
        for i in 0..10u8 {
            s.push(Opcode::ControlV1, vec![i]);
        }
        let now = epoch();
        drain(&mut s, now);
        assert!(s.handle_ack(1));
        assert!(!s.handle_ack(1), "duplicate");
        assert!(!s.handle_ack(9), "pushed but never sent (outside window)");
        assert!(!s.handle_ack(1000), "never pushed");
        assert!(!s.handle_ack(u32::MAX), "behind the window");
        assert!(s.handle_ack(0));
        assert!(!s.handle_ack(0), "duplicate after leaving the queue");
        assert_eq!(s.in_flight(), 6);
        assert_eq!(drain(&mut s, epoch()).len(), 2, "window moved by two");
    }

    #[test]
    fn retransmits_with_doubling_backoff_capped() {
        let mut s = ReliableSend::new(RTO);
        s.push(Opcode::ControlV1, b"hello".to_vec());
        let t0 = epoch();
        assert!(s.poll_transmit(t0).is_some());
        assert!(s.poll_transmit(t0).is_none());
        let mut t = t0;
        let mut expected_rto = RTO;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let due = s.poll_timeout().unwrap();
            assert_eq!(due - t, expected_rto);
            assert!(s.poll_transmit(due - ms(1)).is_none(), "not due yet");
            let o = s.poll_transmit(due).unwrap();
            assert_eq!(o.payload, b"hello");
            gaps.push((due - t).as_secs());
            t = due;
            expected_rto = (expected_rto * 2).min(MAX_RTO);
        }
        assert_eq!(gaps, [1, 2, 4, 8, 8, 8]);
        assert!(s.handle_ack(0));
        assert!(s.is_idle());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn fast_retransmit_after_three_later_acks() {
        let mut s = ReliableSend::new(RTO);
        for i in 0..5u8 {
            s.push(Opcode::ControlV1, vec![i]);
        }
        let t0 = epoch();
        drain(&mut s, t0);
        let t1 = t0 + ms(50);
        s.handle_ack(1);
        s.handle_ack(2);
        assert!(s.poll_transmit(t1).is_none());
        s.handle_ack(3);
        assert!(s.poll_timeout().unwrap() <= t1, "id 0 is due now");
        let o = s.poll_transmit(t1).unwrap();
        assert_eq!(o.packet_id, 0);
        assert!(s.poll_transmit(t1).is_none());
    }

    #[test]
    fn receiver_delivers_in_order_and_reacks_duplicates() {
        let mut r = ReliableRecv::new();
        assert_eq!(
            r.handle_packet(1, Opcode::ControlV1, b"b"),
            RecvOutcome::Accepted
        );
        assert_eq!(r.poll_delivered(), None, "0 is missing");
        assert_eq!(
            r.handle_packet(0, Opcode::ControlV1, b"a"),
            RecvOutcome::Accepted
        );
        assert_eq!(
            r.handle_packet(1, Opcode::ControlV1, b"b"),
            RecvOutcome::Duplicate
        );
        assert_eq!(r.pending_acks(), &[1, 0]);
        assert_eq!(r.poll_delivered(), Some((Opcode::ControlV1, b"a".to_vec())));
        assert_eq!(r.poll_delivered(), Some((Opcode::ControlV1, b"b".to_vec())));
        assert_eq!(r.poll_delivered(), None);
        let acks = r.take_acks(8);
        assert_eq!(acks.as_slice(), &[1, 0]);
        assert!(!r.has_pending_acks());
        // Already delivered: still acknowledged again.
        assert_eq!(
            r.handle_packet(0, Opcode::ControlV1, b"a"),
            RecvOutcome::Duplicate
        );
        assert_eq!(r.pending_acks(), &[0]);
        assert_eq!(r.poll_delivered(), None);
    }

    #[test]
    fn receiver_window_drops_far_ahead_without_ack() {
        let mut r = ReliableRecv::new();
        for id in 1..8 {
            assert_eq!(
                r.handle_packet(id, Opcode::ControlV1, &[]),
                RecvOutcome::Accepted
            );
        }
        assert_eq!(
            r.handle_packet(8, Opcode::ControlV1, &[]),
            RecvOutcome::OutOfWindow
        );
        assert_eq!(
            r.handle_packet(500, Opcode::ControlV1, &[]),
            RecvOutcome::OutOfWindow
        );
        assert!(!r.pending_acks().contains(&8));
        r.handle_packet(0, Opcode::ControlV1, &[]);
        // Nothing delivered yet, so 8 is still too far ahead.
        assert_eq!(
            r.handle_packet(8, Opcode::ControlV1, &[]),
            RecvOutcome::OutOfWindow
        );
        assert!(r.poll_delivered().is_some());
        assert_eq!(
            r.handle_packet(8, Opcode::ControlV1, &[]),
            RecvOutcome::Accepted
        );
    }

    #[test]
    fn take_acks_respects_max_and_pending_is_bounded() {
        let mut r = ReliableRecv::new();
        for id in 0..8 {
            r.handle_packet(id, Opcode::ControlV1, &[]);
        }
        assert_eq!(r.take_acks(4).as_slice(), &[0, 1, 2, 3]);
        assert_eq!(r.take_acks(100).as_slice(), &[4, 5, 6, 7]);
        while r.poll_delivered().is_some() {}
        // Re-acks of 20 old ids: only the newest 16 are kept.
        for id in 0..8 {
            r.handle_packet(id, Opcode::ControlV1, &[]);
        }
        for id in 8..16 {
            r.handle_packet(id, Opcode::ControlV1, &[]);
        }
        while r.poll_delivered().is_some() {}
        for id in 16..20 {
            r.handle_packet(id, Opcode::ControlV1, &[]);
        }
        assert_eq!(r.pending_acks().len(), MAX_PENDING_ACKS);
        assert_eq!(r.pending_acks()[0], 4);
        assert_eq!(r.pending_acks()[MAX_PENDING_ACKS - 1], 19);
    }

    /// One packet in the simulated network.
    enum Wire {
        Message(u32, Opcode, Vec<u8>),
        Acks(AckList),
    }

    struct Link {
        queue: Vec<(Instant, Wire)>,
        loss: f64,
        dup: f64,
    }

    impl Link {
        fn send(&mut self, rng: &mut StdRng, now: Instant, w: Wire) {
            if rng.random_bool(self.loss) {
                return;
            }
            let copies = if rng.random_bool(self.dup) { 2 } else { 1 };
            for _ in 0..copies {
                // Jitter well above the spacing of packets makes reordering common.
                let delay = ms(rng.random_range(5..150));
                let copy = match &w {
                    Wire::Message(id, op, p) => Wire::Message(*id, *op, p.clone()),
                    Wire::Acks(a) => Wire::Acks(*a),
                };
                self.queue.push((now + delay, copy));
            }
        }

        fn arrived(&mut self, now: Instant) -> Vec<Wire> {
            let (due, later) = self.queue.drain(..).partition(|(t, _)| *t <= now);
            self.queue = later;
            let mut due: Vec<_> = due;
            due.sort_by_key(|(t, _)| *t);
            due.into_iter().map(|(_, w)| w).collect()
        }

        fn next_arrival(&self) -> Option<Instant> {
            self.queue.iter().map(|(t, _)| *t).min()
        }
    }

    /// Runs one sender->receiver transfer over a lossy, duplicating, reordering link on a
    /// virtual clock and returns what was delivered.
    fn simulate(seed: u64, stats: &mut Stats) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let loss = rng.random_range(0.0..0.35);
        let dup = rng.random_range(0.0..0.15);
        let lazy_reader = rng.random_bool(0.3);
        let mut forward = Link {
            queue: Vec::new(),
            loss,
            dup,
        };
        let mut back = Link {
            queue: Vec::new(),
            loss,
            dup,
        };
        let n_messages = rng.random_range(1..60);
        let messages: Vec<Vec<u8>> = (0..n_messages)
            .map(|i: u32| {
                let len = rng.random_range(0..40);
                let mut m = i.to_be_bytes().to_vec();
                m.extend((0..len).map(|_| rng.random::<u8>()));
                m
            })
            .collect();

        let mut send = ReliableSend::new(RTO);
        let mut recv = ReliableRecv::new();
        let mut delivered = Vec::new();
        let mut pushed = 0;
        let mut now = epoch();
        let start = now;

        for _ in 0..1_000_000 {
            // The application produces messages in bursts.
            if pushed < messages.len() && rng.random_bool(0.5) {
                let burst = rng.random_range(1..12).min(messages.len() - pushed);
                for m in &messages[pushed..pushed + burst] {
                    let id = send.push(Opcode::ControlV1, m.clone());
                    assert_eq!(id as usize, pushed);
                    pushed += 1;
                }
            }
            while let Some(o) = send.poll_transmit(now) {
                stats.transmissions += 1;
                let w = Wire::Message(o.packet_id, o.opcode, o.payload.to_vec());
                forward.send(&mut rng, now, w);
            }
            for w in forward.arrived(now) {
                if let Wire::Message(id, op, payload) = w {
                    let outcome = recv.handle_packet(id, op, &payload);
                    match outcome {
                        RecvOutcome::Accepted => stats.accepted += 1,
                        RecvOutcome::Duplicate => stats.duplicates += 1,
                        RecvOutcome::OutOfWindow => stats.out_of_window += 1,
                    }
                    if outcome == RecvOutcome::OutOfWindow {
                        assert!(lazy_reader, "sender overran an eagerly drained receiver");
                    }
                }
            }
            if !lazy_reader || rng.random_bool(0.3) {
                while let Some((op, m)) = recv.poll_delivered() {
                    assert_eq!(op, Opcode::ControlV1);
                    delivered.push(m);
                }
            }
            while recv.has_pending_acks() {
                let max = rng.random_range(1..=8);
                let acks = recv.take_acks(max);
                back.send(&mut rng, now, Wire::Acks(acks));
            }
            for w in back.arrived(now) {
                if let Wire::Acks(acks) = w {
                    for id in acks.iter() {
                        send.handle_ack(id);
                    }
                }
            }

            if pushed == messages.len() && send.is_idle() {
                // Everything was acknowledged, so everything was received; drain the rest.
                while let Some((_, m)) = recv.poll_delivered() {
                    delivered.push(m);
                }
                return (messages, delivered);
            }

            // Advance the virtual clock to the next event (at least a little, so that the
            // lazy reader and the producer get another chance).
            let next = [
                send.poll_timeout(),
                forward.next_arrival(),
                back.next_arrival(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + ms(10));
            now = next.max(now + ms(1));
            assert!(
                now - start < Duration::from_secs(3600),
                "seed {seed} stalled"
            );
        }
        panic!("seed {seed}: simulation did not finish");
    }

    #[derive(Debug, Default)]
    struct Stats {
        transmissions: u64,
        accepted: u64,
        duplicates: u64,
        out_of_window: u64,
        messages: u64,
    }

    #[test]
    fn lossy_reordering_network_delivers_everything_once_in_order() {
        let mut stats = Stats::default();
        for seed in 0..1000 {
            let (sent, delivered) = simulate(seed, &mut stats);
            stats.messages += sent.len() as u64;
            assert_eq!(delivered.len(), sent.len(), "seed {seed}");
            assert!(
                delivered == sent,
                "seed {seed}: delivered out of order or corrupted"
            );
        }
        // The network really did lose, duplicate and overrun: every path was exercised.
        assert!(stats.transmissions > stats.messages * 5 / 4, "{stats:?}");
        assert!(stats.duplicates > 1000, "{stats:?}");
        assert!(stats.out_of_window > 100, "{stats:?}");
        println!("{stats:?}");
    }
}
