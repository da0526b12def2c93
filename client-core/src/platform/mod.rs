//! Host networking the client changes while connected: routes and DNS. Every change is
//! written to a journal in the state directory before it is made, so a disconnect, a Ctrl-C
//! or the next start after a crash can undo exactly what was done.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use crate::routing::Ipv6Default;

mod current_network;
pub use current_network::current_network;

mod killswitch;
pub use killswitch::{KillSwitch, TABLE as KILL_SWITCH_TABLE};
pub mod split_dns;
use split_dns::{SplitDns, SplitRoutes};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "linux")]
mod netlink;

// macOS: built there; its unit tests (what each change runs) run on every platform.
#[cfg(any(target_os = "macos", test))]
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
use unsupported as os;

/// What the tunnel needs from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// The TUN interface (already created and addressed).
    pub tun: String,
    /// Prefixes to route into the tunnel (split tunnel).
    pub routes: Vec<Ipv4Net>,
    /// Route everything into the tunnel (full tunnel).
    pub redirect_gateway: bool,
    /// What a full tunnel does to IPv6: into the tunnel, or unreachable (Linux, and macOS and
    /// Windows untested: see [`ipv6_full_changes`]). The IPv6 prefixes themselves go with the
    /// tunnel's IPv6 address ([`NetConfig::add_tun_ipv6`]).
    pub ipv6_default: Ipv6Default,
    /// The gateway's public address: kept on the old path when redirecting everything.
    pub server: IpAddr,
    /// The gateway's address inside the tunnel.
    pub tunnel_gateway: Ipv4Addr,
    /// DNS servers pushed by the gateway.
    pub dns: Vec<IpAddr>,
    /// Split DNS: only names at or under these domains go to `dns`, the others to the
    /// host's own resolver. Empty: all names go to `dns` (full-tunnel DNS).
    pub dns_domains: Vec<String>,
}

/// One change made to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// `ip route add NET dev TUN`.
    Route {
        /// Destination.
        net: Ipv4Net,
        /// Device.
        dev: String,
    },
    /// A host route to the gateway via the previous default path.
    HostRoute {
        /// The gateway's address.
        dst: Ipv4Addr,
        /// `ip route` arguments that reached it before.
        via: Vec<String>,
        /// The host had a route to exactly `dst/32` already: it is left alone, and undo
        /// must not delete it.
        #[serde(default)]
        preexisting: bool,
    },
    /// `ip -6 route add NET dev TUN` (IPv6 full tunnel: `::/1`, `8000::/1`).
    Route6 {
        /// Destination.
        net: Ipv6Net,
        /// Device.
        dev: String,
    },
    /// `ip -6 route add unreachable NET`: a full tunnel without IPv6 inside keeps IPv6 from
    /// going around it.
    Unreachable6 {
        /// Destination.
        net: Ipv6Net,
    },
    /// A host route to an IPv6 gateway via the previous path, when IPv6 is redirected.
    HostRoute6 {
        /// The gateway's address.
        dst: Ipv6Addr,
        /// `ip -6 route` arguments that reached it before.
        via: Vec<String>,
        /// The host had a route to exactly `dst/128` already.
        preexisting: bool,
    },
    /// resolv.conf replaced; `backup` holds the previous contents.
    ResolvConf {
        /// The file changed.
        path: PathBuf,
        /// Where the original is kept.
        backup: PathBuf,
    },
    /// The tunnel's DNS set on its link: systemd-resolved (Linux), the dynamic store (macOS),
    /// the interface's DNS setting (Windows); reverted with the link.
    Resolved {
        /// Device.
        dev: String,
    },
}

/// Applies and undoes [`NetPlan`]s, journaling every change.
#[derive(Debug)]
pub struct NetConfig {
    journal: PathBuf,
    dir: PathBuf,
    applied: Vec<Change>,
    /// The kill switch in force, if any (see [`KillSwitch`]: it outlives this process).
    kill_switch: Option<KillSwitch>,
    /// The split-DNS forwarder while resolv.conf points at it.
    split_dns: Option<SplitDns>,
}

