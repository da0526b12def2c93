//! The gateway's TUN device: created with the gateway's pool address so the kernel routes the
//! client pool into it.

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Creates and brings up TUN `name` with `addr/prefix of pool` and `mtu`, with offload
/// (virtio-net headers: TSO in, GRO out) when the kernel has it. Returns whether it does.
pub fn create(
    name: &str,
    addr: Ipv4Addr,
    pool: Ipv4Net,
    mtu: u16,
    multi_queue: bool,
) -> Result<(tun_rs::SyncDevice, bool)> {
    gatehouse_netio::tun::build_sync(|| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .ipv4(addr, pool.prefix_len(), None)
            .mtu(mtu)
            .multi_queue(multi_queue)
    })
    .with_context(|| {
            format!(
                "cannot create TUN device {name}: run gatehoused as root (or with CAP_NET_ADMIN) on a host with /dev/net/tun, and make sure no other interface is called {name} (`tun_name` in gateway.toml)"
            )
        })
}

/// Routes `prefixes` (the sites' address spaces, IPv4 or IPv6) into TUN `name`, so hosts
/// behind the gateway reach the sites through it. Uses iproute2's `ip route replace`
/// (idempotent; the family follows the prefix).
pub fn add_routes<N: std::fmt::Display>(name: &str, prefixes: &[N]) -> Result<()> {
    for p in prefixes {
        let out = std::process::Command::new("ip")
            .args(["route", "replace", &p.to_string(), "dev", name])
            .output()
            .with_context(|| {
                format!("cannot run `ip route replace {p} dev {name}`: is iproute2 installed?")
            })?;
        if !out.status.success() {
            anyhow::bail!(
                "`ip route replace {p} dev {name}` failed: {} (a [[connection]]'s remote_address_space must be routable through the gateway)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Removes the routes of `prefixes` from TUN `name` (connections a reload removed); a route
/// already gone is fine.
pub fn del_routes<N: std::fmt::Display>(name: &str, prefixes: &[N]) {
    for p in prefixes {
        let _ = std::process::Command::new("ip")
            .args(["route", "del", &p.to_string(), "dev", name])
            .output();
    }
}

/// Moves TUN `name` from the pool `old` to `new` (a reload changed `client_pool`): the
/// gateway takes the new pool's first address, so the kernel routes the new pool into it.
pub fn readdress(name: &str, old: Ipv4Net, new: Ipv4Net) -> Result<()> {
    let first = |n: Ipv4Net| Ipv4Addr::from(u32::from(n.network()) + 1);
    let add = format!("{}/{}", first(new), new.prefix_len());
    let out = std::process::Command::new("ip")
        .args(["addr", "add", &add, "dev", name])
        .output()
        .with_context(|| format!("cannot run `ip addr add {add} dev {name}`"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip addr add {add} dev {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let del = format!("{}/{}", first(old), old.prefix_len());
    let _ = std::process::Command::new("ip")
        .args(["addr", "del", &del, "dev", name])
        .output();
    Ok(())
}

/// Gives TUN `name` the gateway's IPv6 address in `new` (the first host, like the IPv4
/// pool's) and routes `new` into it, after taking `old`'s away (a reload changed or removed
/// `client_pool_v6`). `nodad`: the address is the gateway's alone and must work at once.
pub fn set_ipv6(name: &str, old: Option<Ipv6Net>, new: Option<Ipv6Net>) -> Result<()> {
    let first = |n: Ipv6Net| {
        format!(
            "{}/{}",
            Ipv6Addr::from(u128::from(n.network()) + 1),
            n.prefix_len()
        )
    };
    if let Some(old) = old.filter(|o| Some(*o) != new) {
        let _ = std::process::Command::new("ip")
            .args(["-6", "addr", "del", &first(old), "dev", name])
            .output();
    }
    let Some(new) = new else {
        return Ok(());
    };
    let addr = first(new);
    let pool = new.to_string();
    for args in [
        vec!["-6", "addr", "replace", addr.as_str(), "dev", name, "nodad"],
        vec!["-6", "route", "replace", pool.as_str(), "dev", name],
    ] {
        let shown = args.join(" ");
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .with_context(|| format!("cannot run `ip {shown}`: is iproute2 installed?"))?;
        if !out.status.success() {
            anyhow::bail!(
                "`ip {shown}` failed: {} (`client_pool_v6` needs IPv6 on the host: check net.ipv6.conf.{name}.disable_ipv6 and net.ipv6.conf.all.disable_ipv6)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}
