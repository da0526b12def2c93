//! Site connections whose `remote_gateway` is a DNS name: resolved when the configuration is
//! loaded (start, reload), and again while the connection is not up - each time the engine
//! re-dials it, at most every [`EVERY`] - so a peer that moved to another address is found
//! without a reload. The lookup runs on a blocking thread, never on the control loop or in
//! the engine; when the name points elsewhere now, the control plane applies the running
//! configuration again, which re-resolves it and re-dials the connection at the new address
//! (connections whose address did not change keep their SAs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_engine::gateway::SiteStatus;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::handle::Control;
use crate::config::Connection;
use crate::config::remote_gateway::resolve;

/// The shortest time between two lookups of one connection's name.
pub const EVERY: Duration = Duration::from_secs(30);

/// Whether a connection looks its name up again now: it has a name, it is not connected
/// (down, or connecting: being re-dialled) and its last lookup is [`EVERY`] old.
pub fn due(has_name: bool, state: &str, last: Option<Instant>, now: Instant) -> bool {
    has_name
        && state != "connected"
        && last.is_none_or(|t| now.saturating_duration_since(t) >= EVERY)
}

/// A name's lookup that found another address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The connection.
    pub name: String,
    /// Its DNS name.
    pub host: String,
    /// The address in use.
    pub from: IpAddr,
    /// The address the name has now.
    pub to: IpAddr,
}

/// When each named connection was last looked up, and whether a lookup is under way.
pub struct Reresolver {
    last: HashMap<String, Instant>,
    busy: Arc<AtomicBool>,
}

impl Reresolver {
    /// Every named connection of `conns` was just resolved (the configuration was loaded).
    pub fn new(conns: &[Connection], now: Instant) -> Self {
        let mut me = Self {
            last: HashMap::new(),
            busy: Arc::new(AtomicBool::new(false)),
        };
        me.loaded(conns, now);
        me
    }

    /// The configuration was (re)loaded: its names were resolved now.
    pub fn loaded(&mut self, conns: &[Connection], now: Instant) {
        self.last = conns
            .iter()
            .filter(|c| c.remote_host.is_some())
            .map(|c| (c.name.clone(), now))
            .collect();
    }

    /// Looks up, on a blocking thread, the names of the connections of `conns` that are due
    /// (by their state in `sites`); reports those that moved to `control`.
    pub fn tick(
        &mut self,
        conns: &[Connection],
        sites: &[SiteStatus],
        now: Instant,
        control: &mpsc::Sender<Control>,
    ) {
        if self.busy.load(Ordering::Acquire) {
            return;
        }
        let mut work = Vec::new();
        for c in conns {
            let Some(host) = &c.remote_host else { continue };
            let state = sites
                .iter()
                .find(|s| s.name == c.name)
                .map_or("down", |s| s.state.as_str());
            if due(true, state, self.last.get(&c.name).copied(), now) {
                self.last.insert(c.name.clone(), now);
                work.push((
                    c.name.clone(),
                    host.clone(),
                    c.remote_port,
                    c.remote_gateway,
                ));
            }
        }
        if work.is_empty() {
            return;
        }
        self.busy.store(true, Ordering::Release);
        let busy = self.busy.clone();
        let control = control.clone();
        tokio::task::spawn_blocking(move || {
            let mut moved = Vec::new();
            for (name, host, port, from) in work {
                match resolve(&host, port) {
                    Ok(to) if to != from => moved.push(Moved {
                        name,
                        host,
                        from,
                        to,
                    }),
                    Ok(_) => {
                        debug!(connection = %name, host = %host, "name looked up again: same address")
                    }
                    Err(e) => {
                        info!(connection = %name, error = %e, "name looked up again: no answer; the last address stays")
                    }
                }
            }
            busy.store(false, Ordering::Release);
            if !moved.is_empty() {
                let _ = control.blocking_send(Control::Reresolved(moved));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_connections_that_are_not_up_and_not_looked_up_lately() {
        let now = Instant::now();
        let long_ago = now.checked_sub(EVERY).unwrap_or(now);
        let lately = now.checked_sub(EVERY / 2);
        assert!(due(true, "down", Some(long_ago), now));
        assert!(due(true, "connecting", Some(long_ago), now), "re-dialled");
        assert!(due(true, "down", None, now));
        assert!(
            !due(true, "connected", Some(long_ago), now),
            "up: no lookups"
        );
        assert!(
            !due(false, "down", Some(long_ago), now),
            "an address: nothing to look up"
        );
        if lately.is_some() {
            assert!(!due(true, "down", lately, now), "at most every {EVERY:?}");
        }
    }
}
