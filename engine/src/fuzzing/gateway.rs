//! The gateway core: arbitrary datagrams on each listener (OpenVPN, IKE, NAT-T, QUIC,
//! WireGuard), from a few remote addresses, between timer runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Records, origin};
use crate::entropy::{Entropy, SeededEntropy};
use crate::gateway::{
    CoreConfig, DEFAULT_MAX_HALF_OPEN, DEFAULT_MAX_HALF_OPEN_PER_IP, EntropyFactory, GatewayCore,
    Listener,
};
use crate::wireguard::{WgKey, WgPeerConfig, WgRole, WireGuardConfig};

/// A core with every listener; WireGuard's peers only when `wireguard` (boringtun makes a
/// `Tunn` per peer, an x25519 key exchange each: 90 % of the time of an input that never
/// reaches the WireGuard listener).
fn core(wireguard: bool) -> Option<GatewayCore> {
    let cfg = CoreConfig {
        client_pool: ipnet::Ipv4Net::new(Ipv4Addr::new(172, 16, 201, 0), 24).ok()?,
        address_space: vec![ipnet::Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).ok()?],
        client_pool_v6: None,
        address_space_v6: Vec::new(),
        dns: Vec::new(),
        dns_domains: Vec::new(),
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
    let mut core = GatewayCore::new(cfg, entropy).ok()?;
    let (quic, wg) = fixed_configs()?;
    core.set_quic_config(quic.clone());
    if wireguard {
        core.set_wireguard(origin(), Some(wg.clone()));
    }
    Some(core)
}

/// The QUIC (TLS) and WireGuard configurations, built once per process: certificates and
/// keys are parsed and public keys derived here, not for every input.
fn fixed_configs() -> Option<&'static (Arc<crate::quic::QuicConfig>, WireGuardConfig)> {
    static CONFIGS: OnceLock<Option<(Arc<crate::quic::QuicConfig>, WireGuardConfig)>> =
        OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            let quic = crate::quic::QuicConfig::from_pki(
                Arc::new(rustls::crypto::ring::default_provider()),
                Arc::new(super::openvpn::FixedTime),
                &[CertificateDer::from(super::openvpn::CA)],
                Vec::new(),
                vec![CertificateDer::from(super::openvpn::SERVER)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(super::openvpn::SERVER_KEY)),
                1280,
            )
            .ok()?;
            // A WireGuard site and a point-to-site identity, both dialing in: the fuzzer
            // cannot forge their handshakes, so this reaches the parsers, the peer lookup
            // and the cookies.
            let peer = |name: &str, seed: u8, role: WgRole, allowed: ipnet::Ipv4Net| WgPeerConfig {
                name: name.into(),
                role,
                public_key: WgKey::from_random([seed; 32]).public_key(),
                endpoint: None,
                allowed: vec![allowed.into()],
                persistent_keepalive: Some(25),
            };
            let client = Ipv4Addr::new(172, 16, 201, 200);
            let wireguard = WireGuardConfig {
                private_key: WgKey::from_random([7; 32]),
                peers: vec![
                    peer(
                        "site",
                        8,
                        WgRole::Site {
                            kind: "site-to-site",
                        },
                        ipnet::Ipv4Net::new(Ipv4Addr::new(10, 9, 0, 0), 16).ok()?,
                    ),
                    peer(
                        "phone",
                        9,
                        WgRole::Client { address: client },
                        ipnet::Ipv4Net::new(client, 32).ok()?,
                    ),
                ],
            };
            Some((Arc::new(quic), wireguard))
        })
        .as_ref()
}

/// `GatewayCore::handle_datagram` (records: `op % 4` 0 OpenVPN UDP, 1 IKE on 500, 2 IKE
/// and ESP on 4500, 3 advance the clock by `body[0]` seconds and run the timers; with bit 5
/// of `op` set, 0 and 2 are QUIC and 1 WireGuard instead; bits 2-3 of `op` pick one of four
/// remote addresses).
pub fn gateway_core(data: &[u8]) {
    let wireguard = Records::new(data).any(|(op, _)| op & 0x20 != 0 && op % 4 == 1);
    let Some(mut core) = core(wireguard) else {
        return;
    };
    let mut now = origin();
    for (op, body) in Records::new(data) {
        let remote = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1 + ((op >> 2) & 3))),
            if op & 0x10 == 0 { 500 } else { 4500 },
        );
        let new_kinds = op & 0x20 != 0;
        let listener = match op % 4 {
            0 | 2 if new_kinds => Listener::Quic,
            1 if new_kinds => Listener::WireGuard,
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
        while core.poll_tun_packet().is_some() {}
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target must not quietly do nothing: its core builds, with QUIC and WireGuard on.
    #[test]
    fn the_fuzzing_core_serves_every_listener() {
        let mut core = core(true).expect("the fuzzing core builds with QUIC and WireGuard");
        let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 500);
        let before = core.drops().total();
        for l in [Listener::Quic, Listener::WireGuard] {
            let _ = core.handle_datagram(origin(), l, remote, &[1, 0, 0, 0, 9]);
        }
        assert!(
            core.drops().total() > before,
            "junk on QUIC and WireGuard is counted"
        );
    }
}
