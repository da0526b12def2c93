//! FRR (Debian's `frr`: zebra + bgpd) in a test's namespace, for the BGP site tests.
//!
//! Every instance runs in its own FRR "pathspace" (`-N <name>`): its vty and zserv sockets,
//! configuration, pid files and log live in `/run/frr/<name>/` (owned by the `frr` user, as
//! the daemons drop root), so instances in different namespaces - and a system FRR, if one
//! runs - never share a socket. `vtysh -N <name>` talks to one instance. Dropping the guard
//! stops both daemons (by their pid files) and removes the folder; the namespace's own
//! guard kills whatever is left.
//!
//! ```text
//! let frr = Frr::start(&lab.c.gw, BGPD_CONF)?;   // zebra, then bgpd with that config
//! frr.wait_route("10.231.1.0/24", Duration::from_secs(20))?;   // in bgpd's table
//! ```

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// Where the daemons live.
pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const BGPD: &str = "/usr/lib/frr/bgpd";
/// FRR's run directory; each instance gets `<RUN_DIR>/<name>`.
const RUN_DIR: &str = "/run/frr";
const POLL: Duration = Duration::from_millis(200);
const DAEMON_UP: Duration = Duration::from_secs(10);

/// One zebra + bgpd pair in a namespace.
#[derive(Debug)]
pub struct Frr {
    /// The pathspace: the namespace's name.
    name: String,
    dir: PathBuf,
}

impl Frr {
    /// Starts zebra, then bgpd with `bgpd_conf`, in `ns` (pathspace = the namespace's name).
    /// Returns once both answer on their vty sockets.
    pub fn start(ns: &Netns, bgpd_conf: &str) -> Result<Frr> {
        let name = ns.name().to_owned();
        let dir = PathBuf::from(RUN_DIR).join(&name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on Drop removes the folder and stops what started.
        let frr = Frr { name, dir };
        let zebra_conf = format!("hostname {}\nlog file {}\n", frr.name, frr.log_path());
        let bgpd_conf = format!("log file {}\n{bgpd_conf}", frr.log_path());
        fs::write(frr.dir.join("zebra.conf"), zebra_conf)?;
        fs::write(frr.dir.join("bgpd.conf"), bgpd_conf)?;
        // The daemons run as `frr`: they must read their files and write log and pids.
        let out = std::process::Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&frr.dir)
            .output()
            .context("running chown")?;
        if !out.status.success() {
            bail!(
                "chown frr:frr {} failed: {} (is Debian's frr installed? it creates the frr user)",
                frr.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for (daemon, conf) in [(ZEBRA, "zebra"), (BGPD, "bgpd")] {
            let conf_path = frr.dir.join(format!("{conf}.conf"));
            let pid_path = frr.dir.join(format!("{conf}.pid"));
            let args: Vec<String> = vec![
                "-d".into(),
                "-N".into(),
                frr.name.clone(),
                "-f".into(),
                conf_path.display().to_string(),
                "-i".into(),
                pid_path.display().to_string(),
                // No vty on TCP: vtysh uses the pathspace's Unix sockets.
                "-P".into(),
                "0".into(),
            ];
            ns.exec_ok(daemon, &args)
                .with_context(|| format!("starting {daemon}"))?;
            let vty = frr.dir.join(format!("{conf}.vty"));
            let t0 = Instant::now();
            while !vty.exists() {
                if t0.elapsed() > DAEMON_UP {
                    bail!(
                        "{daemon} made no {} within {DAEMON_UP:?}; log:\n{}",
                        vty.display(),
                        frr.log_tail(20)
                    );
                }
                thread::sleep(POLL);
            }
        }
        Ok(frr)
    }

    fn log_path(&self) -> String {
        self.dir.join("frr.log").display().to_string()
    }

    /// The last `n` lines of the instance's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs `vtysh -N <name> -c <command>`; returns stdout.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let out = std::process::Command::new("vtysh")
            .args(["-N", &self.name, "-c", command])
            .output()
            .context("running vtysh")?;
        if !out.status.success() {
            bail!(
                "`vtysh -N {} -c {command:?}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether bgpd's IPv4 table has `prefix` with a valid best path.
    pub fn has_best_route(&self, prefix: &str) -> Result<bool> {
        // Before bgpd has the prefix, vtysh may say so and fail: not an error here.
        let Ok(text) = self.vtysh(&format!("show ip bgp {prefix} json")) else {
            return Ok(false);
        };
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => return Ok(false),
        };
        let best = v["paths"].as_array().is_some_and(|paths| {
            paths.iter().any(|p| {
                p["valid"].as_bool() == Some(true)
                    && p["bestpath"]["overall"].as_bool() == Some(true)
            })
        });
        Ok(best && v["prefix"].as_str() == Some(prefix))
    }

    /// Waits until bgpd has a valid best path to `prefix`.
    pub fn wait_route(&self, prefix: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if self.has_best_route(prefix)? {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{}: no BGP route to {prefix} within {timeout:?}\n{}\nlog:\n{}",
                    self.name,
                    self.vtysh("show ip bgp summary").unwrap_or_default(),
                    self.log_tail(20)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until the BGP session with `peer` is Established.
    pub fn wait_established(&self, peer: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let text = self
                .vtysh(&format!("show ip bgp neighbors {peer} json"))
                .unwrap_or_default();
            let state = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v[peer]["bgpState"].as_str().map(str::to_owned));
            if state.as_deref() == Some("Established") {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{}: BGP session with {peer} not established within {timeout:?} (state {state:?})\nlog:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in ["bgpd", "zebra"] {
            let pid_path = self.dir.join(format!("{daemon}.pid"));
            if let Some(pid) = fs::read_to_string(&pid_path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|p| *p > 1)
            {
                crate::proc::signal(pid, "TERM");
                let t0 = Instant::now();
                while alive(pid) && t0.elapsed() < Duration::from_secs(3) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` runs (a zombie, which a container's init may never reap, does not).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
