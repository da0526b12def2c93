//! Adaptive receive coalescing: when packets stream in faster than a worker wakes up for
//! them, the worker naps briefly after a turn, so the next wakeup finds several packets
//! waiting and hands them to TUN (GRO) and the sockets (GSO) in one write each.
//!
//! A stock OpenVPN client sends one datagram per packet, and a worker that keeps up wakes
//! for each one: one `epoll_wait`, one `recvmmsg` that returns a single datagram and one TUN
//! write per packet. That per-packet cost, not crypto, is what the profiles show under a
//! stock client's upload. A nap of ~0.2 ms at 100,000 packets/s turns twenty wakeups and twenty
//! TUN writes into one of each.
//!
//! The nap is only taken while the measured rate is high and the last turn found fewer
//! packets than a full batch; at low load (a ping, an interactive session) the worker never
//! naps, so batching adds no delay there. Pure logic over explicit times (tested below).

use std::time::{Duration, Instant};

/// Packets/s under which a worker never naps: below this a nap would gather too little to
/// pay for the delay it adds.
const MIN_RATE: f64 = 20_000.0;
/// Packets a turn aims to find; a turn that found this many does not nap.
const TARGET: usize = 24;
/// The rate is measured over windows of at least this long.
const WINDOW: Duration = Duration::from_millis(2);

/// One worker's coalescing state.
#[derive(Debug)]
pub(super) struct Coalescer {
    /// The longest nap; zero turns coalescing off.
    max_nap: Duration,
    /// Start of the current measuring window, and the packets seen in it.
    window_start: Option<Instant>,
    window_packets: usize,
    /// Packets per second over the last complete window.
    rate: f64,
    /// Packets handled in the current turn, and how many of them came from TUN.
    turn: usize,
    turn_tun: usize,
    /// The last turn ended with a nap.
    napped: bool,
    /// A TUN read in this window brought a full batch by itself (no nap before it).
    window_full: bool,
    /// No naps: TUN brings full batches by itself (a download's TSO trains arrive as dozens
    /// of segments per read), and a nap would only hold up the next train while the turn it
    /// follows carried a few of the client's ACKs.
    hold_off: bool,
}

impl Coalescer {
    /// `max_nap`: the longest a worker waits for more packets (`coalesce_us`); zero: never.
    pub(super) fn new(max_nap: Duration) -> Self {
        Self {
            max_nap,
            window_start: None,
            window_packets: 0,
            rate: 0.0,
            turn: 0,
            turn_tun: 0,
            napped: false,
            window_full: false,
            hold_off: false,
        }
    }

    /// Counts `n` packets handled in this turn (datagrams, TUN packets, TCP frames).
    pub(super) fn count(&mut self, n: usize) {
        self.turn += n;
    }

    /// Counts `n` packets read from TUN in this turn.
    pub(super) fn count_tun(&mut self, n: usize) {
        self.turn += n;
        self.turn_tun += n;
    }

    /// True while packets come in slower than a nap would pay for (a ping, an interactive
    /// session, a quiet spell), measured whether naps are on or not: then a lone packet's
    /// answer goes out before the worker reads again, as a read right after one packet
    /// would most likely find nothing and only delay it by a system call.
    pub(super) fn low_rate(&self) -> bool {
        self.rate < MIN_RATE
    }

