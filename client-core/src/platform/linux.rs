//! Linux: routes with iproute2, DNS through systemd-resolved when it runs, else resolv.conf.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use ipnet::Ipv4Net;

use super::{Change, Ipv6Default, NetError, NetPlan, ipv6_halves, resolv_conf_path};

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
fn current_path(dst: IpAddr) -> Result<Vec<String>, NetError> {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let out = ip(&[family, "route", "get", &dst.to_string()])?;
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
        if let IpAddr::V4(server) = plan.server {
            let exact = ip(&["-4", "route", "show", "exact", &format!("{server}/32")])?;
            changes.push(Change::HostRoute {
                dst: server,
                via: current_path(IpAddr::V4(server))?,
                preexisting: !exact.trim().is_empty(),
            });
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
    changes.extend(ipv6_full_changes(plan)?);
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

/// The kernel has IPv6 and it is on (else there is nothing to send around the tunnel, and
/// `ip -6 route add` would fail).
fn host_has_ipv6() -> bool {
    Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
            .map_or(true, |v| v.trim() == "0")
}

/// IPv6 in a full tunnel: the gateway (when dialled over IPv6) kept on its path, then the
/// two halves of the address space into the tunnel, or unreachable when the tunnel has no
/// IPv6 - so no IPv6 packet leaves around it.
fn ipv6_full_changes(plan: &NetPlan) -> Result<Vec<Change>, NetError> {
    let mut changes = Vec::new();
    if plan.ipv6_default == Ipv6Default::Untouched || !host_has_ipv6() {
        return Ok(changes);
    }
    if let IpAddr::V6(server) = plan.server {
        let exact = ip(&["-6", "route", "show", "exact", &format!("{server}/128")])?;
        changes.push(Change::HostRoute6 {
            dst: server,
            via: current_path(IpAddr::V6(server))?,
            preexisting: !exact.trim().is_empty(),
        });
    }
    for net in ipv6_halves() {
        changes.push(match plan.ipv6_default {
            Ipv6Default::Tunnel => Change::Route6 {
                net,
                dev: plan.tun.clone(),
            },
            _ => Change::Unreachable6 { net },
        });
    }
    Ok(changes)
}

/// `ip -6 route add|del` for an IPv6 change; None for other changes.
fn ipv6_args(change: &Change, verb: &str) -> Option<Vec<String>> {
    let mut args = vec!["-6".to_owned(), "route".into(), verb.into()];
    match change {
        Change::Route6 { net, dev } => {
            args.extend([net.to_string(), "dev".into(), dev.clone()]);
        }
        Change::Unreachable6 { net } => args.extend(["unreachable".into(), net.to_string()]),
        Change::HostRoute6 {
            preexisting: false,
            dst,
            via,
        } => {
            args.push(dst.to_string());
            args.extend(via.iter().cloned());
        }
        _ => return None,
    }
    Some(args)
}

fn ip_owned(args: &[String]) -> Result<String, NetError> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ip(&refs)
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
        Change::Route6 { .. } | Change::Unreachable6 { .. } | Change::HostRoute6 { .. } => {
            ipv6_args(change, "add").map_or(Ok(()), |args| ip_owned(&args).map(drop))
        }
        Change::HostRoute {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute { dst, via, .. } => {
            let mut args = vec![
                "-4".to_owned(),
                "route".into(),
                "add".into(),
                dst.to_string(),
            ];
            args.extend(via.iter().cloned());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ip(&refs).map(drop)
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

pub(super) fn undo(change: &Change) -> Result<(), NetError> {
    match change {
        Change::Route { net, dev } => {
            // Gone already when the TUN device went away; that is fine.
            let _ = ip(&["-4", "route", "del", &net.to_string(), "dev", dev]);
            Ok(())
        }
        Change::Route6 { .. } | Change::Unreachable6 { .. } | Change::HostRoute6 { .. } => {
            if let Some(args) = ipv6_args(change, "del") {
                let _ = ip_owned(&args);
            }
            Ok(())
        }
        Change::HostRoute {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute { dst, via, .. } => {
            // Exactly the route we added, nothing else to that address.
            let mut args = vec![
                "-4".to_owned(),
                "route".into(),
                "del".into(),
                dst.to_string(),
            ];
            args.extend(via.iter().cloned());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = ip(&refs);
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
