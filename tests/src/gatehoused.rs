//! Gatehouse's own gateway, `gatehoused`, and its admin CLI `gatehouse-certs`, as the
//! end-to-end tests drive them: a data directory made by `gatehoused init` in a temporary
//! folder and edited for the test ([`GatewayDir`]), the daemon started inside the gateway
//! namespace ([`Gatehoused`]), its log read as events (`client connected`, `client refused`,
//! ...), and client credentials issued and exported for the stock OpenVPN client.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bin;
use crate::cidr::Ipv4Cidr;
use crate::netns::Netns;
use crate::openvpn::{CertFiles, UP, spawn_openvpn};
use crate::proc::{Proc, run_with_timeout, signal};
use crate::topology::GatewayTopology;

/// What `gatehoused run` logs once its TUN device and listeners are up.
pub const READY: &str = "gateway ready";
/// `client connected client=.. remote=.. address=.. cipher=.. keys=tls-ekm|prf transport=..`
pub const CONNECTED: &str = "client connected";
/// `client refused client=.. remote=.. reason=".."`
pub const REFUSED: &str = "client refused";
/// `client disconnected client=.. reason=..`
pub const DISCONNECTED: &str = "client disconnected";

/// What `gatehoused run` logs when it has closed every session after SIGTERM/SIGINT:
/// `gateway stopped drops=ipv6=3 spoofed=5` (or `drops=none`).
pub const STOPPED: &str = "gateway stopped";
/// `data keys renegotiated client=.. key_id=..` (logged at debug level: `GATEHOUSE_LOG=debug`).
pub const RENEGOTIATED: &str = "data keys renegotiated";
/// `second login with the same certificate replaces the first session client=.. old_remote=..`
pub const REPLACED: &str = "second login with the same certificate replaces the first session";

