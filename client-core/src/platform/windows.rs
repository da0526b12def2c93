//! Windows: routes and DNS through the IP Helper API (iphlpapi): `CreateIpForwardEntry2` /
//! `DeleteIpForwardEntry2` on the tunnel adapter's LUID, `CreateUnicastIpAddressEntry` for
//! the adapter's IPv6 address, `GetBestRoute2` for the path the
//! gateway's own traffic keeps, `SetInterfaceDnsSettings` (Windows 10 2004 and later) for the
//! adapter's DNS servers.
//!
//! Compiled by the Windows cross-check (scripts/test.sh); it has not run on a Windows host in
//! CI, which has none.

#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use windows_sys::Win32::Foundation::{ERROR_NOT_FOUND, ERROR_OBJECT_ALREADY_EXISTS, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    ConvertInterfaceAliasToLuid, ConvertInterfaceLuidToGuid, CreateIpForwardEntry2,
    CreateUnicastIpAddressEntry, DNS_INTERFACE_SETTINGS, DNS_INTERFACE_SETTINGS_VERSION1,
    DNS_SETTING_NAMESERVER, DeleteIpForwardEntry2, GetBestRoute2, InitializeIpForwardEntry,
    InitializeUnicastIpAddressEntry, MIB_IPFORWARD_ROW2, MIB_UNICASTIPADDRESS_ROW,
    SetInterfaceDnsSettings,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{
    AF_INET, AF_INET6, IpDadStatePreferred, MIB_IPPROTO_NETMGMT, SOCKADDR_INET,
};
use windows_sys::core::GUID;

use super::{Change, NetError, NetPlan, link_changes};

/// `s` as a NUL-terminated UTF-16 string.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn err(what: &str, code: u32) -> NetError {
    NetError(format!(
        "{what} failed: {}",
        std::io::Error::from_raw_os_error(code as i32)
    ))
}

/// The LUID of the adapter called `alias` (the TUN device's name).
fn luid_of(alias: &str) -> Result<NET_LUID_LH, NetError> {
    let name = wide(alias);
    let mut luid = NET_LUID_LH::default();
    // SAFETY: `name` is NUL-terminated and outlives the call; `luid` is a valid out pointer.
    let rc = unsafe { ConvertInterfaceAliasToLuid(name.as_ptr(), &mut luid) };
    if rc != NO_ERROR {
        return Err(err(&format!("finding the adapter {alias:?}"), rc));
    }
    Ok(luid)
}

fn sockaddr_v4(addr: Ipv4Addr) -> SOCKADDR_INET {
    let mut sa = SOCKADDR_INET::default();
    // Writing the IPv4 member of a zeroed union of plain integers.
    sa.Ipv4.sin_family = AF_INET;
    sa.Ipv4.sin_addr.S_un.S_addr = u32::from_ne_bytes(addr.octets());
    sa
}

fn sockaddr_v6(addr: Ipv6Addr) -> SOCKADDR_INET {
    let mut sa = SOCKADDR_INET::default();
    sa.Ipv6.sin6_family = AF_INET6;
    sa.Ipv6.sin6_addr.u.Byte = addr.octets();
    sa
}

fn v6_of(sa: &SOCKADDR_INET) -> Ipv6Addr {
    Ipv6Addr::from(unsafe { sa.Ipv6.sin6_addr.u.Byte })
}

/// An IPv6 route to `net` on `luid` via `via` (`::`: on-link, the tunnel adapter).
fn row6(luid: NET_LUID_LH, net: Ipv6Net, via: Ipv6Addr) -> MIB_IPFORWARD_ROW2 {
    let mut r = MIB_IPFORWARD_ROW2::default();
    unsafe { InitializeIpForwardEntry(&mut r) };
    r.InterfaceLuid = luid;
    r.DestinationPrefix.Prefix = sockaddr_v6(net.network());
    r.DestinationPrefix.PrefixLength = net.prefix_len();
    r.NextHop = sockaddr_v6(via);
    r.Protocol = MIB_IPPROTO_NETMGMT;
    r.Metric = 0;
    r
}

fn current_path6(dst: Ipv6Addr) -> Result<Vec<String>, NetError> {
    best_path(IpAddr::V6(dst))
}

fn host_row6(dst: Ipv6Addr, via: &[String]) -> Result<MIB_IPFORWARD_ROW2, NetError> {
    let (luid, hop) = saved_path(dst, via)?;
    Ok(row6(luid, Ipv6Net::from(dst), hop))
}

fn v4_of(sa: &SOCKADDR_INET) -> Ipv4Addr {
    // SAFETY: every member of the union is plain integers; an IPv4 route's is `Ipv4`.
    Ipv4Addr::from(unsafe { sa.Ipv4.sin_addr.S_un.S_addr }.to_ne_bytes())
}