/// A networking step failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

impl NetConfig {
    /// A configurator keeping its journal in `state_dir/run/`.
    pub fn new(state_dir: &Path) -> Self {
        let dir = state_dir.join("run");
        Self {
            journal: dir.join("network.json"),
            dir,
            applied: Vec::new(),
            kill_switch: None,
            split_dns: None,
        }
    }

    fn kill_switch_file(&self) -> PathBuf {
        self.dir.join("killswitch.json")
    }

    /// Keeps a kill switch a previous run left (it crashed, was killed or upgraded while the
    /// kill switch was on): loads its table again and keeps it until
    /// [`release_kill_switch`](Self::release_kill_switch). Fail closed: the user asked for no
    /// leaks, and only they say when that ends. Returns whether one was kept.
    pub fn keep_kill_switch(&mut self) -> Result<bool, NetError> {
        let Ok(text) = std::fs::read_to_string(self.kill_switch_file()) else {
            return Ok(false);
        };
        let ks: KillSwitch = serde_json::from_str(&text)
            .map_err(|e| NetError(format!("{}: {e}", self.kill_switch_file().display())))?;
        self.engage_kill_switch(ks)?;
        Ok(true)
    }

    /// Turns the kill switch on (or replaces its rules): written down first, then loaded.
    pub fn engage_kill_switch(&mut self, ks: KillSwitch) -> Result<(), NetError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| NetError(format!("cannot create {}: {e}", self.dir.display())))?;
        let text =
            serde_json::to_string_pretty(&ks).map_err(|e| NetError(format!("kill switch: {e}")))?;
        let file = self.kill_switch_file();
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .map_err(|e| NetError(format!("cannot write {}: {e}", file.display())))?;
        self.kill_switch = Some(ks.clone());
        os::load_kill_switch(&ks.ruleset())
    }

    /// Turns the kill switch off: the table goes, then its file.
    pub fn release_kill_switch(&mut self) -> Result<(), NetError> {
        os::remove_kill_switch()?;
        self.kill_switch = None;
        match std::fs::remove_file(self.kill_switch_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError(format!(
                "cannot remove {}: {e}",
                self.kill_switch_file().display()
            ))),
            _ => Ok(()),
        }
    }

    /// The kill switch in force.
    pub fn kill_switch(&self) -> Option<&KillSwitch> {
        self.kill_switch.as_ref()
    }

    /// Undoes what a previous run left behind (it crashed or was killed). Returns what it
    /// undid, for the log.
    pub fn recover(&mut self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(&self.journal) else {
            return Vec::new();
        };
        self.applied = serde_json::from_str(&text).unwrap_or_default();
        let undone: Vec<String> = self.applied.iter().map(|c| format!("{c:?}")).collect();
        self.undo();
        undone
    }

    /// Gives the tunnel's device `tun` its IPv6 address and routes the pushed IPv6 prefixes
    /// into it (OpenVPN's `ifconfig-ipv6`, `route-ipv6`). Nothing is journalled: the
    /// address and the routes go with the device.
    pub fn add_tun_ipv6(
        &mut self,
        tun: &str,
        v6: &gatehouse_engine::pool6::Ipv6Assignment,
    ) -> Result<(), NetError> {
        os::tun_ipv6(tun, v6)
    }

    /// Makes the host use the tunnel as `plan` says. On error, whatever was applied stays
    /// journaled; call [`undo`](Self::undo).
    pub fn apply(&mut self, plan: &NetPlan) -> Result<(), NetError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| NetError(format!("cannot create {}: {e}", self.dir.display())))?;
        // The kill switch learns the tunnel's device and DNS servers before DNS points there.
        if let Some(ks) = &self.kill_switch
            && (ks.tun != plan.tun || ks.dns != plan.dns)
        {
            let ks = KillSwitch {
                tun: plan.tun.clone(),
                dns: plan.dns.clone(),
                ..ks.clone()
            };
            self.engage_kill_switch(ks)?;
        }
        // With the kill switch on, DNS stays in the tunnel: split DNS would send the other
        // names to the local resolver around it.
        let mut plan = plan.clone();
        if self.kill_switch.is_some() && !plan.dns_domains.is_empty() {
            tracing::info!("kill switch on: all DNS through the tunnel, pushed domains ignored");
            plan.dns_domains.clear();
        }
        for change in os::plan_changes(&plan, &self.dir)? {
            if let Change::ResolvConf { path, .. } = &change
                && !plan.dns_domains.is_empty()
            {
                self.start_split_dns(&mut plan, path);
            }
            // Journal first: a crash between the two leaves an entry whose undo is a no-op.
            self.applied.push(change.clone());
            self.save()?;
            os::apply(&change, &plan)?;
        }
        Ok(())
    }

    /// Starts the forwarder that resolv.conf will point at; when it cannot run (no
    /// privileges for port 53), DNS falls back to the tunnel for all names.
    fn start_split_dns(&mut self, plan: &mut NetPlan, resolv_conf: &Path) {
        self.split_dns = None;
        let before = std::fs::read_to_string(resolv_conf).unwrap_or_default();
        let routes = SplitRoutes {
            domains: plan.dns_domains.clone(),
            tunnel: plan.dns.clone(),
            local: split_dns::nameservers(&before, split_dns::LISTEN.ip()),
        };
        match SplitDns::start(split_dns::LISTEN, routes) {
            Ok(f) => {
                tracing::info!(
                    domains = ?f.routes().domains,
                    tunnel = ?f.routes().tunnel,
                    local = ?f.routes().local,
                    "split DNS: names under the pushed domains go to the tunnel, the rest to the previous nameservers"
                );
                self.split_dns = Some(f);
            }
            Err(e) => {
                tracing::warn!(error = %e, "split DNS unavailable: all DNS goes through the tunnel");
                plan.dns_domains.clear();
            }
        }
    }

    /// The split-DNS forwarder, while it runs.
    pub fn split_dns(&self) -> Option<&SplitDns> {
        self.split_dns.as_ref()
    }

    /// Reverts every change, newest first. Best effort: a change that is already gone (the
    /// TUN device vanished with its routes) is not an error.
    pub fn undo(&mut self) {
        if let Some(f) = self.split_dns.take() {
            let c = f.counters();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                to_tunnel = n(&c.to_tunnel),
                to_local = n(&c.to_local),
                answers = n(&c.answers),
                malformed = n(&c.malformed),
                dropped = n(&c.dropped),
                "split DNS stopped"
            );
        }
        while let Some(change) = self.applied.pop() {
            if let Err(e) = os::undo(&change) {
                tracing::warn!(change = ?change, error = %e, "could not undo a network change");
            }
            let _ = self.save();
        }
        let _ = std::fs::remove_file(&self.journal);
    }

    /// What is currently applied.
    pub fn applied(&self) -> &[Change] {
        &self.applied
    }

    fn save(&self) -> Result<(), NetError> {
        let text = serde_json::to_string_pretty(&self.applied)
            .map_err(|e| NetError(format!("journal: {e}")))?;
        let tmp = self.journal.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &self.journal))
            .map_err(|e| NetError(format!("cannot write {}: {e}", self.journal.display())))
    }
}

