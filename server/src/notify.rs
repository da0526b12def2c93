//! The systemd service manager's notification protocol (`sd_notify(3)`): with `Type=notify`
//! the unit is "started" when the gateway says `READY=1` (every listener open, the workers
//! running), `STOPPING=1` starts a graceful stop, and with `WatchdogSec=` the gateway sends
//! `WATCHDOG=1` at half the interval from its control loop - a control loop that hangs stops
//! sending and systemd restarts the service. Without `NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, warn};

/// Where notifications go (nothing when the service manager did not ask for them).
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, and `WATCHDOG_USEC` / `WATCHDOG_PID` (the watchdog is ours only
    /// when the PID is ours or not given).
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            let target = match s.strip_prefix('@') {
                #[cfg(target_os = "linux")]
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                #[cfg(not(target_os = "linux"))]
                Some(_) => return None,
                None if s.starts_with('/') => Target::Path(PathBuf::from(s)),
                None => {
                    warn!(notify_socket = %s, "NOTIFY_SOCKET is neither a path nor an abstract socket name; not notifying the service manager");
                    return None;
                }
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, target)),
                Err(e) => {
                    warn!(error = %e, "cannot open a socket to notify the service manager");
                    None
                }
            }
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the service manager's interval), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// The service is up (`status`: one line for `systemctl status`).
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// The service is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: telling clients to reconnect");
    }

    /// The control loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, msg: &str) {
        let Some((sock, target)) = &self.target else {
            return;
        };
        let r = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
            }
        };
        if let Err(e) = r {
            debug!(error = %e, "could not notify the service manager");
        }
    }
}
