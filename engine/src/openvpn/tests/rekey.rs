//! Renegotiation by time (reneg-sec) under steady traffic: keys rotate through ids 1..=7 and
//! wrap to 1, and not one data packet is lost across a key change.

use std::time::Duration;

use super::pair::{Pair, default_configs, tag_of};
use crate::openvpn::client::ClientEvent;
use crate::openvpn::server::ServerEvent;

fn rekey_every_30s_for_5_minutes(tls_ekm: bool) {
    let (mut sc, cc) = default_configs(tls_ekm);
    sc.reneg_interval = Some(Duration::from_secs(30));
    let mut p = Pair::with(sc, cc);
    p.connect();
    let mut sent = 0u32;
    let end = p.now + Duration::from_secs(300);
    while p.now < end {
        p.send_up(sent);
        p.send_down(sent);
        sent += 1;
        p.run_for(Duration::from_millis(100));
    }
    p.run_for(Duration::from_secs(1));

    let server_keys: Vec<u8> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Rekeyed { key_id } => Some(*key_id),
            _ => None,
        })
        .collect();
    let client_keys: Vec<u8> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Rekeyed { key_id } => Some(*key_id),
            _ => None,
        })
        .collect();
    // 300 s / 30 s: about ten renegotiations (each starts 30 s after the previous one's keys
    // came up, so the tenth may just miss the end).
    assert!(server_keys.len() >= 9, "{server_keys:?}");
    let expected: Vec<u8> = (0..server_keys.len()).map(|i| (i % 7) as u8 + 1).collect();
    assert_eq!(server_keys, expected, "key ids cycle 1..=7 then wrap to 1");
    assert_eq!(client_keys, server_keys);
    assert!(p.client.is_connected() && p.server().is_established());

    let check = |rx: &[Vec<u8>], errors: &[String], dir: &str| {
        let tags: Vec<u32> = rx.iter().map(|d| tag_of(d)).collect();
        assert_eq!(
            tags.len(),
            sent as usize,
            "{dir}: {} of {sent} packets arrived; errors {errors:?}",
            tags.len()
        );
        assert!(tags.iter().copied().eq(0..sent), "{dir}: out of order");
        assert!(errors.is_empty(), "{dir}: {errors:?}");
    };
    check(&p.server_rx, &p.server_data_errors, "up");
    check(&p.client_rx, &p.client_data_errors, "down");
    assert_eq!(p.server().stats.rx_packets, u64::from(sent));
    assert_eq!(p.server().stats.tx_packets, u64::from(sent));
}

#[test]
fn rekey_by_time_loses_no_data_with_tls_ekm() {
    rekey_every_30s_for_5_minutes(true);
}

#[test]
fn rekey_by_time_loses_no_data_with_prf_keys() {
    rekey_every_30s_for_5_minutes(false);
}

#[test]
fn rekey_by_time_from_both_ends() {
    // Both ends due at about the same moment: whoever starts first wins, the other joins.
    let (mut sc, mut cc) = default_configs(true);
    sc.reneg_interval = Some(Duration::from_secs(30));
    cc.reneg_interval = Some(Duration::from_secs(30));
    let mut p = Pair::with(sc, cc);
    p.connect();
    let mut sent = 0u32;
    let end = p.now + Duration::from_secs(240);
    while p.now < end {
        p.send_up(sent);
        p.send_down(sent);
        sent += 1;
        p.run_for(Duration::from_millis(250));
    }
    p.run_for(Duration::from_secs(1));
    let rekeys = p
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Rekeyed { .. }))
        .count();
    assert!(rekeys >= 6, "{:?}", p.client_events);
    assert!(p.client.is_connected() && p.server().is_established());
    assert_eq!(
        p.server_rx.len(),
        sent as usize,
        "{:?}",
        p.server_data_errors
    );
    assert_eq!(
        p.client_rx.len(),
        sent as usize,
        "{:?}",
        p.client_data_errors
    );
}
