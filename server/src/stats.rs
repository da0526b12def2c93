//! Counters of everything the gateway drops, by reason. Logged periodically and on exit;
//! the admin API and Prometheus exporter of a later issue read the same numbers.

use std::fmt;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Drop {
    /// Did not parse as an OpenVPN packet.
    Malformed,
    /// Data or control for no known session.
    NoSession,
    /// Failed authentication/decryption or replayed.
    BadData,
    /// A client sent a packet with a source address it does not own.
    Spoofed,
    /// A TUN packet for an address no tunnel owns.
    NoRoute,
    /// IPv6 (not served yet), e.g. router solicitations from client TUNs.
    Ipv6,
    /// Session could not send (key exhausted, not established...).
    NotEstablished,
    /// A TCP frame was invalid.
    TcpFraming,
    /// OpenVPN control packet without the control-channel wrapper the gateway requires (or
    /// with another one).
    Unwrapped,
    /// OpenVPN control packet whose tls-auth/tls-crypt authentication failed (wrong key,
    /// tampered).
    WrapAuth,
    /// OpenVPN control packet replayed (packet id seen before).
    WrapReplay,
    /// tls-crypt-v2 client key that the gateway's server key does not open.
    WrapKey,
}

/// Drop counters.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    counts: std::collections::BTreeMap<Drop, u64>,
}

impl Stats {
    /// Counts one drop.
    pub fn drop(&mut self, why: Drop) {
        *self.counts.entry(why).or_default() += 1;
    }

    /// Count for one reason.
    pub fn get(&self, why: Drop) -> u64 {
        self.counts.get(&why).copied().unwrap_or(0)
    }

    /// Total drops.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.counts {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}={v}", format!("{k:?}").to_lowercase())?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}