/// How long `gatehoused run` gets to log [`READY`] (two cores are shared with compilers).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `gatehoused init` or `gatehouse-certs` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Runs `program args` (a workspace binary, in the root namespace: these only write files)
/// and returns its stdout; fails with its stderr unless it exits with status 0.
fn run_cli(program: &str, args: &[String]) -> Result<String> {
    let mut cmd = Command::new(bin(program));
    cmd.args(args);
    let out = run_with_timeout(cmd, CLI_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `gatehouse-certs --pki PKI ARGS...` and returns its stdout.
pub fn certs_cli(pki: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["--pki".to_string(), pki.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_cli("gatehouse-certs", &all)
}

/// A new RSA-2048 key and CSR in `dir` (`openssl req`, subject `CN=name`; charon-cmd takes
/// RSA keys only), certified by `gatehouse-certs --pki PKI issue-client NAME --csr CSR -o CRT
/// EXTRA...`: (certificate, key).
pub fn issue_rsa_client(
    dir: &Path,
    pki: &Path,
    name: &str,
    extra: &[&str],
) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.crt"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", &format!("/CN={name}"), "-out"])
        .arg(&csr);
    let out = run_with_timeout(cmd, Duration::from_secs(30))?;
    anyhow::ensure!(
        out.status.success(),
        "openssl req for {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (csr_arg, cert_arg) = (csr.display().to_string(), cert.display().to_string());
    let mut args = vec!["issue-client", name, "--csr", &csr_arg, "-o", &cert_arg];
    args.extend_from_slice(extra);
    certs_cli(pki, &args)?;
    anyhow::ensure!(
        cert.exists(),
        "issue-client {name} --csr wrote no {cert_arg}"
    );
    Ok((cert, key))
}

/// A client certificate issued by `gatehouse-certs issue-client`: the certificate written
/// with `-o`, and the key the PKI stores for it.
#[derive(Clone, Debug)]
pub struct IssuedClient {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl IssuedClient {
    /// The files a hand-written OpenVPN client config names, trusting `ca`.
    pub fn cert_files(&self, ca: &Path) -> CertFiles {
        CertFiles {
            ca: ca.to_path_buf(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// `gatehouse-certs --pki PKI issue-client NAME -o OUT_DIR/NAME.crt EXTRA...` (EXTRA e.g.
/// `--not-before 2020-01-01T00:00:00Z --not-after 2020-02-01T00:00:00Z`). The key's path is
/// read from the `key: PATH` line the command prints.
pub fn issue_client(
    pki: &Path,
    name: &str,
    out_dir: &Path,
    extra: &[&str],
) -> Result<IssuedClient> {
    let cert = out_dir.join(format!("{name}.crt"));
    let cert_arg = cert.display().to_string();
    let mut args = vec!["issue-client", name, "-o", &cert_arg];
    args.extend_from_slice(extra);
    let stdout = certs_cli(pki, &args)?;
    let key = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("key:"))
        .map(|p| PathBuf::from(p.trim()))
        .with_context(|| format!("`issue-client {name}` printed no `key: PATH` line:\n{stdout}"))?;
    // Relative to the directory gatehouse-certs ran in (ours), should --pki ever be relative.
    let key = if key.is_absolute() {
        key
    } else {
        std::env::current_dir()?.join(key)
    };
    if !cert.exists() || !key.exists() {
        bail!(
            "`issue-client {name}` reported {} and {}, but they do not both exist",
            cert.display(),
            key.display()
        );
    }
    Ok(IssuedClient {
        name: name.to_string(),
        cert,
        key,
    })
}

/// `gatehouse-certs --pki PKI export NAME --gateway GATEWAY --format ovpn -o OUT`.
pub fn export_ovpn(
    pki: &Path,
    name: &str,
    gateway: impl Into<std::net::IpAddr>,
    out: &Path,
) -> Result<PathBuf> {
    let gateway = gateway.into().to_string();
    let out_arg = out.display().to_string();
    certs_cli(
        pki,
        &[
            "export",
            name,
            "--gateway",
            &gateway,
            "--format",
            "ovpn",
            "-o",
            &out_arg,
        ],
    )?;
    if !out.exists() {
        bail!("`export {name} --format ovpn` wrote no {}", out.display());
    }
    Ok(out.to_path_buf())
}

/// The PEM inside `<tag>...</tag>` of an `.ovpn` profile (with a final newline).
pub fn inline_block(ovpn: &str, tag: &str) -> Result<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = ovpn
        .find(&open)
        .with_context(|| format!("profile has no {open} block"))?
        + open.len();
    let len = ovpn[start..]
        .find(&close)
        .with_context(|| format!("profile has no {close}"))?;
    Ok(format!("{}\n", ovpn[start..start + len].trim()))
}

/// Writes the inline `<ca>`, `<cert>` and `<key>` of the profile `ovpn` into `dir` as
/// `PREFIX-ca.crt`, `PREFIX.crt`, `PREFIX.key`, for a hand-written client config.
pub fn cert_files_from_ovpn(ovpn: &Path, dir: &Path, prefix: &str) -> Result<CertFiles> {
    let text = fs::read_to_string(ovpn).with_context(|| format!("reading {}", ovpn.display()))?;
    let files = CertFiles {
        ca: dir.join(format!("{prefix}-ca.crt")),
        cert: dir.join(format!("{prefix}.crt")),
        key: dir.join(format!("{prefix}.key")),
    };
    fs::write(&files.ca, inline_block(&text, "ca")?)?;
    fs::write(&files.cert, inline_block(&text, "cert")?)?;
    fs::write(&files.key, inline_block(&text, "key")?)?;
    // A private key: openvpn warns about one others can read.
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600))?;
    Ok(files)
}

/// Sets `key` to the TOML value `value` (written as is: quote strings with [`toml_str`]) in
/// `text`, a `gateway.toml`. `key` is `name` for a top-level key or `table.name` (e.g.
/// `openvpn.tls_ekm`). An existing entry is replaced, including a multi-line array;
/// otherwise the key is added at the end of its table (top-level keys before the first
/// table header), and a missing table is appended.
pub fn set_toml_key(text: &str, key: &str, value: &str) -> String {
    let (table, name) = match key.split_once('.') {
        Some((t, n)) => (Some(t), n),
        None => (None, key),
    };
    let lines: Vec<&str> = text.lines().collect();
    let new_line = format!("{name} = {value}");

    // [start, end) of the table's body: top level is from line 0 to the first header.
    let mut start = None;
    let mut end = lines.len();
    let mut current: Option<&str> = None;
    if table.is_none() {
        start = Some(0);
    }
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = table_header(line) {
            if start.is_some() && current == table {
                end = i;
                break;
            }
            current = Some(h);
            if Some(h) == table {
                start = Some(i + 1);
            }
        }
    }
    let Some(start) = start else {
        let mut out = text.trim_end().to_string();
        let _ = write!(out, "\n\n[{}]\n{new_line}\n", table.unwrap_or_default());
        return out;
    };

    let is_entry = |l: &str| {
        l.trim_start()
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 1);
    out.extend(lines[..start].iter().map(|l| l.to_string()));
    let mut i = start;
    let mut replaced = false;
    while i < end {
        let line = lines[i];
        if !replaced && is_entry(line) {
            // A multi-line array runs until its brackets balance.
            let mut depth = bracket_depth(line);
            i += 1;
            while depth > 0 && i < end {
                depth += bracket_depth(lines[i]);
                i += 1;
            }
            out.push(new_line.clone());
            replaced = true;
            continue;
        }
        out.push(line.to_string());
        i += 1;
    }
    if !replaced {
        // After the table's last non-blank line.
        let mut at = out.len();
        while at > start && out[at - 1].trim().is_empty() {
            at -= 1;
        }
        out.insert(at, new_line);
    }
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}

/// The name of a `[table]` header line.
fn table_header(line: &str) -> Option<&str> {
    let t = line.trim();
    (t.starts_with('[') && t.ends_with(']')).then(|| t.trim_matches(['[', ']']).trim())
}

/// `[` minus `]` on a line, outside strings (CIDRs and names hold neither).
fn bracket_depth(line: &str) -> i32 {
    let mut depth = 0;
    let mut in_str = false;
    for c in line.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            '#' if !in_str => break,
            _ => {}
        }
    }
    depth
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// A gateway data directory made by `gatehoused init`: `gateway.toml` and `pki/`.
#[derive(Debug)]
pub struct GatewayDir {
    path: PathBuf,
}

