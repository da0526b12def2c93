//! strongSwan 5.9 (Debian) as an IKEv2 peer, run the way the interop lab does
//! (shared/interop/strongswan/): userspace ESP through `kernel-libipsec` (a TUN device `ipsec0`
//! in the client's namespace), so it needs no xfrm support from the kernel.
//!
//! - [`CharonCmd`]: the one-shot `charon-cmd` client (RSA key, `--profile ikev2-pub`).
//! - [`Charon`]: a `charon-systemd` daemon with its own `strongswan.conf`, `swanctl/` folder
//!   and VICI socket, driven with `swanctl` ([`RoadWarrior`] is the connection it loads).
//!
//! Safety: every config written here sets `plugins.resolve.file` to a file in the test's
//! folder (strongSwan's `resolve` plugin would otherwise rewrite the host's `/etc/resolv.conf`,
//! which every namespace shares), and [`refuse_resolvconf`] stops before starting anything if
//! a `resolvconf` program exists (strongSwan then calls it instead of writing the file).
//! Daemons only ever start inside a namespace given by the caller, and are stopped by pid.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Netns;
use crate::proc::{Proc, run_with_timeout, signal};

/// `charon-cmd`'s plugins: its compiled-in list without `tpm`, `bypass-lan` (with
/// kernel-libipsec its bypass routes black-hole IKE to the gateway), EAP, LDAP and friends.
/// `kernel-libipsec` comes before `kernel-netlink`; `kdf` is required by 5.9.8.
pub const CHARON_CMD_PLUGINS: &str = "aes sha2 sha1 md5 mgf1 random nonce x509 revocation \
    constraints pubkey pkcs1 pkcs7 pkcs12 pem openssl gmp curve25519 chapoly hmac kdf gcm drbg \
    kernel-libipsec kernel-netlink resolve socket-default";

/// `charon-systemd`'s plugins for a swanctl initiator (or the reference responder): the same
/// set plus `pkcs8` (the PKCS#8 keys `gatehouse-certs` writes), `vici` (swanctl talks to it)
/// and `attr` (a responder's pool attributes).
pub const CHARON_PLUGINS: &str = "random nonce openssl aes sha1 sha2 md5 mgf1 hmac kdf gcm \
    chapoly curve25519 gmp pem pkcs1 pkcs7 pkcs8 pkcs12 x509 revocation constraints pubkey drbg \
    kernel-libipsec kernel-netlink resolve socket-default vici attr";

/// What an initiator logs once its IKE SA is up: `IKE_SA cmd[1] established between ...`.
pub const IKE_ESTABLISHED: &str = "established between";
/// What an initiator logs once it has its virtual address: `installing new virtual IP A.B.C.D`.
pub const VIRTUAL_IP: &str = "installing new virtual IP ";
/// What an initiator logs when the responder refuses its credentials.
pub const AUTH_FAILED: &str = "received AUTHENTICATION_FAILED notify error";
/// The TUN device kernel-libipsec creates.
pub const IPSEC_DEV: &str = "ipsec0";
/// How long a client gets to establish its SA (two cores, shared with compilers).
pub const UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `swanctl` command may take (an initiate waits for the whole exchange).
const SWANCTL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Fails if a `resolvconf` program exists: strongSwan's resolve plugin then uses it, ignoring
/// `plugins.resolve.file`, and would change the host's DNS settings.
pub fn refuse_resolvconf() -> Result<()> {
    for p in [
        "/sbin/resolvconf",
        "/usr/sbin/resolvconf",
        "/usr/bin/resolvconf",
    ] {
        ensure!(
            !Path::new(p).exists(),
            "{p} exists: strongSwan's resolve plugin would call it and rewrite the host's DNS \
             settings instead of the test's resolve file; refusing to start strongSwan"
        );
    }
    Ok(())
}

/// The `resolve` plugin section that keeps strongSwan away from `/etc/resolv.conf`.
fn resolve_section(file: &Path) -> String {
    format!(
        "    resolve {{\n      file = {}\n      resolvconf {{\n        path = /nonexistent/resolvconf\n      }}\n    }}\n",
        file.display()
    )
}

/// A file logger section named `name` (ike and cfg at level 2: SA names, rekeys, DPD).
fn filelog_section(name: &str, path: &Path) -> String {
    format!(
        "  filelog {{\n    {name} {{\n      path = {}\n      time_format = %T\n      ike_name = yes\n      \
         append = yes\n      flush_line = yes\n      default = 1\n      ike = 2\n      cfg = 2\n      \
         knl = 1\n      net = 1\n      esp = 0\n      enc = 1\n    }}\n  }}\n",
        path.display()
    )
}

