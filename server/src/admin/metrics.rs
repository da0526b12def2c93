//! Prometheus metrics in the text exposition format (version 0.0.4), rendered from a
//! snapshot of the workers: counters only go up (ended sessions' traffic is kept).

use std::fmt::Write;

use gatehouse_engine::gateway::Protocol;

use super::model::CrlStatus;
use crate::gateway::{Facts, Snapshot};

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::OpenVpnUdp => "openvpn-udp",
        Protocol::OpenVpnTcp => "openvpn-tcp",
        Protocol::Ikev2 => "ikev2",
        Protocol::Site => "site",
        Protocol::WireGuard => "wireguard",
        Protocol::Quic => "quic",
    }
}

/// Label values escaped as the format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }
}

/// The metrics page.
pub fn render(snap: &Snapshot, facts: &Facts, crl: &CrlStatus) -> String {
    let mut o = Out(String::with_capacity(4096));
    let c = &snap.status.counters;
    o.head(
        "gatehouse_sessions",
        "gauge",
        "Remote-access sessions up, by protocol.",
    );
    for p in [
        Protocol::OpenVpnUdp,
        Protocol::OpenVpnTcp,
        Protocol::Ikev2,
        Protocol::WireGuard,
        Protocol::Quic,
    ] {
        let n = snap
            .status
            .clients
            .iter()
            .filter(|s| s.protocol == p)
            .count();
        o.line("gatehouse_sessions", &[("protocol", proto(p))], n);
    }
    o.head(
        "gatehouse_tunnels",
        "gauge",
        "Tunnels in any state, handshakes included.",
    );
    o.line("gatehouse_tunnels", &[], snap.status.tunnels);
    o.head(
        "gatehouse_handshakes_total",
        "counter",
        "Handshakes that brought a tunnel up, by protocol.",
    );
    for (p, n) in c.handshakes_ok.iter() {
        o.line("gatehouse_handshakes_total", &[("protocol", proto(p))], n);
    }
    o.head(
        "gatehouse_handshake_failures_total",
        "counter",
        "Peers refused, by reason.",
    );
    for (reason, n) in &c.handshakes_failed {
        o.line(
            "gatehouse_handshake_failures_total",
            &[("reason", reason)],
            n,
        );
    }
    o.head(
        "gatehouse_rekeys_total",
        "counter",
        "Data-key renegotiations and CHILD SA rekeys, by protocol.",
    );
    for (p, n) in c.rekeys.iter() {
        o.line("gatehouse_rekeys_total", &[("protocol", proto(p))], n);
    }
    o.head(
        "gatehouse_bytes_total",
        "counter",
        "Inner IP bytes through tunnels, by protocol and direction (rx: from peers).",
    );
    for (p, t) in c.ended_traffic.iter() {
        o.line(
            "gatehouse_bytes_total",
            &[("protocol", proto(p)), ("direction", "rx")],
            t.rx_bytes,
        );
        o.line(
            "gatehouse_bytes_total",
            &[("protocol", proto(p)), ("direction", "tx")],
            t.tx_bytes,
        );
    }
    o.head(
        "gatehouse_packets_total",
        "counter",
        "Inner IP packets through tunnels, by protocol and direction.",
    );
    for (p, t) in c.ended_traffic.iter() {
        o.line(
            "gatehouse_packets_total",
            &[("protocol", proto(p)), ("direction", "rx")],
            t.rx_packets,
        );
        o.line(
            "gatehouse_packets_total",
            &[("protocol", proto(p)), ("direction", "tx")],
            t.tx_packets,
        );
    }
    o.head(
        "gatehouse_drops_total",
        "counter",
        "Packets and connections dropped, by reason.",
    );
    for (reason, n) in snap.drops.by_label() {
        o.line("gatehouse_drops_total", &[("reason", &reason)], n);
    }
    o.head(
        "gatehouse_sessions_revoked_total",
        "counter",
        "Sessions ended because their certificate was revoked.",
    );
    o.line("gatehouse_sessions_revoked_total", &[], c.revoked);
    o.head(
        "gatehouse_sessions_disconnected_total",
        "counter",
        "Sessions ended by an operator.",
    );
    o.line("gatehouse_sessions_disconnected_total", &[], c.disconnected);
    o.head(
        "gatehouse_site_up",
        "gauge",
        "1 when a site connection is connected, else 0.",
    );
    for s in &snap.status.sites {
        let up = u8::from(s.state == "connected");
        o.line("gatehouse_site_up", &[("connection", &s.name)], up);
    }
    o.head(
        "gatehouse_pool_addresses",
        "gauge",
        "Client pool addresses, leased and in all.",
    );
    let size = super::api::pool_size(facts.pool);
    o.line(
        "gatehouse_pool_addresses",
        &[("state", "leased")],
        snap.leased,
    );
    o.line("gatehouse_pool_addresses", &[("state", "total")], size);
    o.head(
        "gatehouse_tcp_connections",
        "gauge",
        "OpenVPN TCP connections open.",
    );
    o.line("gatehouse_tcp_connections", &[], snap.tcp_connections);
    o.head(
        "gatehouse_crl_age_seconds",
        "gauge",
        "Seconds since the CRL's thisUpdate (-1: unreadable).",
    );
    o.line(
        "gatehouse_crl_age_seconds",
        &[],
        crl.age_secs.map_or(-1, |a| a as i64),
    );
    o.head(
        "gatehouse_crl_next_update_seconds",
        "gauge",
        "Seconds until the CRL's nextUpdate (negative: stale).",
    );
    if let Some(n) = crl.next_update_secs {
        o.line("gatehouse_crl_next_update_seconds", &[], n);
    }
    o.head(
        "gatehouse_capture_lost_total",
        "counter",
        "Packets that packet captures lost because their reader fell behind.",
    );
    o.line("gatehouse_capture_lost_total", &[], snap.capture_lost);
    o.head(
        "gatehouse_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
    );
    o.line(
        "gatehouse_uptime_seconds",
        &[],
        facts.started_at.elapsed().as_secs(),
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_engine::gateway::{CoreStatus, Drops};

    #[test]
    fn every_sample_line_is_well_formed_and_typed() {
        let mut status = CoreStatus::empty();
        *status.counters.handshakes_ok.get_mut(Protocol::Ikev2) += 2;
        status
            .counters
            .ended_traffic
            .get_mut(Protocol::OpenVpnUdp)
            .rx_bytes = 1234;
        let snap = Snapshot {
            status,
            drops: Drops::default(),
            leased: 1,
            tcp_connections: 0,
            workers_of_clients: Vec::new(),
            capture_lost: 0,
        };
        let facts = Facts {
            listeners: String::new(),
            pool: "10.8.0.0/24".parse().unwrap(),
            workers: 1,
            crl: "crl.pem".into(),
            started_at: std::time::Instant::now(),
            sites: Vec::new(),
        };
        let crl = CrlStatus {
            path: "crl.pem".into(),
            age_secs: Some(5),
            next_update_secs: Some(-3),
            revoked: 0,
        };
        let text = render(&snap, &facts, &crl);
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            let name = name_labels.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE before it");
            assert!(name.starts_with("gatehouse_"), "{line}");
        }
        assert!(text.contains("gatehouse_handshakes_total{protocol=\"ikev2\"} 2\n"));
        assert!(
            text.contains(
                "gatehouse_bytes_total{protocol=\"openvpn-udp\",direction=\"rx\"} 1234\n"
            )
        );
        assert!(text.contains("gatehouse_pool_addresses{state=\"total\"} 253\n"));
        assert!(text.contains("gatehouse_crl_next_update_seconds -3\n"));
    }
}