/// The two halves of the IPv6 address space: more specific than any default route, so they
/// win over it without replacing it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn ipv6_halves() -> [Ipv6Net; 2] {
    [
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0),
    ]
    .map(|a| Ipv6Net::new_assert(a, 1))
}

/// The prefixes `plan` routes into the tunnel: its routes, and for a full tunnel the two
/// halves of the address space (more specific than the default route, which stays).
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn tunnel_routes(plan: &NetPlan) -> Vec<Ipv4Net> {
    let mut routes: Vec<Ipv4Net> = plan.routes.iter().map(Ipv4Net::trunc).collect();
    if plan.redirect_gateway {
        for first in [0u8, 128] {
            // A /1 is always a valid prefix.
            routes.extend(Ipv4Net::new(Ipv4Addr::new(first, 0, 0, 0), 1).ok());
        }
    }
    routes
}

/// `plan` as changes on a host whose DNS is set per link (macOS, Windows): for a full tunnel
/// a host route keeping the gateway on `path_to(gateway)` (how the host reaches it now),
/// [`tunnel_routes`] on the tunnel's device, the IPv6 halves into the tunnel or unreachable
/// ([`ipv6_full_changes`]), and its DNS.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn link_changes(
    plan: &NetPlan,
    path_to: impl Fn(Ipv4Addr) -> Result<Vec<String>, NetError>,
    path6_to: impl Fn(Ipv6Addr) -> Result<Vec<String>, NetError>,
) -> Result<Vec<Change>, NetError> {
    let mut changes = ipv6_full_changes(plan, path6_to)?;
    if plan.redirect_gateway
        && let IpAddr::V4(server) = plan.server
    {
        changes.push(Change::HostRoute {
            dst: server,
            via: path_to(server)?,
            preexisting: false,
        });
    }
    for net in tunnel_routes(plan) {
        changes.push(Change::Route {
            net,
            dev: plan.tun.clone(),
        });
    }
    if !plan.dns.is_empty() {
        changes.push(Change::Resolved {
            dev: plan.tun.clone(),
        });
    }
    Ok(changes)
}

