//! The own interfaces of route-based connections (`interface = "..."` in a `[[connection]]`,
//! docs/bgp.md): one TUN device each, held by the worker that holds the connection's SAs.
//!
//! A reader task per interface hands each packet the kernel routed into it to its worker
//! ([`Msg::Interface`]), which seals it for the connection's active SA. Packets the worker
//! decrypts from the connection are written back to the interface, so the kernel and a
//! routing daemon (FRR) see them arrive there. No offload: these devices carry routed site
//! traffic and BGP, not the remote-access bulk.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::worker::Msg;
use crate::config::Connection;

/// An interface as a worker holds it.
pub(super) type Interfaces = HashMap<String, Arc<tun_rs::AsyncDevice>>;

/// One connection's interface before its worker's runtime exists.
pub(super) struct NewInterface {
    /// The connection's name.
    pub connection: String,
    pub device: tun_rs::SyncDevice,
}

/// Creates the interfaces of `conns` (those that have one), each for the worker of
/// `workers` that holds the connection; sets their reverse-path filter to strict.
pub(super) fn create(
    conns: &[Connection],
    workers: usize,
    mtu: u16,
) -> Result<Vec<Vec<NewInterface>>> {
    let mut out: Vec<Vec<NewInterface>> = (0..workers).map(|_| Vec::new()).collect();
    for c in conns {
        let Some(i) = &c.interface else { continue };
        let device = tun_rs::DeviceBuilder::new()
            .name(&i.name)
            .ipv4(i.address.addr(), i.address.prefix_len(), None)
            .mtu(mtu)
            .build_sync()
            .with_context(|| {
                format!(
                    "cannot create TUN device {} for connection {:?}: run gatehoused as root (or with CAP_NET_ADMIN), and make sure no other interface has that name (`interface`)",
                    i.name, c.name
                )
            })?;
        strict_rp_filter(&i.name);
        let w = gatehouse_engine::gateway::worker_of_ip(c.remote_gateway, workers);
        out[w].push(NewInterface {
            connection: c.name.clone(),
            device,
        });
    }
    Ok(out)
}

/// `rp_filter = 1` on `name`: the kernel drops packets from the site whose source it would
/// not route back through the interface (the anti-spoofing of these connections).
fn strict_rp_filter(name: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{name}/rp_filter");
    if let Err(e) = std::fs::write(&path, "1") {
        warn!(interface = name, error = %e, "cannot set the reverse-path filter to strict ({path}); packets from the site are only checked against the gateway's own prefixes");
    }
}

/// Starts a reader task per interface on the current runtime; returns the interfaces by
/// connection name.
pub(super) fn start(list: Vec<NewInterface>, inbox: mpsc::Sender<Msg>, mtu: usize) -> Interfaces {
    let mut out = Interfaces::new();
    for i in list {
        let dev = match tun_rs::AsyncDevice::new(i.device) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                warn!(connection = %i.connection, error = %e, "cannot serve the connection's interface");
                continue;
            }
        };
        out.insert(i.connection.clone(), dev.clone());
        let tx = inbox.clone();
        let name: Arc<str> = i.connection.into();
        tokio::spawn(async move {
            let mut buf = vec![0u8; mtu.max(1500) + 64];
            loop {
                match dev.recv(&mut buf).await {
                    Ok(n) => {
                        let packet = buf[..n].to_vec();
                        let msg = Msg::Interface {
                            connection: name.clone(),
                            packet,
                        };
                        match tx.try_send(msg) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {}
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Err(e) => {
                        debug!(connection = %name, error = %e, "interface read failed");
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
            }
        });
    }
    out
}

/// Writes packets decrypted from own-interface connections to their interfaces; returns how
/// many found their interface full or missing.
pub(super) fn write(
    core: &mut gatehouse_engine::gateway::GatewayCore,
    ifaces: &Interfaces,
) -> usize {
    let mut lost = 0;
    while let Some((name, packet)) = core.poll_interface_packet() {
        match ifaces.get(&name) {
            Some(dev) if dev.try_send(&packet).is_ok() => {}
            _ => lost += 1,
        }
    }
    lost
}
