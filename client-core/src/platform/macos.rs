//! macOS: routes through the routing socket's command-line front end (`route(8)`), DNS through
//! the System Configuration dynamic store (`scutil`), as Tunnelblick and the OpenVPN clients
//! for macOS do.
//!
//! What each change runs is built by pure functions (unit tests below, which also run on
//! Linux); running it on a Mac is not tested by CI, which has none.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Change, NetError, NetPlan, link_changes};

/// The `route` arguments that add (`add = true`) or delete `change`'s route; None for a change
/// that is not a route.
fn route_args(change: &Change, add: bool) -> Option<Vec<String>> {
    let verb = if add { "add" } else { "delete" };
    match change {
        Change::Route { net, dev } => Some(vec![
            "-n".into(),
            verb.into(),
            "-net".into(),
            net.to_string(),
            "-interface".into(),
            dev.clone(),
        ]),
        Change::Route6 { net, dev } => Some(vec![
            "-n".into(),
            verb.into(),
            "-inet6".into(),
            "-net".into(),
            net.to_string(),
            "-interface".into(),
            dev.clone(),
        ]),
        // A reject route: the sender gets "unreachable" at once, nothing leaves.
        Change::Unreachable6 { net } => Some(vec![
            "-n".into(),
            verb.into(),
            "-inet6".into(),
            "-net".into(),
            net.to_string(),
            "::1".into(),
            "-reject".into(),
        ]),
        Change::HostRoute {
            preexisting: true, ..
        }
        | Change::HostRoute6 {
            preexisting: true, ..
        } => None,
        Change::HostRoute6 { dst, via, .. } => {
            let mut args = vec![
                "-n".into(),
                verb.into(),
                "-inet6".into(),
                "-host".into(),
                dst.to_string(),
            ];
            via_args(via, &mut args)?;
            Some(args)
        }
        Change::HostRoute { dst, via, .. } => {
            let mut args = vec!["-n".into(), verb.into(), "-host".into(), dst.to_string()];
            via_args(via, &mut args)?;
            Some(args)
        }
        _ => None,
    }
}

/// The end of a host route to where `via` says the host reached it before (what `route -n
/// get` said: ["gateway", ADDR] or ["interface", IF]); None for anything else.
fn via_args(via: &[String], args: &mut Vec<String>) -> Option<()> {
    match via {
        [k, gw] if k == "gateway" => args.push(gw.clone()),
        [k, ifname] if k == "interface" => {
            args.push("-interface".into());
            args.push(ifname.clone());
        }
        _ => return None,
    }
    Some(())
}