/// IPv6 in a full tunnel on macOS and Windows (Linux has its own, with `ip -6`): an IPv6
/// gateway kept on its path (`path6_to`), then `::/1` and `8000::/1` into the tunnel when it
/// carries IPv6, else unreachable, so no IPv6 packet leaves around the tunnel.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn ipv6_full_changes(
    plan: &NetPlan,
    path6_to: impl Fn(Ipv6Addr) -> Result<Vec<String>, NetError>,
) -> Result<Vec<Change>, NetError> {
    let mut changes = Vec::new();
    if plan.ipv6_default == Ipv6Default::Untouched {
        return Ok(changes);
    }
    if let IpAddr::V6(server) = plan.server {
        changes.push(Change::HostRoute6 {
            dst: server,
            via: path6_to(server)?,
            preexisting: false,
        });
    }
    for net in ipv6_halves() {
        changes.push(match plan.ipv6_default {
            Ipv6Default::Tunnel => Change::Route6 {
                net,
                dev: plan.tun.clone(),
            },
            _ => Change::Unreachable6 { net },
        });
    }
    Ok(changes)
}

/// The resolv.conf the client edits when systemd-resolved is not in charge. Tests point
/// `GATEHOUSE_RESOLV_CONF` at a scratch file so they never touch the host's.
pub fn resolv_conf_path() -> PathBuf {
    std::env::var_os("GATEHOUSE_RESOLV_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"))
}

/// A change of the network under the tunnel, as the OS announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnderlayEvent {
    /// An address was added to or removed from an interface.
    Address {
        /// Added (else removed).
        added: bool,
        /// The interface's own address.
        addr: IpAddr,
        /// The interface.
        ifindex: u32,
    },
    /// A default route was added or removed.
    DefaultRoute {
        /// Added (else removed).
        added: bool,
        /// Its next hop, if it has one.
        gateway: Option<IpAddr>,
        /// Its interface, if it names one.
        ifindex: Option<u32>,
    },
    /// The OS dropped announcements the client was too slow to read: something changed.
    Overrun,
}

impl UnderlayEvent {
    /// The interface the event is about.
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            UnderlayEvent::Address { ifindex, .. } => Some(*ifindex),
            UnderlayEvent::DefaultRoute { ifindex, .. } => *ifindex,
            UnderlayEvent::Overrun => None,
        }
    }
}