impl GatewayDir {
    /// `gatehoused init --data-dir DIR --public-addr PUBLIC_ADDR [--address-space CIDR]...
    /// [--client-pool POOL]`, then checks it wrote `gateway.toml` and the CA.
    pub fn init(
        dir: &Path,
        public_addr: &str,
        address_space: &[Ipv4Cidr],
        client_pool: Option<Ipv4Cidr>,
    ) -> Result<GatewayDir> {
        let mut args = vec![
            "init".to_string(),
            "--data-dir".to_string(),
            dir.display().to_string(),
            "--public-addr".to_string(),
            public_addr.to_string(),
        ];
        for a in address_space {
            args.push("--address-space".to_string());
            args.push(a.network().to_string());
        }
        if let Some(pool) = client_pool {
            args.push("--client-pool".to_string());
            args.push(pool.network().to_string());
        }
        let stdout = run_cli("gatehoused", &args)?;
        let gw = GatewayDir {
            path: dir.to_path_buf(),
        };
        for file in [gw.config_path(), gw.ca_cert()] {
            if !file.exists() {
                bail!(
                    "`gatehoused {}` succeeded but did not write {} (output: {:?})",
                    args.join(" "),
                    file.display(),
                    stdout.trim()
                );
            }
        }
        Ok(gw)
    }

