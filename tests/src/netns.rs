//! Network namespaces the tests create, and the links and routes between them. Every
//! namespace is a [`Netns`] guard: dropping it (also while a test panics) kills whatever
//! still runs inside and deletes it. Traffic in these tests only ever goes to addresses
//! inside such namespaces.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cidr::Ipv4Cidr;
use crate::proc::{Proc, signal};

/// Every namespace the harness creates is named `gh-<tag>-<pid of the test process>`.
const PREFIX: &str = "gh-";

/// A network namespace owned by this test process, with `lo` up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `gh-<tag>-<pid>`. The tag must be unique among the namespaces of one
    /// test process (tests run in parallel threads); the pid keeps concurrent and earlier runs
    /// apart. Namespaces left behind by test processes that were killed outright (no unwinding,
    /// so no Drop) are swept first.
    pub fn new(tag: &str) -> Result<Netns> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);

        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("namespace tag {tag:?} must be non-empty ASCII letters, digits and '-'");
        }
        let name = format!("{PREFIX}{tag}-{}", std::process::id());
        if list()?.contains(&name) {
            bail!("namespace {name} already exists; is another test using the tag {tag:?}?");
        }
        ip(["netns", "add", name.as_str()])?;
        // From here on Drop deletes it, even if setting it up fails.
        let ns = Netns { name };
        ip(["-n", ns.name.as_str(), "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace (`ip netns exec NAME program`),
    /// for callers that need to set more than arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace and returns its output, whatever its status.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd.output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Like [`Netns::exec`] but fails, with stderr, unless the program exits with status 0.
    /// Returns stdout.
    pub fn exec_ok<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = self.exec(program, &args)?;
        if !out.status.success() {
            bail!(
                "`{program} {}` in {} failed ({}): {}",
                shown.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `program args` inside the namespace in the background, stdout and stderr to
    /// `log`. The returned guard stops it.
    pub fn spawn<I, S>(&self, program: &str, args: I, log: &Path) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn(cmd, log)
    }

    /// Pids of every process whose network namespace is this one.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        if let Err(e) = ip(["netns", "del", self.name.as_str()]) {
            eprintln!("warning: could not delete namespace {}: {e:#}", self.name);
        }
    }
}

/// Joins `a` and `b` with a veth pair: `a_if` (address `a_cidr`) in `a`, `b_if` (`b_cidr`) in
/// `b`, both up. Both ends are created directly inside the namespaces, never in the root one.
/// Interface names are at most 15 bytes.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: Ipv4Cidr,
    b: &Netns,
    b_if: &str,
    b_cidr: Ipv4Cidr,
) -> Result<()> {
    for name in [a_if, b_if] {
        if name.is_empty() || name.len() > 15 {
            bail!("interface name {name:?} must be 1 to 15 bytes");
        }
    }
    ip([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        let cidr = cidr.to_string();
        ip(["-n", ns.name.as_str(), "addr", "add", &cidr, "dev", ifname])?;
        ip(["-n", ns.name.as_str(), "link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// Plugs `ns` into bridge `bridge` of the switch namespace `sw`: a veth pair with `sw_if` in
/// `sw` (a port of the bridge, up) and `ns_if` with address `cidr` (e.g. "10.250.1.2/24") in
/// `ns`, up.
pub fn bridge_port(
    sw: &Netns,
    bridge: &str,
    sw_if: &str,
    ns: &Netns,
    ns_if: &str,
    cidr: &str,
) -> Result<()> {
    ip([
        "link", "add", sw_if, "netns", &sw.name, "type", "veth", "peer", "name", ns_if, "netns",
        &ns.name,
    ])?;
    ip([
        "-n",
        sw.name.as_str(),
        "link",
        "set",
        sw_if,
        "master",
        bridge,
        "up",
    ])?;
    ip(["-n", ns.name.as_str(), "addr", "add", cidr, "dev", ns_if])?;
    ip(["-n", ns.name.as_str(), "link", "set", ns_if, "up"])?;
    Ok(())
}

/// Routes `dest` via `via` inside `ns` (`dest` 0.0.0.0/0 is the default route).
pub fn add_route(ns: &Netns, dest: Ipv4Cidr, via: std::net::Ipv4Addr) -> Result<()> {
    let dest = if dest.prefix == 0 {
        "default".to_string()
    } else {
        dest.network().to_string()
    };
    ip([
        "-n",
        ns.name.as_str(),
        "route",
        "add",
        &dest,
        "via",
        &via.to_string(),
    ])
}

/// Turns on IPv4 forwarding inside `ns` (the sysctl is per namespace).
pub fn enable_forwarding(ns: &Netns) -> Result<()> {
    ns.exec_ok("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])?;
    Ok(())
}

/// Runs `ip ARGS`, failing with its stderr unless it succeeds.
fn ip<const N: usize>(args: [&str; N]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Names of all namespaces (`ip netns list`).
fn list() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running ip netns list")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn pids_in(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGTERM to everything in the namespace, up to 2 s to exit, then SIGKILL.
fn kill_all_in(name: &str) {
    let pids = pids_in(name);
    if pids.is_empty() {
        return;
    }
    for pid in &pids {
        signal(*pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !pids_in(name).is_empty() {
        thread::sleep(Duration::from_millis(100));
    }
    for pid in pids_in(name) {
        signal(pid, "KILL");
    }
}

/// Deletes `gh-<tag>-<pid>` namespaces whose test process no longer exists: a test binary
/// killed with SIGKILL (or a timeout) never ran its Drop guards.
fn sweep_stale() {
    let Ok(names) = list() else { return };
    for name in names {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing namespace {name} left behind by test process {pid}");
        kill_all_in(&name);
        let _ = ip(["netns", "del", name.as_str()]);
    }
}
