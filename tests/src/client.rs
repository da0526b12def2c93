//! Gatehouse's own client, `gatehouse`, as the end-to-end tests drive it: a profile exported
//! by `gatehouse-certs --format gatehouse` and imported into a per-test home ([`ClientHome`]),
//! the privileged client service started inside a client namespace ([`ClientService`]), and
//! the front-end commands (`connect`, `status --json`, `disconnect`) run against its socket.
//!
//! Safety: every `gatehouse` command the harness builds gets `GATEHOUSE_RESOLV_CONF` pointing
//! at a scratch file inside the test's own folder (and `GATEHOUSE_HOME`, `GATEHOUSE_SOCKET`
//! there too), so the client never edits the host's `/etc/resolv.conf`, never journals into
//! `/var/lib/gatehouse` and never listens on `/run/gatehouse/client.sock`. Routes and the TUN
//! device are made by processes inside the client namespace.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::bin;
use crate::gatehoused::{GatewayDir, certs_cli, strip_ansi};
use crate::netns::Netns;
use crate::proc::{Proc, run_with_timeout, signal};

/// What `gatehouse service` logs once its socket accepts front ends.
pub const LISTENING: &str = "client service listening";
/// The TUN device the client creates unless `GATEHOUSE_TUN` says otherwise.
pub const DEFAULT_TUN: &str = "gatehouse-c0";
/// How long `gatehouse service` gets to log [`LISTENING`] (two cores shared with compilers).
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one front-end command (`status`, `disconnect`, `import`) may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// The client's files for one test, all inside `root` (the test's temporary folder):
/// `home/` (profiles, key files, the service's journal in `home/run/`), `client.sock`,
/// and the scratch `resolv.conf` the client edits instead of the host's.
#[derive(Clone, Debug)]
pub struct ClientHome {
    root: PathBuf,
    /// Extra environment for every `gatehouse` command (e.g. `GATEHOUSE_CONNECT_TIMEOUT`).
    env: Vec<(String, String)>,
}

impl ClientHome {
    /// Sets up `root/home` and writes `resolv_conf` (the "before" contents) to
    /// `root/resolv.conf`.
    pub fn new(root: &Path, resolv_conf: &str) -> Result<ClientHome> {
        let home = ClientHome {
            root: root.to_path_buf(),
            env: Vec::new(),
        };
        fs::create_dir_all(home.home())?;
        fs::write(home.resolv_conf(), resolv_conf)?;
        Ok(home)
    }

    /// Adds `key=value` to the environment of every later `gatehouse` command.
    pub fn set_env(&mut self, key: &str, value: &str) {
        assert!(
            key != "GATEHOUSE_RESOLV_CONF" && key != "GATEHOUSE_HOME" && key != "GATEHOUSE_SOCKET",
            "{key} is fixed by the harness (it keeps the client inside the test's folder)"
        );
        self.env.push((key.to_string(), value.to_string()));
    }

    /// `GATEHOUSE_HOME`.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// `GATEHOUSE_SOCKET`.
    pub fn socket(&self) -> PathBuf {
        self.root.join("client.sock")
    }