    /// The data directory of a gateway in `topo`: public address = the gateway's address on
    /// client 0's link, address space = the LAN, client pool = the topology's VPN pool,
    /// TUN `tun_name`. `dir` is created if missing.
    pub fn for_topology(dir: &Path, topo: &GatewayTopology, tun_name: &str) -> Result<GatewayDir> {
        fs::create_dir_all(dir)?;
        let public = topo.client(0).gateway_addr.to_string();
        let gw = GatewayDir::init(dir, &public, &[topo.lan_net], Some(topo.vpn_pool))?;
        gw.set("tun_name", &toml_str(tun_name))?;
        Ok(gw)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of this data directory at `dir` (`cp -a`: configuration and PKI, modes kept):
    /// the second gateway of an active-standby pair, with the same CA and certificate.
    pub fn copy_to(&self, dir: &Path) -> Result<GatewayDir> {
        let out = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(dir)
            .output()
            .context("running cp")?;
        if !out.status.success() {
            bail!(
                "cp -a {} {} failed: {}",
                self.path.display(),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(GatewayDir {
            path: dir.to_path_buf(),
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("gateway.toml")
    }

    /// The PKI folder (`pki_dir` as `init` writes it).
    pub fn pki(&self) -> PathBuf {
        self.path.join("pki")
    }

    /// The gateway's root CA certificate: what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }

    pub fn config_text(&self) -> Result<String> {
        let path = self.config_path();
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Sets one key of `gateway.toml` (see [`set_toml_key`]), e.g.
    /// `set("openvpn.ping", "\"2s\"")` or `set("openvpn.tls_ekm", "false")`.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let text = set_toml_key(&self.config_text()?, key, value);
        fs::write(self.config_path(), text)
            .with_context(|| format!("writing {}", self.config_path().display()))
    }

    /// Issues a client certificate from this gateway's CA (see [`issue_client`]); the
    /// certificate file goes into the data directory.
    pub fn issue_client(&self, name: &str, extra: &[&str]) -> Result<IssuedClient> {
        issue_client(&self.pki(), name, &self.path, extra)
    }

    /// Issues a client certificate and exports it as a stock `.ovpn` profile dialling
    /// `gateway`, written to `out`.
    pub fn client_profile(
        &self,
        name: &str,
        gateway: impl Into<std::net::IpAddr>,
        out: &Path,
    ) -> Result<PathBuf> {
        self.issue_client(name, &[])?;
        export_ovpn(&self.pki(), name, gateway, out)
    }

    /// `gatehouse-certs revoke NAME`: rewrites `pki/crl.pem`, which the gateway polls.
    pub fn revoke(&self, name: &str) -> Result<()> {
        certs_cli(&self.pki(), &["revoke", name])?;
        Ok(())
    }
}

/// One event of gatehoused's log: the message and its `key=value` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub message: String,
    pub fields: BTreeMap<String, String>,
    /// The whole line, without ANSI escapes.
    pub line: String,
}

impl LogEvent {
    /// A field's value (quotes removed), if the event has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Whether the `remote` field names `addr` (as `addr:port`, possibly v4-mapped).
    pub fn remote_is(&self, addr: Ipv4Addr) -> bool {
        self.field("remote")
            .is_some_and(|r| r.contains(&format!("{addr}:")) || r == addr.to_string())
    }

    /// The `address` field as an IPv4 address (a `/prefix` is ignored).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.field("address")
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
    }
}

/// Removes ANSI escape sequences (colours, italics) from `s`.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// Parses `line` as the event `message` if it is one: tracing's default format
/// (`TIME LEVEL target: message key=value key="quoted value" ...`) or its JSON format
/// (`{"fields":{"message":..,..}}`).
pub fn parse_event(line: &str, message: &str) -> Option<LogEvent> {
    let line = strip_ansi(line);
    let mut trimmed = line.trim();
    // The journal's priority prefix (`<6>`), as written when stderr is the journal.
    if let [b'<', d, b'>', ..] = trimmed.as_bytes()
        && d.is_ascii_digit()
    {
        trimmed = &trimmed[3..];
    }
    if trimmed.starts_with('{') {
        return parse_json_event(trimmed, message);
    }
    // The message, as a whole phrase: after a space or the line's start, followed by a
    // space or the line's end.
    let mut from = 0;
    let rest = loop {
        let at = from + trimmed[from..].find(message)?;
        let before_ok = at == 0 || trimmed[..at].ends_with(' ');
        let after = &trimmed[at + message.len()..];
        if before_ok && (after.is_empty() || after.starts_with(' ')) {
            break after;
        }
        from = at + message.len();
    };
    Some(LogEvent {
        message: message.to_string(),
        fields: parse_fields(rest),
        line: trimmed.to_string(),
    })
}

fn parse_json_event(line: &str, message: &str) -> Option<LogEvent> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields").unwrap_or(&v).as_object()?;
    if fields.get("message").and_then(Value::as_str) != Some(message) {
        return None;
    }
    let fields = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "message")
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), v)
        })
        .collect();
    Some(LogEvent {
        message: message.to_string(),
        fields,
        line: line.to_string(),
    })
}

