//! The gateway's TUN device: created with the gateway's pool address so the kernel routes the
//! client pool into it.

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Creates and brings up TUN `name` with `addr/prefix of pool` and `mtu`.
pub fn create(name: &str, addr: Ipv4Addr, pool: Ipv4Net, mtu: u16) -> Result<tun_rs::AsyncDevice> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .ipv4(addr, pool.prefix_len(), None)
        .mtu(mtu)
        .build_async()
        .with_context(|| {
            format!(
                "cannot create TUN device {name}: run gatehoused as root (or with CAP_NET_ADMIN) on a host with /dev/net/tun, and make sure no other interface is called {name} (`tun_name` in gateway.toml)"
            )
        })
}