/// Polls `file` until it contains `pattern`; fails early, with the file's tail, if `proc`
/// exits first or `timeout` passes.
fn wait_file(proc: &Proc, file: &Path, pattern: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let read = || fs::read_to_string(file).unwrap_or_default();
    loop {
        if read().contains(pattern) {
            return Ok(());
        }
        if !proc.is_running() {
            if read().contains(pattern) {
                return Ok(());
            }
            bail!(
                "strongSwan exited before logging {pattern:?}; log {}:\n{}\nstdout/stderr:\n{}",
                file.display(),
                tail(&read(), 30),
                proc.log_tail(10)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "strongSwan did not log {pattern:?} within {timeout:?}; log {}:\n{}",
                file.display(),
                tail(&read(), 30)
            );
        }
        thread::sleep(POLL);
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The address after the last `installing new virtual IP ` in a charon log.
pub fn parse_virtual_ip(log: &str) -> Option<Ipv4Addr> {
    log.lines()
        .rev()
        .find_map(|l| l.split(VIRTUAL_IP).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// What `charon-cmd` is started with.
#[derive(Clone, Debug)]
pub struct CharonCmdConfig {
    /// `--host`: the gateway's address.
    pub host: Ipv4Addr,
    /// `--identity`, e.g. `CN=carol` (the subject of `cert`).
    pub identity: String,
    /// `--remote-identity`; charon-cmd defaults to the host's address.
    pub remote_identity: Option<String>,
    /// Trusted CA (`--cert`).
    pub ca: PathBuf,
    /// The client's certificate (`--cert`).
    pub cert: PathBuf,
    /// The client's RSA key (`--rsa`; charon-cmd 5.9.8 has no ECDSA key option).
    pub rsa_key: PathBuf,
    /// `--profile`, `ikev2-pub` for certificate authentication.
    pub profile: String,
    /// More `--cert`s: intermediate CA certificates charon sends with its own.
    pub extra_certs: Vec<PathBuf>,
}

impl CharonCmdConfig {
    pub fn new(host: Ipv4Addr, identity: &str, ca: &Path, cert: &Path, key: &Path) -> Self {
        CharonCmdConfig {
            host,
            identity: identity.to_string(),
            remote_identity: None,
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            rsa_key: key.to_path_buf(),
            profile: "ikev2-pub".to_string(),
            extra_certs: Vec::new(),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--host".to_string(),
            self.host.to_string(),
            "--identity".to_string(),
            self.identity.clone(),
        ];
        if let Some(r) = &self.remote_identity {
            a.extend(["--remote-identity".to_string(), r.clone()]);
        }
        for (opt, path) in [
            ("--cert", &self.ca),
            ("--cert", &self.cert),
            ("--rsa", &self.rsa_key),
        ] {
            a.extend([opt.to_string(), path.display().to_string()]);
        }
        for path in &self.extra_certs {
            a.extend(["--cert".to_string(), path.display().to_string()]);
        }
        a.extend(["--profile".to_string(), self.profile.clone()]);
        a
    }
}

/// A running `charon-cmd` in a client namespace: one IKE SA, torn down (DELETE sent) on
/// SIGTERM; it exits by itself when an initiation fails (a refusal), but not when the
/// gateway deletes an established SA (5.9.8 keeps running without it). Stopped on Drop.
#[derive(Debug)]
pub struct CharonCmd {
    // Declared first: dropped (stopped) before anything else.
    proc: Proc,
    log: PathBuf,
    resolv: PathBuf,
    dir: PathBuf,
}

impl CharonCmd {
    /// Writes `DIR/strongswan-cmd.conf` (plugins [`CHARON_CMD_PLUGINS`], resolve file
    /// `DIR/resolv.conf`, file log `DIR/charon-cmd.log`) and starts
    /// `setsid charon-cmd ARGS` in `ns` with `STRONGSWAN_CONF` pointing at it. Does not wait.
    pub fn spawn(ns: &Netns, dir: &Path, config: &CharonCmdConfig) -> Result<CharonCmd> {
        refuse_resolvconf()?;
        fs::create_dir_all(dir)?;
        let conf = dir.join("strongswan-cmd.conf");
        let log = dir.join("charon-cmd.log");
        let resolv = dir.join("resolv.conf");
        // The plugin appends to the file; it must exist (and start empty) for the check.
        fs::write(&resolv, "")?;
        let _ = fs::remove_file(&log);
        let mut text = String::from("# written by gatehouse-tests (strongswan.rs)\ncharon-cmd {\n");
        let _ = writeln!(text, "  load = {CHARON_CMD_PLUGINS}");
        text.push_str("  plugins {\n");
        text.push_str(&resolve_section(&resolv));
        text.push_str("  }\n");
        text.push_str(&filelog_section("cl", &log));
        text.push_str("}\n");
        fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;

        let mut cmd = ns.command("setsid");
        cmd.arg("/usr/sbin/charon-cmd")
            .args(config.args())
            .env("STRONGSWAN_CONF", &conf);
        let proc = Proc::spawn(cmd, &dir.join("charon-cmd.stdout"))?;
        Ok(CharonCmd {
            proc,
            log,
            resolv,
            dir: dir.to_path_buf(),
        })
    }

    /// [`CharonCmd::spawn`], then waits until the IKE SA is established and the virtual IP
    /// installed.
    pub fn start(ns: &Netns, dir: &Path, config: &CharonCmdConfig) -> Result<CharonCmd> {
        let c = CharonCmd::spawn(ns, dir, config)?;
        c.wait_log(IKE_ESTABLISHED, UP_TIMEOUT)?;
        c.wait_log(VIRTUAL_IP, Duration::from_secs(5))?;
        Ok(c)
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// charon-cmd's file log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// Waits until the file log contains `pattern` (fails early if charon-cmd exits).
    pub fn wait_log(&self, pattern: &str, timeout: Duration) -> Result<()> {
        wait_file(&self.proc, &self.log, pattern, timeout)
    }

    /// The virtual IP the gateway assigned (from the log).
    pub fn virtual_ip(&self) -> Option<Ipv4Addr> {
        parse_virtual_ip(&self.log())
    }

    /// What the resolve plugin wrote (`nameserver A.B.C.D` per INTERNAL_IP4_DNS).
    pub fn resolv_conf(&self) -> String {
        fs::read_to_string(&self.resolv).unwrap_or_default()
    }

    /// Waits until charon-cmd exits by itself (e.g. after a refusal).
    pub fn wait_exit(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                bail!(
                    "charon-cmd (pid {}) still running after {timeout:?}; log:\n{}",
                    self.pid(),
                    self.log_tail(20)
                );
            }
            thread::sleep(POLL);
        }
        Ok(())
    }

    /// SIGTERM (charon-cmd deletes its IKE SA, then exits); SIGKILL if it is still running
    /// after 3 s.
    pub fn stop(&self) {
        self.proc.stop();
    }
}

/// A road-warrior connection for a swanctl initiator: certificate authentication, a virtual
/// IP (`vips = 0.0.0.0`), one child with `remote_ts = 0.0.0.0/0`.
#[derive(Clone, Debug)]
pub struct RoadWarrior {
    /// Connection name; the child is `<name>-child` (see [`RoadWarrior::child`]).
    pub name: String,
    pub remote_addr: std::net::IpAddr,
    /// `remote.id`: the gateway's identity (its address: the SAN of a Gatehouse gateway cert).
    pub remote_id: String,
    /// `local.id`; `None` = the certificate's subject DN.
    pub local_id: Option<String>,
    /// File name of the client certificate inside `swanctl/x509/`.
    pub cert: String,
    /// IKE proposals (`default` = strongSwan's stock set).
    pub proposals: String,
    pub esp_proposals: String,
    /// IKE SA `rekey_time` (the gateway answers an IKE rekey with NO_ADDITIONAL_SAS for now).
    pub rekey_time: String,
    /// CHILD SA `rekey_time`.
    pub child_rekey_time: String,
    pub dpd_delay: String,
    /// `vips`: `0.0.0.0` (the default) asks for an IPv4 address; `0.0.0.0,::` for both.
    pub vips: String,
    pub remote_ts: String,
    /// `local { ... }` / `remote { ... }` auth method.
    pub auth: String,
    /// Further lines for the connection block, as they are.
    pub extra: Vec<String>,
    /// Further lines for the child block, as they are (e.g. `rand_time = 2s`).
    pub child_extra: Vec<String>,
}

impl RoadWarrior {
    pub fn new(name: &str, remote_addr: impl Into<std::net::IpAddr>, cert: &str) -> RoadWarrior {
        let remote_addr = remote_addr.into();
        RoadWarrior {
            name: name.to_string(),
            remote_addr,
            remote_id: remote_addr.to_string(),
            local_id: None,
            cert: cert.to_string(),
            proposals: "default".to_string(),
            esp_proposals: "aes256gcm16".to_string(),
            rekey_time: "1h".to_string(),
            child_rekey_time: "1h".to_string(),
            dpd_delay: "30s".to_string(),
            vips: "0.0.0.0".to_string(),
            remote_ts: "0.0.0.0/0".to_string(),
            auth: "pubkey".to_string(),
            extra: Vec::new(),
            child_extra: Vec::new(),
        }
    }

    /// The child's name, what `swanctl --initiate --child` takes.
    pub fn child(&self) -> String {
        format!("{}-child", self.name)
    }

    /// This connection as a `connections { NAME { ... } }` body entry.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "  {} {{", self.name);
        let _ = writeln!(c, "    version = 2");
        let _ = writeln!(c, "    remote_addrs = {}", self.remote_addr);
        let _ = writeln!(c, "    vips = {}", self.vips);
        let _ = writeln!(c, "    proposals = {}", self.proposals);
        let _ = writeln!(c, "    rekey_time = {}", self.rekey_time);
        let _ = writeln!(c, "    dpd_delay = {}", self.dpd_delay);
        let _ = writeln!(c, "    fragmentation = yes");
        for line in &self.extra {
            let _ = writeln!(c, "    {line}");
        }
        let _ = writeln!(c, "    local {{");
        let _ = writeln!(c, "      auth = {}", self.auth);
        let _ = writeln!(c, "      certs = {}", self.cert);
        if let Some(id) = &self.local_id {
            let _ = writeln!(c, "      id = \"{id}\"");
        }
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "    remote {{");
        let _ = writeln!(c, "      auth = {}", self.auth);
        let _ = writeln!(c, "      id = {}", self.remote_id);
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "    children {{");
        let _ = writeln!(c, "      {} {{", self.child());
        let _ = writeln!(c, "        remote_ts = {}", self.remote_ts);
        let _ = writeln!(c, "        esp_proposals = {}", self.esp_proposals);
        let _ = writeln!(c, "        rekey_time = {}", self.child_rekey_time);
        let _ = writeln!(c, "        dpd_action = clear");
        for line in &self.child_extra {
            let _ = writeln!(c, "        {line}");
        }
        let _ = writeln!(c, "      }}");
        let _ = writeln!(c, "    }}");
        let _ = writeln!(c, "  }}");
        c
    }
}