impl std::fmt::Display for UnderlayEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = |added: bool| if added { "added" } else { "removed" };
        match self {
            UnderlayEvent::Address {
                added,
                addr,
                ifindex,
            } => write!(
                f,
                "address {addr} {} {}",
                if *added { "added to" } else { "removed from" },
                interface_name(*ifindex)
            ),
            UnderlayEvent::DefaultRoute {
                added,
                gateway,
                ifindex,
            } => {
                write!(f, "default route")?;
                if let Some(gw) = gateway {
                    write!(f, " via {gw}")?;
                }
                if let Some(i) = ifindex {
                    write!(f, " dev {}", interface_name(*i))?;
                }
                write!(f, " {}", verb(*added))
            }
            UnderlayEvent::Overrun => write!(f, "missed network announcements"),
        }
    }
}

#[cfg(target_os = "linux")]
fn interface_name(index: u32) -> String {
    netlink::interface_name(index)
}

#[cfg(not(target_os = "linux"))]
fn interface_name(index: u32) -> String {
    format!("interface {index}")
}

/// How long the network must be quiet before a burst of changes counts as one: removing an
/// address, adding another and a default route are three commands (or one DHCP renewal), and
/// the tunnel should move once, onto the finished network.
pub const SETTLE: Duration = Duration::from_millis(250);
/// The longest a burst is waited out: a flapping link must not hold the reconnect forever.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Watches the host's addresses and default routes - the network under the tunnel - so the
/// client can move the tunnel as soon as it changes instead of waiting for a keepalive to
/// time out. Linux: a netlink socket (see `netlink.rs`); events on the client's own TUN
/// device are never reported. Elsewhere it reports nothing yet.
pub struct NetWatch {
    #[cfg(target_os = "linux")]
    inner: Option<netlink::Watcher>,
    /// The burst being waited out: its events, when it began, when it was last added to.
    burst: Vec<UnderlayEvent>,
    began: Option<tokio::time::Instant>,
    last: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for NetWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetWatch")
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl NetWatch {
    /// Starts watching; `tun` is the client's own device, whose changes are not the
    /// network's. Must run inside a tokio runtime. When the OS refuses, the watch reports
    /// nothing (the tunnel's keepalives still notice a dead path, only later).
    pub fn new(tun: &str) -> NetWatch {
        #[cfg(target_os = "linux")]
        let inner = match netlink::Watcher::new(tun) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for network changes (netlink)");
                None
            }
        };
        #[cfg(not(target_os = "linux"))]
        let _ = tun;
        NetWatch {
            #[cfg(target_os = "linux")]
            inner,
            burst: Vec::new(),
            began: None,
            last: None,
        }
    }

    /// The next change; never returns where the OS tells nothing. Cancel-safe.
    pub async fn next(&mut self) -> UnderlayEvent {
        #[cfg(target_os = "linux")]
        if let Some(w) = &mut self.inner {
            match w.next().await {
                Ok(ev) => return ev,
                Err(e) => {
                    tracing::warn!(error = %e, "stopped watching for network changes");
                    self.inner = None;
                }
            }
        }
        std::future::pending().await
    }

    /// The next burst of changes, once the network has been quiet for [`SETTLE`] (or after
    /// 2 s of continuous change). Cancel-safe: a burst being waited out is kept, so a driver
    /// may drop this future whenever a packet comes and call it again.
    pub async fn settled(&mut self) -> Vec<UnderlayEvent> {
        loop {
            let deadline = match (self.began, self.last) {
                (Some(began), Some(last)) => Some((last + SETTLE).min(began + SETTLE_MAX)),
                _ => None,
            };
            let ev = match deadline {
                None => self.next().await,
                Some(deadline) => tokio::select! {
                    ev = self.next() => ev,
                    _ = tokio::time::sleep_until(deadline) => {
                        self.began = None;
                        self.last = None;
                        return std::mem::take(&mut self.burst);
                    }
                },
            };
            let now = tokio::time::Instant::now();
            self.began.get_or_insert(now);
            self.last = Some(now);
            if !self.burst.contains(&ev) {
                self.burst.push(ev);
            }
        }
    }
}