/// The path to `dst` from `route -n get DST` output: ["gateway", ADDR] when it goes through a
/// router, else ["interface", IF] (on-link).
fn parse_route_get(out: &str) -> Option<Vec<String>> {
    let field = |name: &str| {
        out.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    if let Some(gw) = field("gateway") {
        return Some(vec!["gateway".into(), gw]);
    }
    field("interface").map(|i| vec!["interface".into(), i])
}

/// The dynamic-store key holding the tunnel's DNS settings.
fn dns_key(dev: &str) -> String {
    format!("State:/Network/Service/gatehouse-{dev}/DNS")
}

/// `scutil` input that publishes `dns` for `dev` as a resolver that takes every query
/// (SupplementalMatchDomains empty: the default resolver while connected).
fn scutil_set(dev: &str, dns: &[std::net::IpAddr]) -> String {
    let servers: Vec<String> = dns.iter().map(ToString::to_string).collect();
    format!(
        "d.init\nd.add ServerAddresses * {}\nd.add SupplementalMatchDomains * \"\"\nset {}\nquit\n",
        servers.join(" "),
        dns_key(dev)
    )
}

/// `scutil` input that removes what [`scutil_set`] published.
fn scutil_remove(dev: &str) -> String {
    format!("remove {}\nquit\n", dns_key(dev))
}

fn run(program: &str, args: &[String], stdin: Option<&str>) -> Result<String, NetError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError(format!("cannot run `{program}`: {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| NetError(format!("{program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(NetError(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn current_path(dst: Ipv4Addr) -> Result<Vec<String>, NetError> {
    let out = run("route", &["-n".into(), "get".into(), dst.to_string()], None)?;
    parse_route_get(&out).ok_or_else(|| NetError(format!("no route to {dst}:\n{out}")))
}

fn current_path6(dst: Ipv6Addr) -> Result<Vec<String>, NetError> {
    let args = ["-n".into(), "get".into(), "-inet6".into(), dst.to_string()];
    let out = run("route", &args, None)?;
    parse_route_get(&out).ok_or_else(|| NetError(format!("no route to {dst}:\n{out}")))
}

pub(super) fn plan_changes(plan: &NetPlan, _dir: &Path) -> Result<Vec<Change>, NetError> {
    link_changes(plan, current_path, current_path6)
}

pub(super) fn apply(change: &Change, plan: &NetPlan) -> Result<(), NetError> {
    match change {
        Change::Resolved { dev } => run("scutil", &[], Some(&scutil_set(dev, &plan.dns))).map(drop),
        Change::ResolvConf { .. } => Err(NetError(
            "resolv.conf is not how macOS takes DNS settings".into(),
        )),
        _ => match route_args(change, true) {
            Some(args) => run("route", &args, None).map(drop),
            None => Ok(()),
        },
    }
}

pub(super) fn undo(change: &Change) -> Result<(), NetError> {
    match change {
        Change::Resolved { dev } => run("scutil", &[], Some(&scutil_remove(dev))).map(drop),
        Change::ResolvConf { .. } => Ok(()),
        _ => {
            // Gone already when the utun device went away; that is fine.
            if let Some(args) = route_args(change, false) {
                let _ = run("route", &args, None);
            }
            Ok(())
        }
    }
}

/// The commands that give `tun` its IPv6 address and routes: `ifconfig TUN inet6 ADDR
/// prefixlen LEN` and `route -n add -inet6 PREFIX -interface TUN` for each pushed route.
fn tun_ipv6_commands(
    tun: &str,
    v6: &gatehouse_engine::pool6::Ipv6Assignment,
) -> Vec<(&'static str, Vec<String>)> {
    let mut cmds = vec![(
        "ifconfig",
        vec![
            tun.to_owned(),
            "inet6".into(),
            v6.address.to_string(),
            "prefixlen".into(),
            v6.subnet.prefix_len().to_string(),
        ],
    )];
    for r in &v6.routes {
        cmds.push((
            "route",
            vec![
                "-n".into(),
                "add".into(),
                "-inet6".into(),
                r.trunc().to_string(),
                "-interface".into(),
                tun.to_owned(),
            ],
        ));
    }
    cmds
}

/// Gives the utun device its IPv6 address and routes (they go with the device).
pub(super) fn tun_ipv6(
    tun: &str,
    v6: &gatehouse_engine::pool6::Ipv6Assignment,
) -> Result<(), NetError> {
    for (program, args) in tun_ipv6_commands(tun, v6) {
        run(program, &args, None)?;
    }
    Ok(())
}

pub(super) fn load_kill_switch(_ruleset: &str) -> Result<(), NetError> {
    Err(NetError(
        "the kill switch is not supported on macOS yet (it would be a pf anchor); connect \
         without it"
            .into(),
    ))
}

pub(super) fn remove_kill_switch() -> Result<(), NetError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_go_to_the_utun_interface_and_the_gateway_keeps_its_path() {
        let r = Change::Route {
            net: "10.1.0.0/16".parse().unwrap(),
            dev: "utun4".into(),
        };
        assert_eq!(
            route_args(&r, true).unwrap().join(" "),
            "-n add -net 10.1.0.0/16 -interface utun4"
        );
        assert_eq!(
            route_args(&r, false).unwrap().join(" "),
            "-n delete -net 10.1.0.0/16 -interface utun4"
        );
        let out = "   route to: 203.0.113.7\ndestination: default\n       mask: default\n    \
                   gateway: 192.168.1.1\n  interface: en0\n      flags: <UP,GATEWAY,DONE>\n";
        let via = parse_route_get(out).unwrap();
        assert_eq!(via, ["gateway", "192.168.1.1"]);
        let h = Change::HostRoute {
            dst: "203.0.113.7".parse().unwrap(),
            via,
            preexisting: false,
        };
        assert_eq!(
            route_args(&h, true).unwrap().join(" "),
            "-n add -host 203.0.113.7 192.168.1.1"
        );
        // On-link: no gateway line.
        let via = parse_route_get("   route to: 10.0.0.9\n  interface: en1\n").unwrap();
        assert_eq!(via, ["interface", "en1"]);
        let h = Change::HostRoute {
            dst: "10.0.0.9".parse().unwrap(),
            via,
            preexisting: false,
        };
        assert_eq!(
            route_args(&h, false).unwrap().join(" "),
            "-n delete -host 10.0.0.9 -interface en1"
        );
        assert_eq!(
            parse_route_get("route: writing to routing socket: not in table"),
            None
        );
    }

    #[test]
    fn a_full_tunnel_takes_ipv6_into_the_tunnel_or_rejects_it() {
        let mut plan = NetPlan {
            tun: "utun4".into(),
            routes: Vec::new(),
            redirect_gateway: true,
            ipv6_default: crate::routing::Ipv6Default::Blocked,
            server: "2001:db8::7".parse().unwrap(),
            tunnel_gateway: "10.8.0.1".parse().unwrap(),
            dns: Vec::new(),
            dns_domains: Vec::new(),
        };
        let path6 = |_| Ok(vec!["gateway".to_string(), "fe80::1%en0".to_string()]);
        let shown = |plan: &NetPlan| -> Vec<String> {
            super::super::ipv6_full_changes(plan, path6)
                .unwrap()
                .iter()
                .filter_map(|c| route_args(c, true))
                .map(|a| a.join(" "))
                .collect()
        };
        assert_eq!(
            shown(&plan),
            [
                "-n add -inet6 -host 2001:db8::7 fe80::1%en0",
                "-n add -inet6 -net ::/1 ::1 -reject",
                "-n add -inet6 -net 8000::/1 ::1 -reject",
            ]
        );
        plan.ipv6_default = crate::routing::Ipv6Default::Tunnel;
        plan.server = "203.0.113.7".parse().unwrap();
        assert_eq!(
            shown(&plan),
            [
                "-n add -inet6 -net ::/1 -interface utun4",
                "-n add -inet6 -net 8000::/1 -interface utun4",
            ]
        );
        plan.ipv6_default = crate::routing::Ipv6Default::Untouched;
        assert!(shown(&plan).is_empty());
    }

    #[test]
    fn ipv6_goes_on_the_utun_device() {
        let v6 = gatehouse_engine::pool6::Ipv6Assignment {
            address: "fd00:6a7e:1::7".parse().unwrap(),
            subnet: "fd00:6a7e:1::/64".parse().unwrap(),
            gateway: "fd00:6a7e:1::1".parse().unwrap(),
            routes: vec!["fd00:10::/48".parse().unwrap()],
        };
        let cmds: Vec<String> = tun_ipv6_commands("utun4", &v6)
            .into_iter()
            .map(|(p, a)| format!("{p} {}", a.join(" ")))
            .collect();
        assert_eq!(
            cmds,
            [
                "ifconfig utun4 inet6 fd00:6a7e:1::7 prefixlen 64",
                "route -n add -inet6 fd00:10::/48 -interface utun4"
            ]
        );
    }

    #[test]
    fn dns_is_published_and_removed_under_one_key() {
        let dns = ["10.8.0.1".parse().unwrap(), "10.8.0.2".parse().unwrap()];
        let set = scutil_set("utun4", &dns);
        assert!(
            set.contains("d.add ServerAddresses * 10.8.0.1 10.8.0.2\n"),
            "{set}"
        );
        assert!(
            set.contains("set State:/Network/Service/gatehouse-utun4/DNS\n"),
            "{set}"
        );
        assert_eq!(
            scutil_remove("utun4"),
            "remove State:/Network/Service/gatehouse-utun4/DNS\nquit\n"
        );
    }
}
