//! A client gets a tunnel: certificates of both key types, DH group and COOKIE retries,
//! fragmented IKE_AUTH, and data through the resulting CHILD SA both ways.

use std::time::Duration;

use super::pair::{Pair, default_configs, initiator_config, pki};
use crate::esp::EspCipher;
use crate::ikev2::crypto::DhGroup;
use crate::ikev2::initiator::InitiatorEvent;
use crate::ikev2::responder::IkeEvent;

fn assert_data_flows(p: &mut Pair) {
    for i in 0..3u8 {
        let up = p.client_to_gateway(&[i; 100]).unwrap();
        assert_eq!(&up[20..], &[i; 100]);
        let down = p.gateway_to_client(None, &[i; 1300]).unwrap();
        assert_eq!(&down[20..], &[i; 1300]);
    }
}

#[test]
fn ecdsa_client_gets_address_dns_routes_and_a_working_sa() {
    let mut p = Pair::new();
    p.connect();
    let Some(InitiatorEvent::Connected {
        address,
        dns,
        dns_domains,
        subnets,
        cipher,
        our_spi,
        peer_spi,
        ..
    }) = p.client_connected()
    else {
        unreachable!()
    };
    assert_eq!(
        address.map(|a| a.to_string()).unwrap_or_default(),
        "10.9.0.2"
    );
    assert_eq!(dns, &["10.9.0.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(dns_domains, &["corp.example"]);
    assert_eq!(subnets, &["10.9.0.0/24".parse::<ipnet::Ipv4Net>().unwrap()]);
    assert_eq!(*cipher, EspCipher::AesGcm16 { key_bits: 256 });
    let (our_spi, peer_spi) = (*our_spi, *peer_spi);
    assert!(p.gateway_events.iter().any(|e| matches!(
        e,
        IkeEvent::Authenticated { client, .. } if client == "alice"
    )));
    assert!(p.gateway_events.iter().any(|e| matches!(
        e,
        IkeEvent::ChildUp { our_spi: g_our, peer_spi: g_peer, .. }
            if *g_our == peer_spi && *g_peer == our_spi
    )));
    // Everything after IKE_SA_INIT went to UDP 4500 with the non-ESP marker.
    assert_eq!(p.initiator.gateway().port(), 4500);
    assert_eq!(
        p.responder.as_ref().unwrap().peer(),
        super::pair::client_addr(true)
    );
    assert_eq!(p.stats.late_plain_to_gateway, 0);
    assert_eq!(
        p.initiator.suite().unwrap().dh,
        DhGroup::Curve25519,
        "first group of the policy, no retry"
    );
    assert_eq!(p.stats.stateless_replies, 0);
    assert_data_flows(&mut p);
}

#[test]
fn rsa_client_connects() {
    let pki = pki();
    let (rc, _) = default_configs();
    let ic = initiator_config(&pki.ca, &pki.bob_rsa, Some(super::pair::GATEWAY_IP));
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert!(p.gateway_events.iter().any(|e| matches!(
        e,
        IkeEvent::Authenticated { client, .. } if client == "bob"
    )));
    assert_data_flows(&mut p);
}

#[test]
fn wrong_first_group_is_corrected_by_invalid_ke_payload() {
    let (mut rc, mut ic) = default_configs();
    ic.policy.dh_groups = vec![DhGroup::Ecp384, DhGroup::Curve25519];
    rc.policy.dh_groups = vec![DhGroup::Curve25519, DhGroup::Ecp256];
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert_eq!(p.stats.stateless_replies, 1, "one INVALID_KE_PAYLOAD");
    assert_eq!(p.initiator.suite().unwrap().dh, DhGroup::Curve25519);
    assert_data_flows(&mut p);
}

#[test]
fn gateway_under_load_gets_its_cookie_back() {
    let mut p = Pair::new();
    p.cookie_secret = Some([7; 32]);
    p.connect();
    assert_eq!(p.stats.stateless_replies, 1, "one COOKIE");
    assert_data_flows(&mut p);
}

#[test]
fn cookie_and_invalid_ke_together() {
    let (mut rc, mut ic) = default_configs();
    ic.policy.dh_groups = vec![DhGroup::Ecp384, DhGroup::Ecp256];
    rc.policy.dh_groups = vec![DhGroup::Ecp256];
    let mut p = Pair::with(rc, ic);
    p.cookie_secret = Some([9; 32]);
    p.connect();
    assert_eq!(p.stats.stateless_replies, 2);
    assert_eq!(p.initiator.suite().unwrap().dh, DhGroup::Ecp256);
}

#[test]
fn no_common_ike_proposal_fails_with_a_clear_reason() {
    let (mut rc, mut ic) = default_configs();
    rc.policy.ike_ciphers = vec![crate::ikev2::crypto::IkeCipher::ChaCha20Poly1305];
    ic.policy.ike_ciphers = vec![crate::ikev2::crypto::IkeCipher::AesGcm16 { key_bits: 256 }];
    let mut p = Pair::with(rc, ic);
    assert!(p.run_until(Duration::from_secs(10), |p| p.initiator.is_closed()));
    let reason = p.client_closed().unwrap();
    assert!(reason.contains("NO_PROPOSAL_CHOSEN"), "{reason}");
    assert!(p.responder.is_none(), "no state on the gateway");
}

#[test]
fn small_fragment_size_fragments_ike_auth_both_ways() {
    let (mut rc, mut ic) = default_configs();
    rc.fragment_size = 400;
    ic.fragment_size = 400;
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert!(p.stats.fragments_to_gateway >= 2, "{:?}", p.stats);
    assert!(p.stats.fragments_to_client >= 2, "{:?}", p.stats);
    // Every datagram fits, IKE_SA_INIT (never fragmented, RFC 7383) included.
    assert!(p.stats.max_to_gateway <= 400, "{:?}", p.stats);
    assert!(p.stats.max_to_client <= 400, "{:?}", p.stats);
    assert_data_flows(&mut p);
}

#[test]
fn rsa_ike_auth_stays_within_the_fragment_size() {
    let pki = pki();
    let (rc, _) = default_configs();
    let ic = initiator_config(&pki.ca, &pki.bob_rsa, Some(super::pair::GATEWAY_IP));
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert!(p.stats.max_to_gateway <= 1280, "{:?}", p.stats);
}
