//! The admin API (HTTP + JSON), its web console and the Prometheus metrics.
//!
//! - On a Unix socket by default (`admin.socket`, mode 0660, group `admin.socket_group`):
//!   whoever may open it is an operator. `gatehoused ctl` uses it.
//! - Optionally on TCP (`admin.listen`) with TLS (the gateway certificate) and a bearer
//!   token (`admin.token_file`), for the web console from another machine.
//! - Metrics on their own TCP address (`admin.metrics_listen`), no token, for Prometheus.
//!
//! The routes run on the gateway's control thread; they ask the workers through their
//! inboxes and never hold a lock the data plane takes.

pub mod api;
mod auth;
mod capture;
pub mod client;
mod cluster;
mod console;
mod metrics;
pub mod model;
pub mod pcap;
mod tls;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::config::GatewayConfig;
use crate::gateway::GatewayHandle;
use crate::tls::PkiPaths;

/// The running admin listeners; dropping it removes the socket file.
pub struct AdminServers {
    socket: Option<PathBuf>,
    /// Where each listener is, for the start-up log line.
    pub summary: String,
}

impl Drop for AdminServers {
    fn drop(&mut self) {
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Gives `path` to group `name` when the group exists; false when it does not.
#[allow(unsafe_code)]
fn chgrp(path: &Path, name: &str) -> std::io::Result<bool> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(false);
    };
    // SAFETY: getgrnam reads the NUL-terminated name and returns a pointer into static
    // storage (or null), read at once on this thread before any other getgr* call.
    let gid = unsafe {
        let g = libc::getgrnam(cname.as_ptr());
        if g.is_null() {
            return Ok(false);
        }
        (*g).gr_gid
    };
    std::os::unix::fs::chown(path, None, Some(gid))?;
    Ok(true)
}

/// Binds the Unix socket at `path` (a stale one left by a crash is replaced; a live one is
/// another gateway's, and an error).
fn bind_socket(path: &Path, group: &str) -> Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "the admin socket {} is in use: is another gatehoused running with this configuration? (set `admin.socket` to another path)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale admin socket {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| {
        format!(
            "cannot bind the admin socket {} (`admin.socket`)",
            path.display()
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    match chgrp(path, group) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(
                group,
                "no such group; the admin socket keeps the gateway's group"
            )
        }
        Err(e) => warn!(group, error = %e, "cannot give the admin socket to its group"),
    }
    Ok(l)
}

/// Starts every listener `[admin]` asks for.
pub async fn start(
    cfg: &GatewayConfig,
    dir: &Path,
    pki: &PkiPaths,
    gw: GatewayHandle,
) -> Result<AdminServers> {
    let a = &cfg.admin;
    let mut summary = Vec::new();
    let socket = a.socket_path(dir);
    if let Some(path) = &socket {
        let l = bind_socket(path, &a.socket_group)?;
        let app = api::router(gw.clone(), None);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                warn!(error = %e, "admin socket stopped");
            }
        });
        summary.push(format!("unix {}", path.display()));
    }
    if let Some(addr) = a.listen_addr() {
        let token = auth::load_or_create(&dir.join(&a.token_file))?;
        let acceptor =
            tls::acceptor(pki).context("`admin.listen` needs the gateway certificate")?;
        let l = tls::TlsListener::bind(addr, acceptor)
            .await
            .with_context(|| format!("cannot bind `admin.listen` {addr}"))?;
        let app = api::router(gw.clone(), Some(token));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                warn!(error = %e, "admin listener stopped");
            }
        });
        summary.push(format!(
            "https {addr} (token in {})",
            dir.join(&a.token_file).display()
        ));
    }
    if let Some(addr) = a.metrics_addr() {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind `admin.metrics_listen` {addr}"))?;
        let app = api::metrics_router(gw);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                warn!(error = %e, "metrics listener stopped");
            }
        });
        summary.push(format!("metrics http {addr}"));
    }
    let summary = summary.join(", ");
    if !summary.is_empty() {
        info!(admin = %summary, "admin API listening");
    }
    Ok(AdminServers { socket, summary })
}

/// Where `gatehoused ctl` finds the API when told nothing: the environment's socket, else
/// the packaged gateway's.
pub fn default_socket() -> PathBuf {
    std::env::var_os(crate::config::SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from("/run/gatehoused/admin.sock"),
            PathBuf::from,
        )
}