    /// Ends a turn at `now`: how long to nap before waiting for the next one, if at all.
    pub(super) fn turn_ended(&mut self, now: Instant) -> Option<Duration> {
        let packets = std::mem::take(&mut self.turn);
        let from_tun = std::mem::take(&mut self.turn_tun);
        self.window_packets += packets;
        // The rate over the last window; a quiet spell makes a long window and a low rate.
        match self.window_start {
            None => self.window_start = Some(now),
            Some(start) => {
                let span = now.saturating_duration_since(start);
                if span >= WINDOW {
                    self.rate = self.window_packets as f64 / span.as_secs_f64();
                    self.window_start = Some(now);
                    self.window_packets = 0;
                    self.hold_off = std::mem::take(&mut self.window_full);
                }
            }
        }
        // A full batch from the sockets is what naps gather (GRO of a client's datagrams);
        // a full batch from TUN without a nap before it is a source that batches itself.
        let after_nap = std::mem::take(&mut self.napped);
        if from_tun >= TARGET && !after_nap {
            self.window_full = true;
            self.hold_off = true;
        }
        if self.max_nap.is_zero()
            || packets == 0
            || packets >= TARGET
            || self.rate < MIN_RATE
            || self.hold_off
        {
            return None;
        }
        self.napped = true;
        // Long enough for the missing packets to arrive at the measured rate.
        let wanted = Duration::from_secs_f64((TARGET - packets) as f64 / self.rate);
        Some(wanted.min(self.max_nap))
    }
}

