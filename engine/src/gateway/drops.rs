//! Counters of everything the gateway drops, by reason: the core counts what it refuses,
//! the driver what its sockets and TUN could not take. Logged periodically and on exit.

use std::fmt;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Drop {
    /// Did not parse.
    Malformed,
    /// Data or control for no known session.
    NoSession,
    /// Failed authentication/decryption or replayed.
    BadData,
    /// A client sent a packet with a source address it does not own.
    Spoofed,
    /// A TUN packet for an address no tunnel owns.
    NoRoute,
    /// IPv6 the gateway does not carry: any without `client_pool_v6`, and link-local or
    /// multicast (router solicitations from client TUNs) with it.
    Ipv6,
    /// Session could not send (key exhausted, not established...).
    NotEstablished,
    /// A TCP frame was invalid.
    TcpFraming,
    /// OpenVPN control packet without the control-channel wrapper the gateway requires.
    Unwrapped,
    /// OpenVPN control packet whose tls-auth/tls-crypt authentication failed.
    WrapAuth,
    /// OpenVPN control packet replayed (packet id seen before).
    WrapReplay,
    /// tls-crypt-v2 client key that the gateway's server key does not open.
    WrapKey,
    /// Too many handshakes in progress (new OpenVPN sessions refused), gateway-wide or from
    /// one address.
    Handshakes,
    /// OpenVPN packet answering a stateless reset with a wrong or expired session cookie
    /// (a spoofed or stale one).
    BadCookie,
    /// OpenVPN hard reset from the address of a session heard from recently (forged; a
    /// restarted client is answered once its old session falls silent).
    LiveReset,
    /// The UDP socket's send buffer was full.
    SocketFull,
    /// The TUN device's queue was full.
    TunFull,
    /// A TCP connection's send queue was full (the client does not read).
    StreamFull,
    /// A TCP connection refused at accept: `openvpn.tcp_max_connections` were open.
    TcpLimit,
    /// A TCP connection refused at accept: its source address (an IPv6 /64) already had
    /// `openvpn.tcp_max_per_ip` open.
    TcpPerIp,
    /// A TCP connection closed because its OpenVPN handshake did not complete within
    /// `openvpn.tcp_handshake_timeout`.
    TcpHandshake,
    /// A TCP connection closed because it sent nothing for too long (idle), or did not
    /// read what the gateway sent.
    TcpIdle,
    /// A TCP connection shed at accept because the process was out of file descriptors.
    TcpAccept,
    /// An IKE_SA_INIT request dropped: the worker holds `max_half_open` half-open IKE SAs.
    IkeHalfOpen,
    /// An IKE_SA_INIT request dropped: its source address (an IPv6 /64) holds
    /// `max_half_open_per_ip` half-open IKE SAs.
    IkePerIp,
    /// An IKE_SA_INIT request dropped under load: it offers only MODP groups and the MODP
    /// rate limit is spent.
    IkeModp,
    /// An IKE message of a known SA whose integrity check (ICV) failed.
    IkeIntegrity,
    /// A site's IKE_AUTH dropped: too many failed pre-shared-key authentications of the
    /// connection recently (backoff).
    PskBackoff,
    /// A packet larger than a QUIC connection's current DATAGRAM frame size.
    TooLarge,
}

/// Drop counters.
#[derive(Debug, Default, Clone)]
pub struct Drops {
    counts: std::collections::BTreeMap<Drop, u64>,
}

impl Drops {
    /// Counts one drop.
    pub fn count(&mut self, why: Drop) {
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

    /// Every reason counted so far with its count, by the label the log uses
    /// (`tcpperip`, `badmac`...).
    pub fn by_label(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .iter()
            .map(|(k, v)| (format!("{k:?}").to_lowercase(), *v))
            .collect()
    }

    /// Adds `other`'s counts (the workers of one gateway).
    pub fn add(&mut self, other: &Drops) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_default() += v;
        }
    }
}

impl fmt::Display for Drops {
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
