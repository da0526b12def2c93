//! A one-member etcd (Debian's `etcd-server`) in a namespace, for the high-availability tests.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::netns::Netns;
use crate::proc::Proc;

/// Starts etcd member `name` in `ns`, serving clients on `http://ADDR:2379` (its peer port on
/// loopback), data and log under `dir`; returns once `etcdctl endpoint health` passes.
pub fn start_etcd(ns: &Netns, addr: Ipv4Addr, name: &str, dir: &Path) -> Result<Proc> {
    let client_url = format!("http://{addr}:2379");
    let peer_url = "http://127.0.0.1:2380";
    let p = ns.spawn(
        "etcd",
        [
            "--name",
            name,
            "--data-dir",
            &dir.join("etcd-data").display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            &format!("{name}={peer_url}"),
        ],
        &dir.join("etcd.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ns.exec(
            "etcdctl",
            ["--endpoints", &client_url, "endpoint", "health"],
        )?;
        if out.status.success() {
            return Ok(p);
        }
        if Instant::now() >= deadline || !p.is_running() {
            bail!("etcd did not come up:\n{}", p.log_tail(20));
        }
        thread::sleep(Duration::from_millis(200));
    }
}
