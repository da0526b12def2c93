//! What most gateway tests start from: a [`GatewayTopology`], a `gatehoused` data directory
//! made for it ([`GatewayDir::for_topology`]) and a scratch folder for logs and profiles.
//!
//! A test file wraps it in its own `Setup` (a newtype that derefs to [`GatewaySetup`]) and adds
//! what only that file needs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tempfile::TempDir;

use crate::gatehoused::{Gatehoused, GatewayDir, spawn_stock_client};
use crate::{GatewayTopology, Netns, Proc, require_commands, require_root};

/// A test's namespaces, gateway data directory and scratch folder.
pub struct GatewaySetup {
    // Dropped in this order: the namespaces (and whatever still runs in them), then files.
    /// Clients, gateway and LAN namespaces.
    pub topo: GatewayTopology,
    /// `gatehoused init` for the topology (LAN as address space, the topology's pool, TUN
    /// `ghd<subnet_index>`).
    pub gw_dir: GatewayDir,
    /// The scratch folder (the data directory is `gateway/` in it).
    pub dir: TempDir,
}

impl GatewaySetup {
    /// Topology `tag`/`subnet_index` with `n_clients` clients and a data directory for it;
    /// skips unless root, and fails early naming any of `commands` that is missing.
    pub fn new(
        tag: &str,
        subnet_index: u8,
        n_clients: usize,
        commands: &[&str],
    ) -> Result<GatewaySetup> {
        require_root();
        require_commands(commands);
        let dir = tempfile::tempdir()?;
        let topo = GatewayTopology::new(tag, subnet_index, n_clients)?;
        let gw_dir = GatewayDir::for_topology(
            &dir.path().join("gateway"),
            &topo,
            &format!("ghd{subnet_index}"),
        )?;
        Ok(GatewaySetup { topo, gw_dir, dir })
    }

    /// `name` in the scratch folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Client `i`'s namespace.
    pub fn ns(&self, i: usize) -> &Netns {
        &self.topo.client(i).ns
    }

    /// `gatehoused run` in the gateway namespace, up to `gateway ready`; log in `log`.
    pub fn start_gateway(&self, log: &str) -> Result<Gatehoused> {
        Gatehoused::start(&self.topo.gateway, &self.gw_dir, &self.path(log))
    }

    /// The same with `GATEHOUSE_LOG=debug` (renegotiations and new sessions are logged there).
    pub fn start_gateway_debug(&self, log: &str) -> Result<Gatehoused> {
        Gatehoused::start_with_env(
            &self.topo.gateway,
            &self.gw_dir,
            &self.path(log),
            &[("GATEHOUSE_LOG", "debug")],
        )
    }

    /// Issues `name` and exports its stock profile dialling client `i`'s gateway address.
    pub fn profile(&self, name: &str, i: usize) -> Result<PathBuf> {
        let gateway = self.topo.client(i).gateway_addr;
        self.gw_dir
            .client_profile(name, gateway, &self.path(&format!("{name}.ovpn")))
    }

    /// `openvpn --config PROFILE --dev DEV EXTRA...` in client `i`'s namespace; log
    /// `openvpn-DEV.log`.
    pub fn stock_client(
        &self,
        i: usize,
        profile: &Path,
        dev: &str,
        extra: &[&str],
    ) -> Result<Proc> {
        let log = self.path(&format!("openvpn-{dev}.log"));
        spawn_stock_client(self.ns(i), profile, dev, extra, &log)
    }
}
