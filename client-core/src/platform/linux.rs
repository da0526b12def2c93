//! Linux: routes with iproute2, DNS through systemd-resolved when it runs, else resolv.conf.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use ipnet::Ipv4Net;

use super::{Change, NetError, NetPlan, resolv_conf_path};

fn ip(args: &[&str]) -> Result<String, NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError(format!("cannot run `ip` (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(NetError(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn resolved_running() -> bool {
    std::env::var_os("GATEHOUSE_RESOLV_CONF").is_none()
        && Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
        && Command::new("resolvectl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// How the kernel reaches `dst` now: the `via X dev Y` words of `ip route get`.
fn current_path(dst: Ipv4Addr) -> Result<Vec<String>, NetError> {
    path_of(&ip(&["-4", "route", "get", &dst.to_string()])?)
}

/// [`current_path`] for an IPv6 gateway.
fn current_path6(dst: Ipv6Addr) -> Result<Vec<String>, NetError> {
    path_of(&ip(&["-6", "route", "get", &dst.to_string()])?)
}

/// Whether the host runs IPv6 at all (with it off, nothing can leak over it).
fn host_has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
            .map_or(true, |v| v.trim() == "0")
}

/// `via GW dev IF` (what reaches the destination now) from `ip route get` output.
fn path_of(out: &str) -> Result<Vec<String>, NetError> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut via = Vec::new();
    for key in ["via", "dev"] {
        if let Some(i) = words.iter().position(|w| *w == key)
            && let Some(v) = words.get(i + 1)
        {
            via.push(key.to_owned());
            via.push((*v).to_owned());
        }
    }
    Ok(via)
}

/// `ip -6 addr add ADDR/LEN dev TUN nodad` (the address is ours alone: no duplicate
/// detection delay) and `ip -6 route replace PREFIX dev TUN` for each pushed route.
pub(super) fn tun_ipv6(
    tun: &str,
    v6: &gatehouse_engine::pool6::Ipv6Assignment,
) -> Result<(), NetError> {
    let addr = format!("{}/{}", v6.address, v6.subnet.prefix_len());
    ip(&["-6", "addr", "replace", &addr, "dev", tun, "nodad"])?;
    for r in &v6.routes {
        ip(&["-6", "route", "replace", &r.trunc().to_string(), "dev", tun])?;
    }
    Ok(())
}

pub(super) fn plan_changes(plan: &NetPlan, dir: &Path) -> Result<Vec<Change>, NetError> {
    let mut changes = Vec::new();
    let mut routes = plan.routes.clone();
    if plan.redirect_gateway {
        match plan.server {
            IpAddr::V4(server) => {
                let exact = ip(&["-4", "route", "show", "exact", &format!("{server}/32")])?;
                changes.push(Change::HostRoute {
                    dst: server,
                    via: current_path(server)?,
                    preexisting: !exact.trim().is_empty(),
                });
            }
            IpAddr::V6(server) => {
                let exact = ip(&["-6", "route", "show", "exact", &format!("{server}/128")])?;
                changes.push(Change::HostRoute6 {
                    dst: server,
                    via: current_path6(server)?,
                    preexisting: !exact.trim().is_empty(),
                });
            }
        }
        routes.push(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 1).map_err(|e| NetError(e.to_string()))?);
        routes.push(
            Ipv4Net::new(Ipv4Addr::new(128, 0, 0, 0), 1).map_err(|e| NetError(e.to_string()))?,
        );
    }
    for net in routes {
        changes.push(Change::Route {
            net: net.trunc(),
            dev: plan.tun.clone(),
        });
    }
    changes.extend(super::ipv6_full_tunnel(plan, host_has_ipv6()));
    if !plan.dns.is_empty() {
        if resolved_running() {
            changes.push(Change::Resolved {
                dev: plan.tun.clone(),
            });
        } else {
            changes.push(Change::ResolvConf {
                path: resolv_conf_path(),
                backup: dir.join("resolv.conf.before-gatehouse"),
            });
        }
    }
    Ok(changes)
}

