//! Routes learned from sites: the prefixes a routing daemon (FRR's bgpd through zebra)
//! installed in the kernel through the connections' own interfaces. Read every
//! [`INTERVAL`] with `ip -j -4 route show proto bgp`; when they change, every worker gets
//! them ([`GatewayCore::set_learned_routes`](gatehouse_engine::gateway::GatewayCore::set_learned_routes)),
//! so remote-access clients that connect from then on are pushed them beside
//! `address_space` (a client reaches a branch office whose prefix only BGP knows).

use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::worker::Msg;

/// How often the kernel's routes are read.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The IPv4 prefixes of `ip -j route` output (`json`) whose next hop (or one of whose
/// next hops) is one of `ifaces`. A default route is left out.
pub fn prefixes_via(json: &str, ifaces: &[String]) -> Vec<Ipv4Net> {
    let Ok(Value::Array(routes)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Net> = Vec::new();
    for r in &routes {
        let ours = |v: &Value| {
            v.get("dev")
                .and_then(Value::as_str)
                .is_some_and(|d| ifaces.iter().any(|i| i == d))
        };
        let via_ours = ours(r)
            || r.get("nexthops")
                .and_then(Value::as_array)
                .is_some_and(|n| n.iter().any(ours));
        if !via_ours {
            continue;
        }
        let Some(dst) = r.get("dst").and_then(Value::as_str) else {
            continue;
        };
        // A host route is written without its length.
        let net = dst
            .parse::<Ipv4Net>()
            .ok()
            .or_else(|| dst.parse::<std::net::Ipv4Addr>().ok().map(Ipv4Net::from));
        if let Some(n) = net.filter(|n| n.prefix_len() > 0)
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    out.sort();
    out
}

fn read(ifaces: &[String]) -> Option<Vec<Ipv4Net>> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-4", "route", "show", "proto", "bgp"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| prefixes_via(&String::from_utf8_lossy(&out.stdout), ifaces))
}

/// Reads the learned routes every [`INTERVAL`] and hands changes to the workers; runs while
/// the workers do.
pub async fn watch(ifaces: Vec<String>, inboxes: Arc<Vec<mpsc::Sender<Msg>>>) {
    let mut known: Vec<Ipv4Net> = Vec::new();
    let mut warned = false;
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let names = ifaces.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || read(&names)).await else {
            return;
        };
        let Some(now) = read else {
            if !warned {
                warn!(
                    "cannot read the kernel's routes (`ip -j -4 route show proto bgp`): routes learned from sites are not pushed to clients"
                );
                warned = true;
            }
            continue;
        };
        if now == known {
            continue;
        }
        info!(prefixes = ?now.iter().map(|n| n.to_string()).collect::<Vec<_>>(), "routes learned from sites changed: pushed to clients that connect from now on");
        for tx in inboxes.iter() {
            if tx.send(Msg::LearnedRoutes(now.clone())).await.is_err() {
                return;
            }
        }
        known = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routes_through_the_connections_interfaces_count() {
        let json = r#"[
            {"dst":"10.231.3.0/24","gateway":"169.254.31.2","dev":"ghbgp-1","protocol":"bgp","metric":20,"flags":[]},
            {"dst":"10.99.0.0/16","gateway":"10.251.1.9","dev":"lan0","protocol":"bgp","flags":[]},
            {"dst":"10.232.3.0/24","protocol":"bgp","metric":20,"flags":[],"nexthops":[
                {"gateway":"169.254.32.2","dev":"ghbgf-1","weight":1,"flags":[]},
                {"gateway":"169.254.33.2","dev":"ghbgf-2","weight":1,"flags":[]}]},
            {"dst":"default","gateway":"169.254.31.2","dev":"ghbgp-1","protocol":"bgp","flags":[]},
            {"dst":"192.0.2.7","gateway":"169.254.31.2","dev":"ghbgp-1","protocol":"bgp","flags":[]},
            {"dst":"10.231.3.0/24","gateway":"169.254.31.2","dev":"ghbgp-1","protocol":"bgp","flags":[]}
        ]"#;
        let ifaces = vec!["ghbgp-1".to_string(), "ghbgf-2".to_string()];
        let got: Vec<String> = prefixes_via(json, &ifaces)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["10.231.3.0/24", "10.232.3.0/24", "192.0.2.7/32"]);
        assert!(prefixes_via("not json", &ifaces).is_empty());
        assert!(prefixes_via("[]", &ifaces).is_empty());
    }
}
