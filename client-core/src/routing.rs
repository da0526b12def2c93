//! The user's routing choice for a profile (as the gateway says, full tunnel, split tunnel,
//! plus extra prefixes) combined with what the gateway pushed, into the routes the platform
//! layer installs. Pure: [`plan`] is what the tests check for every combination.
//!
//! The gateway has the last word: a profile exported from a gateway whose `gateway.toml`
//! says `client_routing = "fixed"` carries that setting, and [`plan`] refuses any choice
//! but `gateway` for it. Whatever the client routes into the tunnel, the gateway forwards
//! only what it routes itself (its address space, sites, the internet with `full_tunnel`).

use std::fmt;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Which routes a profile uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// What the gateway pushes: its prefixes, and everything when it pushes a full tunnel.
    #[default]
    Gateway,
    /// Everything into the tunnel (IPv6 too, or IPv6 blocked when the tunnel has none).
    Full,
    /// Only the prefixes the gateway pushes (never its default route) and the extra routes.
    Split,
}

impl Routing {
    /// Every choice, in the order front ends list them.
    pub const ALL: [Routing; 3] = [Routing::Gateway, Routing::Full, Routing::Split];

    /// The name in profile files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Gateway => "gateway",
            Routing::Full => "full",
            Routing::Split => "split",
        }
    }
}

impl fmt::Display for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Routing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Routing::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown routing {s:?}; use gateway, full or split"))
    }
}

/// What the gateway lets its clients choose (`client_routing` in its `gateway.toml`,
/// carried by the exported Gatehouse profile).
pub use gatehouse_certs::profile::ClientRouting;

/// What the gateway pushed, as far as routing goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// IPv4 prefixes (a pushed default route is `full`, not one of these).
    pub routes: Vec<Ipv4Net>,
    /// IPv6 prefixes.
    pub routes_v6: Vec<Ipv6Net>,
    /// The gateway pushed a full tunnel (redirect-gateway, a 0.0.0.0/0 selector).
    pub full: bool,
    /// The tunnel carries IPv6 (the client has an IPv6 address in it).
    pub ipv6: bool,
}

/// What full tunnel does to IPv6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ipv6Default {
    /// Not a full tunnel: IPv6 routes are the host's but for `routes_v6`.
    #[default]
    Untouched,
    /// Full tunnel with IPv6 inside: `::/1` and `8000::/1` into the tunnel.
    Tunnel,
    /// Full tunnel without IPv6 inside: `::/1` and `8000::/1` unreachable, so IPv6 never
    /// goes around the tunnel.
    Blocked,
}

/// The routes to install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// IPv4 prefixes into the tunnel.
    pub routes: Vec<Ipv4Net>,
    /// IPv6 prefixes into the tunnel.
    pub routes_v6: Vec<Ipv6Net>,
    /// All IPv4 into the tunnel (`0.0.0.0/1` + `128.0.0.0/1`, the gateway kept outside).
    pub full: bool,
    /// What happens to the rest of IPv6.
    pub ipv6_default: Ipv6Default,
    /// Extra routes left out: IPv6 ones when the tunnel has no IPv6.
    pub skipped: Vec<IpNet>,
}

/// The user asked for routing the gateway does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "profile {profile}: the gateway fixes the routes (client_routing = \"fixed\" in its \
     gateway.toml), so {what} is not allowed; run `gatehouse profile set {profile} --routing \
     gateway --clear-routes` or ask the gateway's administrator"
)]
pub struct Forbidden {
    /// The profile.
    pub profile: String,
    /// What the user chose (`routing = "full"`, `extra_routes = [...]`).
    pub what: String,
}

/// Checks the user's choice against the gateway's policy, before anything is dialled.
pub fn check(
    profile: &str,
    policy: ClientRouting,
    routing: Routing,
    extra: &[IpNet],
) -> Result<(), Forbidden> {
    if policy == ClientRouting::User {
        return Ok(());
    }
    let what = if routing != Routing::Gateway {
        format!("routing = \"{routing}\"")
    } else if !extra.is_empty() {
        let list: Vec<String> = extra.iter().map(|n| format!("\"{n}\"")).collect();
        format!("extra_routes = [{}]", list.join(", "))
    } else {
        return Ok(());
    };
    Err(Forbidden {
        profile: profile.to_string(),
        what,
    })
}

/// The routes for `routing` and `extra` on a tunnel the gateway set up as `pushed`.
pub fn plan(
    profile: &str,
    policy: ClientRouting,
    routing: Routing,
    extra: &[IpNet],
    pushed: &Pushed,
) -> Result<RoutePlan, Forbidden> {
    check(profile, policy, routing, extra)?;
    let full = match routing {
        Routing::Gateway => pushed.full,
        Routing::Full => true,
        Routing::Split => false,
    };
    let mut out = RoutePlan {
        full,
        ipv6_default: match (full, pushed.ipv6) {
            (false, _) => Ipv6Default::Untouched,
            (true, true) => Ipv6Default::Tunnel,
            (true, false) => Ipv6Default::Blocked,
        },
        ..RoutePlan::default()
    };
    let mut add4 = |n: Ipv4Net| {
        // A default route among the prefixes is the full tunnel's business, not a route.
        let n = n.trunc();
        if n.prefix_len() > 0 && !out.routes.contains(&n) {
            out.routes.push(n);
        }
    };
    for n in &pushed.routes {
        add4(*n);
    }
    for n in extra {
        if let IpNet::V4(n) = n {
            add4(*n);
        }
    }
    let mut v6 = pushed.routes_v6.clone();
    for n in extra {
        if let IpNet::V6(n) = n {
            if pushed.ipv6 {
                v6.push(*n);
            } else {
                out.skipped.push(IpNet::V6(*n));
            }
        }
    }
    if pushed.ipv6 {
        for n in v6 {
            let n = n.trunc();
            if n.prefix_len() > 0 && !out.routes_v6.contains(&n) {
                out.routes_v6.push(n);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