    /// `GATEHOUSE_RESOLV_CONF`: the scratch file the client edits instead of the host's.
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }

    /// The service's journal of host changes.
    pub fn journal(&self) -> PathBuf {
        self.home().join("run").join("network.json")
    }

    /// The scratch resolv.conf's current bytes.
    pub fn resolv_conf_bytes(&self) -> Result<Vec<u8>> {
        let p = self.resolv_conf();
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// `gatehouse ARGS...` in `ns` (or the root namespace when `None`, for commands that
    /// only touch files), with the test's environment. The only constructor of `gatehouse`
    /// commands in the harness: it always sets `GATEHOUSE_RESOLV_CONF` to the scratch file.
    pub fn command<I, S>(&self, ns: Option<&Netns>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match ns {
            Some(ns) => ns.command(bin("gatehouse")),
            None => Command::new(bin("gatehouse")),
        };
        cmd.args(args);
        // Nothing from the caller's environment may point the client elsewhere.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GATEHOUSE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GATEHOUSE_HOME", self.home())
            .env("GATEHOUSE_SOCKET", self.socket())
            .env("GATEHOUSE_RESOLV_CONF", self.resolv_conf())
            .env("GATEHOUSE_KEYSTORE", "file")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `gatehouse ARGS...` to completion (killed after `timeout`) and returns its output,
    /// whatever its status.
    pub fn run(&self, ns: Option<&Netns>, args: &[&str], timeout: Duration) -> Result<CliOutput> {
        let cmd = self.command(ns, args);
        let started = Instant::now();
        let out = run_with_timeout(cmd, timeout)
            .with_context(|| format!("`gatehouse {}`", args.join(" ")))?;
        Ok(CliOutput::new(args, out, started.elapsed()))
    }

    /// Like [`ClientHome::run`] but fails, with its output, unless it exits 0.
    pub fn run_ok(&self, ns: Option<&Netns>, args: &[&str]) -> Result<CliOutput> {
        let out = self.run(ns, args, CLI_TIMEOUT)?;
        ensure!(out.success(), "{out}");
        Ok(out)
    }

    /// Exports client `name` of `gw` as a Gatehouse profile dialling `gateway`
    /// (`gatehouse-certs export NAME --gateway GW --format gatehouse`), and imports it
    /// (`gatehouse import`, key to a 0600 file). The certificate must already be issued.
    pub fn import_profile(
        &self,
        gw: &GatewayDir,
        name: &str,
        gateway: impl Into<std::net::IpAddr>,
    ) -> Result<()> {
        let file = self.root.join(format!("{name}.gatehouse"));
        let file_arg = file.display().to_string();
        let gateway = gateway.into().to_string();
        certs_cli(
            &gw.pki(),
            &[
                "export",
                name,
                "--gateway",
                &gateway,
                "--format",
                "gatehouse",
                "-o",
                &file_arg,
            ],
        )?;
        ensure!(
            file.exists(),
            "`export {name} --format gatehouse` wrote no {file_arg}"
        );
        self.run_ok(None, &["import", &file_arg])?;
        Ok(())
    }

    /// `gatehouse status --json` in `ns`, parsed.
    pub fn status(&self, ns: &Netns) -> Result<ClientStatus> {
        let out = self.run_ok(Some(ns), &["status", "--json"])?;
        ClientStatus::parse(&out.stdout)
    }

    /// Polls `status --json` until `pred` accepts it; returns that status and every distinct
    /// state seen on the way. Fails with the last status and `context()` (e.g. logs) when
    /// `timeout` passes.
    pub fn wait_status(
        &self,
        ns: &Netns,
        timeout: Duration,
        pred: impl Fn(&ClientStatus) -> bool,
        context: impl Fn() -> String,
    ) -> Result<(ClientStatus, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let s = self.status(ns)?;
            let label = s.label();
            if seen.last() != Some(&label) {
                seen.push(label);
            }
            if pred(&s) {
                return Ok((s, seen));
            }
            if Instant::now() >= deadline {
                bail!(
                    "the client's status did not get there within {timeout:?}; states seen: \
                     {seen:?}; last: {}\n{}",
                    s.json,
                    context()
                );
            }
            thread::sleep(POLL);
        }
    }
}

