//! The path to the gateway, and when the network under it moves it.
//!
//! A driver keeps one [`PathWatch`] per attempt. The OS announces address and default-route
//! changes ([`NetWatch`]); once a burst of them has settled, the watch asks the kernel which
//! local address it would now send from to reach the gateway. Only when that changed (the
//! address went away, another interface took the default route) has the tunnel's path moved:
//! OpenVPN and IKEv2 then reconnect at once, QUIC migrates. A change elsewhere (a second
//! interface coming up, a default route that does not win) leaves the tunnel alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::platform::{NetWatch, UnderlayEvent};

/// Which local address the kernel would send from to reach `peer`: a fresh socket,
/// connected (no packet is sent) and asked its address. A socket keeps the source address of
/// its first connect, so each check takes a new one. `None`: no route.
pub(crate) fn path_source(peer: SocketAddr) -> Option<IpAddr> {
    let sock = wildcard_socket(peer).ok()?;
    sock.connect(peer).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// A UDP socket on the wildcard address of `peer`'s family, any port.
pub(crate) fn wildcard_socket(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(bind)
}

/// The path moved: what the OS announced, and the local address before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathChange {
    pub(crate) events: Vec<UnderlayEvent>,
    pub(crate) from: Option<IpAddr>,
    pub(crate) to: IpAddr,
}

impl std::fmt::Display for PathChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = |a: Option<IpAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        for (i, ev) in self.events.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{ev}")?;
        }
        if !self.events.is_empty() {
            write!(f, "; ")?;
        }
        write!(f, "local address {} -> {}", addr(self.from), self.to)
    }
}

/// Watches the path to one gateway address.
pub(crate) struct PathWatch {
    watch: NetWatch,
    peer: SocketAddr,
    source: Option<IpAddr>,
}

impl PathWatch {
    /// Starts watching the path to `peer`; `tun` is the client's own device.
    pub(crate) fn new(tun: &str, peer: SocketAddr) -> PathWatch {
        PathWatch {
            watch: NetWatch::new(tun),
            peer,
            source: path_source(peer),
        }
    }

    /// Takes the current path as the one in use (after the tunnel's own routes went in: a
    /// gateway address inside a pushed prefix is then reached through the tunnel).
    pub(crate) fn rearm(&mut self) {
        self.source = path_source(self.peer);
    }

    /// Asks the kernel now; a change (`events` empty: found by asking, not announced) is
    /// taken as the new path.
    ///
    /// No route at all is not a new path: the tunnel waits (its keepalives decide how long)
    /// for the network to come back, and one that comes back with the same address needs
    /// nothing at all.
    pub(crate) fn check(&mut self, events: Vec<UnderlayEvent>) -> Option<PathChange> {
        let to = path_source(self.peer).filter(|now| Some(*now) != self.source)?;
        let change = PathChange {
            events,
            from: self.source,
            to,
        };
        self.source = Some(to);
        Some(change)
    }

    /// Waits until the network changed under the tunnel and moved its path.
    pub(crate) async fn moved(&mut self) -> PathChange {
        loop {
            let events = self.watch.settled().await;
            if let Some(change) = self.check(events.clone()) {
                return change;
            }
            tracing::info!(
                events = ?events.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                source = ?self.source,
                now = ?path_source(self.peer),
                "an address or default route changed, but not the path to the gateway"
            );
        }
    }
}
