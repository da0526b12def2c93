//! The happy paths: handshake (tls-ekm and PRF keys), data both ways, loss, renegotiation
//! from either side, keepalive and EXIT.

use std::time::Duration;

use super::pair::{Pair, connected};
use crate::openvpn::client::ClientEvent;
use crate::openvpn::data::Cipher;
use crate::openvpn::server::{CloseReason, ServerEvent};
use crate::wire::openvpn::MAX_CONTROL_PACKET;

#[test]
fn handshake_with_tls_ekm_and_data_both_ways() {
    let mut p = Pair::new(true);
    assert!(p.run_until(Duration::from_secs(10), connected));
    let reply = p.client.push_reply().unwrap().clone();
    assert_eq!(reply.address.to_string(), "172.16.201.2");
    assert!(reply.tls_ekm);
    assert_eq!(reply.cipher, Cipher::Aes256Gcm);
    assert!(p.max_datagram <= MAX_CONTROL_PACKET, "{}", p.max_datagram);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Established { tls_ekm: true, .. }))
    );
    assert!(matches!(
        p.server_events.first(),
        Some(ServerEvent::Authenticated { client, .. }) if client == "alice"
    ));
    p.ping_through();
    p.run_until(Duration::from_secs(1), |p| {
        !p.server_rx.is_empty() && !p.client_rx.is_empty()
    });
    assert_eq!(p.server_rx.len(), 1);
    assert_eq!(p.client_rx.len(), 1);
    assert_eq!(&p.server_rx[0][16..20], &[10, 1, 0, 10]);
}

#[test]
fn handshake_with_prf_keys() {
    let mut p = Pair::new(false);
    assert!(p.run_until(Duration::from_secs(10), connected));
    assert!(!p.client.push_reply().unwrap().tls_ekm);
    p.ping_through();
    p.run_until(Duration::from_secs(1), |p| {
        !p.server_rx.is_empty() && !p.client_rx.is_empty()
    });
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn handshake_survives_loss() {
    for (seed, loss) in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 30), (6, 30)] {
        let mut p = Pair::new(true);
        p.link.loss_percent = loss;
        p.seed(seed);
        assert!(
            p.run_until(Duration::from_secs(60), connected),
            "loss={loss}% seed={seed} {:?} {:?} sent={}",
            p.server_events,
            p.client_events,
            p.sent
        );
    }
}

#[test]
fn renegotiation_by_server_keeps_traffic_flowing() {
    let mut p = Pair::new(true);
    p.connect();
    let now = p.now;
    p.server().renegotiate(now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { key_id: 1 }))
            && p.client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::Rekeyed { key_id: 1 }))
    }));
    for _ in 0..3 {
        p.ping_through();
        p.run_for(Duration::from_millis(50));
    }
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (3, 3));
}

#[test]
fn renegotiation_by_client() {
    let mut p = Pair::new(false);
    p.connect();
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Rekeyed { key_id: 1 }))
    }));
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}

#[test]
fn keepalive_holds_an_idle_tunnel_and_exit_closes() {
    let mut p = Pair::new(true);
    p.connect();
    // Five minutes idle: pings keep both ends alive.
    p.run_for(Duration::from_secs(300));
    assert!(connected(&p), "{:?} {:?}", p.server_events, p.client_events);
    p.client.disconnect(p.now);
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed(CloseReason::ClientExit)))
    }));
}
