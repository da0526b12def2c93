//! The systemd service manager's notification protocol (`sd_notify(3)`): with `Type=notify`
//! the unit is "started" when the gateway says `READY=1` (every listener open, the workers
//! running), `STOPPING=1` starts a graceful stop, and with `WatchdogSec=` the gateway sends
//! `WATCHDOG=1` at half the interval from its control loop - a control loop that hangs stops
//! sending and systemd restarts the service. Without `NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing. Used by the gateway and by the client service.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go (nothing when the service manager did not ask for them).
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

/// See [`Notifier::watchdog_timer`].
pub struct WatchdogTimer(Option<tokio::time::Interval>);

impl WatchdogTimer {
    /// Resolves when the next `WATCHDOG=1` is due (never without a watchdog).
    pub async fn due(&mut self) {
        match &mut self.0 {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, and `WATCHDOG_USEC` / `WATCHDOG_PID` (the watchdog is ours only
    /// when the PID is ours or not given). The second value says why a `NOTIFY_SOCKET` that
    /// is set cannot be used (for the caller's log).
    pub fn from_env() -> (Self, Option<String>) {
        let mut problem = None;
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            let target = match s.strip_prefix('@') {
                #[cfg(target_os = "linux")]
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                #[cfg(not(target_os = "linux"))]
                Some(_) => return None,
                None if s.starts_with('/') => Target::Path(PathBuf::from(s)),
                None => {
                    problem = Some(format!(
                        "NOTIFY_SOCKET {s:?} is neither a path nor an abstract socket name; not notifying the service manager"
                    ));
                    return None;
                }
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, target)),
                Err(e) => {
                    problem = Some(format!(
                        "cannot open a socket to notify the service manager: {e}"
                    ));
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
        (Notifier { target, watchdog }, problem)
    }

    /// When to send `WATCHDOG=1`: at once, then every half of the service manager's
    /// interval; never without a watchdog.
    pub fn watchdog_timer(&self) -> WatchdogTimer {
        WatchdogTimer(self.watchdog.map(|w| tokio::time::interval(w / 2)))
    }

    /// The service is up (`status`: one line for `systemctl status`).
    pub fn ready(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ))
    }

    /// The service is stopping (`status`: what it is doing meanwhile).
    pub fn stopping(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!("STOPPING=1\nSTATUS={status}"))
    }

    /// The control loop is alive.
    pub fn watchdog(&self) -> std::io::Result<()> {
        self.send("WATCHDOG=1")
    }

    fn send(&self, msg: &str) -> std::io::Result<()> {
        let Some((sock, target)) = &self.target else {
            return Ok(());
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
        r.map(|_| ())
    }
}