/// `key=value key="a \"quoted\" value" key=an unquoted value with spaces ...`: an unquoted
/// value (tracing prints `%display` fields so) runs until the next ` key=`; words before the
/// first `key=` are skipped.
fn parse_fields(s: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let klen = key_len(rest);
        if klen == 0 {
            // Not a field: skip the word.
            let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
            rest = rest[word..].trim_start();
            continue;
        }
        let key = &rest[..klen];
        rest = &rest[klen + 1..];
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = quoted[end..].trim_start();
        } else {
            // Up to the next whitespace that is followed by `key=`.
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                if c.is_whitespace() && key_len(rest[i..].trim_start()) > 0 {
                    end = i;
                    break;
                }
            }
            value.push_str(rest[..end].trim_end());
            rest = rest[end..].trim_start();
        }
        fields.insert(key.to_string(), value);
    }
    fields
}

/// Length of the field name `s` starts with, if `s` starts with `name=` (letters, digits,
/// `_`, `.`); 0 otherwise.
fn key_len(s: &str) -> usize {
    let len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    if len > 0 && s[len..].starts_with('=') {
        len
    } else {
        0
    }
}

/// A running `gatehoused run --data-dir DIR` inside a namespace; stopped on Drop.
#[derive(Debug)]
pub struct Gatehoused {
    proc: Proc,
}

impl Gatehoused {
    /// Starts the gateway in `ns` with its log in `log`, and waits for [`READY`]. If it exits
    /// or stays silent, the error holds its log.
    pub fn start(ns: &Netns, dir: &GatewayDir, log: &Path) -> Result<Gatehoused> {
        let gw = Gatehoused::spawn(ns, dir, log)?;
        gw.wait_ready(READY_TIMEOUT)?;
        Ok(gw)
    }

    /// Starts the gateway without waiting. `RUST_LOG` defaults to `info` (the events the
    /// tests read) and `NO_COLOR` is set; a `RUST_LOG` in the environment wins.
    pub fn spawn(ns: &Netns, dir: &GatewayDir, log: &Path) -> Result<Gatehoused> {
        let mut cmd = ns.command(bin("gatehoused"));
        cmd.arg("run").arg("--data-dir").arg(dir.path());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        Ok(Gatehoused {
            proc: Proc::spawn(cmd, log)?,
        })
    }

    /// Like [`Gatehoused::start`], with extra environment variables for the daemon (e.g.
    /// `("GATEHOUSE_LOG", "debug")`: gatehoused reads its log filter from `GATEHOUSE_LOG`).
    pub fn start_with_env(
        ns: &Netns,
        dir: &GatewayDir,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Gatehoused> {
        let gw = Gatehoused::spawn_with_env(ns, dir, log, env)?;
        gw.wait_ready(READY_TIMEOUT)?;
        Ok(gw)
    }

    /// Like [`Gatehoused::spawn`], with extra environment variables for the daemon.
    pub fn spawn_with_env(
        ns: &Netns,
        dir: &GatewayDir,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Gatehoused> {
        let mut cmd = ns.command(bin("gatehoused"));
        cmd.arg("run").arg("--data-dir").arg(dir.path());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(Gatehoused {
            proc: Proc::spawn(cmd, log)?,
        })
    }

    /// Like [`Gatehoused::start`], run through `wrapper`: a program and its arguments that
    /// set something up and exec the rest (e.g. `["prlimit", "--nofile=200:200", "--"]`), so
    /// the daemon keeps the wrapper's pid.
    pub fn start_wrapped(
        ns: &Netns,
        dir: &GatewayDir,
        log: &Path,
        wrapper: &[&str],
    ) -> Result<Gatehoused> {
        let (program, args) = wrapper.split_first().context("an empty wrapper command")?;
        let mut cmd = ns.command(program);
        cmd.args(args)
            .arg(bin("gatehoused"))
            .arg("run")
            .arg("--data-dir")
            .arg(dir.path());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        let gw = Gatehoused {
            proc: Proc::spawn(cmd, log)?,
        };
        gw.wait_ready(READY_TIMEOUT)?;
        Ok(gw)
    }

    /// The daemon's process id (`ip netns exec` execs it: the same process).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends SIGTERM (a graceful stop: gatehoused tells its clients to RESTART and logs
    /// [`STOPPED`]) and waits up to `timeout` for the process to exit. Fails, with the log,
    /// if it is still running then (it is killed with SIGKILL in that case).
    pub fn terminate(&self, timeout: Duration) -> Result<()> {
        signal(self.proc.pid(), "TERM");
        let deadline = Instant::now() + timeout;
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                let _ = self.kill_hard();
                bail!(
                    "gatehoused (pid {}) did not exit within {timeout:?} of SIGTERM; log {}:\n{}",
                    self.proc.pid(),
                    self.proc.log_path().display(),
                    self.log_tail(30)
                );
            }
            thread::sleep(POLL);
        }
        Ok(())
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// The log so far, without ANSI escapes.
    pub fn log(&self) -> String {
        strip_ansi(&self.proc.log_contents())
    }

    /// The last `n` lines of the log, without ANSI escapes.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the log says [`READY`]; fails with the log if gatehoused exits first.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_event(READY, |_| true, timeout).map(|_| ())
    }

