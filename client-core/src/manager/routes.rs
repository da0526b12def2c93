//! The routes a connection installs: what the gateway pushed, through the profile's routing
//! choice ([`crate::routing::plan`]), for every protocol alike.

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
