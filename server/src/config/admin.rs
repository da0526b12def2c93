//! `[admin]`: where the admin API and the metrics listen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The environment variable that overrides `admin.socket` (the systemd unit points it into
/// /run, where members of `gatehouse-admin` can reach it); `gatehoused ctl` reads it too.
pub const SOCKET_ENV: &str = "GATEHOUSE_ADMIN_SOCKET";

/// `[admin]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The API's Unix socket, relative to gateway.toml's folder; "" turns it off. Mode
    /// 0660: root, the gateway's user and the group `socket_group` may use it.
    #[serde(default = "default_socket")]
    pub socket: String,
    /// The group given the socket when it exists.
    #[serde(default = "default_group")]
    pub socket_group: String,
    /// Also serve the API (and the web console) on this TCP address, with TLS (the gateway
    /// certificate) and a bearer token from `token_file`; "" (the default): off.
    #[serde(default)]
    pub listen: String,
    /// The bearer token for `listen`, relative to gateway.toml's folder; made (0600, 32
    /// random bytes, hex) on the first start that needs it.
    #[serde(default = "default_token_file")]
    pub token_file: String,
    /// Prometheus metrics (text format, no authentication: bind it to a management
    /// address) on this TCP address, e.g. "127.0.0.1:9469"; "" (the default): off. The
    /// same page is at `/metrics` on the API.
    #[serde(default)]
    pub metrics_listen: String,
}

fn default_socket() -> String {
    "admin.sock".into()
}

fn default_group() -> String {
    "gatehouse-admin".into()
}

fn default_token_file() -> String {
    "admin-token".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            socket_group: default_group(),
            listen: String::new(),
            token_file: default_token_file(),
            metrics_listen: String::new(),
        }
    }
}

impl AdminConfig {
    /// Checks the addresses, naming the key and the fix.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("admin.listen", &self.listen),
            ("admin.metrics_listen", &self.metrics_listen),
        ] {
            if !v.is_empty() && v.parse::<SocketAddr>().is_err() {
                bail!(
                    "`{key}` = {v:?} is not an address and port: write e.g. \"127.0.0.1:8443\", or \"\" to turn it off"
                );
            }
        }
        if !self.listen.is_empty() && self.token_file.is_empty() {
            bail!(
                "`admin.token_file` is empty but `admin.listen` is set: the TCP API needs a token file"
            );
        }
        Ok(())
    }

    /// The socket path: the environment's [`SOCKET_ENV`], else `socket` relative to `dir`;
    /// None when off.
    pub fn socket_path(&self, dir: &Path) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        (!self.socket.is_empty()).then(|| dir.join(&self.socket))
    }

    /// The TCP address of the API, if on.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// The metrics address, if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listen.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_name_the_key() {
        let mut a = AdminConfig::default();
        a.validate().unwrap();
        a.metrics_listen = "localhost".into();
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("admin.metrics_listen"), "{e}");
        a.metrics_listen = "127.0.0.1:9469".into();
        a.listen = "0.0.0.0:8443".into();
        a.validate().unwrap();
        assert_eq!(a.listen_addr().unwrap().port(), 8443);
    }
}
