//! The throughput graph's data: counter samples taken once a second from the latest status,
//! turned into receive and send rates over the last five minutes.
//!
//! Sampling on the app's clock (rather than on each status update) keeps the graph moving
//! while the link is idle: the service only reports counters when they change.

use std::collections::VecDeque;

use gatehouse_client::status::Counters;

/// How far back the graph reaches, in seconds.
pub const WINDOW_SECS: f64 = 300.0;
/// Seconds between samples.
pub const SAMPLE_SECS: f64 = 1.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    counters: Counters,
}

/// Counter samples of one connection.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    samples: VecDeque<Sample>,
}

/// Rates ready to plot: x is seconds relative to now (negative), y is bytes per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Receive rate.
    pub rx: Vec<[f64; 2]>,
    /// Send rate.
    pub tx: Vec<[f64; 2]>,
}

impl Throughput {
    /// Offers the counters seen at `at` (seconds since the epoch). Takes a sample when a
    /// sample period has passed since the last one, and starts over when the counters went
    /// backwards (a new connection). Returns whether a sample was taken.
    pub fn offer(&mut self, at: f64, counters: Counters) -> bool {
        if let Some(last) = self.samples.back() {
            let restarted = counters.rx_bytes < last.counters.rx_bytes
                || counters.tx_bytes < last.counters.tx_bytes;
            if restarted || at < last.at {
                self.samples.clear();
            } else if at - last.at < SAMPLE_SECS {
                return false;
            }
        }
        self.samples.push_back(Sample { at, counters });
        while self
            .samples
            .front()
            .is_some_and(|s| at - s.at > WINDOW_SECS + SAMPLE_SECS)
        {
            self.samples.pop_front();
        }
        true
    }

    /// Forgets every sample (disconnected).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is nothing to plot yet.
    pub fn is_empty(&self) -> bool {
        self.samples.len() < 2
    }

    /// The rates between consecutive samples within the window, placed at the later sample.
    pub fn series(&self, now: f64) -> Series {
        let mut series = Series::default();
        for (a, b) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            let x = b.at - now;
            let dt = b.at - a.at;
            if x < -WINDOW_SECS || dt <= 0.0 {
                continue;
            }
            let per_sec = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
            series
                .rx
                .push([x, per_sec(b.counters.rx_bytes, a.counters.rx_bytes)]);
            series
                .tx
                .push([x, per_sec(b.counters.tx_bytes, a.counters.tx_bytes)]);
        }
        series
    }

    /// The latest receive and send rates (bytes per second).
    pub fn latest(&self) -> Option<(f64, f64)> {
        let last = self.samples.back()?;
        let series = self.series(last.at);
        Some((series.rx.last()?[1], series.tx.last()?[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(rx: u64, tx: u64) -> Counters {
        Counters {
            rx_bytes: rx,
            tx_bytes: tx,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_come_from_deltas_once_a_second() {
        let mut t = Throughput::default();
        assert!(t.offer(100.0, c(0, 0)));
        assert!(!t.offer(100.5, c(500, 50)), "too soon for a sample");
        assert!(t.offer(101.0, c(1000, 100)));
        assert!(t.offer(103.0, c(3000, 100)));
        let s = t.series(103.0);
        assert_eq!(s.rx, vec![[-2.0, 1000.0], [0.0, 1000.0]]);
        assert_eq!(s.tx, vec![[-2.0, 100.0], [0.0, 0.0]]);
        assert_eq!(t.latest(), Some((1000.0, 0.0)));
        // Later, the same points slide left.
        assert_eq!(t.series(110.0).rx[1], [-7.0, 1000.0]);
    }

    #[test]
    fn a_new_connection_starts_over_and_old_samples_age_out() {
        let mut t = Throughput::default();
        for i in 0..400u64 {
            t.offer(i as f64, c(i * 10, i));
        }
        assert!(t.len() <= 302, "{}", t.len());
        assert!(t.series(399.0).rx.iter().all(|p| p[0] >= -WINDOW_SECS));
        t.offer(400.0, c(5, 5));
        assert_eq!(t.len(), 1);
        assert!(t.is_empty());
    }
}
