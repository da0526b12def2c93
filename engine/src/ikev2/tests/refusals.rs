//! Who must not get a tunnel: the gateway refuses revoked, foreign and expired client
//! certificates (and the client hears AUTHENTICATION_FAILED); the client refuses a gateway
//! that is not the one it dialled.

use std::time::Duration;

use rcgen::{SerialNumber, date_time_ymd};

use super::pair::{Ca, GATEWAY_IP, Pair, default_configs, initiator_config, pki, responder_config};

/// Runs until both sides gave up; returns (gateway's refusal, client's auth failure).
fn refused(mut p: Pair) -> (String, String) {
    let done = p.run_until(Duration::from_secs(60), |p| {
        p.initiator.is_closed() && p.responder.as_ref().is_none_or(|r| r.is_closed())
    });
    assert!(done, "{:?} {:?}", p.client_events, p.gateway_events);
    assert!(p.client_sas.is_empty() && p.gateway_sas.is_empty());
    let gw = p.gateway_refused().unwrap_or_default().to_owned();
    let client = p
        .client_auth_failed()
        .unwrap_or_else(|| panic!("no AuthFailed: {:?}", p.client_events))
        .to_owned();
    assert!(
        p.client_closed().is_none(),
        "AuthFailed is the only outcome"
    );
    (gw, client)
}

#[test]
fn revoked_client_certificate() {
    let pki = pki();
    let carol = pki.ca.client("carol", |p| {
        p.serial_number = Some(SerialNumber::from(77u64))
    });
    let rc = responder_config(&pki.ca, vec![pki.ca.crl(&[77])], &pki.gateway);
    let ic = initiator_config(&pki.ca, &carol, Some(GATEWAY_IP));
    let (gw, client) = refused(Pair::with(rc, ic));
    assert!(gw.contains("revoked"), "{gw}");
    assert!(client.contains("AUTHENTICATION_FAILED"), "{client}");
}

#[test]
fn client_certificate_from_another_ca() {
    let pki = pki();
    let other = Ca::new("Someone Else's CA");
    let mallory = other.client("mallory", |_| {});
    let (rc, _) = default_configs();
    let ic = initiator_config(&pki.ca, &mallory, Some(GATEWAY_IP));
    let (gw, client) = refused(Pair::with(rc, ic));
    assert!(gw.contains("unknown issuer"), "{gw}");
    assert!(client.contains("AUTHENTICATION_FAILED"), "{client}");
}

#[test]
fn expired_client_certificate() {
    let pki = pki();
    let dave = pki.ca.client("dave", |p| {
        p.not_before = date_time_ymd(2024, 1, 1);
        p.not_after = date_time_ymd(2026, 1, 1);
    });
    let (rc, _) = default_configs();
    let ic = initiator_config(&pki.ca, &dave, Some(GATEWAY_IP));
    let (gw, client) = refused(Pair::with(rc, ic));
    assert!(gw.contains("expired"), "{gw}");
    assert!(client.contains("AUTHENTICATION_FAILED"), "{client}");
}

#[test]
fn client_refuses_a_gateway_with_another_identity() {
    let pki = pki();
    let (rc, _) = default_configs();
    let ic = initiator_config(&pki.ca, &pki.alice, Some("vpn.example.com"));
    let mut p = Pair::with(rc, ic);
    let (_, client) = {
        let done = p.run_until(Duration::from_secs(60), |p| {
            p.initiator.is_closed() && p.responder.as_ref().is_some_and(|r| r.is_closed())
        });
        assert!(done, "{:?} {:?}", p.client_events, p.gateway_events);
        (
            (),
            p.client_auth_failed()
                .unwrap_or_else(|| panic!("{:?}", p.client_events))
                .to_owned(),
        )
    };
    assert!(client.contains("vpn.example.com"), "{client}");
    // The client told the gateway, which dropped the SA at once (no 30 s half-open wait).
    assert!(p.gateway_closed().is_some());
    assert!(p.client_sas.is_empty());
}

#[test]
fn client_refuses_a_gateway_certificate_from_another_ca() {
    let pki = pki();
    let other = Ca::new("Someone Else's CA");
    let fake_gw = other.gateway(GATEWAY_IP);
    let mut rc = responder_config(&pki.ca, vec![], &fake_gw);
    rc.ca_hashes = vec![pki.ca.spki_sha1()];
    let ic = initiator_config(&pki.ca, &pki.alice, Some(GATEWAY_IP));
    let mut p = Pair::with(rc, ic);
    assert!(p.run_until(Duration::from_secs(60), |p| p.initiator.is_closed()));
    let reason = p.client_auth_failed().unwrap();
    assert!(reason.contains("unknown issuer"), "{reason}");
    assert!(p.client_sas.is_empty());
}

#[test]
fn gateway_identity_by_host_name() {
    let pki = pki();
    let gw = pki.ca.gateway("vpn.example.com");
    let rc = responder_config(&pki.ca, vec![], &gw);
    let ic = initiator_config(&pki.ca, &pki.alice, Some("VPN.example.com"));
    let mut p = Pair::with(rc, ic);
    p.connect();
}