    /// Every logged event `message`, oldest first.
    pub fn events(&self, message: &str) -> Vec<LogEvent> {
        self.log()
            .lines()
            .filter_map(|l| parse_event(l, message))
            .collect()
    }

    /// Waits for an event `message` that `pred` accepts and returns it. Fails, with the log,
    /// when `timeout` passes or gatehoused exits first.
    pub fn wait_event(
        &self,
        message: &str,
        pred: impl Fn(&LogEvent) -> bool,
        timeout: Duration,
    ) -> Result<LogEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events(message).into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if !self.is_running() {
                if let Some(e) = self.events(message).into_iter().find(|e| pred(e)) {
                    return Ok(e);
                }
                bail!(
                    "gatehoused exited before logging a matching {message:?}; log {}:\n{}",
                    self.proc.log_path().display(),
                    self.log_tail(40)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "gatehoused logged no matching {message:?} within {timeout:?}; log {}:\n{}",
                    self.proc.log_path().display(),
                    self.log_tail(40)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for `client connected` with `client=name`.
    pub fn wait_connected(&self, name: &str, timeout: Duration) -> Result<LogEvent> {
        self.wait_event(CONNECTED, |e| e.field("client") == Some(name), timeout)
    }

    /// Kills the daemon with SIGKILL (no clean shutdown) and waits until it is gone.
    pub fn kill_hard(&self) -> Result<()> {
        signal(self.proc.pid(), "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                bail!(
                    "gatehoused (pid {}) survived SIGKILL for 5 s",
                    self.proc.pid()
                );
            }
            thread::sleep(POLL);
        }
        Ok(())
    }
}

/// The drop counters of a [`STOPPED`] (or periodic `status`) line: everything after
/// `drops=`, e.g. `drops=ipv6=3 spoofed=5 sessions=..` gives {ipv6: 3, spoofed: 5}; `none`
/// gives an empty map. Only `name=number` words (name: lowercase letters and digits)
/// directly after `drops=` count; the first word that is not one ends the list.
pub fn drop_counters(line: &str) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    let line = strip_ansi(line);
    let Some(at) = line.find("drops=") else {
        return counters;
    };
    for word in line[at + "drops=".len()..].split_whitespace() {
        let Some((name, value)) = word.trim_matches('"').split_once('=') else {
            break;
        };
        let (Ok(n), true) = (
            value.parse::<u64>(),
            name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        ) else {
            break;
        };
        counters.insert(name.to_string(), n);
    }
    counters
}

/// Starts the stock client: `openvpn --config CONFIG --dev-type tun --dev DEV --disable-dco
/// --verb 3 EXTRA...` in `ns`, logging to `log` (options after the file override it).
pub fn spawn_stock_client(
    ns: &Netns,
    config: &Path,
    dev: &str,
    extra: &[&str],
    log: &Path,
) -> Result<Proc> {
    let mut args = vec![
        "--dev-type",
        "tun",
        "--dev",
        dev,
        "--disable-dco",
        "--verb",
        "3",
    ];
    args.extend_from_slice(extra);
    spawn_openvpn(ns, config, &args, log)
}

/// How often `UP` ("Initialization Sequence Completed") is in the client's log.
pub fn times_up(client: &Proc) -> usize {
    client.log_contents().matches(UP).count()
}