/// A route row: `net` through the adapter `luid`, next hop `via` (0.0.0.0: on-link).
fn row(luid: NET_LUID_LH, net: Ipv4Net, via: Ipv4Addr) -> MIB_IPFORWARD_ROW2 {
    let mut r = MIB_IPFORWARD_ROW2::default();
    // SAFETY: `r` is a valid row to initialise.
    unsafe { InitializeIpForwardEntry(&mut r) };
    r.InterfaceLuid = luid;
    r.DestinationPrefix.Prefix = sockaddr_v4(net.network());
    r.DestinationPrefix.PrefixLength = net.prefix_len();
    r.NextHop = sockaddr_v4(via);
    r.Protocol = MIB_IPPROTO_NETMGMT;
    r.Metric = 0;
    r
}

/// Adds the route; if the adapter has it already it is left alone with a warning (as on
/// Linux, a pushed route that clashes is skipped).
fn add_route(r: &MIB_IPFORWARD_ROW2, what: &str) -> Result<(), NetError> {
    // SAFETY: `r` is an initialised row.
    match unsafe { CreateIpForwardEntry2(r) } {
        NO_ERROR => Ok(()),
        ERROR_OBJECT_ALREADY_EXISTS => {
            tracing::warn!(
                route = what,
                "the host already has this route; left as it is"
            );
            Ok(())
        }
        rc => Err(err(&format!("adding the route {what}"), rc)),
    }
}

fn delete_route(r: &MIB_IPFORWARD_ROW2) {
    // SAFETY: `r` is an initialised row. A route already gone (the adapter went away) is fine.
    let rc = unsafe { DeleteIpForwardEntry2(r) };
    if rc != NO_ERROR && rc != ERROR_NOT_FOUND {
        tracing::debug!(error = %err("deleting a route", rc), "route not deleted");
    }
}

/// How the host reaches `dst` now: ["luid", LUID, "via", NEXT_HOP].
fn current_path(dst: Ipv4Addr) -> Result<Vec<String>, NetError> {
    best_path(IpAddr::V4(dst))
}

/// [`current_path`] for either family (`GetBestRoute2`).
fn best_path(dst: IpAddr) -> Result<Vec<String>, NetError> {
    let to = match dst {
        IpAddr::V4(a) => sockaddr_v4(a),
        IpAddr::V6(a) => sockaddr_v6(a),
    };
    let mut best = MIB_IPFORWARD_ROW2::default();
    let mut source = SOCKADDR_INET::default();
    // SAFETY: null LUID/source mean "any"; the out pointers are valid.
    let rc = unsafe {
        GetBestRoute2(
            std::ptr::null(),
            0,
            std::ptr::null(),
            &to,
            0,
            &mut best,
            &mut source,
        )
    };
    if rc != NO_ERROR {
        return Err(err(&format!("finding the route to {dst}"), rc));
    }
    // SAFETY: a LUID is a plain u64.
    let luid = unsafe { best.InterfaceLuid.Value };
    let hop = match dst {
        IpAddr::V4(_) => v4_of(&best.NextHop).to_string(),
        IpAddr::V6(_) => v6_of(&best.NextHop).to_string(),
    };
    Ok(vec!["luid".into(), luid.to_string(), "via".into(), hop])
}

/// The LUID and next hop [`best_path`] recorded for `dst`.
fn saved_path<A: std::str::FromStr>(
    dst: impl std::fmt::Display,
    via: &[String],
) -> Result<(NET_LUID_LH, A), NetError> {
    let bad = || NetError(format!("unusable saved path to {dst}: {via:?}"));
    let [k1, luid, k2, hop] = via else {
        return Err(bad());
    };
    if k1 != "luid" || k2 != "via" {
        return Err(bad());
    }
    let luid = NET_LUID_LH {
        Value: luid.parse().map_err(|_| bad())?,
    };
    Ok((luid, hop.parse().map_err(|_| bad())?))
}

/// The row of a [`Change::HostRoute`] from what [`current_path`] recorded.
fn host_row(dst: Ipv4Addr, via: &[String]) -> Result<MIB_IPFORWARD_ROW2, NetError> {
    let (luid, hop) = saved_path(dst, via)?;
    Ok(row(luid, Ipv4Net::from(dst), hop))
}

/// Sets (or with an empty list, clears) the adapter's DNS servers.
fn set_dns(alias: &str, dns: &[IpAddr]) -> Result<(), NetError> {
    let luid = luid_of(alias)?;
    let mut guid = GUID::default();
    // SAFETY: valid in and out pointers.
    let rc = unsafe { ConvertInterfaceLuidToGuid(&luid, &mut guid) };
    if rc != NO_ERROR {
        return Err(err(&format!("finding the GUID of {alias:?}"), rc));
    }
    let list: Vec<String> = dns.iter().map(ToString::to_string).collect();
    let mut servers = wide(&list.join(","));
    let settings = DNS_INTERFACE_SETTINGS {
        Version: DNS_INTERFACE_SETTINGS_VERSION1,
        Flags: u64::from(DNS_SETTING_NAMESERVER),
        NameServer: servers.as_mut_ptr(),
        ..Default::default()
    };
    // SAFETY: `settings` points into `servers`, which outlives the call.
    let rc = unsafe { SetInterfaceDnsSettings(guid, &settings) };
    if rc != NO_ERROR {
        return Err(err(&format!("setting the DNS servers of {alias:?}"), rc));
    }
    Ok(())
}