/// Files for one swanctl identity: the CA to trust, the client's certificate and private key
/// (PEM; the key PKCS#8 or traditional, any type).
#[derive(Clone, Debug)]
pub struct SwanctlCreds {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A `charon-systemd` daemon in a namespace, with its own `DIR/strongswan.conf`,
/// `DIR/swanctl/` and VICI socket `DIR/charon.vici`; log in `DIR/charon.log`. Stopped
/// (SIGTERM, by pid) on Drop.
#[derive(Debug)]
pub struct Charon {
    proc: Proc,
    ns: String,
    dir: PathBuf,
    log: PathBuf,
    resolv: PathBuf,
}

impl Charon {
    /// Writes the config and starts the daemon in `ns`; waits for its VICI socket. `extra`
    /// goes into the `charon { }` section as is (e.g. DoS thresholds for a responder).
    pub fn start(ns: &Netns, dir: &Path, extra: &str) -> Result<Charon> {
        Self::start_with_plugins(ns, dir, extra, CHARON_PLUGINS)
    }

    /// [`Charon::start`] loading `plugins` (e.g. [`CHARON_PLUGINS`] plus `ctr xcbc cmac`, to
    /// propose AES-CTR, AES-XCBC and AES-CMAC as Android's built-in client does).
    pub fn start_with_plugins(
        ns: &Netns,
        dir: &Path,
        extra: &str,
        plugins: &str,
    ) -> Result<Charon> {
        refuse_resolvconf()?;
        let swanctl = dir.join("swanctl");
        for sub in ["x509", "x509ca", "private", "conf.d"] {
            fs::create_dir_all(swanctl.join(sub))?;
        }
        let log = dir.join("charon.log");
        let resolv = dir.join("resolv.conf");
        let vici = dir.join("charon.vici");
        fs::write(&resolv, "")?;
        let _ = fs::remove_file(&vici);
        let _ = fs::remove_file(&log);
        let mut t = String::from("# written by gatehouse-tests (strongswan.rs)\ncharon {\n");
        let _ = writeln!(t, "  load_modular = no\n  load = {plugins}");
        let _ = writeln!(t, "  install_routes = yes");
        t.push_str(extra);
        t.push_str(&filelog_section("main", &log));
        t.push_str("  plugins {\n");
        t.push_str(&resolve_section(&resolv));
        let _ = writeln!(
            t,
            "    vici {{\n      socket = unix://{}\n    }}",
            vici.display()
        );
        t.push_str("  }\n}\n");
        t.push_str("charon-systemd {\n  journal {\n    default = -1\n  }\n}\n");
        let _ = writeln!(t, "swanctl {{\n  socket = unix://{}\n}}", vici.display());
        let conf = dir.join("strongswan.conf");
        fs::write(&conf, t).with_context(|| format!("writing {}", conf.display()))?;
        if !swanctl.join("swanctl.conf").exists() {
            fs::write(swanctl.join("swanctl.conf"), "connections {\n}\n")?;
        }

        let mut cmd = ns.command("setsid");
        cmd.arg("/usr/sbin/charon-systemd")
            .env("STRONGSWAN_CONF", &conf)
            .env("SWANCTL_DIR", &swanctl);
        let proc = Proc::spawn(cmd, &dir.join("charon.stdout"))?;
        let charon = Charon {
            proc,
            ns: ns.name().to_string(),
            dir: dir.to_path_buf(),
            log,
            resolv,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vici.exists() {
            if !charon.proc.is_running() || Instant::now() >= deadline {
                bail!(
                    "charon-systemd in {} made no VICI socket {}; log:\n{}\n{}",
                    charon.ns,
                    vici.display(),
                    charon.log_tail(20),
                    charon.proc.log_tail(10)
                );
            }
            thread::sleep(POLL);
        }
        Ok(charon)
    }

    /// Copies `creds` into `swanctl/` (`x509ca/NAME-ca.crt`, `x509/NAME.crt`,
    /// `private/NAME.key`) and returns the certificate's file name, for
    /// [`RoadWarrior::cert`].
    pub fn install_creds(&self, name: &str, creds: &SwanctlCreds) -> Result<String> {
        let s = self.swanctl_dir();
        let cert = format!("{name}.crt");
        fs::copy(&creds.ca, s.join("x509ca").join(format!("{name}-ca.crt")))
            .with_context(|| format!("copying {}", creds.ca.display()))?;
        fs::copy(&creds.cert, s.join("x509").join(&cert))
            .with_context(|| format!("copying {}", creds.cert.display()))?;
        fs::copy(&creds.key, s.join("private").join(format!("{name}.key")))
            .with_context(|| format!("copying {}", creds.key.display()))?;
        Ok(cert)
    }

    /// Writes `swanctl/swanctl.conf` with these connections (and `body` after them, e.g. a
    /// `pools { }` section for a responder).
    pub fn write_conns(&self, conns: &[&RoadWarrior], body: &str) -> Result<()> {
        let mut t = String::from("connections {\n");
        for c in conns {
            t.push_str(&c.render());
        }
        t.push_str("}\n");
        t.push_str(body);
        let path = self.swanctl_dir().join("swanctl.conf");
        fs::write(&path, t).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `swanctl/swanctl.conf` as it is (e.g. a responder's connections and pools).
    pub fn write_swanctl_conf(&self, text: &str) -> Result<()> {
        let path = self.swanctl_dir().join("swanctl.conf");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn swanctl_dir(&self) -> PathBuf {
        self.dir.join("swanctl")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    pub fn wait_log(&self, pattern: &str, timeout: Duration) -> Result<()> {
        wait_file(&self.proc, &self.log, pattern, timeout)
    }

    /// What the resolve plugin wrote.
    pub fn resolv_conf(&self) -> String {
        fs::read_to_string(&self.resolv).unwrap_or_default()
    }

    /// The last virtual IP charon installed (from the log).
    pub fn virtual_ip(&self) -> Option<Ipv4Addr> {
        parse_virtual_ip(&self.log())
    }

    /// Runs `swanctl ARGS` against this daemon (in its namespace, with its settings) and
    /// returns the output, whatever the status.
    pub fn swanctl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.swanctl_dir());
        run_with_timeout(cmd, SWANCTL_TIMEOUT)
    }

    /// `swanctl ARGS`; fails, with its output and the daemon's log, unless it succeeds.
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let out = self.swanctl_output(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`swanctl {}` in {} failed ({}): {}{}\ncharon log:\n{}",
                args.join(" "),
                self.ns,
                out.status,
                tail(&stdout, 15),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(20)
            );
        }
        Ok(stdout)
    }

    /// `swanctl --load-all --noprompt`.
    pub fn load_all(&self) -> Result<String> {
        self.swanctl(&["--load-all", "--noprompt"])
    }

    /// `swanctl --initiate --child CHILD --timeout 20`: returns once the CHILD SA is up.
    pub fn initiate(&self, child: &str) -> Result<String> {
        self.swanctl(&["--initiate", "--child", child, "--timeout", "20"])
    }

    /// `swanctl --terminate --ike NAME --timeout 10`.
    pub fn terminate(&self, ike: &str) -> Result<String> {
        self.swanctl(&["--terminate", "--ike", ike, "--timeout", "10"])
    }

    /// SIGTERM to the daemon (by pid), up to 3 s, then SIGKILL.
    pub fn stop(&self) {
        self.proc.stop();
    }

    /// Sends `sig` (e.g. "KILL") to the daemon only.
    pub fn signal(&self, sig: &str) {
        signal(self.proc.pid(), sig);
    }
}

/// Transmitted and received counts from ping's summary
/// (`N packets transmitted, M received, ...`).
pub fn parse_ping_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((nums.next()?, nums.next()?))
}

/// `ping -i INTERVAL -c COUNT ADDR` from `ns`; returns (transmitted, received) and the output.
pub fn ping_run(
    ns: &Netns,
    addr: Ipv4Addr,
    count: u32,
    interval: &str,
) -> Result<((u32, u32), String)> {
    let mut cmd = ns.command("ping");
    cmd.args(["-n", "-i", interval, "-W", "1", "-c", &count.to_string()])
        .arg(addr.to_string());
    let secs = f64::from(count) * interval.parse::<f64>().unwrap_or(1.0);
    let out = run_with_timeout(cmd, Duration::from_secs_f64(secs + 15.0))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let counts = parse_ping_summary(&stdout)
        .with_context(|| format!("no ping summary in:\n{}", tail(&stdout, 5)))?;
    Ok((counts, stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_virtual_ip_and_ping_summary() {
        let log = "22:01:02 14[IKE] <cmd|1> installing new virtual IP 10.8.50.2\n";
        assert_eq!(parse_virtual_ip(log), Some(Ipv4Addr::new(10, 8, 50, 2)));
        assert_eq!(parse_virtual_ip("nothing"), None);
        let out = "--- 10.251.54.10 ping statistics ---\n\
                   90 packets transmitted, 89 received, 1.11111% packet loss, time 44510ms\n";
        assert_eq!(parse_ping_summary(out), Some((90, 89)));
        let out = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2002ms";
        assert_eq!(parse_ping_summary(out), Some((3, 0)));
    }

    #[test]
    fn road_warrior_renders_child_and_ids() {
        let mut rw = RoadWarrior::new("home", Ipv4Addr::new(10, 250, 51, 1), "alice.crt");
        rw.child_rekey_time = "20s".to_string();
        let t = rw.render();
        for line in [
            "remote_addrs = 10.250.51.1",
            "vips = 0.0.0.0",
            "certs = alice.crt",
            "id = 10.250.51.1",
            "home-child {",
            "remote_ts = 0.0.0.0/0",
            "esp_proposals = aes256gcm16",
            "rekey_time = 20s",
        ] {
            assert!(
                t.lines().any(|l| l.trim() == line),
                "missing {line:?}:\n{t}"
            );
        }
    }

    #[test]
    fn road_warrior_renders_child_extra() {
        let mut rw = RoadWarrior::new("home", Ipv4Addr::new(10, 250, 62, 1), "erin.crt");
        rw.child_extra = vec!["rand_time = 3s".to_string()];
        let t = rw.render();
        let child = t.find("home-child {").expect("child block");
        let extra = t.find("rand_time = 3s").expect("child extra line");
        assert!(extra > child, "{t}");
    }

    #[test]
    fn charon_cmd_args() {
        let c = CharonCmdConfig::new(
            Ipv4Addr::new(10, 250, 50, 1),
            "CN=carol",
            Path::new("/p/ca.crt"),
            Path::new("/p/carol.crt"),
            Path::new("/p/carol.key"),
        );
        assert_eq!(
            c.args().join(" "),
            "--host 10.250.50.1 --identity CN=carol --cert /p/ca.crt --cert /p/carol.crt \
             --rsa /p/carol.key --profile ikev2-pub"
        );
    }
}