/// Waits until the stock `client` has logged [`UP`] `times` times in all (1 = first
/// connect). Fails early, with both logs, if the client or the gateway exits, or when
/// `timeout` passes.
pub fn wait_client_up(
    client: &Proc,
    gateway: &Gatehoused,
    times: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let logs = || {
        format!(
            "client log {}:\n{}\ngatehoused log {}:\n{}",
            client.log_path().display(),
            client.log_tail(25),
            gateway.proc().log_path().display(),
            gateway.log_tail(25)
        )
    };
    loop {
        if times_up(client) >= times {
            return Ok(());
        }
        if !client.is_running() {
            bail!(
                "the openvpn client exited before its tunnel came up\n{}",
                logs()
            );
        }
        if !gateway.is_running() {
            bail!(
                "gatehoused exited while the client was connecting\n{}",
                logs()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the openvpn client did not log {UP:?} (x{times}) within {timeout:?}\n{}",
                logs()
            );
        }
        thread::sleep(POLL);
    }
}

/// The IPv4 address and prefix of `dev` in `ns` (`ip -4 -br addr show dev DEV`).
pub fn tun_ipv4(ns: &Netns, dev: &str) -> Result<Ipv4Cidr> {
    let out = ns.exec_ok("ip", ["-4", "-br", "addr", "show", "dev", dev])?;
    let word = out
        .split_whitespace()
        .find(|w| w.contains('/') && w.contains('.'))
        .with_context(|| format!("{dev} in {} has no IPv4 address: {out:?}", ns.name()))?;
    let (addr, prefix) = word.split_once('/').context("addr/prefix")?;
    Ok(Ipv4Cidr::new(
        addr.parse()
            .with_context(|| format!("address {addr:?} of {dev}"))?,
        prefix
            .parse()
            .with_context(|| format!("prefix {prefix:?} of {dev}"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT_TOML: &str = r#"# Gatehouse gateway configuration.

public_addr = "10.250.20.1"
pki_dir = "pki"
server_cert = "gateway"
address_space = [
    "10.251.20.0/24",
]
client_pool = "10.8.20.0/24"
dns = []
full_tunnel = false
tun_name = "gatehouse0"
tun_mtu = 1500

[openvpn]
listen = "0.0.0.0"
udp_port = 1194
tcp_port = 443
tls_ekm = true
ciphers = [
    "AES-256-GCM",
    "CHACHA20-POLY1305",
]
ping = "10s"
ping_restart = "60s"
reneg = "1h"
"#;

    #[test]
    fn replaces_top_level_and_table_keys() {
        let t = set_toml_key(INIT_TOML, "tun_name", &toml_str("ghd20"));
        let t = set_toml_key(&t, "openvpn.tls_ekm", "false");
        let t = set_toml_key(&t, "openvpn.ping", &toml_str("2s"));
        assert!(t.contains("\ntun_name = \"ghd20\"\n"), "{t}");
        assert!(!t.contains("gatehouse0"), "{t}");
        assert!(t.contains("\ntls_ekm = false\n"), "{t}");
        assert!(t.contains("\nping = \"2s\"\n"), "{t}");
        assert!(t.contains("\nping_restart = \"60s\"\n"), "{t}");
        assert_eq!(t.lines().count(), INIT_TOML.lines().count());
    }

    #[test]
    fn replaces_multi_line_arrays_whole() {
        let t = set_toml_key(INIT_TOML, "openvpn.ciphers", r#"["AES-256-GCM"]"#);
        assert!(t.contains("\nciphers = [\"AES-256-GCM\"]\nping = "), "{t}");
        assert!(!t.contains("CHACHA20"), "{t}");
        let t = set_toml_key(INIT_TOML, "address_space", "[]");
        assert!(t.contains("\naddress_space = []\nclient_pool"), "{t}");
    }

    #[test]
    fn adds_missing_keys_in_the_right_table() {
        let t = set_toml_key(INIT_TOML, "full_tunnel", "true");
        let t = set_toml_key(&t, "openvpn.udp_port", "0");
        let without_listen = INIT_TOML.replace("listen = \"0.0.0.0\"\n", "");
        let t2 = set_toml_key(&without_listen, "openvpn.listen", &toml_str("10.0.0.1"));
        assert!(t.contains("full_tunnel = true"), "{t}");
        assert!(t.contains("\nudp_port = 0\n"), "{t}");
        assert!(t2.trim_end().ends_with("listen = \"10.0.0.1\""), "{t2}");
        let bare = "public_addr = \"x\"\n";
        let t3 = set_toml_key(bare, "tun_mtu", "1400");
        let t3 = set_toml_key(&t3, "openvpn.tls_ekm", "false");
        assert_eq!(
            t3,
            "public_addr = \"x\"\ntun_mtu = 1400\n\n[openvpn]\ntls_ekm = false\n"
        );
        // A top-level key goes before the first table, not into it.
        let t4 = set_toml_key(INIT_TOML, "dns_suffix", "1");
        let at = t4.find("dns_suffix").expect("added");
        assert!(at < t4.find("[openvpn]").expect("table"), "{t4}");
    }

    #[test]
    fn parses_tracing_fmt_events() {
        let line = "\u{1b}[2m2025-01-01T00:00:00.123Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    \u{1b}[2mgatehouse_server::gateway\u{1b}[0m\u{1b}[2m:\u{1b}[0m client connected \
                    \u{1b}[3mclient\u{1b}[0m\u{1b}[2m=\u{1b}[0malice remote=10.250.20.2:41000 \
                    address=10.8.20.2 cipher=AES-256-GCM keys=tls-ekm transport=udp";
        let e = parse_event(line, CONNECTED).expect("an event");
        assert_eq!(e.field("client"), Some("alice"));
        assert_eq!(e.field("keys"), Some("tls-ekm"));
        assert_eq!(e.field("transport"), Some("udp"));
        assert_eq!(e.address(), Some(Ipv4Addr::new(10, 8, 20, 2)));
        assert!(e.remote_is(Ipv4Addr::new(10, 250, 20, 2)));
        assert!(!e.remote_is(Ipv4Addr::new(10, 250, 20, 1)));
        assert!(parse_event(line, REFUSED).is_none());

        let line = r#"2025-01-01T00:00:00Z  WARN gatehouse_server: client refused client=carol remote=10.250.24.2:5000 reason="certificate \"carol\" is revoked""#;
        let e = parse_event(line, REFUSED).expect("an event");
        assert_eq!(e.field("reason"), Some("certificate \"carol\" is revoked"));
        assert_eq!(e.field("client"), Some("carol"));
        let line = "WARN client refused client=carol remote=10.250.24.2:37483 \
                    reason=certificate revoked (listed in the CRL)";
        let e = parse_event(line, REFUSED).expect("an event");
        assert_eq!(e.field("remote"), Some("10.250.24.2:37483"));
        assert_eq!(
            e.field("reason"),
            Some("certificate revoked (listed in the CRL)")
        );
        let e = parse_event(
            "INFO x: client disconnected client=bob reason=ping timeout a=",
            DISCONNECTED,
        )
        .expect("an event");
        assert_eq!(e.field("reason"), Some("ping timeout"));
        assert_eq!(e.field("a"), Some(""));
        // A longer phrase is not the event.
        assert!(parse_event("INFO x: client connectedness=1", CONNECTED).is_none());
    }

    #[test]
    fn parses_json_events() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"client connected","client":"bob","keys":"prf"},"target":"x"}"#;
        let e = parse_event(line, CONNECTED).expect("an event");
        assert_eq!(e.field("client"), Some("bob"));
        assert_eq!(e.field("keys"), Some("prf"));
    }

    #[test]
    fn parses_drop_counters() {
        let c = drop_counters("2025-01-01T00:00:00Z  INFO gateway stopped drops=ipv6=3 spoofed=5");
        assert_eq!(c.get("ipv6"), Some(&3));
        assert_eq!(c.get("spoofed"), Some(&5));
        assert_eq!(c.len(), 2);
        assert!(drop_counters("INFO gateway stopped drops=none").is_empty());
        let c = drop_counters("INFO status sessions=1 leased=1 drops=nosession=2 message");
        assert_eq!(c.get("nosession"), Some(&2));
        assert_eq!(c.len(), 1);
        assert!(drop_counters("INFO gateway ready").is_empty());
    }

    #[test]
    fn extracts_inline_blocks() {
        let ovpn = "client\n<ca>\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n</ca>\n<key>\nK\n</key>\n";
        assert_eq!(
            inline_block(ovpn, "ca").expect("ca"),
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(inline_block(ovpn, "key").expect("key"), "K\n");
        assert!(inline_block(ovpn, "cert").is_err());
    }
}
