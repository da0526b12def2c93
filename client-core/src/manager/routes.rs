//! The routes a connection installs: what the gateway pushed, through the profile's routing
//! choice ([`crate::routing::plan`]), for every protocol alike.

use std::net::{IpAddr, Ipv4Addr};

use gatehouse_engine::pool6::Ipv6Assignment;

use crate::platform::{NetConfig, NetPlan};
use crate::profile::StoredProfile;
use crate::routing::{self, Ipv6Default, Pushed, RoutePlan};

/// The plan for `profile` on a tunnel the gateway set up as `pushed`. A `.ovpn` profile's
/// own `redirect-gateway` counts as pushed: the file's author, like the gateway, asked for
/// all traffic.
pub(super) fn plan(profile: &StoredProfile, mut pushed: Pushed) -> Result<RoutePlan, String> {
    pushed.full |= profile.redirect_gateway;
    let plan = routing::plan(
        &profile.name,
        profile.client_routing,
        profile.routing,
        &profile.extra_routes,
        &pushed,
    )
    .map_err(|e| e.to_string())?;
    if !plan.skipped.is_empty() {
        tracing::warn!(
            skipped = ?plan.skipped,
            "the tunnel has no IPv6: IPv6 extra routes left out"
        );
    }
    Ok(plan)
}

/// The plan for `pushed` on TUN device `tun`, after giving it the IPv6 address of `v6` (if
/// the gateway assigned one) with the IPv6 prefixes the plan keeps. IPv6 is a bonus: when
/// the address cannot be set, the tunnel still carries IPv4, and a full tunnel blocks IPv6
/// instead of carrying it. `pushed.ipv6` follows `v6`.
pub(super) fn plan_dual_stack(
    profile: &StoredProfile,
    net: &mut NetConfig,
    tun: &str,
    mut pushed: Pushed,
    v6: Option<&Ipv6Assignment>,
) -> Result<RoutePlan, String> {
    pushed.ipv6 = v6.is_some();
    let routes = plan(profile, pushed.clone())?;
    let Some(v6) = v6 else {
        return Ok(routes);
    };
    let chosen = Ipv6Assignment {
        routes: routes.routes_v6.clone(),
        ..v6.clone()
    };
    match net.add_tun_ipv6(tun, &chosen) {
        Ok(()) => Ok(routes),
        Err(e) => {
            tracing::warn!(address = %v6.address, error = %e, "IPv6 inside the tunnel not configured; IPv4 only");
            pushed.ipv6 = false;
            plan(profile, pushed)
        }
    }
}

/// What the host needs for `routes` on TUN device `tun`: the routes, the full tunnel (the
/// gateway's public address `server` kept on the old path), DNS.
pub(super) fn net_plan(
    tun: &str,
    routes: &RoutePlan,
    server: IpAddr,
    tunnel_gateway: Ipv4Addr,
    dns: &[IpAddr],
    dns_domains: &[String],
) -> NetPlan {
    NetPlan {
        tun: tun.to_owned(),
        routes: routes.routes.clone(),
        redirect_gateway: routes.full,
        ipv6_default: routes.ipv6_default,
        server,
        tunnel_gateway,
        dns: dns.to_vec(),
        dns_domains: dns_domains.to_vec(),
    }
}

/// How the log describes `plan`: the prefixes, then what happens to everything else.
pub(super) fn describe(plan: &RoutePlan) -> String {
    let mut parts: Vec<String> = plan.routes.iter().map(ToString::to_string).collect();
    parts.extend(plan.routes_v6.iter().map(ToString::to_string));
    let mut text = format!("routes [{}]", parts.join(", "));
    if plan.full {
        text.push_str(" + all traffic");
        match plan.ipv6_default {
            Ipv6Default::Tunnel => text.push_str(" (IPv4 and IPv6)"),
            Ipv6Default::Blocked => text.push_str(" (IPv6 blocked: the tunnel has none)"),
            Ipv6Default::Untouched => {}
        }
    }
    text
}