pub(super) fn plan_changes(plan: &NetPlan, _dir: &Path) -> Result<Vec<Change>, NetError> {
    link_changes(plan, current_path, current_path6)
}

pub(super) fn apply(change: &Change, plan: &NetPlan) -> Result<(), NetError> {
    match change {
        Change::Route { net, dev } => add_route(
            &row(luid_of(dev)?, *net, Ipv4Addr::UNSPECIFIED),
            &net.to_string(),
        ),
        Change::HostRoute {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute { dst, via, .. } => add_route(&host_row(*dst, via)?, &dst.to_string()),
        Change::Resolved { dev } => set_dns(dev, &plan.dns),
        // Windows has no reject route: IPv6 the tunnel does not carry goes into the tunnel
        // adapter too, where the client and the gateway drop it; nothing leaves around it.
        Change::Route6 { net, .. } | Change::Unreachable6 { net } => add_route(
            &row6(luid_of(&plan.tun)?, *net, Ipv6Addr::UNSPECIFIED),
            &net.to_string(),
        ),
        Change::HostRoute6 {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute6 { dst, via, .. } => add_route(&host_row6(*dst, via)?, &dst.to_string()),
        Change::ResolvConf { .. } => Err(NetError(
            "resolv.conf is not how Windows takes DNS settings".into(),
        )),
    }
}

pub(super) fn undo(change: &Change) -> Result<(), NetError> {
    match change {
        Change::Route { net, dev } => {
            // The adapter may be gone already, and its routes with it.
            if let Ok(luid) = luid_of(dev) {
                delete_route(&row(luid, *net, Ipv4Addr::UNSPECIFIED));
            }
            Ok(())
        }
        Change::HostRoute {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute { dst, via, .. } => {
            delete_route(&host_row(*dst, via)?);
            Ok(())
        }
        Change::Resolved { dev } => {
            // Gone with the adapter, or cleared here.
            let _ = set_dns(dev, &[]);
            Ok(())
        }
        Change::ResolvConf { .. } => Ok(()),
        Change::Route6 { net, dev } => {
            if let Ok(luid) = luid_of(dev) {
                delete_route(&row6(luid, *net, Ipv6Addr::UNSPECIFIED));
            }
            Ok(())
        }
        // Gone with the adapter (its routes go with it).
        Change::Unreachable6 { .. } => Ok(()),
        Change::HostRoute6 {
            preexisting: true, ..
        } => Ok(()),
        Change::HostRoute6 { dst, via, .. } => {
            delete_route(&host_row6(*dst, via)?);
            Ok(())
        }
    }
}

/// Gives the tunnel adapter its IPv6 address (`CreateUnicastIpAddressEntry`, marked
/// preferred: the address is the gateway's grant, no duplicate detection) and routes the
/// pushed IPv6 prefixes into it. Both go with the adapter, like the Linux device's.
pub(super) fn tun_ipv6(
    tun: &str,
    v6: &gatehouse_engine::pool6::Ipv6Assignment,
) -> Result<(), NetError> {
    let luid = luid_of(tun)?;
    let mut row = MIB_UNICASTIPADDRESS_ROW::default();
    // SAFETY: `row` is a valid, writable row for the call to initialise.
    unsafe { InitializeUnicastIpAddressEntry(&mut row) };
    row.InterfaceLuid = luid;
    row.Address = sockaddr_v6(v6.address);
    row.OnLinkPrefixLength = v6.subnet.prefix_len();
    row.DadState = IpDadStatePreferred;
    // SAFETY: `row` is an initialised row.
    match unsafe { CreateUnicastIpAddressEntry(&row) } {
        NO_ERROR | ERROR_OBJECT_ALREADY_EXISTS => {}
        rc => {
            return Err(err(&format!("giving {tun} the address {}", v6.address), rc));
        }
    }
    for r in &v6.routes {
        let net = r.trunc();
        add_route(
            &row6(luid, net, Ipv6Addr::UNSPECIFIED),
            &format!("{net} on {tun}"),
        )?;
    }
    Ok(())
}

pub(super) fn load_kill_switch(_ruleset: &str) -> Result<(), NetError> {
    Err(NetError(
        "the kill switch is not supported on Windows yet (it would be a WFP filter set); \
         connect without it"
            .into(),
    ))
}

pub(super) fn remove_kill_switch() -> Result<(), NetError> {
    Ok(())
}
