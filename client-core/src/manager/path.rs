//! The path to the gateway, and when the network under it moves it.
//!
//! A driver keeps one [`PathWatch`] per attempt. The OS announces address and default-route
//! changes ([`NetWatch`]); once a burst of them has settled, the watch asks the kernel which
//! local address it would now send from to reach the gateway. Only when that changed (the
//! address went away, another interface took the default route) has the tunnel's path moved:
//! OpenVPN and IKEv2 then reconnect at once, QUIC migrates. A change elsewhere (a second
//! interface coming up, a default route that does not win) leaves the tunnel alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use std::time::Duration;

use super::sleep::{CHECK_EVERY, Clocks, SleepWatch};
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

/// The path moved: what the OS announced, and the local address before and after; or the
/// host woke from sleep (`slept`), after which the path is taken as new whatever its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathChange {
    pub(crate) events: Vec<UnderlayEvent>,
    pub(crate) from: Option<IpAddr>,
    pub(crate) to: IpAddr,
    pub(crate) slept: Option<Duration>,
}

impl std::fmt::Display for PathChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = |a: Option<IpAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        if let Some(d) = self.slept {
            write!(f, "resumed from sleep ({} s asleep); ", d.as_secs())?;
        }
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

/// Watches the path to one gateway address, and the host's sleeps.
pub(crate) struct PathWatch {
    watch: NetWatch,
    peer: SocketAddr,
    source: Option<IpAddr>,
    sleep: SleepWatch,
    /// When the clocks are compared next.
    next_sleep_check: tokio::time::Instant,
}

impl PathWatch {
    /// Starts watching the path to `peer`; `tun` is the client's own device.
    pub(crate) fn new(tun: &str, peer: SocketAddr) -> PathWatch {
        Self::with_clocks(tun, peer, super::sleep::system_clocks)
    }

    /// [`new`](Self::new) reading `clocks` for sleeps.
    pub(crate) fn with_clocks(tun: &str, peer: SocketAddr, clocks: Clocks) -> PathWatch {
        PathWatch {
            watch: NetWatch::new(tun),
            peer,
            source: path_source(peer),
            sleep: SleepWatch::new(clocks),
            next_sleep_check: tokio::time::Instant::now() + CHECK_EVERY,
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
            slept: None,
        };
        self.source = Some(to);
        Some(change)
    }

    /// Waits until the network changed under the tunnel and moved its path, or the host
    /// woke from sleep. Cancel-safe (a driver calls it again each turn of its loop).
    pub(crate) async fn moved(&mut self) -> PathChange {
        loop {
            let events = tokio::select! {
                events = self.watch.settled() => events,
                _ = tokio::time::sleep_until(self.next_sleep_check) => {
                    self.next_sleep_check = tokio::time::Instant::now() + CHECK_EVERY;
                    let Some(slept) = self.sleep.check() else { continue };
                    // Without a route yet (the network is still coming up) the next
                    // change of address or route finds the path.
                    let Some(to) = path_source(self.peer) else { continue };
                    let from = self.source.replace(to);
                    return PathChange { events: Vec::new(), from, to, slept: Some(slept) };
                }
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static ASLEEP_S: AtomicU64 = AtomicU64::new(0);

    /// Monotonic time from the real clock; BOOTTIME ahead of it by `ASLEEP_S`.
    fn clocks() -> Option<(Duration, Duration)> {
        let mono =
            super::super::sleep::system_clocks().map_or(Duration::from_secs(100), |(m, _)| m);
        Some((
            mono,
            mono + Duration::from_secs(ASLEEP_S.load(Ordering::SeqCst)),
        ))
    }

    /// A host that slept is a moved path at the next clock check, with the same address;
    /// one that did not sleep is not.
    #[tokio::test(flavor = "current_thread")]
    async fn waking_from_sleep_moves_the_path() {
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut w = PathWatch::with_clocks("gh-test-none", peer, clocks);
        let quiet = tokio::time::timeout(CHECK_EVERY * 2, w.moved()).await;
        assert!(quiet.is_err(), "moved without a sleep: {quiet:?}");
        ASLEEP_S.store(900, Ordering::SeqCst);
        let change = tokio::time::timeout(CHECK_EVERY * 2, w.moved())
            .await
            .expect("the sleep is noticed within a check");
        assert_eq!(change.slept, Some(Duration::from_secs(900)));
        assert_eq!(change.to, IpAddr::from([127, 0, 0, 1]));
        assert!(
            change
                .to_string()
                .starts_with("resumed from sleep (900 s asleep)"),
            "{change}"
        );
    }
}
