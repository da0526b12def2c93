//! Site-to-site SAs: a gateway (the initiator here) and another gateway's responder with a
//! pre-shared key or certificates, policy-based (narrowed) and route-based (0.0.0.0/0)
//! selectors, no virtual address, data both ways, rekeys, and refusals that say why.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::pair::{GATEWAY_IP, Pair, client_addr, initiator_config, pki, responder_config};
use crate::ikev2::crypto::{DhGroup, IkeCipher, Integ};
use crate::ikev2::initiator::{InitiatorConfig, InitiatorEvent};
use crate::ikev2::proposal::Policy;
use crate::ikev2::responder::{IkeEvent, ResponderConfig};
use crate::ikev2::site::{SiteAuth, SitePeer, nets_of};

/// The initiating gateway ("east") as the responder sees it: the pair's client address.
const EAST_ID: &str = "east.example";
const WEST_ID: &str = GATEWAY_IP;

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

/// The responder's view: peer east at the pair's client address.
pub(super) fn west_site(auth: SiteAuth, local: &[&str], remote: &[&str]) -> SitePeer {
    SitePeer {
        name: "east".into(),
        remote_addr: client_addr(false).ip(),
        remote_id: EAST_ID.into(),
        local_id: WEST_ID.into(),
        auth,
        local_ts: nets(local),
        remote_ts: nets(remote),
        policy: Policy::default(),
        any_remote_addr: false,
    }
}

/// The initiator's view: peer west at the gateway address.
pub(super) fn east_site(auth: SiteAuth, local: &[&str], remote: &[&str]) -> SitePeer {
    SitePeer {
        name: "west".into(),
        remote_addr: GATEWAY_IP.parse::<IpAddr>().expect("ip"),
        remote_id: WEST_ID.into(),
        local_id: EAST_ID.into(),
        auth,
        local_ts: nets(local),
        remote_ts: nets(remote),
        policy: Policy::default(),
        any_remote_addr: false,
    }
}

pub(super) fn configs(west: SitePeer, east: SitePeer) -> (ResponderConfig, InitiatorConfig) {
    let pki = pki();
    let mut rc = responder_config(&pki.ca, vec![], &pki.gateway);
    rc.sites = vec![Arc::new(west)];
    // East presents a gateway certificate of the same CA, named east.example.
    static EAST_CERT: std::sync::OnceLock<super::pair::Chain> = std::sync::OnceLock::new();
    let east_chain = EAST_CERT.get_or_init(|| pki.ca.gateway(EAST_ID));
    let mut ic = initiator_config(&pki.ca, east_chain, None);
    ic.policy = east.policy.clone();
    ic.site = Some(Arc::new(east));
    (rc, ic)
}

pub(super) fn psk(k: &str) -> SiteAuth {
    SiteAuth::Psk(k.as_bytes().to_vec())
}

fn connected_subnets(p: &Pair) -> (Option<std::net::Ipv4Addr>, Vec<IpNet>) {
    match p.client_connected() {
        Some(InitiatorEvent::Connected {
            address, subnets, ..
        }) => (*address, subnets.iter().map(|n| IpNet::V4(*n)).collect()),
        _ => panic!("not connected: {:?}", p.client_events),
    }
}

