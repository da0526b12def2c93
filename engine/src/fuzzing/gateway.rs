//! The gateway core: arbitrary datagrams on each listener, from a few remote addresses,
//! between timer runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{Records, origin};
use crate::entropy::{Entropy, SeededEntropy};
use crate::gateway::{
    CoreConfig, DEFAULT_MAX_HALF_OPEN, DEFAULT_MAX_HALF_OPEN_PER_IP, EntropyFactory, GatewayCore,
    Listener,
};

fn core() -> Option<GatewayCore> {
    let cfg = CoreConfig {
        client_pool: ipnet::Ipv4Net::new(Ipv4Addr::new(172, 16, 201, 0), 24).ok()?,
        address_space: vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).ok()?],
        dns: Vec::new(),
        full_tunnel: false,
        openvpn: Some(super::openvpn::configs().0.clone()),
        ikev2: Some(super::ikev2::configs().0.clone()),
        cookie_threshold: 4,
        max_half_open: DEFAULT_MAX_HALF_OPEN,
        max_half_open_per_ip: DEFAULT_MAX_HALF_OPEN_PER_IP,
        max_handshaking: 16,
        sites: Vec::new(),
        unix_time: super::openvpn::WALL_CLOCK_SECS,
        start: origin(),
    };
    let mut n = 0u64;
    let entropy: EntropyFactory = Box::new(move || {
        n += 1;
        Box::new(SeededEntropy::new(n)) as Box<dyn Entropy>
    });
    GatewayCore::new(cfg, entropy).ok()
}

/// `GatewayCore::handle_datagram` (records: `op % 4` 0 OpenVPN UDP, 1 IKE on 500, 2 IKE
/// and ESP on 4500, 3 advance the clock by `body[0]` seconds and run the timers; bits 2-3
/// of `op` pick one of four remote addresses).
pub fn gateway_core(data: &[u8]) {
    let Some(mut core) = core() else {
        return;
    };
    let mut now = origin();
    for (op, body) in Records::new(data) {
        let remote = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1 + ((op >> 2) & 3))),
            if op & 0x10 == 0 { 500 } else { 4500 },
        );
        let listener = match op % 4 {
            0 => Listener::OpenVpnUdp,
            1 => Listener::Ike,
            2 => Listener::IkeNatT,
            _ => {
                now += Duration::from_secs(u64::from(body.first().copied().unwrap_or(1)));
                core.handle_timeout(now);
                continue;
            }
        };
        let _ = core.handle_datagram(now, listener, remote, body);
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
    }
}
