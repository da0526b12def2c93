//! A ping left running in the background while something happens to the tunnel (a handoff, a
//! failover, a revocation), read afterwards: how many replies came back, when, and the
//! longest silence between two of them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::proc::Proc;
use crate::strongswan::parse_ping_summary;

/// `ping -n -D -O -i INTERVAL -W 1 -c COUNT ADDR` in a namespace: every reply line carries its
/// arrival time (`-D`), and a missing reply is reported as it happens (`-O`).
pub struct BackgroundPing {
    proc: Proc,
}

/// What a finished [`BackgroundPing`] saw.
#[derive(Debug)]
pub struct PingLog {
    pub sent: u32,
    pub received: u32,
    /// When each reply arrived, in seconds since the Unix epoch.
    pub reply_times: Vec<f64>,
    /// ping's whole output.
    pub output: String,
}

impl BackgroundPing {
    /// Starts `count` pings `interval` seconds apart (ping's `-i`, e.g. "0.1") from `ns` to
    /// `addr`, logging to `log`.
    pub fn start(
        ns: &Netns,
        addr: Ipv4Addr,
        interval: &str,
        count: u32,
        log: &Path,
    ) -> Result<Self> {
        let count = count.to_string();
        let addr = addr.to_string();
        let args = [
            "-n", "-D", "-O", "-i", interval, "-W", "1", "-c", &count, &addr,
        ];
        Ok(Self {
            proc: ns.spawn("ping", args, log)?,
        })
    }

    /// Waits up to `timeout` for the pings to end, then reads the log.
    pub fn finish(&self, timeout: Duration) -> Result<PingLog> {
        let deadline = Instant::now() + timeout;
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                bail!(
                    "ping still running after {timeout:?}:\n{}",
                    self.proc.log_tail(5)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        let output = self.proc.log_contents();
        let (sent, received) =
            parse_ping_summary(&output).with_context(|| format!("no ping summary:\n{output}"))?;
        Ok(PingLog {
            sent,
            received,
            reply_times: reply_times(&output),
            output,
        })
    }
}

impl PingLog {
    /// (sent, received, longest gap in seconds).
    pub fn counts_and_gap(&self) -> (u32, u32, f64) {
        (self.sent, self.received, self.longest_gap())
    }

    /// The longest time between two consecutive replies, in seconds (0 with fewer than two).
    pub fn longest_gap(&self) -> f64 {
        self.reply_times
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max)
    }

    /// The arrival time of the last reply (None if none came).
    pub fn last_reply(&self) -> Option<f64> {
        self.reply_times.iter().copied().reduce(f64::max)
    }
}

/// The `[epoch.micros]` stamps of the reply lines of `ping -D` output.
fn reply_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.strip_prefix('['))
        .filter_map(|l| l.split(']').next())
        .filter_map(|t| t.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reply_times_and_gaps() {
        let out = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n\
                   [1700000000.100000] 64 bytes from 10.0.0.1: icmp_seq=1 ttl=63 time=0.5 ms\n\
                   [1700000000.400000] no answer yet for icmp_seq=2\n\
                   [1700000000.700000] 64 bytes from 10.0.0.1: icmp_seq=3 ttl=63 time=0.5 ms\n\
                   [1700000000.800000] 64 bytes from 10.0.0.1: icmp_seq=4 ttl=63 time=0.5 ms\n\
                   \n--- 10.0.0.1 ping statistics ---\n\
                   4 packets transmitted, 3 received, 25% packet loss, time 300ms\n";
        let log = PingLog {
            sent: 4,
            received: 3,
            reply_times: reply_times(out),
            output: out.into(),
        };
        assert_eq!(log.reply_times.len(), 3);
        assert!(
            (log.longest_gap() - 0.6).abs() < 1e-6,
            "{}",
            log.longest_gap()
        );
        assert_eq!(log.last_reply(), Some(1_700_000_000.8));
        assert_eq!(parse_ping_summary(out), Some((4, 3)));
    }
}
