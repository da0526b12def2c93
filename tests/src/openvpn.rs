//! The stock OpenVPN 2.6 peer: configs for its server and client, written the way the interop
//! lab runs them (shared/interop/openvpn/conf/), and starting them in a namespace.
//! `verb 3` and logs go to a file; the client is up once it logs [`UP`].

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cidr::Ipv4Cidr;
use crate::netns::Netns;
use crate::proc::Proc;

/// What OpenVPN logs once a tunnel is up (client) or ready for clients (server).
pub const UP: &str = "Initialization Sequence Completed";

/// The data ciphers Gatehouse offers; both ends of the baseline use the same list.
pub const DATA_CIPHERS: &str = "AES-256-GCM:CHACHA20-POLY1305";

/// How long a peer gets to report [`UP`]: a TLS 1.3 handshake takes ~15 ms here, but two
/// cores are shared with compilers.
pub const UP_TIMEOUT: Duration = Duration::from_secs(20);

/// A CA certificate plus one peer's certificate and private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The transport under the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn server_keyword(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp-server",
        }
    }

    fn client_keyword(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp-client",
        }
    }
}

/// A stock `openvpn` server: TLS 1.3, certificates, `topology subnet`, a pool, pushed routes.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub proto: Proto,
    /// Address to listen on; `None` listens on all addresses of its namespace.
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub certs: CertFiles,
    /// `server NETWORK NETMASK`: the server takes .1, clients get the rest.
    pub pool: Ipv4Cidr,
    /// Each becomes `push "route NETWORK NETMASK"`.
    pub push_routes: Vec<Ipv4Cidr>,
    /// TUN device name, unique within the namespace.
    pub dev: String,
    pub data_ciphers: String,
    /// Further config lines, appended as they are.
    pub extra: Vec<String>,
}

impl ServerConfig {
    pub fn new(proto: Proto, port: u16, certs: CertFiles, pool: Ipv4Cidr) -> ServerConfig {
        ServerConfig {
            proto,
            local: None,
            port,
            certs,
            pool,
            push_routes: Vec::new(),
            dev: "tun-ovpns".to_string(),
            data_ciphers: DATA_CIPHERS.to_string(),
            extra: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut c = String::new();
        let pool = self.pool.network();
        let _ = writeln!(c, "dev-type tun\ndev {}", self.dev);
        let _ = writeln!(
            c,
            "topology subnet\nserver {} {}",
            pool.addr,
            pool.netmask()
        );
        let _ = writeln!(
            c,
            "proto {}\nport {}",
            self.proto.server_keyword(),
            self.port
        );
        if let Some(local) = self.local {
            let _ = writeln!(c, "local {local}");
        }
        for route in &self.push_routes {
            let net = route.network();
            let _ = writeln!(c, "push \"route {} {}\"", net.addr, net.netmask());
        }
        write_certs(&mut c, &self.certs);
        let _ = writeln!(c, "dh none\ntls-version-min 1.3");
        let _ = writeln!(c, "data-ciphers {}", self.data_ciphers);
        let _ = writeln!(c, "disable-dco\nkeepalive 10 60\npersist-key\nverb 3");
        for line in &self.extra {
            let _ = writeln!(c, "{line}");
        }
        c
    }

    /// Writes the config to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        fs::write(path, self.render()).with_context(|| format!("writing {}", path.display()))
    }
}

/// A stock `openvpn` client (`client`, `remote-cert-tls server`), like conf/client.conf.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub proto: Proto,
    pub remote: std::net::IpAddr,
    pub port: u16,
    pub certs: CertFiles,
    /// TUN device name, unique within the namespace.
    pub dev: String,
    pub data_ciphers: String,
    /// Further config lines, appended as they are.
    pub extra: Vec<String>,
}

impl ClientConfig {
    pub fn new(
        proto: Proto,
        remote: impl Into<std::net::IpAddr>,
        port: u16,
        certs: CertFiles,
    ) -> ClientConfig {
        let remote = remote.into();
        ClientConfig {
            proto,
            remote,
            port,
            certs,
            dev: "tun-ovpnc".to_string(),
            data_ciphers: DATA_CIPHERS.to_string(),
            extra: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "client\ndev-type tun\ndev {}", self.dev);
        let _ = writeln!(c, "proto {}", self.proto.client_keyword());
        let _ = writeln!(c, "remote {} {}\nnobind", self.remote, self.port);
        write_certs(&mut c, &self.certs);
        let _ = writeln!(c, "remote-cert-tls server");
        let _ = writeln!(c, "data-ciphers {}", self.data_ciphers);
        // A few retries only: a test wants a failure, not a client that retries forever.
        let _ = writeln!(c, "disable-dco\nconnect-retry 1 1\nverb 3");
        if self.proto == Proto::Udp {
            // Tells the server when the client stops, so it frees the session at once.
            let _ = writeln!(c, "explicit-exit-notify 1");
        }
        for line in &self.extra {
            let _ = writeln!(c, "{line}");
        }
        c
    }

