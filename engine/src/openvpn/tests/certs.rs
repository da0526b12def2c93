//! Certificate refusals, as the operator reads them in the gateway's log (and as the user
//! of `gatehouse connect` reads them on the client side).

use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose, SerialNumber, date_time_ymd};

use super::pair::{Ca, Chain, Pair, client_cfg, gateway_config, pki};
use crate::openvpn::client::ClientEvent;
use crate::openvpn::server::{CloseReason, ServerEvent};

/// Runs a handshake with `client` (trusting the default CA) against a gateway with `crls`;
/// returns the Refused event's client name and reason.
fn refused_by_gateway(
    client: &Chain,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
) -> (Option<String>, String, Pair) {
    let pki = pki();
    let sc = gateway_config(&pki.ca.cert, crls, &pki.server);
    let cc = client_cfg(&pki.ca.cert, client, "vpn.test");
    let mut p = Pair::with(sc, cc);
    let done = p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed()) && p.client.is_closed()
    });
    assert!(done, "{:?} {:?}", p.server_events, p.client_events);
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Authenticated { .. })),
        "{:?}",
        p.server_events
    );
    let Some((client, reason)) = p.server_events.iter().find_map(|e| match e {
        ServerEvent::Refused { client, reason } => Some((client.clone(), reason.clone())),
        _ => None,
    }) else {
        panic!("no Refused event: {:?}", p.server_events);
    };
    assert!(
        matches!(p.server_events.last(), Some(ServerEvent::Closed(CloseReason::Refused(r))) if r.contains(&reason)),
        "{:?}",
        p.server_events
    );
    // The client learns it was refused and closes rather than waiting for a timeout.
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed(_))),
        "{:?}",
        p.client_events
    );
    (client, reason, p)
}

#[test]
fn revoked_client_certificate_is_refused() {
    let bob = pki()
        .ca
        .leaf("bob", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
            p.serial_number = Some(SerialNumber::from(4242u64))
        });
    let crl = pki().ca.crl(&[17, 4242]);
    let (client, reason, _) = refused_by_gateway(&bob, vec![crl]);
    assert_eq!(client.as_deref(), Some("bob"));
    assert!(reason.contains("revoked"), "{reason}");
}

#[test]
fn unrevoked_client_passes_a_crl() {
    let pki = pki();
    let crl = pki.ca.crl(&[17, 4242]);
    let sc = gateway_config(&pki.ca.cert, vec![crl], &pki.server);
    let cc = client_cfg(&pki.ca.cert, &pki.client, "vpn.test");
    Pair::with(sc, cc).connect();
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let other = Ca::new("Other CA");
    let mallory = other.client("mallory");
    let (client, reason, _) = refused_by_gateway(&mallory, vec![]);
    assert_eq!(client.as_deref(), Some("mallory"));
    assert!(reason.contains("unknown issuer"), "{reason}");
}

#[test]
fn expired_client_certificate_is_refused() {
    let carol = pki()
        .ca
        .leaf("carol", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
            p.not_before = date_time_ymd(2025, 1, 1);
            p.not_after = date_time_ymd(2026, 1, 1);
        });
    let (client, reason, _) = refused_by_gateway(&carol, vec![]);
    assert_eq!(client.as_deref(), Some("carol"));
    assert!(reason.contains("expired"), "{reason}");
}

#[test]
fn client_certificate_without_client_auth_is_refused() {
    let dave = pki()
        .ca
        .leaf("dave", ExtendedKeyUsagePurpose::ServerAuth, None, |_| {});
    let (client, reason, _) = refused_by_gateway(&dave, vec![]);
    assert_eq!(client.as_deref(), Some("dave"));
    assert!(reason.contains("extended key usage"), "{reason}");
}

/// The client's view of a gateway it must not trust; returns its Closed reason.
fn refused_by_client(gateway: &Chain, trusted_ca: &Ca) -> String {
    let pki = pki();
    let sc = gateway_config(&pki.ca.cert, vec![], gateway);
    let cc = client_cfg(&trusted_ca.cert, &pki.client, "vpn.test");
    let mut p = Pair::with(sc, cc);
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.client.is_closed()),
        "{:?}",
        p.client_events
    );
    assert!(p.client.push_reply().is_none());
    assert!(
        !p.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::Authenticated { .. } | ServerEvent::Established { .. }
        )),
        "{:?}",
        p.server_events
    );
    match p.client_events.as_slice() {
        [ClientEvent::Closed(reason)] => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_refuses_gateway_certificate_for_another_name() {
    let pki = pki();
    let wrong = pki.ca.gateway("other.test");
    let reason = refused_by_client(&wrong, &pki.ca);
    assert!(reason.contains("gateway"), "{reason}");
    assert!(reason.contains("does not name this host"), "{reason}");
}

#[test]
fn client_refuses_gateway_from_another_ca() {
    let other = Ca::new("Other CA");
    let rogue = other.gateway("vpn.test");
    let reason = refused_by_client(&rogue, &pki().ca);
    assert!(reason.contains("unknown issuer"), "{reason}");
}

#[test]
fn renegotiation_with_another_clients_certificate_is_refused() {
    let pki = pki();
    let mut p = Pair::new(true);
    p.connect();
    let bob = pki.ca.client("bob");
    p.client.replace_config(std::sync::Arc::new(client_cfg(
        &pki.ca.cert,
        &bob,
        "vpn.test",
    )));
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server.as_ref().is_some_and(|s| s.is_closed())
    }));
    match p.server_events.last() {
        Some(ServerEvent::Closed(CloseReason::Refused(r))) => {
            assert!(r.contains("from alice to bob"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { .. })),
        "{:?}",
        p.server_events
    );
}

#[test]
fn renegotiation_with_a_renewed_certificate_of_the_same_client_is_fine() {
    let pki = pki();
    let mut p = Pair::new(true);
    p.connect();
    let alice_renewed = pki.ca.client("alice");
    p.client.replace_config(std::sync::Arc::new(client_cfg(
        &pki.ca.cert,
        &alice_renewed,
        "vpn.test",
    )));
    p.client.renegotiate(p.now);
    assert!(p.run_until(Duration::from_secs(10), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Rekeyed { key_id: 1 }))
    }));
    p.ping_through();
    p.run_for(Duration::from_millis(50));
    assert_eq!((p.server_rx.len(), p.client_rx.len()), (1, 1));
}