pub(super) fn apply(change: &Change, plan: &NetPlan) -> Result<(), NetError> {
    match change {
        // `add`, never `replace`: a route the host already has is not overwritten (undo could
        // not bring it back). Like OpenVPN, a pushed route that clashes is skipped with a
        // warning; its undo then finds nothing of ours to delete.
        Change::Route { net, dev } => {
            let exists = ip(&["-4", "route", "show", "exact", &net.to_string()])?;
            if !exists.trim().is_empty() {
                tracing::warn!(
                    route = %net,
                    existing = exists.trim(),
                    "the host already routes this prefix; not routing it into the tunnel"
                );
                return Ok(());
            }
            ip(&["-4", "route", "add", &net.to_string(), "dev", dev]).map(drop)
        }
        Change::HostRoute {
            preexisting: true, ..
        }
        | Change::HostRoute6 {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute { dst, via, .. } => host_route("-4", "add", &dst.to_string(), via),
        Change::HostRoute6 { dst, via, .. } => host_route("-6", "add", &dst.to_string(), via),
        Change::Route6 { net, dev } => {
            ip(&["-6", "route", "add", &net.to_string(), "dev", dev]).map(drop)
        }
        Change::Block6 { net } => {
            ip(&["-6", "route", "add", "unreachable", &net.to_string()]).map(drop)
        }
        Change::ResolvConf { path, backup } => {
            let before = std::fs::read(path).unwrap_or_default();
            std::fs::write(backup, &before)
                .map_err(|e| NetError(format!("cannot back up {}: {e}", path.display())))?;
            let mut text =
                String::from("# written by gatehouse while connected; restored on disconnect\n");
            if plan.dns_domains.is_empty() {
                for d in &plan.dns {
                    text.push_str(&format!("nameserver {d}\n"));
                }
            } else {
                // Split DNS: the client's forwarder (split_dns.rs) sorts the names.
                text.push_str(&format!(
                    "# split DNS: {} via the tunnel, other names via the previous nameservers\n\
                     nameserver {}\n",
                    plan.dns_domains.join(" "),
                    super::split_dns::LISTEN.ip()
                ));
            }
            std::fs::write(path, text)
                .map_err(|e| NetError(format!("cannot write {}: {e}", path.display())))
        }
        Change::Resolved { dev } => {
            let mut args = vec!["dns".to_owned(), dev.clone()];
            args.extend(plan.dns.iter().map(|d| d.to_string()));
            // Routing domains: `~.` takes every name; `~corp.example` only those under it
            // (split DNS), the rest stays with the other links' servers.
            let mut domain_args = vec!["domain".to_owned(), dev.clone()];
            if plan.dns_domains.is_empty() {
                domain_args.push("~.".into());
            } else {
                domain_args.extend(plan.dns_domains.iter().map(|d| format!("~{d}")));
            }
            let ok = Command::new("resolvectl")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new("resolvectl")
                    .args(&domain_args)
                    .status()
                    .is_ok_and(|s| s.success());
            if ok {
                Ok(())
            } else {
                Err(NetError(format!("`resolvectl {}` failed", args.join(" "))))
            }
        }
    }
}

/// `ip FAMILY route VERB DST via...` for a host route to the gateway.
fn host_route(family: &str, verb: &str, dst: &str, via: &[String]) -> Result<(), NetError> {
    let mut args = vec![family, "route", verb, dst];
    args.extend(via.iter().map(String::as_str));
    ip(&args).map(drop)
}

pub(super) fn undo(change: &Change) -> Result<(), NetError> {
    match change {
        Change::Route { net, dev } => {
            // Gone already when the TUN device went away; that is fine.
            let _ = ip(&["-4", "route", "del", &net.to_string(), "dev", dev]);
            Ok(())
        }
        Change::HostRoute {
            preexisting: true, ..
        }
        | Change::HostRoute6 {
            preexisting: true, ..
        } => Ok(()),
        // Exactly the route we added, nothing else to that address.
        Change::HostRoute { dst, via, .. } => {
            let _ = host_route("-4", "del", &dst.to_string(), via);
            Ok(())
        }
        Change::HostRoute6 { dst, via, .. } => {
            let _ = host_route("-6", "del", &dst.to_string(), via);
            Ok(())
        }
        Change::Route6 { net, dev } => {
            // Gone already when the TUN device went away; that is fine.
            let _ = ip(&["-6", "route", "del", &net.to_string(), "dev", dev]);
            Ok(())
        }
        Change::Block6 { net } => {
            let _ = ip(&["-6", "route", "del", "unreachable", &net.to_string()]);
            Ok(())
        }
        Change::ResolvConf { path, backup } => {
            let before = std::fs::read(backup)
                .map_err(|e| NetError(format!("cannot read {}: {e}", backup.display())))?;
            std::fs::write(path, before)
                .map_err(|e| NetError(format!("cannot restore {}: {e}", path.display())))?;
            let _ = std::fs::remove_file(backup);
            Ok(())
        }
        Change::Resolved { dev } => {
            let _ = Command::new("resolvectl").args(["revert", dev]).status();
            Ok(())
        }
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NetError(format!("cannot run `nft` (install nftables): {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| NetError(format!("nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError(format!("nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError(format!(
            "`nft {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Replaces the kill switch's table in one transaction.
pub(super) fn load_kill_switch(ruleset: &str) -> Result<(), NetError> {
    nft(&["-f", "-"], Some(ruleset))
}

/// Deletes the kill switch's table; one that is not there is fine.
pub(super) fn remove_kill_switch() -> Result<(), NetError> {
    let table = super::KILL_SWITCH_TABLE;
    nft(
        &["-f", "-"],
        Some(&format!("table inet {table}\ndelete table inet {table}\n")),
    )
}