#[test]
fn psk_policy_based_site_narrows_to_the_prefixes_and_carries_data() {
    let (rc, ic) = configs(
        west_site(psk("correct horse"), &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(psk("correct horse"), &["10.2.0.0/24"], &["10.1.0.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.connect();
    let (address, subnets) = connected_subnets(&p);
    assert_eq!(address, None, "a site gets no virtual address");
    assert_eq!(subnets, nets(&["10.1.0.0/24"]));
    assert!(p.gateway_events.iter().any(|e| matches!(
        e,
        IkeEvent::SiteAuthenticated { connection, id, initial_contact: true }
            if connection == "east" && id == EAST_ID
    )));
    let r = p.responder.as_ref().expect("responder");
    assert_eq!(r.site().map(|s| s.name.as_str()), Some("east"));
    for i in 0..3u8 {
        p.ping(&[i; 200]).expect("data flows");
    }
}

#[test]
fn route_based_sites_use_any_to_any() {
    let (rc, ic) = configs(
        west_site(psk("k"), &["0.0.0.0/0"], &["0.0.0.0/0"]),
        east_site(psk("k"), &["0.0.0.0/0"], &["0.0.0.0/0"]),
    );
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert_eq!(connected_subnets(&p).1, nets(&["0.0.0.0/0"]));
    p.ping(b"route-based").expect("data flows");
}

#[test]
fn route_based_responder_narrows_a_policy_based_initiator() {
    // West is route-based (0/0); east proposes its prefixes: west accepts exactly those.
    let (rc, ic) = configs(
        west_site(psk("k"), &["0.0.0.0/0"], &["0.0.0.0/0"]),
        east_site(psk("k"), &["10.2.0.0/24"], &["10.1.0.0/24", "10.1.1.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert_eq!(
        connected_subnets(&p).1,
        nets(&["10.1.0.0/24", "10.1.1.0/24"])
    );
}

#[test]
fn certificate_sites_authenticate_each_other() {
    let (rc, ic) = configs(
        west_site(SiteAuth::Certificate, &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(SiteAuth::Certificate, &["10.2.0.0/24"], &["10.1.0.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.connect();
    assert_eq!(connected_subnets(&p).1, nets(&["10.1.0.0/24"]));
    p.ping(b"certs").expect("data flows");
}

#[test]
fn wrong_psk_is_refused_and_both_ends_say_why() {
    let (rc, ic) = configs(
        west_site(psk("right"), &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(psk("wrong"), &["10.2.0.0/24"], &["10.1.0.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.run_until(Duration::from_secs(60), |p| {
        p.client_auth_failed().is_some()
    });
    let gw = p.gateway_refused().expect("gateway refused");
    assert!(gw.contains("pre-shared key mismatch"), "{gw}");
    assert!(gw.contains("east"), "names the connection: {gw}");
    let cl = p.client_auth_failed().expect("client failed");
    assert!(cl.contains("AUTHENTICATION_FAILED"), "{cl}");
}

#[test]
fn psk_peer_against_a_certificate_site_is_refused() {
    let (rc, ic) = configs(
        west_site(SiteAuth::Certificate, &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(psk("k"), &["10.2.0.0/24"], &["10.1.0.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.run_until(Duration::from_secs(60), |p| {
        p.client_auth_failed().is_some()
    });
    let gw = p.gateway_refused().expect("refused");
    assert!(gw.contains("auth = \"certificate\""), "{gw}");
}

#[test]
fn mismatched_ike_proposal_is_refused_with_both_offers_named() {
    let mut west = west_site(psk("k"), &["10.1.0.0/24"], &["10.2.0.0/24"]);
    west.policy = Policy {
        ike_ciphers: vec![IkeCipher::AesCbc {
            key_bits: 256,
            integ: Integ::HmacSha256_128,
        }],
        dh_groups: vec![DhGroup::Modp2048],
        ..Policy::default()
    };
    let mut east = east_site(psk("k"), &["10.2.0.0/24"], &["10.1.0.0/24"]);
    east.policy = Policy {
        ike_ciphers: vec![IkeCipher::AesGcm16 { key_bits: 256 }],
        dh_groups: vec![DhGroup::Curve25519],
        ..Policy::default()
    };
    let (rc, ic) = configs(west, east);
    let mut p = Pair::with(rc, ic);
    p.run_until(Duration::from_secs(60), |p| {
        p.client_closed().is_some() || p.client_auth_failed().is_some()
    });
    let why = p
        .init_refusals
        .first()
        .expect("gateway refused IKE_SA_INIT");
    assert!(why.contains("no proposal chosen"), "{why}");
    assert!(why.contains("aes256gcm16"), "names the offer: {why}");
    assert!(
        why.contains("connection east"),
        "names the connection: {why}"
    );
    assert!(
        why.contains("aes256-sha256") || why.contains("aes256-"),
        "{why}"
    );
    let client = p
        .client_closed()
        .or(p.client_auth_failed())
        .expect("client gave up");
    assert!(client.contains("NO_PROPOSAL_CHOSEN"), "{client}");
}

#[test]
fn selectors_outside_the_configuration_are_refused() {
    let (rc, ic) = configs(
        west_site(psk("k"), &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(psk("k"), &["10.7.0.0/24"], &["10.1.0.0/24"]),
    );
    let mut p = Pair::with(rc, ic);
    p.run_until(Duration::from_secs(60), |p| p.client_closed().is_some());
    let gw = p.gateway_refused().expect("refused");
    assert!(gw.contains("traffic selectors do not fit"), "{gw}");
    assert!(gw.contains("10.7.0.0/24"), "{gw}");
    assert!(
        p.client_closed()
            .expect("closed")
            .contains("TS_UNACCEPTABLE")
    );
}

#[test]
fn unknown_identity_with_psk_from_a_site_address_is_refused() {
    let mut east = east_site(psk("k"), &["10.2.0.0/24"], &["10.1.0.0/24"]);
    east.local_id = "impostor.example".into();
    let (rc, ic) = configs(
        west_site(psk("k"), &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east,
    );
    let mut p = Pair::with(rc, ic);
    p.run_until(Duration::from_secs(60), |p| {
        p.client_auth_failed().is_some()
    });
    let gw = p.gateway_refused().expect("refused");
    assert!(gw.contains("impostor.example"), "{gw}");
    assert!(gw.contains("remote_id"), "{gw}");
}

#[test]
fn site_child_rekeys_keep_the_narrowed_selectors() {
    let (rc, mut ic) = configs(
        west_site(psk("k"), &["10.1.0.0/24"], &["10.2.0.0/24"]),
        east_site(psk("k"), &["10.2.0.0/24"], &["10.1.0.0/24"]),
    );
    ic.child_lifetime = Duration::from_secs(60);
    ic.ike_lifetime = Duration::from_secs(150);
    let mut p = Pair::with(rc, ic);
    p.connect();
    for minute in 0..5u8 {
        p.run_for(Duration::from_secs(60));
        p.ping(&[minute; 64]).expect("data after rekeys");
    }
    let rekeys = p
        .client_events
        .iter()
        .filter(|e| matches!(e, InitiatorEvent::ChildRekeyed { .. }))
        .count();
    assert!(rekeys >= 4, "{rekeys} CHILD rekeys");
    assert!(p.initiator.is_established());
    assert!(p.gateway_refused().is_none());
    // The gateway answered every rekey with the selectors IKE_AUTH narrowed to.
    let r = p.responder.as_ref().expect("responder");
    let (tsi, tsr) = r.narrowed_for_tests().expect("narrowed");
    assert_eq!(nets_of(&tsi), nets(&["10.2.0.0/24"]));
    assert_eq!(nets_of(&tsr), nets(&["10.1.0.0/24"]));
}