/// What one `gatehouse` command printed, and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CliOutput {
    fn new(args: &[&str], out: Output, elapsed: Duration) -> CliOutput {
        CliOutput {
            command: format!("gatehouse {}", args.join(" ")),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {} after {:.1} s\n--- stdout:\n{}--- stderr:\n{}",
            self.command,
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// A parsed `gatehouse status --json`.
#[derive(Clone, Debug)]
pub struct ClientStatus {
    pub json: Value,
}

impl ClientStatus {
    pub fn parse(text: &str) -> Result<ClientStatus> {
        let json: Value = serde_json::from_str(text)
            .with_context(|| format!("`gatehouse status --json` printed no JSON: {text:?}"))?;
        ensure!(
            json.get("state").and_then(Value::as_str).is_some(),
            "`gatehouse status --json` has no \"state\": {json}"
        );
        Ok(ClientStatus { json })
    }

    /// `disconnected`, `connecting`, `connected`, `reconnecting` or `error`.
    pub fn state(&self) -> &str {
        self.str("state").unwrap_or_default()
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    pub fn address(&self) -> Option<Ipv4Addr> {
        self.str("address").and_then(|a| a.parse().ok())
    }

    pub fn protocol(&self) -> Option<&str> {
        self.str("protocol")
    }

    /// The `reason` of `reconnecting` and `error`.
    pub fn reason(&self) -> Option<&str> {
        self.str("reason")
    }

    /// One of the `counters` (`rx_bytes`, `tx_bytes`, `rx_packets`, `tx_packets`).
    pub fn counter(&self, name: &str) -> u64 {
        self.json
            .get("counters")
            .and_then(|c| c.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// The state with what distinguishes it (protocol, attempt, reason), for logs.
    pub fn label(&self) -> String {
        let mut label = self.state().to_string();
        for key in ["protocol", "attempt", "reason"] {
            if let Some(v) = self.json.get(key) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                label.push_str(&format!(" {key}={v}"));
            }
        }
        label
    }
}

/// A running `gatehouse service` inside a client namespace; stopped (SIGTERM) on Drop.
#[derive(Debug)]
pub struct ClientService {
    proc: Proc,
}

impl ClientService {
    /// Starts the service in `ns` with `GATEHOUSE_LOG=debug`, log to `log`, and waits for
    /// [`LISTENING`].
    pub fn start(ns: &Netns, home: &ClientHome, log: &Path) -> Result<ClientService> {
        let mut cmd = home.command(Some(ns), ["service"]);
        cmd.env("GATEHOUSE_LOG", "debug");
        let svc = ClientService {
            proc: Proc::spawn(cmd, log)?,
        };
        svc.proc.wait_for_log(LISTENING, LISTEN_TIMEOUT)?;
        Ok(svc)
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The log so far, without ANSI escapes.
    pub fn log(&self) -> String {
        strip_ansi(&self.proc.log_contents())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL: no chance to undo anything. Waits until it is gone.
    pub fn kill_hard(&self) -> Result<()> {
        signal(self.proc.pid(), "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.is_running() {
            ensure!(
                Instant::now() < deadline,
                "gatehouse service (pid {}) survived SIGKILL for 5 s",
                self.proc.pid()
            );
            thread::sleep(POLL);
        }
        Ok(())
    }
}

/// A process whose exit status the test wants (e.g. `gatehouse connect --foreground`),
/// stdout and stderr to a log. Dropping it SIGKILLs it if it still runs.
pub struct Watched {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Watched {
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Watched> {
        let name = format!("{cmd:?}");
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Watched {
            name,
            child: Mutex::new(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends signal `sig` (a name for kill(1): INT, TERM, KILL).
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Polls the log until it contains `pattern`; fails with the log if the process exits
    /// first or `timeout` passes.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(pattern) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child().try_wait() {
                if self.log().contains(pattern) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before printing {pattern:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "{} printed no {pattern:?} within {timeout:?}; log {}:\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
            thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "{} still running {timeout:?} later; log {}:\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
            thread::sleep(POLL);
        }
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut child = self.child();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Whether `dev` exists in `ns` (`ip link show DEV` succeeds).
pub fn link_exists(ns: &Netns, dev: &str) -> Result<bool> {
    Ok(ns.exec("ip", ["link", "show", dev])?.status.success())
}

/// `ip -4 route show` in `ns`.
pub fn routes(ns: &Netns) -> Result<String> {
    ns.exec_ok("ip", ["-4", "route", "show"])
}
