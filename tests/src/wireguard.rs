//! Stock WireGuard peers for the WireGuard tests: `wireguard-go` (userspace; the kernel has
//! no WireGuard module) configured by `wg` from Debian's `wireguard-tools`, in a namespace.
//!
//! wireguard-go's control socket is `/var/run/wireguard/<iface>.sock` in the file system,
//! shared by every namespace: each test names its interface uniquely (`wg<tag><n>`).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cidr::Ipv4Cidr;
use crate::gatehoused::toml_str;
use crate::netns::Netns;
use crate::proc::Proc;

/// A keypair from `wg genkey` / `wg pubkey`: (private, public), base64.
pub fn wg_keypair() -> Result<(String, String)> {
    let out = std::process::Command::new("wg").arg("genkey").output()?;
    if !out.status.success() {
        bail!("wg genkey failed");
    }
    let private = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((private.clone(), wg_pubkey(&private)?))
}

/// `wg pubkey` of a private key.
pub fn wg_pubkey(private: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{private}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wg pubkey failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A `wg-quick` file made fit for `wg setconf`: wg-quick's own keys (Address, DNS, MTU...)
/// removed; the test applies the address itself. Returns the file and the addresses.
pub fn setconf_of_wg_quick(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut addresses = Vec::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "Address" => addresses.extend(
                line.split_once('=')
                    .map(|x| x.1)
                    .unwrap_or("")
                    .split(',')
                    .map(|a| a.trim().to_owned()),
            ),
            "DNS" | "MTU" | "Table" | "PreUp" | "PostUp" | "PreDown" | "PostDown"
            | "SaveConfig" => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (out, addresses)
}

/// A wireguard-go interface in a namespace; dropping it stops wireguard-go (the interface
/// goes with it) and removes its control socket.
pub struct WgGo {
    pub iface: String,
    ns_name: String,
    proc: Proc,
    conf: PathBuf,
}

impl WgGo {
    /// Starts `wireguard-go -f IFACE` in `ns`, loads `setconf` (a `wg setconf` file) into it,
    /// adds `address`, brings it up and routes `routes` into it.
    pub fn start(
        ns: &Netns,
        iface: &str,
        setconf: &str,
        address: Ipv4Cidr,
        routes: &[Ipv4Cidr],
        dir: &Path,
    ) -> Result<WgGo> {
        let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
        let _ = fs::remove_file(&sock);
        let mut cmd = ns.command("wireguard-go");
        cmd.arg("-f").arg(iface).env("WG_PROCESS_FOREGROUND", "1");
        let proc = Proc::spawn(cmd, &dir.join(format!("wireguard-go-{iface}.log")))?;
        let conf = dir.join(format!("{iface}.setconf"));
        fs::write(&conf, setconf)?;
        let wg = WgGo {
            iface: iface.to_owned(),
            ns_name: ns.name().to_owned(),
            proc,
            conf,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline || !wg.proc.is_running() {
                bail!(
                    "wireguard-go did not create {}:\n{}",
                    sock.display(),
                    wg.proc.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ns.exec_ok("wg", ["setconf", iface, &wg.conf.display().to_string()])?;
        ns.exec_ok("ip", ["addr", "add", &address.to_string(), "dev", iface])?;
        ns.exec_ok("ip", ["link", "set", iface, "up"])?;
        for r in routes {
            ns.exec_ok("ip", ["route", "replace", &r.to_string(), "dev", iface])?;
        }
        Ok(wg)
    }

    /// `wg show IFACE` (for failure messages).
    pub fn show(&self) -> String {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "wg", "show", &self.iface])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// wireguard-go's log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

/// `gatehoused ctl --data-dir DIR WHAT --json` (the admin API of a running gateway).
pub fn ctl_json(data_dir: &Path, what: &str) -> Result<serde_json::Value> {
    let out = std::process::Command::new(crate::bin("gatehoused"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(data_dir)
        .args([what, "--json"])
        .output()?;
    if !out.status.success() {
        bail!(
            "gatehoused ctl {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "gatehoused ctl {what} --json: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A `[[connection]] type = "wireguard"` table for gateway.toml.
pub fn wg_connection(
    name: &str,
    public_key: &str,
    endpoint: Option<SocketAddr>,
    prefixes: &[Ipv4Cidr],
    keepalive: Option<u16>,
) -> String {
    let mut t = String::from("\n[[connection]]\n");
    let _ = writeln!(t, "name = {}", toml_str(name));
    let _ = writeln!(t, "type = \"wireguard\"");
    let _ = writeln!(t, "public_key = {}", toml_str(public_key));
    if let Some(e) = endpoint {
        let _ = writeln!(t, "endpoint = {}", toml_str(&e.to_string()));
    }
    let list: Vec<String> = prefixes
        .iter()
        .map(|p| toml_str(&p.network().to_string()))
        .collect();
    let _ = writeln!(t, "remote_address_space = [{}]", list.join(", "));
    if let Some(k) = keepalive {
        let _ = writeln!(t, "persistent_keepalive = {k}");
    }
    t
}

/// A `wg setconf` file for a site peer: our key, our port, one peer.
pub fn site_setconf(
    private: &str,
    port: u16,
    peer_public: &str,
    peer_endpoint: Option<SocketAddr>,
    allowed: &[Ipv4Cidr],
) -> String {
    let mut t = format!("[Interface]\nPrivateKey = {private}\nListenPort = {port}\n\n[Peer]\n");
    let _ = writeln!(t, "PublicKey = {peer_public}");
    if let Some(e) = peer_endpoint {
        let _ = writeln!(t, "Endpoint = {e}");
    }
    let list: Vec<String> = allowed.iter().map(|a| a.network().to_string()).collect();
    let _ = writeln!(t, "AllowedIPs = {}", list.join(", "));
    t.push_str("PersistentKeepalive = 5\n");
    t
}

/// The address of an `Address = a.b.c.d/n` entry.
pub fn address_of(entry: &str) -> Result<Ipv4Addr> {
    entry
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("{entry:?} is not an address"))
}