    /// Writes the config to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        fs::write(path, self.render()).with_context(|| format!("writing {}", path.display()))
    }
}

fn write_certs(c: &mut String, certs: &CertFiles) {
    let _ = writeln!(c, "ca {}", certs.ca.display());
    let _ = writeln!(c, "cert {}", certs.cert.display());
    let _ = writeln!(c, "key {}", certs.key.display());
}

/// Runs `openvpn --config CONFIG EXTRA_ARGS...` in `ns`, logging to `log`. Command-line options
/// come after the file, so they override it (e.g. `--dev-type tun --dev NAME --disable-dco`
/// for a `.ovpn` profile exported by someone else).
pub fn spawn_openvpn(ns: &Netns, config: &Path, extra_args: &[&str], log: &Path) -> Result<Proc> {
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    args.extend(extra_args.iter().map(|a| a.to_string()));
    ns.spawn("openvpn", &args, log)
}

/// Writes `config` into `dir` as `server.conf`, starts the server in `ns` (log `server.log`)
/// and waits until it is ready for clients.
pub fn start_server(ns: &Netns, dir: &Path, config: &ServerConfig) -> Result<Proc> {
    let path = dir.join(format!("server-{}.conf", config.dev));
    config.write(&path)?;
    let log = dir.join(format!("server-{}.log", config.dev));
    let server = spawn_openvpn(ns, &path, &[], &log)?;
    server.wait_for_log(UP, UP_TIMEOUT)?;
    Ok(server)
}

/// Writes `config` into `dir`, starts the client in `ns` and waits until its tunnel is up.
pub fn start_client(ns: &Netns, dir: &Path, config: &ClientConfig) -> Result<Proc> {
    let path = dir.join(format!("client-{}-{}.conf", ns.name(), config.dev));
    config.write(&path)?;
    let log = dir.join(format!("client-{}-{}.log", ns.name(), config.dev));
    let client = spawn_openvpn(ns, &path, &[], &log)?;
    client.wait_for_log(UP, UP_TIMEOUT)?;
    Ok(client)
}

/// `openvpn --genkey secret PATH`: a static key, as `tls-auth` and `tls-crypt` use.
pub fn genkey_secret(path: &Path) -> Result<()> {
    genkey(&["--genkey", "secret", &path.display().to_string()])
}

/// `openvpn --genkey tls-crypt-v2-server PATH`: a server's tls-crypt-v2 key.
pub fn genkey_tls_crypt_v2_server(path: &Path) -> Result<()> {
    genkey(&[
        "--genkey",
        "tls-crypt-v2-server",
        &path.display().to_string(),
    ])
}

/// `openvpn --tls-crypt-v2 SERVER_KEY --genkey tls-crypt-v2-client PATH`: a client key
/// wrapped with `server_key`.
pub fn genkey_tls_crypt_v2_client(server_key: &Path, path: &Path) -> Result<()> {
    genkey(&[
        "--tls-crypt-v2",
        &server_key.display().to_string(),
        "--genkey",
        "tls-crypt-v2-client",
        &path.display().to_string(),
    ])
}

fn genkey(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openvpn")
        .args(args)
        .output()
        .context("running openvpn --genkey")?;
    anyhow::ensure!(
        out.status.success(),
        "`openvpn {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> CertFiles {
        CertFiles {
            ca: "/p/ca.crt".into(),
            cert: "/p/s.crt".into(),
            key: "/p/s.key".into(),
        }
    }

    #[test]
    fn server_config_has_pool_routes_and_tls13() {
        let mut s = ServerConfig::new(
            Proto::Tcp,
            443,
            certs(),
            Ipv4Cidr::new(Ipv4Addr::new(10, 8, 3, 0), 24),
        );
        s.push_routes
            .push(Ipv4Cidr::new(Ipv4Addr::new(10, 251, 3, 0), 24));
        let text = s.render();
        for line in [
            "topology subnet",
            "server 10.8.3.0 255.255.255.0",
            "proto tcp-server",
            "port 443",
            "push \"route 10.251.3.0 255.255.255.0\"",
            "tls-version-min 1.3",
            "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
            "ca /p/ca.crt",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn client_config_checks_server_cert() {
        let c = ClientConfig::new(Proto::Udp, Ipv4Addr::new(10, 250, 3, 1), 1194, certs());
        let text = c.render();
        for line in [
            "client",
            "proto udp",
            "remote 10.250.3.1 1194",
            "remote-cert-tls server",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