/// Sets the calling thread's timer slack to 5 us (Linux), so a nap of tens of microseconds
/// is not stretched by the default 50 us.
#[allow(unsafe_code)]
pub(super) fn fine_timer_slack() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_TIMERSLACK) takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 5_000 as libc::c_ulong) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not set the worker's timer slack");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `turns` turns of `per_turn` packets from the sockets (`count`), `gap` apart; the
    /// naps asked for.
    fn run(
        c: &mut Coalescer,
        t: &mut Instant,
        turns: usize,
        per_turn: usize,
        gap: Duration,
    ) -> Vec<Option<Duration>> {
        turns_of(c, t, turns, gap, |c| c.count(per_turn))
    }

    /// Like [`run`], the packets read from TUN (`count_tun`).
    fn run_tun(
        c: &mut Coalescer,
        t: &mut Instant,
        turns: usize,
        per_turn: usize,
        gap: Duration,
    ) -> Vec<Option<Duration>> {
        turns_of(c, t, turns, gap, |c| c.count_tun(per_turn))
    }

    fn turns_of(
        c: &mut Coalescer,
        t: &mut Instant,
        turns: usize,
        gap: Duration,
        count: impl Fn(&mut Coalescer),
    ) -> Vec<Option<Duration>> {
        (0..turns)
            .map(|_| {
                *t += gap;
                count(c);
                c.turn_ended(*t)
            })
            .collect()
    }

    #[test]
    fn never_naps_at_low_rate() {
        let mut c = Coalescer::new(Duration::from_micros(100));
        let mut t = Instant::now();
        // One ping a second, and a burst of small interactive packets 1 ms apart.
        assert!(
            run(&mut c, &mut t, 10, 1, Duration::from_secs(1))
                .iter()
                .all(Option::is_none)
        );
        assert!(
            run(&mut c, &mut t, 100, 1, Duration::from_millis(1))
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn the_rate_is_known_with_naps_off_too() {
        for max_nap in [Duration::ZERO, Duration::from_micros(100)] {
            let mut c = Coalescer::new(max_nap);
            let mut t = Instant::now();
            assert!(c.low_rate(), "nothing seen yet");
            // Pings: low.
            run(&mut c, &mut t, 10, 1, Duration::from_millis(20));
            assert!(c.low_rate());
            // 100,000 packets/s: not low, naps or not.
            let naps = run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
            assert!(!c.low_rate(), "{max_nap:?}");
            assert_eq!(naps.iter().any(Option::is_some), !max_nap.is_zero());
            // A quiet spell: the next turn measures a long window, and the rate is low again.
            run(&mut c, &mut t, 1, 1, Duration::from_millis(50));
            assert!(c.low_rate());
        }
    }

    #[test]
    fn naps_while_single_packets_stream_in() {
        let mut c = Coalescer::new(Duration::from_micros(100));
        let mut t = Instant::now();
        // 100,000 packets/s, one per wakeup: after the first window, every turn naps.
        let naps = run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
        assert!(
            naps[..100].iter().all(Option::is_none),
            "no nap before a rate is known"
        );
        let later = &naps[300..];
        assert!(
            later.iter().all(|n| *n == Some(Duration::from_micros(100))),
            "{later:?}"
        );
    }

    #[test]
    fn nap_is_sized_by_the_rate_and_capped() {
        let mut c = Coalescer::new(Duration::from_micros(500));
        let mut t = Instant::now();
        // 1,000,000 packets/s in turns of 4: (24-4) packets take 20 us.
        let naps = run(&mut c, &mut t, 2000, 4, Duration::from_micros(4));
        let last = naps.last().copied().flatten().expect("naps at this rate");
        assert!(
            last >= Duration::from_micros(18) && last <= Duration::from_micros(22),
            "{last:?}"
        );
    }

    #[test]
    fn full_turns_and_empty_turns_do_not_nap() {
        let mut c = Coalescer::new(Duration::from_micros(100));
        let mut t = Instant::now();
        assert!(
            run(&mut c, &mut t, 1000, TARGET, Duration::from_micros(50))
                .iter()
                .all(Option::is_none)
        );
        // A timer turn (no packets) at a high rate does not nap either.
        run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
        assert_eq!(
            run(&mut c, &mut t, 1, 0, Duration::from_micros(10)),
            vec![None]
        );
    }

    #[test]
    fn no_naps_while_tun_brings_full_batches() {
        let mut c = Coalescer::new(Duration::from_micros(200));
        let mut t = Instant::now();
        // A download: TSO trains of 40 segments from TUN, one ACK datagram between them.
        let mut naps = Vec::new();
        for _ in 0..500 {
            naps.extend(run_tun(&mut c, &mut t, 1, 40, Duration::from_micros(20)));
            naps.extend(run(&mut c, &mut t, 1, 1, Duration::from_micros(5)));
        }
        assert!(naps.iter().all(Option::is_none), "{naps:?}");
        // The download ends and an upload (single datagrams) goes on: naps resume once a
        // window passed without a full TUN batch.
        let naps = run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
        assert!(naps[..100].iter().all(Option::is_none));
        assert!(naps[500..].iter().all(Option::is_some), "{naps:?}");
    }

    #[test]
    fn full_socket_batches_and_napped_tun_batches_keep_naps_on() {
        let mut c = Coalescer::new(Duration::from_micros(200));
        let mut t = Instant::now();
        run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
        // An upload: a GRO read of 40 datagrams (no nap), then single datagrams nap on.
        assert_eq!(
            run(&mut c, &mut t, 1, 40, Duration::from_micros(10)),
            vec![None]
        );
        assert!(
            run(&mut c, &mut t, 10, 2, Duration::from_micros(20))
                .iter()
                .all(Option::is_some)
        );
        // A nap gathered 30 of the LAN's ACKs on TUN: the nap working, not a batched source.
        assert_eq!(
            run_tun(&mut c, &mut t, 1, 30, Duration::from_micros(200)),
            vec![None]
        );
        let naps = run(&mut c, &mut t, 10, 2, Duration::from_micros(20));
        assert!(naps.iter().all(Option::is_some), "{naps:?}");
    }

    #[test]
    fn stops_napping_when_traffic_stops() {
        let mut c = Coalescer::new(Duration::from_micros(100));
        let mut t = Instant::now();
        run(&mut c, &mut t, 1000, 1, Duration::from_micros(10));
        // A quiet spell, then one packet (a ping): no nap for it.
        assert_eq!(
            run(&mut c, &mut t, 1, 1, Duration::from_millis(20)),
            vec![None]
        );
    }

    #[test]
    fn off_when_zero() {
        let mut c = Coalescer::new(Duration::ZERO);
        let mut t = Instant::now();
        assert!(
            run(&mut c, &mut t, 1000, 1, Duration::from_micros(10))
                .iter()
                .all(Option::is_none)
        );
    }
}
